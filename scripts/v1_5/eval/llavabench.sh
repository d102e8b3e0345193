#!/bin/bash
# LLaVA-Bench (in the wild): model_vqa answers, reviewed by GPT-4 against GPT-4's answers
# (llava/eval/eval_gpt_review_bench.py, needs OPENAI_API_KEY; skipped without it); the
# recorded score is the relative score of the "all" category.
# Settings through the environment: see common.sh (MODEL_PATH, REDUCTION_RATIO, RECIPE, CKPT, DEVICE, ...).
set -euo pipefail
BENCHMARK=llavabench
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATA=$EVAL_DIR/llava-bench-in-the-wild
QUESTIONS=$DATA/questions.jsonl
ANSWERS=$DATA/answers/$CKPT.jsonl
RULE=$REPO_ROOT/llava/eval/table/rule.json
BENCH_SOURCE="https://huggingface.co/datasets/liuhaotian/llava-bench-in-the-wild, extracted into $DATA"
require_file "$QUESTIONS" "$BENCH_SOURCE"
require_dir "$DATA/images" "$BENCH_SOURCE"
if [[ -n ${OPENAI_API_KEY:-} ]]; then
    require_file "$DATA/context.jsonl" "$BENCH_SOURCE"
    require_file "$DATA/answers_gpt4.jsonl" "$BENCH_SOURCE"
    require_file "$RULE" "llava/eval/table/rule.json of LLaVA v1.1.3 (https://github.com/haotian-liu/LLaVA/tree/v1.1.3)"
fi

"$PYTHON" -m llava.eval.model_vqa "${DRIVER_ARGS[@]}" \
    --question-file "$QUESTIONS" \
    --image-folder "$DATA/images" \
    --answers-file "$ANSWERS"

if [[ -z ${OPENAI_API_KEY:-} ]]; then
    echo "OPENAI_API_KEY is not set: skipping the GPT-4 review; answers are in $ANSWERS"
    exit 0
fi
mkdir -p "$DATA/reviews"
"$PYTHON" "$REPO_ROOT/llava/eval/eval_gpt_review_bench.py" \
    --question "$QUESTIONS" \
    --context "$DATA/context.jsonl" \
    --rule "$RULE" \
    --answer-list "$DATA/answers_gpt4.jsonl" "$ANSWERS" \
    --output "$DATA/reviews/$CKPT.jsonl"
evaluate "$ANSWERS" relative_score '^all ([0-9.]+)' first 1 \
    "$PYTHON" "$REPO_ROOT/llava/eval/summarize_gpt_review.py" -f "$DATA/reviews/$CKPT.jsonl"
