"""POPE yes/no hallucination metrics of a LLaVA answer file.

    python llava/eval/eval_pope.py --annotation-dir pope/coco \\
        --question-file pope/llava_pope_test.jsonl --result-file pope/answers/llava-v1.5-7b.jsonl

For each ``coco_pope_<category>.json`` label file (categories in sorted order), the
answers to that category's questions are paired with the labels by position. LLaVA
reports the mean F1 over the categories, printed last, with how many questions were
answered: a question the run skipped (listed in ``<answers stem>.errors.jsonl``) is left
out with its label, so the metrics are over the answered ones (``answered N of M``).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Collection, Dict, List, Mapping, Optional, Sequence

from llava.eval.io_utils import read_jsonl
from llava.eval.records.sidecar_files import SampleCoverage, errors_file_path
from llava.utils import OneLineArgumentParser, usage_error

LABEL_FILE_PREFIX = "coco_pope_"
LABEL_FILE_SUFFIX = ".json"
NEGATIVE_WORDS = frozenset({"No", "not", "no"})


def parse_pope_answer(text: str) -> str:
    """"no" if the first sentence has the word No, not or no, else "yes".

    The first sentence is the text before the first "."; commas are deleted and words
    are split on single spaces (so "no\\n" is not the word "no").

    Args:
        text: the model's answer.

    Returns:
        "yes" or "no".
    """
    first_sentence = text.split(".", 1)[0].replace(",", "")
    return "no" if NEGATIVE_WORDS.intersection(first_sentence.split(" ")) else "yes"


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> Dict[str, float]:
    """Confusion counts and metrics, "yes" being the positive class.

    Args:
        predictions: "yes"/"no" per question.
        labels: the label per question, paired by position; "no" is negative, any other
            value positive.

    Returns:
        ``TP, FP, TN, FN`` (counts) and ``accuracy, precision, recall, f1, yes_ratio``
        (fractions; a ratio with a zero denominator is 0).

    Raises:
        ValueError: the two lists differ in length or are empty.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} answers but {len(labels)} labels; they are paired by position")
    if not predictions:
        raise ValueError("no answers to evaluate")
    pairs = [(pred != "no", label != "no") for pred, label in zip(predictions, labels)]
    tp = sum(pred and label for pred, label in pairs)
    fp = sum(pred and not label for pred, label in pairs)
    tn = sum(not pred and not label for pred, label in pairs)
    fn = sum(not pred and label for pred, label in pairs)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "TP": tp, "FP": fp, "TN": tn, "FN": fn,
        "accuracy": (tp + tn) / len(pairs),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "yes_ratio": sum(pred for pred, _ in pairs) / len(pairs),
    }


def read_pope_labels(label_file: str) -> List[str]:
    """The ``label`` of each line of a POPE label file (JSONL), in order.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: invalid JSON or a line without ``label``, naming the line.
    """
    labels = []
    for index, row in enumerate(read_jsonl(label_file), start=1):
        if "label" not in row:
            raise ValueError(f"{label_file}: record {index}: field 'label' is missing")
        labels.append(row["label"])
    return labels


def eval_pope(answers: Sequence[Mapping[str, object]], label_file: str,
              skipped: Collection[int] = ()) -> Dict[str, float]:
    """Metrics of one category's answers against its label file; prints them as upstream.

    Args:
        answers: answer records with ``text``, in question order.
        label_file: ``coco_pope_<category>.json``.
        skipped: positions (0-based, in the label file) of the questions the run skipped;
            their labels are left out, so the answers pair with the others by position.

    Returns:
        The `pope_metrics` dict.

    Raises:
        FileNotFoundError: the label file is missing.
        ValueError: see `pope_metrics` and `read_pope_labels`.
    """
    predictions = [parse_pope_answer(str(answer["text"])) for answer in answers]
    skipped = set(skipped)
    labels = [label for index, label in enumerate(read_pope_labels(label_file)) if index not in skipped]
    try:
        metrics = pope_metrics(predictions, labels)
    except ValueError as err:
        raise ValueError(f"{label_file}: {err}") from None
    print("TP\tFP\tTN\tFN\t")
    print("{}\t{}\t{}\t{}".format(metrics["TP"], metrics["FP"], metrics["TN"], metrics["FN"]))
    print("Accuracy: {}".format(metrics["accuracy"]))
    print("Precision: {}".format(metrics["precision"]))
    print("Recall: {}".format(metrics["recall"]))
    print("F1 score: {}".format(metrics["f1"]))
    print("Yes ratio: {}".format(metrics["yes_ratio"]))
    print("%.3f, %.3f, %.3f, %.3f, %.3f" % (
        metrics["f1"], metrics["accuracy"], metrics["precision"], metrics["recall"], metrics["yes_ratio"]
    ))
    return metrics


def read_pope_questions(question_file: str) -> Dict[object, str]:
    """{question_id: category} of a POPE question file, in file order.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a line without ``question_id`` or ``category``, or a repeated question_id.
    """
    categories: Dict[object, str] = {}
    for index, question in enumerate(read_jsonl(question_file), start=1):
        if "question_id" not in question or "category" not in question:
            raise ValueError(f"{question_file}: record {index}: needs fields 'question_id' and 'category'")
        if question["question_id"] in categories:
            raise ValueError(f"{question_file}: record {index}: question_id {question['question_id']!r} repeats")
        categories[question["question_id"]] = question["category"]
    return categories


