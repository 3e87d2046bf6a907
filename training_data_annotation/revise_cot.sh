#!/usr/bin/env bash
# Stage 0 supervision: convert LLaVA-CoT records (<SUMMARY>/<CAPTION>/<REASONING>/<CONCLUSION>) into
# the four-step structured CoT format and the short conclusion-only format.
#
#   ORIGINAL_COT_FILE  LLaVA-CoT records, JSON or JSONL                              (or argument 1)
#                      (tiny default: WORLD_DIR/data/llava_cot_seed.json)
#   OUTPUT_COT_DIR     receives cot.jsonl (four-step answers, step-by-step questions)
#                      and cot_rejects.jsonl (id, index and reason of each rejected record)
#                      (tiny default: OUTPUT_ROOT/annotation/cot)                    (or argument 2)
#   OUTPUT_SHORT_DIR   receives short.jsonl (conclusions, questions as in the input)
#                      (tiny default: OUTPUT_ROOT/annotation/cot_short)              (or argument 3)
#   SICOG_PROFILE      tiny (default) | paper;  OUTPUT_ROOT (default runs); WORLD_DIR (default
#                      runs/world);  PYTHON (default python3)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../sicog/shell/checks.sh"

positional=()
while [[ $# -gt 0 && ${#positional[@]} -lt 3 && $1 != --* ]]; do positional+=("$1"); shift; done
SICOG_PROFILE=${SICOG_PROFILE:-tiny}
need_choice SICOG_PROFILE tiny paper
OUTPUT_ROOT=${OUTPUT_ROOT:-runs}
if [[ $SICOG_PROFILE == tiny ]]; then
  ORIGINAL_COT_FILE=${ORIGINAL_COT_FILE:-$WORLD_DIR/data/llava_cot_seed.json}
  OUTPUT_COT_DIR=${OUTPUT_COT_DIR:-$OUTPUT_ROOT/annotation/cot}
  OUTPUT_SHORT_DIR=${OUTPUT_SHORT_DIR:-$OUTPUT_ROOT/annotation/cot_short}
fi
ORIGINAL_COT_FILE=${positional[0]:-${ORIGINAL_COT_FILE:-}}
OUTPUT_COT_DIR=${positional[1]:-${OUTPUT_COT_DIR:-}}
OUTPUT_SHORT_DIR=${positional[2]:-${OUTPUT_SHORT_DIR:-}}
PYTHON=${PYTHON:-python3}

need_file ORIGINAL_COT_FILE "the LLaVA-CoT records to convert; or argument 1"
need_set OUTPUT_COT_DIR "where the four-step records go; or argument 2"
need_set OUTPUT_SHORT_DIR "where the short-answer records go; or argument 3"
need_exe PYTHON

exec_sicog convert-cot \
  --input "$ORIGINAL_COT_FILE" \
  --output-cot-dir "$OUTPUT_COT_DIR" \
  --output-short-dir "$OUTPUT_SHORT_DIR" \
  "$@"
