#!/bin/bash
# relational demo, LLaVA stage: the full task (5-8 objects) from random decoder/projector weights on the
# pretrained, frozen tower of fitprune.lab.patch_pretraining (--steps 1000 --output /tmp/scenes2/tower)
cd /work/main
export HF_HUB_OFFLINE=1 TQDM_MININTERVAL=60 OMP_NUM_THREADS=2
python -m fitprune.train_demo --task scenes --init-tower /tmp/scenes2/tower --freeze-tower \
    --steps 3200 --eval-every 400 --max-minutes 55 --threads 2 --output /tmp/scenes2/llava-v1.5-scenes \
    > /tmp/scenes2/stage_llava.log 2>&1
echo done > /tmp/scenes2/stage_llava.done
