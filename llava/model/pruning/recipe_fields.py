"""The recipe JSON fields: their constants, checks and units, shared by `recipe` and `recipe_file`.

`RecipeError` is the one error of recipes and recipe books; the checks turn a JSON value (or a list,
array or tensor given in code) into a validated tuple, or raise it naming the field and the value.
`keep_counts_for_fractions` gives the keep counts of a fractional recipe for samples of n visual tokens.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import operator
import os
from collections.abc import Iterable, Sequence
from typing import Any, Union

import numpy as np

from llava.json_reading import json_error_message
from llava.model.pruning.flops import CountsLike

SCHEMA_VERSION = 1
"""Version of the recipe-book JSON layout; `RecipeBook.load` reads only this version."""

FULL_CONVENTION_OTHER_TOKENS = 64
"""Prefix + text tokens assumed when a recipe's full-convention reduction (`Recipe.achieved_full`) is computed."""

FIT_PUBLISHED = "published"
"""`Recipe.fit` of recipes copied from the FitPrune authors' code."""

FIT_INTERSECTION = "fitprune-intersection"
"""`Recipe.fit` of the paper-faithful fit (delete the intersection of the cross and self threshold sets)."""

RATIO_TOLERANCE = 1e-6
"""Two reduction ratios (percent) closer than this name the same recipe."""

LABEL_TOLERANCE = 1.0
"""Percent points by which what a loaded recipe's counts remove (paper convention) may exceed its label
(``reduction_ratio``) or differ from its recorded ``achieved_paper`` (see `RecipeBook.check_labels`)."""


class RecipeError(ValueError):
    """A recipe or recipe book is invalid, does not fit the model, or is missing."""


def format_ratio(ratio: Any) -> str:
    """A ratio for messages: ``60`` for 60.0, the repr for a value that is not a number."""
    if isinstance(ratio, numbers.Real) and not isinstance(ratio, bool):
        return f"{float(ratio):g}"
    return repr(ratio)


def is_int(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A finite real number that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def describe_json_error(where: Union[str, os.PathLike], err: json.JSONDecodeError) -> str:
    """The message for a file that is not valid JSON: file, line, column and the parser's complaint
    (`llava.json_reading.json_error_message`)."""
    return json_error_message(where, err)


def check_keys(raw: Any, cls: type, where: str, optional: Sequence[str] = ()) -> None:
    """Checks that a JSON object has the fields of the dataclass ``cls``, all but ``optional`` required.

    Raises:
        RecipeError: ``raw`` is not an object, or has a missing or an unknown field.
    """
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a JSON object, got {type(raw).__name__} {raw!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    required = [name for name in names if name not in optional]
    missing = [name for name in required if name not in raw]
    if missing:
        raise RecipeError(f"{where}: missing field '{missing[0]}' (required: {', '.join(required)})")
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise RecipeError(f"{where}: unknown field '{unknown[0]}' (known: {', '.join(names)})")


def int_counts(keep_counts: Iterable[Any], num_visual_tokens: int, where: str) -> tuple[int, ...]:
    """Converts keep counts (list, tuple, numpy array, integer torch tensor) to a validated tuple of ints.

    Raises:
        RecipeError: a count is not an int, is negative, exceeds num_visual_tokens, or rises.
    """
    if isinstance(keep_counts, (str, bytes)) or not hasattr(keep_counts, "__iter__"):
        raise RecipeError(f"{where}: keep_counts must be a list of ints, got {keep_counts!r}")
    counts = []
    for i, value in enumerate(keep_counts):
        if isinstance(value, bool):
            raise RecipeError(f"{where}: keep_counts[{i}]={value!r} is not an int")
        try:
            count = operator.index(value)
        except TypeError:
            raise RecipeError(f"{where}: keep_counts[{i}]={value!r} is not an int") from None
        if count < 0:
            raise RecipeError(f"{where}: keep_counts[{i}]={count} is negative")
        if count > num_visual_tokens:
            raise RecipeError(f"{where}: keep_counts[{i}]={count} is above num_visual_tokens={num_visual_tokens}")
        if counts and count > counts[-1]:
            raise RecipeError(
                f"{where}: keep_counts[{i}]={count} rises above keep_counts[{i - 1}]={counts[-1]} "
                "(keep counts must not increase)"
            )
        counts.append(count)
    if not counts:
        raise RecipeError(f"{where}: keep_counts is empty")
    return tuple(counts)


def keep_counts_for_fractions(keep_fractions: CountsLike, num_visual: CountsLike) -> np.ndarray:
    """Visual tokens a fractional recipe keeps: ``floor(fraction * n + 0.5)`` (halves round up).

    Args:
        keep_fractions: share of the initial visual tokens left after each layer, shape (layers,).
        num_visual: each sample's initial visual token count n, a scalar or shape (samples,).

    Returns:
        (samples, layers) int64 keep counts; non-increasing along layers when the fractions are.
    """
    fractions = np.asarray(keep_fractions, dtype=np.float64).reshape(1, -1)
    counts = np.asarray(num_visual, dtype=np.float64).reshape(-1, 1)
    return np.floor(fractions * counts + 0.5).astype(np.int64)


def fractions_tuple(keep_fractions: Iterable[Any], where: str) -> tuple[float, ...]:
    """Converts keep fractions to a validated tuple of floats.

    Raises:
        RecipeError: a value is not a number, is outside [0, 1], or rises; or there is none.
    """
    if isinstance(keep_fractions, (str, bytes)) or not hasattr(keep_fractions, "__iter__"):
        raise RecipeError(f"{where}: keep_fractions must be a list of numbers in [0, 1], got {keep_fractions!r}")
    fractions: list[float] = []
    for i, value in enumerate(keep_fractions):
        if hasattr(value, "item") and not isinstance(value, (list, tuple)):
            value = value.item()  # numpy or torch scalar
        if not is_finite_number(value) or not 0 <= value <= 1:
            raise RecipeError(f"{where}: keep_fractions[{i}]={value!r} is not a number in [0, 1]")
        if fractions and value > fractions[-1]:
            raise RecipeError(
                f"{where}: keep_fractions[{i}]={value!r} rises above keep_fractions[{i - 1}]={fractions[-1]!r} "
                "(keep fractions must not increase)"
            )
        fractions.append(float(value))
    if not fractions:
        raise RecipeError(f"{where}: keep_fractions is empty")
    return tuple(fractions)
