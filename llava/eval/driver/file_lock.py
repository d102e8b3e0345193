"""One writer at a time per output file: a lock file holding the writer's pid.

    with hold_lock_file(Path("recipes.json.lock"), "recipes.json", "calibration is writing this recipe file",
                        "--output", RecipeFileLockedError):
        ...                                   # this process alone writes recipes.json

The lock file holds the pid of the process that holds it and carries a POSIX record lock
(`fcntl.lockf`), which the kernel drops when the process ends however it ends (kill -9
included), so the lock file of a killed process is stale and the next one takes it over. A
second process while the first is alive is refused with one line naming the guarded file and
the holder's pid. Used for answers files (`llava.eval.driver.answers_file`) and recipe files
(`fitprune.calibrate`).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import Callable, Iterator, Optional, Type, Union

LOCK_SUFFIX = ".lock"
"""The lock file's suffix: ``<answers stem>.lock``, ``<recipe file>.lock``."""


def _holder_pid(fd: int) -> Optional[int]:
    """The pid written in an open lock file, or None when it holds none yet."""
    text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None


def _lock_or_refuse(path: Path, refused: Callable[[Optional[int]], Exception]) -> int:
    """Opens and locks `path`, retrying when its previous holder removed it meanwhile.

    Returns:
        The open descriptor, locked, the file holding this process's pid.

    Raises:
        The exception ``refused(pid)`` builds: another live process holds the lock (pid None
        when it has not written its pid yet).
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise
            pid = _holder_pid(fd)
            os.close(fd)
            raise refused(pid) from None
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            os.fsync(fd)
            return fd
        os.close(fd)


@contextlib.contextmanager
def hold_lock_file(path: Path, guarded: Union[str, "os.PathLike[str]"], writer: str, flag: str,
                   error: Type[Exception]) -> Iterator[Path]:
    """Holds the lock file `path` for the block (its folder is created; a stale one is taken over;
    it is removed when the block ends).

    Args:
        path: the lock file, e.g. ``<answers stem>.lock``.
        guarded: the file the lock guards, named in the refusal.
        writer: who holds it, e.g. "run is writing this answers file".
        flag: the flag that picks another file, e.g. "--answers-file".
        error: the exception type of the refusal.

    Yields:
        `path`.

    Raises:
        error: another live process holds the lock: ``"<guarded>: another <writer> (pid <pid>,
            lock file <path>); wait for it to end, or pass another <flag>"``.
    """

    def refused(pid: Optional[int]) -> Exception:
        return error(f"{guarded}: another {writer} (pid {pid if pid else 'unknown'}, lock file {path}); "
                     f"wait for it to end, or pass another {flag}")

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock_or_refuse(path, refused)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)  # while locked: a process that opened the old file sees it is gone, and retries
        os.close(fd)
