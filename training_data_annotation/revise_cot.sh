#!/usr/bin/env bash
# Stage 0 supervision: convert LLaVA-CoT records (<SUMMARY>/<CAPTION>/<REASONING>/<CONCLUSION>) into
# the four-step structured CoT format and the short conclusion-only format.
#
#   ORIGINAL_COT_FILE  LLaVA-CoT records, JSON or JSONL                              (or argument 1)
#   OUTPUT_COT_DIR     receives cot.jsonl (four-step answers, step-by-step questions)
#                      and cot_rejects.jsonl (id, index and reason of each rejected record)
#                                                                                    (or argument 2)
#   OUTPUT_SHORT_DIR   receives short.jsonl (conclusions, questions as in the input) (or argument 3)
#   PYTHON             interpreter with sicog installed (default python)
set -euo pipefail

die() { echo "revise_cot.sh: $*" >&2; exit 2; }

positional=()
while [[ $# -gt 0 && ${#positional[@]} -lt 3 && $1 != --* ]]; do positional+=("$1"); shift; done
ORIGINAL_COT_FILE=${positional[0]:-${ORIGINAL_COT_FILE:-}}
OUTPUT_COT_DIR=${positional[1]:-${OUTPUT_COT_DIR:-}}
OUTPUT_SHORT_DIR=${positional[2]:-${OUTPUT_SHORT_DIR:-}}
PYTHON=${PYTHON:-python}

[[ -n $ORIGINAL_COT_FILE ]] || die "ORIGINAL_COT_FILE is not set (the LLaVA-CoT records to convert; or argument 1)"
[[ -f $ORIGINAL_COT_FILE ]] || die "ORIGINAL_COT_FILE=$ORIGINAL_COT_FILE is not a file"
[[ -n $OUTPUT_COT_DIR ]] || die "OUTPUT_COT_DIR is not set (where the four-step records go; or argument 2)"
[[ -n $OUTPUT_SHORT_DIR ]] || die "OUTPUT_SHORT_DIR is not set (where the short-answer records go; or argument 3)"
command -v "$PYTHON" >/dev/null || die "PYTHON=$PYTHON is not an executable"

exec "$PYTHON" -m sicog convert-cot \
  --input "$ORIGINAL_COT_FILE" \
  --output-cot-dir "$OUTPUT_COT_DIR" \
  --output-short-dir "$OUTPUT_SHORT_DIR" \
  "$@"
