#!/bin/bash
# MM-Vet: model_vqa answers, converted for MM-Vet's GPT-4 grader
# (https://github.com/yuweihao/MM-Vet); no local score. Record the grader's score with:
# python -m llava.eval.records.record_metric --answers-file <answers> --value X
# Settings through the environment: see common.sh (MODEL_PATH, REDUCTION_RATIO, RECIPE, CKPT, DEVICE, ...).
set -euo pipefail
BENCHMARK=mmvet
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATA=$EVAL_DIR/mm-vet
QUESTIONS=$DATA/llava-mm-vet.jsonl
ANSWERS=$DATA/answers/$CKPT.jsonl
require_file "$QUESTIONS" "$EVAL_ZIP"
require_dir "$DATA/images" "https://github.com/yuweihao/MM-Vet/releases/download/v1/mm-vet.zip, extracted into $DATA (the folder is mm-vet, not mmvet)"

"$PYTHON" -m llava.eval.model_vqa "${DRIVER_ARGS[@]}" \
    --question-file "$QUESTIONS" \
    --image-folder "$DATA/images" \
    --answers-file "$ANSWERS"

mkdir -p "$DATA/results"
"$PYTHON" "$REPO_ROOT/scripts/convert_mmvet_for_eval.py" --src "$ANSWERS" --dst "$DATA/results/$CKPT.json"
echo "grade $DATA/results/$CKPT.json with MM-Vet's evaluator (https://github.com/yuweihao/MM-Vet)"
