#!/bin/bash
# GQA testdev-balanced: model_vqa_loader answers, one process per GPU, accuracy by GQA's
# evaluator (llava.eval.eval_gqa, run in gqa/data).
# Settings through the environment: see common.sh (MODEL_PATH, REDUCTION_RATIO, RECIPE, CKPT, DEVICE, ...).
set -euo pipefail
BENCHMARK=gqa
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SPLIT=llava_gqa_testdev_balanced
DATA=$EVAL_DIR/gqa
GQADIR=$DATA/data
QUESTIONS=$DATA/$SPLIT.jsonl
ANSWERS_DIR=$DATA/answers/$SPLIT/$CKPT
GQA_SOURCE="GQA's official download (https://cs.stanford.edu/people/dorarad/gqa/download.html), put under $GQADIR"
require_file "$QUESTIONS" "$EVAL_ZIP"
require_dir "$GQADIR/images" "$GQA_SOURCE"
require_file "$GQADIR/testdev_balanced_questions.json" "$GQA_SOURCE"

run_chunked "$ANSWERS_DIR" "${DRIVER_ARGS[@]}" --question-file "$QUESTIONS" --image-folder "$GQADIR/images"

"$PYTHON" "$REPO_ROOT/scripts/convert_gqa_for_eval.py" --src "$ANSWERS_DIR/merge.jsonl" \
    --dst "$GQADIR/testdev_balanced_predictions.json"
evaluate "$ANSWERS_DIR/merge.jsonl" accuracy 'Accuracy: ([0-9.]+)' first 1 \
    env -C "$GQADIR" "$PYTHON" -m llava.eval.eval_gqa --tier testdev_balanced
