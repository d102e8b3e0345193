"""The one JSON reader of the project's input files (checkpoint configs, recipes, question files,
JSON-lines files): text that is not JSON, or JSON nested deeper than the parser can follow, becomes
one error line naming the file (and line and column), never a traceback."""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional, Type, Union

PathLike = Union[str, "os.PathLike[str]"]


def json_error_message(where: PathLike, err: Union[json.JSONDecodeError, RecursionError],
                       line: Optional[int] = None) -> str:
    """The one-line message for text that `json.loads` refused.

    Args:
        where: the file.
        err: the parser's error: invalid JSON, or nesting past Python's recursion limit.
        line: the file's line, for one line of a JSON-lines file (None for a whole-file document).

    Returns:
        ``"<where>: invalid JSON at line L, column C: <reason>"`` for a document, ``"<where>:<line>:
        invalid JSON (<reason>, column C)"`` for a JSON-lines line, or ``"<where>[:<line>]: JSON nested
        too deeply to read (past about N levels of arrays and objects)"``.
    """
    place = f"{where}" if line is None else f"{where}:{line}"
    if isinstance(err, RecursionError):
        return f"{place}: JSON nested too deeply to read (past about {sys.getrecursionlimit()} levels of arrays and objects)"
    if line is None:
        return f"{place}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
    return f"{place}: invalid JSON ({err.msg}, column {err.colno})"


def loads_json(text: str, where: PathLike, error: Type[Exception] = ValueError, line: Optional[int] = None,
               hint: str = "") -> Any:
    """`json.loads(text)`, with a refusal raised as `error` with one line naming `where`.

    Args:
        text: the JSON text (a whole document, or one line of a JSON-lines file).
        where: the file it comes from, for the message.
        error: the exception type raised (e.g. ``RecipeError``, ``CheckpointError``).
        line: the line of a JSON-lines file `text` is, else None (`json_error_message`).
        hint: appended to the message (what the user can do).

    Returns:
        The parsed value.

    Raises:
        error: the text is not JSON, or is nested past the interpreter's recursion limit.
    """
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise error(json_error_message(where, err, line) + hint) from None


def read_json_file(path: PathLike, error: Type[Exception] = ValueError) -> Any:
    """The parsed JSON of a UTF-8 file (a leading byte-order mark is skipped).

    Raises:
        OSError: the file cannot be opened (FileNotFoundError, ...): callers name it their way.
        error: ``"<path>: not UTF-8 text (<reason> at byte N)"``, or the text is refused by `loads_json`.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return loads_json(text, path, error)
