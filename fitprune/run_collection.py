"""Eval runs found under a runs folder: each run record with its metrics, ratio and FLOPs, as a `Run`.

Every field the report uses is checked (`llava.eval.records.checked_fields`). A run whose record or
metrics file is unusable (not JSON, a field of the wrong type or out of range) is left out with
one warning line naming the file and the field, and listed in `Collection.left_out`, so that
one damaged file among fifty runs costs its own row, not the table; the report stops only
when no run is usable. A score recorded before its answers file last changed (the answers were
extended after scoring) is kept but marked stale (`Run.stale_metrics`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from llava.eval.records.checked_fields import (count, load_json_file, number, numbers, obj, optional, read_field, strings,
                                     text)
from llava.eval.records.metrics_files import METRICS_SUFFIX, ReportError, read_metrics
from llava.eval.records.sidecar_files import ANSWERS_SUFFIX, RUN_RECORD_SUFFIX, sidecar_path

logger = logging.getLogger(__name__)


TERA = 1e12


@dataclass(frozen=True)
class RowKey:
    """What makes a table row: the model, the pruning policy, the recipe file and the ratio."""

    model: str
    policy: str
    recipe: str
    ratio: float


@dataclass
class Run:
    """One benchmark run: its record and its score (None until one is recorded)."""

    record_path: Path
    benchmark: str
    key: RowKey
    written_at: str
    paper_tflops: Optional[float]
    full_tflops: Optional[float]
    paper_reduction: Optional[float]
    kept_last_layer: Optional[float]
    score: Optional[float] = None
    metric: Optional[str] = None
    samples: Optional[dict] = None
    stale_metrics: Optional[Path] = None
    """The metrics file, when it is older than the answers file it scores."""


def _tera(value: Optional[float]) -> Optional[float]:
    return None if value is None else value / TERA


def merged_chunk_records(record_path: Path, record: dict) -> List[Path]:
    """The records of the chunks a merged record was made from (beside it), or none.

    Raises:
        ReportError: ``chunk`` or ``chunk.merged_from`` of the wrong type.
    """
    read_field(record, "chunk", record_path, optional(obj), None)
    merged_from = read_field(record, "chunk.merged_from", record_path, optional(strings), None) or []
    return [record_path.with_name(sidecar_path(Path(p).name, RUN_RECORD_SUFFIX).name) for p in merged_from]


def _is_older(path: Path, than: Path) -> bool:
    """Whether `path` was last modified before `than` (False when `than` does not exist)."""
    return than.is_file() and path.stat().st_mtime_ns < than.stat().st_mtime_ns


def _sidecar_of_record(record_path: Path, suffix: str) -> Path:
    return record_path.with_name(record_path.name[: -len(RUN_RECORD_SUFFIX)] + suffix)


def read_run(record_path: Path, record: dict) -> Optional[Run]:
    """A run from its record and the metrics file beside it; None for an unmerged chunk's record.

    Args:
        record_path: the run record's file.
        record: its content.

    Raises:
        ReportError: a missing or bad field of the record or of its metrics file, naming the
            file and the field.
    """
    def field_of(dotted: str, check, default=None):
        return read_field(record, dotted, record_path, check, default)

    chunks = field_of("chunk.count", optional(count)) or 1
    if chunks > 1 and field_of("chunk.merged_from", optional(strings)) is None:
        return None
    read_field(record, "pruning", record_path, optional(obj))
    ratio = field_of("pruning.reduction_ratio", optional(number(0, 100, below_high=True))) or 0.0
    recipe_file = field_of("pruning.recipe_file", optional(text))
    pruned = ratio > 0
    key = RowKey(
        model=read_field(record, "model.name", record_path, text),
        policy=(field_of("pruning.policy", optional(text)) or "fitprune") if pruned else "none",
        recipe=Path(recipe_file).name if pruned and recipe_file else "-",
        ratio=ratio,
    )
    kept = field_of("visual_tokens.kept_per_layer_mean", optional(numbers(0)))
    read_field(record, "flops", record_path, obj)
    run = Run(
        record_path=record_path,
        benchmark=read_field(record, "benchmark", record_path, text),
        key=key,
        written_at=field_of("written_at", optional(text)) or "",
        paper_tflops=_tera(field_of("flops.paper_prefill", optional(number(0)))),
        full_tflops=_tera(field_of("flops.full_prefill", optional(number(0)))),
        paper_reduction=field_of("flops.paper_reduction_pct", optional(number(0, 100))),
        kept_last_layer=kept[-1] if kept else None,
    )
    metrics_file = _sidecar_of_record(record_path, METRICS_SUFFIX)
    if metrics_file.is_file():
        metrics = read_metrics(metrics_file)
        run.score, run.metric, run.samples = metrics.value, metrics.metric, metrics.samples
        if _is_older(metrics_file, _sidecar_of_record(record_path, ANSWERS_SUFFIX)):
            run.stale_metrics = metrics_file
    return run


@dataclass
class Collection:
    """The runs under a folder, and the files left out (one ``file: field ...`` line each)."""

    runs: List[Run] = field(default_factory=list)
    left_out: List[str] = field(default_factory=list)

    def leave_out(self, err: ReportError) -> None:
        """Records an unusable file and warns about it in one line."""
        self.left_out.append(str(err))
        logger.warning("left out of the report: %s", err)


def collect_runs(runs_dir: Path) -> Collection:
    """Every usable run under `runs_dir`; chunk records give way to their merged record, and of
    runs with the same row and benchmark the latest record wins. A run whose record or metrics
    file is unusable is left out (see the module docstring)."""
    collection = Collection()
    records: Dict[Path, dict] = {}
    chunk_parts = set()
    for path in sorted(runs_dir.rglob("*" + RUN_RECORD_SUFFIX)):
        try:
            record = load_json_file(path)
            chunk_parts.update(merged_chunk_records(path, record))
        except ReportError as err:
            collection.leave_out(err)
            continue
        records[path] = record
    chosen: Dict[Tuple[RowKey, str], Run] = {}
    for record_path, record in records.items():
        if record_path in chunk_parts:
            continue
        try:
            run = read_run(record_path, record)
        except ReportError as err:
            collection.leave_out(err)
            continue
        if run is None:
            continue
        slot = (run.key, run.benchmark)
        previous = chosen.get(slot)
        if previous is not None:
            newer = max(previous, run, key=lambda r: r.written_at)
            logger.warning("%s and %s are the same run (%s, %s); using the newer %s", previous.record_path,
                           run.record_path, run.benchmark, run.key, newer.record_path)
            run = newer
        chosen[slot] = run
    collection.runs = list(chosen.values())
    return collection
