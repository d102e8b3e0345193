"""Answers MMBench / MMBench-CN (TSV with base64 images): ``python -m llava.eval.model_vqa_mmbench``.

    python -m llava.eval.model_vqa_mmbench --model-path liuhaotian/llava-v1.5-7b \\
        --question-file mmbench/mmbench_dev_20230712.tsv --answers-file answers/run.jsonl \\
        --single-pred-prompt --temperature 0 --conv-mode vicuna_v1 [--lang cn] [--all-rounds]

Each TSV row (columns index, question, hint, A-D, image) becomes one question, or with
--all-rounds one per option with the options rotated left after each round (circular
evaluation). Answers add round_id, options and option_char. Upstream's choices kept:
base64 images without an RGB conversion, padded with the model config, 1024 new tokens.
Reading the TSV needs pandas (``pip install pandas``). An existing answers file is
resumed; see `llava.eval.driver.loop`.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any, List, Mapping, Optional, Sequence

from llava.eval.driver.flags import DriverSpec, ImageLoading, build_parser
from llava.eval.driver.items import EvalItem, get_chunk
from llava.eval.driver.loop import run_driver
from llava.eval.driver.questions import QuestionFileError

SPEC = DriverSpec(
    name="model_vqa_mmbench",
    default_conv_mode="llava_v1",
    max_new_tokens=1024,
    image_loading=ImageLoading(source="base64", pad=True),
    mmtag_rule=True,
)

OPTION_LETTERS = ("A", "B", "C", "D")
REQUIRED_COLUMNS = ("index", "question", "hint", "image", "A")
SINGLE_PRED_PROMPTS = {
    "en": "Answer with the option's letter from the given choices directly.",
    "cn": "请直接回答选项字母。",
}


def is_none(value: Any) -> bool:
    """True for an empty TSV cell: None, NaN, or the strings "nan" / "none" (any case)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.lower() in ("nan", "none")


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value (JSON-serialisable); other values unchanged."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def row_options(row: Mapping[str, Any]) -> List[str]:
    """The row's options in column order A, B, C, D, up to the first empty one."""
    options = []
    for letter in OPTION_LETTERS:
        value = row.get(letter)
        if is_none(value):
            break
        options.append(value if isinstance(value, str) else str(plain(value)))
    return options


def row_items(row: Mapping[str, Any], line: int, all_rounds: bool, single_pred_prompt: Optional[str]) -> List[EvalItem]:
    """The items of one TSV row: one round, or one per option with rotated options.

    Args:
        row: the row's cells by column name.
        line: the row's number in the file (header = line 1), for errors.
        all_rounds: circular evaluation.
        single_pred_prompt: the answer-format line appended to the question, or None.

    Returns:
        The row's items; ``prompt`` is hint + question + options, without the format line.
    """
    options = row_options(row)
    option_char = list(OPTION_LETTERS[: len(options)])
    items = []
    for round_id in range(len(options) if all_rounds else 1):
        question = row["question"]
        if not is_none(row["hint"]):
            question = row["hint"] + "\n" + question
        for letter, option in zip(OPTION_LETTERS, options):
            question = question + "\n" + letter + ". " + option
        text = question + "\n" + single_pred_prompt if single_pred_prompt else question
        extra = {"round_id": round_id, "options": list(options), "option_char": list(option_char)}
        items.append(EvalItem(plain(row["index"]), question, text, row["image"], line, extra))
        options = options[1:] + options[:1]
        option_char = option_char[1:] + option_char[:1]
    return items


def read_tsv(path: str):
    """The TSV as a pandas DataFrame (pandas imported here, on demand).

    Raises:
        QuestionFileError: pandas missing, the file missing, or a required column missing.
    """
    try:
        import pandas as pd
    except ImportError:
        raise QuestionFileError("model_vqa_mmbench reads the MMBench TSV with pandas: pip install pandas") from None
    try:
        table = pd.read_table(path)
    except FileNotFoundError:
        raise QuestionFileError(f"{path}: question file does not exist") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise QuestionFileError(f"{path}: columns {missing} are missing (has {list(table.columns)})")
    return table


def mmbench_items(args: argparse.Namespace) -> List[EvalItem]:
    """The chunk's items: rows are chunked first, then expanded into rounds."""
    table = get_chunk(read_tsv(args.question_file), args.num_chunks, args.chunk_idx)
    suffix = SINGLE_PRED_PROMPTS[args.lang] if args.single_pred_prompt else None
    items = []
    for position, (_, row) in enumerate(table.iterrows()):
        line = int(table.index[position]) + 2
        items += row_items(row.to_dict(), line, args.all_rounds, suffix)
    return items


def build_mmbench_parser() -> argparse.ArgumentParser:
    """The shared flags plus --all-rounds, --single-pred-prompt and --lang."""
    parser = build_parser(SPEC, __doc__.splitlines()[0])
    parser.add_argument("--all-rounds", action="store_true", help="one round per option, options rotated")
    parser.add_argument("--single-pred-prompt", action="store_true",
                        help="ask for the option's letter only (the v1.5 setting)")
    parser.add_argument("--lang", type=str, default="en", choices=sorted(SINGLE_PRED_PROMPTS))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the driver on command-line flags; returns the exit code."""
    args = build_mmbench_parser().parse_args(argv)
    return run_driver(SPEC, args, mmbench_items)


if __name__ == "__main__":
    sys.exit(main())
