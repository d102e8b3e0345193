"""What a prefill hook may read before a decoder layer runs: its input rows, their keys and attention.

The decoder hands a `LayerProbe` to `PrefillHook.before_layer` before every layer of a prefill.
Nothing is computed until a method is called, so a hook that reads nothing costs nothing. The
probe reads the layer's own modules (`input_layernorm`, `self_attn.rotated_query_key`), the same
weights and rotations the layer's attention uses.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch

from llava.model.language_model.attention_scores import AttentionQuery, attention_statistics
from llava.model.language_model.sequence_layout import SequenceLayout


def _rotated_query_key(layer: Any, hidden: torch.Tensor, layout: SequenceLayout) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, H, T, Dh) queries and (B, Hkv, T, Dh) keys the decoder `layer` forms from its input `hidden`."""
    return layer.self_attn.rotated_query_key(layer.input_layernorm(hidden), layout.position_ids)


class LayerProbe:
    """Lazy views of one decoder layer's input during prefill.

    Attributes:
        hidden: (B, T, D) rows entering the layer.
        layout: what each row holds.
    """

    def __init__(
        self,
        layer: Any,
        final_norm: Callable[[torch.Tensor], torch.Tensor],
        hidden: torch.Tensor,
        layout: SequenceLayout,
        previous: Optional[Tuple[Any, torch.Tensor, SequenceLayout]] = None,
    ):
        """Args:
        layer: the decoder layer about to run.
        final_norm: the decoder's last norm (applied to `hidden` by `normed`).
        hidden, layout: the rows entering the layer.
        previous: (layer, hidden, layout) of the layer before, as it was entered, or None at layer 0.
        """
        self.layer = layer
        self.final_norm = final_norm
        self.hidden = hidden
        self.layout = layout
        self.previous = previous

    def normed(self) -> torch.Tensor:
        """(B, T, D) the input rows through the decoder's final norm, in the model's dtype."""
        return self.final_norm(self.hidden)

    def keys(self) -> torch.Tensor:
        """(B, T, Hkv·Dh) this layer's rotated keys of the input rows, heads concatenated."""
        return _concat_heads(_rotated_query_key(self.layer, self.hidden, self.layout)[1])

    def previous_keys(self) -> Optional[torch.Tensor]:
        """(B, T, Hkv·Dh) the previous layer's rotated keys (what its KV cache holds) of the input
        rows, heads concatenated; None before layer 0. A row's key depends on that row alone, so when
        rows left after the previous layer's attention the rest are matched by position id.

        Raises:
            ValueError: a real input row was not among the previous layer's input rows.
        """
        if self.previous is None:
            return None
        layer, hidden, layout = self.previous
        keys = _concat_heads(_rotated_query_key(layer, hidden, layout)[1])
        if hidden.shape == self.hidden.shape and torch.equal(layout.position_ids, self.layout.position_ids):
            return keys
        same = (self.layout.position_ids[:, :, None] == layout.position_ids[:, None, :]) & layout.key_mask[:, None, :]
        if bool((self.layout.key_mask & ~same.any(dim=2)).any()):
            raise ValueError("a row entering this layer was not in the previous layer's input: no key to align")
        rows = same.to(torch.int8).argmax(dim=2)  # padding rows (no match) take row 0's key, never read
        return keys.gather(1, rows[..., None].expand(-1, -1, keys.shape[-1]))

    def statistics(self, query: AttentionQuery) -> torch.Tensor:
        """(B, W, C) float32 sums of `query` over this layer's causal softmax attention of the input rows
        (what its attention would return to `after_attention`, before any row leaves)."""
        q, k = _rotated_query_key(self.layer, self.hidden, self.layout)
        return attention_statistics(q, k, self.layout.causal_mask(), query)


def _concat_heads(states: torch.Tensor) -> torch.Tensor:
    """(B, T, H·Dh) from (B, H, T, Dh)."""
    batch, heads, length, head_dim = states.shape
    return states.transpose(1, 2).reshape(batch, length, heads * head_dim)
