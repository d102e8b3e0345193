"""LLaVA MM-Vet answers -> the results JSON the official MM-Vet (GPT-4) grader reads.

    python scripts/convert_mmvet_for_eval.py --src mm-vet/answers/llava-v1.5-7b.jsonl \\
        --dst mm-vet/results/llava-v1.5-7b.json

Writes {"v1_<question_id>": text}.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, Mapping, Optional, Sequence

from llava.eval.io_utils import read_answer_texts, write_json_atomic

MMVET_KEY_PREFIX = "v1_"


def mmvet_results(answer_texts: Mapping[object, str]) -> Dict[str, str]:
    """{"v1_<question_id>": text} of {question_id: text}, in the same order."""
    return {f"{MMVET_KEY_PREFIX}{qid}": text for qid, text in answer_texts.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="LLaVA MM-Vet answers -> MM-Vet results JSON")
    parser.add_argument("--src", type=str, required=True, help="answers jsonl")
    parser.add_argument("--dst", type=str, required=True, help="results JSON to write")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Converts ``--src`` into ``--dst``; returns the exit code (2 on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        results = mmvet_results(read_answer_texts(args.src))
    except (FileNotFoundError, ValueError) as err:
        print(f"convert_mmvet_for_eval: error: {err}", file=sys.stderr)
        return 2
    write_json_atomic(args.dst, results, indent=2)
    print(f"wrote {len(results)} answers to {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
