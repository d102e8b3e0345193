"""The paper-style results table: benchmarks × reduction ratios, with FLOPs and relative scores.

    python -m fitprune.report --runs-dir playground/data/eval --output-dir reports/
    python -m fitprune.report --runs-dir playground/shapes/eval --output-dir reports/   # demo-model runs
    python -m fitprune.report record-metric --answers-file ANSWERS.jsonl --metric accuracy --value 58.2
    python -m fitprune.report record-metric --answers-file ANSWERS.jsonl --metric accuracy \\
        --from-log ANSWERS.metric.log --pattern 'Accuracy: ([0-9.]+)%' [--reduce last] [--scale 1]

Building collects, under ``--runs-dir``, every run record ``<name>.run.json`` written by the
generation drivers (chunk records are skipped: their merged record counts) and the metrics
file ``<name>.metrics.json`` beside it, written by ``record-metric`` (the benchmark scripts
call it after their metric step; server- and judge-scored benchmarks are recorded by hand
with ``--value``). Metrics file (``schema_version`` 1)::

    {"schema_version": 1, "benchmark": "textvqa", "metric": "accuracy", "value": 58.2,
     "samples": {"answered": 4999, "skipped": 1, "total": 5000, "errors_file": ".../<name>.errors.jsonl"}
                or null (no answers file),
     "source": {"log": ..., "pattern": ..., "reduce": ..., "scale": ..., "matches": [...]}
               or {"manual": true},
     "recorded_at": "2024-01-01T00:00:00+0000"}

A run that skipped samples (listed in ``<name>.errors.jsonl``) is scored on the answered
ones; ``samples`` says so, and the report's "Skipped samples" column repeats it.

One row per model, policy, recipe file and reduction ratio; one score column per benchmark;
TFLOPs per sample under the paper convention (visual tokens, image samples) and the full
convention (whole prefill); which scores are over fewer samples than the benchmark has
("Skipped samples": answered N of M); and the relative score: the mean over benchmarks of
100 × score / the same model's unpruned score. Writes ``results.md``, ``results.csv`` and
``score_vs_flops.png`` (score against paper-convention FLOPs reduction, one panel per
benchmark; needs matplotlib).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from fitprune.defaults import SHAPES_DIR
from llava.eval.io_utils import write_json_atomic, write_text_atomic
from llava.eval.run_record import RUN_RECORD_SUFFIX, SampleCoverage, sample_coverage, sidecar_path

logger = logging.getLogger(__name__)

DEFAULT_RUNS_DIR = "playground/data/eval"
"""Where the eval scripts put a named model's runs (their EVAL_DIR default)."""
DEMO_EVAL_DIR = f"{SHAPES_DIR}/eval"
"""Where they put the demo model's runs (no MODEL_PATH)."""
METRICS_SUFFIX = ".metrics.json"
METRICS_SCHEMA_VERSION = 1
TERA = 1e12

BENCHMARK_COLUMNS = {
    "vqav2": "VQAv2", "gqa": "GQA", "vizwiz": "VizWiz", "sqa": "SQA-IMG", "textvqa": "TextVQA",
    "pope": "POPE", "mme": "MME", "mmbench": "MMB", "mmbench_cn": "MMB-CN", "seed": "SEED",
    "llavabench": "LLaVA-W", "mmvet": "MM-Vet",
}
"""Benchmark names of the scripts and their column titles, in LLaVA's table order."""

REDUCERS = {
    "first": lambda values: values[0],
    "last": lambda values: values[-1],
    "mean": statistics.fmean,
}


class ReportError(ValueError):
    """A run record or metrics file that cannot be used; the message names the file and field."""


# ----------------------------------------------------------------------------- metrics files


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
        benchmark = _load_json(record_path).get("benchmark")
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


# ----------------------------------------------------------------------------- collecting runs


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object")
    return data


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
        metrics = _load_json(metrics_file)
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
    records = {path: _load_json(path) for path in sorted(runs_dir.rglob("*" + RUN_RECORD_SUFFIX))}
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


# ----------------------------------------------------------------------------- the table


@dataclass
class Row:
    """One table row: a model at one ratio with one recipe, and its runs by benchmark."""

    key: RowKey
    runs: Dict[str, Run] = field(default_factory=dict)

    def mean(self, attribute: str) -> Optional[float]:
        """Mean of a run attribute over the row's runs that have it."""
        values = [getattr(r, attribute) for r in self.runs.values() if getattr(r, attribute) is not None]
        return statistics.fmean(values) if values else None

    def score(self, benchmark: str) -> Optional[float]:
        """The row's score on a benchmark, or None."""
        run = self.runs.get(benchmark)
        return run.score if run is not None else None

    def skipped(self, benchmarks: Sequence[str]) -> Optional[str]:
        """``POPE: answered 65 of 66; ...`` for the scored runs that skipped samples, or None."""
        parts = []
        for benchmark in benchmarks:
            run = self.runs.get(benchmark)
            samples = (run.samples or {}) if run is not None and run.score is not None else {}
            if samples.get("skipped"):
                parts.append(f"{BENCHMARK_COLUMNS.get(benchmark, benchmark)}: answered {samples['answered']} "
                             f"of {samples['total']}")
        return "; ".join(parts) or None


