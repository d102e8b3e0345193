"""Scoring policies for the decoder's token pruner: which live visual tokens matter most.

Each policy is a small object with `score(layer_idx, attention, layout) -> (B, T)`; higher
scores are kept. Only the visual rows of the scores are read. `attention` is the layer's
`LayerAttention`: a policy that reads attention computes only the probabilities it needs
from it (the random and forced policies never touch it).
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from llava.model.language_model.attention_scores import LayerAttention
from llava.model.language_model.sequence_layout import SequenceLayout


def cross_and_self_scores(attention: LayerAttention, layout: SequenceLayout) -> Tuple[torch.Tensor, torch.Tensor]:
    """FitPrune's per-token attention scores on the head-max map.

    With A[b, i, j] = max over heads of the softmax probabilities:
    cross[b, j] = sum of A[b, i, j] over text queries i / number of text queries;
    self[b, j] = sum of A[b, i, j] over visual queries i / number of visual queries.
    Summed over visual keys j they give the layer's W_cross and W_self.

    Only the text and visual query rows and the visual key columns are computed, from the
    layer's queries and keys, a chunk of rows at a time (`LayerAttention.head_max_sums`).

    Args:
        attention: the layer's queries, keys and mask.
        layout: the rows' segments.

    Returns:
        cross, self: (B, T) float32; meaningful on visual rows only (0 elsewhere).
    """
    text = layout.text_mask.float()
    visual = layout.visual_mask.float()
    columns = layout.visual_mask.any(dim=0).nonzero().squeeze(1)
    sums = attention.head_max_sums(torch.stack([text, visual], dim=1), columns)  # (B, 2, C)
    scores = sums.new_zeros(2, *text.shape)
    scores[:, :, columns] = sums.transpose(0, 1)
    cross = scores[0] / text.sum(dim=1, keepdim=True).clamp(min=1)
    self_score = scores[1] / visual.sum(dim=1, keepdim=True).clamp(min=1)
    return cross, self_score


class FitPrunePolicy:
    """FitPrune's inference ranking: cross score × self score (see `cross_and_self_scores`)."""

    name = "fitprune"

    def score(self, layer_idx: int, attention: LayerAttention, layout: SequenceLayout) -> torch.Tensor:
        """(B, T) cross × self scores of the layer's attention."""
        cross, self_score = cross_and_self_scores(attention, layout)
        return cross * self_score


class FastVPolicy:
    """FastV's ranking: attention each visual token receives from the sample's last
    prompt token, averaged over heads."""

    name = "fastv"

    def score(self, layer_idx: int, attention: LayerAttention, layout: SequenceLayout) -> torch.Tensor:
        """(B, T) head-mean attention of the last row (left-padded batches end on a real token)."""
        return attention.head_mean_of_row(attention.shape[2] - 1)


class RandomPolicy:
    """Random ranking for ablations, fixed by a seed, the layer and the grid index, so a
    sample gets the same choice alone or in any batch."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, layer_idx: int, attention: LayerAttention, layout: SequenceLayout) -> torch.Tensor:
        """(B, T) pseudo-random scores of the visual rows."""
        grid_size = int(layout.initial_visual.max()) + 1
        generator = torch.Generator().manual_seed(self.seed * 100003 + layer_idx)
        table = torch.rand(grid_size, generator=generator).to(layout.visual_index.device)
        return table[layout.visual_index.clamp(min=0)]


class ForcedPolicy:
    """Keeps exactly the grid indices given per layer (replays a recorded pruning)."""

    name = "forced"

    def __init__(self, kept: Dict[int, torch.Tensor]):
        """Args:
        kept: layer index -> (B, K) grid indices to keep after that layer.
        """
        self.kept = kept

    def score(self, layer_idx: int, attention: LayerAttention, layout: SequenceLayout) -> torch.Tensor:
        """(B, T) 1.0 on rows whose grid index is in the forced set of this layer, else 0."""
        wanted = self.kept[layer_idx].to(layout.visual_index.device)  # (B, K)
        hits = (layout.visual_index[:, :, None] == wanted[:, None, :]).any(dim=-1)
        return hits.float()


POLICIES = {
    "fitprune": lambda seed: FitPrunePolicy(),
    "fastv": lambda seed: FastVPolicy(),
    "random": RandomPolicy,
}
"""Policies a config can name (``fitprune_policy``), each built from the config's ``fitprune_seed``."""


def policy_named(name: str, seed: int = 0):
    """The scoring policy called `name` ("fitprune", "fastv" or "random"); `seed` fixes the random one.

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    if name not in POLICIES:
        raise ValueError(f"unknown pruning policy {name!r}; choose one of {sorted(POLICIES)}")
    return POLICIES[name](seed)
