"""Every pruning method on one model and question set, at matched FLOPs budgets and at the
literature's token-count rows, answer by answer (for paired statistics).

Two kinds of budget (`Budget`):

- *matched FLOPs* (``ratio``): every method removes at least that percent of the paper-convention
  FLOPs. FitPrune and the methods that follow its recipe (random, the oracle, ``recipe+*``,
  ``fitprune-selfmean``) use the recipe book's counts at that ratio; FastV (K = 2, else 1) and
  uniform are matched to what that recipe achieves (`fitprune.lab.baselines`); methods with their
  own schedule (DART, DivPrune, PyramidDrop, SparseVLM with and without recycling, VisionZip) solve it themselves,
  installed as a user would (`model.set_pruning(ratio, policy=...)`).
- *token rows* (``tokens``: the literature's 192 / 128 / 64 of ``LITERATURE_VISUAL``, scaled to the model's share):
  each method as its paper states that count. FastV and DART keep the count from their layer K on
  (K = 2 of 32, scaled), DivPrune and VisionZip from layer 0, SparseVLM (both) its released
  counts for that row (scaled) at its layers; PyramidDrop and the recipe methods take the FLOPs of
  keeping the count in every layer ("equivalent tokens"), from the recipe of the nearest fitted
  ratio. The FLOPs each then removes differ, and are reported. This project's variants (`VARIANTS`)
  run at matched FLOPs only.

FLOPs are computed from what each prefill did (`PruningTrace`: visual tokens entering and leaving
each layer, per sample), in both conventions of `llava.model.pruning.flops`, averaged over samples.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from fitprune.lab.answers import PromptBatch, predict_first_tokens
from fitprune.lab.baselines import FASTV_K, fastv_keep_counts, matched_fastv, matched_uniform, pruner_installed
from fitprune.lab.oracle import OraclePolicy
from llava.model.pruning.budget import before_layer_reduction, cut_counts, scaled_layer
from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.policies import FitPrunePolicy, SparseVLMDropPolicy, policy_named
from llava.model.pruning.recipe import RecipeBook
from llava.model.pruning.similarity import PAPER_DEPTH, DartPolicy
from llava.model.pruning.traced_flops import traced_reductions

LITERATURE_VISUAL = 576  # ok: LLaVA-1.5's visual tokens, the count the literature's token rows are stated for
LITERATURE_TOKENS = (192, 128, 64)
RECIPE_METHODS = ("fitprune", "random", "oracle", "recipe+fastv", "recipe+dart", "recipe+divprune",
                  "fitprune-selfmean")
OWN_SCHEDULE = ("dart", "divprune", "pyramiddrop", "sparsevlm-drop", "sparsevlm", "visionzip")
VARIANTS = ("uniform", "recipe+fastv", "recipe+dart", "recipe+divprune", "fitprune-selfmean")
"""This project's variants and baselines: compared at matched FLOPs only (no paper states a token row for them)."""
ALL_METHODS = ("fitprune", "fastv", "dart", "divprune", "pyramiddrop", "sparsevlm-drop", "sparsevlm", "visionzip",
               "uniform", "recipe+fastv", "recipe+dart", "recipe+divprune", "fitprune-selfmean", "random", "oracle")


def available_methods(with_oracle: bool) -> List[str]:
    """`ALL_METHODS` that can run here: the oracle only when the questions name their cells."""
    return [m for m in ALL_METHODS if m != "oracle" or with_oracle]


@dataclass(frozen=True)
class Budget:
    """One row of the comparison: a FLOPs budget (`ratio`, percent) or a literature token count."""

    ratio: Optional[float] = None
    tokens: Optional[int] = None

    @property
    def label(self) -> str:
        """"70%" or "192 tokens"."""
        return f"{self.ratio:g}%" if self.tokens is None else f"{self.tokens} tokens"

    def scaled_tokens(self, num_visual: int) -> int:
        """The token count for a model with `num_visual` tokens: the same share of its tokens."""
        return max(1, round(num_visual * self.tokens / LITERATURE_VISUAL))


def equivalent_ratio(dims: DecoderDims, num_visual: int, tokens: int) -> float:
    """Paper-convention FLOPs removed (percent) by keeping `tokens` visual tokens in every layer,
    rounded down to 0.01 (what a recipe fitted at that ratio must at least remove)."""
    return float(np.floor(100 * before_layer_reduction(dims, [tokens] * dims.num_layers, num_visual)) / 100)


