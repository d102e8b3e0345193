"""Policies that choose visual tokens by similarity of their states, not by attention: DivPrune and DART.

Both act before a layer runs (``acts_before_layer``): they read the rows entering it through a
`LayerProbe` and never need attention probabilities, so every layer keeps fused attention. Each
computes, per sample, the exact set its rule keeps for the schedule's count and scores those rows
above the others; the pruner then drops the rest.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F

from llava.model.language_model.layer_probe import LayerProbe
from llava.model.pruning.budget import scaled_layer, single_cut_fractions
from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.schedules import FractionSchedule

PAPER_DEPTH = 32
"""Layers of the LLaVA-1.5-7B decoder the papers' layer indices refer to (scaled to other depths)."""


def divprune_order(features: torch.Tensor, count: int) -> List[int]:
    """DivPrune's greedy max-min selection of `count` rows of `features` (n, D), in pick order.

    Distances are 1 - cosine similarity (float32). The first pick is the row whose nearest other
    row is farthest (the column's second-smallest distance, the smallest being its own 0); each
    later pick is the row whose distance to the nearest already-picked row is largest. Ties go to
    the lowest row; picked rows are never picked again.
    """
    unit = F.normalize(features.float(), dim=-1)
    distance = 1.0 - unit @ unit.T
    picked: List[int] = []
    if count <= 0:
        return picked
    nearest_other = distance.topk(2, dim=0, largest=False).values[1] if len(unit) > 1 else distance[0]
    picked.append(int(nearest_other.argmax()))
    taken = torch.zeros(len(unit), dtype=torch.bool)
    taken[picked[0]] = True
    closest = distance[picked[0]].clone()
    for _ in range(1, min(count, len(unit))):
        choice = int(closest.masked_fill(taken, float("-inf")).argmax())
        picked.append(choice)
        taken[choice] = True
        closest = torch.minimum(closest, distance[choice])
    return picked


def dart_selection(
    keys: torch.Tensor, states: torch.Tensor, visual: torch.Tensor, text: torch.Tensor, count: int, pivots: Tuple[int, int]
) -> List[int]:
    """DART's duplication-aware choice of `count` visual rows of one sample.

    Pivots: the `pivots[0]` visual rows and the `pivots[1]` text rows with the largest L1 norm of
    `keys` (T, K). The visual pivots are kept; then, pivot by pivot in row order, each takes its
    share of the remaining candidates (visual rows not yet kept) least cosine-similar to it in
    `states` (T, D). Shares split ``count - visual pivots`` evenly, the first pivots taking one
    more when it does not divide.

    Args:
        keys, states: per-row key states and normalised hidden states of the sample.
        visual, text: (T,) bool masks of its live visual rows and its text rows.
        count: visual rows to keep.
        pivots: (visual, text) pivot counts.

    Returns:
        The kept visual row indices (exactly min(count, visual rows) of them).
    """
    norms = keys.float().abs().sum(dim=-1)
    visual_rows = visual.nonzero().squeeze(1)
    text_rows = text.nonzero().squeeze(1)
    count = min(count, len(visual_rows))
    image_pivots = visual_rows[norms[visual_rows].topk(min(pivots[0], count, len(visual_rows))).indices]
    text_pivots = text_rows[norms[text_rows].topk(min(pivots[1], len(text_rows))).indices]
    kept = set(image_pivots.tolist())
    order = sorted(kept) + sorted(text_pivots.tolist())
    left = count - len(kept)
    unit = F.normalize(states.float(), dim=-1)
    for position, pivot in enumerate(order):
        share = left // len(order) + (1 if position < left % len(order) else 0)
        candidates = torch.tensor([row for row in visual_rows.tolist() if row not in kept], dtype=torch.long)
        if share == 0 or len(candidates) == 0:
            continue
        similarity = unit[candidates] @ unit[pivot]
        kept.update(candidates[similarity.argsort(stable=True)[:share]].tolist())
    return sorted(kept)


