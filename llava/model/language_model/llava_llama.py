"""LLaVA on our LLaMA decoder: `LlavaConfig`, `LlavaLlamaModel`, `LlavaLlamaForCausalLM`.

FitPrune is configured on the config: `reduction_ratio` (percent of the paper-convention
FLOPs to remove, 0 = unpruned), optionally `fitprune_recipe` (a recipe file),
`fitprune_policy` (scoring policy name, default "fitprune") and `fitprune_seed`. The pruner
is built from those fields (`llava.model.pruning.from_config`) at the first prefill after
they change.
"""
from __future__ import annotations

from typing import Optional

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

from llava.model.language_model.modeling_llama import (
    CausalLMOutput,
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
)
from llava.model.pruning.from_config import PruningSettings, build_pruner
from llava.model.pruning.pruner import PrefillHook, PruningTrace
from llava.model.llava_arch import LlavaMetaForCausalLM, LlavaMetaModel


class LlavaConfig(LlamaConfig):
    """LlamaConfig with model_type "llava"; the `mm_*` fields ride along as extra keys."""

    model_type = "llava"


class LlavaLlamaModel(LlavaMetaModel, LlamaModel):
    """Decoder with a vision tower and projector; resolves its pruner from the config."""

    config_class = LlavaConfig

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self._configured_hook_key = None
        self._configured_hook: Optional[PrefillHook] = None

    def num_visual_tokens(self) -> int:
        """Visual tokens one tower image contributes, from the vision tower's config.

        For LLaVA-NeXT (anyres) models this is the base view's count: an image's run
        also holds its tiles and newlines, so it varies per image (see
        `LlavaMetaForCausalLM.encode_anyres_images`), and pruning recipes for such
        models state fractions of each sample's visual tokens.
        """
        tower = self.get_vision_tower()
        if tower is None:
            raise ValueError("this model has no vision tower (config has no mm_vision_tower)")
        return tower.num_visual_tokens

    def resolve_prefill_hook(self) -> Optional[PrefillHook]:
        """An explicitly set hook wins; otherwise the pruner described by the config.

        A model without a vision tower (text-only, or built before its vision modules are
        attached) and a ratio of 0 have nothing to prune and get no hook. The config's
        pruning fields are parsed, and the pruner rebuilt, only when one of them (ratio,
        recipe, policy, seed) changes.
        """
        if self.prefill_hook is not None:
            return self.prefill_hook
        key = PruningSettings.raw_fields(self.config)
        if key[0] == 0 or self.get_vision_tower() is None:
            return None
        if key != self._configured_hook_key:
            self.configure_pruning(PruningSettings.from_config(self.config))
        return self._configured_hook

    def configure_pruning(self, settings: PruningSettings) -> Optional[PrefillHook]:
        """Writes `settings` into the config and builds their pruner now (None at ratio 0).

        Raises:
            RecipeError: no recipe for the model or the ratio, or one fitted for another model.
        """
        settings.write_to(self.config)
        has_tower = self.get_vision_tower() is not None
        self._configured_hook = build_pruner(settings, self.config, self.num_visual_tokens()) if has_tower else None
        self._configured_hook_key = PruningSettings.raw_fields(self.config)
        return self._configured_hook


class LlavaLlamaForCausalLM(LlamaForCausalLM, LlavaMetaForCausalLM):
    """LLaVA-1.5 causal LM.

    Attributes:
        last_pruning_trace: what the latest prefill kept (None when it ran unpruned).
        last_visual_counts: (B,) long on the CPU, visual tokens each sample of the latest
            prefill had before any pruning (None when it came as `inputs_embeds`), so callers can size
            an anyres (LLaVA-NeXT) image's tokens without a pruner.
    """

    config_class = LlavaConfig

    def __init__(self, config: LlamaConfig):
        LlamaPreTrainedModel.__init__(self, config)
        self.model = LlavaLlamaModel(config)
        self.lm_head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.last_pruning_trace: Optional[PruningTrace] = None
        self.last_visual_counts: Optional[torch.Tensor] = None
        self.post_init()

    def get_model(self) -> LlavaLlamaModel:
        return self.model

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        past_key_values=None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        images=None,
        image_sizes=None,
        return_dict: Optional[bool] = None,
        num_logits_to_keep: int = 0,
    ) -> CausalLMOutput:
        """Upstream's forward: splices `images` into a prefill, then runs the decoder.

        Args:
            input_ids: (B, L) with IMAGE_TOKEN_INDEX placeholders (prefill) or (B, 1).
            attention_mask: (B, L) padding mask of `input_ids` (prefill only).
            images: (N, 3, H, W) tensor or list of per-sample tensors; for LLaVA-NeXT
                (anyres) one (1 + tiles, 3, H, W) tensor per image, as a list or a 5-D
                tensor. Ignored on decode.
            image_sizes: (width, height) of each original image, for anyres images
                (upstream v1.6 passes it to `generate`); ignored otherwise and on decode.
            num_logits_to_keep: logits of the last n rows only (0: every row), as in
                `LlamaForCausalLM.forward`; generation passes 1.

        Returns:
            CausalLMOutput whose logits cover the rows that left the decoder
            (left-padded; fewer than the input when tokens were pruned).
        """
        layout = None
        if past_key_values is None and inputs_embeds is None:
            spliced = self.splice_images(input_ids, attention_mask, images, labels, image_sizes)
            inputs_embeds, labels, layout = spliced.inputs_embeds, spliced.labels, spliced.layout
            input_ids = attention_mask = None
        out = super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            sequence_layout=layout,
            num_logits_to_keep=num_logits_to_keep,
        )
        if past_key_values is None:
            self.last_pruning_trace = out.pruning_trace
            self.last_visual_counts = layout.initial_visual.cpu() if layout is not None else None
        return out

    def prepare_inputs_for_generation(
        self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None, **kwargs
    ) -> dict:
        """As the LLaMA model's, plus `images` and `image_sizes` on every step (ignored
        after the prefill)."""
        inputs = super().prepare_inputs_for_generation(
            input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            inputs_embeds=inputs_embeds, **kwargs
        )
        inputs["images"] = kwargs.get("images")
        inputs["image_sizes"] = kwargs.get("image_sizes")
        return inputs


AutoConfig.register("llava", LlavaConfig)
AutoModelForCausalLM.register(LlavaConfig, LlavaLlamaForCausalLM)
