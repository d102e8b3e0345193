"""LLaVA VQAv2 answers -> the EvalAI upload file (VQAv2 test-dev challenge 830).

    python scripts/convert_vqav2_for_submission.py --split llava_vqav2_mscoco_test-dev2015 --ckpt llava-v1.5-7b

Reads ``<dir>/answers/<split>/<ckpt>/merge.jsonl`` and the full test list
``<dir>/llava_vqav2_mscoco_test2015.jsonl``; writes ``<dir>/answers_upload/<split>/<ckpt>.json``,
a list of {question_id, answer} over the whole test list: the EvalAI-normalised answer, or
"" for a question without one (the server wants every test2015 question).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Mapping, Optional, Sequence

from llava.eval.io_utils import read_answer_texts, read_jsonl, write_json_atomic
from llava.eval.m4c_evaluator import EvalAIAnswerProcessor

TEST_LIST = "llava_vqav2_mscoco_test2015.jsonl"


def vqav2_submission(answer_texts: Mapping[object, str], test_questions: Sequence[Mapping[str, object]],
                     source: str = "test list") -> List[Dict[str, object]]:
    """Upload records for every test question, in test-list order.

    Args:
        answer_texts: {question_id: text} of the answers.
        test_questions: the test list's records (``question_id``).
        source: name of the test list for error messages.

    Returns:
        ``[{"question_id": id, "answer": normalised text or ""}, ...]``.

    Raises:
        ValueError: a test record without ``question_id``.
    """
    normalise = EvalAIAnswerProcessor()
    records = []
    for index, question in enumerate(test_questions, start=1):
        if "question_id" not in question:
            raise ValueError(f"{source}: record {index}: field 'question_id' is missing")
        qid = question["question_id"]
        records.append({"question_id": qid, "answer": normalise(answer_texts[qid]) if qid in answer_texts else ""})
    return records


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="LLaVA VQAv2 answers -> EvalAI upload JSON")
    parser.add_argument("--dir", type=str, default="./playground/data/eval/vqav2")
    parser.add_argument("--ckpt", type=str, required=True)
    parser.add_argument("--split", type=str, required=True)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Writes the upload file; returns the exit code (2 on bad input)."""
    args = build_parser().parse_args(argv)
    src = os.path.join(args.dir, "answers", args.split, args.ckpt, "merge.jsonl")
    test_list = os.path.join(args.dir, TEST_LIST)
    dst = os.path.join(args.dir, "answers_upload", args.split, f"{args.ckpt}.json")
    try:
        answer_texts = read_answer_texts(src)
        test_questions = read_jsonl(test_list)
        records = vqav2_submission(answer_texts, test_questions, test_list)
    except (FileNotFoundError, ValueError) as err:
        print(f"convert_vqav2_for_submission: error: {err}", file=sys.stderr)
        return 2
    unanswered = sum(record["question_id"] not in answer_texts for record in records)
    print(f"total results: {len(answer_texts)}, total split: {len(test_questions)}, "
          f"unanswered (empty answer): {unanswered}")
    write_json_atomic(dst, records)
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
