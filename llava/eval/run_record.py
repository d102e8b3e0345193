"""Run records of the generation drivers: what a run cost, written beside its answers.

Beside an answers file ``<name>.jsonl`` a driver keeps two files:

- ``<name>.run-stats.ndjson``: an append-only log, one JSON object per line, flushed and
  fsynced together with the answers so that it survives an interrupted run:

  - ``{"header": {...}}`` once, when the log is created: the settings that change answers
    (compared on resume), the decoder's dimensions, the recipe in use;
  - ``{"batch": {...}}`` after each batch: per sample its resume key, visual tokens before
    pruning, other (prefix + text) tokens, visual tokens left after each layer and new
    tokens; per batch the prefill and decode wall times and the tokens decoded;
  - ``{"run": {...}}`` when a process finishes: device, wall time, peak memory, versions.

- ``<name>.run.json``: the run record, recomputed from the whole log at the end of each
  run (so a resumed run's record covers every answer), or merged from chunk logs by
  ``python -m llava.eval.run_record merge --answers-file merge.jsonl CHUNK.jsonl ...``
  (which also concatenates the chunks' ``.errors.jsonl`` into ``merge.errors.jsonl``).

A score over a run with skipped samples covers only the answered ones; `sample_coverage`
says how many of how many (``answered N of M``), for the metric scripts and metrics files.

Run record schema (``schema_version`` 1); FLOPs are per sample, as in `fitprune.flops`:

    benchmark, run_name, driver, answers_file, question_file, written_at
    model:      path, name, base, dtype, num_visual_tokens, decoder_dims{...}
    pruning:    reduction_ratio (percent), policy, recipe_file, keep_counts,
                achieved_paper, achieved_full (recipe, percent; null when unpruned)
    generation: conv_mode, temperature, top_p, num_beams, max_new_tokens, decoding
    chunk:      index, count (a chunk's own record) or count, merged_from (merged record)
    samples:    answered (lines of the answers file), measured (with stats), with_image
    visual_tokens: initial_mean, kept_per_layer_mean[L]   (over samples with an image)
    flops:      paper_prefill, paper_prefill_unpruned, paper_reduction_pct   (image samples;
                visual tokens only, multiply-adds)
                full_prefill, full_prefill_unpruned, full_prefill_reduction_pct,
                full_decode, full_total   (all samples; every token, 2 FLOPs per MAC)
    timing:     prefill_latency_ms_median (per batch: vision encoder + prefill to the first
                token), decode_tokens_per_s_median (per batch), batch_sizes, batches_timed,
                wall_time_s, generation_time_s (summed over runs)
    memory:     peak_bytes, measure ("torch.cuda.max_memory_allocated" or "ru_maxrss")
    device:     type, name;  software: python, torch, transformers, cuda, llava_fitprune
    runs:       the log's run entries
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np

from llava.model.pruning.flops import (
    DecoderDims,
    full_decode_step_flops,
    full_prefill_flops,
    full_reduction,
    paper_prefill_flops,
    paper_reduction,
)
from llava.eval.io_utils import parse_jsonl_lines, write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RUN_RECORD_SUFFIX = ".run.json"
RUN_STATS_SUFFIX = ".run-stats.ndjson"
ERRORS_SUFFIX = ".errors.jsonl"
ANSWERS_SUFFIX = ".jsonl"

PathLike = Union[str, "os.PathLike[str]"]


class RunRecordError(ValueError):
    """A run-stats log or run record that cannot be used; the message names the file."""


def sidecar_path(answers_file: PathLike, suffix: str) -> Path:
    """The file beside an answers file with ``suffix`` in place of ``.jsonl``.

    Args:
        answers_file: e.g. ``answers/llava-v1.5-7b-r60.jsonl``.
        suffix: e.g. `RUN_RECORD_SUFFIX`.

    Returns:
        e.g. ``answers/llava-v1.5-7b-r60.run.json`` (the suffix is appended when the
        answers file does not end in ``.jsonl``).
    """
    path = Path(answers_file)
    stem = path.name[: -len(ANSWERS_SUFFIX)] if path.name.endswith(ANSWERS_SUFFIX) else path.name
    return path.with_name(stem + suffix)


def drop_partial_last_line(path: PathLike) -> bool:
    """Cuts an unterminated last line (a write cut short) off a line-oriented file.

    Args:
        path: the file; nothing happens when it does not exist or ends with a newline.

    Returns:
        True if bytes were removed.
    """
    path = Path(path)
    if not path.is_file():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    keep = data.rfind(b"\n") + 1
    logger.warning("%s: dropping an unterminated last line (%d bytes) left by an interrupted write",
                   path, len(data) - keep)
    with open(path, "r+b") as handle:
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def append_lines_durably(path: PathLike, lines: Sequence[str]) -> None:
    """Appends text lines to a file, then flushes and fsyncs it.

    Args:
        path: the file (created if missing).
        lines: lines without their trailing newline.
    """
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())


def _is_json(text: str) -> bool:
    """Whether `text` parses as JSON."""
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


@dataclass
class RunLog:
    """The parsed run-stats log of one answers file.

    Attributes:
        path: the log file.
        header: the header entry, or None for an empty log.
        batches: the batch entries in file order.
        runs: the run entries in file order.
    """

    path: Path
    header: Optional[dict] = None
    batches: List[dict] = field(default_factory=list)
    runs: List[dict] = field(default_factory=list)

    @classmethod
    def read(cls, path: PathLike) -> "RunLog":
        """Reads a log; a missing file gives an empty log.

        An unterminated last line (a write cut short) is ignored with a warning.

        Raises:
            RunRecordError: a complete line is not JSON or not a known entry (file:line).
        """
        log = cls(Path(path))
        if not log.path.is_file():
            return log
        lines = log.path.read_text(encoding="utf-8").split("\n")
        if lines[-1].strip() and not _is_json(lines[-1]):
            logger.warning("%s:%d: ignoring an unterminated last line", log.path, len(lines))
            lines[-1] = ""
        for number, entry in parse_jsonl_lines(lines, log.path, RunRecordError):
            if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in ("header", "batch", "run"):
                raise RunRecordError(f"{log.path}:{number}: expected one of header/batch/run entries")
            kind, value = next(iter(entry.items()))
            if kind == "header":
                if log.header is not None:
                    raise RunRecordError(f"{log.path}:{number}: a second header")
                log.header = value
            else:
                (log.batches if kind == "batch" else log.runs).append(value)
        return log

    def write_header(self, header: dict) -> None:
        """Starts the log with its header (the file must not hold one yet)."""
        if self.header is not None:
            raise RunRecordError(f"{self.path}: the log already has a header")
        append_lines_durably(self.path, [json.dumps({"header": header})])
        self.header = header

    def append_batch(self, batch: dict) -> None:
        """Appends one batch entry durably."""
        append_lines_durably(self.path, [json.dumps({"batch": batch})])
        self.batches.append(batch)

    def append_run(self, run: dict) -> None:
        """Appends one run entry durably."""
        append_lines_durably(self.path, [json.dumps({"run": run})])
        self.runs.append(run)


def _median(values: Iterable[float]) -> Optional[float]:
    values = list(values)
    return float(statistics.median(values)) if values else None


def _sample_arrays(batches: Sequence[dict], num_layers: int, where: Path):
    """Per-sample (num_visual (S,), num_other (S,), keep (S, L), new_tokens (S,)) arrays."""
    num_visual, num_other, keep, new_tokens = [], [], [], []
    for index, batch in enumerate(batches, start=1):
        try:
            num_visual += batch["num_visual"]
            num_other += batch["num_other_tokens"]
            keep += batch["keep_counts"]
            new_tokens += batch["new_tokens"]
        except KeyError as err:
            raise RunRecordError(f"{where}: batch entry {index}: field {err.args[0]!r} is missing") from None
    if not (len(num_visual) == len(num_other) == len(keep) == len(new_tokens)):
        raise RunRecordError(f"{where}: batch entries have per-sample lists of different lengths")
    keep_array = np.asarray(keep, dtype=np.float64).reshape(len(keep), num_layers)
    return (np.asarray(num_visual, dtype=np.float64), np.asarray(num_other, dtype=np.float64),
            keep_array, np.asarray(new_tokens, dtype=np.int64))


def _decode_flops(dims: DecoderDims, num_visual, num_other, keep, new_tokens) -> np.ndarray:
    """Full-convention FLOPs of every sample's decode steps, shape (S,).

    A sample with n new tokens ran n - 1 decode steps (the first token comes from the
    prefill); at step t, layer l's cache holds the tokens that entered layer l in the
    prefill plus t decoded tokens.
    """
    flops = np.zeros(len(new_tokens))
    for s, count in enumerate(new_tokens):
        steps = int(count) - 1
        if steps <= 0:
            continue
        entering = np.concatenate([[num_visual[s]], keep[s, :-1]]) + num_other[s]  # (L,)
        cache = entering[None, :] + np.arange(steps)[:, None]  # (steps, L)
        flops[s] = full_decode_step_flops(dims, cache) * steps
    return flops


def flops_summary(dims: DecoderDims, num_visual, num_other, keep, new_tokens) -> dict:
    """Per-sample FLOPs means of a set of samples, both conventions.

    Args:
        dims: decoder dimensions.
        num_visual: (S,) visual tokens before pruning (0 for text-only samples).
        num_other: (S,) prefix + text tokens.
        keep: (S, L) visual tokens left after each layer.
        new_tokens: (S,) generated tokens.

    Returns:
        The record's ``flops`` section (values None where no sample qualifies).
    """
    summary = dict.fromkeys((
        "paper_prefill", "paper_prefill_unpruned", "paper_reduction_pct", "full_prefill",
        "full_prefill_unpruned", "full_prefill_reduction_pct", "full_decode", "full_total",
    ))
    if len(num_visual) == 0:
        return summary
    unpruned = np.repeat(num_visual[:, None], dims.num_layers, axis=1)
    image = num_visual > 0
    if image.any():
        summary["paper_prefill"] = paper_prefill_flops(dims, keep[image], num_visual[image])
        summary["paper_prefill_unpruned"] = paper_prefill_flops(dims, unpruned[image], num_visual[image])
        summary["paper_reduction_pct"] = paper_reduction(dims, keep[image], num_visual[image])
    summary["full_prefill"] = full_prefill_flops(dims, keep, num_visual, num_other)
    summary["full_prefill_unpruned"] = full_prefill_flops(dims, unpruned, num_visual, num_other)
    summary["full_prefill_reduction_pct"] = full_reduction(dims, keep, num_visual, num_other)
    summary["full_decode"] = float(_decode_flops(dims, num_visual, num_other, keep, new_tokens).mean())
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


def count_lines(path: PathLike) -> int:
    """Non-blank lines of a JSONL file such as an answers or errors file (0 when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return 0
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def errors_file_path(answers_file: PathLike) -> Path:
    """``<answers stem>.errors.jsonl``: the samples a run skipped (see `llava.eval.sample_errors`)."""
    return sidecar_path(answers_file, ERRORS_SUFFIX)


@dataclass(frozen=True)
class SampleCoverage:
    """How many of a run's questions a score covers.

    Attributes:
        answered: the answers scored.
        skipped: the questions the run could not answer (lines of its errors file).
        errors_file: that file, when it lists any.
    """

    answered: int
    skipped: int
    errors_file: Optional[str] = None

    @property
    def total(self) -> int:
        """Questions of the run: answered plus skipped."""
        return self.answered + self.skipped

    def describe(self) -> str:
        """``answered N of M`` and, when some were skipped, how many and where they are listed."""
        text = f"answered {self.answered} of {self.total}"
        if self.skipped:
            text += f" ({self.skipped} skipped, listed in {self.errors_file}; the score is over the answered ones)"
        return text

    def to_dict(self) -> dict:
        """The ``samples`` section of a metrics file."""
        return {"answered": self.answered, "skipped": self.skipped, "total": self.total,
                "errors_file": self.errors_file}


def sample_coverage(answers_file: PathLike) -> SampleCoverage:
    """The coverage of an answers file: its lines, and the skipped samples in its errors file."""
    errors = errors_file_path(answers_file)
    skipped = count_lines(errors)
    return SampleCoverage(answered=count_lines(answers_file), skipped=skipped,
                          errors_file=str(errors) if skipped else None)


def merge_errors_files(answers_file: PathLike, chunk_answers: Sequence[PathLike]) -> Optional[Path]:
    """Concatenates the chunks' errors files, in chunk order, into the merged answers' errors file.

    Returns:
        The merged errors file, or None (and no such file left) when no chunk skipped a sample.
    """
    path = errors_file_path(answers_file)
    chunk_errors = [errors_file_path(chunk) for chunk in chunk_answers]
    text = "".join(errors.read_text(encoding="utf-8") for errors in chunk_errors if errors.is_file())
    if not text.strip():
        path.unlink(missing_ok=True)
        return None
    write_text_atomic(path, text if text.endswith("\n") else text + "\n")
    return path


def summarize(header: dict, batches: Sequence[dict], runs: Sequence[dict], answers_file: PathLike,
              where: Path) -> dict:
    """Builds a run record from a log's entries.

    Args:
        header: the log header (see `llava.eval.eval_common.log_header`).
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
    num_visual, num_other, keep, new_tokens = _sample_arrays(batches, dims.num_layers, where)
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
        },
        "flops": flops_summary(dims, num_visual, num_other, keep, new_tokens),
        "timing": _timing_summary(batches, runs),
        "memory": _memory_summary(runs),
        "device": last_run.get("device"),
        "software": last_run.get("software"),
        "runs": list(runs),
    }


def write_run_record(answers_file: PathLike) -> Optional[Path]:
    """Recomputes the run record of an answers file from its log and writes it atomically.

    Args:
        answers_file: the answers JSONL.

    Returns:
        The record's path, or None when the answers file has no log (nothing measured).

    Raises:
        RunRecordError: an unreadable log.
    """
    log = RunLog.read(sidecar_path(answers_file, RUN_STATS_SUFFIX))
    if log.header is None:
        return None
    record = summarize(log.header, log.batches, log.runs, answers_file, log.path)
    path = sidecar_path(answers_file, RUN_RECORD_SUFFIX)
    write_json_atomic(path, record, indent=1)
    return path


SETTINGS_NOT_COMPARED_ACROSS_CHUNKS = ("chunk_idx",)


def merge_run_records(answers_file: PathLike, chunk_answers: Sequence[PathLike]) -> Path:
    """Writes the run record of a merged answers file from its chunks' logs, and its errors
    file from theirs (`merge_errors_files`), so that its skipped samples are counted.

    Args:
        answers_file: the merged answers (e.g. ``merge.jsonl``).
        chunk_answers: the chunk answers files, in chunk order; chunks that answered
            nothing may have no log.

    Returns:
        The merged record's path.

    Raises:
        RunRecordError: no chunk has a log, or chunks were run with different settings.
    """
    logs = [RunLog.read(sidecar_path(path, RUN_STATS_SUFFIX)) for path in chunk_answers]
    with_header = [log for log in logs if log.header is not None]
    if not with_header:
        raise RunRecordError(f"none of the chunks {[str(p) for p in chunk_answers]} has a {RUN_STATS_SUFFIX} log")
    first = with_header[0]
    reference = {k: v for k, v in first.header["settings"].items() if k not in SETTINGS_NOT_COMPARED_ACROSS_CHUNKS}
    for log in with_header[1:]:
        settings = {k: v for k, v in log.header["settings"].items() if k not in SETTINGS_NOT_COMPARED_ACROSS_CHUNKS}
        differing = sorted(k for k in set(reference) | set(settings) if reference.get(k) != settings.get(k))
        if differing:
            raise RunRecordError(
                f"{log.path} was run with other settings than {first.path}: "
                + "; ".join(f"{k}: {settings.get(k)!r} vs {reference.get(k)!r}" for k in differing)
            )
    header = dict(first.header)
    header["chunk"] = {"count": len(chunk_answers), "merged_from": [str(p) for p in chunk_answers]}
    batches = [batch for log in with_header for batch in log.batches]
    runs = [run for log in with_header for run in log.runs]
    record = summarize(header, batches, runs, answers_file, first.path)
    path = sidecar_path(answers_file, RUN_RECORD_SUFFIX)
    write_json_atomic(path, record, indent=1)
    merge_errors_files(answers_file, chunk_answers)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m llava.eval.run_record merge --answers-file MERGED CHUNK...``; returns the exit
    code (2 after one line on stderr for an unusable log)."""
    parser = argparse.ArgumentParser(prog="python -m llava.eval.run_record", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser("merge", help="write the run record of a merged answers file from its chunks")
    merge.add_argument("--answers-file", required=True, help="the merged answers file (merge.jsonl)")
    merge.add_argument("chunks", nargs="+", help="the chunk answers files, in chunk order")
    args = parser.parse_args(argv)
    try:
        path = merge_run_records(args.answers_file, args.chunks)
    except RunRecordError as err:
        print(f"run_record: error: {err}", file=sys.stderr)
        return 2
    print(f"run record: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
