"""A fit's mean deletions per layer rounded to a recipe that meets its FLOPs budget within one point.

    keep = round_keep_counts(dims, num_visual, mean_deleted, 60.0)   # L integer keep counts
    fractions = round_keep_fractions(dims, counts, mean_fraction, 60.0)  # L keep fractions

The cumulative keep levels are rounded, then one more level is deleted at the last deleting
layer while the paper-convention reduction is below the budget, and levels are restored while
it stays at or above the budget + `LABEL_TOLERANCE`; the reduction grows with deletions, so
each stop is found by galloping and bisection (`_first_stop`).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch

from llava.model.pruning.flops import DecoderDims, paper_reduction
from llava.model.pruning.recipe import LABEL_TOLERANCE
from llava.model.pruning.recipe_fields import keep_counts_for_fractions

FRACTION_DECIMALS = 4
"""Decimals of a fitted fractional recipe's keep fractions (steps of 1e-4 of a sample's tokens)."""


def _first_stop(first: List[int], successor: Callable[[List[int]], Optional[List[int]]],
                stop: Callable[[List[int], Optional[List[int]]], bool]) -> List[int]:
    """The first state s of first, successor(first), ... with stop(s, successor(s)).

    `successor` returns None after the last state, where `stop` must hold; `stop` must be
    monotone along the sequence (false, ..., false, true, ...). States are cheap to make and
    `stop` is not, so it is evaluated O(log n) times: galloping, then bisection.
    """
    states = [first]

    def state(i):
        while len(states) <= i and states[-1] is not None:
            states.append(successor(states[-1]))
        return states[i] if i < len(states) else None

    def holds(i):
        return state(i) is None or stop(state(i), state(i + 1))

    if holds(0):
        return first
    low, high = 0, 1  # holds(low) is false
    while not holds(high):
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if holds(middle) else (middle, high)
    return states[high] if states[high] is not None else states[low]


def _meet_budget(levels: List[int], top: int, reduction: Callable[[List[int]], float], ratio: float) -> List[int]:
    """Adjusts non-increasing integer keep levels (0..top) until ratio <= reduction < ratio + 1.

    Deletes one more level at the last deleting layer (and every later layer; at an earlier
    layer once that one is at 0) while the reduction is below `ratio`, then restores one level
    at a time at the last deleting layer while the reduction is at or above `ratio` + 1 and
    the restored levels still reach `ratio`. The reduction only grows with deletions, so the
    first levels where each loop would stop are found by search (`_first_stop`).

    Args:
        levels: L keep levels, each in [0, top].
        top: the level of an unpruned layer.
        reduction: paper-convention reduction (percent) of some levels; evaluated O(log n) times.
        ratio: the budget, percent.

    Returns:
        The adjusted levels, non-increasing.
    """
    keep = [min(k, prev) for k, prev in zip(levels, [top] + levels[:-1])]
    cached = {}

    def reduction_of(counts):
        key = tuple(counts)
        if key not in cached:
            cached[key] = reduction(counts)
        return cached[key]

    def last_deleting_layer(counts):
        previous = [top] + counts[:-1]
        layers = [i for i, (p, k) in enumerate(zip(previous, counts)) if k < p]
        return layers[-1] if layers else None

    def delete_one(counts):
        if counts[0] == 0:
            return None
        layer = last_deleting_layer(counts)
        layer = 0 if layer is None else layer
        while counts[layer] == 0:
            layer -= 1
        counts = counts[:layer] + [k - 1 if k > 0 else 0 for k in counts[layer:]]
        return [min(k, prev) for k, prev in zip(counts, [top] + counts[:-1])]

    def restore_one(counts):
        layer = last_deleting_layer(counts)
        if layer is None:
            return None
        ceiling = top if layer == 0 else counts[layer - 1]
        return counts[:layer] + [min(k + 1, ceiling) for k in counts[layer:]]

    keep = _first_stop(keep, delete_one, lambda counts, _: reduction_of(counts) >= ratio)
    return _first_stop(
        keep, restore_one,
        lambda counts, restored: (reduction_of(counts) < ratio + LABEL_TOLERANCE or restored is None
                                  or reduction_of(restored) < ratio),
    )


def _cumulative_keep(top: float, mean_deleted: Sequence[float]) -> torch.Tensor:
    """(L,) float64 `top` minus the running sum of `mean_deleted`."""
    return top - torch.tensor(list(mean_deleted), dtype=torch.float64).cumsum(0)


def round_keep_counts(dims: DecoderDims, num_visual: int, mean_deleted: Sequence[float], ratio: float) -> List[int]:
    """Integer keep counts from mean deletions, meeting the budget within one point.

    Rounds the cumulative keep counts to the nearest integer, then deletes one more token
    at the last deleting layer while the paper-convention reduction is below `ratio`, and
    restores tokens at the last deleting layers while it stays at or above `ratio` + 1.

    Args:
        dims: decoder sizes.
        num_visual: visual tokens entering layer 0.
        mean_deleted: (L,) mean deletions per layer.
        ratio: the budget, percent.

    Returns:
        L non-increasing keep counts with ratio <= reduction < ratio + 1 where reachable.
    """
    keep = [max(0, int(round(float(c)))) for c in _cumulative_keep(num_visual, mean_deleted)]
    return _meet_budget(keep, num_visual, lambda counts: paper_reduction(dims, counts, num_visual), ratio)


def round_keep_fractions(
    dims: DecoderDims, visual_counts: Sequence[int], mean_deleted_fraction: Sequence[float], ratio: float
) -> List[float]:
    """Keep fractions from mean deleted fractions, meeting the budget on the samples' own counts.

    The cumulative keep fractions are rounded to `FRACTION_DECIMALS` decimals; then, as in
    `round_keep_counts`, one step (1e-4) more is deleted at the last deleting layer while the
    paper-convention reduction is below `ratio`, and steps are restored while it stays at or
    above `ratio` + 1. The reduction is that of the keep counts the fractions give each sample
    (`keep_counts_for_fractions`), FLOPs averaged over the samples.

    Args:
        dims: decoder sizes.
        visual_counts: each calibration sample's initial visual tokens, shape (S,).
        mean_deleted_fraction: (L,) mean over samples of deleted / initial visual tokens per layer.
        ratio: the budget, percent.

    Returns:
        L non-increasing fractions in [0, 1] with ratio <= reduction < ratio + 1 where reachable.
    """
    steps = 10**FRACTION_DECIMALS
    counts = list(visual_counts)
    levels = [min(steps, max(0, int(round(float(f) * steps)))) for f in _cumulative_keep(1.0, mean_deleted_fraction)]

    def reduction(keep_levels):
        fractions = [level / steps for level in keep_levels]
        return paper_reduction(dims, keep_counts_for_fractions(fractions, counts), counts)

    return [level / steps for level in _meet_budget(levels, steps, reduction, ratio)]
