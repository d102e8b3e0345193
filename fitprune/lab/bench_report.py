"""What `python -m fitprune.bench` writes: its BENCHMARKS.md section (accuracy with intervals,
per-kind, referred-cells, latency, depth-probe and score-profile tables), the accuracies as
JSON, and the plot of accuracy against FLOPs removed."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from fitprune.lab.answers import AccuracyReport
from fitprune.lab.bench_methods import METHODS, PROBE_POLICIES, MethodResult
from fitprune.lab.score_profile import ScoreProfile

QUALITY_SCHEMA_VERSION = 1


def section_heading(model_name: str) -> str:
    """The BENCHMARKS.md heading of one model's section."""
    return f"## Pruning quality on {model_name} (python -m fitprune.bench)"


def _with_interval(report: AccuracyReport, kind: Optional[str] = None) -> str:
    accuracy = report.accuracy if kind is None else report.kind_accuracy(kind)
    low, high = report.interval(kind)
    return f"{accuracy:.1f} [{low:.1f}, {high:.1f}]"


def _report_json(report: AccuracyReport) -> dict:
    low, high = report.interval()
    return {"accuracy": round(report.accuracy, 2), "ci95": [round(low, 2), round(high, 2)],
            "correct": report.correct, "total": report.total,
            "per_kind": {kind: round(report.kind_accuracy(kind), 2) for kind in report.per_kind}}


def quality_json(results: Dict[float, List[MethodResult]], reference: Dict[str, AccuracyReport],
                 context: dict) -> dict:
    """The pruning-quality numbers as JSON: policy -> budget -> accuracy (and its interval,
    FLOPs removed, keep counts), plus `reference` ("unpruned", "no_visual_after_layer_0")."""
    policies: Dict[str, Dict[str, dict]] = {}
    for ratio, rows in results.items():
        for row in rows:
            entry = _report_json(row.report)
            entry.update(flops_removed_paper=round(row.baseline.paper_reduction, 2),
                         keep_counts=list(row.baseline.keep_counts), setting=row.baseline.setting)
            if row.referred_kept is not None:
                entry["referred_cells_kept_pct"] = [round(share, 2) for share in row.referred_kept]
            policies.setdefault(row.method, {})[f"{ratio:g}"] = entry
    return {"schema_version": QUALITY_SCHEMA_VERSION,
            **{k: context[k] for k in ("model", "question_file", "questions", "date", "command")},
            **{name: _report_json(report) for name, report in reference.items()},
            "policies": policies}


