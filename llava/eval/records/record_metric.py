"""Store a benchmark score beside its answers file: ``python -m llava.eval.records.record_metric``.

    python -m llava.eval.records.record_metric --answers-file ANSWERS.jsonl --metric accuracy --value 58.2
    python -m llava.eval.records.record_metric --answers-file ANSWERS.jsonl --metric accuracy \\
        --from-log ANSWERS.metric.log --pattern 'Accuracy: ([0-9.]+)%' [--reduce last] [--scale 1]

Writes ``<answers stem>.metrics.json`` (`llava.eval.records.metrics_files`, whose docstring has the
format); the benchmark scripts call it after their metric step, and server- or judge-scored
benchmarks are recorded by hand with ``--value``. A non-finite ``--value``/``--scale`` is refused at
the flag, and a score outside its metric's range, a missing log or a pattern that matches nothing
is one ``record_metric: error:`` line, exit 2.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

from llava.eval.records.metrics_files import REDUCERS, ReportError, parse_metric, record_metric
from llava.utils import OneLineArgumentParser, usage_error

ERROR_NAME = "record_metric"


def finite_float(text: str) -> float:
    """A flag's number; nan, inf and values that overflow to inf (1e400) are refused."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def build_parser() -> OneLineArgumentParser:
    """The command line of `main`."""
    parser = OneLineArgumentParser(prog="python -m llava.eval.records.record_metric", error_name=ERROR_NAME,
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--answers-file", required=True, help="the answers JSONL the score is for")
    parser.add_argument("--benchmark", default=None, help="default: from the run record beside the answers")
    parser.add_argument("--metric", default="score", help="the score's name, e.g. accuracy")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--value", type=finite_float, help="the score itself (e.g. from an evaluation server)")
    source.add_argument("--from-log", help="a metric command's output to parse with --pattern")
    parser.add_argument("--pattern", help="regular expression whose first group is the score (with --from-log)")
    parser.add_argument("--reduce", choices=sorted(REDUCERS), default="last", help="over several matches")
    parser.add_argument("--scale", type=finite_float, default=1.0, help="multiplies the parsed value")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Records the score; prints ``<metric> = <value> -> <metrics file>`` and returns 0, or 2 after
    one error line on stderr for bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.from_log is not None and not args.pattern:
        parser.error("--from-log needs --pattern")
    try:
        if args.value is not None:
            value, source_info = args.value, {"manual": True}
        else:
            log = Path(args.from_log)
            if not log.is_file():
                raise ReportError(f"{log}: metric log does not exist")
            log_text = log.read_text(encoding="utf-8", errors="replace")
            value, matches = parse_metric(log_text, args.pattern, args.reduce, args.scale)
            source_info = {"log": str(log), "pattern": args.pattern, "reduce": args.reduce, "scale": args.scale,
                           "matches": matches}
        path, coverage = record_metric(args.answers_file, args.metric, value, args.benchmark, source_info)
    except ReportError as err:
        return usage_error(ERROR_NAME, err)
    print(f"{args.metric} = {value:g} -> {path}" + (f"; {coverage.describe()}" if coverage else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
