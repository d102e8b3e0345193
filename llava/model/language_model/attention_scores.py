"""Softmax attention of one layer, with the attention statistics a scoring policy reads.

A layer's output is always fused attention's (`scaled_dot_product_attention`'s kernel). At a
layer where a pruning policy scores tokens, `attend` also computes the statistics the policy
asked for in an `AttentionQuery` (for given key columns, the heads' probabilities combined, max
or mean, and summed over query rows with per-sample row weights), without the probability
matrix: only the query rows some weight reads are visited, a chunk of them at a time (at most
`SCORE_CHUNK_ELEMENTS` logits per chunk, so memory is O(rows x keys) per chunk and never
O(heads x T x T)), and only the queried columns of the head-combined probabilities are kept.
Nothing but the (B, W, C) sums leaves the layer.

A probability needs its row's softmax normaliser. On the CPU the fused kernel returns each
row's log-sum-exp beside the output, so the statistics need the logits of the queried columns
only (exp(logit - log-sum-exp)). Elsewhere each row's softmax runs in float32 over the keys up
to the last one its chunk may see (causal attention: about half the logits of a full matrix).

Logits are computed in the model's dtype (queries scaled by 1/sqrt(head_dim) first) and
normalised in float32, as transformers 4.31's eager attention does before it casts the
probabilities back. Only `output_attentions` (`keep_probabilities`) takes the explicit path
that forms every probability and multiplies them with the values, as eager attention does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

SCORE_CHUNK_ELEMENTS = 1 << 20
"""Most logits of one chunk of query rows: batch x heads x rows x keys (4 MiB of float32; smaller
chunks follow the causal triangle more closely, see `_reach`, and stay in cache)."""

HEAD_REDUCTIONS = ("max", "mean")

_CPU_FUSED_ATTENTION = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
"""The kernel `scaled_dot_product_attention` runs on the CPU; it also returns each row's log-sum-exp."""


@dataclass(frozen=True)
class AttentionQuery:
    """The attention statistics a scoring policy reads at one layer.

    With R[b, i, j] the probabilities P[b, h, i, j] combined over heads h by `heads`, the
    layer returns S[b, w, c] = sum over query rows i of row_weights[b, w, i] * R[b, i, columns[c]].

    Attributes:
        row_weights: (B, W, T) float32 weights of the query rows.
        columns: (C,) long indices of the key columns read, increasing.
        heads: "max" or "mean".
    """

    row_weights: torch.Tensor
    columns: torch.Tensor
    heads: str

    def __post_init__(self):
        if self.heads not in HEAD_REDUCTIONS:
            raise ValueError(f"heads must be one of {HEAD_REDUCTIONS}, got {self.heads!r}")
        if self.columns.numel() > 1 and not bool((self.columns.diff() > 0).all()):
            raise ValueError("columns must be strictly increasing key indices")

    def combine_heads(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, r, S) from (B, H, r, S) probabilities."""
        return probs.amax(dim=1) if self.heads == "max" else probs.mean(dim=1)


def _row_chunk_size(batch: int, heads: int, keys: int) -> int:
    """Query rows per chunk so that a chunk holds at most `SCORE_CHUNK_ELEMENTS` logits."""
    return max(1, SCORE_CHUNK_ELEMENTS // max(1, batch * heads * keys))


def _needed_rows(weights: torch.Tensor) -> torch.Tensor:
    """(R,) indices of the query rows that some sample's weight row reads (non-zero anywhere)."""
    return (weights != 0).any(dim=1).any(dim=0).nonzero().squeeze(1)


