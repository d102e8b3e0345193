#!/bin/bash
# after the third LLaVA stage: install the checkpoint (the tower is unchanged), fit its FitPrune recipes, run the
# pruning-quality bench
cd /work/main
export HF_HUB_OFFLINE=1 TQDM_MININTERVAL=30 OMP_NUM_THREADS=2
M=playground/models/llava-v1.5-scenes
cp /tmp/scenes3/llava-v1.5-scenes/{config.json,generation_config.json,pytorch_model.bin,training.json} $M/
python -m fitprune.calibrate --model-path $M --question-file playground/scenes/calibration.jsonl \
    --image-folder playground/scenes --num-samples 128 --device cpu --overwrite \
    --reduction-ratio 30 50 60 70 80 90 > /tmp/scenes3/calibrate.log 2>&1
python -m fitprune.bench --model-path $M --recipe $M/fitprune_recipes.json \
    --question-file playground/scenes/test.jsonl --calibration-file playground/scenes/calibration.jsonl \
    --image-folder playground/scenes --repeats 5 --plot benchmarks/pruning_quality_scenes.png \
    --json benchmarks/pruning_quality.json > /tmp/scenes3/bench.log 2>&1
echo done > /tmp/scenes3/measure.done
