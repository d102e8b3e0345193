#!/bin/bash
# after stage 1b: FitPrune recipes (70, 90) on the calibration split, then the headroom measurement on the test split
cd /work/main
export PYTHONPATH=/work/main HF_HUB_OFFLINE=1
M=playground/models/llava-v1.5-scenes
python -m fitprune.calibrate --model-path $M --question-file playground/scenes/calibration.jsonl \
    --image-folder playground/scenes --num-samples 128 --device cpu --output $M/fitprune_recipes.json \
    --reduction-ratio 70 90 > $M/logs/calibrate_stage1.log 2>&1
python -m fitprune.lab.oracle --model-path $M --recipes $M/fitprune_recipes.json --ratios 70 90 \
    --output $M/logs/headroom_stage1.json > $M/logs/headroom_stage1.log 2>&1
echo done > $M/logs/measure.done
