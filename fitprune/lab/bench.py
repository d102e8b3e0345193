"""`python -m fitprune.bench`: pruning quality on the bundled demo model, FitPrune against
FastV, random and a uniform per-layer baseline at matched FLOPs.

    python -m fitprune.bench --all-methods [--model shapes]   # every method, paired statistics
    python -m fitprune.bench --model-path playground/models/llava-v1.5-shapes \
        --question-file playground/shapes/test.jsonl --image-folder playground/shapes \
        --calibration-file playground/shapes/calibration.jsonl
    python -m fitprune.bench --recipe playground/models/llava-v1.5-shapes/fitprune_recipes.json

For each budget (percent of paper-convention FLOPs removed) FitPrune's recipe is fitted on
the calibration split (timed), then every method answers the test split:

- FitPrune: the recipe's keep counts, tokens ranked by cross × self attention;
- random: the same keep counts, tokens drawn at random (`RandomPolicy`);
- FastV: all tokens through layer K−1, then the share R with most attention from the last
  prompt token, R chosen so FastV removes at least the FLOPs FitPrune's recipe removes
  (K = 2 as in its paper; K = 1 where K = 2 cannot reach the budget; "—" where no K can,
  since layer 0 always runs on every token);
- uniform: the same share of tokens removed at every layer, matched the same way, ranked
  by FitPrune's score;
- oracle (question files whose lines name the referred `cells`, as the relational scenes'):
  FitPrune's keep counts, the referred objects' patches kept first, the rest in random's
  order (`fitprune.lab.oracle`): the yardstick of what choosing tokens can gain.

Accuracy is first-token exact match on one-token answers (`fitprune.lab.answers`), with a
95% Wilson interval, overall and per question kind; latency is the median wall time of a
one-sample prefill. The accuracies are also written as JSON (`--json`, default
`benchmarks/pruning_quality.json`): policy -> budget -> accuracy, with the unpruned accuracy
and the accuracy with no visual token after layer 0. A depth probe follows: every visual token
through layer d−1, then only k of them (ranked by each policy) for the rest, which tells
whether the model still reads the image after its first layers and whether it matters
which tokens it reads. Last, the score profile: FitPrune's cross and self scores at layer 0
by image row (`fitprune.lab.score_profile`). Writes a section of BENCHMARKS.md and a plot of
accuracy against FLOPs removed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from fitprune.lab.answers import AccuracyReport, PromptBatch, answer_accuracy, encode_questions, load_answered_questions
from fitprune.calibrate import main as calibrate_main
from fitprune.defaults import (
    DEFAULT_CALIBRATION_FILE,
    DEFAULT_IMAGE_FOLDER,
    DEFAULT_TEST_FILE,
    ensure_default_model,
)
from fitprune.lab.benchmarks_file import write_section
from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.policies import FastVPolicy, FitPrunePolicy, RandomPolicy
from llava.model.pruning.recipe import RecipeBook
from llava.model.pruning.ratio import parse_reduction_ratio
from fitprune.lab.score_profile import ScoreProfile, score_profile
from fitprune.lab.baselines import FASTV_K, Baseline, matched_fastv, matched_uniform, pruner_installed
from fitprune.lab.oracle import ReferredCellsKept, has_cells, no_visual_after_layer_0, oracle_accuracy

BENCH_RATIOS = (0.0, 30.0, 50.0, 60.0, 70.0, 80.0, 90.0)
METHODS = ("fitprune", "fastv", "random", "uniform", "oracle")
QUALITY_SCHEMA_VERSION = 1
# the depth probe: layers that see every visual token, and the tokens kept after them
PROBE_DEPTHS = (1, 2, 4)
PROBE_KEEPS = (0, 2, 5, 10)
PROBE_POLICIES = ("fitprune", "fastv", "random")


@dataclass(frozen=True)
class MethodResult:
    """One method at one budget.

    Attributes:
        method: one of METHODS.
        baseline: the keep counts it followed and what they remove.
        report: its answers on the test questions, overall and per kind.
        latency_ms: median one-sample prefill time, milliseconds.
        referred_kept: percent of the questions' referred cells alive after each layer, or
            None where the questions name no cells.
    """

    method: str
    baseline: Baseline
    report: AccuracyReport
    latency_ms: float
    referred_kept: Optional[List[float]] = None

    @property
    def accuracy(self) -> float:
        """Percent correct on the test questions."""
        return self.report.accuracy


def section_heading(model_name: str) -> str:
    """The BENCHMARKS.md heading of one model's section."""
    return f"## Pruning quality on {model_name} (python -m fitprune.bench)"


