"""A calibration's provenance, and how its recipes join an existing recipe file (same calibration
replaces, another is refused naming the field that differs)."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from fitprune.fit import FIT_PRODUCT
from llava.model.pruning.recipe import RATIO_TOLERANCE, ModelSignature, RecipeBook, RecipeError
from llava.model.pruning.recipe_fields import FIT_INTERSECTION
from fitprune.calibration_set import file_sha256


FIT_CHOICES = {"intersection": FIT_INTERSECTION, "product": FIT_PRODUCT}


PROVENANCE_IDENTITY = ("source", "model_path", "model_base", "calibration_sha256", "num_samples", "seed",
                       "conv_mode", "fit")
"""Provenance fields that make two calibrations the same; the others (versions, wall time,
processes, file name, skip counts) describe a run, not its recipes."""
ADDED = "added"
"""Provenance key of the budgets added by calibrations of other provenance: a list of their
provenance, each with the ``reduction_ratios`` it fitted; the book's own provenance covers the rest."""


def calibration_provenance(args, questions, skipped, unencodable, world) -> dict:
    """What this run calibrates on and with (`PROVENANCE_IDENTITY` and facts of the run); the
    keep kind, visual token counts and wall time are added once the run is done."""
    import transformers

    return {
        "source": "python -m fitprune.calibrate",
        "model_path": args.model_path,
        "model_base": args.model_base,
        "calibration_file": str(args.question_file),
        "calibration_sha256": file_sha256(Path(args.question_file)),
        "num_samples": len(questions),
        "skipped_without_image": skipped,
        "skipped_unencodable_text": unencodable,
        "seed": args.seed,
        "conv_mode": args.conv_mode,
        "fit": FIT_CHOICES[args.fit],
        "processes": world,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }


def _identity(provenance: dict) -> dict:
    """The `PROVENANCE_IDENTITY` fields of a provenance record, the model path normalised
    (``./m`` and ``m`` are the same)."""
    fields = {name: provenance.get(name) for name in PROVENANCE_IDENTITY}
    if isinstance(fields["model_path"], str):
        fields["model_path"] = os.path.normpath(fields["model_path"])
    return fields


def same_calibration(one: dict, other: dict) -> bool:
    """Whether two provenance records describe the same calibration (`PROVENANCE_IDENTITY`)."""
    return _identity(one) == _identity(other)


def _has_ratio(ratios, ratio: float) -> bool:
    return any(isinstance(r, (int, float)) and abs(r - ratio) < RATIO_TOLERANCE for r in ratios)


def _added_entries(provenance: dict) -> List[dict]:
    """The `ADDED` provenance entries of a book (entries that are not objects are ignored)."""
    entries = provenance.get(ADDED, [])
    return [dict(e) for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def recipe_provenance(book: RecipeBook, ratio: float) -> dict:
    """The provenance of a book's recipe: the `ADDED` entry that lists its ratio, else the book's own."""
    for entry in _added_entries(book.provenance):
        if isinstance(entry.get("reduction_ratios"), list) and _has_ratio(entry["reduction_ratios"], ratio):
            return entry
    return {key: value for key, value in book.provenance.items() if key != ADDED}


def existing_book(output: Path, ratios: Sequence[float], provenance: dict) -> Optional[RecipeBook]:
    """The recipe file this run merges into (None when there is none), checked to hold no budget
    of `ratios` from a calibration of other provenance.

    Raises:
        RecipeError: the file is invalid, or holds such a budget; the message names the file, the
            budgets, the first provenance field that differs (both values) and ``--overwrite``.
    """
    if not output.exists():
        return None
    book = RecipeBook.load(output)
    clashes = [r for r in ratios if _has_ratio(book.ratios(), r)
               and not same_calibration(recipe_provenance(book, r), provenance)]
    if not clashes:
        return book
    theirs, ours = _identity(recipe_provenance(book, clashes[0])), _identity(provenance)
    differs = next(name for name in PROVENANCE_IDENTITY if theirs[name] != ours[name])
    raise RecipeError(
        f"{output}: already holds recipe(s) for budget(s) {', '.join(f'{r:g}' for r in clashes)} from another "
        f"calibration ({differs} {theirs[differs]!r} there, {ours[differs]!r} now); pass --overwrite "
        "to replace the file, or --output for another file"
    )


def merge_provenance(existing: dict, new: dict, ratios: Sequence[float]) -> dict:
    """The provenance of a book after a run of provenance `new` fitted `ratios` into it: the
    book's own when the calibrations agree (`same_calibration`), else an `ADDED` entry; the
    ratios leave every other entry, and entries left without ratios are dropped."""
    added = []
    for entry in _added_entries(existing):
        kept = [r for r in entry.get("reduction_ratios", []) if not _has_ratio(ratios, r)]
        added.append({**entry, "reduction_ratios": kept})
    own = {key: value for key, value in existing.items() if key != ADDED}
    if same_calibration(own, new):
        own = dict(new)
    else:
        match = next((entry for entry in added if same_calibration(entry, new)), None)
        if match is None:
            added.append({**new, "reduction_ratios": []})
            match = added[-1]
        match.update(new, reduction_ratios=sorted(match["reduction_ratios"] + list(ratios)))
    added = [entry for entry in added if entry["reduction_ratios"]]
    return {**own, ADDED: added} if added else own


def merge_recipes(existing: Optional[RecipeBook], signature: ModelSignature, fitted, provenance: dict) -> RecipeBook:
    """The book to write: the fitted recipes, plus the existing book's other budgets with their provenance."""
    if existing is None:
        return RecipeBook(model=signature, recipes=tuple(fitted), provenance=provenance)
    book = RecipeBook(model=signature, recipes=existing.recipes,
                      provenance=merge_provenance(existing.provenance, provenance, [r.reduction_ratio for r in fitted]))
    for recipe in fitted:
        book = book.with_recipe(recipe)
    return book


def written_summary(existing: Optional[RecipeBook], fitted, book: RecipeBook) -> str:
    """What a run did to the recipe file, e.g. ``added 30, 50; replaced 60; kept 70``."""
    before = existing.ratios() if existing is not None else ()
    new = [recipe.reduction_ratio for recipe in fitted]
    parts = [("added", [r for r in new if not _has_ratio(before, r)]),
             ("replaced", [r for r in new if _has_ratio(before, r)]),
             ("kept", [r for r in book.ratios() if not _has_ratio(new, r)])]
    return "; ".join(f"{word} {', '.join(f'{r:g}' for r in ratios)}" for word, ratios in parts if ratios)