def nearest_ratio(book: RecipeBook, ratio: float) -> float:
    """`ratio` when the book has a recipe for it, else the book's nearest ratio (the larger on a tie):
    a token row's FLOPs-equivalent ratio is rarely a fitted one, and the row reports the FLOPs removed."""
    ratios = list(book.ratios())
    return ratio if ratio in ratios else min(ratios, key=lambda r: (abs(r - ratio), -r))


@dataclass
class MethodRun:
    """One method at one budget, question by question.

    Attributes:
        method: a name of `ALL_METHODS`.
        setting: how its counts were set, for tables.
        hits: (questions,) bool, whether each answer was right, in question order.
        kinds: question kinds, in question order.
        flops_paper, flops_full: FLOPs removed, percent, in the paper's and the full convention.
        entering, leaving: mean visual tokens entering and leaving each layer.
    """

    method: str
    setting: str
    hits: np.ndarray
    kinds: List[str]
    flops_paper: float
    flops_full: float
    entering: List[float]
    leaving: List[float]

    @property
    def accuracy(self) -> float:
        """Percent correct."""
        return 100.0 * float(self.hits.mean())


class FlopsCounter:
    """Sums the FLOPs of the prefills it is shown (from the model's `last_pruning_trace`)."""

    def __init__(self, model):
        self.model = model
        self.dims = DecoderDims.from_config(model.config)
        self.num_visual = model.get_model().num_visual_tokens()
        self.entering: List[np.ndarray] = []
        self.leaving: List[np.ndarray] = []
        self.other: List[np.ndarray] = []

    def add(self, batch: PromptBatch) -> None:
        """Records the latest prefill, of `batch` (an unpruned one: every token in every layer)."""
        trace = self.model.last_pruning_trace
        size = batch.input_ids.shape[0]
        if trace is None:
            full = np.full((size, self.dims.num_layers), self.num_visual, dtype=np.float64)
            self.entering.append(full)
            self.leaving.append(full)
        else:
            self.entering.append(trace.entered().T.numpy().astype(np.float64))
            self.leaving.append(trace.counts().T.numpy().astype(np.float64))
        self.other.append(batch.attention_mask.sum(dim=1).numpy().astype(np.float64) - 1)  # the image placeholder

    def reductions(self) -> Tuple[float, float]:
        """(paper, full) FLOPs removed, percent, over every prefill recorded (`traced_reductions`)."""
        entered, left = np.concatenate(self.entering), np.concatenate(self.leaving)
        return traced_reductions(self.dims, entered, left, self.num_visual, np.concatenate(self.other))


@contextlib.contextmanager
def _set_up(model, ratio: float, method: str, seed: int) -> Iterator[None]:
    """A context in which `model` prunes as `model.set_pruning(ratio, policy=method)` sets up; unpruned after."""
    model.set_pruning(ratio, policy=method, seed=seed)
    try:
        yield
    finally:
        model.set_pruning(0)


def pruning_for(model, method: str, budget: Budget, book: RecipeBook, seed: int) -> Tuple[ContextManager, str, object]:
    """`method`'s pruning for `budget`: (a context that installs it, setting text, oracle policy or None).

    Raises:
        ValueError: (BudgetError included) the method cannot reach the budget.
    """
    dims = DecoderDims.from_config(model.config)
    v = model.get_model().num_visual_tokens()
    t = budget.scaled_tokens(v) if budget.tokens is not None else None
    ratio = budget.ratio if t is None else equivalent_ratio(dims, v, t)
    if t is not None and method in ("fastv", "dart", "divprune", "sparsevlm-drop", "sparsevlm"):
        counts, setting, policy = _token_row_counts(method, dims, v, t)
        return pruner_installed(model, policy, counts), setting, None
    if method in OWN_SCHEDULE:
        model.set_pruning(ratio, policy=method, seed=seed)  # a budget it cannot reach fails here, before the run
        model.set_pruning(0)
        return _set_up(model, ratio, method, seed), f"own schedule at {ratio:g}%", None
    recipe = book.get(nearest_ratio(book, ratio))
    if method in RECIPE_METHODS:
        policy = OraclePolicy(seed) if method == "oracle" else policy_named(method, seed)
        installed = pruner_installed(model, policy, recipe.keep_counts)
        return installed, f"recipe {recipe.reduction_ratio:g}%", policy if method == "oracle" else None
    if method == "fastv":
        for k in (FASTV_K, 1):
            try:
                baseline = matched_fastv(dims, v, recipe.achieved_paper, k)
                break
            except ValueError:
                if k == 1:
                    raise
        return pruner_installed(model, policy_named("fastv"), baseline.keep_counts), baseline.setting, None
    baseline = matched_uniform(dims, v, recipe.achieved_paper)
    return pruner_installed(model, FitPrunePolicy(), baseline.keep_counts), baseline.setting, None


