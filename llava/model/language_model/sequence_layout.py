"""Per-row bookkeeping of a prefill sequence while visual tokens leave it.

A prefill batch is laid out left-padded: each row of the hidden states belongs to one
segment (padding, prefix before the image, visual token, text after the image), keeps the
RoPE position it had in the unpruned sequence, and, for visual rows, the index of the
token in the original visual grid. Pruning gathers rows of the hidden states and the same
rows of this layout, so everything downstream (masks, positions, scores) stays aligned.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SEGMENT_PAD = 0
SEGMENT_PREFIX = 1
SEGMENT_VISUAL = 2
SEGMENT_TEXT = 3


@dataclass(frozen=True)
class SequenceLayout:
    """What each row of a (B, T) prefill batch holds.

    Attributes:
        segment: (B, T) int8, one of SEGMENT_PAD / PREFIX / VISUAL / TEXT.
        position_ids: (B, T) long, RoPE positions of the unpruned sequence (0 on padding).
        visual_index: (B, T) long, index into the sample's visual tokens as spliced in
            (0..V-1), -1 on every non-visual row.
        initial_visual: (B,) long, visual tokens each sample had before any pruning.
    """

    segment: torch.Tensor
    position_ids: torch.Tensor
    visual_index: torch.Tensor
    initial_visual: torch.Tensor

    @classmethod
    def from_segments(cls, segment: torch.Tensor, visual_index: torch.Tensor) -> "SequenceLayout":
        """Builds a layout whose positions count the real (non-pad) rows of each sample.

        Args:
            segment: (B, T) segment codes.
            visual_index: (B, T) grid indices, -1 on non-visual rows.
        """
        real = segment != SEGMENT_PAD
        position_ids = (real.long().cumsum(dim=1) - 1).clamp(min=0)
        initial_visual = (segment == SEGMENT_VISUAL).sum(dim=1)
        return cls(segment.to(torch.int8), position_ids, visual_index.long(), initial_visual)

    @classmethod
    def text_only(cls, attention_mask: torch.Tensor) -> "SequenceLayout":
        """Layout of a batch with no visual tokens; `attention_mask` (B, T) marks real rows."""
        segment = torch.where(attention_mask.bool(), SEGMENT_TEXT, SEGMENT_PAD)
        return cls.from_segments(segment, torch.full_like(segment, -1, dtype=torch.long))

    @property
    def key_mask(self) -> torch.Tensor:
        """(B, T) bool, True on rows that other tokens may attend to."""
        return self.segment != SEGMENT_PAD

    @property
    def visual_mask(self) -> torch.Tensor:
        """(B, T) bool, True on live visual rows."""
        return self.segment == SEGMENT_VISUAL

    @property
    def text_mask(self) -> torch.Tensor:
        """(B, T) bool, True on text rows after the image (the queries of FitPrune's cross score)."""
        return self.segment == SEGMENT_TEXT

    def visual_count(self) -> torch.Tensor:
        """(B,) long, live visual tokens per sample."""
        return self.visual_mask.sum(dim=1)

    def causal_mask(self) -> torch.Tensor:
        """(B, 1, T, T) bool attention mask: causal over rows, padding keys hidden.

        A padding query attends to itself only, so no softmax row is empty.
        """
        length = self.segment.shape[1]
        device = self.segment.device
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        allowed = causal[None] & self.key_mask[:, None, :]
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=device)[None]
        return allowed[:, None]

    def gather(self, rows: torch.Tensor, real: torch.Tensor) -> "SequenceLayout":
        """Keeps the given rows of each sample.

        Args:
            rows: (B, T') long, row indices to keep, increasing within each sample.
            real: (B, T') bool, False where a gathered row becomes padding.
        """
        segment = self.segment.gather(1, rows).masked_fill(~real, SEGMENT_PAD)
        visual_index = self.visual_index.gather(1, rows).masked_fill(~real, -1)
        position_ids = self.position_ids.gather(1, rows).masked_fill(~real, 0)
        return SequenceLayout(segment, position_ids, visual_index, self.initial_visual)