def prefill_latency_ms(model, batch: PromptBatch, repeats: int) -> float:
    """Median wall time of a prefill of the first sample of `batch`, in milliseconds."""
    ids = batch.input_ids[:1, :int(batch.attention_mask[0].sum())]
    images = batch.images[:1]
    times = []
    with torch.inference_mode():
        model(input_ids=ids, images=images, use_cache=False)
        for _ in range(repeats):
            start = time.perf_counter()
            model(input_ids=ids, images=images, use_cache=False)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def baselines_for(book: RecipeBook, ratio: float, dims: DecoderDims, num_visual: int,
                  with_oracle: bool = False) -> Dict[str, Baseline]:
    """The keep counts of every method at one budget, matched to FitPrune's achieved FLOPs;
    a method that cannot remove that much is left out, and the oracle unless `with_oracle`."""
    methods = [m for m in METHODS if with_oracle or m != "oracle"]
    unpruned = Baseline("none", (num_visual,) * dims.num_layers, 0.0, "")
    if ratio == 0:
        return {method: unpruned for method in methods}
    recipe = book.get(ratio)
    fitted = Baseline("fitprune", recipe.keep_counts, recipe.achieved_paper, f"alpha={recipe.alpha}")
    baselines = {
        "fitprune": fitted,
        "random": Baseline("random", recipe.keep_counts, recipe.achieved_paper, "FitPrune's counts"),
    }
    if with_oracle:
        baselines["oracle"] = Baseline("oracle", recipe.keep_counts, recipe.achieved_paper, "FitPrune's counts")
    for k in (FASTV_K, 1):
        try:
            baselines["fastv"] = matched_fastv(dims, num_visual, recipe.achieved_paper, k)
            break
        except ValueError:
            continue
    try:
        baselines["uniform"] = matched_uniform(dims, num_visual, recipe.achieved_paper)
    except ValueError:
        pass
    return {method: baselines[method] for method in methods if method in baselines}


def policy_for(method: str, seed: int):
    """The scoring policy each method ranks tokens with."""
    if method == "fastv":
        return FastVPolicy()
    if method == "random":
        return RandomPolicy(seed)
    return FitPrunePolicy()


def run_methods(model, book: RecipeBook, ratios: Sequence[float], batches: Sequence[PromptBatch], repeats: int,
                seed: int) -> Dict[float, List[MethodResult]]:
    """Accuracy and latency of every method at every budget (the oracle where the questions
    know their referred cells; its latency is random's, whose order it follows)."""
    dims = DecoderDims.from_config(model.config)
    num_visual = model.get_model().num_visual_tokens()
    with_oracle = has_cells(batches)
    results = {}
    for ratio in tqdm(ratios, desc="budgets", unit="budget"):
        rows = []
        for method, baseline in baselines_for(book, ratio, dims, num_visual, with_oracle).items():
            referred = ReferredCellsKept(model) if with_oracle else None
            if method == "oracle":
                report = oracle_accuracy(model, batches, baseline.keep_counts, seed, referred)
            timed = RandomPolicy(seed) if method == "oracle" else policy_for(method, seed)
            with pruner_installed(model, timed, baseline.keep_counts):
                if method != "oracle":
                    report = answer_accuracy(model, batches, referred)
                latency = prefill_latency_ms(model, batches[0], repeats)
            rows.append(MethodResult(method, baseline, report, latency,
                                     referred.shares() if referred is not None else None))
        results[ratio] = rows
    return results


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


def depth_probe(model, batches: Sequence[PromptBatch], depths: Sequence[int], keeps: Sequence[int],
                seed: int) -> Dict[Tuple[int, int], Dict[str, float]]:
    """Accuracy (percent) when layers 0..d−1 see every visual token and each later layer
    only the k that a policy ranks highest, for every (d, k) and every policy of
    PROBE_POLICIES; depths are clipped to the decoder's layers."""
    num_layers = model.config.num_hidden_layers
    num_visual = model.get_model().num_visual_tokens()
    results = {}
    for depth in sorted({min(d, num_layers) for d in depths}):
        for keep in keeps:
            counts = (num_visual,) * (depth - 1) + (min(keep, num_visual),) * (num_layers - depth + 1)
            row = {}
            for method in PROBE_POLICIES:
                with pruner_installed(model, policy_for(method, seed), counts):
                    row[method] = answer_accuracy(model, batches).accuracy
            results[(depth, keep)] = row
    return results


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


