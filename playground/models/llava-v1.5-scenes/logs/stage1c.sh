#!/bin/bash
# stage 1c of the relational demo: the full task (5-8 objects) from stage 1b, keeping its tokenizer; stops by 22:48 UTC
cd /work/main
export PYTHONPATH=/work/main HF_HUB_OFFLINE=1 TQDM_MININTERVAL=60 OMP_NUM_THREADS=2
M=playground/models/llava-v1.5-scenes
while [ ! -f $M/logs/stage1b.done ]; do sleep 10; done
rm -rf /tmp/llava-scenes-3 && cp -r $M /tmp/llava-scenes-3 && rm -rf /tmp/llava-scenes-3/logs
left=$(( ( $(date -d "22:47" +%s) - $(date +%s) ) / 60 ))
python -m fitprune.train_demo --task scenes --init-from /tmp/llava-scenes-3 --reuse-tokenizer \
    --steps 800 --eval-every 250 --max-minutes $left --threads 2 --output $M > $M/logs/stage1c_full.log 2>&1
echo done > $M/logs/stage1c.done
