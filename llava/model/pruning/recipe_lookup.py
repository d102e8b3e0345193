"""Where a model's recipe file is when none is named: the checkpoint's own file, or a shipped one.

An explicit file (``set_pruning(recipe=...)``, ``--recipe``) is read as named, without a lookup
(`llava.model.pruning.from_config.build_pruner`). Otherwise the order: ``fitprune_recipes.json`` inside
the model directory; the book shipped for the model name in ``llava/model/pruning/recipes/``; else the shipped
book fitted for a model of the same signature (`shipped_recipe_for_signature`), so that
``llava-hf/llava-1.5-7b-hf`` (the same weights under other names) finds ``llava-v1.5-7b``'s recipes.

Shipped: ``llava-v1.5-7b``, ``llava-hr-7b-sft-1024`` (LLaVA-HR-7B, more visual tokens per image; the
name `favor123/llava-hr-7b-sft-1024` gives) and ``llava-v1.6-vicuna-7b`` (fractional, LLaVA-NeXT),
all converted from the authors' published schedules by `fitprune.published`.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any, List, Optional, Tuple

from llava.errors import CheckpointError
from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.recipe import RecipeBook, RecipeError
from llava.json_reading import read_json_file

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


def config_visual_tokens(config: Any) -> Optional[int]:
    """Visual tokens one tower image gives, read from a LLaVA config alone (no weights, offline).

    LLaVA-HR (``is_multipath_encoder``): the fast ViT's grid squared (`multipath_settings`, 1024 for
    the released models). Otherwise the CLIP tower's ``(image_size // patch_size)²`` (plus CLS for
    ``mm_vision_select_feature='cls_patch'``), from ``mm_vision_tower_config`` or a CLIP tower whose
    sizes the project knows by name; for LLaVA-NeXT that is the base view's count.

    Args:
        config: a config object or a mapping of its fields (a parsed ``config.json``).

    Returns:
        The count, or None when the config does not tell (an unknown tower, invalid HR fields).
    """
    from llava.model.multimodal_encoder.multipath_encoder import KNOWN_CLIP_TOWERS, is_multipath, multipath_settings

    if isinstance(config, Mapping):
        config = SimpleNamespace(**config)
    if is_multipath(config):
        try:
            return multipath_settings(config).fast_grid ** 2
        except (CheckpointError, ValueError, OSError):
            return None
    # `config` may be a parsed config.json (a namespace of only the keys it holds), so fields are read with defaults
    clip = getattr(config, "mm_vision_tower_config", None) or KNOWN_CLIP_TOWERS.get(
        getattr(config, "mm_vision_tower", None) or ""
    )
    try:
        patches = (clip["image_size"] // clip["patch_size"]) ** 2
    except (TypeError, KeyError, ZeroDivisionError):
        return None
    return patches + (1 if getattr(config, "mm_vision_select_feature", "patch") == "cls_patch" else 0)


def _shipped_book_kind(path: Path) -> Tuple[DecoderDims, bool, int]:
    """The decoder dimensions a shipped book was fitted for, whether it holds fractional recipes and
    its visual tokens per image, read from its JSON (the book itself is loaded, and checked, once it
    is chosen).

    Raises:
        RecipeError: the file is not a recipe book (names it).
    """
    try:
        raw = read_json_file(path)
        model = raw["model"]
        dims = DecoderDims(**{f.name: model[f.name] for f in dataclasses.fields(DecoderDims)})
        fractional = any("keep_fractions" in recipe for recipe in raw["recipes"])
        tokens = model["num_visual_tokens"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RecipeError(f"{path}: not a recipe book ({type(err).__name__}: {err})") from None
    return dims, fractional, tokens


def shipped_recipe_for_signature(config) -> Optional[Path]:
    """The shipped recipe book fitted for a model like `config`'s, whatever its name.

    A book matches when its model has the config's decoder dimensions (`DecoderDims`: layers,
    widths, heads, vocabulary), the same kind of images (fractional recipes for anyres
    (LLaVA-NeXT) models, absolute ones otherwise) and, where the config tells it
    (`config_visual_tokens`), the same visual tokens per image: LLaVA-HR-7B and LLaVA-1.5-7B share
    their decoder but not their visual token count. Where the config does not tell, the book with the fewest visual
    tokens is taken; the count is checked against the model when the recipe is used
    (`RecipeBook.check_model`).

    Returns:
        The first matching ``llava/model/pruning/recipes/*.json`` (fewest visual tokens, then file
        name), or None.
    """
    from llava.mm_utils import uses_anyres

    try:
        dims = DecoderDims.from_config(config)
    except ValueError:
        return None
    tokens = config_visual_tokens(config)
    books = [(_shipped_book_kind(path), path) for path in RECIPES_DIR.glob("*.json")]
    books.sort(key=lambda book: (book[0][2], book[1]))
    return next(
        (path for (book_dims, fractional, book_tokens), path in books
         if (book_dims, fractional) == (dims, uses_anyres(config)) and tokens in (None, book_tokens)),
        None,
    )


def recipe_search_paths(config) -> List[Path]:
    """Where the recipe file for `config`'s model is looked for first, in order: the checkpoint's own
    file and the book shipped under the model's name."""
    paths = []
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


def find_recipe_file(config, reduction_ratio: Optional[float] = None) -> Path:
    """The first recipe file that exists for the model (`recipe_search_paths`), else the book shipped
    for its signature (`shipped_recipe_for_signature`); `reduction_ratio` (percent) is named in the
    error's calibrate command.

    Raises:
        RecipeError: if none is found.
    """
    searched = recipe_search_paths(config)
    for path in searched:
        if path.is_file():
            return path
    by_signature = shipped_recipe_for_signature(config)
    if by_signature is not None:
        return by_signature
    name = model_name_of(config) or "this model"
    ratio = "R" if reduction_ratio is None else f"{reduction_ratio:g}"
    raise RecipeError(
        f"no FitPrune recipe for {name}: none of {[str(p) for p in searched] or 'the search paths'} "
        f"exists; make one with `python -m fitprune.calibrate --model-path "
        f"{getattr(config, '_name_or_path', '') or 'MODEL'} --reduction-ratio "
        f"{ratio} --output recipes.json` and pass --recipe recipes.json"
    )


def load_recipe_book(config) -> RecipeBook:
    """The recipe book of the first recipe file found for the model (see `find_recipe_file`).

    Raises:
        RecipeError: if none is found, or the file is invalid.
    """
    return RecipeBook.load(find_recipe_file(config))