def benchmark_order(benchmarks: Sequence[str]) -> List[str]:
    """LLaVA's table order for known benchmarks, then the others alphabetically."""
    known = [b for b in BENCHMARK_COLUMNS if b in benchmarks]
    return known + sorted(b for b in set(benchmarks) if b not in BENCHMARK_COLUMNS)


def build_rows(runs: Sequence[Run]) -> List[Row]:
    """Runs grouped into rows, sorted by model, policy, recipe and ratio."""
    rows: Dict[RowKey, Row] = {}
    for run in runs:
        rows.setdefault(run.key, Row(run.key)).runs[run.benchmark] = run
    return [rows[k] for k in sorted(rows, key=lambda k: (k.model, k.policy != "none", k.policy, k.recipe, k.ratio))]


def relative_score(row: Row, baseline: Optional[Row], benchmarks: Sequence[str]) -> Optional[float]:
    """Mean over benchmarks scored in both rows of 100 × score / baseline score (None if none)."""
    if baseline is None:
        return None
    ratios = [100.0 * row.score(b) / baseline.score(b) for b in benchmarks
              if row.score(b) is not None and baseline.score(b)]
    return statistics.fmean(ratios) if ratios else None


@dataclass
class Table:
    """The report's cells: one header and one list of values per row (None for missing)."""

    header: List[str]
    rows: List[List[object]]


def build_table(runs: Sequence[Run]) -> Table:
    """The paper-style table of `runs`."""
    benchmarks = benchmark_order([r.benchmark for r in runs])
    rows = build_rows(runs)
    baselines = {row.key.model: row for row in rows if row.key.ratio == 0}
    header = ["Model", "Policy", "Recipe", "Ratio (%)", "FLOPs reduction, paper (%)", "TFLOPs (paper)",
              "TFLOPs (full prefill)", "Visual tokens after last layer"]
    header += [BENCHMARK_COLUMNS.get(b, b) for b in benchmarks] + ["Skipped samples", "Rel. (%)"]
    cells = []
    for row in rows:
        values: List[object] = [row.key.model, row.key.policy, row.key.recipe, row.key.ratio,
                                row.mean("paper_reduction"), row.mean("paper_tflops"), row.mean("full_tflops"),
                                row.mean("kept_last_layer")]
        values += [row.score(b) for b in benchmarks]
        values.append(row.skipped(benchmarks))
        values.append(relative_score(row, baselines.get(row.key.model), benchmarks))
        cells.append(values)
    return Table(header, cells)


MARKDOWN_FORMATS = {"Ratio (%)": "{:g}", "FLOPs reduction, paper (%)": "{:.1f}", "TFLOPs (paper)": "{:.3f}",
                    "TFLOPs (full prefill)": "{:.3f}", "Visual tokens after last layer": "{:.0f}"}
"""Cell formats of the Markdown table; scores and the relative score use one decimal."""


