"""Run records of the generation drivers: what a run cost, written beside its answers.

Beside an answers file ``<name>.jsonl`` a driver keeps two files:

- ``<name>.run-stats.ndjson``: an append-only log, one JSON object per line, flushed and
  fsynced together with the answers so that it survives an interrupted run:

  - ``{"header": {...}}`` once, when the log is created: the settings that change answers
    (compared on resume), the decoder's dimensions, the recipe in use;
  - ``{"batch": {...}}`` after each batch: per sample its resume key, visual tokens before
    pruning, other (prefix + text) tokens, visual tokens entering and left after each layer
    and new tokens; per batch the prefill and decode wall times and the tokens decoded;
  - ``{"run": {...}}`` when a process finishes: device, wall time, peak memory, versions.

- ``<name>.run.json``: the run record, recomputed from the whole log at the end of each
  run (so a resumed run's record covers every answer), or merged from chunk logs by
  ``python -m llava.eval.records.run_record merge --answers-file merge.jsonl CHUNK.jsonl ...``
  (which also concatenates the chunks' ``.errors.jsonl`` into ``merge.errors.jsonl``).

A score over a run with skipped samples covers only the answered ones; `sample_coverage`
says how many of how many (``answered N of M``), for the metric scripts and metrics files.

Run record schema (``schema_version`` 1); FLOPs are per sample, as in `llava.model.pruning.flops`:

    benchmark, run_name, driver, answers_file, question_file, written_at
    model:      path, name, base, dtype, num_visual_tokens, decoder_dims{...}
    pruning:    reduction_ratio (percent), policy, recipe_file, keep_counts,
                achieved_paper, achieved_full (recipe, percent; null when unpruned)
    generation: conv_mode, temperature, top_p, num_beams, max_new_tokens, decoding
    chunk:      index, count (a chunk's own record) or count, merged_from (merged record)
    samples:    answered (lines of the answers file), measured (with stats), with_image
    visual_tokens: initial_mean (the tower's, before any pruning), kept_per_layer_mean[L],
                entered_per_layer_mean[L]   (over samples with an image)
    flops:      paper_prefill, paper_prefill_unpruned, paper_reduction_pct   (image samples;
                visual tokens only, multiply-adds; from the tokens entering and leaving each
                layer, `llava.model.pruning.traced_flops`)
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

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from llava.eval.io_utils import parse_jsonl_lines, write_json_atomic
from llava.eval.records.run_summary import RunRecordError, summarize
from llava.eval.records.sidecar_files import (
    RUN_RECORD_SUFFIX,
    RUN_STATS_SUFFIX,
    PathLike,
    append_lines_durably,
    merge_errors_files,
    sidecar_path,
)
from llava.utils import OneLineArgumentParser, usage_error

logger = logging.getLogger(__name__)


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
            RunRecordError: the file is not UTF-8 text, or a complete line is not JSON or not a
                known entry (file:line).
        """
        log = cls(Path(path))
        if not log.path.is_file():
            return log
        try:
            lines = log.path.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as err:
            raise RunRecordError(f"{log.path}: not a run-stats log (byte {err.start} is not UTF-8 text)") from None
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
    """``python -m llava.eval.records.run_record merge --answers-file MERGED CHUNK...``; returns the exit
    code (2 after one line on stderr for an unusable log)."""
    parser = OneLineArgumentParser(error_name="run_record", prog="python -m llava.eval.records.run_record",
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser("merge", help="write the run record of a merged answers file from its chunks")
    merge.add_argument("--answers-file", required=True, help="the merged answers file (merge.jsonl)")
    merge.add_argument("chunks", nargs="+", help="the chunk answers files, in chunk order")
    args = parser.parse_args(argv)
    try:
        path = merge_run_records(args.answers_file, args.chunks)
    except RunRecordError as err:
        return usage_error("run_record", err)
    print(f"run record: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