def _as_slice(index: torch.Tensor):
    """`index` (1-D, long) as a slice when it is a run of consecutive integers (a view, not a
    copy, when used to index), else unchanged."""
    if index.numel() and int(index[-1] - index[0]) == index.numel() - 1 and bool((index.diff() == 1).all()):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def _reach(hidden: torch.Tensor) -> int:
    """One past the last key that some row of a chunk may attend to; `hidden` (B, 1, r, S) is True
    where a row may not. Under a causal mask a chunk of query rows sees no key after its last row,
    so its logits and softmax need only the keys before `_reach`: those after have probability 0."""
    visible = ~hidden.all(dim=2).all(dim=1).all(dim=0)  # (S,)
    return int(visible.nonzero().max()) + 1 if visible.any() else hidden.shape[-1]


def _scaled_grouped_query(query: torch.Tensor, rows, kv_heads: int) -> torch.Tensor:
    """(B, Hkv, g, R, Dh) contiguous copy of the query rows `rows` (a slice or indices) of `query`
    (B, H, T, Dh), times 1/sqrt(Dh), in the model's dtype; query head h = k * g + j is [:, k, j]."""
    batch, heads, _, head_dim = query.shape
    picked = query[:, :, rows] * (1.0 / math.sqrt(head_dim))
    return picked.contiguous().view(batch, kv_heads, heads // kv_heads, picked.shape[2], head_dim)


def _transposed_keys(key: torch.Tensor) -> torch.Tensor:
    """(B, Hkv, 1, Dh, S) contiguous keys for the grouped product with (B, Hkv, g, r, Dh) queries;
    a prefix of keys [..., :n] is then a plain strided view."""
    return key.transpose(-1, -2).contiguous()[:, :, None]


def _masked_logits(grouped_query: torch.Tensor, key_t: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """(B, Hkv, g, r, S) logits of grouped, scaled query rows (B, Hkv, g, r, Dh) against `key_t`
    (B, Hkv, 1, Dh, S), in the model's dtype, keys `hidden` (B, 1, r, S) at the dtype's minimum."""
    logits = grouped_query @ key_t
    return logits.masked_fill_(hidden[:, :, None], torch.finfo(logits.dtype).min)


def _softmax_columns(grouped_query, key_t, hidden, columns) -> torch.Tensor:
    """(B, H, r, C) float32 probabilities of the key `columns` (all before the chunk's reach):
    each row's softmax over the keys of `key_t` (B, Hkv, 1, Dh, reach), `hidden` (B, 1, r, reach)."""
    logits = _masked_logits(grouped_query, key_t, hidden)
    return logits.float().softmax(dim=-1).flatten(1, 2)[..., _as_slice(columns)]


def _normalised_columns(grouped_query, column_key_t, hidden, log_normalisers) -> torch.Tensor:
    """(B, H, r, C) float32 probabilities exp(logit - log-sum-exp) of the keys of `column_key_t`
    (B, Hkv, 1, Dh, C), `hidden` (B, 1, r, C) at 0, from the rows' (B, H, r) log-sum-exps."""
    logits = (grouped_query @ column_key_t).flatten(1, 2).float()
    probs = logits.sub_(log_normalisers[..., None]).exp_()
    return probs.masked_fill_(hidden, 0.0) if bool(hidden.any()) else probs  # rows past the image hide none


def attention_statistics(
    query: torch.Tensor,
    key: torch.Tensor,
    allowed: torch.Tensor,
    statistics: AttentionQuery,
    log_normalisers: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The (B, W, C) float32 sums of `statistics` over the softmax probabilities of `query` on `key`.

    Args:
        query: (B, H, T, Dh) rotated queries.
        key: (B, Hkv, S, Dh) rotated keys; query head h reads key head h // (H / Hkv).
        allowed: (B, 1, T, S) bool, True where row i may attend to key j.
        statistics: the key columns, head reduction and row weights to sum.
        log_normalisers: (B, H, T) float32 log-sum-exp of each row's scaled, masked logits (natural
            log), or None to take each row's softmax here.

    Returns:
        S[b, w, c] = sum_i row_weights[b, w, i] * combine_h P[b, h, i, columns[c]], float32.
    """
    batch, heads = query.shape[:2]
    weights = statistics.row_weights.float()
    columns = statistics.columns
    sums = weights.new_zeros(batch, weights.shape[1], columns.numel())
    rows = _as_slice(_needed_rows(weights))
    grouped_query = _scaled_grouped_query(query, rows, key.shape[1])  # (B, Hkv, g, R, Dh)
    hidden = ~allowed[:, :, rows]  # (B, 1, R, S)
    row_weights = weights[:, :, rows]  # (B, W, R)
    key_t = _transposed_keys(key)
    if log_normalisers is None:
        size = _row_chunk_size(batch, heads, key.shape[2])
    else:
        size = _row_chunk_size(batch, heads, columns.numel())
        column_key_t, column_hidden = key_t[..., _as_slice(columns)], hidden[..., _as_slice(columns)]
        log_normalisers = log_normalisers[:, :, rows]  # (B, H, R)
    for start in range(0, grouped_query.shape[3], size):
        chunk = slice(start, start + size)
        reach = _reach(hidden[:, :, chunk])  # keys past it are hidden from every row of the chunk
        seen = int(torch.searchsorted(columns, reach))  # columns before `reach`: a prefix, as they increase
        if log_normalisers is None:
            probs = _softmax_columns(grouped_query[:, :, :, chunk], key_t[..., :reach],
                                     hidden[:, :, chunk, :reach], columns[:seen])
        else:
            probs = _normalised_columns(grouped_query[:, :, :, chunk], column_key_t[..., :seen],
                                        column_hidden[:, :, chunk, :seen], log_normalisers[:, :, chunk])
        sums[..., :seen] += row_weights[:, :, chunk] @ statistics.combine_heads(probs)
    return sums


def _explicit_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    allowed: torch.Tensor,
    statistics: Optional[AttentionQuery],
) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """Attention through every probability, a chunk of query rows at a time (eager attention's
    rounding); returns the output, the statistics' sums or None, and the (B, H, T, S) probabilities."""
    batch, heads, rows, head_dim = query.shape
    keys = key.shape[2]
    grouped_query = _scaled_grouped_query(query, slice(None), key.shape[1])  # (B, Hkv, g, T, Dh)
    hidden = ~allowed
    key_t = _transposed_keys(key)
    value = value[:, :, None]  # (B, Hkv, 1, S, Dh)
    output = torch.empty_like(query)
    kept = []
    size = _row_chunk_size(batch, heads, keys)
    for start in range(0, rows, size):
        stop = min(rows, start + size)
        logits = _masked_logits(grouped_query[:, :, :, start:stop], key_t, hidden[:, :, start:stop])
        cast = logits.float().softmax(dim=-1).to(value.dtype)
        del logits
        output[:, :, start:stop] = (cast @ value).reshape(batch, heads, stop - start, head_dim)
        kept.append(cast.reshape(batch, heads, stop - start, keys))
    sums = None if statistics is None else attention_statistics(query, key, allowed, statistics)
    return output, sums, torch.cat(kept, dim=2)


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
            `output_attentions`); the output is then computed from them, as eager attention does.

    Returns:
        output (B, H, T, Dh) in the model's dtype; the (B, W, C) float32 sums or None; the
        probabilities in the model's dtype or None. Without kept probabilities the output is
        `scaled_dot_product_attention`'s.
    """
    if keep_probabilities:
        return _explicit_attention(query, key, value, allowed, statistics)
    if statistics is None:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=allowed, enable_gqa=True), None, None
    if _CPU_FUSED_ATTENTION is not None and query.device.type == "cpu":
        bias = torch.zeros(allowed.shape, dtype=query.dtype).masked_fill_(~allowed, float("-inf"))
        output, log_normalisers = _CPU_FUSED_ATTENTION(query, key, value, attn_mask=bias)
    else:
        output = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed, enable_gqa=True)
        log_normalisers = None
    return output, attention_statistics(query, key, allowed, statistics, log_normalisers), None
