#!/usr/bin/env bash
# Stage 0: warm up the perception (CoD captions) or reasoning (CoT answers) model from a base MLLM.
# All parts trainable; lr 2e-5, global batch 128 at paper scale (configs/stages/).
#   PREV_STAGE_CHECKPOINT  the base MLLM folder                                  [required]
#   DATA_PATH              [tiny: $WORLD_DIR/data/cod_seed.jsonl, the perception seed]
#   FINETUNE_LEARNING_RATE, FINETUNE_BATCH (per device)   override the profile
# Common variables: training_scripts/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
train_common stage0 data/cod_seed.jsonl
need_dir PREV_STAGE_CHECKPOINT "the base MLLM to warm up"
TRAIN_ARGS+=(--model-name-or-path "$PREV_STAGE_CHECKPOINT")
add_lr_batch FINETUNE_LEARNING_RATE FINETUNE_BATCH
launch "$@"
