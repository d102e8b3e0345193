"""Bad input, one row per case in `CASES`: each gives a one-line error naming the file, line and
field (exit status 2 from the command lines), or, for inputs that must work, what they give.

Areas and how a row is checked:

- image: `llava.image_loading.load_image` raises the row's error, or gives the image the row's
  check expects; `test_benchmark_run_lists_bad_images_and_answers_the_rest` then runs every
  image row through a driver (errors.jsonl, --on-error skip / fail, resume);
- question file, recipe, ratio, model path: ``python -m llava.eval.model_vqa_loader`` with
  the row's flags on top of a valid run (the session's tiny model stands in when the model
  path is the tiny checkpoint, so only model-path rows load a model);
- calibration data: ``python -m fitprune.calibrate`` with the row's question file.
"""
import dataclasses
import json
import os
import re
import shutil
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.utils import is_offline_mode

from fitprune.calibrate import main as calibrate_main
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT
from llava.model.pruning.recipe import Recipe, RecipeBook
from fitprune.visualize import main as visualize_main
from llava.eval import model_vqa_loader, run_llava
from llava.eval.driver import loop as driver_loop
from llava.eval.driver.items import EvalItem
from llava.eval.driver.model_loading import LoadedModel
from llava.image_loading import (
    DEFAULT_MAX_DECODED_BYTES,
    MAX_SIDE_IN_TOWER_SIDES,
    ImageError,
    bound_image_geometry,
    load_image,
    tower_input_side,
)
from llava.eval.driver.questions import load_questions
from llava.eval.records.sidecar_files import RUN_RECORD_SUFFIX, sidecar_path
from llava.eval.driver.sample_errors import ERRORS_SUFFIX
from llava.mm_utils import process_images
from llava.pruning_flags import apply_pruning_args
from tests.helpers import TINY_KEEP_COUNTS, TINY_RECIPE_RATIO

IMAGE, QUESTIONS, CALIBRATION, RECIPE, RATIO, MODEL = (
    "image", "question file", "calibration data", "recipe", "ratio", "model path")
DRIVER_AREAS = (QUESTIONS, RECIPE, RATIO, MODEL)
WHITE = (255, 255, 255)

# ----------------------------------------------------------------------------- input makers


def _file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _png(folder: Path, name: str, image: Image.Image) -> Path:
    path = folder / name
    image.save(path)
    return path


def _pixels(seed: int, size=(40, 60)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8))


def _cut(folder: Path, name: str, fmt: str) -> Path:
    """An image file whose second half is missing."""
    buffer = BytesIO()
    _pixels(1).save(buffer, format=fmt)
    path = folder / name
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def _scrambled_png(folder: Path) -> Path:
    """A PNG whose compressed pixel data is damaged (header intact)."""
    buffer = BytesIO()
    _pixels(2).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    for i in range(200, 400):
        data[i] ^= 0xFF
    path = folder / "scrambled.png"
    path.write_bytes(bytes(data))
    return path


def _bomb(folder: Path) -> Path:
    """A 100-byte PNG whose header claims 30000 x 30000 pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
    path = folder / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


def _palette(transparent: bool) -> Image.Image:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    image.putpixel((1, 0), 1)
    if transparent:
        image.info["transparency"] = 0
    return image


def _sixteen_bit(folder: Path) -> Path:
    values = np.array([[0, 16 * 257, 65535, 4000]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    return _png(folder, "grey16.png", image)


def _cmyk(folder: Path) -> Path:
    path = folder / "cmyk.tif"
    Image.new("CMYK", (3, 2), (0, 255, 0, 0)).save(path)
    return path


def _text(folder: Path, name: str, lines: List[Union[dict, str]]) -> Path:
    """A question file: dicts as JSON lines, strings verbatim."""
    path = folder / name
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines), encoding="utf-8")
    return path


def _q(qid, image: Optional[str] = "a.png", text: str = "What is it?") -> dict:
    row = {"question_id": qid, "text": text}
    if image is not None:
        row["image"] = image
    return row


def _conversation(sample_id, value: str, image: str = "a.png") -> dict:
    return {"id": sample_id, "image": image, "conversations": [{"from": "human", "value": value},
                                                               {"from": "gpt", "value": "Shapes."}]}


def _non_utf8(folder: Path) -> Path:
    path = folder / "latin1.jsonl"
    path.write_bytes(json.dumps(_q(1)).encode() + b"\n" + '{"question_id": 2, "text": "caf\xe9"}'.encode("latin-1"))
    return path


def _recipe_json(folder: Path, checkpoint: Path, edit: Callable[[dict], None]) -> Path:
    """The tiny checkpoint's recipe file, edited as raw JSON."""
    data = json.loads((checkpoint / RECIPE_FILE_IN_CHECKPOINT).read_text())
    edit(data)
    path = folder / "recipes.json"
    path.write_text(json.dumps(data))
    return path


