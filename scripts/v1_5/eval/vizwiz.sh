#!/bin/bash
# VizWiz test: model_vqa_loader answers, converted for the EvalAI server
# (https://eval.ai/web/challenges/challenge-page/1911); no local score. Record the server's
# score with: python -m llava.eval.records.record_metric --answers-file <answers> --value X
# Settings through the environment: see common.sh (MODEL_PATH, REDUCTION_RATIO, RECIPE, CKPT, DEVICE, ...).
set -euo pipefail
BENCHMARK=vizwiz
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATA=$EVAL_DIR/vizwiz
QUESTIONS=$DATA/llava_test.jsonl
ANSWERS=$DATA/answers/$CKPT.jsonl
require_file "$QUESTIONS" "$EVAL_ZIP"
require_dir "$DATA/test" "https://vizwiz.cs.colorado.edu/VizWiz_final/images/test.zip, extracted into $DATA"

"$PYTHON" -m llava.eval.model_vqa_loader "${DRIVER_ARGS[@]}" \
    --question-file "$QUESTIONS" \
    --image-folder "$DATA/test" \
    --answers-file "$ANSWERS"

mkdir -p "$DATA/answers_upload"
"$PYTHON" "$REPO_ROOT/scripts/convert_vizwiz_for_submission.py" \
    --annotation-file "$QUESTIONS" \
    --result-file "$ANSWERS" \
    --result-upload-file "$DATA/answers_upload/$CKPT.json"
echo "upload $DATA/answers_upload/$CKPT.json to https://eval.ai/web/challenges/challenge-page/1911"
