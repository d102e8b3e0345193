"""A key/value cache whose layers may hold different numbers of tokens.

When visual tokens leave after layer l, layer l's cache still holds them (they were keys
and values there) while layers after l hold fewer. Each layer therefore keeps its own
keys, values and key mask; the positions of new tokens continue from the unpruned prompt
length of each sample.

Each layer's tensors are buffers with room past the tokens they hold: a decode step writes
its keys and values into that room instead of concatenating (which would copy the whole
cache at every step), and a full buffer is reallocated with a quarter more room (at least
`DECODE_RESERVE_TOKENS`), so a long decode copies the cache O(log n) times, not n times.
The prefill's tensors are kept as they come (no extra room), so a prefill holds no more
memory than its keys and values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

DECODE_RESERVE_TOKENS = 64
"""Least room, in tokens, a reallocated layer buffer gets past the tokens it holds."""


@dataclass
class _LayerBuffer:
    """One layer's keys and values (B, H_kv, capacity, D) and key mask (B, capacity), of which
    the first `length` tokens are held; `shared` marks buffers another cache also reads."""

    keys: torch.Tensor
    values: torch.Tensor
    key_mask: torch.Tensor
    length: int
    shared: bool = False

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def held(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views of the held tokens: keys, values (B, H_kv, length, D) and mask (B, length)."""
        return self.keys[:, :, : self.length], self.values[:, :, : self.length], self.key_mask[:, : self.length]

    def reallocated(self, capacity: int) -> "_LayerBuffer":
        """A private copy of the held tokens in buffers of `capacity` tokens."""
        keys, values, key_mask = self.held()
        batch, heads, _, head_dim = keys.shape
        new_keys = keys.new_empty(batch, heads, capacity, head_dim)
        new_values = values.new_empty(batch, heads, capacity, values.shape[-1])
        new_mask = key_mask.new_zeros(batch, capacity)
        new_keys[:, :, : self.length] = keys
        new_values[:, :, : self.length] = values
        new_mask[:, : self.length] = key_mask
        return _LayerBuffer(new_keys, new_values, new_mask, self.length)


class PrunedKVCache:
    """Per-layer (B, H_kv, S_l, D) keys and values with a (B, S_l) mask of real keys.

    Indexing gives `(keys, values)` of a layer's held tokens, like the legacy tuple cache
    of transformers 4.31, so code that reads `past_key_values[l][0].shape[-2]` keeps working.
    """

    def __init__(self, num_layers: int, next_position: torch.Tensor):
        """Args:
        num_layers: decoder layers to hold.
        next_position: (B,) long, RoPE position of each sample's next token.
        """
        self._layers: List[Optional[_LayerBuffer]] = [None] * num_layers
        self.next_position = next_position

    def __len__(self) -> int:
        return len(self._layers)

    def __getitem__(self, layer_idx: int) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        layer = self._layers[layer_idx]
        if layer is None:
            return None, None
        keys, values, _ = layer.held()
        return keys, values

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def append(
        self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor, key_mask: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Adds new keys/values to a layer and returns the layer's whole cache.

        Args:
            layer_idx: the decoder layer.
            keys, values: (B, H_kv, T, D) for the new tokens.
            key_mask: (B, T) bool, True on real (non-pad) new tokens.

        Returns:
            (keys, values, key_mask) over all cached tokens of the layer (views of its buffers,
            valid until the layer's next append).
        """
        layer = self._layers[layer_idx]
        if layer is None:
            self._layers[layer_idx] = _LayerBuffer(keys, values, key_mask, keys.shape[2])
            return keys, values, key_mask
        start, stop = layer.length, layer.length + keys.shape[2]
        if layer.shared or stop > layer.capacity:
            layer = layer.reallocated(stop + max(DECODE_RESERVE_TOKENS, stop // 4))
            self._layers[layer_idx] = layer
        layer.keys[:, :, start:stop] = keys
        layer.values[:, :, start:stop] = values
        layer.key_mask[:, start:stop] = key_mask
        layer.length = stop
        return layer.held()

    def layer_lengths(self) -> List[int]:
        """Cached tokens per layer (padding included)."""
        return [0 if layer is None else layer.length for layer in self._layers]

    def nbytes(self) -> int:
        """Bytes of the held tokens' keys, values and key masks over all layers (room past
        them not counted)."""
        return sum(t.nbytes for layer in self._layers if layer is not None for t in layer.held())

    def advance(self, num_tokens: int) -> torch.Tensor:
        """Returns the (B, num_tokens) positions of the next tokens and moves past them."""
        offsets = torch.arange(num_tokens, device=self.next_position.device)
        positions = self.next_position[:, None] + offsets[None]
        self.next_position = self.next_position + num_tokens
        return positions

    def fork(self) -> "PrunedKVCache":
        """A cache holding the same tokens without a copy: each layer's first append, in the
        fork or in this cache, copies that layer first, so neither ever sees the other's
        new tokens."""
        fork = PrunedKVCache(len(self), self.next_position)
        for i, layer in enumerate(self._layers):
            if layer is not None:
                layer.shared = True
                fork._layers[i] = _LayerBuffer(layer.keys, layer.values, layer.key_mask, layer.length, shared=True)
        return fork

    def reorder(self, beam_idx: torch.Tensor) -> "PrunedKVCache":
        """Selects batch rows `beam_idx` (B',) of every layer, for beam search."""
        reordered = PrunedKVCache(len(self), self.next_position.index_select(0, beam_idx))
        for i, layer in enumerate(self._layers):
            if layer is not None:
                keys, values, key_mask = (t.index_select(0, beam_idx.to(t.device)) for t in layer.held())
                reordered._layers[i] = _LayerBuffer(keys, values, key_mask, layer.length)
        return reordered
