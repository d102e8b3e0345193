"""Reading question files: LLaVA question jsonl and LLaVA instruction data.

- question jsonl, one object per line: {"question_id", "image", "text"};
- instruction data (e.g. llava_v1_5_mix665k.json), a JSON list or jsonl of
  {"id", "image", "conversations": [{"from": "human", "value": ...}, ...]}: the first
  human turn is the question, with "<image>" removed.

Samples keep their order and line number; ids may repeat (LLaVA-665k's do), so nothing is
keyed by id.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

from llava.constants import DEFAULT_IMAGE_TOKEN


class QuestionFileError(ValueError):
    """A question file that cannot be read; the message names the file, line and field."""


@dataclass(frozen=True)
class Question:
    """One sample of a question file.

    Attributes:
        question_id: as in the file (int or str).
        image: image path relative to the image folder, or None for text-only samples.
        text: the question, without any "<image>" placeholder.
        line: 1-based line of the file (index + 1 in a JSON list).
    """

    question_id: Union[int, str]
    image: Optional[str]
    text: str
    line: int


def iter_records(path: Path) -> Iterator[Tuple[int, dict]]:
    """(line number, parsed object) for each record of a JSON list or jsonl file.

    Raises:
        QuestionFileError: non-UTF-8 text or invalid JSON, with the file and line.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise QuestionFileError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if raw.lstrip().startswith("["):
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as err:
            raise QuestionFileError(f"{path}:{err.lineno}: invalid JSON ({err.msg}, column {err.colno})") from None
        for index, item in enumerate(items):
            yield index + 1, item
        return
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise QuestionFileError(f"{path}:{number}: invalid JSON ({err.msg}, column {err.colno})") from None


def _question(path: Path, line: int, record: dict) -> Question:
    if not isinstance(record, dict):
        raise QuestionFileError(f"{path}:{line}: expected a JSON object, got {type(record).__name__}")
    if "conversations" in record:
        if "id" not in record:
            raise QuestionFileError(f"{path}:{line}: field 'id' is missing")
        turns = [t for t in record["conversations"] if t.get("from") == "human"]
        if not turns:
            raise QuestionFileError(f"{path}:{line}: field 'conversations' has no human turn")
        qid, text = record["id"], turns[0].get("value", "")
    else:
        for field in ("question_id", "text"):
            if field not in record:
                raise QuestionFileError(f"{path}:{line}: field '{field}' is missing")
        qid, text = record["question_id"], record["text"]
    if not isinstance(text, str):
        raise QuestionFileError(f"{path}:{line}: field 'text' must be a string, got {type(text).__name__}")
    image = record.get("image")
    if image is not None and not isinstance(image, str):
        raise QuestionFileError(f"{path}:{line}: field 'image' must be a string, got {type(image).__name__}")
    return Question(qid, image, text.replace(DEFAULT_IMAGE_TOKEN, "").strip(), line)


def load_questions(path: Union[str, Path]) -> List[Question]:
    """All samples of a question file, in file order.

    Raises:
        QuestionFileError: missing or unreadable file, invalid JSON or a missing field,
            with the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise QuestionFileError(f"{path}: question file does not exist")
    questions = [_question(path, line, record) for line, record in iter_records(path)]
    if not questions:
        raise QuestionFileError(f"{path}: no questions in the file")
    return questions


def build_question_prompt(text: str, conv_mode: str, with_image: bool = True, use_im_start_end: bool = False) -> str:
    """The single-turn eval prompt for a question: "<image>\\n" + text in the conv template.

    Args:
        text: the question.
        conv_mode: key of `llava.conversation.conv_templates`.
        with_image: put the image placeholder before the question.
        use_im_start_end: wrap the placeholder in <im_start>/<im_end> (config
            `mm_use_im_start_end`).

    Raises:
        ValueError: unknown conv_mode, naming the available ones.
    """
    from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN
    from llava.conversation import conv_templates

    if conv_mode not in conv_templates:
        raise ValueError(f"unknown conv mode {conv_mode!r}; choose one of {sorted(conv_templates)}")
    if with_image:
        placeholder = (
            DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN if use_im_start_end else DEFAULT_IMAGE_TOKEN
        )
        text = placeholder + "\n" + text
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], text)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()