def _marked(layout_shape: Tuple[int, int], chosen: List[List[int]], device: torch.device) -> torch.Tensor:
    """(B, T) float scores: 1 on each sample's chosen rows, 0 elsewhere."""
    scores = torch.zeros(layout_shape, device=device)
    for sample, rows in enumerate(chosen):
        scores[sample, rows] = 1.0
    return scores


class DivPrunePolicy:
    """DivPrune (Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal
    Models", CVPR 2025): keeps the most diverse visual tokens, greedy max-min over cosine distances.

    Scores: the states of the live visual rows entering the layer (before layer 0: the projected
    visual embeddings, as the paper does). Acts before the layer; needs no attention probabilities.
    Own schedule (``schedule_for_budget``): one cut before layer 0 keeping the most tokens the FLOPs
    budget allows (the paper sets a kept ratio, e.g. 0.098 of the visual tokens). A budget needing fewer than 1
    token is an error. Deviations: distances in float32; kept tokens keep their original positions.
    """

    name = "divprune"
    acts_before_layer = True

    def rank(self, layer_idx: int, probe: LayerProbe, keep: torch.Tensor) -> torch.Tensor:
        """(B, T) 1 on the rows DivPrune keeps (`keep` (B,) of them), else 0."""
        visual = probe.layout.visual_mask
        chosen = []
        for sample in range(visual.shape[0]):
            rows = visual[sample].nonzero().squeeze(1)
            order = divprune_order(probe.hidden[sample, rows], int(keep[sample]))
            chosen.append(rows[order].tolist())
        return _marked(visual.shape, chosen, visual.device)

    def schedule_for_budget(self, ratio: float, dims: DecoderDims, num_visual: int) -> FractionSchedule:
        """One cut before layer 0 (`budget.single_cut_fractions`)."""
        return FractionSchedule(single_cut_fractions(dims, 0, ratio, num_visual, "DivPrune"))


class DartPolicy:
    """DART (Wen et al., "Stop Looking for Important Tokens in Multimodal Language Models:
    Duplication Matters More", EMNLP 2025): keeps the visual tokens least duplicated by pivot tokens.

    Scores (`dart_selection`): pivots are the 4 visual and 4 text rows with the largest L1 norm of
    the previous layer's rotated keys (what its KV cache holds; the layer's own keys before layer
    0), and similarity is the cosine of the hidden states entering the layer through the decoder's
    final norm. Acts before layer K; needs no attention probabilities. Own schedule
    (``schedule_for_budget``): one cut before K = 2 of 32 layers, scaled to the depth (at least 1),
    keeping the most tokens the FLOPs budget allows. Deviations from the repository: shares are
    split so the kept count is exactly the schedule's (it keeps ``int(kept / 8)`` per pivot), pivots
    are visited in row order (it visits a Python set), and positions are the original ones.
    """

    name = "dart"
    acts_before_layer = True
    pivots = (4, 4)
    paper_layer = 2

    def rank(self, layer_idx: int, probe: LayerProbe, keep: torch.Tensor) -> torch.Tensor:
        """(B, T) 1 on the rows DART keeps (`keep` (B,) of them), else 0."""
        keys = probe.previous_keys()
        keys = probe.keys() if keys is None else keys
        states = probe.normed()
        layout = probe.layout
        chosen = [
            dart_selection(keys[b], states[b], layout.visual_mask[b], layout.text_mask[b], int(keep[b]), self.pivots)
            for b in range(keys.shape[0])
        ]
        return _marked(layout.visual_mask.shape, chosen, keys.device)

    def schedule_for_budget(self, ratio: float, dims: DecoderDims, num_visual: int) -> FractionSchedule:
        """One cut before layer K (`budget.single_cut_fractions`)."""
        layer = scaled_layer(self.paper_layer, PAPER_DEPTH, dims.num_layers, minimum=1)
        return FractionSchedule(single_cut_fractions(dims, layer, ratio, num_visual, "DART"))