def _recipe_for_other_model(folder: Path, checkpoint: Path, **changes) -> Path:
    """A valid recipe book fitted for a model that differs from the tiny one in `changes`."""
    book = RecipeBook.load(checkpoint / RECIPE_FILE_IN_CHECKPOINT)
    signature = dataclasses.replace(book.model, **changes)
    keep = np.linspace(signature.num_visual_tokens, signature.num_visual_tokens // 4, signature.num_layers)
    recipe = Recipe.from_keep_counts(signature, TINY_RECIPE_RATIO, [int(k) for k in keep], fit="test")
    path = folder / "other-model.json"
    RecipeBook(model=signature, recipes=(recipe,), provenance={"source": "tests"}).save(path)
    return path


def _set_counts(counts) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        data["recipes"][0]["keep_counts"] = list(counts)
    return edit


def _checkpoint_copy(folder: Path, checkpoint: Path, name: str, config_edit=None, keep_recipes=True) -> Path:
    """A copy of the tiny checkpoint (files, not the tower), its config edited."""
    copy = folder / name
    skipped = None if keep_recipes else shutil.ignore_patterns(RECIPE_FILE_IN_CHECKPOINT)
    shutil.copytree(checkpoint, copy, ignore=skipped)
    if config_edit is not None:
        config = json.loads((copy / "config.json").read_text())
        config_edit(config)
        (copy / "config.json").write_text(json.dumps(config))
    return copy


def _drop_tower(config: dict) -> None:
    del config["mm_vision_tower"]


# ----------------------------------------------------------------------------- checks of inputs that work


def _rgb(image: Image.Image) -> List[tuple]:
    assert image.mode == "RGB"
    return [image.getpixel((x, 0)) for x in range(image.width)]


def _pixels_are(expected: List[tuple]):
    def check(image: Image.Image, processor, config) -> None:
        assert _rgb(image) == expected
    return check


def _shapes_after_preprocessing(image: Image.Image, processor) -> None:
    """The image goes through the pad and the resize-and-crop paths (bounded first) to one tower input each."""
    side = tower_input_side(processor)
    for path in ("pad", None):
        pixels = process_images([bound_image_geometry(image, processor, path)], processor,
                                SimpleNamespace(image_aspect_ratio=path))
        assert tuple(pixels.shape) == (1, 3, side, side)


def _check_extreme(image: Image.Image, processor, config) -> None:
    assert image.size == (20000, 10)
    side = MAX_SIDE_IN_TOWER_SIDES * tower_input_side(processor)
    assert bound_image_geometry(image, processor, "pad").size == (side, 1), "longest side downscaled to the bound"
    assert bound_image_geometry(image, processor, None).size == (MAX_SIDE_IN_TOWER_SIDES * 10, 10), "centre kept"
    assert bound_image_geometry(image, processor, "anyres") is image
    _shapes_after_preprocessing(image, processor)


def _check_single_pixel(image: Image.Image, processor, config) -> None:
    assert image.size == (1, 1) and _rgb(image) == [(9, 99, 199)]
    _shapes_after_preprocessing(image, processor)


def _check_rgba(image: Image.Image, processor, config) -> None:
    transparent, opaque, half = _rgb(image)
    assert transparent == WHITE and opaque == (0, 0, 255)
    expected = tuple(round(c * 128 / 255 + w * 127 / 255) for c, w in zip((255, 0, 0), WHITE))
    assert all(abs(a - b) <= 1 for a, b in zip(half, expected)), (half, expected)


def _answer_ids(expected: list):
    def check(rows: List[dict]) -> None:
        assert [row["question_id"] for row in rows] == expected
    return check


def _question_lines(expected: List[Tuple[object, int]]):
    def check(questions) -> None:
        assert [(q.question_id, q.line) for q in questions] == expected
    return check


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    """One bad (or odd but valid) input.

    Attributes:
        area: which runner checks it (see the module notes).
        name: what is wrong with it.
        make: writes the input under a folder (which holds the images a.png and b.png), given
            the tiny checkpoint; returns its path (or a hub name).
        error: regex the one-line error must match, "{path}" standing for what `make` returned;
            None for inputs that must work.
        check: for inputs that work: asserts on what they give (image rows: the image, the
            image processor and config; driver rows: the answer rows; calibration rows: the
            questions).
        flags: the driver flags that take the input ("{path}" = what `make` returned).
    """

    area: str
    name: str
    make: Callable[[Path, Path], Union[Path, str]]
    error: Optional[str] = None
    check: Optional[Callable] = None
    flags: Tuple[str, ...] = ("--question-file", "{path}")


RECIPE_FLAGS = ("--recipe", "{path}", "--reduction-ratio", f"{TINY_RECIPE_RATIO:g}")
MODEL_FLAGS = ("--model-path", "{path}")

CASES = [
    # images
    Case(IMAGE, "missing file", lambda d, c: d / "nowhere.png", r"^{path}: image file does not exist$"),
    Case(IMAGE, "a directory", lambda d, c: (d / "folder.png").mkdir() or d / "folder.png",
         r"^{path}: is a directory, not an image file$"),
    Case(IMAGE, "empty file", lambda d, c: _file(d, "empty.png", b""),
         r"^{path}: image file is empty \(0 bytes\)$"),
    Case(IMAGE, "truncated PNG", lambda d, c: _cut(d, "cut.png", "PNG"), r"^{path}: truncated or corrupt PNG file \("),
    Case(IMAGE, "truncated JPEG", lambda d, c: _cut(d, "cut.jpg", "JPEG"), r"^{path}: truncated or corrupt JPEG file"),
    Case(IMAGE, "corrupt PNG data", lambda d, c: _scrambled_png(d), r"^{path}: truncated or corrupt PNG file \("),
    Case(IMAGE, "not an image", lambda d, c: _file(d, "notes.png", b"hello"),
         r"^{path}: not an image file \(PIL cannot identify its format\)$"),
    Case(IMAGE, "decompression bomb", lambda d, c: _bomb(d),
         rf"^{{path}}: 30000x30000 pixels of mode RGB take 2700000000 bytes decoded, above the limit of "
         rf"{DEFAULT_MAX_DECODED_BYTES} bytes \(decompression-bomb guard\)$"),
    Case(IMAGE, "mode L", lambda d, c: _png(d, "grey.png", Image.new("L", (2, 1), 77)),
         check=_pixels_are([(77, 77, 77)] * 2)),
    Case(IMAGE, "mode LA, transparent pixel on white",
         lambda d, c: _png(d, "la.png", Image.frombytes("LA", (2, 1), bytes([10, 0, 10, 255]))),
         check=_pixels_are([WHITE, (10, 10, 10)])),
    Case(IMAGE, "mode P", lambda d, c: _png(d, "p.png", _palette(transparent=False)),
         check=_pixels_are([(0, 0, 0), (200, 30, 40)])),
    Case(IMAGE, "mode P with a transparent index", lambda d, c: _png(d, "pt.png", _palette(transparent=True)),
         check=_pixels_are([WHITE, (200, 30, 40)])),
    Case(IMAGE, "mode RGBA, composited on white",
         lambda d, c: _png(d, "rgba.png", Image.frombytes("RGBA", (3, 1), bytes([255, 0, 0, 0, 0, 0, 255, 255,
                                                                                 255, 0, 0, 128]))),
         check=_check_rgba),
    Case(IMAGE, "mode CMYK", lambda d, c: _cmyk(d),
         check=_pixels_are([(255, 0, 255)] * 3)),
    Case(IMAGE, "mode I;16, scaled to 8 bits", lambda d, c: _sixteen_bit(d),
         check=_pixels_are([(0, 0, 0), (16, 16, 16), WHITE, (16, 16, 16)])),
    Case(IMAGE, "1x1 pixel", lambda d, c: _png(d, "dot.png", Image.new("RGB", (1, 1), (9, 99, 199))),
         check=_check_single_pixel),
    Case(IMAGE, "20000x10 pixels", lambda d, c: _png(d, "strip.png", Image.new("RGB", (20000, 10), (90, 20, 5))),
         check=_check_extreme),
    # question files (eval driver: checked whole before the model loads)
    Case(QUESTIONS, "missing file", lambda d, c: d / "none.jsonl", r"^{path}: question file does not exist$"),
    Case(QUESTIONS, "empty file", lambda d, c: _text(d, "empty.jsonl", []), r"^{path}: the file is empty"),
    Case(QUESTIONS, "blank lines only", lambda d, c: _text(d, "blank.jsonl", ["", "  ", ""]),
         r"^{path}: the file is empty"),
    Case(QUESTIONS, "blank lines are skipped", lambda d, c: _text(d, "gaps.jsonl", ["", _q(1), "   ", _q(2, "b.png")]),
         check=_answer_ids([1, 2])),
    Case(QUESTIONS, "invalid JSON on line 2", lambda d, c: _text(d, "bad.jsonl", [_q(1), '{"question_id": 2, "te']),
         r"^{path}:2: invalid JSON \("),
    Case(QUESTIONS, "not an object", lambda d, c: _text(d, "list.jsonl", [_q(1), "[2, 3]"]),
         r"^{path}:2: expected a JSON object, got list$"),
    Case(QUESTIONS, "missing question_id",
         lambda d, c: _text(d, "noid.jsonl", [_q(1), {"image": "a.png", "text": "?"}]),
         r"^{path}:2: field 'question_id' is missing$"),
    Case(QUESTIONS, "missing text", lambda d, c: _text(d, "notext.jsonl", [{"question_id": 1, "image": "a.png"}]),
         r"^{path}:1: field 'text' is missing$"),
    Case(QUESTIONS, "missing image: a text-only question", lambda d, c: _text(d, "noimage.jsonl", [_q(1), _q(2, None)]),
         check=_answer_ids([1, 2])),
    Case(QUESTIONS, "empty image", lambda d, c: _text(d, "emptyimage.jsonl", [_q(1, "")]),
         r"^{path}:1: field 'image' is an empty string"),
    Case(QUESTIONS, "question_id of the wrong type", lambda d, c: _text(d, "boolid.jsonl", [_q(True)]),
         r"^{path}:1: field 'question_id' must be int or str, got bool True$"),
    Case(QUESTIONS, "repeated question ids (TextVQA: the image id) are all answered",
         lambda d, c: _text(d, "dup.jsonl", [_q(5), _q(6), _q(5, "b.png")]), check=_answer_ids([5, 6, 5])),
    Case(QUESTIONS, "<image> twice in the text",
         lambda d, c: _text(d, "twice.jsonl", [_q(1, text="<image>\nWhat? <image>")]),
         r"^{path}:1: field 'text' holds '<image>' 2 times; a question has one image"),
    Case(QUESTIONS, "<image> in the text (the driver adds its own)",
         lambda d, c: _text(d, "once.jsonl", [_q(1, text="<image>\nWhat?")]),
         r"^{path}:1: field 'text' holds '<image>' 1 time; .* not at all"),
    Case(QUESTIONS, "not UTF-8", lambda d, c: _non_utf8(d),
         r"^{path}:2: not UTF-8 text \(invalid continuation byte at byte \d+\)$"),
    # calibration data (instruction format; ids may repeat)
    Case(CALIBRATION, "<image> twice in a human turn",
         lambda d, c: _text(d, "mix.jsonl", [_conversation("x", "<image>\nA?\n<image>")]),
         r"^{path}:1: field 'conversations\[0\].value' holds '<image>' 2 times"),
    Case(CALIBRATION, "duplicate ids are kept", lambda d, c: _text(d, "dupmix.jsonl", [_conversation(7, "<image>\nA?"),
                                                                                      _conversation(7, "B?", "b.png")]),
         check=_question_lines([(7, 1), (7, 2)])),
    Case(CALIBRATION, "an unreadable image",
         lambda d, c: _text(d, "badimage.jsonl", [_conversation(1, "<image>\nA?", "notes.txt")]),
         r"^{path}:1: field 'image': .*notes.txt: not an image file"),
    # recipes
    Case(RECIPE, "wrong schema version", lambda d, c: _recipe_json(d, c, lambda j: j.update(schema_version=2)),
         r"^{path}: schema_version=2 is not supported \(this code reads 1\)$", flags=RECIPE_FLAGS),
    Case(RECIPE, "another model's layer count", lambda d, c: _recipe_for_other_model(d, c, num_layers=8),
         r"^{path}: recipes fitted for .* do not fit model .*: num_layers 8 \(recipes\) vs 4 \(model\)$",
         flags=RECIPE_FLAGS),
    Case(RECIPE, "another model's visual token count",
         lambda d, c: _recipe_for_other_model(d, c, num_visual_tokens=576),
         r"^{path}: recipes fitted for .*: num_visual_tokens 576 \(recipes\) vs 144 \(model\)$", flags=RECIPE_FLAGS),
    Case(RECIPE, "keep counts that rise", lambda d, c: _recipe_json(d, c, _set_counts((144, 97, 120, 30))),
         r"^{path}: recipe 50: keep_counts\[2\]=120 rises above keep_counts\[1\]=97", flags=RECIPE_FLAGS),
    Case(RECIPE, "keep counts above the visual tokens", lambda d, c: _recipe_json(d, c, _set_counts((200, 97, 61, 30))),
         r"^{path}: recipe 50: keep_counts\[0\]=200 is above num_visual_tokens=144$", flags=RECIPE_FLAGS),
    Case(RECIPE, "negative keep counts", lambda d, c: _recipe_json(d, c, _set_counts((144, 97, 61, -1))),
         r"^{path}: recipe 50: keep_counts\[3\]=-1 is negative$", flags=RECIPE_FLAGS),
    Case(RECIPE, "not JSON", lambda d, c: _file(d, "r.json", b"{\n  oops"),
         r"^{path}: invalid JSON at line 2, column 3", flags=RECIPE_FLAGS),
    Case(RECIPE, "not UTF-8", lambda d, c: _file(d, "r.json", b'{"schema_version": "\xff"}'),
         r"^{path}: not UTF-8 text \(invalid start byte at byte 20\)$", flags=RECIPE_FLAGS),
    Case(RECIPE, "missing recipe file", lambda d, c: d / "absent.json", r"^recipe file {path} does not exist$",
         flags=RECIPE_FLAGS),
    # reduction ratios
    Case(RATIO, "negative", lambda d, c: "-5", r"reduction ratio '-5' is out of range; .*\[0, 100\)",
         flags=("--reduction-ratio", "{path}")),
    Case(RATIO, "100", lambda d, c: "100", r"reduction ratio '100' is out of range",
         flags=("--reduction-ratio", "{path}")),
    Case(RATIO, "above 100", lambda d, c: "150", r"reduction ratio '150' is out of range",
         flags=("--reduction_ratio", "{path}")),
    Case(RATIO, "not a number", lambda d, c: "sixty", r"reduction ratio 'sixty' is not a number",
         flags=("--reduction-ratio", "{path}")),
    Case(RATIO, "no recipe for the ratio", lambda d, c: c / RECIPE_FILE_IN_CHECKPOINT,
         r"^{path}: no recipe for reduction ratio 30% .*\(available: 50\)", flags=("--reduction-ratio", "30")),
    Case(RATIO, "no recipe file for the model",
         lambda d, c: _checkpoint_copy(d, c, "llava-v1.5-tiny", keep_recipes=False),
         r"^no FitPrune recipe for llava-v1.5-tiny: none of .* exists; make one with `python -m fitprune.calibrate",
         flags=("--model-path", "{path}", "--reduction-ratio", "50")),
    # model paths
    Case(MODEL, "missing directory", lambda d, c: d / "nope" / "llava-v1.5-7b", r"^model path {path} does not exist$",
         flags=MODEL_FLAGS),
    Case(MODEL, "hub name, not cached, offline", lambda d, c: "nobody-here/llava-v1.5-absent",
         r"^model path {path} is not a local directory and not in the Hugging Face cache; downloads are off",
         flags=MODEL_FLAGS),
    Case(MODEL, "config without mm_vision_tower", lambda d, c: _checkpoint_copy(d, c, "llava-notower", _drop_tower),
         r"^{path}/config.json: field 'mm_vision_tower' is missing; a LLaVA checkpoint", flags=MODEL_FLAGS),
    Case(MODEL, "vision tower hub name, not cached, offline",
         lambda d, c: _checkpoint_copy(d, c, "llava-hubtower",
                                       lambda j: j.update(mm_vision_tower="openai/clip-vit-absent-336")),
         r"^{path}/config.json: field 'mm_vision_tower': vision tower 'openai/clip-vit-absent-336' is not available "
         r"offline: .* point mm_vision_tower at a local directory", flags=MODEL_FLAGS),
    Case(MODEL, "vision tower directory without its files",
         lambda d, c: _checkpoint_copy(d, c, "llava-emptytower",
                                       lambda j: j.update(mm_vision_tower=str(d / "empty-tower"))),
         r"^{path}/config.json: field 'mm_vision_tower': vision tower directory .*empty-tower cannot be read \(",
         flags=MODEL_FLAGS),
    Case(MODEL, "vision tower directory missing",
         lambda d, c: _checkpoint_copy(d, c, "llava-gonetower", lambda j: j.update(mm_vision_tower="/gone/tower")),
         r"^{path}/config.json: field 'mm_vision_tower': Unknown vision tower '/gone/tower'", flags=MODEL_FLAGS),
]

# ----------------------------------------------------------------------------- runners


@pytest.fixture()
def folder(tmp_path):
    """Where a row writes its input: two valid images beside it."""
    _png(tmp_path, "a.png", _pixels(10))
    _png(tmp_path, "b.png", _pixels(11, (30, 50)))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty-tower").mkdir()
    return tmp_path


@pytest.fixture()
def session_model(tiny, tiny_checkpoint, monkeypatch):
    """Drivers get the session's tiny model for the tiny checkpoint; other paths load for real."""
    tokenizer, model, processor = tiny
    loads = []
    real_load = driver_loop.load_model

    def load(args):
        loads.append(args.model_path)
        if os.path.realpath(args.model_path) != os.path.realpath(tiny_checkpoint):
            return real_load(args)
        apply_pruning_args(model, args)
        return LoadedModel(tokenizer, model, processor, "llava-v1.5-tiny")

    monkeypatch.setattr(driver_loop, "load_model", load)
    return loads


def _driver_argv(folder: Path, checkpoint: Path, answers: Path, *extra: str) -> List[str]:
    questions = _text(folder, "valid.jsonl", [_q(1), _q(2, "b.png")])
    return ["--model-path", str(checkpoint), "--question-file", str(questions), "--image-folder", str(folder),
            "--answers-file", str(answers), "--temperature", "0", "--conv-mode", "vicuna_v1", "--device", "cpu",
            "--max-new-tokens", "2", *extra]


def _run_driver(argv: List[str]) -> int:
    try:
        return model_vqa_loader.main(argv)
    except SystemExit as exit_info:  # argparse
        return exit_info.code


def _one_error_line(err: str, program: str) -> str:
    """The message of the only ``<program>: error: <message>`` line on stderr (no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error: " in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{program}: error: "), lines[0]
    return lines[0].split("error: ", 1)[1]


def _pattern(case: Case, made) -> str:
    return case.error.replace("{path}", re.escape(str(made)))


def _check_image_row(case: Case, made, tiny) -> None:
    _, model, processor = tiny
    if case.error is not None:
        with pytest.raises(ImageError) as err:
            load_image(made)
        assert re.search(_pattern(case, made), str(err.value)), str(err.value)
        assert "\n" not in str(err.value)
    else:
        case.check(load_image(made), processor, model.config)


def _check_driver_row(case: Case, made, folder: Path, checkpoint: Path, loads, capsys) -> None:
    answers = folder / "answers" / "run.jsonl"
    flags = [f.replace("{path}", str(made)) for f in case.flags]
    code = _run_driver(_driver_argv(folder, checkpoint, answers, *flags))
    err = capsys.readouterr().err
    if case.error is None:
        assert code == 0, err
        case.check([json.loads(line) for line in answers.read_text().splitlines()])
        return
    assert code == 2, err
    message = _one_error_line(err, "model_vqa_loader")  # a flag argparse refuses too: one form for every error
    assert re.search(_pattern(case, made), message), message
    if case.area == QUESTIONS:
        assert loads == [], "a bad question file is found before the model loads"
    assert not answers.exists() or answers.read_text() == ""


def _check_calibration_row(case: Case, made, folder: Path, checkpoint: Path, capsys) -> None:
    if case.error is None:
        case.check(load_questions(made))
        return
    output = folder / "recipes.json"
    code = calibrate_main(["--model-path", str(checkpoint), "--question-file", str(made), "--image-folder",
                           str(folder), "--device", "cpu", "--output", str(output), "--reduction-ratio", "30"])
    message = _one_error_line(capsys.readouterr().err, "python -m fitprune.calibrate")
    assert code == 2 and re.search(_pattern(case, made), message), message
    assert not output.exists()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.area}: {c.name}" for c in CASES])
def test_bad_input(case: Case, folder, tiny_checkpoint, request, capsys):
    made = case.make(folder, tiny_checkpoint)
    if case.area == IMAGE:
        _check_image_row(case, made, request.getfixturevalue("tiny"))
    elif case.area == CALIBRATION:
        _check_calibration_row(case, made, folder, tiny_checkpoint, capsys)
    else:
        assert case.area in DRIVER_AREAS
        if case.area == MODEL:
            assert is_offline_mode(), "the model-path rows expect HF_HUB_OFFLINE=1 (tests/conftest.py)"
        loads = request.getfixturevalue("session_model")
        _check_driver_row(case, made, folder, tiny_checkpoint, loads, capsys)


def test_every_area_has_rows_and_names_are_unique():
    areas = {case.area for case in CASES}
    assert areas == {IMAGE, QUESTIONS, CALIBRATION, RECIPE, RATIO, MODEL}
    names = [(case.area, case.name) for case in CASES]
    assert len(names) == len(set(names))
    assert all((case.error is None) != (case.check is None) for case in CASES)


# ----------------------------------------------------------------------------- image rows in a benchmark run


def _read_jsonl(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_benchmark_run_lists_bad_images_and_answers_the_rest(folder, tiny_checkpoint, session_model, capsys):
    image_rows = [case for case in CASES if case.area == IMAGE]
    images = folder / "images"
    images.mkdir()
    paths = [Path(case.make(images, tiny_checkpoint)) for case in image_rows]
    questions = _text(folder, "images.jsonl", [_q(i, str(p.relative_to(images))) for i, p in enumerate(paths)])

    def argv(answers: Path, *extra: str) -> List[str]:
        return _driver_argv(folder, tiny_checkpoint, answers, "--question-file", str(questions),
                            "--image-folder", str(images), *extra)

    answers = folder / "run.jsonl"
    errors_file = sidecar_path(answers, ERRORS_SUFFIX)
    assert _run_driver(argv(answers, "--batch-size", "3")) == 0
    ok = [i for i, case in enumerate(image_rows) if case.error is None]
    bad = [i for i, case in enumerate(image_rows) if case.error is not None]
    assert [row["question_id"] for row in _read_jsonl(answers)] == ok
    errors = _read_jsonl(errors_file)
    assert [(e["question_id"], e["line"], e["field"]) for e in errors] == [(i, i + 1, "image") for i in bad]
    for entry in errors:
        prefix = f"{questions}:{entry['line']}: field 'image': "
        assert entry["message"].startswith(prefix)
        case, path = image_rows[entry["question_id"]], paths[entry["question_id"]]
        assert re.search(_pattern(case, path), entry["message"][len(prefix):]), entry["message"]
    err = capsys.readouterr().err
    assert f"{len(bad)} of {len(image_rows)} questions skipped" in err and str(errors_file) in err
    run = json.loads(sidecar_path(answers, RUN_RECORD_SUFFIX).read_text())["runs"][-1]
    assert run["failed_samples"] == len(bad) and run["errors_file"] == str(errors_file)

    # a resumed run retries the failed questions: one image fixed, the others stay listed
    fixed = bad[0]
    _png(images, "fixed.png", _pixels(3))
    paths[fixed].unlink(missing_ok=True)
    paths[fixed].symlink_to(images / "fixed.png")
    assert _run_driver(argv(answers)) == 0
    answered = sorted(ok + [fixed])
    assert sorted(row["question_id"] for row in _read_jsonl(answers)) == answered
    assert [e["question_id"] for e in _read_jsonl(errors_file)] == bad[1:]

    # --on-error fail stops at the first bad image, after answering what came before it
    capsys.readouterr()
    strict = folder / "strict.jsonl"
    code = _run_driver(argv(strict, "--on-error", "fail"))
    message = _one_error_line(capsys.readouterr().err, "model_vqa_loader")
    assert code == 2 and message.startswith(f"{questions}:{bad[1] + 1}: field 'image': {paths[bad[1]]}: ")
    assert [row["question_id"] for row in _read_jsonl(strict)] == [i for i in answered if i < bad[1]]
    assert not sidecar_path(strict, ERRORS_SUFFIX).exists()


def test_a_prompt_with_two_image_placeholders_is_listed_not_run(folder, tiny_checkpoint, session_model, capsys):
    args = model_vqa_loader.build_parser(model_vqa_loader.SPEC, "test").parse_args(
        _driver_argv(folder, tiny_checkpoint, folder / "p.jsonl"))
    items = [EvalItem(1, "q", "<image>\nTwo images?", "a.png", 4), EvalItem(2, "q", "One image?", "b.png", 5)]
    assert driver_loop.run_driver(model_vqa_loader.SPEC, args, lambda a: items) == 0
    assert [row["question_id"] for row in _read_jsonl(folder / "p.jsonl")] == [2]
    (error,) = _read_jsonl(folder / "p.errors.jsonl")
    assert error["field"] == "text" and error["message"] == (
        f"{args.question_file}:4: field 'text': the prompt holds 2 image placeholders for 1 image(s)")


# ----------------------------------------------------------------------------- the other command lines


def test_run_llava_exits_2_on_a_corrupt_image(tiny_checkpoint, folder, capsys):
    bad = _cut(folder, "cut.png", "PNG")
    with pytest.raises(SystemExit) as exit_info:
        run_llava.main(["--model-path", str(tiny_checkpoint), "--image-file", str(bad), "--query", "Q?",
                        "--device", "cpu", "--temperature", "0", "--max-new-tokens", "2"])
    message = _one_error_line(capsys.readouterr().err, "run_llava")
    assert exit_info.value.code == 2 and message.startswith(f"{bad}: truncated or corrupt PNG file")


def test_run_llava_exits_2_on_a_config_without_vision_tower(tiny_checkpoint, folder, capsys):
    checkpoint = _checkpoint_copy(folder, tiny_checkpoint, "llava-notower", _drop_tower)
    with pytest.raises(SystemExit) as exit_info:
        run_llava.main(["--model-path", str(checkpoint), "--image-file", str(folder / "a.png"), "--query", "Q?",
                        "--device", "cpu"])
    message = _one_error_line(capsys.readouterr().err, "run_llava")
    assert exit_info.value.code == 2 and message.startswith(f"{checkpoint}/config.json: field 'mm_vision_tower'")


def test_visualize_exits_2_on_an_image_that_is_not_one(tiny_checkpoint, folder, capsys):
    code = visualize_main(["--model-path", str(tiny_checkpoint), "--image", str(folder / "notes.txt"),
                           "--question", "Q", "--reduction-ratio", "50", "--out", str(folder / "x.png")])
    message = _one_error_line(capsys.readouterr().err, "python -m fitprune.visualize")
    assert code == 2
    assert message == f"--image: {folder / 'notes.txt'}: not an image file (PIL cannot identify its format)"


def test_crop_path_bound_keeps_what_the_tower_sees(tiny):
    """Centre-cropping a long strip before resize-and-crop gives the tower the same pixels."""
    _, _, processor = tiny
    side = tower_input_side(processor)
    strip = _pixels(5, (6, 4000))
    bounded = bound_image_geometry(strip, processor, None)
    assert bounded.size == (MAX_SIDE_IN_TOWER_SIDES * 6, 6)
    direct = processor.preprocess(strip, return_tensors="pt")["pixel_values"]
    via_bound = processor.preprocess(bounded, return_tensors="pt")["pixel_values"]
    assert direct.shape == via_bound.shape == (1, 3, side, side)
    torch.testing.assert_close(via_bound, direct, atol=0.05, rtol=0)


def test_images_within_the_bound_are_untouched(tiny):
    _, _, processor = tiny
    photo = _pixels(6, (300, 400))
    for path in ("pad", None, "anyres"):
        assert bound_image_geometry(photo, processor, path) is photo


def test_tiny_recipe_is_what_the_recipe_rows_edit(tiny_checkpoint):
    assert RecipeBook.load(tiny_checkpoint / RECIPE_FILE_IN_CHECKPOINT).get(TINY_RECIPE_RATIO).keep_counts == \
        TINY_KEEP_COUNTS
