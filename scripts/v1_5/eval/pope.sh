#!/bin/bash
# POPE (COCO, three splits): model_vqa_loader answers, F1 by llava/eval/eval_pope.py (local);
# the recorded score is the mean F1 of the three categories, in percent.
# Settings through the environment: see common.sh (MODEL_PATH, REDUCTION_RATIO, RECIPE, CKPT, DEVICE, ...).
set -euo pipefail
BENCHMARK=pope
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATA=$EVAL_DIR/pope
QUESTIONS=$DATA/llava_pope_test.jsonl
ANSWERS=$DATA/answers/$CKPT.jsonl
require_file "$QUESTIONS" "$EVAL_ZIP"
require_dir "$DATA/val2014" "http://images.cocodataset.org/zips/val2014.zip, extracted into $DATA"
require_dir "$DATA/coco" "POPE's output/coco folder at commit e3e39262 (https://github.com/AoiDragon/POPE/tree/e3e39262c85a6a83f26cf5094022a782cb0df58d/output/coco)"

"$PYTHON" -m llava.eval.model_vqa_loader "${DRIVER_ARGS[@]}" \
    --question-file "$QUESTIONS" \
    --image-folder "$DATA/val2014" \
    --answers-file "$ANSWERS"

evaluate "$ANSWERS" f1 'F1 score: ([0-9.]+)' mean 100 \
    "$PYTHON" "$REPO_ROOT/llava/eval/eval_pope.py" --annotation-dir "$DATA/coco" --question-file "$QUESTIONS" \
    --result-file "$ANSWERS"
