"""Fitting a recipe: per-layer deletion counts that meet a FLOPs budget.

The method (FitPrune, arXiv 2409.10197; README "How pruning works"):

1. From the statistics pass, each sample's reference masses W_cross[s, l], W_self[s, l].
2. A trial for alpha walks the layers in order over all samples, running the real decoder
   layers with the tokens deleted so far. Before layer l it checks the budget: FLOPs spent
   plus the remaining layers at the current token count, averaged over samples, within
   (1 - ratio) of the unpruned cost means the budget is met and the walk stops. Otherwise
   each sample deletes, at layer l, the tokens chosen by the selection rule (below).
3. A bisection on alpha finds the smallest alpha whose trial meets the budget; the mean
   deletions of that trial, rounded so the recipe meets its budget within one point, are
   the recipe.

When the samples differ in visual token count (LLaVA-NeXT's anyres images), the recipe is
fractional: per layer, the mean over samples of deleted / initial visual tokens, summed
into keep fractions, rounded to `fitprune.keep_rounding.FRACTION_DECIMALS` decimals so that the recipe, applied
to each calibration sample's own count, meets its budget within one point.

Selection rules, both from cumulative sums over sorted scores:
- "intersection" (the paper's): the largest set of lowest cross scores whose removal keeps
  at least (1 - alpha) of W_cross, intersected with the same set for the self score.
- "product": the largest set of lowest cross × self scores (the ranking inference uses)
  whose removal keeps at least (1 - alpha) of both W_cross and W_self.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from llava.model.pruning.flops import DecoderDims, paper_layer_flops, paper_reduction
from llava.model.pruning.policies import cross_and_self_scores, fitprune_attention_query
from llava.model.pruning.recipe import LABEL_TOLERANCE, ModelSignature, Recipe, RecipeBook, RecipeError
from llava.model.pruning.recipe_fields import FIT_INTERSECTION
from fitprune.keep_rounding import round_keep_counts, round_keep_fractions
from fitprune.stats import AttentionStats
from llava.model.language_model.modeling_llama import AttentionInputs
from llava.model.language_model.sequence_layout import SequenceLayout
from llava.model.pruning.pruner import drop_rows

FIT_PRODUCT = "fitprune-product"
FIT_MODES = (FIT_INTERSECTION, FIT_PRODUCT)
ALPHA_TOLERANCE = 0.01


def lowest_within_mass(
    scores: torch.Tensor, valid: torch.Tensor, keep_masses: Sequence[Tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """The largest set of lowest-`scores` tokens whose removal keeps every mass above its floor.

    Args:
        scores: (B, T) ranking; the lowest go first (ties by row order).
        valid: (B, T) bool, the candidate rows (live visual tokens).
        keep_masses: pairs (mass (B, T) >= 0, floor (B,)): removing a set must leave
            sum(mass over the remaining valid rows) >= floor, for every pair.

    Returns:
        (B, T) bool, the chosen rows.
    """
    ranked = scores.double().masked_fill(~valid, math.inf)
    order = ranked.argsort(dim=1, stable=True)
    allowed = valid.gather(1, order)
    for mass, floor in keep_masses:
        sorted_mass = (mass.double() * valid).gather(1, order)
        remaining = sorted_mass.sum(dim=1, keepdim=True) - sorted_mass.cumsum(dim=1)
        allowed &= remaining >= floor.double()[:, None]
    count = allowed.cumprod(dim=1).sum(dim=1)  # removal prefixes that keep every mass
    chosen_sorted = torch.arange(scores.shape[1], device=scores.device)[None] < count[:, None]
    return torch.zeros_like(valid).scatter(1, order, chosen_sorted)


def select_deletions(
    cross: torch.Tensor,
    self_score: torch.Tensor,
    valid: torch.Tensor,
    w_cross: torch.Tensor,
    w_self: torch.Tensor,
    alpha: float,
    mode: str = FIT_INTERSECTION,
) -> torch.Tensor:
    """The tokens a trial deletes at one layer.

    Args:
        cross, self_score: (B, T) per-token scores (see `cross_and_self_scores`).
        valid: (B, T) bool, live visual rows.
        w_cross, w_self: (B,) reference masses of the layer from the statistics pass.
        alpha: share of the reference masses that may be removed, in [0, 1].
        mode: FIT_INTERSECTION or FIT_PRODUCT.

    Returns:
        (B, T) bool, rows to delete.
    """
    cross_floor = (1 - alpha) * w_cross.to(cross.device)
    self_floor = (1 - alpha) * w_self.to(cross.device)
    if mode == FIT_INTERSECTION:
        by_cross = lowest_within_mass(cross, valid, [(cross, cross_floor)])
        by_self = lowest_within_mass(self_score, valid, [(self_score, self_floor)])
        return by_cross & by_self
    if mode == FIT_PRODUCT:
        return lowest_within_mass(cross * self_score, valid, [(cross, cross_floor), (self_score, self_floor)])
    raise ValueError(f"unknown fit mode {mode!r}; choose one of {FIT_MODES}")


@dataclass(frozen=True)
class TrialResult:
    """One walk at one alpha.

    Attributes:
        alpha: the alpha tried.
        met: whether the budget was met.
        mean_deleted: (L,) float64, mean over samples of tokens deleted at each layer.
        stopped_at: the layer before which the budget was met (L if only at the end, or never).
        mean_deleted_fraction: (L,) float64, mean over samples of the tokens deleted at each
            layer divided by the sample's initial visual tokens (None if not recorded).
    """

    alpha: float
    met: bool
    mean_deleted: torch.Tensor
    stopped_at: int
    mean_deleted_fraction: Optional[torch.Tensor] = None


class _DeletionHook:
    """Prefill hook for one layer of a trial: deletes the selection rule's tokens."""

    def __init__(self, alpha: float, w_cross: torch.Tensor, w_self: torch.Tensor, mode: str):
        self.alpha, self.w_cross, self.w_self, self.mode = alpha, w_cross, w_self, mode
        self.deleted: Optional[torch.Tensor] = None

    def attention_query(self, layer_idx, layout):
        return fitprune_attention_query(layout)

    def after_attention(self, layer_idx, hidden, attention_sums, layout):
        cross, self_score = cross_and_self_scores(attention_sums, layout)
        drop = select_deletions(
            cross, self_score, layout.visual_mask, self.w_cross[:, layer_idx], self.w_self[:, layer_idx],
            self.alpha, self.mode,
        )
        self.deleted = drop.sum(dim=1).cpu()
        return drop_rows(hidden, layout, drop)


