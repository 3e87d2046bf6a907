#!/usr/bin/env bash
# Stage 1: modality alignment. Projector only, no slicing; lr 2e-4, global batch 256 at paper scale.
# Writes $OUTPUT_ROOT/$EXPERIMENT_NAME/mm_projector.safetensors (+ mm_projector_config.json).
#   MODEL_PATH   the freshly assembled model (`sicog build-model --vision CLIP --llm LLM --out DIR`)  [required]
#   DATA_PATH    [tiny: $WORLD_DIR/data/align.jsonl]
#   PRETRAIN_LEARNING_RATE, PRETRAIN_BATCH (per device)   override the profile
# Common variables: training_scripts/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
train_common stage1 data/align.jsonl
need_dir MODEL_PATH "the assembled model to align"
TRAIN_ARGS+=(--model-name-or-path "$MODEL_PATH")
add_lr_batch PRETRAIN_LEARNING_RATE PRETRAIN_BATCH
launch "$@"
