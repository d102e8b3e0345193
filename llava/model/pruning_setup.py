"""Setting a LLaVA model's pruning up before `forward`: one call, read from the config at load.

`PruningSetup` is a mixin of `LlavaLlamaForCausalLM`. `set_pruning` validates the settings,
finds the recipe, builds the pruner there and then (so a bad ratio or a missing recipe fails
before any generation), installs it on the decoder and writes the config's pruning fields
(`reduction_ratio`, `fitprune_recipe`, `fitprune_policy`, `fitprune_seed`), so `save_pretrained`
and a reload restore it. `apply_config_pruning` reads those fields once: at load, and before a
`generate` whose config fields were edited by hand (the authors' `model.config.reduction_ratio = 60`).
`forward` never parses settings or opens files; it runs whatever hook is installed.

This module sits beside `llava_arch` (above `language_model/` and `pruning/`), so the decoder
package never imports the pruning package: `pruning/` builds on the decoder's hook contract.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Tuple, Union

from llava.model.language_model.prefill_hook import PrefillHook
from llava.model.pruning.from_config import DEFAULT_POLICY, PruningSettings, build_pruner
from llava.model.pruning.ratio import parse_reduction_ratio


class PruningSetup:
    """The pruning half of `LlavaLlamaForCausalLM` (needs `config` and `get_model()`).

    Attributes:
        pruning_settings: the `PruningSettings` last set up (None before the first setup).
    """

    pruning_settings: Optional[PruningSettings] = None
    _pruning_fields: Optional[Tuple[Any, ...]] = None

    def set_pruning(
        self,
        reduction_ratio: float = 0.0,
        recipe: Union[str, Path, None] = None,
        policy: str = DEFAULT_POLICY,
        seed: int = 0,
    ) -> Optional[PrefillHook]:
        """Sets up the pruning of every following prefill; the one public way to switch it on or off.

        Args:
            reduction_ratio: paper-convention FLOPs to remove, percent in [0, 100) (60 removes 60 %);
                0 switches pruning off. User input (a percent or a fraction such as 0.6) goes through
                `llava.model.pruning.ratio.parse_reduction_ratio` first, as the flags' type does.
            recipe: the recipe book to read; None looks one up for the model (`recipe_lookup`:
                the checkpoint's, then the shipped books). Policies that bring their own budget
                schedule (DART, DivPrune, PyramidDrop, SparseVLM) read none.
            policy: the scoring policy's name (`llava.model.pruning.policies.POLICIES`).
            seed: the random policy's seed.

        Returns:
            The installed pruner, or None (ratio 0, or a model without a vision tower).

        Raises:
            ReductionRatioError: the ratio is not a percent in [0, 100).
            ValueError: an unknown policy name.
            RecipeError: the recipe file is missing, has no recipe for the ratio, or was fitted
                for another model (the message starts with the file).
        """
        settings = PruningSettings(reduction_ratio, str(recipe) if recipe is not None else None, policy, int(seed))
        decoder = self.get_model()
        hook = None
        if settings.reduction_ratio > 0 and decoder.get_vision_tower() is not None:
            hook = build_pruner(settings, self.config, decoder.num_visual_tokens())
        settings.write_to(self.config)
        decoder.prefill_hook = hook
        self.pruning_settings = settings
        self._pruning_fields = PruningSettings.raw_fields(self.config)
        return hook

    def apply_config_pruning(self) -> Optional[PrefillHook]:
        """Sets up the pruning the config's fields ask for, when they differ from what is set up.

        Called at load (`from_pretrained`, `load_pretrained_model`) and by `generate`; a hook
        installed by `prefill_hook_installed` is left alone while the config is unchanged.

        Returns:
            The decoder's prefill hook after the setup.

        Raises:
            See `set_pruning`.
        """
        fields = PruningSettings.raw_fields(self.config)
        if fields != self._pruning_fields:
            ratio, recipe, policy, seed = fields
            self.set_pruning(parse_reduction_ratio(ratio), recipe or None, policy, int(seed))
        return self.get_model().prefill_hook
