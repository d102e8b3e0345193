"""One prefill layer's attention probabilities, computed on demand from its queries and keys.

The layer's output always comes from `scaled_dot_product_attention`, which never exposes
its probabilities. A scoring policy that reads attention gets a `LayerAttention` instead:
the layer's rotated queries and keys and its mask, from which it computes only the
probabilities it needs, a chunk of query rows at a time. Each row's softmax normaliser
(its log-sum-exp over every key it may see) is computed from the same chunk, so no
(heads x T x T) tensor is ever held; at most `SCORE_CHUNK_ELEMENTS` float32 values per
chunk, whatever the prompt length, batch or model dtype. Logits, normalisers and
probabilities are float32 whatever the model's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch

SCORE_CHUNK_ELEMENTS = 1 << 22
"""Most float32 logits of one chunk of query rows (16 MiB): batch x heads x rows x keys."""


@dataclass
class LayerAttention:
    """The inputs of one layer's softmax attention.

    Attributes:
        query: (B, H, T, Dh) rotated queries, in the model's dtype.
        key: (B, Hkv, S, Dh) rotated keys; H is a multiple of Hkv (grouped-query attention:
            query head h reads key head h // (H / Hkv)).
        allowed: (B, 1, T, S) bool, True where query row i may attend to key j.
        scale: the logit scale, 1 / sqrt(Dh).
    """

    query: torch.Tensor
    key: torch.Tensor
    allowed: torch.Tensor
    scale: float
    _key32: Optional[torch.Tensor] = field(default=None, init=False, repr=False)

    def _float_key(self) -> torch.Tensor:
        """(B, Hkv, 1, Dh, S) float32 transposed keys, made once per layer."""
        if self._key32 is None:
            self._key32 = self.key.float()[:, :, None].transpose(-1, -2)
        return self._key32

    @property
    def shape(self) -> tuple:
        """(B, H, T, S): batch, query heads, query rows, keys."""
        batch, heads, rows, _ = self.query.shape
        return batch, heads, rows, self.key.shape[2]

    def _row_chunks(self, rows: torch.Tensor) -> Iterator[torch.Tensor]:
        """Splits the query-row indices `rows` (R,) into chunks of at most `SCORE_CHUNK_ELEMENTS` logits."""
        batch, heads, _, keys = self.shape
        size = max(1, SCORE_CHUNK_ELEMENTS // max(1, batch * heads * keys))
        for start in range(0, rows.numel(), size):
            yield rows[start:start + size]

    def _probabilities(self, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """(B, H, r, C) float32 softmax probabilities of query rows `rows` (r,) on key columns
        `columns` (C,); the softmax runs over every key each row may see. A row that may see
        no key (padding) has probability 0 everywhere."""
        batch, heads, _, keys = self.shape
        kv_heads, head_dim = self.key.shape[1], self.key.shape[3]
        group = heads // kv_heads
        query = self.query[:, :, rows].float().reshape(batch, kv_heads, group, rows.numel(), head_dim)
        logits = (query @ self._float_key()) * self.scale  # (B, Hkv, g, r, S)
        allowed = self.allowed[:, :, rows][:, :, None]  # (B, 1, 1, r, S)
        logits = logits.masked_fill(~allowed, float("-inf"))
        normaliser = torch.logsumexp(logits, dim=-1, keepdim=True)
        normaliser = normaliser.masked_fill(torch.isneginf(normaliser), 0.0)
        probs = (logits[..., columns] - normaliser).exp()
        return probs.reshape(batch, heads, rows.numel(), columns.numel())

    def head_max_sums(self, weights: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """Weighted sums over query rows of the head-max probabilities on some key columns.

        With A[b, i, j] = max over heads h of P[b, h, i, j] (P: softmax probabilities),
        returns S[b, w, c] = sum over rows i of weights[b, w, i] * A[b, i, columns[c]].

        Args:
            weights: (B, W, T) float32 row weights; rows whose weight is 0 in every sample are
                never computed.
            columns: (C,) long key indices.

        Returns:
            (B, W, C) float32.
        """
        batch, _, _, _ = self.shape
        sums = weights.new_zeros(batch, weights.shape[1], columns.numel(), dtype=torch.float32)
        rows = (weights != 0).any(dim=1).any(dim=0).nonzero().squeeze(1)
        for chunk in self._row_chunks(rows):
            head_max = self._probabilities(chunk, columns).amax(dim=1)  # (B, r, C)
            sums += torch.einsum("bwr,brc->bwc", weights[:, :, chunk].float(), head_max)
        return sums

    def head_mean_of_row(self, row: int) -> torch.Tensor:
        """(B, S) float32: the probabilities of query row `row` on every key, averaged over heads."""
        rows = torch.tensor([row], device=self.query.device)
        columns = torch.arange(self.shape[3], device=self.query.device)
        return self._probabilities(rows, columns).mean(dim=1)[:, 0]

    def probabilities(self) -> torch.Tensor:
        """(B, H, T, S) float32: the whole probability tensor (for `output_attentions` only)."""
        rows = torch.arange(self.shape[2], device=self.query.device)
        columns = torch.arange(self.shape[3], device=self.query.device)
        return torch.cat([self._probabilities(chunk, columns) for chunk in self._row_chunks(rows)], dim=2)
