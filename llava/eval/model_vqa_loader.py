"""Answers a LLaVA question JSONL, images padded to squares: ``python -m llava.eval.model_vqa_loader``.

The driver of TextVQA, GQA, VQAv2, VizWiz, POPE, MME and SEED (`scripts/v1_5/eval/`):

    python -m llava.eval.model_vqa_loader --model-path liuhaotian/llava-v1.5-7b \\
        --question-file q.jsonl --image-folder images --answers-file answers/run.jsonl \\
        --temperature 0 --conv-mode vicuna_v1 [--reduction-ratio 60] [--batch-size 8]

Upstream's choices kept: images converted to RGB and padded with the model config
(`process_images`), 128 new tokens, no stopping criteria, conv mode "llava_v1" by default
("_mmtag" appended for plain pretrain-only models). An existing answers file is resumed;
see `llava.eval.driver.loop` for batching, resuming and the run record.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from llava.eval.driver.flags import DriverSpec, ImageLoading, build_parser
from llava.eval.driver.items import chunk_items
from llava.eval.driver.questions import read_question_jsonl
from llava.eval.driver.loop import run_driver

SPEC = DriverSpec(
    name="model_vqa_loader",
    default_conv_mode="llava_v1",
    max_new_tokens=128,
    image_loading=ImageLoading(source="file", pad=True),
    mmtag_rule=True,
)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the driver on command-line flags; returns the exit code."""
    args = build_parser(SPEC, __doc__.splitlines()[0]).parse_args(argv)
    return run_driver(SPEC, args, lambda a: chunk_items(read_question_jsonl(a.question_file), a))


if __name__ == "__main__":
    sys.exit(main())
