"""Answers ScienceQA in LLaVA's conversation format: ``python -m llava.eval.model_vqa_science``.

    python -m llava.eval.model_vqa_science --model-path liuhaotian/llava-v1.5-7b \\
        --question-file scienceqa/llava_test_CQM-A.json --image-folder scienceqa/images/test \\
        --answers-file answers/run.jsonl --single-pred-prompt --temperature 0 --conv-mode vicuna_v1

The question file is a JSON list of {"id", optional "image", "conversations"}; the first
human turn, with "<image>" removed and stripped, is the question, and items without an
image are answered from text alone. Upstream's choices kept: images preprocessed without
padding, 1024 new tokens, conv mode "llava_v0" by default, no stopping criteria
(upstream passes them only for templates whose version is "v0", and none is). An existing
answers file is resumed; see `llava.eval.driver.loop`.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.eval.driver.flags import DriverSpec, ImageLoading, build_parser
from llava.eval.driver.items import EvalItem, chunk_items
from llava.eval.driver.loop import run_driver
from llava.eval.driver.questions import check_unique_ids, load_questions

SPEC = DriverSpec(
    name="model_vqa_science",
    default_conv_mode="llava_v0",
    max_new_tokens=1024,
    image_loading=ImageLoading(source="file", pad=False),
    sampling_flags=False,
    question_file_default="tables/question.json",
)

SINGLE_PRED_PROMPT = "Answer with the option's letter from the given choices directly."


def science_items(args: argparse.Namespace) -> List[EvalItem]:
    """The chunk's items: question text, and a prompt field with "<image>\\n" for image items.

    Raises:
        llava.eval.driver.questions.QuestionFileError: unreadable file or missing field (file, line).
    """
    items = []
    questions = load_questions(args.question_file)
    check_unique_ids(args.question_file, questions)
    for question in questions:
        text, prompt = question.text, question.text
        if question.image is not None:
            prompt = DEFAULT_IMAGE_TOKEN + "\n" + prompt
        if args.single_pred_prompt:
            text += "\n" + SINGLE_PRED_PROMPT
            prompt += "\n" + SINGLE_PRED_PROMPT
        items.append(EvalItem(question.question_id, prompt, text, question.image, question.line))
    return chunk_items(items, args)


def build_science_parser() -> argparse.ArgumentParser:
    """The shared flags plus --single-pred-prompt and --answer-prompter."""
    parser = build_parser(SPEC, __doc__.splitlines()[0])
    parser.add_argument("--single-pred-prompt", action="store_true",
                        help="ask for the option's letter only (the v1.5 setting)")
    parser.add_argument("--answer-prompter", action="store_true",
                        help="upstream's second reasoning pass; unused by v1.5 and not supported here")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the driver on command-line flags; returns the exit code."""
    parser = build_science_parser()
    args = parser.parse_args(argv)
    if args.answer_prompter:
        parser.error("--answer-prompter (a second 64-token pass unused by LLaVA-1.5) is not supported")
    return run_driver(SPEC, args, science_items)


if __name__ == "__main__":
    sys.exit(main())
