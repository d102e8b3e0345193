"""Our LLaMA decoder, written from the config: RMSNorm, RoPE, grouped-query attention, SwiGLU.

Module names match the checkpoints (`model.layers.N.self_attn.q_proj`, ...), so real
weights load key for key. Two explicit modes:

- prefill (no cache given): the whole prompt, laid out by a `SequenceLayout`. Before each
  layer (with a `LayerProbe` of that layer's keys and attention) and after each layer's
  self-attention a `PrefillHook` (the token pruner, or a statistics collector) may drop
  visual rows; it is the one place where pruning plugs in.
- decode (a `PrunedKVCache` given): new tokens attend to each layer's own cache; nothing
  is ever dropped and positions continue from the unpruned prompt length.

Attention output comes from `scaled_dot_product_attention` (except with `output_attentions`,
which forms every probability as eager attention does). Where the prefill hook asks for
attention statistics (`PrefillHook.attention_query`, e.g. FitPrune's scores at a layer that
drops tokens) a separate pass computes just those, a chunk of query rows at a time
(`llava.model.language_model.attention_scores.attention_statistics`), never the whole
(B, H, T, T) matrix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from llava.model.language_model.attention_scores import AttentionQuery, attend
from llava.model.language_model.kv_cache import PrunedKVCache
from llava.model.language_model.layer_probe import LayerProbe
from llava.model.language_model.sequence_layout import SequenceLayout
from llava.model.pruning.pruner import PrefillHook, PruningTrace


@dataclass
class DecoderOutput(BaseModelOutputWithPast):
    """`BaseModelOutputWithPast` plus the layout of the rows that left the last layer and,
    for a pruned prefill, what each layer kept."""

    sequence_layout: Optional[SequenceLayout] = None
    pruning_trace: Optional[PruningTrace] = None


@dataclass
class CausalLMOutput(CausalLMOutputWithPast):
    """`CausalLMOutputWithPast` plus the row layout of the logits and the pruning trace."""

    sequence_layout: Optional[SequenceLayout] = None
    pruning_trace: Optional[PruningTrace] = None


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
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
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
        self.rotary_emb = LlamaRotaryEmbedding(
            self.head_dim, getattr(config, "rope_theta", 10000.0), getattr(config, "rope_scaling", None)
        )

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


class LlamaPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading settings shared by the LLaMA models."""

    config_class = LlamaConfig
    base_model_prefix = "model"
    _no_split_modules = ["LlamaDecoderLayer"]
    _keys_to_ignore_on_load_unexpected = [r"vision_tower\."]

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()


