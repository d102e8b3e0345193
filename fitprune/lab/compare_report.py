"""The comparison's outputs: paired statistics against FitPrune, the JSON (schema 2), the
BENCHMARKS.md section and the plot. See `fitprune.lab.compare` for what was run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fitprune.lab.answers import wilson_interval
from fitprune.lab.method_runs import Budget, MethodRun
from fitprune.lab.paired import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, minimal_detectable_difference, paired_bootstrap
from llava.model.pruning.policies import METHOD_LABELS

QUALITY_SCHEMA_VERSION = 2
REFERENCE = "fitprune"
EXTRA_LABELS = {"uniform": "uniform (FitPrune's score)", "oracle": "oracle (referred cells first)"}

Results = Dict[Budget, Dict[str, MethodRun]]


def label(method: str) -> str:
    """How tables name a method."""
    return METHOD_LABELS.get(method, EXTRA_LABELS.get(method, method))


def _points(value: float) -> float:
    return round(value, 2)


def _kind_mask(run: MethodRun, kind: str) -> np.ndarray:
    return np.array([k == kind for k in run.kinds])


def method_entry(run: MethodRun, reference: Optional[MethodRun]) -> dict:
    """One method at one budget as JSON: accuracy with its Wilson interval, the paired difference
    against `reference` (bootstrap interval, McNemar p), per kind, FLOPs removed, tokens in and out."""
    correct, total = int(run.hits.sum()), int(run.hits.size)
    entry = {"accuracy": _points(run.accuracy), "ci95": [_points(x) for x in wilson_interval(correct, total)],
             "correct": correct, "total": total, "setting": run.setting,
             "flops_removed_paper": _points(run.flops_paper), "flops_removed_full": _points(run.flops_full),
             "visual_tokens_entering": [round(x, 2) for x in run.entering],
             "visual_tokens_leaving": [round(x, 2) for x in run.leaving], "per_kind": {}}
    if reference is not None:
        paired = paired_bootstrap(run.hits, reference.hits)
        entry.update(difference_vs_fitprune=_points(paired.difference),
                     difference_ci95=[_points(paired.low), _points(paired.high)],
                     mcnemar_p=round(paired.p_value, 4), discordant_share=round(paired.discordant_share, 4))
    for kind in sorted(set(run.kinds)):
        mask = _kind_mask(run, kind)
        kind_entry = {"accuracy": _points(100 * float(run.hits[mask].mean())), "total": int(mask.sum())}
        if reference is not None:
            paired = paired_bootstrap(run.hits[mask], reference.hits[mask])
            kind_entry.update(difference_vs_fitprune=_points(paired.difference),
                              difference_ci95=[_points(paired.low), _points(paired.high)])
        entry["per_kind"][kind] = kind_entry
    return entry


def detectable(results: Results) -> Tuple[float, float, int]:
    """(median discordance share against FitPrune over every pair, the difference in points a
    McNemar test detects at 80% power with it, questions)."""
    shares, total = [], 0
    for row in results.values():
        reference = row.get(REFERENCE)
        for method, run in row.items():
            if reference is not None and method != REFERENCE:
                shares.append(float(np.mean(run.hits != reference.hits)))
                total = run.hits.size
    share = float(np.median(shares)) if shares else 0.0
    return share, minimal_detectable_difference(share, max(total, 1)), total


def quality_json(results: Results, unpruned: MethodRun, blind: MethodRun, context: dict,
                 skipped: Dict[Tuple[str, str], str]) -> dict:
    """One model's comparison: method -> budget label -> `method_entry`."""
    methods: Dict[str, Dict[str, dict]] = {}
    for budget, row in results.items():
        for method, run in row.items():
            reference = row.get(REFERENCE) if method != REFERENCE else None
            methods.setdefault(method, {})[budget.label] = method_entry(run, reference)
    share, mdd, total = detectable(results)
    return {**context, "unpruned": method_entry(unpruned, None), "no_visual_after_layer_0": method_entry(blind, None),
            "statistics": {"interval": "Wilson 95% for accuracy; paired percentile bootstrap 95% for differences "
                                       f"({BOOTSTRAP_RESAMPLES} resamples of the questions, seed {BOOTSTRAP_SEED}); "
                                       "exact two-sided McNemar p",
                           "median_discordant_share": round(share, 4),
                           "detectable_difference_points_80pct_power": round(mdd, 2), "questions": total},
            "skipped": {f"{m} @ {b}": why for (b, m), why in skipped.items()},
            "methods": methods}


