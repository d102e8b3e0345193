#!/bin/bash
# after the second LLaVA stage: install the checkpoint, fit its FitPrune recipes, run the pruning-quality bench
cd /work/main
export HF_HUB_OFFLINE=1 TQDM_MININTERVAL=30 OMP_NUM_THREADS=2
while [ ! -f /tmp/scenes2/stage_llava2.done ]; do sleep 10; done
M=playground/models/llava-v1.5-scenes
rm -rf $M && cp -r /tmp/scenes2/llava-v1.5-scenes-2 $M && mkdir -p $M/logs
cp /tmp/scenes2/tower.log /tmp/scenes2/stage_llava.log /tmp/scenes2/stage_llava2.log $M/logs/
python -m fitprune.calibrate --model-path $M --question-file playground/scenes/calibration.jsonl \
    --image-folder playground/scenes --num-samples 128 --device cpu --overwrite \
    --reduction-ratio 30 50 60 70 80 90 > /tmp/scenes2/calibrate.log 2>&1
python -m fitprune.bench --model-path $M --recipes $M/fitprune_recipes.json \
    --question-file playground/scenes/test.jsonl --calibration-file playground/scenes/calibration.jsonl \
    --image-folder playground/scenes --repeats 5 --plot benchmarks/pruning_quality_scenes.png \
    --json benchmarks/pruning_quality.json > /tmp/scenes2/bench.log 2>&1
echo done > /tmp/scenes2/measure.done
