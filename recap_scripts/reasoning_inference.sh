#!/usr/bin/env bash
# Reasoning candidates: the reasoning model answers unlabeled image-question pairs, N samples each.
#
#   EXPERIMENT_NAME  run name; output in OUTPUT_ROOT/EXPERIMENT_NAME/reasoning[SPLIT_TAG].jsonl
#   MODEL_PATH       model folder (tiny default: checkpoints/stage0-reasoning, as training_scripts write it)
#   DATA_PATH        records with "id", "image" and a human question (tiny default:
#                    WORLD_DIR/data/pool_questions.jsonl)
#   IMAGE_FOLDER     root of the records' image paths (tiny default: WORLD_DIR, default runs/world)
#   SPLIT            optional: i/k = zero-based chunk i of k of the ids (by stable hash; output tag
#                    .chunk{i}-of-{k}), or NAME = DATA_PATH is a folder holding NAME.jsonl/NAME.json
#   PROMPT           cot-default (step-by-step, default) | default (direct answer)
#   TEMPERATURE TOP_P BEAMS N_CANDIDATES MAX_NEW_TOKENS SEED BATCH_SIZE   sampling (defaults: sicog/generate/settings.py)
#   AUGMENT_METHODS  optional comma list of image corruptions (AUGMENT_METHODS in sicog/generate/settings.py)
#                    (corrupted-image candidates: the rejected side of DPO pairs)
#   SICOG_PROFILE    tiny (default) | paper;  OUTPUT_ROOT (default runs);  PYTHON (default python3)
#   NNODES NPROC_PER_NODE NODE_RANK MASTER_ADDR MASTER_PORT   torchrun layout (1, tiny 1 | paper 8, 0,
#                    127.0.0.1, 29511); MERGE_WAIT: seconds node 0 waits for other nodes' ids (multi-node 7200)
# Writes the merged candidates file and its .rejects.jsonl (merge on node rank 0).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

profile_defaults
if [ "$SICOG_PROFILE" = tiny ]; then
    EXPERIMENT_NAME=${EXPERIMENT_NAME:-reasoning-cot}
    MODEL_PATH=${MODEL_PATH:-checkpoints/stage0-reasoning}
    DATA_PATH=${DATA_PATH:-$WORLD_DIR/data/pool_questions.jsonl}
fi
PROMPT=${PROMPT:-cot-default}
need_choice PROMPT cot-default default
check_common
resolve_split
run_generation reasoning "$OUTPUT_ROOT/$EXPERIMENT_NAME/reasoning$SPLIT_TAG.jsonl"
