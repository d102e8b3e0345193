"""A key/value cache whose layers may hold different numbers of tokens.

When visual tokens leave after layer l, layer l's cache still holds them (they were keys
and values there) while layers after l hold fewer. Each layer therefore keeps its own
keys, values and key mask; the positions of new tokens continue from the unpruned prompt
length of each sample.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch


class PrunedKVCache:
    """Per-layer (B, H_kv, S_l, D) keys and values with a (B, S_l) mask of real keys.

    Indexing gives `(keys, values)` of a layer, like the legacy tuple cache of
    transformers 4.31, so code that reads `past_key_values[l][0].shape[-2]` keeps working.
    """

    def __init__(self, num_layers: int, next_position: torch.Tensor):
        """Args:
        num_layers: decoder layers to hold.
        next_position: (B,) long, RoPE position of each sample's next token.
        """
        self.keys: List[Optional[torch.Tensor]] = [None] * num_layers
        self.values: List[Optional[torch.Tensor]] = [None] * num_layers
        self.key_masks: List[Optional[torch.Tensor]] = [None] * num_layers
        self.next_position = next_position

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, layer_idx: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.keys[layer_idx], self.values[layer_idx]

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
            (keys, values, key_mask) over all cached tokens of the layer.
        """
        if self.keys[layer_idx] is not None:
            keys = torch.cat([self.keys[layer_idx], keys], dim=2)
            values = torch.cat([self.values[layer_idx], values], dim=2)
            key_mask = torch.cat([self.key_masks[layer_idx], key_mask], dim=1)
        self.keys[layer_idx], self.values[layer_idx], self.key_masks[layer_idx] = keys, values, key_mask
        return keys, values, key_mask

    def layer_lengths(self) -> List[int]:
        """Cached tokens per layer (padding included)."""
        return [0 if k is None else k.shape[2] for k in self.keys]

    def advance(self, num_tokens: int) -> torch.Tensor:
        """Returns the (B, num_tokens) positions of the next tokens and moves past them."""
        offsets = torch.arange(num_tokens, device=self.next_position.device)
        positions = self.next_position[:, None] + offsets[None]
        self.next_position = self.next_position + num_tokens
        return positions

    def reorder(self, beam_idx: torch.Tensor) -> "PrunedKVCache":
        """Selects batch rows `beam_idx` (B',) of every layer, for beam search."""
        reordered = PrunedKVCache(len(self), self.next_position.index_select(0, beam_idx))
        for i in range(len(self)):
            if self.keys[i] is not None:
                reordered.keys[i] = self.keys[i].index_select(0, beam_idx.to(self.keys[i].device))
                reordered.values[i] = self.values[i].index_select(0, beam_idx.to(self.values[i].device))
                reordered.key_masks[i] = self.key_masks[i].index_select(0, beam_idx.to(self.key_masks[i].device))
        return reordered
