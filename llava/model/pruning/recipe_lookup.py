"""Where a model's recipe file is: an explicit path, the checkpoint's own file, or a shipped one.

The order: the config's ``fitprune_recipe`` path; ``fitprune_recipes.json`` inside the model
directory; the book shipped for the model name in ``llava/model/pruning/recipes/``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

from llava.model.pruning.recipe import RecipeBook, RecipeError

RECIPE_FILE_IN_CHECKPOINT = "fitprune_recipes.json"
"""Name of the recipe file that `python -m fitprune.calibrate` writes into a checkpoint by default."""

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
"""Folder of the shipped recipe books (``<model name>.json``), e.g. the authors' LLaVA-1.5-7B recipes."""


def shipped_recipe_path(model_name: str) -> Optional[Path]:
    """The shipped recipe book for a model, if there is one.

    Args:
        model_name: a model name such as ``llava-v1.5-7b``, or a model path whose last component is
            the name (``liuhaotian/llava-v1.5-7b``); matched case-insensitively on the file stem.

    Returns:
        ``llava/model/pruning/recipes/<name>.json``, or None when no such file is shipped.
    """
    name = Path(model_name).name.lower()
    if not name:
        return None
    for path in sorted(RECIPES_DIR.glob("*.json")):
        if path.stem.lower() == name:
            return path
    return None


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
