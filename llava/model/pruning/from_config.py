"""From checked pruning settings to the pruner they ask for on a model.

`PruningSettings` holds the four pruning fields of a `LlavaConfig` (``reduction_ratio`` percent,
``fitprune_recipe``, ``fitprune_policy``, ``fitprune_seed``) as one checked object; `build_pruner`
finds the recipe (the settings' explicit file wins over the lookup), checks it against the model
and returns the `TokenPruner`, which keeps its settings, recipe and recipe file for run records (a
policy that brings its own schedule for the ratio needs no recipe file). The model calls these
from `LlavaLlamaForCausalLM.set_pruning` (`llava.model.pruning_setup`), before any forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from llava.model.configuration_llava import DEFAULT_POLICY
from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.policies import policy_named
from llava.model.pruning.pruner import TokenPruner
from llava.model.pruning.ratio import ReductionRatioError
from llava.model.pruning.recipe import ModelSignature, RecipeBook, RecipeError
from llava.model.pruning.recipe_lookup import find_recipe_file
from llava.model.pruning.schedules import schedule_for



@dataclass(frozen=True)
class PruningSettings:
    """The pruning a model config asks for.

    Attributes:
        reduction_ratio: FLOPs to remove, percent in [0, 100) (paper convention); 0 is unpruned.
        recipe_file: the explicit recipe file, or None to look one up (`recipe_lookup`).
        policy: the scoring policy's name (`llava.model.pruning.policies.POLICIES`).
        seed: the random policy's seed.
    """

    reduction_ratio: float = 0.0
    recipe_file: Optional[str] = None
    policy: str = DEFAULT_POLICY
    seed: int = 0

    def __post_init__(self) -> None:
        ratio = self.reduction_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 100:
            raise ReductionRatioError(
                f"reduction ratio {ratio!r} is not a percent in [0, 100); parse user input with parse_reduction_ratio"
            )
        policy_named(self.policy, self.seed)
        object.__setattr__(self, "reduction_ratio", float(ratio))

    @staticmethod
    def raw_fields(config: Any) -> tuple:
        """The config's four pruning fields as they are, unparsed (a cache key for the pruner)."""
        return (
            config.reduction_ratio or 0,
            config.fitprune_recipe,
            config.fitprune_policy or DEFAULT_POLICY,
            config.fitprune_seed or 0,
        )

    def write_to(self, config: Any) -> None:
        """Sets the config's pruning fields to these settings (saved with the config, read back at load)."""
        config.reduction_ratio = self.reduction_ratio
        config.fitprune_recipe = self.recipe_file
        config.fitprune_policy = self.policy
        config.fitprune_seed = self.seed


def build_pruner(settings: PruningSettings, config: Any, num_visual_tokens: int) -> Optional[TokenPruner]:
    """The pruner for `settings` on the model of `config`, or None when the ratio is 0.

    Args:
        settings: the pruning asked for.
        config: the model's LLaVA config (its dimensions and path, for the recipe lookup and check).
        num_visual_tokens: visual tokens per tower image of this model (for anyres models the
            base view's; their recipes state fractions, see `FractionSchedule`).

    A policy with ``check_model`` (VisionZip) refuses here a model it cannot act on. A policy with
    ``schedule_for_budget`` (DART, DivPrune, PyramidDrop, SparseVLM, VisionZip) brings its own keep
    counts for the ratio, solved from the config's dimensions (`llava.model.pruning.budget`); the
    others follow the recipe file.

    Raises:
        RecipeError: no recipe for the model or the ratio, or a recipe for another model (the
            message starts with the recipe file).
        BudgetError: (a RecipeError) a policy's own schedule cannot reach the ratio.
        TowerPolicyError: (a RecipeError) the policy cannot act on this model (`check_model`).
    """
    if settings.reduction_ratio == 0:
        return None
    policy = policy_named(settings.policy, settings.seed)
    check_model = getattr(policy, "check_model", None)
    if check_model is not None:
        check_model(config)
    own_schedule = getattr(policy, "schedule_for_budget", None)
    if own_schedule is not None:
        schedule = own_schedule(settings.reduction_ratio, DecoderDims.from_config(config), num_visual_tokens)
        return TokenPruner(policy, schedule, settings=settings)
    path = _recipe_file(settings, config)
    book = RecipeBook.load(path)
    try:
        book.check_model(ModelSignature.from_config(config, num_visual_tokens))
        recipe = book.get(settings.reduction_ratio)
    except RecipeError as err:
        raise RecipeError(f"{path}: {err}") from None
    return TokenPruner(
        policy,
        schedule_for(recipe, num_visual_tokens),
        recipe=recipe,
        recipe_file=Path(path),
        settings=settings,
    )


def _recipe_file(settings: PruningSettings, config: Any) -> Path:
    """The settings' explicit recipe file when they name one (it must exist), else the one found for
    the model of `config` (`find_recipe_file`: the checkpoint's, then the shipped books)."""
    if settings.recipe_file is None:
        return find_recipe_file(config, settings.reduction_ratio)
    path = Path(settings.recipe_file)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist")
    return path
