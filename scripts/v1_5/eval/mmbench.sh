#!/bin/bash
# MMBench dev: model_vqa_mmbench answers (needs pandas), converted to the xlsx of the OpenCompass
# server (https://opencompass.org.cn/leaderboard-multimodal); no local score. Record the server's
# score with: python -m llava.eval.records.record_metric --answers-file <answers> --value X
# MMBENCH_LANG=en (default, MMBench) or cn (MMBench-CN, as scripts/v1_5/eval/mmbench_cn.sh runs it).
# Settings through the environment: see common.sh (MODEL_PATH, REDUCTION_RATIO, RECIPE, CKPT, DEVICE, ...).
set -euo pipefail
MMBENCH_LANG=${MMBENCH_LANG:-en}
case $MMBENCH_LANG in
    en) BENCHMARK=mmbench SPLIT=mmbench_dev_20230712 ;;
    cn) BENCHMARK=mmbench_cn SPLIT=mmbench_dev_cn_20231003 ;;
    *) echo "$(basename "$0"): error: MMBENCH_LANG must be en or cn, not '$MMBENCH_LANG'" >&2; exit 2 ;;
esac
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATA=$EVAL_DIR/$BENCHMARK
QUESTIONS=$DATA/$SPLIT.tsv
ANSWERS=$DATA/answers/$SPLIT/$CKPT.jsonl
require_file "$QUESTIONS" "https://download.openmmlab.com/mmclassification/datasets/mmbench/$SPLIT.tsv"

"$PYTHON" -m llava.eval.model_vqa_mmbench "${DRIVER_ARGS[@]}" \
    --question-file "$QUESTIONS" \
    --answers-file "$ANSWERS" \
    --single-pred-prompt \
    --lang "$MMBENCH_LANG"

mkdir -p "$DATA/answers_upload/$SPLIT"
"$PYTHON" "$REPO_ROOT/scripts/convert_mmbench_for_submission.py" \
    --annotation-file "$QUESTIONS" \
    --result-dir "$DATA/answers/$SPLIT" \
    --upload-dir "$DATA/answers_upload/$SPLIT" \
    --experiment "$CKPT"
