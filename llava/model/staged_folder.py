"""Writes a folder so that it appears only complete: everything goes into a hidden sibling folder
named with the writer's pid (``.<name>.partial-<pid>``), renamed to the target at the end.

A writer killed part-way (kill -9, power cut of the process) leaves only its hidden sibling; the
next writer of the same target removes the siblings of dead pids first.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator, List

PARTIAL_MARK = ".partial-"


def staging_folder(target: Path, pid: int) -> Path:
    """The hidden sibling of `target` that process `pid` writes into."""
    return target.parent / f".{target.name}{PARTIAL_MARK}{pid}"


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_staging(target: Path) -> List[Path]:
    """Removes the staging folders of `target` whose writers are gone; returns them.

    Folders of running processes (a conversion into the same target right now) are kept.
    """
    removed = []
    for sibling in target.parent.glob(f".{target.name}{PARTIAL_MARK}*"):
        pid = sibling.name[len(f".{target.name}{PARTIAL_MARK}"):]
        if pid.isdigit() and sibling.is_dir() and not _pid_alive(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True)
            removed.append(sibling)
    return removed


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yields an empty hidden folder beside `target` to write into; when the block ends normally it
    becomes `target` by one rename (which replaces an empty `target` folder), else it is removed.

    Args:
        target: the folder to produce; it must not exist, or be an empty folder. Its parent is
            created when missing.

    Raises:
        OSError: the parent cannot be written; FileExistsError when `target` was filled by someone
            else meanwhile (the written folder is then removed; the message names `target`).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(target)
    staging = staging_folder(target, os.getpid())
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        try:
            os.replace(staging, target)
        except OSError as err:
            raise FileExistsError(f"{target} cannot take the written folder ({err.strerror}): something was put "
                                  "there meanwhile; nothing was written") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