AllReduce = Callable[[torch.Tensor], torch.Tensor]


def _layer_flops(dims: DecoderDims, n_in: torch.Tensor, n_out: torch.Tensor) -> torch.Tensor:
    """(N,) float64 paper-convention FLOPs of one layer per sample."""
    return torch.as_tensor(paper_layer_flops(dims, n_in.numpy(), n_out.numpy()), dtype=torch.float64)


class LayerWalk:
    """Runs trials over prepared calibration batches with the model's own decoder layers.

    Args:
        decoder: our `LlamaModel`.
        batches: (inputs_embeds (B, T, D), layout) per batch; every sample has an image.
        stats: the statistics of the same samples, in batch order.
        all_reduce: sums a float64 tensor over processes (identity for one process).
    """

    def __init__(
        self,
        decoder,
        batches: Sequence[Tuple[torch.Tensor, SequenceLayout]],
        stats: AttentionStats,
        all_reduce: AllReduce = lambda t: t,
    ):
        self.decoder = decoder
        self.batches = batches
        self.stats = stats
        self.all_reduce = all_reduce
        self.dims = DecoderDims.from_config(decoder.config)
        starts = [0]
        for _, layout in batches:
            starts.append(starts[-1] + layout.segment.shape[0])
        self.sample_slices = [slice(a, b) for a, b in zip(starts, starts[1:])]

    def _mean(self, per_sample: torch.Tensor) -> torch.Tensor:
        """Mean over all samples of all processes of a (N_local, ...) tensor."""
        total = self.all_reduce(torch.cat([per_sample.double().sum(0).flatten(), torch.tensor([per_sample.shape[0]],
                                                                                                dtype=torch.float64)]))
        return total[:-1].reshape(per_sample.shape[1:]) / total[-1]

    def run(self, alpha: float, ratio: float, mode: str = FIT_INTERSECTION,
            progress: Optional[Callable[[int], None]] = None) -> TrialResult:
        """One trial: walks the layers deleting tokens at `alpha` until the budget is met.

        Args:
            alpha: in [0, 1].
            ratio: the budget, percent of paper-convention FLOPs to remove.
            mode: the selection rule.
            progress: called with the layer index after each layer.
        """
        num_layers = self.dims.num_layers
        states = [(embeds, layout) for embeds, layout in self.batches]
        counts = torch.cat([layout.visual_count() for _, layout in states]).double().cpu()
        initial = counts.clone()
        spent = torch.zeros_like(counts)
        unpruned = num_layers * _layer_flops(self.dims, initial, initial)
        budget = float(self._mean(unpruned[:, None])) * (1 - ratio / 100)
        deleted = torch.zeros(len(counts), num_layers, dtype=torch.float64)
        stopped_at = num_layers
        met = False
        for layer_idx in range(num_layers):
            projected = spent + (num_layers - layer_idx) * _layer_flops(self.dims, counts, counts)
            if float(self._mean(projected[:, None])) <= budget:
                met, stopped_at = True, layer_idx
                break
            layer = self.decoder.layers[layer_idx]
            for b, (embeds, layout) in enumerate(states):
                rows = self.sample_slices[b]
                hook = _DeletionHook(alpha, self.stats.w_cross[rows], self.stats.w_self[rows], mode)
                with torch.no_grad():
                    hidden, new_layout, _ = layer(embeds, AttentionInputs.for_prefill(layout), layer_idx,
                                                  hook=hook, layout=layout)
                states[b] = (hidden, new_layout)
                deleted[rows, layer_idx] = hook.deleted.double()
            after = counts - deleted[:, layer_idx]
            spent = spent + _layer_flops(self.dims, counts, after)
            counts = after
            if progress is not None:
                progress(layer_idx)
        if not met:
            met = float(self._mean(spent[:, None])) <= budget
        fraction = deleted / initial[:, None].clamp(min=1)
        return TrialResult(alpha, met, self._mean(deleted), stopped_at, self._mean(fraction))


