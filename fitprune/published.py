"""The FitPrune authors' published recipes, converted into a recipe book.

The books shipped in ``llava/model/pruning/recipes/`` were made, from the repository root with the
shared reference files next to it, by::

    python -m fitprune.recipe import-published \\
        --reference ../shared/reference/fitprune_llava15_7b_delete_schemes.json \\
        --config llava/model/pruning/recipes/configs/llava-v1.5-7b.json \\
        --output llava/model/pruning/recipes/llava-v1.5-7b.json
    python -m fitprune.recipe import-published \\
        --reference ../shared/reference/fitprune_next_hr_delete_schemes.json --key llava_hr_7b \\
        --config llava/model/pruning/recipes/configs/llava-hr-7b-sft-1024.json \\
        --output llava/model/pruning/recipes/llava-hr-7b-sft-1024.json
    python -m fitprune.recipe import-published \\
        --reference ../shared/reference/fitprune_next_hr_delete_schemes.json --key llava_next_7b \\
        --config llava/model/pruning/recipes/configs/llava-v1.6-vicuna-7b.json \\
        --output llava/model/pruning/recipes/llava-v1.6-vicuna-7b.json

A reference file holds one model's schedules at its top level, or several under a key each (``--key``).
A model entry with ``num_visual_tokens`` gives absolute recipes; one with
``num_visual_tokens_reference`` (LLaVA-NeXT: the authors scale each count by N / reference for an
image of N visual tokens) gives fractional ones, keep fraction = keep count / reference, and its
``achieved_*`` figures are computed at the reference count.
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
from llava.model.pruning.recipe_lookup import config_visual_tokens


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _model_entry(reference: Any, key: Optional[str], where: str) -> tuple[dict, str]:
    """The schedules of one model: the whole reference file, or its entry under `key`; and where
    they are, for messages."""
    if not isinstance(reference, dict):
        raise RecipeError(f"{where}: expected a JSON object at the top level")
    if key is None:
        return reference, where
    entry = reference.get(key)
    if not isinstance(entry, dict):
        keys = sorted(k for k, v in reference.items() if isinstance(v, dict))
        raise RecipeError(f"{where}: no model entry '{key}' (entries: {', '.join(keys) or 'none'})")
    return entry, f"{where}: {key}"


def _keep_counts(deleted: Any, label: str, total: tuple[str, int], where: str) -> list[int]:
    """Keep counts from visual tokens deleted after each layer, by cumulative subtraction from the
    count `total` (its field name and value)."""
    if not isinstance(deleted, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in deleted):
        raise RecipeError(f"{where}: delete_per_layer[{label!r}] must be a list of non-negative ints, got {deleted!r}")
    field, left = total
    keep = []
    for layer, count in enumerate(deleted):
        left -= count
        if left < 0:
            raise RecipeError(
                f"{where}: delete_per_layer[{label!r}] deletes more than {field}={total[1]} by layer {layer}"
            )
        keep.append(left)
    return keep


def _signature_tokens(entry: dict, config: Any, where: str) -> tuple[int, Optional[int]]:
    """(visual tokens of the recipes' model signature, the reference count of a fractional entry or None).

    An absolute entry gives ``num_visual_tokens``, checked against the config's tower where the config
    tells (`config_visual_tokens`); a fractional entry (``num_visual_tokens_reference``) takes the
    signature's count (tokens per tower image) from the config.
    """
    reference_count = entry.get("num_visual_tokens_reference")
    from_config = config_visual_tokens(config)
    if reference_count is None:
        if "num_visual_tokens" not in entry:
            raise RecipeError(f"{where}: missing field 'num_visual_tokens' (or 'num_visual_tokens_reference')")
        tokens = entry["num_visual_tokens"]
        if from_config is not None and from_config != tokens:
            raise RecipeError(f"{where}: num_visual_tokens={tokens!r} but the config's vision tower gives {from_config}")
        return tokens, None
    if not isinstance(reference_count, int) or isinstance(reference_count, bool) or reference_count <= 0:
        raise RecipeError(f"{where}: num_visual_tokens_reference must be a positive int, got {reference_count!r}")
    if from_config is None:
        raise RecipeError(
            f"{where}: fractional schedules need the model's visual tokens per tower image, and the config "
            "names no known vision tower (mm_vision_tower or mm_vision_tower_config)"
        )
    return from_config, reference_count


def import_published(
    reference_path: Union[str, os.PathLike], config: Any, name: Optional[str] = None, key: Optional[str] = None
) -> RecipeBook:
    """Builds a recipe book from the FitPrune authors' published delete schedules.

    The model entry (the reference JSON itself, or its entry under `key`) has ``delete_per_layer``
    (ratio in percent -> visual tokens deleted after each layer), optionally ``num_layers``, and either
    ``num_visual_tokens`` (absolute recipes: keep counts by cumulative subtraction) or
    ``num_visual_tokens_reference`` (fractional recipes: keep count / reference per layer, for models
    whose images differ in token count, see the module docstring). ``source`` is read from the entry
    or, failing that, the top level.

    Args:
        reference_path: the reference JSON file.
        config: the model's LlamaConfig-style config (object or mapping); gives the dimensions and,
            for fractional entries, the visual tokens per tower image.
        name: model name; defaults to the last component of the config's ``_name_or_path``.
        key: the model's entry in a reference file that holds several; None for a one-model file.

    Returns:
        A book of ``fit='published'`` recipes, with the source text, the reference file's sha256 and
        the entry's key in its provenance.

    Raises:
        RecipeError: the reference file is invalid or does not match the config (layer count, visual
            token count, counts that go negative); every message names the file.
    """
    reference_path = Path(reference_path)
    where = str(reference_path)
    try:
        reference = json.loads(reference_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RecipeError(describe_json_error(where, err)) from None
    entry, where = _model_entry(reference, key, where)
    source = entry.get("source", reference.get("source"))
    if source is None:
        raise RecipeError(f"{where}: missing field 'source'")
    if "delete_per_layer" not in entry or not isinstance(entry["delete_per_layer"], dict):
        raise RecipeError(f"{where}: missing field 'delete_per_layer' (an object: ratio -> deletions per layer)")
    try:
        tokens, reference_count = _signature_tokens(entry, config, where)
        signature = ModelSignature.from_config(config, tokens, name=name)
    except RecipeError:
        raise
    except ValueError as err:
        raise RecipeError(f"{where}: {err}") from None
    layers = entry.get("num_layers", signature.num_layers)
    if layers != signature.num_layers:
        raise RecipeError(f"{where}: num_layers={layers!r} but the config has num_hidden_layers={signature.num_layers}")
    recipes = []
    for label, deleted in entry["delete_per_layer"].items():
        try:
            ratio = float(label)
        except ValueError:
            raise RecipeError(f"{where}: delete_per_layer key {label!r} is not a ratio in percent") from None
        total = ("num_visual_tokens", tokens) if reference_count is None else ("num_visual_tokens_reference", reference_count)
        keep = _keep_counts(deleted, label, total, where)
        try:
            if reference_count is None:
                recipes.append(Recipe.from_keep_counts(signature, ratio, keep, alpha=None, fit=FIT_PUBLISHED))
            else:
                fractions = [count / reference_count for count in keep]
                recipes.append(Recipe.from_keep_fractions(
                    signature, ratio, fractions, visual_counts=[reference_count], fit=FIT_PUBLISHED
                ))
        except RecipeError as err:
            raise RecipeError(f"{where}: delete_per_layer[{label!r}]: {err}") from None
    provenance = {
        "source": source,
        "reference_file": reference_path.name,
        "reference_sha256": _file_sha256(reference_path),
        "tool": "python -m fitprune.recipe import-published" + (f" --key {key}" if key else ""),
        "achieved_full_other_tokens": FULL_CONVENTION_OTHER_TOKENS,
    }
    if key is not None:
        provenance["reference_key"] = key
    if reference_count is not None:
        provenance["achieved_at_visual_tokens"] = reference_count
    return RecipeBook(model=signature, recipes=tuple(recipes), provenance=provenance)
