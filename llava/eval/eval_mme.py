"""MME: convert LLaVA answers to the official eval_tool layout, then score them.

    python -m llava.eval.eval_mme convert --experiment llava-v1.5-7b [--mme-dir playground/data/eval/MME]
    python -m llava.eval.eval_mme calculate \\
        --results-dir playground/data/eval/MME/eval_tool/answers/llava-v1.5-7b

``convert`` reads ``<mme-dir>/answers/<experiment>.jsonl`` and the ground truth under
``<mme-dir>/MME_Benchmark_release_version`` and writes
``<mme-dir>/eval_tool/answers/<experiment>/<category>.txt`` with lines
``file<TAB>question<TAB>gt<TAB>prediction``, the two questions of each image adjacent.

``calculate`` scores each task file: acc over questions, acc+ over images (both answers
right), score = 100·(acc + acc+); Perception (max 2000) and Cognition (max 800) are sums
over their tasks. LLaVA reports Perception.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from llava.eval.io_utils import read_jsonl, write_text_atomic
from llava.utils import OneLineArgumentParser, usage_error

EVAL_TYPES: Dict[str, Tuple[str, ...]] = {
    "Perception": ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                   "artwork", "OCR"),
    "Cognition": ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"),
}
BENCHMARK_DIR = "MME_Benchmark_release_version"
SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
YES_NO_SUFFIX = "Please answer yes or no."
QUESTIONS_PER_IMAGE = 2
# the first characters of a free-form answer searched for "yes" / "no"
ANSWER_PREFIX_CHARS = 4

GroundTruth = Dict[Tuple[str, str, str], str]


def _file_lines(path: Path) -> List[str]:
    # lines as Python's text-mode iteration splits them (\n, \r\n, \r), without terminators
    with path.open(encoding="utf-8") as handle:
        return [line.rstrip("\r\n") for line in handle]


def load_ground_truth(benchmark_dir: str) -> GroundTruth:
    """The MME answers keyed by (category, txt file name, question).

    A category folder holds either ``images/`` + ``questions_answers_YN/*.txt`` or the
    images and ``.txt`` files together; each txt line is ``question<TAB>answer``.

    Args:
        benchmark_dir: ``MME_Benchmark_release_version``.

    Returns:
        {(category, file, question): answer}.

    Raises:
        FileNotFoundError: the folder is missing.
        ValueError: a line is not ``question<TAB>answer``, naming file and line.
    """
    root = Path(benchmark_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: MME benchmark folder does not exist")
    ground_truth: GroundTruth = {}
    for category_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        qa_dir = category_dir / "questions_answers_YN" if (category_dir / "images").is_dir() else category_dir
        for txt in sorted(qa_dir.glob("*.txt")):
            for number, line in enumerate(_file_lines(txt), start=1):
                if not line.strip():
                    continue
                fields = line.strip().split("\t")
                if len(fields) != 2:
                    raise ValueError(f"{txt}:{number}: expected 'question<TAB>answer', got {len(fields)} fields")
                ground_truth[(category_dir.name, txt.name, fields[0])] = fields[1]
    return ground_truth


def official_question(prompt: str, category: str, file: str, ground_truth: GroundTruth) -> str:
    """The MME question text of a LLaVA prompt, as keyed in the ground truth.

    Drops LLaVA's short-answer suffix; appends " Please answer yes or no." when absent,
    with two spaces instead of one when only that spelling is in the ground truth.
    """
    question = prompt.replace(SHORT_ANSWER_SUFFIX, "").strip() if SHORT_ANSWER_SUFFIX in prompt else prompt
    if YES_NO_SUFFIX not in question:
        question = f"{question} {YES_NO_SUFFIX}"
        if (category, file, question) not in ground_truth:
            question = question.replace(f" {YES_NO_SUFFIX}", f"  {YES_NO_SUFFIX}")
    return question


def convert_answers(answers: Sequence[Mapping[str, object]], ground_truth: GroundTruth,
                    source: str = "answers") -> Dict[str, List[Tuple[str, str, str, str]]]:
    """Groups answers by category as (file, question, gt, prediction) rows, in input order.

    Tabs, carriage returns and line feeds inside a prediction become spaces so each row
    stays one line.

    Args:
        answers: records with ``question_id`` ("<category>/<image file>"), ``prompt``, ``text``.
        ground_truth: from `load_ground_truth`.
        source: name of the answers for error messages.

    Returns:
        {category: rows}.

    Raises:
        ValueError: a missing field, or a question not in the ground truth (naming it).
    """
    rows: Dict[str, List[Tuple[str, str, str, str]]] = defaultdict(list)
    for index, answer in enumerate(answers, start=1):
        for field in ("question_id", "prompt", "text"):
            if field not in answer:
                raise ValueError(f"{source}: answer {index}: field {field!r} is missing")
        question_id = str(answer["question_id"])
        category = question_id.split("/")[0]
        file = question_id.split("/")[-1].split(".")[0] + ".txt"
        question = official_question(str(answer["prompt"]), category, file, ground_truth)
        if (category, file, question) not in ground_truth:
            raise ValueError(f"{source}: answer {index}: ({category}, {file}, {question!r}) "
                             "is not in the MME ground truth")
        prediction = str(answer["text"]).replace("\t", " ").replace("\r", " ").replace("\n", " ")
        rows[category].append((file, question, ground_truth[(category, file, question)], prediction))
    return dict(rows)


def convert_experiment(mme_dir: str, experiment: str) -> List[Path]:
    """Writes ``<mme-dir>/eval_tool/answers/<experiment>/<category>.txt`` from the answers.

    Args:
        mme_dir: the MME data folder (``playground/data/eval/MME``).
        experiment: answers file stem under ``<mme-dir>/answers``.

    Returns:
        The files written, one per category.

    Raises:
        FileNotFoundError: the answers or the benchmark folder is missing.
        ValueError: see `convert_answers` and `load_ground_truth`.
    """
    root = Path(mme_dir)
    answers_file = root / "answers" / f"{experiment}.jsonl"
    rows = convert_answers(read_jsonl(answers_file), load_ground_truth(str(root / BENCHMARK_DIR)), str(answers_file))
    out_dir = root / "eval_tool" / "answers" / experiment
    written = []
    for category, category_rows in rows.items():
        path = out_dir / f"{category}.txt"
        write_text_atomic(path, "".join("\t".join(row) + "\n" for row in category_rows))
        written.append(path)
    return written


def parse_mme_prediction(text: str) -> str:
    """"yes", "no" or "other" for a lower-cased prediction.

    Exactly "yes"/"no" is kept; otherwise "yes" if the first 4 characters contain
    "yes", else "no" if they contain "no", else "other".
    """
    if text in ("yes", "no"):
        return text
    prefix = text[:ANSWER_PREFIX_CHARS]
    if "yes" in prefix:
        return "yes"
    return "no" if "no" in prefix else "other"


@dataclass(frozen=True)
class TaskScore:
    """One MME task: question and image accuracies (fractions) and the task score (points)."""

    questions: int
    images: int
    acc: float
    acc_plus: float

    @property
    def score(self) -> float:
        return 100 * self.acc + 100 * self.acc_plus


def score_task_lines(lines: Sequence[str], source: str = "task") -> TaskScore:
    """Scores one task file's lines (``file<TAB>question<TAB>gt<TAB>prediction``).

    Consecutive lines form one image's question pair.

    Args:
        lines: the file's lines, without line terminators.
        source: file name for error messages.

    Returns:
        The task's TaskScore.

    Raises:
        ValueError: no lines, an odd count, a line without 4 fields, a ground truth other
            than yes/no, or a pair about two different files (naming the line).
    """
    if not lines or len(lines) % QUESTIONS_PER_IMAGE:
        raise ValueError(f"{source}: {len(lines)} lines; expected a positive even number (two questions per image)")
    correct = images_correct = 0
    for start in range(0, len(lines), QUESTIONS_PER_IMAGE):
        pair = []
        for number in range(start + 1, start + QUESTIONS_PER_IMAGE + 1):
            fields = lines[number - 1].split("\t")
            if len(fields) != 4:
                raise ValueError(f"{source}:{number}: expected 4 tab-separated fields, got {len(fields)}")
            gt = fields[2].lower()
            if gt not in ("yes", "no"):
                raise ValueError(f"{source}:{number}: ground truth must be yes or no, got {fields[2]!r}")
            pair.append((fields[0], gt == parse_mme_prediction(fields[3].lower())))
        if pair[0][0] != pair[1][0]:
            raise ValueError(f"{source}:{start + 1}-{start + 2}: the pair is about {pair[0][0]} and {pair[1][0]}; "
                             "each image's two questions must be adjacent")
        hits = sum(hit for _, hit in pair)
        correct += hits
        images_correct += hits == QUESTIONS_PER_IMAGE
    images = len(lines) // QUESTIONS_PER_IMAGE
    return TaskScore(questions=len(lines), images=images, acc=correct / len(lines), acc_plus=images_correct / images)


@dataclass(frozen=True)
class MMEReport:
    """Scores of the task files found, totals per eval type, and the tasks without a file."""

    tasks: Dict[str, TaskScore]
    totals: Dict[str, float]
    missing: Tuple[str, ...]


def calculate(results_dir: str) -> MMEReport:
    """Scores every ``<task>.txt`` of the 14 MME tasks present in ``results_dir``.

    Args:
        results_dir: ``eval_tool/answers/<experiment>``.

    Returns:
        The report; a total sums only the tasks present (see ``missing``).

    Raises:
        FileNotFoundError: the folder is missing.
        ValueError: no task file, or a malformed one (see `score_task_lines`).
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: results folder does not exist")
    tasks: Dict[str, TaskScore] = {}
    totals: Dict[str, float] = {}
    missing = []
    for eval_type, names in EVAL_TYPES.items():
        totals[eval_type] = 0.0
        for name in names:
            path = root / f"{name}.txt"
            if not path.is_file():
                missing.append(name)
                continue
            tasks[name] = score_task_lines(_file_lines(path), str(path))
            totals[eval_type] += tasks[name].score
    if not tasks:
        raise ValueError(f"{root}: no MME task files (<task>.txt for {', '.join(EVAL_TYPES['Perception'])}, ...)")
    return MMEReport(tasks=tasks, totals=totals, missing=tuple(missing))


def print_report(report: MMEReport) -> None:
    """Prints the totals and task scores in the official tool's layout."""
    for eval_type, names in EVAL_TYPES.items():
        present = [name for name in names if name in report.tasks]
        if not present:
            continue
        print("===========", eval_type, "===========")
        print("total score:", report.totals[eval_type], "\n")
        for name in present:
            print("\t", name, " score:", report.tasks[name].score)
        print("\n")
    if report.missing:
        print(f"missing tasks (not in the totals): {', '.join(report.missing)}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(error_name="eval_mme", description="MME: convert LLaVA answers, then score them")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="answers/<experiment>.jsonl -> eval_tool/answers/<experiment>/")
    convert.add_argument("--experiment", type=str, required=True)
    convert.add_argument("--mme-dir", type=str, default="playground/data/eval/MME")
    calc = commands.add_parser("calculate", help="score an eval_tool/answers/<experiment> folder")
    calc.add_argument("--results-dir", "--results_dir", dest="results_dir", type=str, required=True)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the subcommand; returns the exit code (2 on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "convert":
            for path in convert_experiment(args.mme_dir, args.experiment):
                print(f"wrote {path}")
        else:
            print_report(calculate(args.results_dir))
    except (FileNotFoundError, ValueError) as err:
        return usage_error("eval_mme", err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