def read_pope_answers(result_file: str, categories: Mapping[object, str]) -> Dict[object, Mapping[str, object]]:
    """{question_id: answer record} of an answers file whose questions are in `categories`.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: an answer to an unknown question, a question answered twice, or an answer
            without ``text``.
    """
    answers: Dict[object, Mapping[str, object]] = {}
    for index, answer in enumerate(read_jsonl(result_file), start=1):
        question_id = answer.get("question_id")
        if question_id not in categories:
            raise ValueError(f"{result_file}: answer {index}: question_id {question_id!r} is not in the question file")
        if question_id in answers:
            raise ValueError(f"{result_file}: answer {index}: question_id {question_id!r} is answered twice")
        if "text" not in answer:
            raise ValueError(f"{result_file}: answer {index}: field 'text' is missing")
        answers[question_id] = answer
    return answers


def pope_coverage(answered: int, unanswered: Sequence[object], result_file: str) -> SampleCoverage:
    """The coverage of an answers file whose `unanswered` questions must all be listed as
    skipped in its errors file.

    Raises:
        ValueError: an unanswered question the errors file does not list (an unfinished run).
    """
    errors_file = errors_file_path(result_file)
    listed = {row.get("question_id") for row in read_jsonl(str(errors_file))} if errors_file.is_file() else set()
    missing = [question_id for question_id in unanswered if question_id not in listed]
    if missing:
        raise ValueError(f"{result_file}: {len(missing)} questions have no answer and are not listed as skipped in "
                         f"{errors_file} (first: question_id {missing[0]!r}); the run is unfinished: rerun it to "
                         f"resume")
    return SampleCoverage(answered, len(unanswered), str(errors_file) if unanswered else None)


def eval_pope_files(annotation_dir: str, question_file: str, result_file: str) -> Dict[str, Dict[str, float]]:
    """Evaluates every category of an answer file; prints each, the mean F1 and the coverage.

    A question the run skipped (listed in the errors file beside the answers) is left out
    with its label; the metrics are over the answered questions, and the last line says
    ``answered N of M``.

    Args:
        annotation_dir: folder holding only ``coco_pope_<category>.json`` files, each with
            one label per question of that category, in question-file order.
        question_file: POPE question jsonl with ``question_id`` and ``category``.
        result_file: answers jsonl with ``question_id`` and ``text``.

    Returns:
        {category: metrics dict}, categories in sorted file-name order.

    Raises:
        FileNotFoundError: a file or the folder is missing.
        ValueError: a stray file in the folder, an answer to an unknown question, a
            missing field, a category whose labels and questions differ in number, or
            a question neither answered nor listed as skipped.
    """
    categories = read_pope_questions(question_file)
    answers = read_pope_answers(result_file, categories)
    coverage = pope_coverage(len(answers), [q for q in categories if q not in answers], result_file)
    results = {}
    for name in sorted(os.listdir(annotation_dir)):
        label_file = os.path.join(annotation_dir, name)
        if not (name.startswith(LABEL_FILE_PREFIX) and name.endswith(LABEL_FILE_SUFFIX)):
            raise ValueError(f"{label_file}: the annotation folder must hold only "
                             f"{LABEL_FILE_PREFIX}<category>{LABEL_FILE_SUFFIX} files")
        category = name[len(LABEL_FILE_PREFIX):-len(LABEL_FILE_SUFFIX)]
        questions = [q for q, c in categories.items() if c == category]
        num_labels = len(read_pope_labels(label_file))
        if num_labels != len(questions):
            raise ValueError(f"{label_file}: {num_labels} labels but {len(questions)} questions of category "
                             f"{category!r} in {question_file}; they are paired by position")
        category_answers = [answers[q] for q in questions if q in answers]
        skipped = [index for index, q in enumerate(questions) if q not in answers]
        print("Category: {}, # samples: {}".format(category, len(category_answers))
              + (f" (answered {len(category_answers)} of {len(questions)})" if skipped else ""))
        results[category] = eval_pope(category_answers, label_file, skipped)
        print("====================================")
    if not results:
        raise ValueError(f"{annotation_dir}: no {LABEL_FILE_PREFIX}<category>{LABEL_FILE_SUFFIX} files")
    mean_f1 = sum(metrics["f1"] for metrics in results.values()) / len(results)
    print("Mean F1 over {} categories ({}): {:.3f} ({:.1f}); {}".format(
        len(results), ", ".join(results), mean_f1, 100 * mean_f1, coverage.describe()
    ))
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(error_name="eval_pope", description="POPE metrics of a LLaVA answer file")
    parser.add_argument("--annotation-dir", type=str, required=True)
    parser.add_argument("--question-file", type=str, required=True)
    parser.add_argument("--result-file", type=str, required=True)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs `eval_pope_files` on the flags; returns the exit code (2 on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        eval_pope_files(args.annotation_dir, args.question_file, args.result_file)
    except (FileNotFoundError, ValueError) as err:
        return usage_error("eval_pope", err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
