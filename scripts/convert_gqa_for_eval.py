"""LLaVA GQA answers -> the predictions file GQA's evaluator reads.

    python scripts/convert_gqa_for_eval.py --src gqa/answers/llava_gqa_testdev_balanced/llava-v1.5-7b/merge.jsonl \\
        --dst gqa/data/testdev_balanced_predictions.json

Writes a JSON list of {"questionId": question_id, "prediction": text without trailing
periods, lower-cased}, in answer-file order.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Mapping, Optional, Sequence

from llava.eval.io_utils import read_answer_texts, write_json_atomic


def gqa_predictions(answer_texts: Mapping[object, str]) -> List[Dict[str, object]]:
    """GQA prediction records of {question_id: text}.

    Args:
        answer_texts: answer text per question id.

    Returns:
        ``[{"questionId": id, "prediction": text.rstrip(".").lower()}, ...]``.
    """
    return [{"questionId": qid, "prediction": text.rstrip(".").lower()} for qid, text in answer_texts.items()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="LLaVA GQA answers -> GQA predictions JSON")
    parser.add_argument("--src", type=str, required=True, help="answers jsonl (merge.jsonl)")
    parser.add_argument("--dst", type=str, required=True, help="predictions JSON to write")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Converts ``--src`` into ``--dst``; returns the exit code (2 on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        predictions = gqa_predictions(read_answer_texts(args.src))
    except (FileNotFoundError, ValueError) as err:
        print(f"convert_gqa_for_eval: error: {err}", file=sys.stderr)
        return 2
    write_json_atomic(args.dst, predictions)
    print(f"wrote {len(predictions)} predictions to {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
