"""Writing files so that an interrupted run never leaves half of one.

    write_json_atomic("results/summary.json", {"acc": 0.5}, indent=2)
    write_text_atomic("eval_tool/answers/x/color.txt", "a.txt\tq\tyes\tyes\n")

Every write goes to a temporary file in the destination's folder, which is fsynced and then
replaces the destination in one `os.replace`: a run that is killed, or a machine that goes down,
leaves the old file or the new one, and no temporary file. Parent folders are created. The file
gets the permissions a plain ``open`` would give (the umask applies). Run records, answers-side
files, reports and recipe books all write through here; this module imports nothing from llava.
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_output_path(path: PathLike) -> Iterator[Path]:
    """A temporary path to write instead of ``path``; it replaces ``path`` on success.

    For writers that want a file name (e.g. ``DataFrame.to_excel``). The temporary file sits in
    the destination's folder and keeps its suffix; it is removed if the block raises.

    Args:
        path: the destination file.

    Yields:
        The temporary path to write (already created, empty).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp{path.suffix}")
    # mode 0o666 lets the umask set the permissions, as for a plain open()
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temp
        with open(temp, "rb") as written:
            os.fsync(written.fileno())  # the bytes are on disk before the name points at them
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` through a temporary file and `os.replace`.

    Args:
        path: the destination file; missing parent folders are created.
        text: the whole content.
    """
    with atomic_output_path(path) as temp_path:
        temp_path.write_text(text, encoding="utf-8")


def write_json_atomic(path: PathLike, obj: Any, indent: Optional[int] = None) -> None:
    """Writes ``obj`` as JSON to ``path`` through a temporary file and `os.replace`.

    Args:
        path: the destination file; missing parent folders are created.
        obj: a JSON-serialisable value.
        indent: as in `json.dumps` (None: one line).

    Raises:
        TypeError: ``obj`` is not JSON-serialisable (nothing is written).
    """
    write_text_atomic(path, json.dumps(obj, indent=indent))
