"""Softmax attention of one layer, with the attention statistics a scoring policy reads.

Where no probability is needed, a layer's attention is `scaled_dot_product_attention`. At a
layer where a pruning policy scores tokens, the probabilities are needed too, and they come
from the same computation as the output: `attend` works through the query rows a chunk at a
time (at most `SCORE_CHUNK_ELEMENTS` logits per chunk, so memory is O(rows x keys) per chunk
and never O(heads x T x T)); each chunk's float32 softmax gives both the chunk's output rows
and its share of the statistics the policy asked for in an `AttentionQuery`: for given key
columns, the heads' probabilities combined (max or mean) and summed over query rows with
per-sample row weights. Nothing but those (B, W, C) sums leaves the layer.

Logits are computed in the model's dtype (queries scaled by 1/sqrt(head_dim) first), the
softmax runs in float32 and the probabilities are cast back for the product with the values,
as in transformers 4.31's eager attention; the statistics are read from the float32
probabilities, their heads combined before the queried columns are picked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

SCORE_CHUNK_ELEMENTS = 1 << 21
"""Most logits of one chunk of query rows: batch x heads x rows x keys (8 MiB of float32)."""

HEAD_REDUCTIONS = ("max", "mean")


@dataclass(frozen=True)
class AttentionQuery:
    """The attention statistics a scoring policy reads at one layer.

    With R[b, i, j] the probabilities P[b, h, i, j] combined over heads h by `heads`, the
    layer returns S[b, w, c] = sum over query rows i of row_weights[b, w, i] * R[b, i, columns[c]].

    Attributes:
        row_weights: (B, W, T) float32 weights of the query rows.
        columns: (C,) long indices of the key columns read.
        heads: "max" or "mean".
    """

    row_weights: torch.Tensor
    columns: torch.Tensor
    heads: str

    def __post_init__(self):
        if self.heads not in HEAD_REDUCTIONS:
            raise ValueError(f"heads must be one of {HEAD_REDUCTIONS}, got {self.heads!r}")

    def combine_heads(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, r, S) from (B, H, r, S) probabilities."""
        return probs.amax(dim=1) if self.heads == "max" else probs.mean(dim=1)


def _row_chunk_size(batch: int, heads: int, keys: int) -> int:
    """Query rows per chunk so that a chunk holds at most `SCORE_CHUNK_ELEMENTS` logits."""
    return max(1, SCORE_CHUNK_ELEMENTS // max(1, batch * heads * keys))


def attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    allowed: torch.Tensor,
    statistics: Optional[AttentionQuery] = None,
    keep_probabilities: bool = False,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Softmax attention, and the statistics of `statistics` when given.

    Args:
        query: (B, H, T, Dh) rotated queries.
        key: (B, Hkv, S, Dh) rotated keys; H is a multiple of Hkv (query head h reads key
            head h // (H / Hkv)).
        value: (B, Hkv, S, Dh).
        allowed: (B, 1, T, S) bool, True where row i may attend to key j.
        statistics: the sums a scoring policy reads, or None.
        keep_probabilities: also return the whole (B, H, T, S) probabilities (for
            `output_attentions`).

    Returns:
        output (B, H, T, Dh) in the model's dtype; the (B, W, C) float32 sums or None; the
        probabilities in the model's dtype or None. Without statistics or kept probabilities
        the output is `scaled_dot_product_attention`'s.
    """
    if statistics is None and not keep_probabilities:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=allowed, enable_gqa=True), None, None
    batch, heads, rows, head_dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    group = heads // kv_heads
    key_t = key[:, :, None].transpose(-1, -2)  # (B, Hkv, 1, Dh, S)
    value = value[:, :, None]  # (B, Hkv, 1, S, Dh)
    scale = 1.0 / math.sqrt(head_dim)
    output = torch.empty_like(query)
    sums = None
    if statistics is not None:
        weights = statistics.row_weights.float()
        sums = weights.new_zeros(batch, weights.shape[1], statistics.columns.numel())
    kept = [] if keep_probabilities else None
    size = _row_chunk_size(batch, heads, keys)
    for start in range(0, rows, size):
        stop = min(rows, start + size)
        chunk_query = query[:, :, start:stop].reshape(batch, kv_heads, group, stop - start, head_dim) * scale
        logits = chunk_query @ key_t  # (B, Hkv, g, r, S)
        logits.masked_fill_(~allowed[:, :, None, start:stop], torch.finfo(logits.dtype).min)
        probs = logits.float().softmax(dim=-1)
        del logits
        cast = probs.to(value.dtype)
        output[:, :, start:stop] = (cast @ value).reshape(batch, heads, stop - start, head_dim)
        if kept is not None:
            kept.append(cast.reshape(batch, heads, stop - start, keys))
        if statistics is not None:
            combined = statistics.combine_heads(probs.reshape(batch, heads, stop - start, keys))
            sums += weights[:, :, start:stop] @ combined[..., statistics.columns]
    probabilities = torch.cat(kept, dim=2) if kept is not None else None
    return output, sums, probabilities
