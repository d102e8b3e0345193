"""Schedules: how many visual tokens each sample of a batch keeps after each layer.

A schedule turns a recipe into per-sample keep counts for the pruner (see
`llava.model.pruning.pruner.KeepSchedule`): `RecipeSchedule` for a recipe of absolute counts,
`FractionSchedule` for a fractional one (LLaVA-NeXT, where samples differ in visual tokens).
"""
from __future__ import annotations

from typing import Sequence

import torch

from llava.model.pruning.pruner import KeepSchedule
from llava.model.pruning.recipe import Recipe, RecipeError
from llava.model.pruning.recipe_fields import keep_counts_for_fractions


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
