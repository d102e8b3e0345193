"""Eval runs found under a runs folder: each run record with its metrics, ratio and FLOPs, as a `Run`."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from llava.eval.sidecar_files import RUN_RECORD_SUFFIX, sidecar_path
from fitprune.metrics_files import METRICS_SUFFIX, ReportError, load_json_file

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- collecting runs


TERA = 1e12


def _field(data: dict, dotted: str, path: Path):
    value = data
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ReportError(f"{path}: field '{dotted}' is missing")
        value = value[key]
    return value


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


def _tera(value: Optional[float]) -> Optional[float]:
    return None if value is None else value / TERA


def merged_chunk_records(record_path: Path, record: dict) -> List[Path]:
    """The records of the chunks a merged record was made from (beside it), or none."""
    merged_from = (record.get("chunk") or {}).get("merged_from") or []
    return [record_path.with_name(sidecar_path(Path(p).name, RUN_RECORD_SUFFIX).name) for p in merged_from]


def read_run(record_path: Path, record: dict) -> Optional[Run]:
    """A run from its record and the metrics file beside it; None for an unmerged chunk's record.

    Args:
        record_path: the run record's file.
        record: its content.

    Raises:
        ReportError: a missing field or invalid metrics JSON, naming the file.
    """
    chunk = record.get("chunk") or {}
    if chunk.get("count", 1) > 1 and "merged_from" not in chunk:
        return None
    pruning = _field(record, "pruning", record_path) or {}
    ratio = float(pruning.get("reduction_ratio") or 0.0)
    recipe_file = pruning.get("recipe_file")
    pruned = ratio > 0
    key = RowKey(
        model=_field(record, "model.name", record_path),
        policy=(pruning.get("policy") or "fitprune") if pruned else "none",
        recipe=Path(recipe_file).name if pruned and recipe_file else "-",
        ratio=ratio,
    )
    kept = (record.get("visual_tokens") or {}).get("kept_per_layer_mean")
    flops = _field(record, "flops", record_path)
    run = Run(
        record_path=record_path,
        benchmark=_field(record, "benchmark", record_path),
        key=key,
        written_at=record.get("written_at") or "",
        paper_tflops=_tera(flops.get("paper_prefill")),
        full_tflops=_tera(flops.get("full_prefill")),
        paper_reduction=flops.get("paper_reduction_pct"),
        kept_last_layer=kept[-1] if kept else None,
    )
    metrics_file = record_path.with_name(record_path.name[: -len(RUN_RECORD_SUFFIX)] + METRICS_SUFFIX)
    if metrics_file.is_file():
        metrics = load_json_file(metrics_file)
        run.score = float(_field(metrics, "value", metrics_file))
        run.metric = metrics.get("metric")
        run.samples = metrics.get("samples")
    return run


def collect_runs(runs_dir: Path) -> List[Run]:
    """Every run under `runs_dir`; chunk records give way to their merged record, and of runs
    with the same row and benchmark the latest record wins.

    Raises:
        ReportError: an unreadable record or metrics file.
    """
    records = {path: load_json_file(path) for path in sorted(runs_dir.rglob("*" + RUN_RECORD_SUFFIX))}
    chunk_parts = {part for path, record in records.items() for part in merged_chunk_records(path, record)}
    chosen: Dict[Tuple[RowKey, str], Run] = {}
    for record_path, record in records.items():
        run = None if record_path in chunk_parts else read_run(record_path, record)
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
    return list(chosen.values())
