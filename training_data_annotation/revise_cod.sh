#!/usr/bin/env bash
# Stage 0 supervision: revise captioned records into Chain-of-Description (CoD) captions with a
# teacher model behind an OpenAI-compatible endpoint, and derive their detailed-description (DD) form.
#
#   ORIGINAL_CAPTION_FILE  records with image, question and caption, JSON or JSONL   (or argument 1)
#                          (tiny default: WORLD_DIR/data/cod_seed_raw.jsonl)
#   IMAGE_FOLDER           folder the records' image paths are relative to          (or argument 2)
#                          (tiny default: WORLD_DIR; IMAGE_DIR, the authors' name, is read too)
#   OUTPUT_COD_DIR         receives cod.jsonl, annotate_progress.jsonl,
#                          annotate_failures.jsonl and annotate_summary.json         (or argument 3)
#                          (tiny default: OUTPUT_ROOT/annotation/cod)
#   OUTPUT_DD_DIR          receives dd.jsonl  (tiny default: OUTPUT_ROOT/annotation/dd) (or argument 4)
#   OPENAI_BASE_URL        endpoint, e.g. https://api.openai.com/v1 (paper default: the OpenAI API;
#                          tiny default: the mini world's teacher, served in-process for the run)
#   OPENAI_API_KEY         key of the endpoint (read by the client, never printed; not needed for the
#                          in-process world teacher)
#   MODEL                  teacher model (default gpt-4o; sicog-world-teacher for the world teacher)
#   CONCURRENCY            requests in flight at once (default 8)
#   SICOG_PROFILE          tiny (default) | paper;  OUTPUT_ROOT (default runs); WORLD_DIR (default
#                          runs/world);  PYTHON (default python3)
#
# Arguments starting with -- are passed on to `sicog annotate-cod` (e.g. --retry-failures,
# --max-attempts 8). Rerunning resumes: ids already annotated or failed are skipped.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../sicog/shell/checks.sh"

positional=()
while [[ $# -gt 0 && ${#positional[@]} -lt 4 && $1 != --* ]]; do positional+=("$1"); shift; done
SICOG_PROFILE=${SICOG_PROFILE:-tiny}
need_choice SICOG_PROFILE tiny paper
OUTPUT_ROOT=${OUTPUT_ROOT:-runs}
IMAGE_FOLDER=${IMAGE_FOLDER:-${IMAGE_DIR:-}}
teacher=()
if [[ $SICOG_PROFILE == tiny ]]; then
  ORIGINAL_CAPTION_FILE=${ORIGINAL_CAPTION_FILE:-$WORLD_DIR/data/cod_seed_raw.jsonl}
  IMAGE_FOLDER=${IMAGE_FOLDER:-$WORLD_DIR}
  OUTPUT_COD_DIR=${OUTPUT_COD_DIR:-$OUTPUT_ROOT/annotation/cod}
  OUTPUT_DD_DIR=${OUTPUT_DD_DIR:-$OUTPUT_ROOT/annotation/dd}
  if [[ -z ${OPENAI_BASE_URL:-} ]]; then
    [[ -f $WORLD_DIR/world.jsonl ]] || die "WORLD_DIR='$WORLD_DIR' holds no built world (run: sicog world build --out $WORLD_DIR), or set OPENAI_BASE_URL"
    teacher=(--world-teacher "$WORLD_DIR")
    MODEL=${MODEL:-sicog-world-teacher}
  fi
fi
ORIGINAL_CAPTION_FILE=${positional[0]:-${ORIGINAL_CAPTION_FILE:-}}
IMAGE_FOLDER=${positional[1]:-$IMAGE_FOLDER}
OUTPUT_COD_DIR=${positional[2]:-${OUTPUT_COD_DIR:-}}
OUTPUT_DD_DIR=${positional[3]:-${OUTPUT_DD_DIR:-}}
MODEL=${MODEL:-gpt-4o}
CONCURRENCY=${CONCURRENCY:-8}
PYTHON=${PYTHON:-python3}

need_file ORIGINAL_CAPTION_FILE "the captioned records to revise; or argument 1"
need_dir IMAGE_FOLDER "the folder the records' image paths are relative to; or argument 2"
need_set OUTPUT_COD_DIR "where the CoD records go; or argument 3"
need_set OUTPUT_DD_DIR "where the DD records go; or argument 4"
if [[ ${#teacher[@]} -eq 0 ]]; then
  need_set OPENAI_API_KEY "the key of the teacher endpoint; export it"
  if [[ -n ${OPENAI_BASE_URL:-} && ! $OPENAI_BASE_URL =~ ^https?:// ]]; then
    die "OPENAI_BASE_URL='$OPENAI_BASE_URL' must start with http:// or https://"
  fi
fi
need_set MODEL "the teacher model name, default gpt-4o"
need_pos_int CONCURRENCY
need_exe PYTHON

[[ -z ${OPENAI_API_KEY:-} ]] || export OPENAI_API_KEY
[[ -z ${OPENAI_BASE_URL:-} ]] || export OPENAI_BASE_URL
exec_sicog annotate-cod \
  --input "$ORIGINAL_CAPTION_FILE" \
  --image-folder "$IMAGE_FOLDER" \
  --output-cod-dir "$OUTPUT_COD_DIR" \
  --output-dd-dir "$OUTPUT_DD_DIR" \
  --teacher "$MODEL" \
  --concurrency "$CONCURRENCY" \
  ${teacher[@]+"${teacher[@]}"} \
  "$@"
