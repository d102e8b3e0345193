#!/bin/bash
# SEED-Bench: model_vqa_loader answers, one process per GPU, accuracy printed by
# scripts/convert_seed_for_submission.py (local); the recorded score is the total accuracy.
# Settings through the environment: see common.sh (MODEL_PATH, REDUCTION_RATIO, RECIPE, CKPT, DEVICE, ...).
set -euo pipefail
BENCHMARK=seed
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATA=$EVAL_DIR/seed_bench
QUESTIONS=$DATA/llava-seed-bench.jsonl
ANSWERS_DIR=$DATA/answers/$CKPT
SEED_SOURCE="SEED-Bench (https://github.com/AILab-CVC/SEED-Bench/blob/main/DATASET.md), put under $DATA"
require_file "$QUESTIONS" "$EVAL_ZIP"
require_file "$DATA/SEED-Bench.json" "$SEED_SOURCE"
require_dir "$DATA/SEED-Bench-image" "$SEED_SOURCE"
require_dir "$DATA/SEED-Bench-video-image" "the middle frame of each SEED-Bench video (LLaVA's extract_video_frames.py), put under $DATA"

run_chunked "$ANSWERS_DIR" "${DRIVER_ARGS[@]}" --question-file "$QUESTIONS" --image-folder "$DATA"

mkdir -p "$DATA/answers_upload"
evaluate "$ANSWERS_DIR/merge.jsonl" accuracy 'Total accuracy: ([0-9.]+)%' first 1 \
    "$PYTHON" "$REPO_ROOT/scripts/convert_seed_for_submission.py" --annotation-file "$DATA/SEED-Bench.json" \
    --result-file "$ANSWERS_DIR/merge.jsonl" --result-upload-file "$DATA/answers_upload/$CKPT.jsonl"
