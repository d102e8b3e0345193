"""Keep counts solved from a FLOPs budget, for the methods that bring their own schedule.

FitPrune's counts come from a recipe file fitted offline. DART, DivPrune, PyramidDrop and SparseVLM
prune at fixed layers with counts set by one number (a count, a ratio lambda, a scale); here that
number is solved so that the run removes at least the asked share of the paper-convention FLOPs
(`llava.model.pruning.flops`), as large as the budget allows. The result is a per-layer keep
fraction of the model's visual tokens (`FractionSchedule`: a sample with n visual tokens keeps
``floor(fraction * n + 0.5)``, exactly the solved count when n is the model's count).

Two places a cut can sit. *Before layer l* (DART, DivPrune, PyramidDrop drop rows before the
layer's attention): layer l is entered and left by the kept count. *After layer l's attention*
(SparseVLM, FitPrune): layer l is entered by the previous count and left by the kept one, the
convention of `flops.paper_reduction`.
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import numpy as np

from llava.model.pruning.flops import DecoderDims, paper_layer_flops, paper_reduction
from llava.model.pruning.recipe import RecipeError

SEARCH_STEPS = 60
"""Bisection steps for a continuous parameter in (0, 1]: 2^-60 is below float64's resolution there."""


class BudgetError(RecipeError):
    """A FLOPs budget a method's schedule cannot reach (the message names the method and the reason)."""


def scaled_layer(paper_layer: int, paper_depth: int, num_layers: int, minimum: int = 0) -> int:
    """A method's layer index `paper_layer` of its paper's `paper_depth`-layer model, scaled to
    `num_layers` layers (halves round up), at least `minimum`, at most the last layer."""
    return min(num_layers - 1, max(minimum, int(paper_layer * num_layers / paper_depth + 0.5)))


def before_layer_reduction(dims: DecoderDims, counts: Sequence[float], num_visual: int) -> float:
    """Percent of the paper-convention visual FLOPs removed when layer l is entered and left by
    `counts[l]` visual tokens (cuts before layers) instead of `num_visual`."""
    counts = np.asarray(counts, dtype=np.float64)
    pruned = float(np.sum(paper_layer_flops(dims, counts, counts)))
    full = dims.num_layers * paper_layer_flops(dims, num_visual, num_visual)
    return 100.0 * (1.0 - pruned / full)


def cut_counts(num_layers: int, num_visual: int, cuts: Sequence[Tuple[int, int]]) -> np.ndarray:
    """(layers,) visual tokens alive in each layer: `num_visual` before the first cut, then each cut's
    count from its layer on. `cuts` are (layer, count) pairs with increasing layers."""
    counts = np.full(num_layers, num_visual, dtype=np.int64)
    for layer, count in cuts:
        counts[layer:] = count
    return counts


def largest_count(removes: Callable[[int], float], num_visual: int, ratio: float) -> int:
    """The largest count k in [0, num_visual] with ``removes(k) >= ratio`` (`removes` falls as k
    grows), or -1 when even k = 0 removes less."""
    if removes(0) < ratio:
        return -1
    low, high = 0, num_visual  # removes(low) >= ratio holds throughout
    while low < high:
        middle = (low + high + 1) // 2
        if removes(middle) >= ratio:
            low = middle
        else:
            high = middle - 1
    return low


def largest_parameter(removes: Callable[[float], float], ratio: float) -> float:
    """The largest x in [0, 1] (to `SEARCH_STEPS` halvings) with ``removes(x) >= ratio``, for a
    `removes` that falls as x grows and reaches the ratio at x = 0."""
    low, high = 0.0, 1.0
    if removes(high) >= ratio:
        return high
    for _ in range(SEARCH_STEPS):
        middle = (low + high) / 2
        if removes(middle) >= ratio:
            low = middle
        else:
            high = middle
    return low


def as_fractions(counts: Sequence[int], num_visual: int) -> Tuple[float, ...]:
    """Per-layer keep fractions that give back `counts` for `num_visual` tokens (`FractionSchedule`)."""
    return tuple(float(count) / num_visual for count in counts)


