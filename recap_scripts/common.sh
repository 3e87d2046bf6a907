# Shared by recap_inference.sh and reasoning_inference.sh: variable checks, the launch, the merge.
# Sourced, not run. Every check names the variable it rejects.

source "$(dirname "${BASH_SOURCE[0]}")/../sicog/shell/checks.sh"

# Profile defaults: tiny = the mini world (WORLD_DIR, default runs/world: sicog/shell/checks.sh) and
# the stage-0 models the training scripts write under ./checkpoints; paper = model, data and image
# paths must be given.
profile_defaults() {
    SICOG_PROFILE=${SICOG_PROFILE:-tiny}
    need_choice SICOG_PROFILE tiny paper
    OUTPUT_ROOT=${OUTPUT_ROOT:-runs}
    AUGMENT_METHODS=${AUGMENT_METHODS:-}
    SPLIT=${SPLIT:-}
    NNODES=${NNODES:-1}
    NODE_RANK=${NODE_RANK:-0}
    MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
    MASTER_PORT=${MASTER_PORT:-29511}
    PYTHON=${PYTHON:-python3}
    if [ "$SICOG_PROFILE" = tiny ]; then
        IMAGE_FOLDER=${IMAGE_FOLDER:-$WORLD_DIR}
        MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-256}
        BATCH_SIZE=${BATCH_SIZE:-4}
        NPROC_PER_NODE=${NPROC_PER_NODE:-1}
    else
        BATCH_SIZE=${BATCH_SIZE:-8}
        NPROC_PER_NODE=${NPROC_PER_NODE:-8}
    fi
    # TEMPERATURE TOP_P BEAMS N_CANDIDATES SEED (and MAX_NEW_TOKENS at paper scale): the package's
    # sampling defaults, kept where already set; AUGMENT_CHOICES: the image corruptions it knows.
    # settings.py needs only the standard library, so any python3 runs it by path (PYTHON may be
    # `echo` for a dry run).
    local defaults settings
    settings="$(dirname "${BASH_SOURCE[0]}")/../sicog/generate/settings.py"
    defaults=$(python3 "$settings") || die "could not read the sampling defaults: python3 $settings failed"
    eval "$defaults"
}

check_common() {
    need_set EXPERIMENT_NAME
    [[ "$EXPERIMENT_NAME" =~ ^[A-Za-z0-9._+-]+$ ]] || die "EXPERIMENT_NAME='$EXPERIMENT_NAME' may hold only letters, digits and ._+-"
    need_dir MODEL_PATH "the model folder to generate with"
    need_set DATA_PATH "the input records, JSON or JSONL"
    [ -e "$DATA_PATH" ] || die "DATA_PATH='$DATA_PATH' does not exist"
    need_dir IMAGE_FOLDER "the folder the records' image paths are relative to"
    need_float TEMPERATURE
    need_float TOP_P
    awk "BEGIN{exit !($TOP_P > 0 && $TOP_P <= 1)}" || die "TOP_P='$TOP_P' must be in (0, 1]"
    need_pos_int BEAMS
    need_pos_int N_CANDIDATES
    [ "$BEAMS" -eq 1 ] || [ "$N_CANDIDATES" -le "$BEAMS" ] || die "N_CANDIDATES=$N_CANDIDATES must be <= BEAMS=$BEAMS with beam search"
    need_pos_int MAX_NEW_TOKENS
    need_pos_int BATCH_SIZE
    need_int SEED
    check_layout
    # Node 0 merges; other nodes may still be writing their shards: it waits MERGE_WAIT seconds for their ids.
    MERGE_WAIT=${MERGE_WAIT:-$([ "$NNODES" -gt 1 ] && echo 7200 || echo 0)}
    need_int MERGE_WAIT
    local m
    for m in ${AUGMENT_METHODS//,/ }; do
        [[ ",$AUGMENT_CHOICES," == *",$m,"* ]] || die "AUGMENT_METHODS: unknown method '$m' (use $AUGMENT_CHOICES)"
    done
}

# SPLIT: empty = the whole DATA_PATH; "i/k" = zero-based chunk i of k (by stable id hash);
# any other name = DATA_PATH is a folder holding NAME.jsonl or NAME.json.
# Sets DATA_FILE, CHUNK_ARGS and SPLIT_TAG.
resolve_split() {
    CHUNK_ARGS=()
    SPLIT_TAG=""
    DATA_FILE=$DATA_PATH
    if [ -z "$SPLIT" ]; then
        [ -f "$DATA_PATH" ] || die "DATA_PATH='$DATA_PATH' is a folder: set SPLIT to the name of a file in it"
    elif [[ "$SPLIT" =~ ^([0-9]+)/([0-9]+)$ ]]; then
        local i=${BASH_REMATCH[1]} k=${BASH_REMATCH[2]}
        [ "$k" -ge 1 ] && [ "$i" -lt "$k" ] || die "SPLIT='$SPLIT': chunk i/k needs 0 <= i < k (zero-based)"
        [ -f "$DATA_PATH" ] || die "DATA_PATH='$DATA_PATH' must be a file when SPLIT is a chunk i/k"
        CHUNK_ARGS=(--chunk "$i/$k")
        SPLIT_TAG=".chunk$i-of-$k"
    elif [[ "$SPLIT" =~ ^[A-Za-z0-9._-]+$ ]]; then
        [ -d "$DATA_PATH" ] || die "SPLIT='$SPLIT' names a file in DATA_PATH, but DATA_PATH='$DATA_PATH' is not a folder"
        if [ -f "$DATA_PATH/$SPLIT.jsonl" ]; then DATA_FILE=$DATA_PATH/$SPLIT.jsonl
        elif [ -f "$DATA_PATH/$SPLIT.json" ]; then DATA_FILE=$DATA_PATH/$SPLIT.json
        else die "SPLIT='$SPLIT': neither $DATA_PATH/$SPLIT.jsonl nor $DATA_PATH/$SPLIT.json exists"; fi
        SPLIT_TAG=".$SPLIT"
    else
        die "SPLIT='$SPLIT' is neither a chunk i/k nor a file name"
    fi
}

# run_generation TASK OUT: all ranks of this node, then (node rank 0) the checked merge.
run_generation() {
    local task=$1 out=$2
    local args=(generate --task "$task" --model "$MODEL_PATH" --data "$DATA_FILE" --image-folder "$IMAGE_FOLDER"
        --out "$out" --prompt "$PROMPT" --num-candidates "$N_CANDIDATES" --temperature "$TEMPERATURE"
        --top-p "$TOP_P" --num-beams "$BEAMS" --max-new-tokens "$MAX_NEW_TOKENS" --seed "$SEED"
        --batch-size "$BATCH_SIZE" --augment "$AUGMENT_METHODS" "${CHUNK_ARGS[@]}")
    mkdir -p "$(dirname "$out")"
    echo "[$task] profile=$SICOG_PROFILE model=$MODEL_PATH data=$DATA_FILE -> $out (nodes=$NNODES x $NPROC_PER_NODE)"
    run_sicog "${args[@]}"
    if [ "$NODE_RANK" -eq 0 ]; then
        "$PYTHON" -m sicog merge-candidates --inputs "$DATA_FILE" --shards "$out.rank*-of-*.jsonl" \
            --out "$out" "${CHUNK_ARGS[@]}" --wait "$MERGE_WAIT"
    fi
}
