"""Output files checked before the work starts, and filesystem faults while writing as one line.

    check_output_file(args.answers_file, "--answers-file", inputs={"--question-file": args.question_file})
    with writing_to(args.answers_file, "rerun to resume"):
        answers.append(rows)                  # ENOSPC, EROFS, EACCES, EISDIR... -> OutputPathError

`check_output_file` and `check_output_folder` run before any model is loaded, so a path that
cannot be written is reported at once rather than after the first batch. They are a first
look, not a guarantee (the disk may fill later); `writing_to` turns the filesystem errors a
write can meet into an `OutputPathError` naming the file, which the command lines print as
one ``error:`` line with exit status 2.
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator, Mapping, Optional, Union

from llava.eval.io_utils import InputError

PathLike = Union[str, "os.PathLike[str]"]

WRITE_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR,
    errno.EFBIG, errno.ENAMETOOLONG, errno.ELOOP, errno.EEXIST,
})
"""The errno values of a write that fails because of where it writes (not a bug of the program)."""


class OutputPathError(InputError):
    """An output file or folder that cannot be written; the one-line message names it."""


def _nearest_existing(path: Path) -> Path:
    """`path`, or its closest ancestor that exists (the folder a write would create below)."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_output_folder(folder: PathLike, flag: str) -> Path:
    """Refuses an output folder that is a file, or not writable (where it does not exist yet: its
    closest existing ancestor).

    Args:
        folder: the folder the command writes into (created when missing).
        flag: the command-line flag that named it, for the message.

    Returns:
        The folder, with ``~`` expanded.

    Raises:
        OutputPathError: ``"<folder>: <flag> ...: <reason>"``.
    """
    folder = Path(folder).expanduser()
    _check_writable_folder(folder, f"{folder}: {flag}")
    return folder


def _check_writable_folder(folder: Path, subject: str) -> None:
    """Raises `OutputPathError` ``"<subject> cannot be written: <reason>"`` when `folder` (or, where
    it does not exist yet, its closest existing ancestor) is not a writable directory."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise OutputPathError(f"{subject} cannot be written: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only(existing) else "no permission to write there"
        raise OutputPathError(f"{subject} cannot be written: {existing} is not writable ({reason})")


def check_output_file(path: PathLike, flag: str, inputs: Optional[Mapping[str, Optional[PathLike]]] = None) -> Path:
    """Refuses an output file that cannot be written: a directory, one of the command's input
    files (symlinks resolved), an existing file without write permission, or a folder that
    `check_output_folder` refuses.

    Args:
        path: the file the command writes (created, with its folder, when missing).
        flag: the command-line flag that named it, for the message.
        inputs: the command's input files by flag (None values are skipped).

    Returns:
        The path, with ``~`` expanded.

    Raises:
        OutputPathError: ``"<path>: <flag> ...: <reason>"``.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputPathError(f"{path}: {flag} is a directory; name a file in it")
    for input_flag, input_path in (inputs or {}).items():
        if input_path is not None and path.exists() and os.path.exists(input_path) \
                and os.path.samefile(path, input_path):
            raise OutputPathError(f"{path}: {flag} is the same file as {input_flag} {input_path}; "
                                  f"the output would overwrite the input")
    _check_writable_folder(path.parent, f"{path}: {flag}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{path}: {flag} cannot be written (no permission)")
    return path


def _read_only(path: Path) -> bool:
    """Whether `path` lies on a file system mounted read-only."""
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def describe_write_error(err: OSError, path: PathLike) -> str:
    """One line for an OSError met while writing `path`: the file the error names (else `path`),
    the reason and its errno name, e.g. ``out/run.jsonl: cannot write (No space left on device, ENOSPC)``."""
    name = err.filename if err.filename is not None else path
    code = errno.errorcode.get(err.errno, str(err.errno))
    return f"{name}: cannot write ({os.strerror(err.errno) if err.errno else err}, {code})"


def _about_output(err: OSError, path: PathLike) -> bool:
    """Whether `err` concerns writing `path` (a file, or a folder written into): it names no file (a
    write to an open file), or names a file in the folder written (the file, its temporary and
    sidecar files), that folder or a folder above it."""
    if err.filename is None:
        return True
    named = os.path.abspath(os.fsdecode(err.filename))
    target = os.path.abspath(os.path.expanduser(os.fspath(path)))
    folder = target if os.path.isdir(target) else os.path.dirname(target)
    return os.path.dirname(named) == folder or (folder + os.sep).startswith(named + os.sep)


@contextlib.contextmanager
def writing_to(path: PathLike, hint: str = "") -> Iterator[None]:
    """Runs the block, turning an OSError of `WRITE_ERRNOS` met while writing `path` into `OutputPathError`.

    Args:
        path: the file the block writes (with files beside it), or the folder it writes into;
            named when the error names no file.
        hint: what the user can do, appended after ``"; "`` (e.g. "free space and rerun to resume").

    Raises:
        OutputPathError: ``describe_write_error`` plus the hint. Other OSErrors, and those naming
            a file elsewhere (an input), pass unchanged.
    """
    try:
        yield
    except OSError as err:
        if err.errno not in WRITE_ERRNOS or not _about_output(err, path):
            raise
        raise OutputPathError(describe_write_error(err, path) + (f"; {hint}" if hint else "")) from None
