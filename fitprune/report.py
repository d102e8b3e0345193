"""The paper-style results table: benchmarks × reduction ratios, with FLOPs and relative scores.

    python -m fitprune.report --runs-dir playground/data/eval --output-dir reports/
    python -m fitprune.report --runs-dir playground/shapes/eval --output-dir reports/   # demo-model runs

Building collects, under ``--runs-dir``, every run record ``<name>.run.json`` written by the
generation drivers (chunk records are skipped: their merged record counts) and the metrics
file ``<name>.metrics.json`` beside it, written by ``python -m llava.eval.records.record_metric``
(the benchmark scripts call it after their metric step; server- and judge-scored benchmarks are
recorded by hand with ``--value``). Metrics file (``schema_version`` 1)::

    {"schema_version": 1, "benchmark": "textvqa", "metric": "accuracy", "value": 58.2,
     "samples": {"answered": 4999, "skipped": 1, "total": 5000, "errors_file": ".../<name>.errors.jsonl"}
                or null (no answers file),
     "source": {"log": ..., "pattern": ..., "reduce": ..., "scale": ..., "matches": [...]}
               or {"manual": true},
     "recorded_at": "2024-01-01T00:00:00+0000"}

Every field the report uses is checked (type, finite, range: a score in its metric's range, a
percentage [0, 100] unless `llava.eval.records.metrics_files.score_range` says otherwise; a ratio in
[0, 100); counts non-negative integers). A run whose record or metrics file fails is left out
with one warning line naming the file and the field, and a results.md footnote, so that one
damaged file does not cost the table of the other runs; none usable is exit 2. This module only
reads llava's records (`llava.eval.records`); it writes none of them.

A run that skipped samples (listed in ``<name>.errors.jsonl``) is scored on the answered
ones; ``samples`` says so, and the report's "Skipped samples" column repeats it.

One row per model, policy, recipe file and reduction ratio; one score column per benchmark;
TFLOPs per sample under the paper convention (visual tokens, image samples) and the full
convention (whole prefill); which scores are over fewer samples than the benchmark has
("Skipped samples": answered N of M); which were recorded before their answers file last
changed ("Stale scores", and † in Markdown with a footnote naming the metrics file); and the
relative score: the mean over benchmarks of 100 × score / the same model's unpruned score.
Writes ``results.md``, ``results.csv`` and ``score_vs_flops.png`` (score against
paper-convention FLOPs reduction, one panel per benchmark; needs matplotlib).
"""
from __future__ import annotations

import csv
import io
import logging
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from fitprune.defaults import SHAPES_DIR
from llava.eval.io_utils import write_text_atomic
from llava.eval.driver.output_paths import OutputPathError, check_output_folder, writing_to
from llava.eval.records.metrics_files import ReportError
from llava.eval.records.sidecar_files import RUN_RECORD_SUFFIX
from fitprune.run_collection import RowKey, Run, collect_runs
from llava.utils import OneLineArgumentParser, usage_error

logger = logging.getLogger(__name__)

DEFAULT_RUNS_DIR = "playground/data/eval"
"""Where the eval scripts put a named model's runs (their EVAL_DIR default)."""
DEMO_EVAL_DIR = f"{SHAPES_DIR}/eval"
"""Where they put the demo model's runs (no MODEL_PATH)."""

BENCHMARK_COLUMNS = {
    "vqav2": "VQAv2", "gqa": "GQA", "vizwiz": "VizWiz", "sqa": "SQA-IMG", "textvqa": "TextVQA",
    "pope": "POPE", "mme": "MME", "mmbench": "MMB", "mmbench_cn": "MMB-CN", "seed": "SEED",
    "llavabench": "LLaVA-W", "mmvet": "MM-Vet",
}
"""Benchmark names of the scripts and their column titles, in LLaVA's table order."""





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

    def stale(self, benchmarks: Sequence[str]) -> Optional[str]:
        """``TextVQA; POPE``: the scored benchmarks whose metrics file is older than their answers, or None."""
        return "; ".join(BENCHMARK_COLUMNS.get(b, b) for b in benchmarks
                         if b in self.runs and self.runs[b].stale_metrics is not None) or None

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


STALE_MARK = "†"
"""Follows a Markdown score recorded before its answers file last changed."""


