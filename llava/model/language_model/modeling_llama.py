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

from contextlib import contextmanager
from dataclasses import dataclass
from typing import ContextManager, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from llava.model.language_model.decoder_layer import AttentionInputs, LlamaDecoderLayer, LlamaRMSNorm
from llava.model.language_model.kv_cache import PrunedKVCache
from llava.model.language_model.layer_probe import LayerProbe
from llava.model.language_model.sequence_layout import SequenceLayout
from llava.model.language_model.prefill_hook import PrefillHook, PruningTrace


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
    during prefill. It is runtime state set up before `forward` (by `LlavaLlamaForCausalLM.set_pruning`
    or `prefill_hook_installed`); `forward` only reads it.
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

    @contextmanager
    def prefill_hook_installed(self, hook: Optional[PrefillHook]) -> Iterator[Optional[PrefillHook]]:
        """Runs the prefills inside the block with `hook` (a statistics collector, a baseline's
        pruner, None for unpruned), then puts back the hook that was installed, also on an exception."""
        previous = self.prefill_hook
        self.prefill_hook = hook
        try:
            yield hook
        finally:
            self.prefill_hook = previous

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

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
            hook = self.prefill_hook
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

    def prefill_hook_installed(self, hook: Optional[PrefillHook]) -> ContextManager[Optional[PrefillHook]]:
        """The decoder's `LlamaModel.prefill_hook_installed`."""
        return self.model.prefill_hook_installed(hook)

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
