"""Where FitPrune's scores fall on the image: the cross and self scores of each visual token
at one layer, averaged over samples by the token's grid index, nothing dropped.

Under causal attention a visual token is seen only by the visual queries after it, so the
self score (a mean over all visual queries) leans towards early patches; the profile shows
how much, and whether the cross score (from the text) outweighs it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

from llava.model.language_model.attention_scores import AttentionQuery
from llava.model.pruning.policies import cross_and_self_scores, fitprune_attention_query
from llava.model.language_model.sequence_layout import SequenceLayout


@dataclass(frozen=True)
class ScoreProfile:
    """Mean scores per grid index at one layer.

    Attributes:
        layer: the decoder layer.
        cross: (V,) float64, mean cross score of grid index v (attention from text queries,
            per text query; `llava.model.pruning.policies.cross_and_self_scores`).
        self_score: (V,) float64, mean self score (attention from visual queries, per visual query).
        samples: samples averaged.
    """

    layer: int
    cross: torch.Tensor
    self_score: torch.Tensor
    samples: int

    def by_row(self, row_length: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(cross, self) averaged over each run of `row_length` grid indices (image rows)."""
        rows = self.cross.numel() // row_length
        shape = (rows, row_length)
        return self.cross[:rows * row_length].view(shape).mean(1), self.self_score[:rows * row_length].view(shape).mean(1)


class _ProfileHook:
    """Prefill hook that sums one layer's scores by grid index and drops nothing."""

    def __init__(self, layer: int, num_visual: int):
        self.layer = layer
        self.cross = torch.zeros(num_visual, dtype=torch.float64)
        self.self_score = torch.zeros(num_visual, dtype=torch.float64)
        self.samples = 0

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> Optional[AttentionQuery]:
        return fitprune_attention_query(layout) if layer_idx == self.layer else None

    def after_attention(self, layer_idx: int, hidden: torch.Tensor, attention_sums: Optional[torch.Tensor],
                        layout: SequenceLayout):
        if layer_idx == self.layer:
            cross, self_score = cross_and_self_scores(attention_sums, layout)
            visual = layout.visual_mask
            index = layout.visual_index[visual].cpu()
            self.cross.index_add_(0, index, cross[visual].double().cpu())
            self.self_score.index_add_(0, index, self_score[visual].double().cpu())
            self.samples += hidden.shape[0]
        return hidden, layout


def score_profile(model, batches: Sequence, layer: int = 0) -> ScoreProfile:
    """The mean FitPrune scores per grid index at `layer` over the prompts of `batches`
    (`fitprune.lab.answers.PromptBatch`), every visual token kept. Samples must have the same
    number of visual tokens (LLaVA-1.5 grids, not anyres)."""
    decoder = model.get_model()
    hook = _ProfileHook(layer, decoder.num_visual_tokens())
    with model.prefill_hook_installed(hook), torch.inference_mode():
        for batch in batches:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, images=batch.images,
                  use_cache=False)
    return ScoreProfile(layer, hook.cross / hook.samples, hook.self_score / hook.samples, hook.samples)
