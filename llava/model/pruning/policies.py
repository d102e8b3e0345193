"""Scoring policies for the decoder's token pruner: which live visual tokens matter most.

Each policy is a small object with `needs_attention` and `score(layer_idx, attn_probs,
layout) -> (B, T)`; higher scores are kept. Only the visual rows of the scores are read.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from llava.model.language_model.sequence_layout import SequenceLayout

SCORE_CHUNK_ELEMENTS = 1 << 20
"""Most float32 values of the head-max map widened at once by `cross_and_self_scores` (4 MiB)."""


def cross_and_self_scores(attn_probs: torch.Tensor, layout: SequenceLayout) -> Tuple[torch.Tensor, torch.Tensor]:
    """FitPrune's per-token attention scores on the head-max map.

    With A[b, i, j] = max over heads of the softmax probabilities:
    cross[b, j] = sum of A[b, i, j] over text queries i / number of text queries;
    self[b, j] = sum of A[b, i, j] over visual queries i / number of visual queries.
    Summed over visual keys j they give the layer's W_cross and W_self.

    Args:
        attn_probs: (B, H, T, T) softmax probabilities.
        layout: the rows' segments.

    Returns:
        cross, self: (B, T) float32; meaningful on visual rows only.

    The head-max map is taken over chunks of query rows and widened to float32 one chunk at a
    time (at most `SCORE_CHUNK_ELEMENTS` values), so a half-precision model never gets a float32
    copy of its (B, T, T) attention.
    """
    batch, _, rows, keys = attn_probs.shape
    text = layout.text_mask.float()
    visual = layout.visual_mask.float()
    cross = attn_probs.new_zeros(batch, keys, dtype=torch.float32)
    self_score = attn_probs.new_zeros(batch, keys, dtype=torch.float32)
    chunk = max(1, SCORE_CHUNK_ELEMENTS // max(1, batch * keys))
    for start in range(0, rows, chunk):
        head_max = attn_probs[:, :, start:start + chunk].amax(dim=1).float()  # (B, chunk, T)
        cross += torch.einsum("bij,bi->bj", head_max, text[:, start:start + chunk])
        self_score += torch.einsum("bij,bi->bj", head_max, visual[:, start:start + chunk])
    cross /= text.sum(dim=1, keepdim=True).clamp(min=1)
    self_score /= visual.sum(dim=1, keepdim=True).clamp(min=1)
    return cross, self_score


class FitPrunePolicy:
    """FitPrune's inference ranking: cross score × self score (see `cross_and_self_scores`)."""

    name = "fitprune"
    needs_attention = True

    def score(self, layer_idx: int, attn_probs: Optional[torch.Tensor], layout: SequenceLayout) -> torch.Tensor:
        """(B, T) cross × self scores from `attn_probs` (B, H, T, T)."""
        cross, self_score = cross_and_self_scores(attn_probs, layout)
        return cross * self_score


class FastVPolicy:
    """FastV's ranking: attention each visual token receives from the sample's last
    prompt token, averaged over heads."""

    name = "fastv"
    needs_attention = True

    def score(self, layer_idx: int, attn_probs: Optional[torch.Tensor], layout: SequenceLayout) -> torch.Tensor:
        """(B, T) head-mean attention of the last row (left-padded batches end on a real token)."""
        return attn_probs[:, :, -1, :].float().mean(dim=1)


class RandomPolicy:
    """Random ranking for ablations, fixed by a seed, the layer and the grid index, so a
    sample gets the same choice alone or in any batch."""

    name = "random"
    needs_attention = False

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, layer_idx: int, attn_probs: Optional[torch.Tensor], layout: SequenceLayout) -> torch.Tensor:
        """(B, T) pseudo-random scores of the visual rows."""
        grid_size = int(layout.initial_visual.max()) + 1
        generator = torch.Generator().manual_seed(self.seed * 100003 + layer_idx)
        table = torch.rand(grid_size, generator=generator).to(layout.visual_index.device)
        return table[layout.visual_index.clamp(min=0)]


class ForcedPolicy:
    """Keeps exactly the grid indices given per layer (replays a recorded pruning)."""

    name = "forced"
    needs_attention = False

    def __init__(self, kept: Dict[int, torch.Tensor]):
        """Args:
        kept: layer index -> (B, K) grid indices to keep after that layer.
        """
        self.kept = kept

    def score(self, layer_idx: int, attn_probs: Optional[torch.Tensor], layout: SequenceLayout) -> torch.Tensor:
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
