#!/bin/bash
# TextVQA val: model_vqa_loader answers, accuracy by llava.eval.eval_textvqa (local).
# Settings through the environment: see common.sh (MODEL_PATH, REDUCTION_RATIO, RECIPE, CKPT, DEVICE, ...).
set -euo pipefail
BENCHMARK=textvqa
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATA=$EVAL_DIR/textvqa
QUESTIONS=$DATA/llava_textvqa_val_v051_ocr.jsonl
ANNOTATIONS=$DATA/TextVQA_0.5.1_val.json
ANSWERS=$DATA/answers/$CKPT.jsonl
require_file "$QUESTIONS" "$EVAL_ZIP"
require_dir "$DATA/train_images" "https://dl.fbaipublicfiles.com/textvqa/images/train_val_images.zip, extracted into $DATA"
require_file "$ANNOTATIONS" "https://dl.fbaipublicfiles.com/textvqa/data/TextVQA_0.5.1_val.json"

"$PYTHON" -m llava.eval.model_vqa_loader "${DRIVER_ARGS[@]}" \
    --question-file "$QUESTIONS" \
    --image-folder "$DATA/train_images" \
    --answers-file "$ANSWERS"

evaluate "$ANSWERS" accuracy 'Accuracy: ([0-9.]+)%' last 1 \
    "$PYTHON" -m llava.eval.eval_textvqa --annotation-file "$ANNOTATIONS" --result-file "$ANSWERS"
