"""Builds the decoder's token pruner from a recipe and a policy name.

`pruner_from_config(config, num_visual_tokens)` reads `reduction_ratio` (percent, 0 means
unpruned), `fitprune_recipe` (recipe file, optional), `fitprune_policy` (default
"fitprune") and `fitprune_seed` (random policy) from a model config. The recipe is looked
up in this order: the `fitprune_recipe` path; `fitprune_recipes.json` inside the model
directory; the recipe shipped for the model name under `fitprune/recipes/`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from fitprune.policies import POLICIES
from fitprune.recipe import (
    ModelSignature,
    Recipe,
    RecipeBook,
    RecipeError,
    keep_counts_for_fractions,
    parse_reduction_ratio,
    shipped_recipe_path,
)
from llava.model.language_model.token_pruning import KeepSchedule, TokenPruner

RECIPE_FILE_IN_CHECKPOINT = "fitprune_recipes.json"


class RecipeSchedule:
    """Keep counts of a recipe, for samples with exactly the recipe's visual token count."""

    def __init__(self, keep_counts: Sequence[int], num_visual_tokens: int):
        self.keep_counts_per_layer = torch.tensor(list(keep_counts), dtype=torch.long)
        self.num_visual_tokens = num_visual_tokens

    def keep_counts(self, layer_idx: int, initial_visual: torch.Tensor) -> torch.Tensor:
        """(B,) visual tokens left after `layer_idx`: the recipe's count for samples with
        an image, 0 for samples without.

        Raises:
            RecipeError: if a sample's visual token count is neither 0 nor the recipe's.
        """
        bad = (initial_visual != 0) & (initial_visual != self.num_visual_tokens)
        if bool(bad.any()):
            raise RecipeError(
                f"the recipe is for {self.num_visual_tokens} visual tokens per sample, but samples "
                f"{bad.nonzero().flatten().tolist()} have {initial_visual[bad].tolist()}; for a model whose "
                "samples differ in visual tokens (anyres), fit a fractional recipe with python -m fitprune.calibrate"
            )
        count = self.keep_counts_per_layer[layer_idx].to(initial_visual.device)
        return torch.where(initial_visual == 0, torch.zeros_like(initial_visual), count)


class FractionSchedule:
    """Keep counts of a fractional recipe: per sample, a share of its own initial visual tokens.

    A sample that starts with n visual tokens keeps ``floor(fraction * n + 0.5)`` after a layer
    (`fitprune.recipe.keep_counts_for_fractions`); a sample without an image keeps 0.
    """

    def __init__(self, keep_fractions: Sequence[float]):
        self.keep_fractions = tuple(keep_fractions)

    def keep_counts(self, layer_idx: int, initial_visual: torch.Tensor) -> torch.Tensor:
        """(B,) visual tokens left after `layer_idx` for samples that started with `initial_visual` (B,)."""
        counts = keep_counts_for_fractions([self.keep_fractions[layer_idx]], initial_visual.cpu().numpy())
        return torch.from_numpy(counts[:, 0]).to(initial_visual.device)


def schedule_for(recipe: Recipe, num_visual_tokens: int) -> KeepSchedule:
    """The keep schedule of a recipe: by fractions when it has them, else by absolute counts.

    Args:
        recipe: the recipe.
        num_visual_tokens: the model's visual tokens per tower image.

    Returns:
        A `FractionSchedule` or a `RecipeSchedule`.
    """
    if recipe.is_fractional:
        return FractionSchedule(recipe.keep_fractions)
    return RecipeSchedule(recipe.keep_counts, num_visual_tokens)


def recipe_search_paths(config) -> List[Path]:
    """Where the recipe file for `config`'s model is looked for, in order."""
    paths = []
    explicit = getattr(config, "fitprune_recipe", None)
    if explicit:
        paths.append(Path(explicit))
    model_path = getattr(config, "_name_or_path", "") or ""
    if model_path and os.path.isdir(model_path):
        paths.append(Path(model_path) / RECIPE_FILE_IN_CHECKPOINT)
    shipped = shipped_recipe_path(model_name_of(config))
    if shipped is not None:
        paths.append(shipped)
    return paths


def model_name_of(config) -> str:
    """The model's name as LLaVA derives it from its path (e.g. "llava-v1.5-7b")."""
    from llava.mm_utils import get_model_name_from_path

    path = getattr(config, "_name_or_path", "") or ""
    return get_model_name_from_path(path) if path else ""


def find_recipe_file(config) -> Path:
    """The first recipe file that exists for the model (see `recipe_search_paths`).

    Raises:
        RecipeError: if an explicit recipe path does not exist, or none is found.
    """
    explicit = getattr(config, "fitprune_recipe", None)
    if explicit and not Path(explicit).is_file():
        raise RecipeError(f"recipe file {explicit} does not exist")
    for path in recipe_search_paths(config):
        if path.is_file():
            return path
    name = model_name_of(config) or "this model"
    raise RecipeError(
        f"no FitPrune recipe for {name}: none of {[str(p) for p in recipe_search_paths(config)] or 'the search paths'} "
        f"exists; make one with `python -m fitprune.calibrate --model-path "
        f"{getattr(config, '_name_or_path', '') or 'MODEL'} --reduction-ratio "
        f"{getattr(config, 'reduction_ratio', 'R')} --output recipes.json` and pass --recipe recipes.json"
    )


def load_recipe_book(config) -> RecipeBook:
    """The recipe book of the first recipe file found for the model (see `find_recipe_file`).

    Raises:
        RecipeError: if an explicit recipe path does not exist, none is found, or the file is invalid.
    """
    return RecipeBook.load(find_recipe_file(config))


def pruner_from_config(config, num_visual_tokens: int) -> Optional[TokenPruner]:
    """The pruner described by `config`, or None when `reduction_ratio` is 0.

    Args:
        config: a LLaVA model config (reads reduction_ratio, fitprune_recipe,
            fitprune_policy, fitprune_seed).
        num_visual_tokens: visual tokens per tower image of this model (for anyres models the
            base view's; their recipes state fractions, see `FractionSchedule`).

    Raises:
        RecipeError: no recipe for the model or the ratio, or a recipe for another model (the
            message starts with the recipe file).
        ValueError: an unknown policy name or a ratio outside [0, 100).
    """
    ratio = parse_reduction_ratio(getattr(config, "reduction_ratio", 0) or 0)
    if ratio == 0:
        return None
    policy_name = getattr(config, "fitprune_policy", None) or "fitprune"
    if policy_name not in POLICIES:
        raise ValueError(f"unknown pruning policy {policy_name!r}; choose one of {sorted(POLICIES)}")
    path = find_recipe_file(config)
    book = RecipeBook.load(path)
    try:
        book.check_model(ModelSignature.from_config(config, num_visual_tokens))
        recipe = book.get(ratio)
    except RecipeError as err:
        raise RecipeError(f"{path}: {err}") from None
    policy_cls = POLICIES[policy_name]
    policy = policy_cls(getattr(config, "fitprune_seed", 0)) if policy_name == "random" else policy_cls()
    return TokenPruner(policy, schedule_for(recipe, num_visual_tokens))
