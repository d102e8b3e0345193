#!/bin/bash
# relational demo, second LLaVA stage: continues the first (same full task, frozen tower), lr back to its peak
cd /work/main
export HF_HUB_OFFLINE=1 TQDM_MININTERVAL=60 OMP_NUM_THREADS=2
while [ ! -f /tmp/scenes2/stage_llava.done ]; do sleep 10; done
python -m fitprune.train_demo --task scenes --init-from /tmp/scenes2/llava-v1.5-scenes --reuse-tokenizer --freeze-tower \
    --steps 2800 --eval-every 400 --max-minutes 42 --threads 2 --seed 1 --output /tmp/scenes2/llava-v1.5-scenes-2 \
    > /tmp/scenes2/stage_llava2.log 2>&1
echo done > /tmp/scenes2/stage_llava2.done
