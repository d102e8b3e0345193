#!/bin/bash
# stage 1 of the relational demo: 1 object (find and read), then 3 objects; stops by 22:50 UTC
cd /work/main
export PYTHONPATH=/work/main HF_HUB_OFFLINE=1 TQDM_MININTERVAL=60 OMP_NUM_THREADS=2
LOGS=playground/models/llava-v1.5-scenes/logs
python -m fitprune.train_demo --task scenes --objects 1 --steps 1500 --max-minutes 28 --threads 2 \
    --output /tmp/llava-scenes-1 > $LOGS/stage1a_objects1.log 2>&1
left=$(( ( $(date -d "22:48" +%s) - $(date +%s) ) / 60 ))
python -m fitprune.train_demo --task scenes --init-from /tmp/llava-scenes-1 --objects 3 --steps 2400 \
    --max-minutes $left --threads 2 --output playground/models/llava-v1.5-scenes > $LOGS/stage1b_objects3.log 2>&1
echo done > $LOGS/stage1.done
