"""LLaVA VizWiz answers -> the EvalAI upload file (VizWiz challenge 1911).

    python scripts/convert_vizwiz_for_submission.py --annotation-file vizwiz/llava_test.jsonl \\
        --result-file vizwiz/answers/llava-v1.5-7b.jsonl --result-upload-file vizwiz/answers_upload/llava-v1.5-7b.json

Every test question must have an answer. Writes a list of {image, answer}, the answer
EvalAI-normalised, in test-file order.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Mapping, Optional, Sequence

from llava.eval.io_utils import read_answer_texts, read_jsonl, write_json_atomic
from llava.eval.m4c_evaluator import EvalAIAnswerProcessor


def vizwiz_submission(answer_texts: Mapping[object, str], test_questions: Sequence[Mapping[str, object]],
                      source: str = "test file") -> List[Dict[str, str]]:
    """Upload records for every test question.

    Args:
        answer_texts: {question_id: text} of the answers.
        test_questions: the test file's records (``question_id``, ``image``).
        source: name of the test file for error messages.

    Returns:
        ``[{"image": image, "answer": normalised text}, ...]``.

    Raises:
        ValueError: a test record lacks a field, or a question has no answer (naming
            the first one and the number unanswered).
    """
    unanswered = [q.get("question_id") for q in test_questions if q.get("question_id") not in answer_texts]
    if unanswered:
        raise ValueError(f"{len(unanswered)} of {len(test_questions)} questions in {source} have no answer "
                         f"(first: {unanswered[0]!r}); every VizWiz test question needs one")
    normalise = EvalAIAnswerProcessor()
    records = []
    for index, question in enumerate(test_questions, start=1):
        if "image" not in question:
            raise ValueError(f"{source}: record {index}: field 'image' is missing")
        records.append({"image": question["image"], "answer": normalise(answer_texts[question["question_id"]])})
    return records


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="LLaVA VizWiz answers -> EvalAI upload JSON")
    parser.add_argument("--annotation-file", type=str, required=True, help="the test question file (llava_test.jsonl)")
    parser.add_argument("--result-file", type=str, required=True, help="answers jsonl")
    parser.add_argument("--result-upload-file", type=str, required=True, help="upload JSON to write")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Writes the upload file; returns the exit code (2 on bad input or unanswered questions)."""
    args = build_parser().parse_args(argv)
    try:
        answer_texts = read_answer_texts(args.result_file)
        test_questions = read_jsonl(args.annotation_file)
        print(f"total results: {len(answer_texts)}, total split: {len(test_questions)}")
        records = vizwiz_submission(answer_texts, test_questions, args.annotation_file)
    except (FileNotFoundError, ValueError) as err:
        print(f"convert_vizwiz_for_submission: error: {err}", file=sys.stderr)
        return 2
    write_json_atomic(args.result_upload_file, records)
    print(f"wrote {args.result_upload_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
