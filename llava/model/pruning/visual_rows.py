"""Attention statistics on the visual key columns, placed back on the rows of a prefill batch.

Policies ask the decoder for sums of attention probabilities on the key columns that are visual in
at least one sample of the batch (`visual_columns`); `on_rows` puts the answer back on the (B, T) rows
of the layout, so scores index like the hidden states.
"""
from __future__ import annotations

import torch

from llava.model.language_model.sequence_layout import SequenceLayout


def visual_columns(layout: SequenceLayout) -> torch.Tensor:
    """(C,) the rows that are visual in at least one sample: the key columns scores are read on."""
    return layout.visual_mask.any(dim=0).nonzero().squeeze(1)


def on_rows(attention_sums: torch.Tensor, layout: SequenceLayout) -> torch.Tensor:
    """(B, W, T) float32: sums on the visual columns (B, W, C) placed on their rows, 0 elsewhere."""
    batch, width, _ = attention_sums.shape
    placed = attention_sums.new_zeros(batch, width, layout.segment.shape[1])
    placed[:, :, visual_columns(layout)] = attention_sums
    return placed
