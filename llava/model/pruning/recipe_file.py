"""A recipe book's file: written atomically, read with its top-level layout checked.

`RecipeBook.save` and `RecipeBook.load` (`llava.model.pruning.recipe`) call these; the per-field
checks of the recipes are `recipe_fields`'.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llava.atomic_files import atomic_output_path
from llava.json_reading import read_json_file
from llava.model.pruning.recipe_fields import SCHEMA_VERSION, RecipeError, check_keys, is_int


def write_json_atomically(path: Path, data: Any) -> None:
    """Writes `data` as JSON (keys sorted, indent 1, a final newline) to `path`, atomically
    (`llava.atomic_files`: an interrupted write leaves any previous file and no temporary file).

    Raises:
        OSError: the folder is not writable.
    """
    with atomic_output_path(path) as temp, open(temp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True, allow_nan=False)
        handle.write("\n")


def read_book_json(where: str, book_class: type) -> dict:
    """The JSON object of the recipe-book file `where`, with the fields of the dataclass `book_class`,
    this schema version, a ``recipes`` list and a ``provenance`` object.

    Raises:
        RecipeError: the file is missing, not UTF-8, not JSON, or its top level is not as above; the
            message starts with the file name.
    """
    try:
        raw = read_json_file(where, RecipeError)
    except FileNotFoundError:
        raise RecipeError(f"{where}: no such recipe file") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a JSON object at the top level, got {type(raw).__name__}")
    if "schema_version" not in raw:
        raise RecipeError(f"{where}: missing field 'schema_version' (expected {SCHEMA_VERSION})")
    if raw["schema_version"] != SCHEMA_VERSION or not is_int(raw["schema_version"]):
        raise RecipeError(
            f"{where}: schema_version={raw['schema_version']!r} is not supported (this code reads {SCHEMA_VERSION})"
        )
    check_keys(raw, book_class, where)
    if not isinstance(raw["recipes"], list):
        raise RecipeError(f"{where}: field 'recipes' must be a list, got {raw['recipes']!r}")
    if not isinstance(raw["provenance"], dict):
        raise RecipeError(f"{where}: field 'provenance' must be an object, got {raw['provenance']!r}")
    return raw
