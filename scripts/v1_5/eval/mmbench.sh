#!/bin/bash
# MMBench dev (en): model_vqa_mmbench answers (needs pandas), converted to the xlsx of the
# OpenCompass server (https://opencompass.org.cn/leaderboard-multimodal); no local score. Record
# the server's score with: python -m fitprune.report record-metric --answers-file <answers> --value X
# Settings through the environment: see common.sh (MODEL_PATH, REDUCTION_RATIO, RECIPE, CKPT, DEVICE, ...).
set -euo pipefail
BENCHMARK=mmbench
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SPLIT=mmbench_dev_20230712
DATA=$EVAL_DIR/mmbench
QUESTIONS=$DATA/$SPLIT.tsv
ANSWERS=$DATA/answers/$SPLIT/$CKPT.jsonl
require_file "$QUESTIONS" "https://download.openmmlab.com/mmclassification/datasets/mmbench/$SPLIT.tsv"

"$PYTHON" -m llava.eval.model_vqa_mmbench "${DRIVER_ARGS[@]}" \
    --question-file "$QUESTIONS" \
    --answers-file "$ANSWERS" \
    --single-pred-prompt

mkdir -p "$DATA/answers_upload/$SPLIT"
"$PYTHON" "$REPO_ROOT/scripts/convert_mmbench_for_submission.py" \
    --annotation-file "$QUESTIONS" \
    --result-dir "$DATA/answers/$SPLIT" \
    --upload-dir "$DATA/answers_upload/$SPLIT" \
    --experiment "$CKPT"
