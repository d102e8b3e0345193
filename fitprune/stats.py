"""The statistics pass of calibration: how much attention reaches the visual tokens.

A `StatisticsHook` rides the decoder's prefill hook (the same attention code as inference,
nothing dropped) and records, per sample and layer, FitPrune's reference masses:
W_cross = attention that text queries give to visual keys, per text query; W_self =
attention that visual queries give to visual keys, per visual query (head-max, as in
`llava.model.pruning.policies.cross_and_self_scores`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from llava.model.language_model.attention_scores import AttentionQuery
from llava.model.pruning.policies import cross_and_self_scores, fitprune_attention_query
from llava.model.language_model.sequence_layout import SequenceLayout


@dataclass(frozen=True)
class AttentionStats:
    """Reference attention masses of a calibration set.

    Attributes:
        w_cross: (N, L) float64, per sample and layer.
        w_self: (N, L) float64, per sample and layer.
    """

    w_cross: torch.Tensor
    w_self: torch.Tensor

    @classmethod
    def concat(cls, parts: Sequence["AttentionStats"]) -> "AttentionStats":
        """Stacks the samples of several passes."""
        return cls(torch.cat([p.w_cross for p in parts]), torch.cat([p.w_self for p in parts]))


class StatisticsHook:
    """Prefill hook that records W_cross and W_self at every layer and drops nothing."""

    def __init__(self, num_layers: int):
        self.num_layers = num_layers
        self.w_cross: List[Optional[torch.Tensor]] = [None] * num_layers
        self.w_self: List[Optional[torch.Tensor]] = [None] * num_layers

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> AttentionQuery:
        """FitPrune's statistics at every layer."""
        return fitprune_attention_query(layout)

    def after_attention(
        self, layer_idx: int, hidden: torch.Tensor, attention_sums: torch.Tensor, layout: SequenceLayout
    ) -> Tuple[torch.Tensor, SequenceLayout]:
        """Records the layer's masses; returns the rows unchanged."""
        cross, self_score = cross_and_self_scores(attention_sums, layout)
        visual = layout.visual_mask
        self.w_cross[layer_idx] = (cross.double() * visual).sum(dim=1).cpu()
        self.w_self[layer_idx] = (self_score.double() * visual).sum(dim=1).cpu()
        return hidden, layout

    def result(self) -> AttentionStats:
        """(N, L) masses of the samples that went through."""
        return AttentionStats(torch.stack(self.w_cross, dim=1), torch.stack(self.w_self, dim=1))


def collect_stats(decoder, batches: Sequence[Tuple[torch.Tensor, SequenceLayout]]) -> AttentionStats:
    """Runs the statistics pass over prepared prefill batches.

    Args:
        decoder: our `LlamaModel` (the inner model of a LLaVA checkpoint).
        batches: (inputs_embeds (B, T, D), layout) per batch.

    Returns:
        AttentionStats over all samples, in batch order.
    """
    parts = []
    for embeds, layout in batches:
        with decoder.prefill_hook_installed(StatisticsHook(len(decoder.layers))) as hook, torch.no_grad():
            decoder(inputs_embeds=embeds, sequence_layout=layout, use_cache=False)
        parts.append(hook.result())
    return AttentionStats.concat(parts)