def write_quality_json(path: Path, model_name: str, entry: dict) -> None:
    """Writes `entry` as `models[model_name]` of the schema-2 file at `path`, keeping other models'."""
    data = {}
    if path.is_file():
        data = json.loads(path.read_text())
    if data.get("schema_version") != QUALITY_SCHEMA_VERSION:
        data = {"schema_version": QUALITY_SCHEMA_VERSION,
                "layout": "models -> model -> methods -> method -> budget ('70%' matched FLOPs, or '192 tokens' "
                          "the literature's row) -> accuracy, ci95, difference_vs_fitprune, difference_ci95, "
                          "flops_removed_paper, flops_removed_full, visual_tokens_entering/leaving per layer",
                "models": {}}
    data["models"][model_name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def _cell(run: MethodRun, reference: Optional[MethodRun]) -> str:
    low, high = wilson_interval(int(run.hits.sum()), run.hits.size)
    text = f"{run.accuracy:.1f} [{low:.0f}, {high:.0f}]"
    if reference is not None and run is not reference:
        paired = paired_bootstrap(run.hits, reference.hits)
        text += f" Δ {paired.difference:+.1f} [{paired.low:+.1f}, {paired.high:+.1f}]"
    return text + f" · {run.flops_paper:.0f}/{run.flops_full:.0f}"


def format_tables(results: Results, methods: Sequence[str]) -> List[str]:
    """Markdown: one table per budget kind, methods as rows, budgets as columns."""
    lines = []
    for kind, budgets in (("matched FLOPs budgets", [b for b in results if b.tokens is None]),
                          ("the literature's token rows", [b for b in results if b.tokens is not None])):
        if not budgets:
            continue
        lines += [f"Accuracy % [95% Wilson] Δ vs FitPrune, points [paired bootstrap 95%] · FLOPs removed % "
                  f"paper/full — {kind}:", "",
                  "| method | " + " | ".join(b.label for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
        for method in methods:
            cells = []
            for budget in budgets:
                run = results[budget].get(method)
                cells.append("—" if run is None else _cell(run, results[budget].get(REFERENCE)))
            lines.append(f"| {label(method)} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def format_kinds(results: Results, methods: Sequence[str]) -> List[str]:
    """Markdown: per question kind, each method's difference from FitPrune at every budget."""
    first = next(iter(next(iter(results.values())).values()))
    kinds = sorted(set(first.kinds))
    lines = ["Per question kind: Δ vs FitPrune, points [paired bootstrap 95%]:", "",
             "| budget | method | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
    for budget, row in results.items():
        reference = row.get(REFERENCE)
        for method in methods:
            run = row.get(method)
            if run is None or reference is None or method == REFERENCE:
                continue
            cells = []
            for kind in kinds:
                mask = _kind_mask(run, kind)
                paired = paired_bootstrap(run.hits[mask], reference.hits[mask])
                cells.append(f"{paired.difference:+.1f} [{paired.low:+.0f}, {paired.high:+.0f}]")
            lines.append(f"| {budget.label} | {label(method)} | " + " | ".join(cells) + " |")
    return lines + [""]


def format_section(heading: str, results: Results, methods: Sequence[str], unpruned: MethodRun, blind: MethodRun,
                   context: dict, skipped: Dict[Tuple[str, str], str], plot: Optional[str]) -> str:
    """The BENCHMARKS.md section of one model."""
    share, mdd, total = detectable(results)
    lines = [heading, "",
             f"Model `{context['model']}`, {total} questions of {', '.join(f'`{q}`' for q in context['question_files'])} "
             f"(first-token exact match). {context['machine']}; {context['date']}; {context['wall']}. "
             f"Reproduce: `{context['command']}`.", "",
             f"Unpruned: {unpruned.accuracy:.1f}%; every visual token dropped after layer 0: {blind.accuracy:.1f}%. "
             "Matched rows: every method removes at least the budget's paper-convention FLOPs (FitPrune, random, "
             "the oracle and the recipe+ variants follow the model's FitPrune recipe; FastV and uniform are matched "
             "to what it removes; DART, DivPrune, PyramidDrop, SparseVLM (drop-only) and VisionZip solve their own "
             "schedule). Token rows: 192/128/64 of 576 scaled to this model's "
             f"{context['num_visual']} tokens, each method as its paper states the count (module docstring of "
             "`fitprune.lab.method_runs`; this project's variants and uniform run at matched FLOPs only), so FLOPs "
             "differ: read them.", "",
             f"Statistics: differences are paired on the same questions (bootstrap over questions, "
             f"{BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}). The median share of questions on which a "
             f"method and FitPrune disagree is {100 * share:.1f}%, so with {total} questions a McNemar test detects "
             f"a difference of about {mdd:.1f} points with 80% power (5% two-sided).", ""]
    lines += format_tables(results, methods)
    if skipped:
        lines += ["Not run: " + "; ".join(f"{label(m)} at {b}: {why}" for (b, m), why in skipped.items()), ""]
    lines += format_kinds(results, methods)
    if plot:
        lines.append(f"![accuracy vs FLOPs removed, every method]({plot})")
    return "\n".join(lines).rstrip("\n") + "\n"


def plot_comparison(results: Results, methods: Sequence[str], unpruned: MethodRun, path: Path, title: str) -> None:
    """Accuracy against paper-convention FLOPs removed (matched rows), one line per method; the
    oracle and random dashed as the bounds, unpruned as a horizontal line. PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5))
    colours = plt.get_cmap("tab20").colors
    bounds = {"oracle": "black", "random": "dimgrey"}
    for index, method in enumerate(methods):
        points = sorted((row[method].flops_paper, row[method].accuracy) for budget, row in results.items()
                        if budget.tokens is None and method in row)
        if not points:
            continue
        ax.plot(*zip(*points), marker="osD^v<>pPXh*d8"[index % 14], linestyle="--" if method in bounds else "-",
                linewidth=2.5 if method == REFERENCE else 1.2, color=bounds.get(method, colours[(2 * index) % 20 + index // 10]),
                label=label(method).replace(" (this project's variant)", " (variant)"))
    ax.axhline(unpruned.accuracy, color="grey", linestyle=":", label="unpruned")
    ax.set_xlabel("FLOPs removed, % (paper convention)")
    ax.set_ylabel("accuracy, %")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
