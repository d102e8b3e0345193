"""Checked reads of the JSON files beside answers files (run records, metrics files): each field
the report uses is read with its expected type and range, and a bad one is a `ReportError`
naming the file and the field.

    record = load_json_file(path)                      # ReportError: not UTF-8, not JSON, too deep
    ratio = read_field(record, "pruning.reduction_ratio", path, optional(number(0, 100, below_high=True)), None)
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from llava.json_reading import loads_json

Check = Callable[[Any], Any]
"""A field check: returns the value (possibly converted) or raises ValueError saying what it must be."""

_REQUIRED = object()
SHOWN_CHARS = 40
"""How much of a bad value an error message quotes."""


class ReportError(ValueError):
    """A run record or metrics file that cannot be used; the message names the file and field."""


def load_json_file(path: Path) -> dict:
    """The JSON object in a file.

    Raises:
        ReportError: the file cannot be read, is not UTF-8, is not JSON (file:line), nests
            deeper than Python's parser allows, holds an integer too long to convert, or is not
            an object.
    """
    try:
        data = loads_json(path.read_text(encoding="utf-8"), path, ReportError)
    except UnicodeDecodeError as err:
        raise ReportError(f"{path}: not a JSON file (byte {err.start} is not UTF-8 text)") from None
    except OSError as err:
        raise ReportError(f"{path}: cannot read ({err.strerror or err})") from None
    except ReportError:
        raise
    except ValueError as err:  # an integer of over 4300 digits
        raise ReportError(f"{path}: invalid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def read_field(data: dict, dotted: str, path: Path, check: Check, default: Any = _REQUIRED) -> Any:
    """One field of a JSON object, checked.

    Args:
        data: the file's object.
        dotted: the field, e.g. ``"samples.answered"``.
        path: the file, for messages.
        check: e.g. ``number(0, 100)``.
        default: returned when the field (or an object above it) is absent; without it a
            missing field is an error.

    Raises:
        ReportError: ``"{path}: field '{dotted}' is missing"`` or
            ``"{path}: field '{dotted}' must be {what}, got {value}"``.
    """
    value: Any = data
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            if default is _REQUIRED:
                raise ReportError(f"{path}: field '{dotted}' is missing")
            return default
        value = value[key]
    try:
        return check(value)
    except ValueError as err:
        raise ReportError(f"{path}: field '{dotted}' must be {err}, got {_shown(value)}") from None


def optional(check: Check) -> Check:
    """`check`, or null."""
    def checked(value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(value)
        except ValueError as err:
            raise ValueError(f"{err} or null") from None
    return checked


def text(value: Any) -> str:
    """A string."""
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def obj(value: Any) -> dict:
    """A JSON object."""
    if not isinstance(value, dict):
        raise ValueError("an object")
    return value


def count(value: Any) -> int:
    """A non-negative integer (JSON's 3, not 3.0 or "3")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("a non-negative integer")
    return value


def strings(value: Any) -> list:
    """A list of strings."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("a list of strings")
    return value


def _range(low: float, high: float, below_high: bool) -> str:
    """`` in [0, 100)``, `` >= 0`` or nothing, for messages."""
    if math.isfinite(high):
        return f" in [{low:g}, {high:g}{')' if below_high else ']'}"
    return f" >= {low:g}" if math.isfinite(low) else ""


def number(low: float = -math.inf, high: float = math.inf, below_high: bool = False) -> Check:
    """A finite number (not a boolean) in [low, high], or [low, high) with `below_high`."""
    what = "a finite number" + _range(low, high, below_high)

    def checked(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(what)
        inside = low <= value < high if below_high else low <= value <= high
        if not (math.isfinite(value) and inside):
            raise ValueError(what)
        return float(value)
    return checked


def numbers(low: float = -math.inf, high: float = math.inf) -> Check:
    """A list of finite numbers in [low, high]."""
    each = number(low, high)
    what = "a list of finite numbers" + _range(low, high, False)

    def checked(value: Any) -> list:
        if not isinstance(value, list):
            raise ValueError(what)
        try:
            return [each(v) for v in value]
        except ValueError:
            raise ValueError(what) from None
    return checked
