# Shared by recaption_quality_eval.sh and reasoning_quality_eval.sh: variable checks and the launch.
# Sourced, not run. Every check names the variable it rejects.

source "$(dirname "${BASH_SOURCE[0]}")/../../sicog/shell/checks.sh"

# curate_defaults TASK: TASK is recaption or reasoning. The tiny profile reads the candidates the
# recap scripts write under OUTPUT_ROOT; the paper profile needs every path given.
curate_defaults() {
    local task=$1
    SICOG_PROFILE=${SICOG_PROFILE:-tiny}
    need_choice SICOG_PROFILE tiny paper
    OUTPUT_ROOT=${OUTPUT_ROOT:-runs}
    THRESHOLDS=${THRESHOLDS:-0.8,0.85,0.9}
    METHOD=${METHOD:-embedding}
    KIND=${KIND:-auto}
    SEED=${SEED:-0}
    BATCH_SIZE=${BATCH_SIZE:-64}
    MIN_CANDIDATES=${MIN_CANDIDATES:-2}
    TRUST_REMOTE_CODE=${TRUST_REMOTE_CODE:-0}
    ENCODER_DTYPE=${ENCODER_DTYPE:-auto}
    NNODES=${NNODES:-1}
    NPROC_PER_NODE=${NPROC_PER_NODE:-1}
    NODE_RANK=${NODE_RANK:-0}
    MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
    MASTER_PORT=${MASTER_PORT:-29512}
    PYTHON=${PYTHON:-python3}
    if [ "$SICOG_PROFILE" = tiny ]; then
        if [ "$task" = recaption ]; then
            RAW_DATASET=${RAW_DATASET:-$OUTPUT_ROOT/recap-cod/captions.jsonl}
            MODEL_NAME_OR_PATH=${MODEL_NAME_OR_PATH:-checkpoints/stage0-perception}
        else
            RAW_DATASET=${RAW_DATASET:-$OUTPUT_ROOT/reasoning-cot/reasoning.jsonl}
            MODEL_NAME_OR_PATH=${MODEL_NAME_OR_PATH:-checkpoints/stage0-reasoning}
        fi
        OUTPUT_DIR=${OUTPUT_DIR:-$OUTPUT_ROOT/curation/$task}
    else
        need_set ENCODER_MODEL_NAME_OR_PATH "SICOG_PROFILE=paper: a local sentence-embedding folder, e.g. NV-Embed-v2 (with TRUST_REMOTE_CODE=1)"
    fi
}

check_curate() {
    need_file RAW_DATASET "the candidates file written by the recap scripts"
    need_set MODEL_NAME_OR_PATH "the model that generated the candidates; recorded in the summary"
    need_set OUTPUT_DIR "the folder for the curated data, pairs, scores and plots"
    [ -z "${ENCODER_MODEL_NAME_OR_PATH:-}" ] || need_dir ENCODER_MODEL_NAME_OR_PATH "a local sentence-transformers model"
    [[ "$THRESHOLDS" =~ ^[0-9]*\.?[0-9]+(,[0-9]*\.?[0-9]+)*$ ]] || die "THRESHOLDS='$THRESHOLDS' must be comma-separated numbers, e.g. 0.8,0.85,0.9"
    local tau
    for tau in ${THRESHOLDS//,/ }; do  # a max score lies in [0, 1]: above 1 nothing is kept, at 0 everything
        awk "BEGIN{exit !($tau >= 0 && $tau <= 1)}" || die "THRESHOLDS='$THRESHOLDS': $tau is outside [0, 1], the range of a max score"
    done
    need_choice METHOD embedding vote random
    need_choice KIND auto cod cot plain
    need_int SEED
    need_pos_int BATCH_SIZE
    need_pos_int MIN_CANDIDATES
    need_choice TRUST_REMOTE_CODE 0 1
    need_choice ENCODER_DTYPE auto float32 bfloat16 float16
    check_layout
    need_exe PYTHON
}

# run_curate [EXTRA ARGS...]: extra arguments go to `sicog curate` as they are.
run_curate() {
    local args=(curate --candidates "$RAW_DATASET" --out "$OUTPUT_DIR" --generator "$MODEL_NAME_OR_PATH"
        --thresholds "$THRESHOLDS" --method "$METHOD" --kind "$KIND" --seed "$SEED" --batch-size "$BATCH_SIZE"
        --min-candidates "$MIN_CANDIDATES" --encoder-dtype "$ENCODER_DTYPE")
    [ -z "${ENCODER_MODEL_NAME_OR_PATH:-}" ] || args+=(--encoder "$ENCODER_MODEL_NAME_OR_PATH")
    [ "$TRUST_REMOTE_CODE" = 0 ] || args+=(--trust-remote-code)
    args+=("$@")
    echo "[curate] profile=$SICOG_PROFILE candidates=$RAW_DATASET method=$METHOD thresholds=$THRESHOLDS -> $OUTPUT_DIR (nodes=$NNODES x $NPROC_PER_NODE)"
    run_sicog "${args[@]}"
}
