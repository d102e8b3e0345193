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
import os
from pathlib import Path
from typing import Any, Optional, Union

from llava.model.pruning.recipe import ModelSignature, Recipe, RecipeBook, RecipeError
from llava.model.pruning.recipe_fields import FIT_PUBLISHED, FULL_CONVENTION_OTHER_TOKENS, keep_counts_for_fractions
from llava.json_reading import loads_json
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


def _reference_total(entry: dict, where: str) -> tuple[str, int]:
    """The visual-token count the entry's deletions are counted from, with its field name:
    ``num_visual_tokens`` (absolute) or ``num_visual_tokens_reference`` (fractional)."""
    field = "num_visual_tokens_reference" if "num_visual_tokens_reference" in entry else "num_visual_tokens"
    if field not in entry:
        raise RecipeError(f"{where}: missing field 'num_visual_tokens' (or 'num_visual_tokens_reference')")
    total = entry[field]
    if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
        raise RecipeError(f"{where}: {field} must be a positive int, got {total!r}")
    return field, total


def _signature_tokens(total: tuple[str, int], config: Any, resample: bool, where: str) -> int:
    """Visual tokens of the recipes' model signature: the entry's absolute count (checked against the
    config's tower where the config tells, `config_visual_tokens`), else the config's."""
    field, count = total
    from_config = config_visual_tokens(config)
    if field == "num_visual_tokens" and not resample:
        if from_config is not None and from_config != count:
            raise RecipeError(f"{where}: num_visual_tokens={count} but the config's vision tower gives {from_config}")
        return count
    if from_config is None:
        raise RecipeError(
            f"{where}: the model's visual tokens per tower image are needed, and the config names no known "
            "vision tower (mm_vision_tower or mm_vision_tower_config)"
        )
    return from_config