def fit_recipe(
    walk: Callable[[float], TrialResult],
    signature: ModelSignature,
    ratio: float,
    mode: str = FIT_INTERSECTION,
    tolerance: float = ALPHA_TOLERANCE,
    visual_counts: Optional[Sequence[int]] = None,
) -> Tuple[Recipe, List[TrialResult]]:
    """Bisection on alpha: the recipe of the smallest alpha whose trial met the budget.

    Args:
        walk: runs a trial at an alpha (for this ratio and mode).
        signature: the model the recipe is for.
        ratio: the budget, percent.
        mode: the selection rule, recorded in the recipe.
        tolerance: stop when the alpha bracket is this narrow.
        visual_counts: None for a recipe of absolute keep counts; otherwise the initial visual
            tokens of every calibration sample, and the recipe is fractional (its trials must
            record `TrialResult.mean_deleted_fraction`).

    Returns:
        The recipe and every trial run, in order.

    Raises:
        ValueError: if even alpha = 1 does not meet the budget, if the nearest recipe removes more
            than `LABEL_TOLERANCE` points over it (a recipe file would refuse it on load), or if
            `visual_counts` is empty.
    """
    if visual_counts is not None and len(visual_counts) == 0:
        raise ValueError("visual_counts is empty: a fractional fit needs the calibration samples' visual counts")
    trials = [walk(1.0)]
    if not trials[0].met:
        dims = signature.dims()
        num_visual = signature.num_visual_tokens if visual_counts is None else list(visual_counts)
        zeros = [0] * dims.num_layers if visual_counts is None else [[0] * dims.num_layers] * len(num_visual)
        ceiling = paper_reduction(dims, zeros, num_visual)
        raise ValueError(
            f"not reachable: even alpha = 1 misses it; deleting every visual token after layer 0 "
            f"removes at most {ceiling:.2f}% of the FLOPs of this {dims.num_layers}-layer model"
        )
    best = trials[0]
    low, high = 0.0, 1.0
    while high - low > tolerance + 1e-9:
        trial = walk((low + high) / 2)
        trials.append(trial)
        if trial.met:
            high, best = trial.alpha, trial
        else:
            low = trial.alpha
    dims = signature.dims()
    if visual_counts is not None:
        if best.mean_deleted_fraction is None:
            raise ValueError("a fractional fit needs trials that record mean_deleted_fraction (LayerWalk does)")
        fractions = round_keep_fractions(dims, visual_counts, best.mean_deleted_fraction.tolist(), ratio)
        recipe = Recipe.from_keep_fractions(signature, ratio, fractions, visual_counts, alpha=best.alpha, fit=mode)
    else:
        keep = round_keep_counts(dims, signature.num_visual_tokens, best.mean_deleted.tolist(), ratio)
        recipe = Recipe.from_keep_counts(signature, ratio, keep, alpha=best.alpha, fit=mode)
    _check_loadable(signature, recipe)
    return recipe, trials


def _check_loadable(signature: ModelSignature, recipe: Recipe) -> None:
    """Checks that a fitted recipe passes the label check a recipe file gets on load
    (`RecipeBook.check_labels`): on a model with few visual tokens or layers one token may be
    worth more than `LABEL_TOLERANCE` points, and the nearest recipe then overshoots its budget.

    Raises:
        ValueError: the recipe removes more than `LABEL_TOLERANCE` points over its budget.
    """
    try:
        RecipeBook(model=signature, recipes=(recipe,)).check_labels()
    except RecipeError as err:
        raise ValueError(
            f"cannot be met within {LABEL_TOLERANCE:g} point with this model's {signature.num_visual_tokens} "
            f"visual tokens and {signature.num_layers} layer{'s' * (signature.num_layers != 1)} ({err})"
        ) from None
