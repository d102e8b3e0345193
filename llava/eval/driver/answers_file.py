"""Answers files that resume: existing answers are kept, their questions skipped.

    answers = AnswersFile("answers/run.jsonl")     # reads what is there (a cut-off last line is dropped)
    todo = answers.pending(items)                   # items whose key has no answer yet, in order
    answers.append(rows)                            # one batch of answer lines, flushed and fsynced
    with lock_answers_file("answers/run.jsonl"):    # one run at a time per answers file
        ...

An answer's key is its question id (type kept: 5 and "5" differ) plus its ``round_id``
where it has one (MMBench's circular rounds). Repeated keys are matched by count. The
file (and its folder) is created by the first `append`, so a run that fails before its
first answer leaves no empty answers file behind.

A run holds ``<answers stem>.lock`` while it writes (`llava.eval.driver.file_lock`: the file holds
its pid; the lock file of a killed run is stale and the next run takes it over). A second
run on the same answers file while the first is alive is refused (`AnswersFileLockedError`).
"""
from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, List, Protocol, Sequence, TypeVar

from llava.eval.driver.file_lock import LOCK_SUFFIX, hold_lock_file
from llava.eval.io_utils import parse_jsonl_lines
from llava.eval.records.sidecar_files import append_lines_durably, drop_partial_last_line, sidecar_path

logger = logging.getLogger(__name__)


class AnswersFileError(ValueError):
    """An answers file that cannot be resumed; the message names the file and line."""


class AnswersFileLockedError(AnswersFileError):
    """An answers file another live run is writing; the message names the file and its pid."""


def answer_key(question_id: Any, round_id: Any = None) -> str:
    """Resume key of an answer: the JSON of [question_id, round_id], so 5 and "5" differ."""
    return json.dumps([question_id, round_id])


class Keyed(Protocol):
    """Anything with a resume `key` (an `llava.eval.driver.loop.EvalItem`)."""

    @property
    def key(self) -> str: ...


ItemT = TypeVar("ItemT", bound=Keyed)


class AnswersFile:
    """A JSONL answers file opened for resuming (created, with its folder, by the first `append`).

    Attributes:
        path: the file.
        answered: how many answers each resume key already has.

    Raises:
        AnswersFileError: a complete line that is not a JSON object with a question_id.
    """

    def __init__(self, path: str):
        self.path = Path(path)
        drop_partial_last_line(self.path)
        self.answered: Counter = Counter()
        if not self.path.is_file():
            return
        with self.path.open(encoding="utf-8") as handle:
            for number, row in parse_jsonl_lines(handle, self.path, AnswersFileError,
                                                 "; fix or delete the line to resume"):
                if not isinstance(row, dict) or "question_id" not in row:
                    raise AnswersFileError(f"{self.path}:{number}: field 'question_id' is missing")
                self.answered[answer_key(row["question_id"], row.get("round_id"))] += 1

    def pending(self, items: Sequence[ItemT]) -> List[ItemT]:
        """The items still to answer, in order.

        Answers whose key is not among `items` are left alone, with a warning.
        """
        remaining = Counter(self.answered)
        pending = []
        for item in items:
            if remaining[item.key] > 0:
                remaining[item.key] -= 1
            else:
                pending.append(item)
        stray = sum(remaining.values())
        if stray:
            logger.warning("%s holds %d answers to questions that are not in this run", self.path, stray)
        return pending

    def append(self, rows: Sequence[dict]) -> None:
        """Appends answer rows as JSON lines, flushed and fsynced (the file and its folder created if missing)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_lines_durably(self.path, [json.dumps(row) for row in rows])


@contextlib.contextmanager
def lock_answers_file(answers_file: str) -> Iterator[Path]:
    """Holds ``<answers stem>.lock`` for the block: one run at a time writes an answers file.

    The answers file's folder is created. A lock file left by a run that died is taken over;
    the lock file is removed when the block ends (`llava.eval.driver.file_lock.hold_lock_file`).

    Args:
        answers_file: the answers file a run is about to write.

    Yields:
        The lock file's path.

    Raises:
        AnswersFileLockedError: another live run holds the lock (the message names the
            answers file, that run's pid and the lock file).
    """
    answers = Path(answers_file)
    path = sidecar_path(answers, LOCK_SUFFIX)
    with hold_lock_file(path, answers, "run is writing this answers file", "--answers-file",
                        AnswersFileLockedError):
        yield path