def _reachable(ratio: float, most: float, method: str, why: str) -> None:
    """Raises BudgetError when `ratio` is above the `most` a method can remove."""
    if ratio > most:
        raise BudgetError(
            f"reduction ratio {ratio:g}%: {method} removes at most {most:.1f}% of the paper-convention "
            f"FLOPs ({why}); choose a smaller ratio"
        )


def single_cut_fractions(
    dims: DecoderDims, layer: int, ratio: float, num_visual: int, method: str
) -> Tuple[float, ...]:
    """Keep fractions of one cut before `layer` keeping the most tokens that still remove `ratio`
    percent of the paper-convention FLOPs.

    Raises:
        BudgetError: the budget needs fewer than 1 token kept (names `method`, the layer and what
            keeping 1 token removes), or more than dropping every token from `layer` on removes.
    """

    def removes(count: int) -> float:
        return before_layer_reduction(dims, cut_counts(dims.num_layers, num_visual, [(layer, count)]), num_visual)

    _reachable(ratio, removes(0), method, f"every visual token stays in layers before {layer}")
    count = largest_count(removes, num_visual, ratio)
    if count < 1:
        raise BudgetError(
            f"reduction ratio {ratio:g}%: {method} would keep fewer than 1 visual token before layer {layer} "
            f"(keeping 1 removes {removes(1):.1f}% of the paper-convention FLOPs); choose a smaller ratio"
        )
    return as_fractions(cut_counts(dims.num_layers, num_visual, [(layer, count)]), num_visual)


def staged_fractions(
    dims: DecoderDims, layers: Sequence[int], ratio: float, num_visual: int, method: str
) -> Tuple[float, ...]:
    """PyramidDrop's schedule: before each of `layers` (stage s = 1, 2, ...) keep
    ``int(num_visual * lambda**s)`` tokens, lambda the largest in (0, 1] that removes `ratio` percent.

    Raises:
        BudgetError: even lambda -> 0 (nothing after the first stage) removes less than `ratio`.
    """

    def counts(lam: float) -> np.ndarray:
        cuts = [(layer, int(num_visual * lam ** stage)) for stage, layer in enumerate(layers, start=1)]
        return cut_counts(dims.num_layers, num_visual, cuts)

    def removes(lam: float) -> float:
        return before_layer_reduction(dims, counts(lam), num_visual)

    _reachable(ratio, removes(0.0), method, f"every visual token stays in layers before {layers[0]}")
    return as_fractions(counts(largest_parameter(removes, ratio)), num_visual)


def after_attention_fractions(
    dims: DecoderDims, layers: Sequence[int], shape: Sequence[float], ratio: float, num_visual: int, method: str
) -> Tuple[float, ...]:
    """Keep fractions of cuts after the attention of `layers`, keeping ``floor(scale * shape[s] *
    num_visual + 0.5)`` (capped by the count before) at cut s, the largest scale in (0, 1 / max(shape)]
    that removes `ratio` percent (convention of `flops.paper_reduction`).

    Raises:
        BudgetError: even scale -> 0 removes less than `ratio`.
    """
    top = max(shape)

    def counts(scale: float) -> np.ndarray:
        cuts = []
        for layer, share in zip(layers, shape):
            cuts.append((layer, min(num_visual, int(scale / top * share * num_visual + 0.5))))
        for index in range(1, len(cuts)):
            cuts[index] = (cuts[index][0], min(cuts[index][1], cuts[index - 1][1]))
        return cut_counts(dims.num_layers, num_visual, cuts)

    def removes(scale: float) -> float:
        return paper_reduction(dims, counts(scale), num_visual)

    _reachable(ratio, removes(0.0), method, f"every visual token stays through layer {layers[0]}'s attention")
    return as_fractions(counts(largest_parameter(removes, ratio)), num_visual)


def after_attention_reduction(dims: DecoderDims, layers: Sequence[int], shares: Sequence[float], num_visual: int) -> float:
    """Percent of the paper-convention FLOPs removed by cuts after the attention of `layers` keeping
    ``floor(share * num_visual + 0.5)`` tokens each."""
    cuts = [(layer, int(share * num_visual + 0.5)) for layer, share in zip(layers, shares)]
    return paper_reduction(dims, cut_counts(dims.num_layers, num_visual, cuts), num_visual)
