"""GQA accuracy on a balanced tier (testdev_balanced), overall and for binary / open questions.

    # from playground/data/eval/gqa/data, as upstream's script runs GQA's eval.py
    python -m llava.eval.eval_gqa --tier testdev_balanced
    # or with explicit files
    python -m llava.eval.eval_gqa --questions testdev_balanced_questions.json \\
        --predictions testdev_balanced_predictions.json

A prediction is correct when it equals the question's ``answer`` exactly (the converter
already strips the final "." and lower-cases). Only questions with ``isBalanced`` count,
and each of them must have a prediction. A question is "open" when its structural type
is ``query`` and "binary" otherwise (verify, logical, compare, choose). Validity,
plausibility and grounding need choices and scene graphs that testdev does not have, so
they are not computed; LLaVA reports Accuracy.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence
from llava.utils import OneLineArgumentParser, usage_error
from llava.json_reading import read_json_file

OPEN_STRUCTURAL_TYPE = "query"
DEFAULT_TIER = "testdev_balanced"


@dataclass(frozen=True)
class GQAScore:
    """Correct / total counts over balanced questions; accuracies are fractions."""

    correct: int
    total: int
    binary_correct: int
    binary_total: int
    open_correct: int
    open_total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    @property
    def binary(self) -> Optional[float]:
        return self.binary_correct / self.binary_total if self.binary_total else None

    @property
    def open(self) -> Optional[float]:
        return self.open_correct / self.open_total if self.open_total else None


def load_gqa_predictions(path: str) -> Dict[str, str]:
    """{str(questionId): prediction} of a predictions file (JSON list of {questionId, prediction}).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: not a JSON list, or an entry lacks a field (naming the entry).
    """
    entries = read_json_file(path)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of {{questionId, prediction}}")
    predictions = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "questionId" not in entry or "prediction" not in entry:
            raise ValueError(f"{path}: entry {index}: needs fields 'questionId' and 'prediction'")
        predictions[str(entry["questionId"])] = entry["prediction"]
    return predictions


def gqa_accuracy(questions: Mapping[str, Mapping[str, object]], predictions: Mapping[str, str]) -> GQAScore:
    """Exact-match accuracy over the balanced questions.

    Args:
        questions: {question id: {"answer", "isBalanced", "types": {"structural", ...}}}
            as in ``<tier>_questions.json``.
        predictions: {question id (str): predicted answer}.

    Returns:
        The counts, overall and per answer type.

    Raises:
        ValueError: a balanced question has no prediction (naming the first one in file
            order and the number missing), a question lacks a field, or no question is
            balanced.
    """
    missing: List[str] = []
    outcomes = {"binary": [0, 0], "open": [0, 0]}  # [correct, total]
    for question_id, question in questions.items():
        if not question.get("isBalanced", False):
            continue
        if str(question_id) not in predictions:
            missing.append(str(question_id))
            continue
        try:
            structural = question["types"]["structural"]
            answer = question["answer"]
        except (KeyError, TypeError):
            raise ValueError(f"question {question_id}: needs fields 'answer' and 'types.structural'") from None
        kind = "open" if structural == OPEN_STRUCTURAL_TYPE else "binary"
        outcomes[kind][0] += predictions[str(question_id)] == answer
        outcomes[kind][1] += 1
    if missing:
        raise ValueError(f"no prediction for balanced question {missing[0]} ({len(missing)} missing); "
                         "every balanced question needs one")
    (binary_correct, binary_total), (open_correct, open_total) = outcomes["binary"], outcomes["open"]
    if binary_total + open_total == 0:
        raise ValueError("no balanced questions (isBalanced true) to evaluate")
    return GQAScore(binary_correct + open_correct, binary_total + open_total,
                    binary_correct, binary_total, open_correct, open_total)


def _percent(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        error_name="eval_gqa", description="GQA accuracy (balanced questions, binary/open) of a predictions file")
    parser.add_argument("--tier", type=str, default=DEFAULT_TIER, help=f"file name prefix (default {DEFAULT_TIER})")
    parser.add_argument("--questions", type=str, default="{tier}_questions.json",
                        help="questions JSON; '{tier}' is replaced (default {tier}_questions.json)")
    parser.add_argument("--predictions", type=str, default="{tier}_predictions.json",
                        help="predictions JSON; '{tier}' is replaced (default {tier}_predictions.json)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Prints Binary, Open and Accuracy; returns the exit code (2 on bad input)."""
    args = build_parser().parse_args(argv)
    questions_path = args.questions.format(tier=args.tier)
    predictions_path = args.predictions.format(tier=args.tier)
    try:
        questions = read_json_file(questions_path)
        if not isinstance(questions, dict):
            raise ValueError(f"{questions_path}: expected a JSON object {{question id: question}}")
        try:
            score = gqa_accuracy(questions, load_gqa_predictions(predictions_path))
        except ValueError as err:
            raise ValueError(f"{questions_path} / {predictions_path}: {err}") from None
    except (FileNotFoundError, ValueError) as err:
        return usage_error("eval_gqa", err)
    print(f"Balanced questions: {score.total} ({score.binary_total} binary, {score.open_total} open)")
    print(f"Binary: {_percent(score.binary)}")
    print(f"Open: {_percent(score.open)}")
    print(f"Accuracy: {_percent(score.accuracy)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
