#!/usr/bin/env bash
# DPO warm-up (the paper's DPO variant of stage 0): sigmoid DPO (beta 0.1) plus an SFT term on the
# chosen answer (weight 1.0) against a frozen copy of the starting model. All parts trainable.
#   PREV_STAGE_CHECKPOINT  the model to start from; also the frozen reference          [required]
#   DATA_PATH              preference JSONL {id, image, prompt, chosen, rejected} from
#                          `sicog build-preferences`   [tiny: $CURATION_DIR/preferences.jsonl]
#   CURATION_DIR           (tiny) the reasoning curation folder            [runs/curation/reasoning]
#   IMAGE_FOLDER           image root of the pairs              [tiny: $WORLD_DIR when it exists]
#   DPO_BETA               beta of the DPO loss                          [profile: 0.1]
#   DPO_SFT_WEIGHT         weight of the SFT term                        [profile: 1.0]
#   DPO_PRECOMPUTE_REF     1: reference log-probs computed once before training, then released [0]
#   FINETUNE_LEARNING_RATE, FINETUNE_BATCH (per device)   override the profile
# Common variables: training_scripts/common.sh (ZERO=3 is refused: the reference is a whole copy).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [ "${SICOG_PROFILE:-tiny}" = tiny ]; then
    DATA_PATH=${DATA_PATH:-${CURATION_DIR:-runs/curation/reasoning}/preferences.jsonl}
    if [ -z "${IMAGE_FOLDER:-}" ] && [ -d "$WORLD_DIR" ]; then IMAGE_FOLDER=$WORLD_DIR; fi
fi
train_common dpo ""
[ "$ZERO" != 3 ] || die "ZERO=3 is not supported by the dpo stage (it keeps a whole reference copy per device); use ZERO=2 or none"
need_dir PREV_STAGE_CHECKPOINT "the model to start from and the frozen reference"
TRAIN_ARGS+=(--model-name-or-path "$PREV_STAGE_CHECKPOINT")
add_lr_batch FINETUNE_LEARNING_RATE FINETUNE_BATCH
if [ -n "${DPO_BETA:-}" ]; then
    need_pos_float DPO_BETA
    TRAIN_ARGS+=(--dpo-beta "$DPO_BETA")
fi
if [ -n "${DPO_SFT_WEIGHT:-}" ]; then need_float DPO_SFT_WEIGHT; TRAIN_ARGS+=(--dpo-sft-weight "$DPO_SFT_WEIGHT"); fi
DPO_PRECOMPUTE_REF=${DPO_PRECOMPUTE_REF:-0}
need_choice DPO_PRECOMPUTE_REF 0 1
[ "$DPO_PRECOMPUTE_REF" = 0 ] || TRAIN_ARGS+=(--dpo-precompute-ref true)
launch "$@"
