"""VisionZip's token reduction inside a CLIP vision tower: dominant tokens kept, the rest merged.

VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models",
CVPR 2025) works on the tower layer whose output LLaVA selects (``mm_vision_select_layer``):

* *dominant* tokens: the [CLS] token and the ``dominant - 1`` patches that the [CLS] query attends to
  most in that layer (softmax probabilities summed over heads), in their original order;
* *contextual* tokens: the other patches, keyed by that layer's keys averaged over heads and
  L2-normalised, are split into ``contextual`` targets (every ``max(1, M // contextual)``-th of the
  M remaining patches, the first ``contextual`` of them) and the rest; each of the rest joins the
  target of largest key cosine similarity, and a contextual token is its target's hidden state
  plus the mean hidden state of the patches that joined it (the target alone when none did).

The features handed to the projector are the dominant tokens followed by the contextual tokens,
taken from the selected layer's output (the [CLS] token among them, as the repository does).
Only the [CLS] row of that one layer's attention is computed (from its queries and keys), so the
tower itself keeps its fast attention and no attention map is materialised.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import nn

CONTEXTUAL_SHARE = 10 / 64
"""Contextual tokens per token kept: the repository's 10 of 64 (also 20 of 128 and 30 of 192)."""


def token_split(count: int) -> Tuple[int, int]:
    """(dominant, contextual) tokens for `count` tokens kept: ``floor(count * 10/64 + 0.5)``
    contextual, the rest dominant ([CLS] included): 54 + 10 for 64, 108 + 20 for 128, 162 + 30 for 192.

    Raises:
        ValueError: `count` leaves fewer than 1 dominant token (count < 1).
    """
    contextual = int(count * CONTEXTUAL_SHARE + 0.5)
    if count - contextual < 1:
        raise ValueError(f"VisionZip needs at least 1 dominant token (the [CLS] token); {count} tokens kept")
    return count - contextual, contextual


def encoder_layer_index(select_layer: int, num_layers: int) -> int:
    """The index of the encoder layer whose output is ``hidden_states[select_layer]`` (the
    embeddings are ``hidden_states[0]``, layer i's output ``hidden_states[i + 1]``).

    Raises:
        ValueError: `select_layer` names the embeddings or no layer.
    """
    index = select_layer - 1 if select_layer > 0 else num_layers + select_layer
    if not 0 <= index < num_layers:
        raise ValueError(
            f"VisionZip needs mm_vision_select_layer to name one of the tower's {num_layers} layers, got {select_layer}"
        )
    return index


def cls_attention_and_keys(layer: nn.Module, layer_input: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The [CLS] row of one CLIP encoder layer's attention and its keys averaged over heads.

    Args:
        layer: a transformers ``CLIPEncoderLayer`` (``layer_norm1``, ``self_attn`` with
            ``q_proj``, ``k_proj``, ``num_heads``, ``head_dim``, ``scale``).
        layer_input: (B, N, C) hidden states entering the layer, the [CLS] token at row 0.

    Returns:
        cls_attention: (B, N) float32, softmax probabilities of the [CLS] query over all N keys,
            summed over heads (the softmax in float32).
        keys: (B, N, head_dim) in the input dtype, the key projections averaged over heads.
    """
    attn = layer.self_attn
    batch, length, _ = layer_input.shape
    normed = layer.layer_norm1(layer_input)
    query = (attn.q_proj(normed[:, :1]) * attn.scale).view(batch, attn.num_heads, attn.head_dim)
    keys = attn.k_proj(normed).view(batch, length, attn.num_heads, attn.head_dim)
    logits = torch.einsum("bhd,bnhd->bhn", query.float(), keys.float())
    return logits.softmax(dim=-1).sum(dim=1), keys.mean(dim=2)


@dataclass
class TowerSelection:
    """What VisionZip made of each image's patches (grid cells row-major, P per image).

    Attributes:
        grid_index: (B, n) long: the grid cell of each token handed on (dominant patches), -1 for
            the [CLS] token and the contextual (merged) tokens.
        merged_into: (B, P) long: for each grid cell, the contextual token (0..contextual-1) it
            was merged into, -1 for a dominant cell.
    """

    grid_index: torch.Tensor
    merged_into: torch.Tensor


def _rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (B, N, D) gathered at index (B, K) -> (B, K, D)."""
    return values.gather(1, index[..., None].expand(-1, -1, values.shape[-1]))


def visionzip_tokens(
    hidden: torch.Tensor, cls_attention: torch.Tensor, keys: torch.Tensor, dominant: int, contextual: int
) -> Tuple[torch.Tensor, TowerSelection]:
    """VisionZip's dominant and contextual tokens of the selected layer (see the module docstring).

    Args:
        hidden: (B, 1 + P, C) the selected layer's output, [CLS] first.
        cls_attention: (B, 1 + P) the layer's [CLS] attention summed over heads.
        keys: (B, 1 + P, K) the layer's keys averaged over heads.
        dominant: dominant tokens, the [CLS] token included (at least 1).
        contextual: contextual tokens (0 or more); ``dominant - 1 + contextual <= P``.

    Returns:
        tokens: (B, dominant + contextual, C) in the dtype of `hidden`; the merge sums run in float32.
        selection: the grid cells behind each token.
    """
    batch, length, _ = hidden.shape
    patches = length - 1
    if dominant < 1 or contextual < 0 or dominant - 1 + contextual > patches:
        raise ValueError(f"VisionZip cannot keep {dominant} dominant + {contextual} contextual of {patches} patches")
    device = hidden.device
    order = cls_attention[:, 1:].float().argsort(dim=1, descending=True, stable=True)
    top = order[:, : dominant - 1].sort(dim=1).values  # (B, d-1) patch indices, original order
    rest = order[:, dominant - 1:].sort(dim=1).values  # (B, M) the other patches, original order
    cls_index = torch.zeros(batch, 1, dtype=torch.long, device=device)
    tokens = _rows(hidden, torch.cat([cls_index, top + 1], dim=1))
    grid_index = torch.cat([cls_index - 1, top], dim=1)
    merged_into = torch.full((batch, patches), -1, dtype=torch.long, device=device)
    if contextual > 0:
        remaining = rest.shape[1]
        step = max(1, remaining // contextual)
        is_target = torch.zeros(remaining, dtype=torch.bool, device=device)
        is_target[torch.arange(0, remaining, step, device=device)[:contextual]] = True
        targets, others = rest[:, is_target], rest[:, ~is_target]
        unit = nn.functional.normalize(keys[:, 1:].float(), dim=-1)
        similarity = _rows(unit, others) @ _rows(unit, targets).transpose(1, 2)  # (B, M - c, c)
        joins = similarity.argmax(dim=2)  # (B, M - c)
        members = nn.functional.one_hot(joins, contextual).float()  # (B, M - c, c)
        patch_hidden = hidden[:, 1:].float()
        sums = members.transpose(1, 2) @ _rows(patch_hidden, others)  # (B, c, C)
        means = sums / members.sum(dim=1).clamp(min=1)[..., None]
        merged = (_rows(patch_hidden, targets) + means).to(hidden.dtype)
        tokens = torch.cat([tokens, merged], dim=1)
        grid_index = torch.cat([grid_index, torch.full_like(targets, -1)], dim=1)
        target_slot = torch.arange(contextual, device=device).expand(batch, -1)
        merged_into.scatter_(1, targets, target_slot)
        merged_into.scatter_(1, others, joins)
    return tokens, TowerSelection(grid_index, merged_into)
