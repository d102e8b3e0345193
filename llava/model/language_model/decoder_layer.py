"""One LLaMA decoder layer, written from the config: RMSNorm, RoPE, grouped-query attention, SwiGLU.

`LlamaDecoderLayer` runs pre-norm attention, then the prefill hook (the one place visual rows may
leave), then the MLP; `AttentionInputs` carries the positions and masks of the rows entering a layer
in prefill or decode. The stack, embeddings and LM head are in `modeling_llama`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig

from llava.model.language_model.attention_scores import AttentionQuery, attend
from llava.model.language_model.kv_cache import PrunedKVCache
from llava.model.language_model.prefill_hook import PrefillHook
from llava.model.language_model.sequence_layout import SequenceLayout


class LlamaRMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, scaled by a learned weight."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x32.to(x.dtype)


class LlamaRotaryEmbedding(nn.Module):
    """cos/sin tables of rotary position embeddings at arbitrary (sparse) positions.

    The frequencies are computed once, in float32 on the CPU, from `head_dim` and `base`,
    and kept outside the module's buffers, so loading the model in float16/bfloat16 (or
    moving it with `.to(dtype)`) never rounds them; the angles and their cos/sin are
    computed in float32 and only the tables are cast to the activations' dtype, as
    transformers 4.31 does with its float32 cos/sin cache. The `inv_freq` buffer exists
    only so that checkpoints (which carry `rotary_emb.inv_freq`, in whatever dtype they
    were saved) load and save key for key; its value is never read.
    """

    def __init__(self, head_dim: int, base: float, scaling: Optional[dict]):
        super().__init__()
        self.exact_inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", self.exact_inv_freq.clone(), persistent=True)
        self.position_divisor = 1.0
        if scaling is not None:
            if scaling.get("type") != "linear":
                raise ValueError(f"rope_scaling {scaling!r} is not supported; only type 'linear' is")
            self.position_divisor = float(scaling["factor"])

    def _inv_freq_on(self, device: torch.device) -> torch.Tensor:
        if self.exact_inv_freq.device != device:
            self.exact_inv_freq = self.exact_inv_freq.to(device)
        return self.exact_inv_freq

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns cos, sin of shape (B, T, head_dim), cast to `dtype`, for `position_ids` (B, T)."""
        positions = position_ids.float() / self.position_divisor
        freqs = positions[..., None] * self._inv_freq_on(position_ids.device)[None, None]  # (B, T, head_dim/2)
        angles = torch.cat([freqs, freqs], dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates (B, H, T, D) queries or keys by cos/sin tables (B, T, D)."""
    return x * cos[:, None] + _rotate_half(x) * sin[:, None]


class LlamaAttention(nn.Module):
    """Multi-head attention with grouped key/value heads and rotary positions."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads or config.num_attention_heads
        if self.head_dim * self.num_heads != config.hidden_size:
            raise ValueError(
                f"hidden_size {config.hidden_size} is not divisible by num_attention_heads {self.num_heads}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads {self.num_heads} is not a multiple of num_key_value_heads {self.num_kv_heads}"
            )
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=False)
        # transformers 4.31's LlamaConfig declares no rope_theta (a checkpoint's config.json may carry one)
        theta = getattr(config, "rope_theta", 10000.0)
        self.rotary_emb = LlamaRotaryEmbedding(self.head_dim, theta, config.rope_scaling)

    def _split_heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def rotated_query_key(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Rotated queries (B, H, T, Dh) and keys (B, Hkv, T, Dh) of normalised rows `hidden` (B, T, D)."""
        q = self._split_heads(self.q_proj(hidden), self.num_heads)
        k = self._split_heads(self.k_proj(hidden), self.num_kv_heads)
        cos, sin = self.rotary_emb(position_ids, q.dtype)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

    def forward(
        self,
        hidden: torch.Tensor,
        position_ids: torch.Tensor,
        query_key_mask_fn,
        new_key_mask: torch.Tensor,
        cache: Optional[PrunedKVCache],
        layer_idx: int,
        statistics: Optional[AttentionQuery] = None,
        keep_probabilities: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Attends the rows of `hidden` (B, T, D) to themselves and to the layer's cache.

        Args:
            hidden: (B, T, D) normalised input rows.
            position_ids: (B, T) RoPE positions.
            query_key_mask_fn: maps the (B, S) mask of real keys to the (B, 1, T, S) bool mask.
            new_key_mask: (B, T) bool, True on real new rows.
            cache: the model's cache, appended to in place; None when not caching.
            layer_idx: index of this layer in the cache.
            statistics: the attention statistics a scoring policy reads here, or None.
            keep_probabilities: also return the (B, H, T, S) probabilities.

        Returns:
            (B, T, D) attention output after `o_proj`; the statistics' (B, W, C) sums or None;
            the probabilities or None (see `llava.model.language_model.attention_scores.attend`).
        """
        q, k = self.rotated_query_key(hidden, position_ids)
        v = self._split_heads(self.v_proj(hidden), self.num_kv_heads)
        key_mask = new_key_mask
        if cache is not None:
            k, v, key_mask = cache.append(layer_idx, k, v, new_key_mask)
        out, sums, probs = attend(q, k, v, query_key_mask_fn(key_mask), statistics, keep_probabilities)
        batch, _, length, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.o_proj(out), sums, probs


class LlamaMLP(nn.Module):
    """Gated feed-forward block: down(act(gate(x)) * up(x))."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        if config.hidden_act != "silu":
            raise ValueError(f"hidden_act {config.hidden_act!r} is not supported; LLaMA uses 'silu'")
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


@dataclass
class AttentionInputs:
    """Positions and masks of the rows entering a layer.

    Attributes:
        position_ids: (B, T) RoPE positions.
        new_key_mask: (B, T) bool, True on real rows (cached as keys).
        mask_fn: maps the (B, S) mask of all keys (cache + new) to the (B, 1, T, S) mask.
    """

    position_ids: torch.Tensor
    new_key_mask: torch.Tensor
    mask_fn: Callable[[torch.Tensor], torch.Tensor]

    @classmethod
    def for_prefill(cls, layout: SequenceLayout) -> "AttentionInputs":
        """Causal attention over the rows of `layout`, padding keys hidden."""
        causal = layout.causal_mask()
        return cls(layout.position_ids, layout.key_mask, lambda key_mask: causal)

    @classmethod
    def for_decode(cls, cache: PrunedKVCache, batch: int, length: int, device: torch.device) -> "AttentionInputs":
        """`length` new tokens after the cache: all real cached keys, causal among the new."""
        causal_new = torch.ones(length, length, dtype=torch.bool, device=device).tril()

        def mask_fn(key_mask: torch.Tensor) -> torch.Tensor:
            allowed = key_mask[:, None, :].expand(batch, length, -1).clone()
            allowed[:, :, key_mask.shape[1] - length:] &= causal_new
            return allowed[:, None]

        return cls(cache.advance(length), torch.ones(batch, length, dtype=torch.bool, device=device), mask_fn)


class LlamaDecoderLayer(nn.Module):
    """Pre-norm attention block and MLP block, with the prefill hook between them."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.self_attn = LlamaAttention(config)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        hidden: torch.Tensor,
        attention: AttentionInputs,
        layer_idx: int,
        cache: Optional[PrunedKVCache] = None,
        hook: Optional[PrefillHook] = None,
        layout: Optional[SequenceLayout] = None,
        output_attentions: bool = False,
    ) -> Tuple[torch.Tensor, Optional[SequenceLayout], Optional[torch.Tensor]]:
        """One layer: attention, then the prefill hook (the one place rows may leave), then the MLP.

        Args:
            hidden: (B, T, D) rows entering the layer.
            attention: their positions and masks.
            layer_idx: index of the layer (cache slot, hook argument).
            cache: appended to in place when given.
            hook: prefill only: may drop rows after attention.
            layout: prefill only: what each row holds.
            output_attentions: compute and return the (B, H, T, S) probabilities.

        Returns:
            (B, T', D) rows leaving the layer, their layout, and the probabilities or None.
        """
        statistics = hook.attention_query(layer_idx, layout) if hook is not None else None
        attn_out, sums, probs = self.self_attn(
            self.input_layernorm(hidden),
            attention.position_ids,
            attention.mask_fn,
            attention.new_key_mask,
            cache,
            layer_idx,
            statistics=statistics,
            keep_probabilities=output_attentions,
        )
        hidden = hidden + attn_out
        if hook is not None:
            hidden, layout = hook.after_attention(layer_idx, hidden, sums, layout)
        hidden = hidden + self.mlp(self.post_attention_layernorm(hidden))
        return hidden, layout, probs
