# Variable checks shared by every stage script (training, generation, curation, annotation).
# Sourced, not run. Each failure names the variable it rejects and exits with status 2.

die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }
need_set() { [ -n "${!1:-}" ] || die "$1 is not set${2:+ ($2)}"; }
need_int() { [[ "${!1:-}" =~ ^[0-9]+$ ]] || die "$1='${!1:-}' must be a non-negative integer"; }
need_pos_int() { [[ "${!1:-}" =~ ^[0-9]+$ ]] && [ "${!1}" -ge 1 ] || die "$1='${!1:-}' must be a positive integer"; }
need_float() {
    [[ "${!1:-}" =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]] || die "$1='${!1:-}' must be a non-negative number"
}
need_pos_float() {
    [[ "${!1:-}" =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]] && awk "BEGIN{exit !(${!1} > 0)}" \
        || die "$1='${!1:-}' must be a positive number"
}
need_dir() { need_set "$1" "$2"; [ -d "${!1}" ] || die "$1='${!1}' is not a folder${2:+ ($2)}"; }
need_choice() {
    local name=$1 v
    shift
    for v in "$@"; do [ "${!name:-}" = "$v" ] && return 0; done
    die "$name='${!name:-}' must be one of: $*"
}