def format_referred(results: Dict[float, List[MethodResult]], methods: Sequence[str]) -> List[str]:
    """Which patches each method keeps against the oracle's: the share of the questions'
    referred cells alive after layer 1 and after the last layer, as Markdown lines."""
    lines = ["Referred patches kept (% of the cells of the objects each question names, alive after layer 1 / "
             "after the last layer):", "", "| ratio % | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for ratio, rows in results.items():
        if not ratio:
            continue
        by = {r.method: r for r in rows}
        cells = [f"{by[m].referred_kept[1]:.0f} / {by[m].referred_kept[-1]:.0f}" if m in by else "—" for m in methods]
        lines.append(f"| {ratio:g} | " + " | ".join(cells) + " |")
    return lines


def format_probe(probe: Dict[Tuple[int, int], Dict[str, float]]) -> List[str]:
    """The depth-probe table, as Markdown lines."""
    lines = ["Depth probe: every visual token through layer d−1, then the k that each policy ranks highest "
             "(accuracy %):", "", "| d | k | " + " | ".join(PROBE_POLICIES) + " |",
             "|---|---|" + "---|" * len(PROBE_POLICIES)]
    for (depth, keep), row in probe.items():
        lines.append(f"| {depth} | {keep} | " + " | ".join(f"{row[m]:.1f}" for m in PROBE_POLICIES) + " |")
    return lines


def format_profile(profile: ScoreProfile) -> List[str]:
    """The score profile by image row (square grids), as Markdown lines."""
    side = math.isqrt(profile.cross.numel())
    cross, self_score = profile.by_row(side)
    lines = [f"FitPrune's scores at layer {profile.layer} by image row (mean over {profile.samples} test prompts and "
             "the row's patches, ×1000; row 0 is the top, first in the sequence):", "",
             "| row | " + " | ".join(str(r) for r in range(side)) + " |", "|---|" + "---|" * side]
    for name, values in (("cross", cross), ("self", self_score)):
        lines.append(f"| {name} | " + " | ".join(f"{1000 * v:.1f}" for v in values.tolist()) + " |")
    return lines


def format_section(results: Dict[float, List[MethodResult]], context: dict,
                   reference: Dict[str, AccuracyReport],
                   probe: Optional[Dict[Tuple[int, int], Dict[str, float]]] = None,
                   profile: Optional[ScoreProfile] = None) -> str:
    """The BENCHMARKS.md section: setup, accuracy table (95% intervals), per-kind table,
    latency table, depth probe, score profile."""
    methods = [m for m in METHODS if any(r.method == m for rows in results.values() for r in rows)]
    lines = [section_heading(context["model_name"]), ""]
    lines.append(
        f"Model `{context['model']}`, {context['questions']} test questions of `{context['question_file']}` "
        f"(first-token exact match), recipes fitted on `{context['calibration_file']}` "
        f"({context['calibration']}). {context['machine']}; {context['date']}. "
        f"Reproduce: `{context['command']}`."
    )
    lines.append("")
    lines.append("FLOPs are the paper's convention (visual tokens only). FastV and uniform are matched to remove at "
                 "least what FitPrune's recipe removes; random" + (" and the oracle follow" if "oracle" in methods
                                                                      else " follows") +
                 " FitPrune's keep counts. Accuracy % with its 95% Wilson interval in brackets.")
    lines.append("")
    unpruned, blind = reference["unpruned"], reference["no_visual_after_layer_0"]
    lines.append(f"Unpruned: {_with_interval(unpruned)}; every visual token dropped after layer 0: "
                 f"{_with_interval(blind)}.")
    lines.append("")
    header = {"fitprune": "FitPrune", "fastv": "FastV (setting, FLOPs removed %)", "random": "random",
              "uniform": "uniform (FLOPs removed %)", "oracle": "oracle"}
    lines.append("| ratio % | FLOPs removed % (FitPrune) | visual tokens after last layer | "
                 + " | ".join(header[m] for m in methods) + " |")
    lines.append("|---|---|---|" + "---|" * len(methods))
    for ratio, rows in results.items():
        by = {r.method: r for r in rows}

        def cell(method: str) -> str:
            if method not in by:
                return "—"
            result = by[method]
            text = _with_interval(result.report)
            if ratio and method in ("fastv", "uniform"):
                setting = f"{result.baseline.setting}, " if method == "fastv" else ""
                text += f" ({setting}{result.baseline.paper_reduction:.1f})"
            return text

        lines.append(f"| {ratio:g} | {by['fitprune'].baseline.paper_reduction:.1f} | "
                     f"{by['fitprune'].baseline.keep_counts[-1]} | " + " | ".join(cell(m) for m in methods) + " |")
    lines.append("")
    kinds = list(unpruned.per_kind)
    if len(kinds) > 1:
        lines.append("Per question kind (accuracy %; questions per kind: "
                     + ", ".join(f"{k} {unpruned.per_kind[k][1]}" for k in kinds) + "):")
        lines.append("")
        lines.append("| ratio % | method | " + " | ".join(kinds) + " |")
        lines.append("|---|---|" + "---|" * len(kinds))
        lines.append("| — | no visual after layer 0 | " + " | ".join(f"{blind.kind_accuracy(k):.1f}" for k in kinds)
                     + " |")
        for ratio, rows in results.items():
            for row in rows if ratio else rows[:1]:
                name = row.method if ratio else "unpruned"
                lines.append(f"| {ratio:g} | {name} | "
                             + " | ".join(f"{row.report.kind_accuracy(k):.1f}" for k in kinds) + " |")
        lines.append("")
    if any(r.referred_kept is not None for rows in results.values() for r in rows):
        lines.extend(format_referred(results, methods))
        lines.append("")
    lines.append("Median one-sample prefill latency, ms (CPU, shared machine: read as rough):")
    lines.append("")
    lines.append("| ratio % | " + " | ".join(methods) + " |")
    lines.append("|---|" + "---|" * len(methods))
    for ratio, rows in results.items():
        by = {r.method: r for r in rows}
        lines.append(f"| {ratio:g} | " + " | ".join(f"{by[m].latency_ms:.1f}" if m in by else "—" for m in methods)
                     + " |")
    lines.append("")
    if probe:
        lines.extend(format_probe(probe))
        lines.append("")
    if profile is not None:
        lines.extend(format_profile(profile))
        lines.append("")
    lines.append(f"![accuracy vs FLOPs removed]({context['plot']})" if context.get("plot") else "")
    return "\n".join(lines).rstrip("\n") + "\n"


def plot_results(results: Dict[float, List[MethodResult]], path: Path, title: str) -> None:
    """Accuracy against paper-convention FLOPs removed, one line per method, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in METHODS:
        points = [(r.baseline.paper_reduction, r.accuracy) for rows in results.values() for r in rows
                  if r.method == method]
        if points:
            ax.plot(*zip(*points), marker="o", label=method)
    ax.set_xlabel("FLOPs removed, % (paper convention)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