def calibrate(model_path: str, calibration_file: str, image_folder: str, ratios: Sequence[float], output: Path,
              num_samples: int) -> float:
    """Fits FitPrune recipes for `ratios` into `output`; returns the wall time in seconds.

    Raises:
        RuntimeError: if calibration fails.
    """
    started = time.time()
    code = calibrate_main(["--model-path", model_path, "--question-file", calibration_file,
                           "--image-folder", image_folder, "--num-samples", str(num_samples),
                           "--device", "cpu", "--output", str(output), "--reduction-ratio",
                           *[f"{r:g}" for r in ratios]])
    if code:
        raise RuntimeError(f"calibration failed with exit code {code}")
    return time.time() - started


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark (with ``--all-methods`` first: `fitprune.lab.compare`); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--all-methods"]:
        from fitprune.lab.compare import main as compare_main

        return compare_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m fitprune.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=None, help="checkpoint (default: the bundled demo model)")
    parser.add_argument("--question-file", default=DEFAULT_TEST_FILE, help="question jsonl with answers")
    parser.add_argument("--calibration-file", default=DEFAULT_CALIBRATION_FILE)
    parser.add_argument("--image-folder", default=DEFAULT_IMAGE_FOLDER)
    parser.add_argument("--reduction-ratio", dest="reduction_ratios", metavar="R",
                        type=parse_reduction_ratio, nargs="+", default=list(BENCH_RATIOS),
                        help="budgets, percent (60) or fraction (0.6) of FLOPs removed; 0 is the unpruned row")
    parser.add_argument("--recipe", default=None, help="use this recipe file instead of calibrating")
    parser.add_argument("--num-samples", type=int, default=256, help="calibration samples")
    parser.add_argument("--limit", type=int, default=None, help="first N test questions only")
    parser.add_argument("--repeats", type=int, default=20, help="timed prefills per method and budget")
    parser.add_argument("--seed", type=int, default=0, help="random policy seed")
    parser.add_argument("--probe-depths", type=int, nargs="*", default=list(PROBE_DEPTHS),
                        help="depth probe: layers that see every visual token (none: no probe)")
    parser.add_argument("--probe-keeps", type=int, nargs="+", default=list(PROBE_KEEPS),
                        help="depth probe: visual tokens kept after them")
    parser.add_argument("--output", default="BENCHMARKS.md", help="Markdown file to write the section into")
    parser.add_argument("--plot", default="benchmarks/pruning_quality.png")
    parser.add_argument("--json", default="",
                        help="where to write the accuracies as JSON, schema 1 (default: not written; "
                             "benchmarks/pruning_quality.json is --all-methods', schema 2)")
    args = parser.parse_args(argv)

    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    torch.manual_seed(args.seed)
    model_path = args.model_path or ensure_default_model()
    pruned_ratios = [r for r in args.reduction_ratios if r > 0]
    with tempfile.TemporaryDirectory() as scratch:
        if args.recipe:
            recipe_file, calibration = Path(args.recipe), f"recipes from {args.recipe}"
        else:
            recipe_file = Path(scratch) / "recipes.json"
            seconds = calibrate(model_path, args.calibration_file, args.image_folder, pruned_ratios, recipe_file,
                                args.num_samples)
            calibration = f"calibration of {len(pruned_ratios)} budgets took {seconds:.0f} s"
        book = RecipeBook.load(recipe_file)
    model_name = get_model_name_from_path(model_path)
    tokenizer, model, processor, _ = load_pretrained_model(model_path, None, model_name, device="cpu")
    model.eval()
    questions = load_answered_questions(args.question_file, args.limit)
    batches = encode_questions(questions, tokenizer, processor, model.config, args.image_folder)
    results = run_methods(model, book, args.reduction_ratios, batches, args.repeats, args.seed)
    unpruned = results[0.0][0].report if 0.0 in results else answer_accuracy(model, batches)
    reference = {"unpruned": unpruned, "no_visual_after_layer_0": no_visual_after_layer_0(model, batches, args.seed)}
    probe = depth_probe(model, batches, args.probe_depths, args.probe_keeps, args.seed) if args.probe_depths else None
    profile = score_profile(model, batches, layer=0)
    context = {
        "model": model_path,
        "model_name": model_name,
        "questions": len(questions),
        "question_file": args.question_file,
        "calibration_file": args.calibration_file,
        "calibration": calibration,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                   f"torch {torch.__version__}",
        "date": datetime.date.today().isoformat(),
        "command": "python -m fitprune.bench " + shlex.join(argv),
        "plot": args.plot,
    }
    if args.plot:
        plot_results(results, Path(args.plot), f"{model_name}: accuracy vs FLOPs removed")
    section = format_section(results, context, reference, probe, profile)
    write_section(Path(args.output), section_heading(model_name), section)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(quality_json(results, reference, context), indent=1) + "\n")
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
