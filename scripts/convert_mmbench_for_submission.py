"""LLaVA MMBench / MMBench-CN answers -> the xlsx the OpenCompass server scores.

    python scripts/convert_mmbench_for_submission.py --annotation-file mmbench/mmbench_dev_20230712.tsv \\
        --result-dir mmbench/answers/mmbench_dev_20230712 --upload-dir mmbench/answers_upload/mmbench_dev_20230712 \\
        --experiment llava-v1.5-7b

Keeps the TSV without the columns hint, category, source, image, comment and
l2-category, inserts a ``prediction`` column at position 6 filled from
``<result-dir>/<experiment>.jsonl`` (answer ``question_id`` = TSV ``index``), and writes
``<upload-dir>/<experiment>.xlsx``. Needs pandas and openpyxl (not installed with the
package).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping, Optional, Sequence

from llava.eval.io_utils import atomic_output_path, read_answer_texts

DROPPED_COLUMNS = ("hint", "category", "source", "image", "comment", "l2-category")
PREDICTION_COLUMN = "prediction"
PREDICTION_POSITION = 6


def submission_frame(table, answer_texts: Mapping[object, str], source: str = "annotation file"):
    """The upload table: dropped columns removed, predictions inserted at position 6.

    Args:
        table: the MMBench TSV as a pandas DataFrame (``index`` column and those dropped).
        answer_texts: {question_id (= index): text}.
        source: name of the TSV for error messages.

    Returns:
        A new DataFrame; rows without an answer have an empty prediction (None).

    Raises:
        ValueError: a column to drop or ``index`` is missing, or an answer's
            question_id is not an ``index`` of the table (naming the first).
    """
    missing_columns = [c for c in ("index", *DROPPED_COLUMNS) if c not in table.columns]
    if missing_columns:
        raise ValueError(f"{source}: columns {missing_columns} are missing")
    indices = set(table["index"].tolist())
    unknown = [qid for qid in answer_texts if qid not in indices]
    if unknown:
        raise ValueError(f"{len(unknown)} answers match no index of {source} (first question_id: {unknown[0]!r})")
    frame = table.drop(columns=list(DROPPED_COLUMNS))
    frame.insert(PREDICTION_POSITION, PREDICTION_COLUMN, [answer_texts.get(index) for index in table["index"].tolist()])
    return frame


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="LLaVA MMBench answers -> OpenCompass upload xlsx")
    parser.add_argument("--annotation-file", type=str, required=True, help="the MMBench TSV")
    parser.add_argument("--result-dir", type=str, required=True, help="folder of <experiment>.jsonl")
    parser.add_argument("--upload-dir", type=str, required=True, help="folder to write <experiment>.xlsx")
    parser.add_argument("--experiment", type=str, required=True)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Writes the upload xlsx; returns the exit code (2 on bad input or missing pandas/openpyxl)."""
    args = build_parser().parse_args(argv)
    try:
        import pandas as pd
        import openpyxl  # noqa: F401  (the xlsx engine pandas uses)
    except ImportError as err:
        print(f"convert_mmbench_for_submission: error: {err.name} is missing; pip install pandas openpyxl",
              file=sys.stderr)
        return 2
    result_file = os.path.join(args.result_dir, f"{args.experiment}.jsonl")
    try:
        table = pd.read_table(args.annotation_file)
        frame = submission_frame(table, read_answer_texts(result_file), args.annotation_file)
    except (FileNotFoundError, ValueError) as err:
        print(f"convert_mmbench_for_submission: error: {err}", file=sys.stderr)
        return 2
    unanswered = int(frame[PREDICTION_COLUMN].isna().sum())
    print(f"rows: {len(frame)}, answered: {len(frame) - unanswered}, unanswered: {unanswered}")
    dst = os.path.join(args.upload_dir, f"{args.experiment}.xlsx")
    with atomic_output_path(dst) as temp_path:
        frame.to_excel(temp_path, index=False, engine="openpyxl")
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
