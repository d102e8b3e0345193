"""Answers files that resume: existing answers are kept, their questions skipped.

    answers = AnswersFile("answers/run.jsonl")     # reads what is there (a cut-off last line is dropped)
    todo = answers.pending(items)                   # items whose key has no answer yet, in order
    answers.append(rows)                            # one batch of answer lines, flushed and fsynced

An answer's key is its question id (type kept: 5 and "5" differ) plus its ``round_id``
where it has one (MMBench's circular rounds). Repeated keys are matched by count.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, List, Protocol, Sequence, TypeVar

from llava.eval.run_record import append_lines_durably, drop_partial_last_line

logger = logging.getLogger(__name__)


class AnswersFileError(ValueError):
    """An answers file that cannot be resumed; the message names the file and line."""


def answer_key(question_id: Any, round_id: Any = None) -> str:
    """Resume key of an answer: the JSON of [question_id, round_id], so 5 and "5" differ."""
    return json.dumps([question_id, round_id])


class Keyed(Protocol):
    """Anything with a resume `key` (an `llava.eval.eval_common.EvalItem`)."""

    @property
    def key(self) -> str: ...


ItemT = TypeVar("ItemT", bound=Keyed)


class AnswersFile:
    """A JSONL answers file opened for resuming (created, with its folder, when missing).

    Attributes:
        path: the file.
        answered: how many answers each resume key already has.

    Raises:
        AnswersFileError: a complete line that is not a JSON object with a question_id.
    """

    def __init__(self, path: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        drop_partial_last_line(self.path)
        self.answered: Counter = Counter()
        if not self.path.is_file():
            self.path.touch()
            return
        with self.path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise AnswersFileError(f"{self.path}:{number}: invalid JSON ({err.msg}); "
                                           "fix or delete the line to resume") from None
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
        """Appends answer rows as JSON lines, flushed and fsynced."""
        append_lines_durably(self.path, [json.dumps(row) for row in rows])
