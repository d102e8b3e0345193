"""TextVQA accuracy of LLaVA answer files.

    python -m llava.eval.eval_textvqa --annotation-file textvqa/TextVQA_0.5.1_val.json \\
        --result-file textvqa/answers/llava-v1.5-7b.jsonl
    python -m llava.eval.eval_textvqa --annotation-file ... --result-dir textvqa/answers

Each answer is matched to its annotation by (image id, question): the answer file's
``question_id`` is the TextVQA image id and the question is recovered from the recorded
``prompt`` by `prompt_processor`.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

from llava.eval.io_utils import read_jsonl
from llava.eval.m4c_evaluator import TextVQAAccuracyEvaluator
from llava.eval.records.sidecar_files import ANSWERS_SUFFIX, sample_coverage
from llava.eval.driver.sample_errors import ERRORS_SUFFIX
from llava.utils import OneLineArgumentParser, usage_error
from llava.json_reading import read_json_file

OCR_PROMPT_PREFIX = "OCR tokens: "
OCR_PROMPT_QUESTION = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)
REFERENCE_OCR = "Reference OCR token: "
SHORT_ANSWER = "Answer the question using a single word or phrase."


def prompt_processor(prompt: str) -> str:
    """The lower-cased TextVQA question inside a recorded prompt.

    Forms accepted:
    - ``OCR tokens: ... Question: <q> Short answer:``;
    - three lines, one of them starting with ``Reference OCR token: ``: the question is
      line 1 if the prompt starts with that phrase, else line 0;
    - two lines (question, answer-format suffix): line 0.

    Args:
        prompt: the ``prompt`` field of an answer line.

    Returns:
        The question, lower-cased.

    Raises:
        ValueError: the prompt has none of these forms.
    """
    lines = prompt.split("\n")
    if prompt.startswith(OCR_PROMPT_PREFIX):
        match = OCR_PROMPT_QUESTION.search(prompt)
        if match is None:
            raise ValueError(f"prompt starts with {OCR_PROMPT_PREFIX!r} but has no "
                             f"'Question: ... Short answer:': {prompt!r}")
        question = match.group(1)
    elif REFERENCE_OCR in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith(REFERENCE_OCR.rstrip()) else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(f"unrecognised TextVQA prompt ({len(lines)} lines): {prompt!r}; expected the question, "
                         f"optionally a {REFERENCE_OCR!r}... line, then the suffix {SHORT_ANSWER!r} on its own line")
    return question.lower()


def eval_single(annotation_file: str, result_file: str) -> Tuple[int, float]:
    """Evaluates one answer file and prints its name, sample count, coverage and accuracy.

    The accuracy is over the answers; the samples line says ``answered N of M``, M counting
    the questions the run skipped (listed in the errors file beside the answers).

    Args:
        annotation_file: ``TextVQA_0.5.1_val.json`` (``data``: image_id, question, answers).
        result_file: answers jsonl with ``question_id`` (image id), ``prompt`` and ``text``.

    Returns:
        (number of answers, accuracy as a fraction in [0, 1]).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: an answer has a missing field, an unrecognised prompt or no
            annotation, or an annotation lacks 10 answers.
    """
    print(Path(result_file).stem)
    annotations = read_json_file(annotation_file)
    if not isinstance(annotations, dict) or "data" not in annotations:
        raise ValueError(f"{annotation_file}: expected a JSON object with a 'data' list")
    by_key = {(a["image_id"], a["question"].lower()): a for a in annotations["data"]}
    pred_list = []
    for index, result in enumerate(read_jsonl(result_file), start=1):
        for field in ("question_id", "prompt", "text"):
            if field not in result:
                raise ValueError(f"{result_file}: answer {index}: field {field!r} is missing")
        try:
            key = (result["question_id"], prompt_processor(result["prompt"]))
        except ValueError as err:
            raise ValueError(f"{result_file}: answer {index} (question_id {result['question_id']!r}): {err}") from None
        if key not in by_key:
            raise ValueError(f"{result_file}: answer {index}: no annotation for (image_id, question) {key!r}")
        pred_list.append({"pred_answer": result["text"], "gt_answers": by_key[key]["answers"]})
    accuracy = TextVQAAccuracyEvaluator().eval_pred_list(pred_list)
    print("Samples: {}; {}\nAccuracy: {:.2f}%\n".format(
        len(pred_list), sample_coverage(result_file).describe(), 100.0 * accuracy))
    return len(pred_list), accuracy


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(error_name="eval_textvqa", description="TextVQA accuracy of LLaVA answer files")
    parser.add_argument("--annotation-file", type=str, required=True)
    parser.add_argument("--result-file", type=str, default=None)
    parser.add_argument("--result-dir", type=str, default=None, help="evaluate every *.jsonl in this folder (errors files excepted)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Evaluates ``--result-file`` and/or every answers file (``*.jsonl``, not ``*.errors.jsonl``)
    of ``--result-dir``; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.result_file is None and args.result_dir is None:
        return usage_error("eval_textvqa", "give --result-file or --result-dir")
    try:
        if args.result_file is not None:
            eval_single(args.annotation_file, args.result_file)
        if args.result_dir is not None:
            for name in sorted(os.listdir(args.result_dir)):
                if not name.endswith(ANSWERS_SUFFIX) or name.endswith(ERRORS_SUFFIX):
                    print(f"Skipping {name}")
                    continue
                eval_single(args.annotation_file, os.path.join(args.result_dir, name))
    except (FileNotFoundError, ValueError) as err:
        return usage_error("eval_textvqa", err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
