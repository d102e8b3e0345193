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

Where a model's recipe file is found: `llava.model.pruning.recipe_lookup`. Recipes are fitted by
``python -m fitprune.calibrate``; ``python -m fitprune.recipe show FILE`` prints one.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import operator
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from llava.json_reading import json_error_message, read_json_file
from llava.model.pruning.flops import CountsLike, DecoderDims, full_reduction, paper_reduction

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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def describe_json_error(where: Union[str, os.PathLike], err: json.JSONDecodeError) -> str:
    """The message for a file that is not valid JSON: file, line, column and the parser's complaint
    (`llava.json_reading.json_error_message`)."""
    return json_error_message(where, err)


def _check_keys(raw: Any, cls: type, where: str, optional: Sequence[str] = ()) -> None:
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


@dataclass(frozen=True)
class ModelSignature(DecoderDims):
    """What a recipe was fitted for: the decoder's dimensions (`DecoderDims`) and the visual-token count.

    Attributes:
        name: model name (e.g. ``llava-v1.5-7b``); informative only, never compared.
        num_visual_tokens: visual tokens spliced into the prompt per image (before pruning).
    """

    name: str
    num_visual_tokens: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise RecipeError(f"model: field 'name' must be a string, got {self.name!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "name" and (not _is_int(value) or value <= 0):
                raise RecipeError(f"model: field '{f.name}' must be a positive int, got {value!r}")
        try:
            super().__post_init__()
        except ValueError as err:
            raise RecipeError(f"model: {err}") from None

    @classmethod
    def from_config(cls, config: Any, num_visual_tokens: int, name: Optional[str] = None) -> "ModelSignature":
        """Builds the signature of a model from its LlamaConfig-style config.

        Args:
            config: a transformers config object, or a mapping of its fields (see `DecoderDims.from_config`).
            num_visual_tokens: visual tokens per image, e.g. (image size / patch size)² for a CLIP tower.
            name: model name; defaults to the last path component of ``config._name_or_path``, or ''.

        Returns:
            The signature.

        Raises:
            ValueError: a config field is missing or invalid (`RecipeError` for the signature's own checks).
        """
        dims = DecoderDims.from_config(config)
        if name is None:
            raw = config.get("_name_or_path") if isinstance(config, Mapping) else getattr(config, "_name_or_path", None)
            name = Path(raw).name if raw else ""
        return cls(name=name, num_visual_tokens=num_visual_tokens, **dataclasses.asdict(dims))

    def dims(self) -> DecoderDims:
        """The decoder dimensions alone, for the FLOPs functions of `llava.model.pruning.flops`."""
        return DecoderDims(**{f.name: getattr(self, f.name) for f in dataclasses.fields(DecoderDims)})


def _int_counts(keep_counts: Iterable[Any], num_visual_tokens: int, where: str) -> tuple[int, ...]:
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


def _fractions(keep_fractions: Iterable[Any], where: str) -> tuple[float, ...]:
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
        if not _is_finite_number(value) or not 0 <= value <= 1:
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


@dataclass(frozen=True)
class Recipe:
    """How many visual tokens survive each decoder layer, for one FLOPs budget.

    Attributes:
        reduction_ratio: the budget: FLOPs to remove, percent in [0, 100) (paper convention).
        num_visual_tokens: visual tokens entering layer 0.
        keep_counts: visual tokens left after each layer (non-increasing, one per layer); for a
            fractional recipe, what ``keep_fractions`` give for ``num_visual_tokens``.
        achieved_paper: FLOPs removed under the paper convention, percent (a fractional recipe: on
            its calibration samples' visual token counts).
        achieved_full: FLOPs removed under the full convention with `FULL_CONVENTION_OTHER_TOKENS`
            prefix + text tokens, percent.
        alpha: the calibration's alpha (None for recipes not fitted here).
        fit: how the recipe was made, e.g. ``fitprune-intersection`` or ``published``.
        keep_fractions: None for a recipe of absolute counts; otherwise the share of each sample's
            initial visual tokens left after each layer (non-increasing, in [0, 1]), see
            `keep_counts_for_fractions`.
    """

    reduction_ratio: float
    num_visual_tokens: int
    keep_counts: tuple[int, ...]
    achieved_paper: float
    achieved_full: float
    alpha: Optional[float]
    fit: str
    keep_fractions: Optional[tuple[float, ...]] = None

    def __post_init__(self) -> None:
        where = f"recipe {format_ratio(self.reduction_ratio)}"
        ratio = self.reduction_ratio
        if not _is_finite_number(ratio) or not 0 <= ratio < 100:
            raise RecipeError(f"{where}: field 'reduction_ratio' must be a percent in [0, 100), got {ratio!r}")
        if not _is_int(self.num_visual_tokens) or self.num_visual_tokens <= 0:
            raise RecipeError(
                f"{where}: field 'num_visual_tokens' must be a positive int, got {self.num_visual_tokens!r}"
            )
        for name in ("achieved_paper", "achieved_full"):
            value = getattr(self, name)
            if not _is_finite_number(value) or value > 100:
                raise RecipeError(f"{where}: field '{name}' must be a percent (finite, at most 100), got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.alpha is not None and (not _is_finite_number(self.alpha) or not 0 <= self.alpha <= 1):
            raise RecipeError(f"{where}: field 'alpha' must be null or a number in [0, 1], got {self.alpha!r}")
        if not isinstance(self.fit, str) or not self.fit:
            raise RecipeError(f"{where}: field 'fit' must be a non-empty string, got {self.fit!r}")
        object.__setattr__(self, "reduction_ratio", float(ratio))
        object.__setattr__(self, "alpha", None if self.alpha is None else float(self.alpha))
        object.__setattr__(self, "keep_counts", _int_counts(self.keep_counts, self.num_visual_tokens, where))
        if self.keep_fractions is not None:
            fractions = _fractions(self.keep_fractions, where)
            if len(fractions) != len(self.keep_counts):
                raise RecipeError(
                    f"{where}: {len(fractions)} keep_fractions but {len(self.keep_counts)} keep_counts"
                )
            expected = tuple(int(c) for c in keep_counts_for_fractions(fractions, self.num_visual_tokens)[0])
            if expected != self.keep_counts:
                layer = next(i for i, (a, b) in enumerate(zip(expected, self.keep_counts)) if a != b)
                raise RecipeError(
                    f"{where}: keep_counts[{layer}]={self.keep_counts[layer]} but keep_fractions[{layer}]="
                    f"{fractions[layer]!r} of num_visual_tokens={self.num_visual_tokens} gives {expected[layer]}"
                )
            object.__setattr__(self, "keep_fractions", fractions)

    @property
    def is_fractional(self) -> bool:
        """True when the recipe states fractions of each sample's visual tokens."""
        return self.keep_fractions is not None

    @classmethod
    def from_keep_fractions(
        cls,
        signature: ModelSignature,
        ratio: float,
        keep_fractions: Iterable[Any],
        visual_counts: Optional[CountsLike] = None,
        alpha: Optional[float] = None,
        fit: str = FIT_INTERSECTION,
    ) -> "Recipe":
        """Builds a fractional recipe and what it achieves on the given samples' visual token counts.

        Args:
            signature: the model the recipe is for (``num_visual_tokens``: tokens per tower image).
            ratio: the budget, percent of FLOPs to remove.
            keep_fractions: share of each sample's initial visual tokens left after each layer, one
                per layer, non-increasing, in [0, 1].
            visual_counts: initial visual tokens of the samples the achieved figures are computed on
                (the calibration set's); defaults to one sample of ``signature.num_visual_tokens``.
            alpha: the calibration's alpha, if any.
            fit: how the recipe was made.

        Returns:
            The recipe, with ``keep_counts`` for ``signature.num_visual_tokens`` and the achieved
            reductions (percent, FLOPs averaged over the samples) filled in.

        Raises:
            RecipeError: the fractions do not fit the signature (length, range, monotonicity), or a
                visual count is not a positive int.
        """
        where = f"recipe {format_ratio(ratio)}"
        fractions = _fractions(keep_fractions, where)
        if len(fractions) != signature.num_layers:
            raise RecipeError(
                f"{where}: {len(fractions)} keep fractions but model '{signature.name}' "
                f"has num_layers={signature.num_layers}"
            )
        counts = np.asarray(signature.num_visual_tokens if visual_counts is None else visual_counts).reshape(-1)
        if counts.size == 0 or not np.issubdtype(counts.dtype, np.integer) or np.any(counts <= 0):
            raise RecipeError(f"{where}: visual_counts must be positive ints, got {visual_counts!r}")
        per_sample = keep_counts_for_fractions(fractions, counts)  # (S, L)
        dims = signature.dims()
        return cls(
            reduction_ratio=ratio,
            num_visual_tokens=signature.num_visual_tokens,
            keep_counts=tuple(int(c) for c in keep_counts_for_fractions(fractions, signature.num_visual_tokens)[0]),
            achieved_paper=paper_reduction(dims, per_sample, counts),
            achieved_full=full_reduction(dims, per_sample, counts, FULL_CONVENTION_OTHER_TOKENS),
            alpha=alpha,
            fit=fit,
            keep_fractions=fractions,
        )

    @classmethod
    def from_keep_counts(
        cls,
        signature: ModelSignature,
        ratio: float,
        keep_counts: Iterable[Any],
        alpha: Optional[float] = None,
        fit: str = FIT_INTERSECTION,
    ) -> "Recipe":
        """Builds a recipe and computes what it achieves under both FLOPs conventions.

        Args:
            signature: the model the recipe is for.
            ratio: the budget, percent of FLOPs to remove.
            keep_counts: visual tokens left after each layer, one int per layer (list, tuple, numpy
                array or integer torch tensor).
            alpha: the calibration's alpha, if any.
            fit: how the recipe was made.

        Returns:
            The recipe, with ``achieved_paper`` and ``achieved_full`` (percent) filled in.

        Raises:
            RecipeError: the counts do not fit the signature (length, range, monotonicity) or a field is invalid.
        """
        where = f"recipe {format_ratio(ratio)}"
        counts = _int_counts(keep_counts, signature.num_visual_tokens, where)
        if len(counts) != signature.num_layers:
            raise RecipeError(
                f"{where}: {len(counts)} keep counts but model '{signature.name}' has num_layers={signature.num_layers}"
            )
        dims = signature.dims()
        return cls(
            reduction_ratio=ratio,
            num_visual_tokens=signature.num_visual_tokens,
            keep_counts=counts,
            achieved_paper=paper_reduction(dims, counts, signature.num_visual_tokens),
            achieved_full=full_reduction(dims, counts, signature.num_visual_tokens, FULL_CONVENTION_OTHER_TOKENS),
            alpha=alpha,
            fit=fit,
        )

    @property
    def deleted_per_layer(self) -> tuple[int, ...]:
        """Visual tokens deleted after each layer (the authors' format): previous count minus this one."""
        previous = (self.num_visual_tokens,) + self.keep_counts[:-1]
        return tuple(before - after for before, after in zip(previous, self.keep_counts))

    @property
    def final_visual_tokens(self) -> int:
        """Visual tokens left after the last layer."""
        return self.keep_counts[-1]


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
        path = Path(path)
        data = dataclasses.asdict(self)
        for recipe in data["recipes"]:
            if recipe["keep_fractions"] is None:  # absolute recipes keep the original layout
                del recipe["keep_fractions"]
        temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        # os.open with mode 0o666 lets the umask set the permissions, as for a plain open().
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with open(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True, allow_nan=False)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

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
        try:
            raw = read_json_file(where, RecipeError)
        except FileNotFoundError:
            raise RecipeError(f"{where}: no such recipe file") from None
        if not isinstance(raw, dict):
            raise RecipeError(f"{where}: expected a JSON object at the top level, got {type(raw).__name__}")
        if "schema_version" not in raw:
            raise RecipeError(f"{where}: missing field 'schema_version' (expected {SCHEMA_VERSION})")
        if raw["schema_version"] != SCHEMA_VERSION or not _is_int(raw["schema_version"]):
            raise RecipeError(
                f"{where}: schema_version={raw['schema_version']!r} is not supported (this code reads {SCHEMA_VERSION})"
            )
        _check_keys(raw, cls, where)
        if not isinstance(raw["recipes"], list):
            raise RecipeError(f"{where}: field 'recipes' must be a list, got {raw['recipes']!r}")
        if not isinstance(raw["provenance"], dict):
            raise RecipeError(f"{where}: field 'provenance' must be an object, got {raw['provenance']!r}")
        try:
            _check_keys(raw["model"], ModelSignature, "model")
            model = ModelSignature(**raw["model"])
            recipes = []
            for i, entry in enumerate(raw["recipes"]):
                has_ratio = isinstance(entry, dict) and "reduction_ratio" in entry
                label = f"recipe {format_ratio(entry['reduction_ratio'])}" if has_ratio else f"recipes[{i}]"
                _check_keys(entry, Recipe, label, optional=("keep_fractions",))
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

    def removed_paper(self, recipe: Recipe) -> float:
        """FLOPs a recipe removes under the paper convention, percent, recomputed from its keep counts
        and this book's model (for a fractional recipe: what its fractions remove of a sample of
        ``num_visual_tokens`` visual tokens, the counts it carries)."""
        return paper_reduction(self.model.dims(), recipe.keep_counts, recipe.num_visual_tokens)

    def check_labels(self) -> None:
        """Checks what each recipe's keep counts remove (`removed_paper`) against what it says.

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
            removed = self.removed_paper(recipe)
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
