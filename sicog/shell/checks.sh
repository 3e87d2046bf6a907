# Variable checks and defaults shared by every stage script (training_scripts/, recap_scripts/,
# quality_evaluation/scripts/, training_data_annotation/): each folder's script sources this file by
# its path relative to the script. Sourced, not run. Each failure names the variable it rejects and
# exits with status 2.

# The mini world the tiny profile reads, one default for every script.
WORLD_DIR=${WORLD_DIR:-runs/world}

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
need_file() { need_set "$1" "$2"; [ -f "${!1}" ] || die "$1='${!1}' is not a file${2:+ ($2)}"; }
need_exe() { command -v "${!1:-}" >/dev/null || die "$1='${!1:-}' is not an executable${2:+ ($2)}"; }
need_choice() {
    local name=$1 v
    shift
    for v in "$@"; do [ "${!name:-}" = "$v" ] && return 0; done
    die "$name='${!name:-}' must be one of: $*"
}

# check_layout: the torchrun layout NNODES NPROC_PER_NODE NODE_RANK MASTER_ADDR MASTER_PORT (defaults
# are the caller's).
check_layout() {
    need_pos_int NNODES; need_pos_int NPROC_PER_NODE; need_int NODE_RANK
    [ "$NODE_RANK" -lt "$NNODES" ] || die "NODE_RANK=$NODE_RANK must be < NNODES=$NNODES"
    need_set MASTER_ADDR; need_pos_int MASTER_PORT
}

# run_sicog [--torchrun] ARGS...: `$PYTHON -m sicog ARGS` in this process for a one-process layout,
# else (or with --torchrun) through torch.distributed.run with the checked layout.
run_sicog() {
    local force=0
    if [ "${1:-}" = --torchrun ]; then force=1; shift; fi
    if [ "$force" = 0 ] && [ "$((NNODES * NPROC_PER_NODE))" -eq 1 ]; then
        exec_sicog "$@"
    else
        dry_run_or "$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --nproc_per_node "$NPROC_PER_NODE" \
            --node_rank "$NODE_RANK" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
            -m sicog "$@"
    fi
}

# exec_sicog ARGS...: `$PYTHON -m sicog ARGS` (or, with DRY_RUN=1, its dry run).
exec_sicog() { dry_run_or "$PYTHON" -m sicog "$@"; }

# dry_run_or CMD...: runs CMD; with DRY_RUN=1 prints it (shell-quoted, exactly as it would run) and
# exits 0 without starting anything. For `sicog train` the dry run also prints the resolved config,
# the batch arithmetic for the whole layout, the DeepSpeed config and the output and resume paths
# (`sicog train --dry-run`, one process, no model or data loaded).
dry_run_or() {
    [ "${DRY_RUN:-0}" = 1 ] || { "$@"; return; }
    echo "launch (node ${NODE_RANK:-0} of ${NNODES:-1}): $(printf '%q ' "$@")"
    local a prev="" is_train=0 args=()
    for a in "$@"; do  # the arguments after `sicog train`
        if [ "$is_train" = 1 ]; then args+=("$a"); elif [ "$prev" = sicog ] && [ "$a" = train ]; then is_train=1; fi
        prev=$a
    done
    if [ "$is_train" = 1 ]; then
        WORLD_SIZE=$((${NNODES:-1} * ${NPROC_PER_NODE:-1})) "$PYTHON" -m sicog train "${args[@]}" --dry-run
        exit $?
    fi
    exit 0
}
