"""Metrics files beside answers files (``<answers stem>.metrics.json``): parsing an evaluator's log
and recording a benchmark score."""
from __future__ import annotations

import math
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from llava.eval.records.checked_fields import (ReportError, count, load_json_file, number, obj, optional, read_field,
                                     text)
from llava.eval.io_utils import write_json_atomic
from llava.eval.records.sidecar_files import RUN_RECORD_SUFFIX, SampleCoverage, sample_coverage, sidecar_path

METRICS_SUFFIX = ".metrics.json"
METRICS_SCHEMA_VERSION = 1


REDUCERS = {
    "first": lambda values: values[0],
    "last": lambda values: values[-1],
    "mean": statistics.fmean,
}


PERCENT = (0.0, 100.0)
METRIC_RANGES = {"perception": (0.0, 2000.0), "cognition": (0.0, 800.0), "relative_score": (0.0, math.inf)}
"""Score ranges of the metrics that are not percentages: MME's perception (10 subtasks) and
cognition (4) scores, 200 points a subtask; LLaVA-Bench's relative score (can pass 100)."""
BENCHMARK_RANGES = {"mme": (0.0, 2800.0), "llavabench": (0.0, math.inf)}
"""Ranges of a score under another metric name (e.g. ``score``) of the benchmarks above."""


def score_range(metric: Optional[str], benchmark: Optional[str]) -> Tuple[float, float]:
    """(low, high) of a score: by metric name, else by benchmark, else a percentage [0, 100]."""
    return METRIC_RANGES.get(metric or "", BENCHMARK_RANGES.get(benchmark or "", PERCENT))


@dataclass(frozen=True)
class Metrics:
    """A metrics file's checked content.

    Attributes:
        value: the score, in `score_range` of its metric and benchmark.
        metric: the score's name.
        samples: ``answered``, ``skipped``, ``total`` (answered + skipped), ``errors_file``; None
            when the answers file did not exist when the score was recorded.
    """

    value: float
    metric: Optional[str]
    samples: Optional[dict]


def read_metrics(path: Path) -> Metrics:
    """Reads and checks a metrics file, field by field.

    Raises:
        ReportError: one line naming the file and the first bad field.
    """
    data = load_json_file(path)
    version = read_field(data, "schema_version", path, optional(count), None)
    if version not in (None, METRICS_SCHEMA_VERSION):
        raise ReportError(f"{path}: field 'schema_version' is {version}; this version reads {METRICS_SCHEMA_VERSION}")
    metric = read_field(data, "metric", path, optional(text), None)
    benchmark = read_field(data, "benchmark", path, optional(text), None)
    value = read_field(data, "value", path, number(*score_range(metric, benchmark)))
    samples = read_field(data, "samples", path, optional(obj), None)
    if samples is not None:
        answered, skipped, total = (read_field(data, f"samples.{key}", path, count)
                                    for key in ("answered", "skipped", "total"))
        if total != answered + skipped:
            raise ReportError(f"{path}: field 'samples.total' must be answered + skipped = {answered + skipped}, "
                              f"got {total}")
        read_field(data, "samples.errors_file", path, optional(text), None)
    return Metrics(value, metric, samples)


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
        ReportError: a pattern that does not compile, no match, or a group that is not a finite number.
    """
    try:
        matches = list(re.finditer(pattern, log_text, flags=re.MULTILINE))
    except re.error as err:
        raise ReportError(f"--pattern {pattern!r} is not a regular expression ({err})") from None
    values = []
    for match in matches:
        try:
            values.append(float(match.group(1)))
        except (IndexError, TypeError, ValueError):
            values.append(math.nan)
        if not math.isfinite(values[-1]):
            raise ReportError(f"pattern {pattern!r} matched {match.group(0)!r} but its first group is not a finite "
                              "number")
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
        ReportError: no benchmark given and no usable run record to take it from, or a value
            outside `score_range` (``"{metric} {value} of {benchmark} must be ..."``).
    """
    if benchmark is None:
        record_path = sidecar_path(answers_file, RUN_RECORD_SUFFIX)
        if not record_path.is_file():
            raise ReportError(f"{record_path} does not exist; pass --benchmark")
        benchmark = read_field(load_json_file(record_path), "benchmark", record_path, text)
    try:
        number(*score_range(metric, benchmark))(value)
    except ValueError as err:
        raise ReportError(f"{metric} {value:g} of {benchmark} must be {err}") from None
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
