#!/bin/bash
# VQAv2 test-dev: model_vqa_loader answers, one process per GPU, converted for the EvalAI
# server (https://eval.ai/web/challenges/challenge-page/830); no local score. Record the
# server's score with: python -m llava.eval.records.record_metric --answers-file <merge.jsonl> --value X
# Settings through the environment: see common.sh (MODEL_PATH, REDUCTION_RATIO, RECIPE, CKPT, DEVICE, ...).
set -euo pipefail
BENCHMARK=vqav2
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SPLIT=llava_vqav2_mscoco_test-dev2015
DATA=$EVAL_DIR/vqav2
QUESTIONS=$DATA/$SPLIT.jsonl
require_file "$QUESTIONS" "$EVAL_ZIP"
require_file "$DATA/llava_vqav2_mscoco_test2015.jsonl" "$EVAL_ZIP"
require_dir "$DATA/test2015" "http://images.cocodataset.org/zips/test2015.zip, extracted into $DATA"

run_chunked "$DATA/answers/$SPLIT/$CKPT" "${DRIVER_ARGS[@]}" --question-file "$QUESTIONS" \
    --image-folder "$DATA/test2015"

"$PYTHON" "$REPO_ROOT/scripts/convert_vqav2_for_submission.py" --dir "$DATA" --split "$SPLIT" --ckpt "$CKPT"
echo "upload $DATA/answers_upload/$SPLIT/$CKPT.json to https://eval.ai/web/challenges/challenge-page/830"
