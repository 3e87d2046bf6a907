#!/usr/bin/env bash
# Caption candidates: the perception model describes unlabeled images, N samples per image.
#
#   EXPERIMENT_NAME  run name; output in OUTPUT_ROOT/EXPERIMENT_NAME/captions[SPLIT_TAG].jsonl
#   MODEL_PATH       model folder (tiny default: checkpoints/stage0-perception, as training_scripts write it)
#   DATA_PATH        records with "id" and "image" (tiny default: WORLD_DIR/data/pool_images.jsonl)
#   IMAGE_FOLDER     root of the records' image paths (tiny default: WORLD_DIR, default runs/world)
#   PROMPT           cod-default (step-by-step, default) | default (detailed caption) | cod-conv
#   TEMPERATURE TOP_P BEAMS N_CANDIDATES MAX_NEW_TOKENS SEED BATCH_SIZE   sampling (defaults: sicog/generate/settings.py)
#   AUGMENT_METHODS  optional comma list of image corruptions (AUGMENT_METHODS in sicog/generate/settings.py)
#   SPLIT            optional: i/k (zero-based chunk of the ids) or NAME (DATA_PATH/NAME.json[l])
#   SICOG_PROFILE    tiny (default) | paper;  OUTPUT_ROOT (default runs);  PYTHON (default python3)
#   NNODES NPROC_PER_NODE NODE_RANK MASTER_ADDR MASTER_PORT   torchrun layout (1, tiny 1 | paper 8, 0,
#                    127.0.0.1, 29511); MERGE_WAIT: seconds node 0 waits for other nodes' ids (multi-node 7200)
# Writes the merged candidates file and its .rejects.jsonl (merge on node rank 0).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

profile_defaults
if [ "$SICOG_PROFILE" = tiny ]; then
    EXPERIMENT_NAME=${EXPERIMENT_NAME:-recap-cod}
    MODEL_PATH=${MODEL_PATH:-checkpoints/stage0-perception}
    DATA_PATH=${DATA_PATH:-$WORLD_DIR/data/pool_images.jsonl}
fi
PROMPT=${PROMPT:-cod-default}
need_choice PROMPT cod-default default cod-conv
check_common
resolve_split
run_generation caption "$OUTPUT_ROOT/$EXPERIMENT_NAME/captions$SPLIT_TAG.jsonl"
