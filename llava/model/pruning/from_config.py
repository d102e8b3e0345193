"""From a model config to the pruner it asks for, with the config's pruning fields parsed once.

A LLaVA config carries four pruning fields: ``reduction_ratio`` (percent or fraction, 0 means
unpruned), ``fitprune_recipe`` (a recipe file, optional), ``fitprune_policy`` (default
"fitprune") and ``fitprune_seed`` (for the random policy). `PruningSettings.from_config` reads
them into one checked object; `build_pruner` finds the recipe, checks it against the model and
returns the `TokenPruner`, which keeps its settings, recipe and recipe file for run records (a
policy that brings its own schedule for the ratio needs no recipe file).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.policies import policy_named
from llava.model.pruning.pruner import TokenPruner
from llava.model.pruning.ratio import ReductionRatioError, parse_reduction_ratio
from llava.model.pruning.recipe import ModelSignature, RecipeBook, RecipeError
from llava.model.pruning.recipe_lookup import find_recipe_file
from llava.model.pruning.schedules import schedule_for

DEFAULT_POLICY = "fitprune"


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
            getattr(config, "reduction_ratio", 0) or 0,
            getattr(config, "fitprune_recipe", None),
            getattr(config, "fitprune_policy", None) or DEFAULT_POLICY,
            getattr(config, "fitprune_seed", 0) or 0,
        )

    @classmethod
    def from_config(cls, config: Any) -> "PruningSettings":
        """Parses a config's pruning fields (missing ones read as unpruned, no recipe, "fitprune", seed 0).

        Raises:
            ReductionRatioError: the ratio is not a number in [0, 100).
            ValueError: an unknown policy name.
        """
        ratio, recipe_file, policy, seed = cls.raw_fields(config)
        return cls(parse_reduction_ratio(ratio), recipe_file or None, policy, int(seed))

    def write_to(self, config: Any) -> None:
        """Sets the config's pruning fields to these settings (saved with the config, read by `from_config`)."""
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

    A policy with ``schedule_for_budget`` (DART, DivPrune, PyramidDrop, SparseVLM) brings its own keep
    counts for the ratio, solved from the config's dimensions (`llava.model.pruning.budget`); the
    others follow the recipe file.

    Raises:
        RecipeError: no recipe for the model or the ratio, or a recipe for another model (the
            message starts with the recipe file).
        BudgetError: (a RecipeError) a policy's own schedule cannot reach the ratio.
    """
    if settings.reduction_ratio == 0:
        return None
    policy = policy_named(settings.policy, settings.seed)
    own_schedule = getattr(policy, "schedule_for_budget", None)
    if own_schedule is not None:
        schedule = own_schedule(settings.reduction_ratio, DecoderDims.from_config(config), num_visual_tokens)
        return TokenPruner(policy, schedule, settings=settings)
    path = find_recipe_file(config)
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


def pruner_from_config(config: Any, num_visual_tokens: int) -> Optional[TokenPruner]:
    """The pruner described by `config`'s pruning fields, or None when `reduction_ratio` is 0.

    Raises:
        RecipeError: see `build_pruner`.
        ValueError: an unknown policy name or a ratio outside [0, 100).
    """
    return build_pruner(PruningSettings.from_config(config), config, num_visual_tokens)
