"""The FitPrune authors' published recipes, converted into a recipe book.

The LLaVA-1.5-7B book shipped in ``llava/model/pruning/recipes/`` was made, from the repository
root with the shared reference files next to it, by::

    python -m fitprune.recipe import-published \\
        --reference ../shared/reference/fitprune_llava15_7b_delete_schemes.json \\
        --config llava/model/pruning/recipes/configs/llava-v1.5-7b.json \\
        --output llava/model/pruning/recipes/llava-v1.5-7b.json
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from llava.model.pruning.recipe import (
    FIT_PUBLISHED,
    FULL_CONVENTION_OTHER_TOKENS,
    ModelSignature,
    Recipe,
    RecipeBook,
    RecipeError,
    describe_json_error,
)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_published(reference_path: Union[str, os.PathLike], config: Any, name: Optional[str] = None) -> RecipeBook:
    """Builds a recipe book from the FitPrune authors' published delete schedules.

    The reference JSON (``fitprune_llava15_7b_delete_schemes.json`` format) has ``source``,
    ``num_layers``, ``num_visual_tokens`` and ``delete_per_layer`` (ratio in percent -> visual tokens
    deleted after each layer); keep counts follow by cumulative subtraction.

    Args:
        reference_path: the reference JSON file.
        config: the model's LlamaConfig-style config (object or mapping); gives the dimensions.
        name: model name; defaults to the last component of the config's ``_name_or_path``.

    Returns:
        A book of ``fit='published'`` recipes, with the source text and the reference file's sha256
        in its provenance.

    Raises:
        RecipeError: the reference file is invalid or does not match the config (layer count, counts
            that go negative); every message names the file.
    """
    reference_path = Path(reference_path)
    where = str(reference_path)
    try:
        reference = json.loads(reference_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RecipeError(describe_json_error(where, err)) from None
    for key in ("source", "num_layers", "num_visual_tokens", "delete_per_layer"):
        if key not in reference:
            raise RecipeError(f"{where}: missing field '{key}'")
    try:
        signature = ModelSignature.from_config(config, reference["num_visual_tokens"], name=name)
    except RecipeError as err:
        raise RecipeError(f"{where}: {err}") from None
    if reference["num_layers"] != signature.num_layers:
        raise RecipeError(
            f"{where}: num_layers={reference['num_layers']!r} but the config has "
            f"num_hidden_layers={signature.num_layers}"
        )
    recipes = []
    for key, deleted in reference["delete_per_layer"].items():
        try:
            ratio = float(key)
        except ValueError:
            raise RecipeError(f"{where}: delete_per_layer key {key!r} is not a ratio in percent") from None
        if not isinstance(deleted, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in deleted):
            raise RecipeError(
                f"{where}: delete_per_layer[{key!r}] must be a list of non-negative ints, got {deleted!r}"
            )
        keep, left = [], signature.num_visual_tokens
        for layer, count in enumerate(deleted):
            left -= count
            if left < 0:
                raise RecipeError(
                    f"{where}: delete_per_layer[{key!r}] deletes more than num_visual_tokens="
                    f"{signature.num_visual_tokens} by layer {layer}"
                )
            keep.append(left)
        try:
            recipes.append(Recipe.from_keep_counts(signature, ratio, keep, alpha=None, fit=FIT_PUBLISHED))
        except RecipeError as err:
            raise RecipeError(f"{where}: delete_per_layer[{key!r}]: {err}") from None
    provenance = {
        "source": reference["source"],
        "reference_file": reference_path.name,
        "reference_sha256": _file_sha256(reference_path),
        "tool": "python -m fitprune.recipe import-published",
        "achieved_full_other_tokens": FULL_CONVENTION_OTHER_TOKENS,
    }
    return RecipeBook(model=signature, recipes=tuple(recipes), provenance=provenance)
