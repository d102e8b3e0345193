"""LLaVA on our LLaMA decoder: `LlavaLlamaModel`, `LlavaLlamaForCausalLM` (config: `LlavaConfig`).

Pruning is set up before `forward` by `LlavaLlamaForCausalLM.set_pruning` (`llava.model.pruning_setup`),
which also writes the config's pruning fields; they are read back at load and, when edited by hand,
before the next `generate`. `forward` runs whatever prefill hook is installed.
"""
from __future__ import annotations

from typing import Optional

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from llava.model.configuration_llava import LlavaConfig

from llava.model.language_model.modeling_llama import (
    CausalLMOutput,
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
)
from llava.model.language_model.prefill_hook import PruningTrace
from llava.model.llava_arch import LlavaMetaForCausalLM, LlavaMetaModel
from llava.model.pruning_setup import PruningSetup


class LlavaLlamaModel(LlavaMetaModel, LlamaModel):
    """Decoder with a vision tower and projector."""

    config_class = LlavaConfig

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


class LlavaLlamaForCausalLM(LlamaForCausalLM, LlavaMetaForCausalLM, PruningSetup):
    """LLaVA-1.5 causal LM; pruning is set up by `set_pruning` (see `PruningSetup`).

    Attributes:
        last_pruning_trace: what the latest prefill kept (None when it ran unpruned).
        last_visual_counts: (B,) long on the CPU, visual tokens each sample of the latest
            prefill had before any pruning (None when it came as `inputs_embeds`), so callers can size
            an anyres (LLaVA-NeXT) image's tokens without a pruner.
    """

    config_class = LlavaConfig

    def __init__(self, config: LlavaConfig):
        LlamaPreTrainedModel.__init__(self, config)
        self.model = LlavaLlamaModel(config)
        self.lm_head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.last_pruning_trace: Optional[PruningTrace] = None
        self.last_visual_counts: Optional[torch.Tensor] = None
        self.post_init()

    def get_model(self) -> LlavaLlamaModel:
        return self.model

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> "LlavaLlamaForCausalLM":
        """transformers' loading, then the pruning its config's fields ask for (`apply_config_pruning`),
        so a checkpoint saved with `reduction_ratio` 60 reloads pruned."""
        model = super().from_pretrained(*args, **kwargs)
        model.apply_config_pruning()
        return model

    def generate(self, *args, **kwargs):
        """transformers' `generate`, after setting up the pruning of config fields edited since the
        last setup (the authors' way: ``model.config.reduction_ratio = 60`` then ``generate``).

        Raises:
            See `set_pruning` (for edited config fields).
        """
        self.apply_config_pruning()
        return super().generate(*args, **kwargs)

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
