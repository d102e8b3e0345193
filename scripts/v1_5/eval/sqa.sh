#!/bin/bash
# ScienceQA test: model_vqa_science answers, accuracy by llava/eval/eval_science_qa.py (local);
# the recorded score is IMG-Accuracy (SQA-IMG).
# Settings through the environment: see common.sh (MODEL_PATH, REDUCTION_RATIO, RECIPE, CKPT, DEVICE, ...).
set -euo pipefail
BENCHMARK=sqa
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATA=$EVAL_DIR/scienceqa
QUESTIONS=$DATA/llava_test_CQM-A.json
ANSWERS=$DATA/answers/$CKPT.jsonl
SQA_SOURCE="the data/scienceqa folder of https://github.com/lupantech/ScienceQA, put under $DATA"
require_file "$QUESTIONS" "$EVAL_ZIP"
require_dir "$DATA/images/test" "$SQA_SOURCE"
require_file "$DATA/pid_splits.json" "$SQA_SOURCE"
require_file "$DATA/problems.json" "$SQA_SOURCE"

"$PYTHON" -m llava.eval.model_vqa_science "${DRIVER_ARGS[@]}" \
    --question-file "$QUESTIONS" \
    --image-folder "$DATA/images/test" \
    --answers-file "$ANSWERS" \
    --single-pred-prompt

evaluate "$ANSWERS" img_accuracy 'IMG-Accuracy: ([0-9.]+)%' last 1 \
    "$PYTHON" "$REPO_ROOT/llava/eval/eval_science_qa.py" --base-dir "$DATA" --result-file "$ANSWERS" \
    --output-file "$DATA/answers/${CKPT}_output.jsonl" --output-result "$DATA/answers/${CKPT}_result.json"
