"""SEED-Bench accuracy: exact letter match, per question type and over image / video questions.

    annotation = load_seed_annotation("seed_bench/SEED-Bench.json")
    score = seed_accuracy(annotation["questions"], {"101669": "A", ...})               # all
    image = seed_accuracy(annotation["questions"], predictions, data_type="image")      # image only
    print("\\n".join(seed_report_lines(score, question_type_names(annotation))))

A prediction is correct when its text equals the answer letter exactly; a question
without a prediction counts as wrong. Question ids are compared as strings, so integer
and string ids in the answer file both match.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple
from llava.json_reading import read_json_file

SEED_DATA_TYPES = ("image", "video")


@dataclass(frozen=True)
class SeedScore:
    """(correct, total) per question_type_id; ``data_type`` is the subset scored (None: all)."""

    per_type: Dict[object, Tuple[int, int]]
    data_type: Optional[str] = None

    @property
    def correct(self) -> int:
        return sum(correct for correct, _ in self.per_type.values())

    @property
    def total(self) -> int:
        return sum(total for _, total in self.per_type.values())

    @property
    def accuracy(self) -> Optional[float]:
        """Overall accuracy as a fraction; None when the subset has no question."""
        return self.correct / self.total if self.total else None

    def type_accuracy(self, type_id: object) -> float:
        """Accuracy of one question type, as a fraction."""
        correct, total = self.per_type[type_id]
        return correct / total


def load_seed_annotation(path: str) -> dict:
    """``SEED-Bench.json``: checks the fields the metric reads.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: no ``questions`` list, or a question lacks ``question_id``,
            ``question_type_id``, ``data_type`` or ``answer`` (naming its index).
    """
    annotation = read_json_file(path)
    if not isinstance(annotation, dict) or not isinstance(annotation.get("questions"), list):
        raise ValueError(f"{path}: expected a JSON object with a 'questions' list")
    for index, question in enumerate(annotation["questions"]):
        for field in ("question_id", "question_type_id", "data_type", "answer"):
            if field not in question:
                raise ValueError(f"{path}: questions[{index}]: field {field!r} is missing")
    return annotation


def question_type_names(annotation: Mapping[str, object]) -> Dict[object, str]:
    """{question_type_id: name} from the annotation's ``question_type`` {name: id}."""
    return {type_id: name for name, type_id in dict(annotation.get("question_type", {})).items()}


def seed_accuracy(questions: Sequence[Mapping[str, object]], predictions: Mapping[str, str],
                  data_type: Optional[str] = None) -> SeedScore:
    """Counts correct answers per question type.

    Args:
        questions: SEED-Bench questions (``question_id``, ``question_type_id``,
            ``data_type``, ``answer``).
        predictions: {str(question_id): predicted text}.
        data_type: "image" or "video" to score that subset only; None for all.

    Returns:
        The SeedScore.

    Raises:
        ValueError: an unknown ``data_type``.
    """
    if data_type is not None and data_type not in SEED_DATA_TYPES:
        raise ValueError(f"data_type must be one of {SEED_DATA_TYPES} or None, got {data_type!r}")
    counts: Dict[object, List[int]] = {}
    for question in questions:
        if data_type is not None and question["data_type"] != data_type:
            continue
        tally = counts.setdefault(question["question_type_id"], [0, 0])
        tally[0] += predictions.get(str(question["question_id"])) == question["answer"]
        tally[1] += 1
    return SeedScore({type_id: (counts[type_id][0], counts[type_id][1]) for type_id in sorted(counts)}, data_type)


def _percent(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def seed_report_lines(score: SeedScore, type_names: Mapping[object, str]) -> List[str]:
    """The lines upstream prints: per type and total for all questions, one line for a subset.

    Args:
        score: from `seed_accuracy`.
        type_names: {question_type_id: name}; ids without a name print as the id.

    Returns:
        ``["<type name>: 12.34%", ..., "Total accuracy: 56.78%"]`` for all questions,
        ``["image accuracy: 56.78%"]`` for a subset.
    """
    if score.data_type is not None:
        return [f"{score.data_type} accuracy: {_percent(score.accuracy)}"]
    lines = [f"{type_names.get(type_id, type_id)}: {_percent(score.type_accuracy(type_id))}"
             for type_id in score.per_type]
    return lines + [f"Total accuracy: {_percent(score.accuracy)}"]
