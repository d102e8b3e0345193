#!/bin/bash
# relational demo, third LLaVA stage: continues the second one's checkpoint (then the shipped model) with
# presence questions also asked second in a conversation (--presence-follow-up: presence is then about 20 % of
# the training questions instead of 5 %), half the peak learning rate; 18.5 minutes, which brings the lineage to
# 118.8 of the 120 minutes issue 14 allows. stage_llava3.log keeps one progress line a minute of the run's log.
cd /work/main
export HF_HUB_OFFLINE=1 TQDM_MININTERVAL=60 OMP_NUM_THREADS=2
python -m fitprune.train_demo --task scenes --init-from playground/models/llava-v1.5-scenes --reuse-tokenizer \
    --freeze-tower --presence-follow-up --steps 950 --lr 5e-4 --warmup-steps 20 --eval-every 400 \
    --max-minutes 18.5 --threads 2 --seed 2 --output /tmp/scenes3/llava-v1.5-scenes > /tmp/scenes3/train.log 2>&1
