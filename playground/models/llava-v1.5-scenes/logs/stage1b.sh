#!/bin/bash
# stage 1b of the relational demo: 3 objects from stage 1a (1 object), keeping its tokenizer; stops by 22:50 UTC
cd /work/main
export PYTHONPATH=/work/main HF_HUB_OFFLINE=1 TQDM_MININTERVAL=60 OMP_NUM_THREADS=2
LOGS=playground/models/llava-v1.5-scenes/logs
left=$(( ( $(date -d "22:47" +%s) - $(date +%s) ) / 60 ))
python -m fitprune.train_demo --task scenes --init-from /tmp/llava-scenes-1 --reuse-tokenizer --objects 3 \
    --steps 1100 --eval-every 250 --max-minutes $left --threads 2 --output playground/models/llava-v1.5-scenes \
    > $LOGS/stage1b_objects3.log 2>&1
echo done > $LOGS/stage1b.done
