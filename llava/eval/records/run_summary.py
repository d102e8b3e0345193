"""A run record computed from the entries of run-stats logs: counts, FLOPs, timing, memory.

The record's schema is in `llava.eval.records.run_record`'s docstring; FLOPs per sample, in both
conventions of `llava.model.pruning.flops`.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from llava.eval.records.sidecar_files import PathLike, count_lines
from llava.model.pruning.flops import DecoderDims, full_decode_step_flops
from llava.model.pruning.traced_flops import after_layer_entered, traced_flops

SCHEMA_VERSION = 1


class RunRecordError(ValueError):
    """A run-stats log or run record that cannot be used; the message names the file."""


def _median(values: Iterable[float]) -> Optional[float]:
    values = list(values)
    return float(statistics.median(values)) if values else None


def _sample_arrays(batches: Sequence[dict], num_layers: int, where: Path):
    """Per-sample (num_visual (S,), num_other (S,), keep (S, L), new_tokens (S,), entered (S, L))
    arrays; a batch entry without ``entered_counts`` (logs written before they were recorded)
    counts layer 0 entered by ``num_visual`` and layer l by what left layer l-1."""
    num_visual, num_other, keep, new_tokens, entered = [], [], [], [], []
    for index, batch in enumerate(batches, start=1):
        try:
            num_visual += batch["num_visual"]
            num_other += batch["num_other_tokens"]
            keep += batch["keep_counts"]
            new_tokens += batch["new_tokens"]
            entered += batch.get("entered_counts") or after_layer_entered(
                np.asarray(batch["keep_counts"], dtype=np.float64).reshape(-1, num_layers), batch["num_visual"]
            ).tolist()
        except KeyError as err:
            raise RunRecordError(f"{where}: batch entry {index}: field {err.args[0]!r} is missing") from None
    if not (len(num_visual) == len(num_other) == len(keep) == len(new_tokens) == len(entered)):
        raise RunRecordError(f"{where}: batch entries have per-sample lists of different lengths")
    keep_array = np.asarray(keep, dtype=np.float64).reshape(len(keep), num_layers)
    entered_array = np.asarray(entered, dtype=np.float64).reshape(len(entered), num_layers)
    return (np.asarray(num_visual, dtype=np.float64), np.asarray(num_other, dtype=np.float64),
            keep_array, np.asarray(new_tokens, dtype=np.int64), entered_array)


def _decode_flops(dims: DecoderDims, entered, num_other, new_tokens) -> np.ndarray:
    """Full-convention FLOPs of every sample's decode steps, shape (S,).

    A sample with n new tokens ran n - 1 decode steps (the first token comes from the
    prefill); at step t, layer l's cache holds the tokens that entered layer l in the
    prefill (`entered` (S, L) visual, plus `num_other`) plus t decoded tokens.
    """
    flops = np.zeros(len(new_tokens))
    for s, count in enumerate(new_tokens):
        steps = int(count) - 1
        if steps <= 0:
            continue
        entering = entered[s] + num_other[s]  # (L,)
        cache = entering[None, :] + np.arange(steps)[:, None]  # (steps, L)
        flops[s] = full_decode_step_flops(dims, cache) * steps
    return flops


def flops_summary(dims: DecoderDims, num_visual, num_other, keep, new_tokens, entered=None) -> dict:
    """Per-sample FLOPs means of a set of samples, both conventions, counted from the visual
    tokens entering and leaving each layer (`llava.model.pruning.traced_flops`).

    Args:
        dims: decoder dimensions.
        num_visual: (S,) visual tokens before any pruning, the tower's (0 for text-only samples).
        num_other: (S,) prefix + text tokens.
        keep: (S, L) visual tokens left after each layer.
        new_tokens: (S,) generated tokens.
        entered: (S, L) visual tokens entering each layer (``PruningTrace.entered().T``); None:
            layer 0 entered by `num_visual`, layer l by what left layer l-1.

    Returns:
        The record's ``flops`` section (values None where no sample qualifies).
    """
    summary = dict.fromkeys((
        "paper_prefill", "paper_prefill_unpruned", "paper_reduction_pct", "full_prefill",
        "full_prefill_unpruned", "full_prefill_reduction_pct", "full_decode", "full_total",
    ))
    if len(num_visual) == 0:
        return summary
    keep = np.asarray(keep, dtype=np.float64)
    entered = after_layer_entered(keep, num_visual) if entered is None else np.asarray(entered, dtype=np.float64)
    image = num_visual > 0
    if image.any():
        visual_only = traced_flops(dims, entered[image], keep[image], num_visual[image], 0)
        summary["paper_prefill"] = visual_only.paper_prefill
        summary["paper_prefill_unpruned"] = visual_only.paper_prefill_unpruned
        summary["paper_reduction_pct"] = visual_only.paper_reduction
    every = traced_flops(dims, entered, keep, num_visual, num_other)
    summary["full_prefill"] = every.full_prefill
    summary["full_prefill_unpruned"] = every.full_prefill_unpruned
    summary["full_prefill_reduction_pct"] = every.full_reduction
    summary["full_decode"] = float(_decode_flops(dims, entered, num_other, new_tokens).mean())
    summary["full_total"] = summary["full_prefill"] + summary["full_decode"]
    return summary


def _timing_summary(batches: Sequence[dict], runs: Sequence[dict]) -> dict:
    prefill_ms = [b["prefill_s"] * 1000 for b in batches if b.get("prefill_s") is not None]
    decode_rates = [
        b["decode_tokens"] / b["decode_s"]
        for b in batches
        if b.get("decode_s") and b.get("decode_tokens")
    ]
    return {
        "prefill_latency_ms_median": _median(prefill_ms),
        "decode_tokens_per_s_median": _median(decode_rates),
        "batch_sizes": sorted({len(b["keys"]) for b in batches}),
        "batches_timed": len(prefill_ms),
        "wall_time_s": float(sum(r.get("wall_time_s", 0.0) for r in runs)),
        "generation_time_s": float(sum(r.get("generation_time_s", 0.0) for r in runs)),
    }


def _memory_summary(runs: Sequence[dict]) -> dict:
    measured = [r for r in runs if r.get("peak_memory_bytes") is not None]
    if not measured:
        return {"peak_bytes": None, "measure": None}
    peak = max(measured, key=lambda r: r["peak_memory_bytes"])
    return {"peak_bytes": int(peak["peak_memory_bytes"]), "measure": peak.get("peak_memory_measure")}


def summarize(header: dict, batches: Sequence[dict], runs: Sequence[dict], answers_file: PathLike,
              where: Path) -> dict:
    """Builds a run record from a log's entries.

    Args:
        header: the log header (see `llava.eval.driver.loop.log_header`).
        batches: batch entries of one or more logs.
        runs: run entries of one or more logs.
        answers_file: the answers file the record describes (its lines are counted).
        where: the log file, for error messages.

    Returns:
        The run record (schema in the module docstring).

    Raises:
        RunRecordError: a header or batch entry lacks a field.
    """
    try:
        dims = DecoderDims(**header["model"]["decoder_dims"])
    except (KeyError, TypeError) as err:
        raise RunRecordError(f"{where}: header field model.decoder_dims is missing or invalid ({err})") from None
    num_visual, num_other, keep, new_tokens, entered = _sample_arrays(batches, dims.num_layers, where)
    image = num_visual > 0
    last_run = runs[-1] if runs else {}
    return {
        "schema_version": SCHEMA_VERSION,
        "benchmark": header.get("benchmark"),
        "run_name": header.get("run_name"),
        "driver": header.get("driver"),
        "answers_file": str(answers_file),
        "question_file": header.get("question_file"),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": header["model"],
        "pruning": header.get("pruning"),
        "generation": header.get("generation"),
        "chunk": header.get("chunk"),
        "samples": {
            "answered": count_lines(answers_file),
            "measured": int(len(num_visual)),
            "with_image": int(image.sum()),
        },
        "visual_tokens": {
            "initial_mean": float(num_visual[image].mean()) if image.any() else None,
            "kept_per_layer_mean": keep[image].mean(axis=0).tolist() if image.any() else None,
            "entered_per_layer_mean": entered[image].mean(axis=0).tolist() if image.any() else None,
        },
        "flops": flops_summary(dims, num_visual, num_other, keep, new_tokens, entered),
        "timing": _timing_summary(batches, runs),
        "memory": _memory_summary(runs),
        "device": last_run.get("device"),
        "software": last_run.get("software"),
        "runs": list(runs),
    }
