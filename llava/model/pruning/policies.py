"""Scoring policies for the decoder's token pruner: which live visual tokens matter most.

Each policy is a small object with `attention_query(layer_idx, layout)`: the attention
statistics it reads at a layer (an `AttentionQuery`, or None), which the layer's attention
computes alongside its output; and `score(layer_idx, attention_sums, layout) -> (B, T)`,
higher scores kept. Only the visual rows of the scores are read.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from llava.model.language_model.attention_scores import AttentionQuery
from llava.model.language_model.sequence_layout import SequenceLayout


def fitprune_attention_query(layout: SequenceLayout) -> AttentionQuery:
    """The statistics FitPrune's scores need: head-max probabilities on the visual key columns,
    summed over text query rows and over visual query rows, each divided by its row count."""
    text = layout.text_mask.float()
    visual = layout.visual_mask.float()
    weights = torch.stack([text / text.sum(dim=1, keepdim=True).clamp(min=1),
                           visual / visual.sum(dim=1, keepdim=True).clamp(min=1)], dim=1)  # (B, 2, T)
    return AttentionQuery(weights, _visual_columns(layout), heads="max")


def cross_and_self_scores(attention_sums: torch.Tensor, layout: SequenceLayout) -> Tuple[torch.Tensor, torch.Tensor]:
    """FitPrune's per-token attention scores on the head-max map, from the answer to
    `fitprune_attention_query`.

    With A[b, i, j] = max over heads of the softmax probabilities:
    cross[b, j] = sum of A[b, i, j] over text queries i / number of text queries;
    self[b, j] = sum of A[b, i, j] over visual queries i / number of visual queries.
    Summed over visual keys j they give the layer's W_cross and W_self.

    Args:
        attention_sums: (B, 2, C) float32 sums on the visual columns.
        layout: the rows' segments.

    Returns:
        cross, self: (B, T) float32; meaningful on visual rows only (0 elsewhere).
    """
    cross, self_score = _on_rows(attention_sums, layout).unbind(dim=1)
    return cross, self_score


def _visual_columns(layout: SequenceLayout) -> torch.Tensor:
    """(C,) the rows that are visual in at least one sample: the key columns scores are read on."""
    return layout.visual_mask.any(dim=0).nonzero().squeeze(1)


def _on_rows(attention_sums: torch.Tensor, layout: SequenceLayout) -> torch.Tensor:
    """(B, W, T) float32: sums on the visual columns (B, W, C) placed on their rows, 0 elsewhere."""
    batch, width, _ = attention_sums.shape
    placed = attention_sums.new_zeros(batch, width, layout.segment.shape[1])
    placed[:, :, _visual_columns(layout)] = attention_sums
    return placed


class FitPrunePolicy:
    """FitPrune's inference ranking: cross score × self score (see `cross_and_self_scores`)."""

    name = "fitprune"

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> AttentionQuery:
        """Head-max sums over text and visual queries (`fitprune_attention_query`)."""
        return fitprune_attention_query(layout)

    def score(self, layer_idx: int, attention_sums: torch.Tensor, layout: SequenceLayout) -> torch.Tensor:
        """(B, T) cross × self scores."""
        cross, self_score = cross_and_self_scores(attention_sums, layout)
        return cross * self_score


class FastVPolicy:
    """FastV's ranking: attention each visual token receives from the sample's last
    prompt token, averaged over heads."""

    name = "fastv"

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> AttentionQuery:
        """Head-mean probabilities of the last row (left-padded batches end on a real token)."""
        batch, length = layout.segment.shape
        last_row = torch.zeros(batch, 1, length, device=layout.segment.device)
        last_row[:, :, -1] = 1.0
        return AttentionQuery(last_row, _visual_columns(layout), heads="mean")

    def score(self, layer_idx: int, attention_sums: torch.Tensor, layout: SequenceLayout) -> torch.Tensor:
        """(B, T) the last row's head-mean attention on each visual row."""
        return _on_rows(attention_sums, layout)[:, 0]


class ReadsNoAttention:
    """Base of the policies that rank without attention: the layer keeps its fast attention."""

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> None:
        """No statistics."""
        return None


class RandomPolicy(ReadsNoAttention):
    """Random ranking for ablations, fixed by a seed, the layer and the grid index, so a
    sample gets the same choice alone or in any batch."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, layer_idx: int, attention_sums: Optional[torch.Tensor], layout: SequenceLayout) -> torch.Tensor:
        """(B, T) pseudo-random scores of the visual rows."""
        grid_size = int(layout.initial_visual.max()) + 1
        generator = torch.Generator().manual_seed(self.seed * 100003 + layer_idx)
        table = torch.rand(grid_size, generator=generator).to(layout.visual_index.device)
        return table[layout.visual_index.clamp(min=0)]


class ForcedPolicy(ReadsNoAttention):
    """Keeps exactly the grid indices given per layer (replays a recorded pruning)."""

    name = "forced"

    def __init__(self, kept: Dict[int, torch.Tensor]):
        """Args:
        kept: layer index -> (B, K) grid indices to keep after that layer.
        """
        self.kept = kept

    def score(self, layer_idx: int, attention_sums: Optional[torch.Tensor], layout: SequenceLayout) -> torch.Tensor:
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
