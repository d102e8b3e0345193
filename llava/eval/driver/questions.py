"""Reading question files: LLaVA question jsonl and LLaVA instruction data.

- question jsonl, one object per line: {"question_id", "image", "text"};
- instruction data (e.g. llava_v1_5_mix665k.json), a JSON list or jsonl of
  {"id", "image", "conversations": [{"from": "human", "value": ...}, ...]}: the first
  human turn is the question, with "<image>" removed.

    questions = load_questions("mix665k.json")          # calibration: ids may repeat
    questions = load_question_jsonl("textvqa.jsonl")    # eval drivers: text verbatim
    items = read_question_jsonl("textvqa.jsonl")        # ... as the drivers' EvalItems

Every problem is a `QuestionFileError` whose one-line message names the file, the line
and the field: a missing file, an empty file (or one of blank lines only), text that is
not UTF-8 (with the byte offset), invalid JSON, a record that is not an object, a missing
or mistyped ``question_id``/``id``, ``text`` or ``image`` field, an empty ``image``, and
more than one "<image>" in a question's text. Blank lines are skipped. A record without
``image`` (or with ``"image": null``) is a text-only question.

Ids may repeat in both: LLaVA-665k repeats them, and TextVQA's question_id is the image
id, shared by the questions of one image (its metric matches answers by id and question
text). The eval drivers resume by id and count in file order (`llava.eval.driver.answers_file`),
so repeats are answered and resumed like any question. `check_unique_ids` is for metrics
that key answers by id alone (ScienceQA).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.eval.driver.items import EvalItem
from llava.eval.io_utils import InputError, parse_jsonl_lines
from llava.json_reading import loads_json


class QuestionFileError(InputError):
    """A question file that cannot be read; the message names the file, line and field."""


class UnencodableTextError(InputError):
    """Text the tokenizer cannot encode: a character with no UTF-8 form (a lone surrogate such
    as "\\udc80", which valid JSON can hold). The message gives its position and code point."""


def check_encodable(text: str) -> None:
    """Raises `UnencodableTextError` when `text` holds a character without a UTF-8 encoding.

    SentencePiece (the LLaMA tokenizer) fails on such text with a low-level error, so the
    drivers check a prompt with this before tokenizing it.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise UnencodableTextError(
            f"character {err.start} (U+{ord(text[err.start]):04X}) cannot be encoded as UTF-8 ({err.reason}); "
            "the tokenizer cannot read it"
        ) from None


@dataclass(frozen=True)
class Question:
    """One sample of a question file.

    Attributes:
        question_id: as in the file (int or str).
        image: image path relative to the image folder, or None for text-only samples.
        text: the question: without any "<image>" placeholder and stripped (`load_questions`),
            or verbatim (`load_question_jsonl`).
        line: 1-based line of the file (index + 1 in a JSON list).
    """

    question_id: Union[int, str]
    image: Optional[str]
    text: str
    line: int


