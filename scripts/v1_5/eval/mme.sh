#!/bin/bash
# MME: model_vqa_loader answers, converted to MME's eval_tool layout (llava.eval.eval_mme convert)
# and scored by MME's rules (llava.eval.eval_mme calculate); the recorded score is the perception total.
# Settings through the environment: see common.sh (MODEL_PATH, REDUCTION_RATIO, RECIPE, CKPT, DEVICE, ...).
set -euo pipefail
BENCHMARK=mme
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATA=$EVAL_DIR/MME
QUESTIONS=$DATA/llava_mme.jsonl
ANSWERS=$DATA/answers/$CKPT.jsonl
MME_SOURCE="the MME authors (https://github.com/BradyFU/Awesome-Multimodal-Large-Language-Models/tree/Evaluation), put under $DATA"
require_file "$QUESTIONS" "$EVAL_ZIP"
require_dir "$DATA/MME_Benchmark_release_version" "$MME_SOURCE"

"$PYTHON" -m llava.eval.model_vqa_loader "${DRIVER_ARGS[@]}" \
    --question-file "$QUESTIONS" \
    --image-folder "$DATA/MME_Benchmark_release_version" \
    --answers-file "$ANSWERS"

"$PYTHON" -m llava.eval.eval_mme convert --experiment "$CKPT" --mme-dir "$DATA"
evaluate "$ANSWERS" perception 'total score: ([0-9.]+)' first 1 \
    "$PYTHON" -m llava.eval.eval_mme calculate --results-dir "$DATA/eval_tool/answers/$CKPT"
