"""One recipe and the model it is for: `ModelSignature` and `Recipe`, checked on construction.

A `Recipe` gives, for one FLOPs budget (``reduction_ratio``, percent), the visual tokens left after
each decoder layer (absolute ``keep_counts``, or ``keep_fractions`` of each sample's own count) and
what it removes under both FLOPs conventions. Books of recipes and their files: `recipe`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from llava.model.pruning.flops import CountsLike, DecoderDims, full_reduction, paper_reduction
from llava.model.pruning.recipe_fields import (
    FIT_INTERSECTION,
    FULL_CONVENTION_OTHER_TOKENS,
    RecipeError,
    format_ratio,
    fractions_tuple,
    int_counts,
    is_finite_number,
    is_int,
    keep_counts_for_fractions,
)


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
            if f.name != "name" and (not is_int(value) or value <= 0):
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
        if not is_finite_number(ratio) or not 0 <= ratio < 100:
            raise RecipeError(f"{where}: field 'reduction_ratio' must be a percent in [0, 100), got {ratio!r}")
        if not is_int(self.num_visual_tokens) or self.num_visual_tokens <= 0:
            raise RecipeError(
                f"{where}: field 'num_visual_tokens' must be a positive int, got {self.num_visual_tokens!r}"
            )
        for name in ("achieved_paper", "achieved_full"):
            value = getattr(self, name)
            if not is_finite_number(value) or value > 100:
                raise RecipeError(f"{where}: field '{name}' must be a percent (finite, at most 100), got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.alpha is not None and (not is_finite_number(self.alpha) or not 0 <= self.alpha <= 1):
            raise RecipeError(f"{where}: field 'alpha' must be null or a number in [0, 1], got {self.alpha!r}")
        if not isinstance(self.fit, str) or not self.fit:
            raise RecipeError(f"{where}: field 'fit' must be a non-empty string, got {self.fit!r}")
        object.__setattr__(self, "reduction_ratio", float(ratio))
        object.__setattr__(self, "alpha", None if self.alpha is None else float(self.alpha))
        object.__setattr__(self, "keep_counts", int_counts(self.keep_counts, self.num_visual_tokens, where))
        if self.keep_fractions is not None:
            fractions = fractions_tuple(self.keep_fractions, where)
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
        fractions = fractions_tuple(keep_fractions, where)
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
        counts = int_counts(keep_counts, signature.num_visual_tokens, where)
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