def _decode(path: Path) -> str:
    """The file's text (UTF-8, a leading byte-order mark dropped).

    Raises:
        QuestionFileError: not UTF-8 (line and byte offset), or empty / blank lines only.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise QuestionFileError(f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not text.strip():
        raise QuestionFileError(f"{path}: the file is empty (no questions)")
    return text


def iter_records(path: Path) -> Iterator[Tuple[int, Any]]:
    """(line number, parsed value) for each record of a JSON list or jsonl file; blank lines skipped.

    Raises:
        QuestionFileError: an empty file, non-UTF-8 text or invalid JSON, with the file and line.
    """
    raw = _decode(path)
    if raw.lstrip().startswith("["):
        items = loads_json(raw, path, QuestionFileError)
        for index, item in enumerate(items):
            yield index + 1, item
        return
    yield from parse_jsonl_lines(raw.splitlines(), path, QuestionFileError)


def _field(path: Path, line: int, record: dict, name: str, kinds: Tuple[type, ...]) -> Any:
    """A required field of `record`, checked to be one of `kinds` (bools are not ints)."""
    if name not in record:
        raise QuestionFileError(f"{path}:{line}: field '{name}' is missing")
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise QuestionFileError(
            f"{path}:{line}: field '{name}' must be {' or '.join(k.__name__ for k in kinds)}, "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def _image_field(path: Path, line: int, record: dict) -> Optional[str]:
    image = record.get("image")
    if image is None:
        return None
    if not isinstance(image, str):
        raise QuestionFileError(f"{path}:{line}: field 'image' must be a string, got {type(image).__name__}")
    if not image.strip():
        raise QuestionFileError(f"{path}:{line}: field 'image' is an empty string (leave it out for text-only)")
    return image


def _check_placeholders(path: Path, line: int, field: str, text: str, allowed: int) -> None:
    count = text.count(DEFAULT_IMAGE_TOKEN)
    if count > allowed:
        where = "at most once" if allowed else "not at all (the driver puts it before the question)"
        raise QuestionFileError(
            f"{path}:{line}: field '{field}' holds '{DEFAULT_IMAGE_TOKEN}' {count} time{'s' if count > 1 else ''}; "
            f"a question has one image, so it may appear {where}"
        )


def _record(path: Path, line: int, record: Any) -> dict:
    if not isinstance(record, dict):
        raise QuestionFileError(f"{path}:{line}: expected a JSON object, got {type(record).__name__}")
    return record


def _instruction_question(path: Path, line: int, record: dict) -> Question:
    qid = _field(path, line, record, "id", (int, str))
    turns = _field(path, line, record, "conversations", (list,))
    human = [i for i, t in enumerate(turns) if isinstance(t, dict) and t.get("from") == "human"]
    if not human:
        raise QuestionFileError(f"{path}:{line}: field 'conversations' has no human turn")
    field = f"conversations[{human[0]}].value"
    text = turns[human[0]].get("value")
    if not isinstance(text, str):
        raise QuestionFileError(f"{path}:{line}: field '{field}' must be a string, got {type(text).__name__}")
    _check_placeholders(path, line, field, text, allowed=1)
    return Question(qid, _image_field(path, line, record), text.replace(DEFAULT_IMAGE_TOKEN, "").strip(), line)


def _jsonl_question(path: Path, line: int, record: dict, verbatim: bool) -> Question:
    qid = _field(path, line, record, "question_id", (int, str))
    text = _field(path, line, record, "text", (str,))
    _check_placeholders(path, line, "text", text, allowed=0 if verbatim else 1)
    if not verbatim:
        text = text.replace(DEFAULT_IMAGE_TOKEN, "").strip()
    return Question(qid, _image_field(path, line, record), text, line)


def _existing(path: Union[str, Path]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise QuestionFileError(f"{path}: question file does not exist")
    return path


def load_questions(path: Union[str, Path]) -> List[Question]:
    """All samples of a question jsonl or instruction-data file, in file order; ids may repeat.

    Args:
        path: the file.

    Returns:
        The samples, text without "<image>" and stripped.

    Raises:
        QuestionFileError: see the module notes; the message names the file, line and field.
    """
    path = _existing(path)
    questions = []
    for line, record in iter_records(path):
        record = _record(path, line, record)
        if "conversations" in record:
            questions.append(_instruction_question(path, line, record))
        else:
            questions.append(_jsonl_question(path, line, record, verbatim=False))
    if not questions:
        raise QuestionFileError(f"{path}: the file is empty (no questions)")
    return questions


def load_question_jsonl(path: Union[str, Path]) -> List[Question]:
    """The questions of an eval question jsonl ({"question_id", "image", "text"}), text verbatim.

    The driver puts the image placeholder before the text itself, so the text may not hold one.

    Args:
        path: the file (a JSON list of the same objects is read too).

    Returns:
        The questions in file order.

    Raises:
        QuestionFileError: see the module notes.
    """
    path = _existing(path)
    questions = [_jsonl_question(path, line, _record(path, line, record), verbatim=True)
                 for line, record in iter_records(path)]
    if not questions:
        raise QuestionFileError(f"{path}: the file is empty (no questions)")
    return questions


def read_question_jsonl(path: Union[str, Path]) -> List[EvalItem]:
    """The drivers' items of a LLaVA question jsonl (question_id, image, text), text verbatim.

    Args:
        path: the question file.

    Returns:
        One item per question; ``prompt`` and ``question`` are the line's ``text``; a line
        without ``image`` is a text-only question.

    Raises:
        QuestionFileError: see `load_question_jsonl` (file, line and field).
    """
    return [EvalItem(q.question_id, q.text, q.text, q.image, q.line) for q in load_question_jsonl(path)]


def check_unique_ids(path: Union[str, Path], questions: List[Question]) -> None:
    """Raises on the first question id that repeats (5 and "5" differ, as in the answers file).

    Args:
        path: the question file, for the message.
        questions: its questions.

    Raises:
        QuestionFileError: ``<file>:<line>: field 'question_id': 5 repeats the question on line <first>``.
    """
    first_line: Dict[str, int] = {}
    for question in questions:
        key = json.dumps(question.question_id)
        if key in first_line:
            raise QuestionFileError(
                f"{path}:{question.line}: field 'question_id': {question.question_id!r} repeats the question on "
                f"line {first_line[key]}; answers are keyed by question id, so ids must be unique"
            )
        first_line[key] = question.line


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
