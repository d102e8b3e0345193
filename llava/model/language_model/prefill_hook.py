"""The decoder's hook contract for a prefill: what a `PrefillHook` is called with, and the
`PruningTrace` of what one prefill kept.

The decoder (`modeling_llama.LlamaModel`) owns this contract; the token pruner
(`llava.model.pruning.pruner.TokenPruner`) and the statistics collectors of the `fitprune`
package implement it. Nothing here imports the pruning package.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Protocol, Tuple

import torch

from llava.model.language_model.attention_scores import AttentionQuery
from llava.model.language_model.layer_probe import LayerProbe
from llava.model.language_model.sequence_layout import SequenceLayout


class PrefillHook(Protocol):
    """What the decoder calls during prefill, once per layer: optionally `before_layer` (the rows
    that enter the layer), which attention statistics it needs (before the layer's attention),
    then the rows that continue (after it)."""

    def before_layer(
        self, layer_idx: int, hidden: torch.Tensor, layout: SequenceLayout, probe: LayerProbe
    ) -> Tuple[torch.Tensor, SequenceLayout]:
        """Optional: the hidden states (B, T', D) and layout that enter the layer (`probe` reads its input).
        A hook without this method sees every row enter."""

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> Optional[AttentionQuery]:
        """The statistics the layer's attention must return to `after_attention`, or None."""

    def after_attention(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        attention_sums: Optional[torch.Tensor],
        layout: SequenceLayout,
    ) -> Tuple[torch.Tensor, SequenceLayout]:
        """Returns the hidden states (B, T', D) and layout that continue to the MLP.

        `attention_sums` answers `attention_query` (None when it returned None).
        """


@dataclass
class PruningTrace:
    """What one prefill kept: per layer and sample, live counts and kept grid indices after the layer,
    and the visual tokens that entered it (fewer than the previous layer left when a policy acting
    before the layer dropped some: count the layer's FLOPs from these)."""

    live_counts: List[torch.Tensor] = field(default_factory=list)
    visual_index: List[torch.Tensor] = field(default_factory=list)
    entering_counts: List[torch.Tensor] = field(default_factory=list)

    def enter(self, layout: SequenceLayout) -> None:
        """Records the rows entering one layer."""
        self.entering_counts.append(layout.visual_count().cpu())

    def entered(self) -> torch.Tensor:
        """(L, B) long: visual tokens entering each layer."""
        return torch.stack(self.entering_counts)

    def record(self, layout: SequenceLayout) -> None:
        """Appends the state after one layer."""
        self.live_counts.append(layout.visual_count().cpu())
        self.visual_index.append(layout.visual_index.cpu())

    def counts(self) -> torch.Tensor:
        """(L, B) long: live visual tokens after each layer."""
        return torch.stack(self.live_counts)

    def kept_indices(self, layer_idx: int, sample: int) -> torch.Tensor:
        """Increasing grid indices of the visual tokens of `sample` alive after `layer_idx`."""
        row = self.visual_index[layer_idx][sample]
        return row[row >= 0]