def block_mean_fractions(fractions: list[float], num_layers: int) -> list[float]:
    """Keep fractions of a deeper schedule resampled onto `num_layers` layers: layer l takes the mean
    of the reference layers ``floor(l·R/L) .. floor((l+1)·R/L) - 1`` (R reference layers, L = num_layers),
    which keeps the schedule's shape and stays non-increasing.

    Raises:
        RecipeError: the schedule has fewer layers than `num_layers`.
    """
    depth = len(fractions)
    if depth < num_layers:
        raise RecipeError(f"cannot resample a {depth}-layer schedule onto {num_layers} layers (it needs at least as many)")
    return [
        sum(fractions[layer * depth // num_layers:(layer + 1) * depth // num_layers])
        / ((layer + 1) * depth // num_layers - layer * depth // num_layers)
        for layer in range(num_layers)
    ]


def _recipe(signature: ModelSignature, ratio: float, fractions: list[float], total: tuple[str, int],
            resample: bool) -> Recipe:
    """One published recipe: fractional for a fractional entry (achieved figures at its reference
    count, or at the signature's when resampled), else absolute counts for the signature's tokens."""
    field, count = total
    if field == "num_visual_tokens_reference":
        visual_counts = None if resample else [count]
        return Recipe.from_keep_fractions(signature, ratio, fractions, visual_counts=visual_counts, fit=FIT_PUBLISHED)
    keep = keep_counts_for_fractions(fractions, signature.num_visual_tokens)[0]
    return Recipe.from_keep_counts(signature, ratio, keep, alpha=None, fit=FIT_PUBLISHED)


def import_published(
    reference_path: Union[str, os.PathLike],
    config: Any,
    name: Optional[str] = None,
    key: Optional[str] = None,
    resample: bool = False,
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
        resample: fit the schedules to a smaller model of the same kind (e.g. a tiny test
            checkpoint): keep fractions resampled onto the config's layers (`block_mean_fractions`)
            and applied to the config's visual tokens; recipes keep their published labels.

    Returns:
        A book of ``fit='published'`` recipes, with the source text, the reference file's sha256 and
        the entry's key in its provenance.

    Raises:
        RecipeError: the reference file is invalid or does not match the config (layer count, visual
            token count, counts that go negative); every message names the file.
    """
    reference_path = Path(reference_path)
    where = str(reference_path)
    reference = loads_json(reference_path.read_text(encoding="utf-8"), where, RecipeError)
    entry, where = _model_entry(reference, key, where)
    source = entry.get("source", reference.get("source"))
    if source is None:
        raise RecipeError(f"{where}: missing field 'source'")
    if "delete_per_layer" not in entry or not isinstance(entry["delete_per_layer"], dict):
        raise RecipeError(f"{where}: missing field 'delete_per_layer' (an object: ratio -> deletions per layer)")
    total = _reference_total(entry, where)
    try:
        signature = ModelSignature.from_config(config, _signature_tokens(total, config, resample, where), name=name)
    except RecipeError:
        raise
    except ValueError as err:
        raise RecipeError(f"{where}: {err}") from None
    layers = entry.get("num_layers", signature.num_layers)
    if layers != signature.num_layers and not resample:
        raise RecipeError(f"{where}: num_layers={layers!r} but the config has num_hidden_layers={signature.num_layers}")
    recipes = []
    for label, deleted in entry["delete_per_layer"].items():
        try:
            ratio = float(label)
        except ValueError:
            raise RecipeError(f"{where}: delete_per_layer key {label!r} is not a ratio in percent") from None
        fractions = [count / total[1] for count in _keep_counts(deleted, label, total, where)]
        try:
            if resample:
                fractions = block_mean_fractions(fractions, signature.num_layers)
            recipes.append(_recipe(signature, ratio, fractions, total, resample))
        except RecipeError as err:
            raise RecipeError(f"{where}: delete_per_layer[{label!r}]: {err}") from None
    provenance = {
        "source": source,
        "reference_file": reference_path.name,
        "reference_sha256": _file_sha256(reference_path),
        "tool": "python -m fitprune.recipe import-published" + (f" --key {key}" if key else "")
        + (" --resample" if resample else ""),
        "achieved_full_other_tokens": FULL_CONVENTION_OTHER_TOKENS,
    }
    if key is not None:
        provenance["reference_key"] = key
    if total[0] == "num_visual_tokens_reference" and not resample:
        provenance["achieved_at_visual_tokens"] = total[1]
    return RecipeBook(model=signature, recipes=tuple(recipes), provenance=provenance)


def resampled_book(book: RecipeBook, config: Any, name: Optional[str] = None) -> RecipeBook:
    """A shipped book's recipes fitted to a smaller model of the same kind, as ``import-published
    --resample`` fits the reference schedules: keep fractions resampled onto the config's layers
    (`block_mean_fractions`) and applied to its visual tokens (`config_visual_tokens`), labels kept.

    Args:
        book: e.g. the shipped ``llava-hr-7b-sft-1024`` book.
        config: the smaller model's config (object or mapping).
        name: model name; defaults to the last component of the config's ``_name_or_path``.

    Returns:
        The new book; its provenance is the book's, plus ``resampled_from`` (the book's model name).

    Raises:
        RecipeError: the config tells no visual-token count, or has more layers than the book's model.
    """
    total = ("num_visual_tokens", book.model.num_visual_tokens)
    signature = ModelSignature.from_config(config, _signature_tokens(total, config, True, "the config"), name=name)
    recipes = []
    for recipe in book.recipes:
        kind = ("num_visual_tokens_reference", recipe.num_visual_tokens) if recipe.is_fractional else total
        fractions = recipe.keep_fractions or [count / recipe.num_visual_tokens for count in recipe.keep_counts]
        recipes.append(_recipe(signature, recipe.reduction_ratio,
                               block_mean_fractions(list(fractions), signature.num_layers), kind, True))
    return RecipeBook(model=signature, recipes=tuple(recipes),
                      provenance={**book.provenance, "resampled_from": book.model.name})