def _token_row_counts(method: str, dims: DecoderDims, v: int, t: int):
    """Keep counts of a token row for the methods that state it per layer (see the module docstring)."""
    layers = dims.num_layers
    if method == "fastv":
        return fastv_keep_counts(layers, v, FASTV_K, 100 * (1 - t / v)), f"K={FASTV_K}, {t} kept", policy_named("fastv")
    if method == "dart":
        k = scaled_layer(DartPolicy.paper_layer, PAPER_DEPTH, layers, minimum=1)
        return tuple(cut_counts(layers, v, [(k, t)]).tolist()), f"{t} from layer {k}", policy_named("dart")
    if method == "divprune":
        return tuple(cut_counts(layers, v, [(0, t)]).tolist()), f"{t} from layer 0", policy_named("divprune")
    sparse = SparseVLMDropPolicy
    released = dict(zip((64, 128, 192), sparse.released_counts))[round(t * LITERATURE_VISUAL / v / 64) * 64]
    cuts = [(scaled_layer(layer, PAPER_DEPTH, layers), max(1, round(c * v / sparse.paper_visual)))
            for layer, c in zip(sparse.paper_layers, released)]
    text = "/".join(str(c) for _, c in cuts) + " after layers " + "/".join(str(layer) for layer, _ in cuts)
    return tuple(cut_counts(layers, v, cuts).tolist()), text, policy_named(method)


def _answer(model, batches: Sequence[PromptBatch], name: str, setting: str, oracle=None) -> MethodRun:
    """Answers every question with the pruning installed on `model` (the oracle's cells set per batch)."""
    counter = FlopsCounter(model)
    hits, kinds = [], []
    for batch in batches:
        if oracle is not None:
            oracle.set_cells(batch.cells)
        hits.append((predict_first_tokens(model, batch) == batch.answer_ids).numpy())
        kinds.extend(batch.kinds)
        counter.add(batch)
    paper, full = counter.reductions()
    return MethodRun(name, setting, np.concatenate(hits), kinds, paper, full,
                     np.concatenate(counter.entering).mean(axis=0).tolist(),
                     np.concatenate(counter.leaving).mean(axis=0).tolist())


def run_method(model, batches: Sequence[PromptBatch], method: Optional[str], budget: Optional[Budget],
               book: Optional[RecipeBook], seed: int = 0) -> MethodRun:
    """Answers every question with `method` at `budget` (None, None: unpruned).

    Raises:
        ValueError: the method cannot reach the budget.
    """
    if method is None:
        return _answer(model, batches, "unpruned", "unpruned")
    context, setting, oracle = pruning_for(model, method, budget, book, seed)
    with context:
        return _answer(model, batches, method, setting, oracle)


def blind_run(model, batches: Sequence[PromptBatch]) -> MethodRun:
    """Every visual token dropped after layer 0 (how much the questions need the image)."""
    with pruner_installed(model, policy_named("random"), (0,) * model.config.num_hidden_layers):
        return _answer(model, batches, "no visual after layer 0", "")


def run_all(model, batches: Sequence[PromptBatch], budgets: Sequence[Budget], methods: Sequence[str],
            book: RecipeBook, seed: int = 0, progress=None
            ) -> Tuple[Dict[Budget, Dict[str, MethodRun]], Dict[Tuple[str, str], str]]:
    """Every method at every budget (token rows: the papers' methods, random and the oracle, not
    `VARIANTS`), and (budget label, method) -> why a method that cannot reach a budget is left out of
    its row; `progress(budget, method)` is called after each run."""
    results: Dict[Budget, Dict[str, MethodRun]] = {}
    skipped: Dict[Tuple[str, str], str] = {}
    for budget in budgets:
        row = {}
        for method in methods:
            if budget.tokens is not None and method in VARIANTS:
                continue
            try:
                row[method] = run_method(model, batches, method, budget, book, seed)
            except ValueError as err:
                skipped[(budget.label, method)] = str(err)
            if progress is not None:
                progress(budget, method)
        results[budget] = row
    return results, skipped
