"""The files beside an answers file ``<name>.jsonl``: their names, durable appends, and counts.

``<name>.run-stats.ndjson`` (the run-stats log), ``<name>.run.json`` (the run record) and
``<name>.errors.jsonl`` (the samples a run skipped) live beside the answers; `SampleCoverage`
says how many of a run's questions a score covers.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from llava.eval.io_utils import write_text_atomic

logger = logging.getLogger(__name__)

RUN_RECORD_SUFFIX = ".run.json"
RUN_STATS_SUFFIX = ".run-stats.ndjson"
ERRORS_SUFFIX = ".errors.jsonl"
ANSWERS_SUFFIX = ".jsonl"

PathLike = Union[str, "os.PathLike[str]"]


def sidecar_path(answers_file: PathLike, suffix: str) -> Path:
    """The file beside an answers file with ``suffix`` in place of ``.jsonl``.

    Args:
        answers_file: e.g. ``answers/llava-v1.5-7b-r60.jsonl``.
        suffix: e.g. `RUN_RECORD_SUFFIX`.

    Returns:
        e.g. ``answers/llava-v1.5-7b-r60.run.json`` (the suffix is appended when the
        answers file does not end in ``.jsonl``).
    """
    path = Path(answers_file)
    stem = path.name[: -len(ANSWERS_SUFFIX)] if path.name.endswith(ANSWERS_SUFFIX) else path.name
    return path.with_name(stem + suffix)


def drop_partial_last_line(path: PathLike) -> bool:
    """Cuts an unterminated last line (a write cut short) off a line-oriented file.

    Args:
        path: the file; nothing happens when it does not exist or ends with a newline.

    Returns:
        True if bytes were removed.
    """
    path = Path(path)
    if not path.is_file():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    keep = data.rfind(b"\n") + 1
    logger.warning("%s: dropping an unterminated last line (%d bytes) left by an interrupted write",
                   path, len(data) - keep)
    with open(path, "r+b") as handle:
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def append_lines_durably(path: PathLike, lines: Sequence[str]) -> None:
    """Appends text lines to a file, then flushes and fsyncs it.

    Args:
        path: the file (created if missing).
        lines: lines without their trailing newline.
    """
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())


def count_lines(path: PathLike) -> int:
    """Non-blank lines of a JSONL file such as an answers or errors file (0 when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return 0
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def errors_file_path(answers_file: PathLike) -> Path:
    """``<answers stem>.errors.jsonl``: the samples a run skipped (see `llava.eval.driver.sample_errors`)."""
    return sidecar_path(answers_file, ERRORS_SUFFIX)


@dataclass(frozen=True)
class SampleCoverage:
    """How many of a run's questions a score covers.

    Attributes:
        answered: the answers scored.
        skipped: the questions the run could not answer (lines of its errors file).
        errors_file: that file, when it lists any.
    """

    answered: int
    skipped: int
    errors_file: Optional[str] = None

    @property
    def total(self) -> int:
        """Questions of the run: answered plus skipped."""
        return self.answered + self.skipped

    def describe(self) -> str:
        """``answered N of M`` and, when some were skipped, how many and where they are listed."""
        text = f"answered {self.answered} of {self.total}"
        if self.skipped:
            text += f" ({self.skipped} skipped, listed in {self.errors_file}; the score is over the answered ones)"
        return text

    def to_dict(self) -> dict:
        """The ``samples`` section of a metrics file."""
        return {"answered": self.answered, "skipped": self.skipped, "total": self.total,
                "errors_file": self.errors_file}


def sample_coverage(answers_file: PathLike) -> SampleCoverage:
    """The coverage of an answers file: its lines, and the skipped samples in its errors file."""
    errors = errors_file_path(answers_file)
    skipped = count_lines(errors)
    return SampleCoverage(answered=count_lines(answers_file), skipped=skipped,
                          errors_file=str(errors) if skipped else None)


def merge_errors_files(answers_file: PathLike, chunk_answers: Sequence[PathLike]) -> Optional[Path]:
    """Concatenates the chunks' errors files, in chunk order, into the merged answers' errors file.

    Returns:
        The merged errors file, or None (and no such file left) when no chunk skipped a sample.
    """
    path = errors_file_path(answers_file)
    chunk_errors = [errors_file_path(chunk) for chunk in chunk_answers]
    text = "".join(errors.read_text(encoding="utf-8") for errors in chunk_errors if errors.is_file())
    if not text.strip():
        path.unlink(missing_ok=True)
        return None
    write_text_atomic(path, text if text.endswith("\n") else text + "\n")
    return path
