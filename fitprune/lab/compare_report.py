"""The comparison's outputs: paired statistics against FitPrune, the JSON (schema 2), the
BENCHMARKS.md section and the plot. See `fitprune.lab.compare` for what was run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fitprune.lab.answers import wilson_interval
from fitprune.lab.method_runs import LITERATURE_VISUAL, Budget, MethodRun
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


def _budgets(entry: dict) -> List[str]:
    """The entry's budget labels in run order."""
    labels: List[str] = []
    for budgets in entry["methods"].values():
        labels += [b for b in budgets if b not in labels]
    return labels


def _cell(result: dict) -> str:
    low, high = result["ci95"]
    text = f"{result['accuracy']:.1f} [{low:.0f}, {high:.0f}]"
    if "difference_vs_fitprune" in result:
        d_low, d_high = result["difference_ci95"]
        text += f" Δ {result['difference_vs_fitprune']:+.1f} [{d_low:+.1f}, {d_high:+.1f}]"
    return text + f" · {result['flops_removed_paper']:.0f}/{result['flops_removed_full']:.0f}"


def format_tables(entry: dict) -> List[str]:
    """Markdown: one table per budget kind (matched FLOPs, token rows), methods as rows."""
    lines = []
    labels = _budgets(entry)
    for kind, budgets in (("matched FLOPs budgets", [b for b in labels if b.endswith("%")]),
                          ("the literature's token rows", [b for b in labels if b.endswith("tokens")])):
        methods = [m for m, results in entry["methods"].items() if any(b in results for b in budgets)]
        if not budgets:
            continue
        lines += [f"Accuracy % [95% Wilson] Δ vs FitPrune, points [paired bootstrap 95%] · FLOPs removed % "
                  f"paper/full — {kind}:", "",
                  "| method | " + " | ".join(budgets) + " |", "|---|" + "---|" * len(budgets)]
        for method in methods:
            results = entry["methods"][method]
            lines.append(f"| {label(method)} | " + " | ".join(_cell(results[b]) if b in results else "—"
                                                            for b in budgets) + " |")
        lines.append("")
    return lines


def format_kinds(entry: dict) -> List[str]:
    """Markdown: per question kind, each method's difference from FitPrune at every budget."""
    kinds = sorted(entry["unpruned"]["per_kind"])
    lines = ["Per question kind: Δ vs FitPrune, points [paired bootstrap 95%]:", "",
             "| budget | method | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
    for budget in _budgets(entry):
        for method, results in entry["methods"].items():
            per_kind = results.get(budget, {}).get("per_kind", {})
            if not per_kind or "difference_vs_fitprune" not in next(iter(per_kind.values())):
                continue
            cells = [f"{per_kind[k]['difference_vs_fitprune']:+.1f} [{per_kind[k]['difference_ci95'][0]:+.0f}, "
                     f"{per_kind[k]['difference_ci95'][1]:+.0f}]" for k in kinds]
            lines.append(f"| {budget} | {label(method)} | " + " | ".join(cells) + " |")
    return lines + [""]


def format_section(heading: str, entry: dict, plot: Optional[str]) -> str:
    """The BENCHMARKS.md section of one model, from its `quality_json` entry."""
    stats = entry["statistics"]
    files = ", ".join(f"`{q}`" for q in entry["question_files"])
    lines = [heading, "",
             f"Model `{entry['model']}`, {stats['questions']} questions of {files} (first-token exact match). "
             f"{entry['machine']}; {entry['date']}; {entry['wall']}. Reproduce: `{entry['command']}`.", "",
             f"Unpruned: {entry['unpruned']['accuracy']:.1f}%; every visual token dropped after layer 0: "
             f"{entry['no_visual_after_layer_0']['accuracy']:.1f}%. Matched rows: every method removes at least the "
             "budget's paper-convention FLOPs (FitPrune, random, the oracle and the recipe+ variants follow the "
             "model's FitPrune recipe; FastV and uniform are matched to what it removes; DART, DivPrune, PyramidDrop, "
             "SparseVLM (with and without recycling) and VisionZip solve their own schedule). Token rows: "
             f"192/128/64 of {LITERATURE_VISUAL} scaled to "
             f"this model's {entry['num_visual']} tokens, each method as its paper states the count (FitPrune, random "
             "and the oracle: the recipe nearest the FLOPs of keeping that count in every layer; module docstring of "
             "`fitprune.lab.method_runs`); this project's variants and uniform run at matched FLOPs only. FLOPs "
             "differ within a token row: read them.", "",
             f"Statistics: {stats['interval']}. The median share of questions on which a method and FitPrune "
             f"disagree is {100 * stats['median_discordant_share']:.1f}%, so with {stats['questions']} questions a "
             f"McNemar test detects a difference of about {stats['detectable_difference_points_80pct_power']:.1f} "
             "points with 80% power (5% two-sided).", ""]
    lines += format_tables(entry)
    if entry["skipped"]:
        skipped = [(key.split(" @ "), why) for key, why in entry["skipped"].items()]
        lines += ["Not run: " + "; ".join(f"{label(method)} at {budget}: {why}" for (method, budget), why in skipped), ""]
    lines += format_kinds(entry)
    if plot:
        lines.append(f"![accuracy vs FLOPs removed, every method]({plot})")
    return "\n".join(lines).rstrip("\n") + "\n"


def plot_comparison(entry: dict, path: Path, title: str) -> None:
    """Accuracy against paper-convention FLOPs removed (matched budgets), one line per method; the
    oracle and random dashed as the bounds, unpruned as a horizontal line. PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5))
    palette = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (14, 15)]  # greys are the bounds'
    colours = palette[0::2] + palette[1::2]
    bounds = {"oracle": "black", "random": "dimgrey"}
    for index, (method, results) in enumerate(entry["methods"].items()):
        points = sorted((r["flops_removed_paper"], r["accuracy"]) for b, r in results.items() if b.endswith("%"))
        if not points:
            continue
        ax.plot(*zip(*points), marker="osD^v<>pPXh*d8"[index % 14], linestyle="--" if method in bounds else "-",
                linewidth=2.5 if method == REFERENCE else 1.2,
                color=bounds.get(method, colours[index % len(colours)]),
                label=label(method).replace(" (this project's variant)", " (variant)"))
    ax.axhline(entry["unpruned"]["accuracy"], color="grey", linestyle=":", label="unpruned")
    ax.set_xlabel("FLOPs removed, % (paper convention)")
    ax.set_ylabel("accuracy, %")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
