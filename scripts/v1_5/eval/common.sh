# Settings and helpers shared by the LLaVA-1.5 benchmark scripts; sourced, never run.
# A script sets BENCHMARK (its name in run records and reports), then sources this file.
#
# Environment, all optional:
#   MODEL_PATH       checkpoint folder or hub id            (default: the bundled demo model, see below)
#   REDUCTION_RATIO  FitPrune FLOPs reduction, percent       (default 0: unpruned)
#   RECIPE           recipe book JSON                        (default: the checkpoint's, then the shipped one)
#   POLICY           pruning method (--policy: fitprune, fastv, random, dart, divprune, pyramiddrop, ...;
#                    the drivers list them all)               (default: the checkpoint's, fitprune)
#   CKPT             run name in answer file names           (default <model name>-r<ratio>[-<recipe name>][-<policy>],
#                                                             the policy named unless it is fitprune)
#   CONV_MODE        conversation template                   (default vicuna_v1)
#   DEVICE           cuda or cpu                             (default cuda)
#   BATCH_SIZE       questions per generate call             (default 1)
#   EVAL_DIR         benchmark data                          (default <repo>/playground/data/eval)
#   PYTHON           interpreter                             (default python)
#   CUDA_VISIBLE_DEVICES  GPUs; chunked benchmarks run one process per GPU
#
# With no MODEL_PATH the scripts run the bundled demo model (playground/models/llava-v1.5-shapes)
# on its synthetic test split in LLaVA's eval layout (EVAL_DIR default playground/shapes/eval,
# which holds textvqa and pope) on the CPU (DEVICE default cpu): `REDUCTION_RATIO=60 bash
# scripts/v1_5/eval/textvqa.sh` works on any machine. Name a model (e.g.
# MODEL_PATH=liuhaotian/llava-v1.5-7b) for the real benchmarks, on playground/data/eval and CUDA.
#
# An existing answers file is resumed: rerunning a script after an interruption answers
# only the questions left.
#
# Exit status: 0 done; 2 bad input (a local MODEL_PATH that does not exist, checked first; a
# missing data file, a bad setting, or a Python step's bad-input error), with one
# "<script>: error: ..." line on stderr; a failed step's own status otherwise (a chunked run:
# the first failed chunk's).

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
# the repository's packages, installed or not, from any working directory
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z ${MODEL_PATH:-} ]]; then
    MODEL_PATH=$REPO_ROOT/playground/models/llava-v1.5-shapes
    EVAL_DIR=${EVAL_DIR:-$REPO_ROOT/playground/shapes/eval}
    DEVICE=${DEVICE:-cpu}
fi
EVAL_DIR=${EVAL_DIR:-$REPO_ROOT/playground/data/eval}
REDUCTION_RATIO=${REDUCTION_RATIO:-0}
RECIPE=${RECIPE:-}
POLICY=${POLICY:-}
CONV_MODE=${CONV_MODE:-vicuna_v1}
DEVICE=${DEVICE:-cuda}
BATCH_SIZE=${BATCH_SIZE:-1}
PYTHON=${PYTHON:-python}
EVAL_ZIP="LLaVA's eval.zip (https://drive.google.com/file/d/1atZSBBrAX54yYpxtVVW33zFvcnaHeFPy), extracted into $EVAL_DIR"

# fail STATUS MESSAGE...: prints "<script>: error: MESSAGE" on stderr and exits with STATUS.
fail() {
    local status=$1
    shift
    echo "$(basename "$0"): error: $*" >&2
    exit "$status"
}

# die MESSAGE...: bad input (a missing file, a bad setting): one line and exit status 2, as
# the Python commands (argparse) give.
die() {
    fail 2 "$@"
}

# require_file PATH SOURCE: stops unless PATH is a file, naming it and where it comes from.
require_file() {
    [[ -f $1 ]] || die "missing data file $1; it comes from $2"
}

# require_dir PATH SOURCE: stops unless PATH is a folder, naming it and where it comes from.
require_dir() {
    [[ -d $1 ]] || die "missing data folder $1; it comes from $2"
}

# model_name PATH: LLaVA's model name of a checkpoint path (get_model_name_from_path).
model_name() {
    local path=${1%/}
    local name
    name=$(basename "$path")
    if [[ $name == checkpoint-* ]]; then
        name="$(basename "$(dirname "$path")")_$name"
    fi
    echo "$name"
}

