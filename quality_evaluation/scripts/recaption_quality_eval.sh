#!/usr/bin/env bash
# Self-consistency curation of caption candidates (CoD: step 5 compared; DD: the whole caption).
#
#   RAW_DATASET                 candidates file (tiny default: OUTPUT_ROOT/recap-cod/captions.jsonl)
#   MODEL_NAME_OR_PATH          the model that generated them, recorded in the summary
#                               (tiny default: checkpoints/stage0-perception, as training_scripts write it)
#   ENCODER_MODEL_NAME_OR_PATH  local sentence-transformers folder (default: the packaged
#                               all-MiniLM-L6-v2; required with SICOG_PROFILE=paper, e.g. NV-Embed-v2)
#   TRUST_REMOTE_CODE           1 to run the encoder folder's own code (NV-Embed-v2 needs it); default 0
#   ENCODER_DTYPE               auto (default: the folder's own) | float32 | bfloat16 | float16
#   THRESHOLDS                  comma list of tau (default 0.8,0.85,0.9): one curated file per tau
#   OUTPUT_DIR                  output folder (tiny default: OUTPUT_ROOT/curation/recaption)
#   METHOD                      embedding (the paper) | random (one seeded candidate: the no-curation ablation); vote is for reasoning
#   KIND                        auto (default, from the candidates' metadata) | cod | cot | plain
#   SEED BATCH_SIZE MIN_CANDIDATES   rejected-candidate seed (0), encoder batch (64), min usable candidates (2)
#   SICOG_PROFILE               tiny (default) | paper;  OUTPUT_ROOT (default runs);  PYTHON (default python3)
#   NNODES NPROC_PER_NODE NODE_RANK MASTER_ADDR MASTER_PORT   torchrun layout (inputs split by rank)
# Arguments are passed on to `sicog curate`, e.g. `--append-eos --padding-side right` as NV-Embed-v2
# asks for, or `--chunk-size 2048`.
# Writes OUTPUT_DIR/curated_tau{T}.jsonl, preferences.jsonl, scores.jsonl, rejects.jsonl,
# summary.json and plots/*.png.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

curate_defaults recaption
[ "$METHOD" = embedding ] || [ "$METHOD" = random ] || die "METHOD='$METHOD': captions are curated by embedding similarity, or picked at random for the no-curation ablation (vote compares final answers; use reasoning_quality_eval.sh)"
check_curate
run_curate "$@"
