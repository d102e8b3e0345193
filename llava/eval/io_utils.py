"""Reading answer files; the eval modules' atomic writers (`llava.atomic_files`).

    rows = read_jsonl("answers/llava-v1.5-7b.jsonl")      # [{"question_id": ..., "text": ...}, ...]
    texts = read_answer_texts("answers/llava-v1.5-7b.jsonl")  # {question_id: text}
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Tuple, Type, Union

from llava.atomic_files import atomic_output_path, write_json_atomic, write_text_atomic  # noqa: F401 (eval's writers)
from llava.errors import InputError
from llava.json_reading import loads_json

PathLike = Union[str, "os.PathLike[str]"]


class JsonlError(InputError):
    """A JSON-lines file that cannot be read; the message names the file and line."""


def parse_jsonl_lines(
    lines: Iterable[str], where: PathLike, error: Type[Exception] = JsonlError, hint: str = ""
) -> Iterator[Tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line of a JSON-lines text; the one JSONL parser
    of the project (answers, questions, run logs, error logs all read through it).

    Args:
        lines: the text's lines, first line numbered 1.
        where: the file, for messages.
        error: the exception type raised for a line that is not JSON.
        hint: appended to that message (what the user can do).

    Raises:
        error: ``"{where}:{line}: invalid JSON ({reason}, column {column}){hint}"``, or JSON nested
            too deeply to read (`llava.json_reading.loads_json`).
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        yield number, loads_json(line, where, error, line=number, hint=hint)


def numbered_records(path: PathLike) -> Iterator[Tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSON-lines file, first line numbered 1.

    Raises:
        FileNotFoundError: the file does not exist.
        JsonlError: a line is not valid JSON or not a JSON object, naming ``file:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file does not exist")
    with path.open(encoding="utf-8") as handle:
        for number, row in parse_jsonl_lines(handle, path):
            if not isinstance(row, dict):
                raise JsonlError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row


def read_jsonl(path: PathLike) -> List[dict]:
    """All objects of a JSON-lines file, in file order; blank lines are skipped.

    Args:
        path: the file, one JSON object per line (UTF-8).

    Returns:
        One dict per non-blank line.

    Raises:
        FileNotFoundError: the file does not exist.
        JsonlError: a line is not valid JSON or not a JSON object, naming ``file:line``.
    """
    return [row for _, row in numbered_records(path)]


def read_answer_texts(path: PathLike) -> Dict[Any, str]:
    """{question_id: text} of a LLaVA answers file; a repeated id keeps its last answer.

    Args:
        path: answers jsonl with ``question_id`` and ``text`` on every line.

    Returns:
        The answer text per question id (ids as in the file, int or str).

    Raises:
        FileNotFoundError: the file does not exist.
        JsonlError: invalid JSON, or a line without ``question_id`` or ``text``, naming
            ``file:line``.
    """
    texts = {}
    for number, row in numbered_records(path):
        for field in ("question_id", "text"):
            if field not in row:
                raise JsonlError(f"{path}:{number}: field {field!r} is missing")
        texts[row["question_id"]] = row["text"]
    return texts