# A MODEL_PATH that names a local folder (starts with / or .) must exist; a hub id
# (liuhaotian/llava-v1.5-7b) and an existing relative folder pass.
if [[ $MODEL_PATH == [/.]* && ! -e $MODEL_PATH ]]; then
    die "MODEL_PATH $MODEL_PATH does not exist"
fi
[[ -n ${BENCHMARK:-} ]] || die "BENCHMARK must be set before sourcing common.sh"
[[ $REDUCTION_RATIO =~ ^[0-9]+([.][0-9]+)?$ ]] \
    || die "REDUCTION_RATIO must be a percent such as 60 (or a fraction such as 0.6), got '$REDUCTION_RATIO'"
RATIO_PERCENT=$(awk -v r="$REDUCTION_RATIO" 'BEGIN { if (r > 0 && r < 1) r *= 100; printf "%g", r }')
if [[ -n $RECIPE ]]; then
    require_file "$RECIPE" "calibration for this model (README: calibrate) (or unset RECIPE to use the checkpoint's)"
fi
if [[ -z ${CKPT:-} ]]; then
    CKPT="$(model_name "$MODEL_PATH")-r${RATIO_PERCENT}"
    if [[ -n $RECIPE ]]; then
        CKPT+="-$(basename "${RECIPE%.json}")"
    fi
    if [[ -n $POLICY && $POLICY != fitprune ]]; then
        CKPT+="-$POLICY"
    fi
fi

DRIVER_ARGS=(
    --model-path "$MODEL_PATH" --temperature 0 --conv-mode "$CONV_MODE" --device "$DEVICE"
    --batch-size "$BATCH_SIZE" --reduction-ratio "$REDUCTION_RATIO" --benchmark "$BENCHMARK" --run-name "$CKPT"
)
if [[ -n $RECIPE ]]; then
    DRIVER_ARGS+=(--recipe "$RECIPE")
fi
if [[ -n $POLICY ]]; then
    DRIVER_ARGS+=(--policy "$POLICY")
fi

# run_chunked DIR ARGS...: model_vqa_loader with ARGS, one process per GPU of
# CUDA_VISIBLE_DEVICES (one on CPU) answering DIR/<chunks>_<idx>.jsonl; then the chunks are
# concatenated in order into DIR/merge.jsonl, whose run record merges the chunks'.
run_chunked() {
    local dir=$1
    shift
    local gpus=(cpu)
    if [[ $DEVICE != cpu ]]; then
        IFS=',' read -ra gpus <<< "${CUDA_VISIBLE_DEVICES:-0}"
    fi
    local chunks=${#gpus[@]}
    local pids=() parts=() idx pid status failed=0
    mkdir -p "$dir"
    for ((idx = 0; idx < chunks; idx++)); do
        local device_env=()
        if [[ $DEVICE != cpu ]]; then
            device_env=(env "CUDA_VISIBLE_DEVICES=${gpus[$idx]}")
        fi
        parts+=("$dir/${chunks}_${idx}.jsonl")
        "${device_env[@]}" "$PYTHON" -m llava.eval.model_vqa_loader "$@" \
            --answers-file "${parts[$idx]}" --num-chunks "$chunks" --chunk-idx "$idx" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        status=0
        wait "$pid" || status=$?
        ((failed != 0)) || failed=$status
    done
    ((failed == 0)) || fail "$failed" "a chunk failed with exit status $failed (see above); rerun the script to" \
        "resume the unfinished chunks"
    : > "$dir/merge.jsonl"
    for idx in "${!parts[@]}"; do
        cat "${parts[$idx]}" >> "$dir/merge.jsonl"
    done
    "$PYTHON" -m llava.eval.records.run_record merge --answers-file "$dir/merge.jsonl" "${parts[@]}"
}

# evaluate ANSWERS METRIC PATTERN REDUCE SCALE CMD...: runs the metric command CMD, keeps its
# output in <answers>.metric.log, and stores the score parsed from it (the PATTERN group,
# REDUCE = first|last|mean over matches, times SCALE) in <answers>.metrics.json
# (llava.eval.records.record_metric), where the results table reads it.
evaluate() {
    local answers=$1 metric=$2 pattern=$3 reduce=$4 scale=$5
    shift 5
    local log="${answers%.jsonl}.metric.log"
    "$@" | tee "$log"
    "$PYTHON" -m llava.eval.records.record_metric --answers-file "$answers" --benchmark "$BENCHMARK" \
        --metric "$metric" --from-log "$log" --pattern "$pattern" --reduce "$reduce" --scale "$scale"
}
