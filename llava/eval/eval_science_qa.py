"""ScienceQA accuracy of a LLaVA answer file; LLaVA reports IMG-Accuracy (SQA-IMG).

    python llava/eval/eval_science_qa.py --base-dir scienceqa \\
        --result-file scienceqa/answers/llava-v1.5-7b.jsonl \\
        --output-file scienceqa/answers/llava-v1.5-7b_output.jsonl \\
        --output-result scienceqa/answers/llava-v1.5-7b_result.json

Every problem of ``pid_splits.json[--split]`` is scored; a problem without an answer
counts as FAILED. IMG-Accuracy covers the problems whose recorded prompt contains
"<image>".
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.eval.io_utils import read_jsonl, write_json_atomic
from llava.utils import OneLineArgumentParser, usage_error
from llava.json_reading import read_json_file

DEFAULT_OPTIONS = ("A", "B", "C", "D", "E")
FAILED = "FAILED"
MISSING_PROMPT = "Unknown"
# "." is any character here, as upstream has it: "The answer is B" at the very end does not match
ANSWER_SENTENCE = re.compile(r"The answer is ([A-Z]).")


def parse_answer_letter(text: str, options: Sequence[str]) -> str:
    """The option letter a prediction names, or "FAILED".

    Rules, in order: the text is exactly an option letter; the text starts with an
    option letter followed by ". " (at least 3 characters); "The answer is X." occurs
    exactly once; otherwise FAILED.

    Args:
        text: the model's answer.
        options: the option letters.

    Returns:
        A letter or "FAILED".
    """
    if text in options:
        return text
    if len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        return text[0]
    found = ANSWER_SENTENCE.findall(text)
    return found[0] if len(found) == 1 else FAILED


def get_pred_idx(prediction: str, choices: Sequence[str], options: Sequence[str]) -> int:
    """Index of the predicted letter among the problem's choices, or -1.

    Args:
        prediction: a letter (or "FAILED").
        choices: the problem's answer choices.
        options: the option letters.

    Returns:
        ``options.index(prediction)`` if the letter is among the first ``len(choices)``
        options, else -1.
    """
    return list(options).index(prediction) if prediction in list(options)[: len(choices)] else -1


def convert_caps(results: Iterable[Mapping[str, object]]) -> List[Dict[str, object]]:
    """Caption-style records ``{"image_id": int(question_id), "caption": text}`` of answer records.

    Args:
        results: answer records with a numeric ``question_id`` and ``text``.

    Returns:
        One record per answer, in order.
    """
    return [{"image_id": int(result["question_id"]), "caption": result["text"]} for result in results]


@dataclass(frozen=True)
class ScienceQAScore:
    """Counts of one evaluation; accuracies are fractions, None when nothing was counted."""

    total: int
    correct: int
    multimodal_total: int
    multimodal_correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    @property
    def img_accuracy(self) -> Optional[float]:
        return self.multimodal_correct / self.multimodal_total if self.multimodal_total else None


def score_science_qa(
    problems: Mapping[str, Mapping[str, object]],
    split_ids: Sequence[str],
    predictions: Mapping[str, Mapping[str, object]],
    options: Sequence[str] = DEFAULT_OPTIONS,
) -> Tuple[ScienceQAScore, Dict[str, List[dict]], Dict[str, object]]:
    """Scores the predictions of every problem of a split.

    Args:
        problems: ``problems.json`` ({id: {"choices": [...], "answer": int, ...}}).
        split_ids: the ids to score (``pid_splits.json[split]``).
        predictions: {question_id: answer record with ``text`` and ``prompt``}.
        options: the option letters.

    Returns:
        (ScienceQAScore, analysis {"correct": [...], "incorrect": [...]}, result
        {"acc": percent, "correct", "count", "results": {id: pred_idx},
        "outputs": {id: text}}).

    Raises:
        ValueError: an id of the split is not in ``problems`` or a problem lacks a
            field, naming the id.
    """
    analysis: Dict[str, List[dict]] = {"correct": [], "incorrect": []}
    pred_indices: Dict[str, int] = {}
    outputs: Dict[str, str] = {}
    for problem_id in split_ids:
        if problem_id not in problems:
            raise ValueError(f"problem {problem_id!r} of the split is not in problems.json")
        problem = problems[problem_id]
        for field in ("choices", "answer"):
            if field not in problem:
                raise ValueError(f"problems.json: problem {problem_id!r}: field {field!r} is missing")
        record = predictions.get(problem_id, {"text": FAILED, "prompt": MISSING_PROMPT})
        text = str(record["text"])
        prompt = str(record.get("prompt", MISSING_PROMPT))
        letter = parse_answer_letter(text, options)
        pred_idx = get_pred_idx(letter, problem["choices"], options)
        pred_indices[problem_id] = pred_idx
        outputs[problem_id] = text
        analysis["correct" if pred_idx == problem["answer"] else "incorrect"].append({
            "question_id": problem_id,
            "parsed_ans": letter,
            "ground_truth": options[problem["answer"]],
            "question": prompt,
            "pred": text,
            "is_multimodal": DEFAULT_IMAGE_TOKEN in prompt,
        })
    if not pred_indices:
        raise ValueError("the split has no problems")
    score = ScienceQAScore(
        total=len(pred_indices),
        correct=len(analysis["correct"]),
        multimodal_total=sum(entry["is_multimodal"] for group in analysis.values() for entry in group),
        multimodal_correct=sum(entry["is_multimodal"] for entry in analysis["correct"]),
    )
    result = {
        "acc": score.accuracy * 100,
        "correct": score.correct,
        "count": score.total,
        "results": pred_indices,
        "outputs": outputs,
    }
    return score, analysis, result


def _options(values: Sequence[str]) -> List[str]:
    # accepts "--options A B C" and upstream's "--options ABCDE" (argparse type=list)
    return [letter for value in values for letter in value]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        error_name="eval_science_qa", description="ScienceQA accuracy of a LLaVA answer file")
    parser.add_argument("--base-dir", type=str, required=True, help="holds pid_splits.json and problems.json")
    parser.add_argument("--result-file", type=str, required=True)
    parser.add_argument("--output-file", type=str, required=True, help="JSON {correct: [...], incorrect: [...]}")
    parser.add_argument("--output-result", type=str, required=True, help="JSON {acc, correct, count, results, outputs}")
    parser.add_argument("--split", type=str, default="test")
    parser.add_argument("--options", nargs="+", default=list(DEFAULT_OPTIONS))
    return parser


def _load_json(path: str):
    return read_json_file(path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Scores the answer file, prints the accuracies and writes both outputs; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        splits = _load_json(os.path.join(args.base_dir, "pid_splits.json"))
        if args.split not in splits:
            raise ValueError(f"{os.path.join(args.base_dir, 'pid_splits.json')}: no split {args.split!r}")
        problems = _load_json(os.path.join(args.base_dir, "problems.json"))
        predictions = {}
        for index, row in enumerate(read_jsonl(args.result_file), start=1):
            if "question_id" not in row or "text" not in row:
                raise ValueError(f"{args.result_file}: answer {index}: needs fields 'question_id' and 'text'")
            predictions[row["question_id"]] = row
        score, analysis, result = score_science_qa(problems, splits[args.split], predictions, _options(args.options))
    except (FileNotFoundError, ValueError) as err:
        return usage_error("eval_science_qa", err)
    img = "n/a" if score.img_accuracy is None else f"{score.img_accuracy * 100:.2f}%"
    print(f"Total: {score.total}, Correct: {score.correct}, Accuracy: {score.accuracy * 100:.2f}%, IMG-Accuracy: {img}")
    write_json_atomic(args.output_file, analysis, indent=2)
    write_json_atomic(args.output_result, result, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
