#!/usr/bin/env bash
# Stage 2: visual instruction tuning. All parts trainable; lr 2e-5, global batch 128 at paper scale.
#   PREV_STAGE_CHECKPOINT    the stage-1.5 output folder                  [required unless below]
#   MM_PROJECTOR_CHECKPOINT  baseline (stage 1 + stage 2, no 1.5): start from the stage-1 projector
#                            artefact on MODEL_PATH [default: the base model recorded by stage 1]
#   DATA_PATH                [tiny: $WORLD_DIR/data/sft.jsonl]
#   FINETUNE_LEARNING_RATE, FINETUNE_BATCH (per device)   override the profile
# Common variables: training_scripts/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
train_common stage2 data/sft.jsonl
if [ -n "${MM_PROJECTOR_CHECKPOINT:-}" ]; then
    [ -z "${PREV_STAGE_CHECKPOINT:-}" ] || die "set PREV_STAGE_CHECKPOINT or MM_PROJECTOR_CHECKPOINT, not both"
    [ -e "$MM_PROJECTOR_CHECKPOINT" ] || die "MM_PROJECTOR_CHECKPOINT='$MM_PROJECTOR_CHECKPOINT' does not exist"
    TRAIN_ARGS+=(--mm-projector-checkpoint "$MM_PROJECTOR_CHECKPOINT")
    if [ -n "${MODEL_PATH:-}" ]; then need_dir MODEL_PATH "the model the projector fits"; TRAIN_ARGS+=(--model-name-or-path "$MODEL_PATH"); fi
else
    need_dir PREV_STAGE_CHECKPOINT "the model to instruction-tune (or set MM_PROJECTOR_CHECKPOINT for the baseline)"
    TRAIN_ARGS+=(--model-name-or-path "$PREV_STAGE_CHECKPOINT")
fi
add_lr_batch FINETUNE_LEARNING_RATE FINETUNE_BATCH
launch "$@"
