#!/bin/bash
# MMBench-CN dev: model_vqa_mmbench answers in Chinese (needs pandas), converted to the xlsx of
# the OpenCompass server; no local score. Record the server's score with:
# python -m fitprune.report record-metric --answers-file <answers> --value X
# Settings through the environment: see common.sh (MODEL_PATH, REDUCTION_RATIO, RECIPE, CKPT, DEVICE, ...).
set -euo pipefail
BENCHMARK=mmbench_cn
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SPLIT=mmbench_dev_cn_20231003
DATA=$EVAL_DIR/mmbench_cn
QUESTIONS=$DATA/$SPLIT.tsv
ANSWERS=$DATA/answers/$SPLIT/$CKPT.jsonl
require_file "$QUESTIONS" "https://download.openmmlab.com/mmclassification/datasets/mmbench/$SPLIT.tsv"

"$PYTHON" -m llava.eval.model_vqa_mmbench "${DRIVER_ARGS[@]}" \
    --question-file "$QUESTIONS" \
    --answers-file "$ANSWERS" \
    --lang cn \
    --single-pred-prompt

mkdir -p "$DATA/answers_upload/$SPLIT"
"$PYTHON" "$REPO_ROOT/scripts/convert_mmbench_for_submission.py" \
    --annotation-file "$QUESTIONS" \
    --result-dir "$DATA/answers/$SPLIT" \
    --upload-dir "$DATA/answers_upload/$SPLIT" \
    --experiment "$CKPT"