def _markdown_cell(column: str, value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return MARKDOWN_FORMATS.get(column, "{:.1f}").format(value)
    return str(value)


def to_markdown(table: Table) -> str:
    """The table in Markdown, with a note on the FLOPs conventions."""
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    for values in table.rows:
        lines.append("| " + " | ".join(_markdown_cell(c, v) for c, v in zip(table.header, values)) + " |")
    lines += [
        "",
        "TFLOPs are per sample. Paper convention: the visual tokens' prefill, one FLOP per multiply-add, "
        "averaged over samples with an image. Full convention: the whole prefill (prefix, visual and text "
        "tokens, LM head), two FLOPs per multiply-add. Rel.: mean over the benchmarks of 100 × score / the "
        "same model's unpruned score. Skipped samples: questions a run could not answer (listed in its "
        "<answers>.errors.jsonl); that benchmark's score is over the answered ones only. –: not run, not "
        "scored, or none skipped.",
    ]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """The table as CSV, numbers unrounded, missing cells empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.header)
    for values in table.rows:
        writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in values])
    return buffer.getvalue()


def _score_series(runs: Sequence[Run]) -> Dict[str, List[Tuple[float, float]]]:
    """(FLOPs reduction, score) points of one benchmark: a line per model and pruning
    (policy, recipe), each starting from the model's unpruned point."""
    baselines: Dict[str, List[Tuple[float, float]]] = {}
    pruned: Dict[Tuple[str, str, str], List[Tuple[float, float]]] = {}
    for run in runs:
        point = (run.paper_reduction or 0.0, run.score)
        if run.key.ratio == 0:
            baselines.setdefault(run.key.model, []).append(point)
        else:
            pruned.setdefault((run.key.model, run.key.policy, run.key.recipe), []).append(point)
    series = {f"{model} {policy} {recipe}": sorted(baselines.get(model, []) + points)
              for (model, policy, recipe), points in sorted(pruned.items())}
    for model, points in baselines.items():
        if not any(key[0] == model for key in pruned):
            series[f"{model} unpruned"] = points
    return series


def plot_scores(runs: Sequence[Run], path: Path) -> bool:
    """Score against paper-convention FLOPs reduction, one panel per benchmark.

    Returns:
        False (nothing written) when matplotlib is missing or no run has a score.
    """
    scored = [r for r in runs if r.score is not None]
    if not scored:
        return False
    try:
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    benchmarks = benchmark_order([r.benchmark for r in scored])
    columns = min(4, len(benchmarks))
    rows = -(-len(benchmarks) // columns)
    figure = Figure(figsize=(4 * columns, 3.2 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis, benchmark in zip(axes.flat, benchmarks):
        for label, points in _score_series([r for r in scored if r.benchmark == benchmark]).items():
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        axis.set_title(BENCHMARK_COLUMNS.get(benchmark, benchmark))
        axis.set_xlim(-2, 100)
        axis.set_xlabel("FLOPs reduction, paper convention (%)")
        axis.set_ylabel("score")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(benchmarks):]:
        axis.axis("off")
    axes.flat[0].legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return True


def build_report(runs_dir: Path, output_dir: Path) -> Tuple[Table, List[Path]]:
    """Collects the runs and writes results.md, results.csv and score_vs_flops.png.

    Args:
        runs_dir: searched recursively for run records.
        output_dir: where the report goes (created).

    Returns:
        The table and the files written.

    Raises:
        ReportError: no run record under `runs_dir`, or an unreadable one.
    """
    runs = collect_runs(runs_dir)
    if not runs:
        raise ReportError(f"no run records (*{RUN_RECORD_SUFFIX}) under {runs_dir}; the eval scripts write them "
                          f"beside the answers in their EVAL_DIR: {DEMO_EVAL_DIR} for the demo model (no MODEL_PATH), "
                          f"{DEFAULT_RUNS_DIR} for a named model")
    table = build_table(runs)
    written = [output_dir / "results.md", output_dir / "results.csv"]
    write_text_atomic(written[0], to_markdown(table))
    write_text_atomic(written[1], to_csv(table))
    if plot_scores(runs, output_dir / "score_vs_flops.png"):
        written.append(output_dir / "score_vs_flops.png")
    return table, written


# ----------------------------------------------------------------------------- command line


def _record_metric_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m fitprune.report record-metric",
                                     description="Stores a benchmark score beside its answers file.")
    parser.add_argument("--answers-file", required=True, help="the answers JSONL the score is for")
    parser.add_argument("--benchmark", default=None, help="default: from the run record beside the answers")
    parser.add_argument("--metric", default="score", help="the score's name, e.g. accuracy")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--value", type=float, help="the score itself (e.g. from an evaluation server)")
    source.add_argument("--from-log", help="a metric command's output to parse with --pattern")
    parser.add_argument("--pattern", help="regular expression whose first group is the score (with --from-log)")
    parser.add_argument("--reduce", choices=sorted(REDUCERS), default="last", help="over several matches")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the parsed value")
    args = parser.parse_args(argv)
    try:
        if args.value is not None:
            value, source_info = args.value, {"manual": True}
        else:
            if not args.pattern:
                parser.error("--from-log needs --pattern")
            log = Path(args.from_log)
            if not log.is_file():
                raise ReportError(f"{log}: metric log does not exist")
            value, matches = parse_metric(log.read_text(encoding="utf-8"), args.pattern, args.reduce, args.scale)
            source_info = {"log": str(log), "pattern": args.pattern, "reduce": args.reduce, "scale": args.scale,
                           "matches": matches}
        path, coverage = record_metric(args.answers_file, args.metric, value, args.benchmark, source_info)
    except ReportError as err:
        print(f"record-metric: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.metric} = {value:g} -> {path}" + (f"; {coverage.describe()}" if coverage else ""))
    return 0


def _build_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m fitprune.report", description=__doc__.splitlines()[0],
                                     epilog="record a score: python -m fitprune.report record-metric --help")
    parser.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR,
                        help=f"searched for *.run.json records (the demo model's runs: {DEMO_EVAL_DIR})")
    parser.add_argument("--output-dir", default="reports", help="where results.md/.csv/.png go")
    args = parser.parse_args(argv)
    try:
        table, written = build_report(Path(args.runs_dir), Path(args.output_dir))
    except ReportError as err:
        print(f"report: error: {err}", file=sys.stderr)
        return 2
    print(to_markdown(table), end="")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``record-metric ...`` records a score; anything else builds the report. Returns the exit
    code: 0, or 2 after one ``error:`` line on stderr for bad input (as argparse)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "record-metric":
        return _record_metric_main(argv[1:])
    return _build_main(argv)


if __name__ == "__main__":
    sys.exit(main())
