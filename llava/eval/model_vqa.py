"""Answers a LLaVA question JSONL, images resized and centre-cropped: ``python -m llava.eval.model_vqa``.

The driver of MM-Vet and LLaVA-Bench (`scripts/v1_5/eval/`):

    python -m llava.eval.model_vqa --model-path liuhaotian/llava-v1.5-7b \\
        --question-file questions.jsonl --image-folder images --answers-file answers/run.jsonl \\
        --temperature 0 --conv-mode vicuna_v1 [--reduction-ratio 60]

Upstream's choices kept: images preprocessed without padding and without an RGB
conversion, 1024 new tokens, no stopping criteria, conv mode "llava_v1" by default. An
existing answers file is resumed; see `llava.eval.driver.loop`.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from llava.eval.driver.flags import DriverSpec, ImageLoading, build_parser
from llava.eval.driver.items import chunk_items
from llava.eval.driver.questions import read_question_jsonl
from llava.eval.driver.loop import run_driver

SPEC = DriverSpec(
    name="model_vqa",
    default_conv_mode="llava_v1",
    max_new_tokens=1024,
    image_loading=ImageLoading(source="file", pad=False),
)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the driver on command-line flags; returns the exit code."""
    args = build_parser(SPEC, __doc__.splitlines()[0]).parse_args(argv)
    return run_driver(SPEC, args, lambda a: chunk_items(read_question_jsonl(a.question_file), a))


if __name__ == "__main__":
    sys.exit(main())
