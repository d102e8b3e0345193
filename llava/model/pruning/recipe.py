"""The recipe file format: per-layer visual-token keep counts for FLOPs budgets, as versioned JSON.

A `Recipe` says, for one FLOPs budget (``reduction_ratio``, percent), how many visual tokens are left
after each decoder layer (its *keep counts*), and what it removes under both FLOPs conventions of
`llava.model.pruning.flops`. A `RecipeBook` holds the recipes fitted for one model (`ModelSignature`)
with their provenance; it is saved atomically as JSON with a schema version, and read back with every
field validated and the keep counts checked against their labels.

Models whose samples differ in visual token count (LLaVA-NeXT's anyres images: from one view to
about five views' worth of tokens, by aspect ratio) use *fractional* recipes: ``keep_fractions`` gives, per layer, the share of
each sample's initial visual tokens left after the layer; a sample that starts with ``n`` tokens keeps
``floor(fraction * n + 0.5)`` (`keep_counts_for_fractions`). Such a recipe also carries the
``keep_counts`` its fractions give for ``num_visual_tokens`` (the model's tokens per tower image), and
its ``achieved_*`` figures are computed on the calibration samples' own counts. ``keep_fractions`` is an
optional field: files without it (every absolute recipe) keep the schema version 1 layout.

This module holds the `RecipeBook`; `ModelSignature` and `Recipe` are in `recipe_entries`, the field
checks and constants in `recipe_fields`, the file writing and reading in `recipe_file`.
Where a model's recipe file is found: `llava.model.pruning.recipe_lookup`. Recipes are fitted by
``python -m fitprune.calibrate``; ``python -m fitprune.recipe show FILE`` prints one.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from llava.model.pruning.flops import paper_reduction
from llava.model.pruning.recipe_fields import (
    LABEL_TOLERANCE,
    RATIO_TOLERANCE,
    SCHEMA_VERSION,
    RecipeError,
    check_keys,
    format_ratio,
)
from llava.model.pruning.recipe_entries import ModelSignature, Recipe
from llava.model.pruning.recipe_file import read_book_json, write_json_atomically


@dataclass(frozen=True)
class RecipeBook:
    """The recipes fitted for one model, with their provenance; saved as one JSON file.

    Attributes:
        model: what the recipes were fitted for.
        recipes: the recipes, sorted by reduction ratio (sorted on construction; ratios unique).
        provenance: free-form, JSON-serialisable facts on how the recipes were made (source, calibration
            file sha256, number of samples, seed, versions, wall time); normalised through JSON so that
            a saved and reloaded book compares equal.
        schema_version: the JSON layout version; always `SCHEMA_VERSION` in memory.
    """

    model: ModelSignature
    recipes: tuple[Recipe, ...]
    provenance: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise RecipeError(
                f"schema_version={self.schema_version!r} is not supported (this code reads {SCHEMA_VERSION})"
            )
        if not isinstance(self.model, ModelSignature):
            raise RecipeError(f"model must be a ModelSignature, got {type(self.model).__name__}")
        recipes = tuple(self.recipes)
        for recipe in recipes:
            if not isinstance(recipe, Recipe):
                raise RecipeError(f"recipes must hold Recipe objects, got {type(recipe).__name__}")
        recipes = tuple(sorted(recipes, key=lambda r: r.reduction_ratio))
        for previous, recipe in zip(recipes, recipes[1:]):
            if recipe.reduction_ratio - previous.reduction_ratio < RATIO_TOLERANCE:
                raise RecipeError(
                    f"recipe {format_ratio(recipe.reduction_ratio)}: two recipes for the same reduction ratio"
                )
        for recipe in recipes:
            self._check_recipe(recipe)
        object.__setattr__(self, "recipes", recipes)
        if not isinstance(self.provenance, dict):
            raise RecipeError(f"provenance must be a dict, got {type(self.provenance).__name__}")
        try:
            provenance = json.loads(json.dumps(self.provenance, allow_nan=False))
        except (TypeError, ValueError) as err:
            raise RecipeError(f"provenance is not JSON-serialisable: {err}") from None
        object.__setattr__(self, "provenance", provenance)

    def _check_recipe(self, recipe: Recipe) -> None:
        """Raises RecipeError when a recipe does not fit this book's model."""
        where = f"recipe {format_ratio(recipe.reduction_ratio)}"
        if len(recipe.keep_counts) != self.model.num_layers:
            raise RecipeError(
                f"{where}: {len(recipe.keep_counts)} keep counts but model '{self.model.name}' "
                f"has num_layers={self.model.num_layers}"
            )
        if recipe.num_visual_tokens != self.model.num_visual_tokens:
            raise RecipeError(
                f"{where}: num_visual_tokens={recipe.num_visual_tokens} but model '{self.model.name}' "
                f"has num_visual_tokens={self.model.num_visual_tokens}"
            )

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes the book as JSON (keys sorted, indent 1), atomically.

        The JSON goes to a temporary file in the same folder, which then replaces ``path``; a write that
        is interrupted leaves any previous file untouched and no temporary file behind.

        Args:
            path: the JSON file to write.

        Raises:
            OSError: the folder is not writable.
        """
        data = dataclasses.asdict(self)
        for recipe in data["recipes"]:
            if recipe["keep_fractions"] is None:  # absolute recipes keep the original layout
                del recipe["keep_fractions"]
        write_json_atomically(Path(path), data)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "RecipeBook":
        """Reads and validates a recipe book.

        Args:
            path: the JSON file.

        Returns:
            The book.

        Raises:
            RecipeError: the file is missing, is not UTF-8 or not valid JSON (message gives the byte, or
                the line and column), has a different schema version, or a field is missing, unknown,
                mistyped or out of range, or a recipe's keep counts remove more than its label says or
                other than its recorded ``achieved_paper`` (`check_labels`); every message starts with the
                file name and names the recipe ratio, field and offending value.
        """
        where = str(path)
        raw = read_book_json(where, cls)
        try:
            check_keys(raw["model"], ModelSignature, "model")
            model = ModelSignature(**raw["model"])
            recipes = []
            for i, entry in enumerate(raw["recipes"]):
                has_ratio = isinstance(entry, dict) and "reduction_ratio" in entry
                label = f"recipe {format_ratio(entry['reduction_ratio'])}" if has_ratio else f"recipes[{i}]"
                check_keys(entry, Recipe, label, optional=("keep_fractions",))
                recipes.append(Recipe(**entry))
            book = cls(model=model, recipes=tuple(recipes), provenance=raw["provenance"], schema_version=SCHEMA_VERSION)
            book.check_labels()
            return book
        except RecipeError as err:
            raise RecipeError(f"{where}: {err}") from None

    def ratios(self) -> tuple[float, ...]:
        """The budgets this book has recipes for.

        Returns:
            Reduction ratios in percent, ascending.
        """
        return tuple(recipe.reduction_ratio for recipe in self.recipes)

    def get(self, ratio: float) -> Recipe:
        """The recipe for a budget.

        Args:
            ratio: reduction ratio in percent (see `parse_reduction_ratio` for user input).

        Returns:
            The recipe whose ratio is within `RATIO_TOLERANCE` of ``ratio``.

        Raises:
            RecipeError: no such recipe; the message lists the available ratios and the command that fits one.
        """
        for recipe in self.recipes:
            if abs(recipe.reduction_ratio - ratio) < RATIO_TOLERANCE:
                return recipe
        available = ", ".join(format_ratio(r) for r in self.ratios()) or "none"
        raise RecipeError(
            f"no recipe for reduction ratio {format_ratio(ratio)}% for model '{self.model.name}' "
            f"(available: {available}). Fit one with: python -m fitprune.calibrate --model-path <path> "
            f"--reduction-ratio {format_ratio(ratio)} --output <file>"
        )

    def with_recipe(self, recipe: Recipe) -> "RecipeBook":
        """A new book with ``recipe`` added, replacing any recipe for the same ratio.

        Args:
            recipe: the recipe to add.

        Returns:
            The new book (this one is unchanged).

        Raises:
            RecipeError: the recipe does not fit the book's model.
        """
        kept = tuple(r for r in self.recipes if abs(r.reduction_ratio - recipe.reduction_ratio) >= RATIO_TOLERANCE)
        return dataclasses.replace(self, recipes=kept + (recipe,))

    def paper_reduction_of(self, recipe: Recipe) -> float:
        """FLOPs a recipe removes under the paper convention, percent, recomputed from its keep counts
        and this book's model (for a fractional recipe: what its fractions remove of a sample of
        ``num_visual_tokens`` visual tokens, the counts it carries)."""
        return paper_reduction(self.model.dims(), recipe.keep_counts, recipe.num_visual_tokens)

    def check_labels(self) -> None:
        """Checks what each recipe's keep counts remove (`paper_reduction_of`) against what it says.

        A recipe may not remove more than `LABEL_TOLERANCE` points over its label (``reduction_ratio``);
        it may fall short of it, as the authors' published low budgets do (their "10" removes 6.44%,
        see the spec's table). A recipe of absolute counts must also remove its recorded
        ``achieved_paper`` within `LABEL_TOLERANCE`; a fractional one records that figure on its
        calibration samples' own counts, so only its label is checked.

        Raises:
            RecipeError: a recipe disagrees; the message names it and gives both numbers (percent).
        """
        for recipe in self.recipes:
            where = f"recipe {format_ratio(recipe.reduction_ratio)}"
            removed = self.paper_reduction_of(recipe)
            if removed > recipe.reduction_ratio + LABEL_TOLERANCE:
                raise RecipeError(
                    f"{where}: its keep counts remove {removed:.2f}% of FLOPs (paper convention) but its label "
                    f"says {format_ratio(recipe.reduction_ratio)}% (more than {LABEL_TOLERANCE:g} point over)"
                )
            if not recipe.is_fractional and abs(removed - recipe.achieved_paper) > LABEL_TOLERANCE:
                raise RecipeError(
                    f"{where}: its keep counts remove {removed:.2f}% of FLOPs (paper convention) but its "
                    f"achieved_paper says {recipe.achieved_paper:.2f}%"
                )

    def check_model(self, signature: ModelSignature) -> None:
        """Checks that this book was fitted for a model with the given signature (names are not compared).

        Args:
            signature: the signature of the model about to use the recipes.

        Raises:
            RecipeError: the layer count, the visual-token count or a dimension differs; names each with both values.
        """
        mismatches = [
            f"{f.name} {getattr(self.model, f.name)} (recipes) vs {getattr(signature, f.name)} (model)"
            for f in dataclasses.fields(ModelSignature)
            if f.name != "name" and getattr(self.model, f.name) != getattr(signature, f.name)
        ]
        if mismatches:
            raise RecipeError(
                f"recipes fitted for '{self.model.name}' do not fit model '{signature.name}': " + "; ".join(mismatches)
            )
