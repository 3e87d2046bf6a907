#!/usr/bin/env bash
# Stage 1.5: multimodal pre-training on the curated self-generated captions and answers.
# All parts trainable; lr 2e-5, global batch 128 at paper scale.
#   MM_PROJECTOR_CHECKPOINT  the stage-1 output folder (or its mm_projector.safetensors)  [required]
#   LLM_CKPT_DIR             LLM folder whose weights replace the model's language model  [optional]
#   MODEL_PATH               the model the projector fits   [the base model recorded by stage 1]
#   DATA_PATH                the curated data (JSON/JSONL or mixture YAML)           [required]
#   FINETUNE_LEARNING_RATE, FINETUNE_BATCH (per device)   override the profile
# Common variables: training_scripts/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
train_common stage1_5 ""
need_set MM_PROJECTOR_CHECKPOINT "the stage-1 projector artefact"
[ -e "$MM_PROJECTOR_CHECKPOINT" ] || die "MM_PROJECTOR_CHECKPOINT='$MM_PROJECTOR_CHECKPOINT' does not exist"
TRAIN_ARGS+=(--mm-projector-checkpoint "$MM_PROJECTOR_CHECKPOINT")
if [ -n "${LLM_CKPT_DIR:-}" ]; then need_dir LLM_CKPT_DIR "an LLM folder"; TRAIN_ARGS+=(--llm-ckpt-dir "$LLM_CKPT_DIR"); fi
if [ -n "${MODEL_PATH:-}" ]; then need_dir MODEL_PATH "the model the projector fits"; TRAIN_ARGS+=(--model-name-or-path "$MODEL_PATH"); fi
add_lr_batch FINETUNE_LEARNING_RATE FINETUNE_BATCH
launch "$@"
