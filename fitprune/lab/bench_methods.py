"""What `python -m fitprune.bench` runs: every method's keep counts at a budget, matched to
FitPrune's FLOPs, each method's accuracy and prefill latency on the test questions, and the
depth probe (every visual token through layer d−1, then the k a policy ranks highest)."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from fitprune.lab.answers import AccuracyReport, PromptBatch, answer_accuracy
from fitprune.lab.baselines import FASTV_K, Baseline, matched_fastv, matched_uniform, pruner_installed
from fitprune.lab.oracle import ReferredCellsKept, has_cells, oracle_accuracy
from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.policies import FastVPolicy, FitPrunePolicy, RandomPolicy
from llava.model.pruning.recipe import RecipeBook

METHODS = ("fitprune", "fastv", "random", "uniform", "oracle")
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
