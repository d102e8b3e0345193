"""Keep counts of the baselines FitPrune is compared with, matched to a FLOPs budget.

A baseline's keep counts are what a recipe holds: the visual tokens left after each decoder
layer. Any scoring policy can prune down to them (`pruner_installed`).

- FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", ECCV 2024): every visual
  token through layer K−1, then only the (1 − R) share that the last prompt token attends
  to most; the paper's setting is K = 2, R = 50%. In our mechanism tokens leave after a
  layer's attention, scored by that layer's attention, so FastV's tokens leave after layer
  K−1's attention (FastV drops them before layer K, using layer K−1's attention: the same
  selection; our layer K−1 MLP already runs on the kept tokens).
- Uniform: every layer removes the same share of its live visual tokens (a geometric decay),
  the simplest keep counts that reach any budget the first layer allows.

`matched_fastv` and `matched_uniform` pick the one free parameter (R, or the per-layer
share) so that the paper-convention reduction is at least the reduction ratio asked, as close to it as
the integer counts allow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence, Tuple

from llava.model.pruning.flops import DecoderDims, paper_reduction

FASTV_K = 2
FASTV_R = 50.0
_BISECTION_STEPS = 60


@dataclass(frozen=True)
class Baseline:
    """A baseline's keep counts with what they achieve.

    Attributes:
        name: the baseline's family ("fastv", "uniform").
        keep_counts: visual tokens left after each layer.
        paper_reduction: FLOPs removed, percent, paper convention.
        setting: the family's parameters, for tables (e.g. "K=2 R=87.5%").
    """

    name: str
    keep_counts: Tuple[int, ...]
    paper_reduction: float
    setting: str


def fastv_keep_counts(num_layers: int, num_visual: int, k: int, drop_percent: float) -> Tuple[int, ...]:
    """FastV's keep counts: `num_visual` tokens through layer k−2, then `round(num_visual ·
    (1 − drop_percent/100))` after layer k−1 and every later layer.

    Args:
        num_layers: decoder layers.
        num_visual: visual tokens per image.
        k: FastV's K (1 ≤ k ≤ num_layers): the first layer that runs on the kept tokens.
        drop_percent: FastV's R, share of visual tokens dropped, percent in [0, 100].

    Raises:
        ValueError: k or drop_percent out of range.
    """
    if not 1 <= k <= num_layers:
        raise ValueError(f"FastV K must be in [1, {num_layers}], got {k}")
    if not 0 <= drop_percent <= 100:
        raise ValueError(f"FastV R must be a percent in [0, 100], got {drop_percent}")
    kept = round(num_visual * (1 - drop_percent / 100))
    return tuple(num_visual if layer < k - 1 else kept for layer in range(num_layers))


def uniform_keep_counts(num_layers: int, num_visual: int, keep_share: float) -> Tuple[int, ...]:
    """Each layer keeps `keep_share` of the tokens it is entered by: round(V · share^(l+1)).

    Raises:
        ValueError: keep_share outside [0, 1].
    """
    if not 0 <= keep_share <= 1:
        raise ValueError(f"keep_share must be in [0, 1], got {keep_share}")
    return tuple(round(num_visual * keep_share ** (layer + 1)) for layer in range(num_layers))


def _largest_meeting(counts_for: Callable[[float], Sequence[int]], dims: DecoderDims, num_visual: int,
                     reduction_ratio: float) -> Tuple[float, Tuple[int, ...], float]:
    """The largest x in [0, 1] whose keep counts `counts_for(x)` remove at least `reduction_ratio`
    percent (paper convention); counts_for must keep fewer tokens as x falls.

    Returns:
        (x, keep counts, reduction percent).

    Raises:
        ValueError: if even x = 0 does not reach the reduction ratio.
    """
    def reduction(x: float) -> float:
        return paper_reduction(dims, list(counts_for(x)), num_visual)

    if reduction(0.0) < reduction_ratio:
        raise ValueError(f"a reduction of {reduction_ratio:g}% is out of reach: at most {reduction(0.0):.2f}%")
    low, high = 0.0, 1.0
    if reduction(high) >= reduction_ratio:
        low = high
    for _ in range(_BISECTION_STEPS):
        if low == high:
            break
        middle = (low + high) / 2
        if reduction(middle) >= reduction_ratio:
            low = middle
        else:
            high = middle
    counts = tuple(int(c) for c in counts_for(low))
    return low, counts, reduction(low)


def matched_fastv(dims: DecoderDims, num_visual: int, reduction_ratio: float, k: int = FASTV_K) -> Baseline:
    """FastV at layer `k` with the smallest R that removes at least `reduction_ratio` percent.

    Raises:
        ValueError: if the reduction ratio is out of reach with this k (the first k−1 layers and
            layer k−1's attention always run on every visual token).
    """
    def counts_for(keep: float) -> Tuple[int, ...]:
        return fastv_keep_counts(dims.num_layers, num_visual, k, 100 * (1 - keep))

    try:
        keep, counts, reduction = _largest_meeting(counts_for, dims, num_visual, reduction_ratio)
    except ValueError as err:
        raise ValueError(f"FastV with K={k}: {err}") from None
    drop = 100 * (1 - counts[-1] / num_visual)
    return Baseline("fastv", counts, reduction, f"K={k} R={drop:.1f}%")


def matched_uniform(dims: DecoderDims, num_visual: int, reduction_ratio: float) -> Baseline:
    """The uniform per-layer share that removes at least `reduction_ratio` percent.

    Raises:
        ValueError: if the reduction ratio is out of reach (layer 0 always runs on every token).
    """
    def counts_for(share: float) -> Tuple[int, ...]:
        return uniform_keep_counts(dims.num_layers, num_visual, share)

    share, counts, reduction = _largest_meeting(counts_for, dims, num_visual, reduction_ratio)
    return Baseline("uniform", counts, reduction, f"keep {100 * share:.1f}%/layer")


def pruner_installed(model, policy, keep_counts: Sequence[int]) -> ContextManager:
    """A context in which `model` prunes every prefill with `policy` down to `keep_counts` (visual
    tokens left after each layer), whatever was set up before; that comes back on leaving it."""
    from llava.model.pruning.schedules import RecipeSchedule
    from llava.model.pruning.pruner import TokenPruner

    num_visual = model.get_model().num_visual_tokens()
    return model.prefill_hook_installed(TokenPruner(policy, RecipeSchedule(keep_counts, num_visual)))