@dataclass
class Table:
    """The report's cells: one header and one list of values per row (None for missing).

    Attributes:
        stale: (row, column) of the scores recorded before their answers file last changed.
        notes: footnote lines (stale metrics files, files left out).
    """

    header: List[str]
    rows: List[List[object]]
    stale: List[Tuple[int, int]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def build_table(runs: Sequence[Run], left_out: Sequence[str] = ()) -> Table:
    """The paper-style table of `runs`; `left_out` (unusable files, one line each) become footnotes."""
    benchmarks = benchmark_order([r.benchmark for r in runs])
    rows = build_rows(runs)
    baselines = {row.key.model: row for row in rows if row.key.ratio == 0}
    header = ["Model", "Policy", "Recipe", "Ratio (%)", "FLOPs reduction, paper (%)", "TFLOPs (paper)",
              "TFLOPs (full prefill)", "Visual tokens after last layer"]
    header += [BENCHMARK_COLUMNS.get(b, b) for b in benchmarks] + ["Skipped samples", "Stale scores", "Rel. (%)"]
    table = Table(header, [])
    for row in rows:
        values: List[object] = [row.key.model, row.key.policy, row.key.recipe, row.key.ratio,
                                row.mean("paper_reduction"), row.mean("paper_tflops"), row.mean("full_tflops"),
                                row.mean("kept_last_layer")]
        for benchmark in benchmarks:
            run = row.runs.get(benchmark)
            if run is not None and run.stale_metrics is not None:
                table.stale.append((len(table.rows), len(values)))
                table.notes.append(f"{STALE_MARK} {run.stale_metrics}: recorded before its answers file last "
                                   "changed; rerun the metric step")
            values.append(row.score(benchmark))
        values += [row.skipped(benchmarks), row.stale(benchmarks)]
        values.append(relative_score(row, baselines.get(row.key.model), benchmarks))
        table.rows.append(values)
    table.notes += [f"Left out: {line}" for line in left_out]
    return table


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
    for r, values in enumerate(table.rows):
        cells = [_markdown_cell(c, v) + (f" {STALE_MARK}" if (r, i) in table.stale else "")
                 for i, (c, v) in enumerate(zip(table.header, values))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "TFLOPs are per sample. Paper convention: the visual tokens' prefill, one FLOP per multiply-add, "
        "averaged over samples with an image. Full convention: the whole prefill (prefix, visual and text "
        "tokens, LM head), two FLOPs per multiply-add. Rel.: mean over the benchmarks of 100 × score / the "
        "same model's unpruned score. Skipped samples: questions a run could not answer (listed in its "
        "<answers>.errors.jsonl); that benchmark's score is over the answered ones only. Stale scores "
        f"({STALE_MARK}): recorded before the answers file last changed (answers added after scoring). –: not run, "
        "not scored, or none skipped.",
    ] + table.notes
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

    A run whose record or metrics file is unusable is left out with a warning line naming the
    file and field, and a footnote in results.md: collecting fifty runs, one damaged file should
    cost its own row, not the other 49 (`fitprune.run_collection`).

    Raises:
        ReportError: no usable run record under `runs_dir`.
    """
    collection = collect_runs(runs_dir)
    runs = collection.runs
    if not runs and collection.left_out:
        raise ReportError(f"none of the {len(collection.left_out)} run records under {runs_dir} is usable "
                          "(see the warnings above)")
    if not runs:
        raise ReportError(f"no run records (*{RUN_RECORD_SUFFIX}) under {runs_dir}; the eval scripts write them "
                          f"beside the answers in their EVAL_DIR: {DEMO_EVAL_DIR} for the demo model (no MODEL_PATH), "
                          f"{DEFAULT_RUNS_DIR} for a named model")
    table = build_table(runs, collection.left_out)
    written = [output_dir / "results.md", output_dir / "results.csv"]
    with writing_to(output_dir):
        write_text_atomic(written[0], to_markdown(table))
        write_text_atomic(written[1], to_csv(table))
        if plot_scores(runs, output_dir / "score_vs_flops.png"):
            written.append(output_dir / "score_vs_flops.png")
    return table, written


# ----------------------------------------------------------------------------- command line


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Builds the report from the flags; returns 0, or 2 after one ``report: error:`` line on
    stderr for bad input."""
    parser = OneLineArgumentParser(prog="python -m fitprune.report", description=__doc__.splitlines()[0],
                                   error_name="report",
                                   epilog="record a score: python -m llava.eval.records.record_metric --help")
    parser.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR,
                        help=f"searched for *.run.json records (the demo model's runs: {DEMO_EVAL_DIR})")
    parser.add_argument("--output-dir", default="reports", help="where results.md/.csv/.png go")
    args = parser.parse_args(argv)
    try:
        check_output_folder(args.output_dir, "--output-dir")
        table, written = build_report(Path(args.runs_dir), Path(args.output_dir))
    except (ReportError, OutputPathError) as err:
        return usage_error("report", err)
    print(to_markdown(table), end="")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
