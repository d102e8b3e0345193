"""Metrics files beside answers files (``<answers stem>.metrics.json``): parsing an evaluator's log
and recording a benchmark score."""
from __future__ import annotations

import json
import re
import statistics
import time
from pathlib import Path
from typing import List, Optional, Tuple

from llava.eval.io_utils import write_json_atomic
from llava.eval.sidecar_files import RUN_RECORD_SUFFIX, SampleCoverage, sample_coverage, sidecar_path



# ----------------------------------------------------------------------------- metrics files


class ReportError(ValueError):
    """A run record or metrics file that cannot be used; the message names the file and field."""


METRICS_SUFFIX = ".metrics.json"
METRICS_SCHEMA_VERSION = 1


REDUCERS = {
    "first": lambda values: values[0],
    "last": lambda values: values[-1],
    "mean": statistics.fmean,
}


def load_json_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object")
    return data


def metrics_path(answers_file: str) -> Path:
    """``<name>.metrics.json`` beside ``<name>.jsonl``."""
    return sidecar_path(answers_file, METRICS_SUFFIX)


def parse_metric(log_text: str, pattern: str, reduce: str, scale: float) -> Tuple[float, List[float]]:
    """The score in a metric command's output.

    Args:
        log_text: the command's output.
        pattern: a regular expression (multiline) whose first group is a number.
        reduce: "first", "last" or "mean" over all matches.
        scale: multiplies the reduced value (e.g. 100 for a fraction).

    Returns:
        (score, the matched values).

    Raises:
        ReportError: no match, or a group that is not a number.
    """
    values = []
    for match in re.finditer(pattern, log_text, flags=re.MULTILINE):
        try:
            values.append(float(match.group(1)))
        except (IndexError, ValueError):
            raise ReportError(f"pattern {pattern!r} matched {match.group(0)!r} but its first group is not a number")
    if not values:
        raise ReportError(f"pattern {pattern!r} matches nothing in the metric output")
    return REDUCERS[reduce](values) * scale, values


def record_metric(answers_file: str, metric: str, value: float, benchmark: Optional[str],
                  source: dict) -> Tuple[Path, Optional[SampleCoverage]]:
    """Writes the metrics file of an answers file, with the samples the score covers.

    Args:
        answers_file: the answers JSONL the score is for.
        metric: the score's name (e.g. "accuracy").
        value: the score.
        benchmark: the benchmark; None takes it from the run record beside the answers.
        source: how the value was obtained (log and pattern, or manual).

    Returns:
        The metrics file's path, and the answered and skipped samples (`sample_coverage`;
        None when the answers file does not exist).

    Raises:
        ReportError: no benchmark given and no run record to take it from.
    """
    if benchmark is None:
        record_path = sidecar_path(answers_file, RUN_RECORD_SUFFIX)
        if not record_path.is_file():
            raise ReportError(f"{record_path} does not exist; pass --benchmark")
        benchmark = load_json_file(record_path).get("benchmark")
    path = metrics_path(answers_file)
    coverage = sample_coverage(answers_file) if Path(answers_file).is_file() else None
    write_json_atomic(path, {
        "schema_version": METRICS_SCHEMA_VERSION,
        "benchmark": benchmark,
        "metric": metric,
        "value": value,
        "samples": coverage.to_dict() if coverage else None,
        "source": source,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }, indent=1)
    return path, coverage