class LlamaModel(LlamaPreTrainedModel):
    """The decoder stack: embeddings, layers, final norm.

    `prefill_hook` (None by default) is called before every layer and after its self-attention
    during prefill; a subclass may resolve it from its config instead (see `resolve_prefill_hook`).
    """

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.prefill_hook: Optional[PrefillHook] = None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def resolve_prefill_hook(self) -> Optional[PrefillHook]:
        """The hook for the next prefill: the one set on the model, else none."""
        return self.prefill_hook

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        past_key_values: Optional[PrunedKVCache] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        sequence_layout: Optional[SequenceLayout] = None,
    ) -> DecoderOutput:
        """Runs the decoder in prefill mode (no cache) or decode mode (cache given).

        Args:
            input_ids: (B, T) token ids, or None when `inputs_embeds` is given.
            attention_mask: (B, T) with 1 on real tokens; used in prefill when no
                `sequence_layout` is given. In decode the cache's own masks are used.
            past_key_values: a `PrunedKVCache` from an earlier call (decode mode).
            inputs_embeds: (B, T, D) embeddings instead of `input_ids`.
            use_cache: return a cache for decoding (default: config.use_cache).
            output_attentions: return each layer's (B, H, T, S) probabilities.
            output_hidden_states: return the input of each layer and the final output.
            return_dict: kept for API compatibility; a `DecoderOutput` is always returned.
            sequence_layout: prefill only: what each row holds (defaults to text rows
                from `attention_mask`).

        Returns:
            DecoderOutput with `last_hidden_state` (B, T', D); in a pruned prefill T' < T
            and `sequence_layout` says which rows survived.

        Raises:
            ValueError: if neither or both of input_ids and inputs_embeds are given.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        output_attentions = bool(output_attentions)
        batch, length, _ = inputs_embeds.shape
        device = inputs_embeds.device
        hidden = inputs_embeds
        all_hidden = [] if output_hidden_states else None
        all_attn = [] if output_attentions else None

        decoding = past_key_values is not None
        hook = trace = layout = None
        if decoding:
            cache = past_key_values
            attention = AttentionInputs.for_decode(cache, batch, length, device)
        else:
            if sequence_layout is None:
                if attention_mask is None:
                    attention_mask = torch.ones(batch, length, dtype=torch.long, device=device)
                sequence_layout = SequenceLayout.text_only(attention_mask.to(device))
            layout = sequence_layout
            next_position = layout.position_ids.max(dim=1).values + 1
            cache = PrunedKVCache(len(self.layers), next_position) if use_cache else None
            hook = self.resolve_prefill_hook()
            trace = PruningTrace() if hook is not None else None
            attention = AttentionInputs.for_prefill(layout)

        before_layer = getattr(hook, "before_layer", None)  # optional in `PrefillHook`
        previous = None
        for layer_idx, layer in enumerate(self.layers):
            if all_hidden is not None:
                all_hidden.append(hidden)
            if before_layer is not None:
                probe = LayerProbe(layer, self.norm, hidden, layout, previous)
                hidden, probed = before_layer(layer_idx, hidden, layout, probe)
                if probed is not layout:
                    layout, attention = probed, AttentionInputs.for_prefill(probed)
                previous = (layer, hidden, layout)
            if trace is not None:
                trace.enter(layout)
            entering = layout
            hidden, layout, probs = layer(hidden, attention, layer_idx, cache, hook, layout, output_attentions)
            if trace is not None:
                trace.record(layout)
            if layout is not entering:
                attention = AttentionInputs.for_prefill(layout)
            if all_attn is not None:
                all_attn.append(probs)

        hidden = self.norm(hidden)
        if all_hidden is not None:
            all_hidden.append(hidden)
        return DecoderOutput(
            last_hidden_state=hidden,
            past_key_values=cache if use_cache else None,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(all_attn) if all_attn is not None else None,
            sequence_layout=layout,
            pruning_trace=trace,
        )


class LlamaForCausalLM(LlamaPreTrainedModel):
    """Decoder plus LM head, with generation through transformers' `generate`."""

    _tied_weights_keys = ["lm_head.weight"]

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def get_decoder(self) -> LlamaModel:
        return self.model

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        past_key_values: Optional[PrunedKVCache] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        sequence_layout: Optional[SequenceLayout] = None,
        num_logits_to_keep: int = 0,
    ) -> CausalLMOutput:
        """Logits (B, T', vocab) for the rows leaving the decoder, and the shifted
        cross-entropy loss when `labels` (B, T) are given (prefill without pruning only).

        Args:
            num_logits_to_keep: 0 (default) computes the LM head on every row; n > 0 only on
                the last n rows, which is all that greedy or sampled generation reads (rows
                leave the decoder left-padded, so the last row is each prompt's last token).
                Generation passes 1, saving a (B, T', vocab) float32 tensor per prefill.

        Raises:
            ValueError: if labels are given and the prefill dropped rows, or with
                `num_logits_to_keep` > 0 (a loss needs every row).
        """
        if labels is not None and num_logits_to_keep:
            raise ValueError("a loss needs the logits of every row; call with num_logits_to_keep=0")
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            sequence_layout=sequence_layout,
        )
        hidden = out.last_hidden_state
        logits = self.lm_head(hidden[:, -num_logits_to_keep:] if num_logits_to_keep else hidden).float()
        loss = None
        if labels is not None:
            if labels.shape[1] != logits.shape[1]:
                raise ValueError(
                    f"labels cover {labels.shape[1]} rows but {logits.shape[1]} rows left the decoder; "
                    "a loss is only defined without pruning"
                )
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1).to(logits.device),
                ignore_index=-100,
            )
        return CausalLMOutput(
            loss=loss,
            logits=logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            sequence_layout=out.sequence_layout,
            pruning_trace=out.pruning_trace,
        )

    def prepare_inputs_for_generation(
        self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None, **kwargs
    ) -> dict:
        """Step inputs for `generate`: the whole prompt first, then only the newest token; logits
        of the last row only (all that `generate` reads)."""
        if past_key_values is not None:
            input_ids = input_ids[:, -1:]
        inputs = {"inputs_embeds": inputs_embeds} if inputs_embeds is not None and past_key_values is None else {
            "input_ids": input_ids
        }
        inputs.update(
            past_key_values=past_key_values,
            use_cache=kwargs.get("use_cache"),
            attention_mask=attention_mask,
            num_logits_to_keep=1,
        )
        return inputs

    @staticmethod
    def _reorder_cache(past_key_values: PrunedKVCache, beam_idx: torch.Tensor) -> PrunedKVCache:
        return past_key_values.reorder(beam_idx)
