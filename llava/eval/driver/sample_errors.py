"""Samples an eval run could not answer, and the errors file beside the answers that lists them.

With ``--on-error skip`` (the drivers' default) a question whose image or prompt cannot be
used is not answered: it is appended to ``<answers stem>.errors.jsonl``, flushed and fsynced,
and the run goes on. Each line is one JSON object:

    {"question_id": 7, "round_id": null, "line": 8, "field": "image",
     "message": "q.jsonl:8: field 'image': images/7.png: truncated or corrupt PNG file (...)"}

A resumed run retries every question without an answer, so the errors file is started
afresh by each run that has questions to answer; after a complete run it lists exactly the
questions left unanswered, and it is absent when there are none. With ``--on-error fail``
the first such question stops the run (exit status 2, the message on stderr) and is not
listed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from llava.eval.records.sidecar_files import ERRORS_SUFFIX, append_lines_durably, sidecar_path
ON_ERROR_CHOICES = ("skip", "fail")


@dataclass(frozen=True)
class FailedSample:
    """A question whose image or prompt could not be used.

    Attributes:
        item: the question (an `llava.eval.driver.loop.EvalItem`).
        field: the question-file field at fault ("image", "text": a prompt with the wrong
            number of image placeholders, text that cannot be encoded, or a prompt longer
            than the model's context).
        message: one line naming the question file, line and field, then the problem.
    """

    item: Any
    field: str
    message: str


class SampleErrorLog:
    """The errors file of an answers file (see the module notes).

    Attributes:
        path: ``<answers stem>.errors.jsonl``.
        count: samples recorded by this run.
        first: the first sample recorded by this run, or None.
    """

    def __init__(self, answers_file: str):
        self.path: Path = sidecar_path(answers_file, ERRORS_SUFFIX)
        self.count = 0
        self.first: Optional[FailedSample] = None

    def start_run(self) -> None:
        """Forgets the previous run's failures: every unanswered question is about to be retried."""
        self.path.unlink(missing_ok=True)
        self.count = 0
        self.first = None

    def record(self, failed: FailedSample) -> None:
        """Appends one failed sample as a JSON line, flushed and fsynced."""
        row = {"question_id": failed.item.question_id, "round_id": failed.item.extra.get("round_id"),
               "line": failed.item.line, "field": failed.field, "message": failed.message}
        append_lines_durably(self.path, [json.dumps(row)])
        self.count += 1
        self.first = self.first or failed
