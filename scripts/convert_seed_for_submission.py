"""SEED-Bench accuracy of LLaVA answers, and the leaderboard upload file.

    python scripts/convert_seed_for_submission.py --annotation-file seed_bench/SEED-Bench.json \\
        --result-file seed_bench/answers/llava-v1.5-7b/merge.jsonl \\
        --result-upload-file seed_bench/answers_upload/llava-v1.5-7b.jsonl

Prints the accuracy per question type and in total, then over image-only and video-only
questions (a question without an answer counts as wrong). Then writes JSONL
{question_id, prediction} for every annotated question; that step needs an answer to each.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Mapping, Optional, Sequence

from llava.eval.eval_seed import (SEED_DATA_TYPES, load_seed_annotation, question_type_names, seed_accuracy,
                                  seed_report_lines)
from llava.eval.io_utils import read_answer_texts, write_text_atomic


def seed_upload_records(questions: Sequence[Mapping[str, object]],
                        predictions: Mapping[str, str]) -> List[Dict[str, object]]:
    """{question_id, prediction} for every question, in annotation order.

    Args:
        questions: SEED-Bench questions.
        predictions: {str(question_id): text}.

    Returns:
        The records, ``question_id`` as in the annotation.

    Raises:
        ValueError: a question has no prediction (naming the first and the count).
    """
    missing = [q["question_id"] for q in questions if str(q["question_id"]) not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} of {len(questions)} questions have no answer (first: {missing[0]!r}); "
                         "the upload file needs all of them")
    return [{"question_id": q["question_id"], "prediction": predictions[str(q["question_id"])]} for q in questions]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="SEED-Bench accuracy and upload file of LLaVA answers")
    parser.add_argument("--annotation-file", type=str, required=True, help="SEED-Bench.json")
    parser.add_argument("--result-file", type=str, required=True, help="answers jsonl (merge.jsonl)")
    parser.add_argument("--result-upload-file", type=str, required=True, help="upload JSONL to write")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Prints the accuracies and writes the upload file; returns the exit code (2 on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        annotation = load_seed_annotation(args.annotation_file)
        predictions = {str(qid): text for qid, text in read_answer_texts(args.result_file).items()}
    except (FileNotFoundError, ValueError) as err:
        print(f"convert_seed_for_submission: error: {err}", file=sys.stderr)
        return 2
    questions = annotation["questions"]
    names = question_type_names(annotation)
    for data_type in (None, *SEED_DATA_TYPES):
        for line in seed_report_lines(seed_accuracy(questions, predictions, data_type), names):
            print(line)
    try:
        records = seed_upload_records(questions, predictions)
    except ValueError as err:
        print(f"convert_seed_for_submission: error: {err}", file=sys.stderr)
        return 2
    write_text_atomic(args.result_upload_file, "".join(json.dumps(record) + "\n" for record in records))
    print(f"wrote {args.result_upload_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
