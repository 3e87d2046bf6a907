# Shared by the four training stage scripts: variable checks and the launch of `sicog train`.
# Sourced, not run. Every check names the variable it rejects.
#
# Common variables (defaults in brackets):
#   EXPERIMENT_NAME   run name; output in $OUTPUT_ROOT/$EXPERIMENT_NAME          [required]
#   OUTPUT_ROOT       [./checkpoints]
#   SICOG_PROFILE     tiny | paper: stage hyperparameters configs/stages/<profile>.yaml   [tiny]
#   DATA_PATH         LLaVA JSON/JSONL or a mixture YAML          [tiny: the mini world's split]
#   IMAGE_FOLDER      image root  [tiny: $WORLD_DIR for data inside it; else the data file's folder]
#   WORLD_DIR         the mini world (tiny profile)                               [runs/world]
#   ZERO              2 | 3 | none: DeepSpeed ZeRO stage               [tiny: none, paper: 2]
#   ACCU_STEPS        gradient accumulation; checked against the global batch and world size
#   GLOBAL_BATCH      override the stage's global batch (tiny 16; paper 128, stage 1 256)
#   RESUME            auto | none | a checkpoint folder                                  [auto]
#   NNODES NPROC_PER_NODE NODE_RANK MASTER_ADDR MASTER_PORT   torchrun layout    [1 1 0 127.0.0.1 29500]
#   PYTHON            the interpreter with sicog installed                            [python3]
# Extra arguments to a stage script are passed on to `sicog train` (e.g. --max_steps 10).

source "$(dirname "${BASH_SOURCE[0]}")/../sicog/shell/checks.sh"

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# train_common STAGE DEFAULT_DATA: checks the shared variables and fills TRAIN_ARGS.
train_common() {
    local stage=$1 default_data=$2
    SICOG_PROFILE=${SICOG_PROFILE:-tiny}
    need_choice SICOG_PROFILE tiny paper
    need_set EXPERIMENT_NAME "names the output folder"
    [[ "$EXPERIMENT_NAME" =~ ^[A-Za-z0-9._+-]+$ ]] || die "EXPERIMENT_NAME='$EXPERIMENT_NAME' may hold only letters, digits and ._+-"
    OUTPUT_ROOT=${OUTPUT_ROOT:-./checkpoints}
    if [ "$SICOG_PROFILE" = tiny ]; then ZERO=${ZERO:-none}; else ZERO=${ZERO:-2}; fi
    need_choice ZERO 2 3 none
    RESUME=${RESUME:-auto}
    NNODES=${NNODES:-1}; NPROC_PER_NODE=${NPROC_PER_NODE:-1}; NODE_RANK=${NODE_RANK:-0}
    MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}; MASTER_PORT=${MASTER_PORT:-29500}
    PYTHON=${PYTHON:-python3}
    check_layout
    need_exe PYTHON "the interpreter with sicog installed"

    if [ -z "${DATA_PATH:-}" ] && [ "$SICOG_PROFILE" = tiny ] && [ -n "$default_data" ]; then
        DATA_PATH=$WORLD_DIR/$default_data
    fi
    need_file DATA_PATH "the training records: LLaVA JSON/JSONL or a mixture YAML"
    if [ -z "${IMAGE_FOLDER:-}" ] && [ "$SICOG_PROFILE" = tiny ] && [ -d "$WORLD_DIR" ]; then
        case "$(cd "$(dirname "$DATA_PATH")" && pwd)/" in
            "$(cd "$WORLD_DIR" && pwd)"/*) IMAGE_FOLDER=$WORLD_DIR ;;
        esac
    fi
    [ -z "${IMAGE_FOLDER:-}" ] || need_dir IMAGE_FOLDER "the folder the records' image paths are relative to"

    TRAIN_ARGS=(--stage "$stage" --profile "$SICOG_PROFILE" --data-path "$DATA_PATH"
                --output_dir "$OUTPUT_ROOT/$EXPERIMENT_NAME")
    [ -z "${IMAGE_FOLDER:-}" ] || TRAIN_ARGS+=(--image-folder "$IMAGE_FOLDER")
    [ "$ZERO" = none ] || TRAIN_ARGS+=(--deepspeed "$REPO_ROOT/configs/deepspeed/zero$ZERO.json")
    if [ -n "${ACCU_STEPS:-}" ]; then need_pos_int ACCU_STEPS; TRAIN_ARGS+=(--gradient_accumulation_steps "$ACCU_STEPS"); fi
    if [ -n "${GLOBAL_BATCH:-}" ]; then need_pos_int GLOBAL_BATCH; TRAIN_ARGS+=(--global-batch-size "$GLOBAL_BATCH"); fi
    case "$RESUME" in
        none) ;;
        auto) TRAIN_ARGS+=(--resume_from_checkpoint auto) ;;
        *) need_dir RESUME "a checkpoint folder, auto or none"; TRAIN_ARGS+=(--resume_from_checkpoint "$RESUME") ;;
    esac
}

# add_lr_batch LR_VAR BATCH_VAR: optional learning rate and per-device batch overrides.
add_lr_batch() {
    if [ -n "${!1:-}" ]; then need_pos_float "$1"; TRAIN_ARGS+=(--learning_rate "${!1}"); fi
    if [ -n "${!2:-}" ]; then need_pos_int "$2"; TRAIN_ARGS+=(--per_device_train_batch_size "${!2}"); fi
}

# launch [extra sicog train args...]: plain python for one process, torchrun otherwise (and for DeepSpeed).
launch() {
    if [ "$ZERO" = none ]; then
        run_sicog train "${TRAIN_ARGS[@]}" "$@"
    else
        run_sicog --torchrun train "${TRAIN_ARGS[@]}" "$@"
    fi
}
