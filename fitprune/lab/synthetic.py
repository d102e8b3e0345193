"""A deterministic synthetic visual QA task: coloured shapes on a grid, questions whose
answer lives in one image patch.

A scene is a square canvas divided into cells (by default 96 px in 8 px cells, one cell per
patch of the demo model: 144 visual tokens); some cells (by default two) hold a shape, each
of a different shape and a different colour, on a black background. Every question has a
one-word answer read off the objects; the task's `kinds` choose among:

- colour: "What color is the {shape}?" -> a colour;
- shape: "What shape is the {colour} object?" -> a shape;
- presence (POPE-style): "Is there a {colour} {shape} in the image?" -> Yes / No, with
  POPE's three negative kinds: random (any absent pair), popular (the shape is present in
  another colour), adversarial (both the colour and the shape are present, on different
  objects);
- side: "Is the {shape} on the {left|right} side of the image?" -> Yes / No.

The default task (two objects; colour, shape and presence questions) is the demo model's:
with two objects, a visual token that absorbed the scene in the first decoder layer holds a
mixture of both, so the answer needs the named object's own token and which tokens survive
pruning matters. A model of this size learns it on CPU in a curriculum of one, then three,
then two objects (`fitprune.lab.train_demo`); reading positions for "side" takes it far longer.

    python -m fitprune.synthetic --output playground/shapes

writes the calibration and test splits (question jsonl + PNG images), a sample of the
train split as LLaVA instruction data, and the test split again as LLaVA's eval tree
(`eval/textvqa`, `eval/pope`: open questions in the TextVQA format, presence questions in
POPE's), so that the benchmark scripts run on it unchanged:

    EVAL_DIR=playground/shapes/eval MODEL_PATH=playground/models/llava-v1.5-shapes DEVICE=cpu \\
        REDUCTION_RATIO=60 bash scripts/v1_5/eval/textvqa.sh The train split used for
training is the same stream, generated in memory (`train_conversations`).
"""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

SUFFIX = "Answer the question using a single word or phrase."
YES, NO = "Yes", "No"
KINDS = ("colour", "shape", "presence", "side")  # every kind there is; a task asks its `kinds`
POPE_CATEGORIES = ("adversarial", "popular", "random")
SPLITS = ("train", "calibration", "test")
TEMPLATES = {
    "colour": "What color is the {shape}?",
    "shape": "What shape is the {colour} object?",
    "presence": "Is there a {colour} {shape} in the image?",
    "side": "Is the {shape} on the {side} side of the image?",
}
SIDES = ("left", "right")
# sub-pixel samples per axis when rasterising shapes (anti-aliased edges)
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapesTask:
    """What scenes look like.

    Attributes:
        image_size: canvas side in pixels.
        cell_size: grid cell side in pixels; one shape fills one cell.
        colours: colour name -> RGB.
        shapes: shape names (of `SHAPE_MASKS`).
        min_objects, max_objects: objects per scene (distinct shapes and colours).
        background: RGB of the empty canvas.
        kinds: the question kinds asked (of `KINDS`).
    """

    image_size: int = 96
    cell_size: int = 8
    colours: Dict[str, Tuple[int, int, int]] = field(
        default_factory=lambda: {
            "red": (220, 40, 40),
            "green": (40, 180, 60),
            "blue": (50, 90, 230),
            "yellow": (235, 215, 40),
            "purple": (150, 60, 200),
        }
    )
    # shapes whose 8 px masks differ most from each other (`SHAPE_MASKS` has more)
    shapes: Tuple[str, ...] = ("circle", "triangle", "ring", "bar")
    min_objects: int = 2
    max_objects: int = 2
    background: Tuple[int, int, int] = (0, 0, 0)
    kinds: Tuple[str, ...] = ("colour", "shape", "presence")

    def __post_init__(self) -> None:
        if self.image_size % self.cell_size:
            raise ValueError(f"ShapesTask: image_size {self.image_size} is not a multiple of cell_size {self.cell_size}")
        if self.grid % 2:
            raise ValueError(f"ShapesTask: the grid has {self.grid} columns; an even count splits left and right")
        if not self.kinds or set(self.kinds) - set(KINDS):
            raise ValueError(f"ShapesTask: kinds {self.kinds} must be a non-empty subset of {KINDS}")
        unknown = set(self.shapes) - set(SHAPE_MASKS)
        if unknown:
            raise ValueError(f"ShapesTask: unknown shapes {sorted(unknown)}; known: {sorted(SHAPE_MASKS)}")
        limit = min(len(self.shapes), len(self.colours), self.grid * self.grid)
        if not 1 <= self.min_objects <= self.max_objects <= limit:
            raise ValueError(
                f"ShapesTask: need 1 <= min_objects <= max_objects <= {limit}, "
                f"got {self.min_objects}, {self.max_objects}"
            )

    @property
    def grid(self) -> int:
        """Cells per side."""
        return self.image_size // self.cell_size

    @property
    def answers(self) -> Tuple[str, ...]:
        """Every answer a question can have."""
        return tuple(self.colours) + self.shapes + (YES, NO)


def _circle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x * x + y * y <= 0.9 ** 2


def _square(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (np.abs(x) <= 0.8) & (np.abs(y) <= 0.8)


def _triangle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (y <= 0.85) & (np.abs(x) <= (y + 0.95) / 2)


def _diamond(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(x) + np.abs(y) <= 0.95


def _ring(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    radius2 = x * x + y * y
    return (radius2 <= 0.95 ** 2) & (radius2 >= 0.5 ** 2)


def _bar(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (np.abs(y) <= 0.35) & (np.abs(x) <= 0.95)  # ok: bar half-extents in cell units, not a model size


# name -> inside test on cell coordinates in [-1, 1] (y grows downwards)
SHAPE_MASKS = {"circle": _circle, "square": _square, "triangle": _triangle, "diamond": _diamond, "ring": _ring,
               "bar": _bar}


@dataclass(frozen=True)
class ShapeObject:
    """One shape in a scene, at grid cell (row, col)."""

    shape: str
    colour: str
    row: int
    col: int


@dataclass(frozen=True)
class Scene:
    """The objects of one image."""

    objects: Tuple[ShapeObject, ...]

    def with_shape(self, shape: str) -> Optional[ShapeObject]:
        """The object of that shape, or None."""
        return next((o for o in self.objects if o.shape == shape), None)

    def with_colour(self, colour: str) -> Optional[ShapeObject]:
        """The object of that colour, or None."""
        return next((o for o in self.objects if o.colour == colour), None)


@dataclass(frozen=True)
class VisualQuestion:
    """A question about a scene, its one-word answer, its kind and (presence) POPE category."""

    kind: str
    question: str
    answer: str
    category: Optional[str] = None

    @property
    def text(self) -> str:
        """The question as the model sees it: question, newline, answer-format suffix."""
        return f"{self.question}\n{SUFFIX}"


def sample_scene(task: ShapesTask, rng: random.Random) -> Scene:
    """A scene with distinct shapes, distinct colours and distinct cells."""
    count = rng.randint(task.min_objects, task.max_objects)
    shapes = rng.sample(task.shapes, count)
    colours = rng.sample(list(task.colours), count)
    cells = rng.sample(range(task.grid * task.grid), count)
    return Scene(tuple(ShapeObject(s, c, cell // task.grid, cell % task.grid) for s, c, cell in zip(shapes, colours, cells)))


def render_scene(task: ShapesTask, scene: Scene) -> Image.Image:
    """The scene as an RGB image, shapes anti-aliased by supersampling."""
    size, cell = task.image_size, task.cell_size
    canvas = np.tile(np.asarray(task.background, dtype=np.float64), (size, size, 1))
    offsets = (np.arange(cell * _SUPERSAMPLE) + 0.5) / (cell * _SUPERSAMPLE) * 2 - 1  # cell coords in (-1, 1)
    x, y = np.meshgrid(offsets, offsets)
    for obj in scene.objects:
        inside = SHAPE_MASKS[obj.shape](x, y).astype(np.float64)
        coverage = inside.reshape(cell, _SUPERSAMPLE, cell, _SUPERSAMPLE).mean(axis=(1, 3))[..., None]  # (c, c, 1)
        top, left = obj.row * cell, obj.col * cell
        patch = canvas[top:top + cell, left:left + cell]
        canvas[top:top + cell, left:left + cell] = patch * (1 - coverage) + np.asarray(task.colours[obj.colour]) * coverage
    return Image.fromarray(np.rint(canvas).astype(np.uint8), mode="RGB")


def _side_of(task: ShapesTask, obj: ShapeObject) -> str:
    return SIDES[0] if obj.col < task.grid // 2 else SIDES[1]


def ask_colour(task: ShapesTask, scene: Scene, rng: random.Random) -> VisualQuestion:
    """The colour of a random object, named by its shape."""
    obj = rng.choice(scene.objects)
    return VisualQuestion("colour", TEMPLATES["colour"].format(shape=obj.shape), obj.colour)


def ask_shape(task: ShapesTask, scene: Scene, rng: random.Random) -> VisualQuestion:
    """The shape of a random object, named by its colour."""
    obj = rng.choice(scene.objects)
    return VisualQuestion("shape", TEMPLATES["shape"].format(colour=obj.colour), obj.shape)


def absent_pairs(task: ShapesTask, scene: Scene, category: str) -> List[Tuple[str, str]]:
    """(colour, shape) pairs not in the scene, of one POPE negative category.

    Args:
        task: the task.
        scene: the scene.
        category: "random" (any absent pair), "popular" (the shape is in the scene, in
            another colour) or "adversarial" (colour and shape both in the scene, on
            different objects; in a one-object scene, its colour on another shape).

    Raises:
        ValueError: an unknown category.
    """
    if category not in POPE_CATEGORIES:
        raise ValueError(f"unknown POPE category {category!r}; choose one of {POPE_CATEGORIES}")
    present = {(o.colour, o.shape) for o in scene.objects}
    pairs = [(c, s) for c in task.colours for s in task.shapes if (c, s) not in present]
    if category == "popular":
        pairs = [(c, s) for c, s in pairs if scene.with_shape(s) is not None]
    elif category == "adversarial":
        same_colour = [(c, s) for c, s in pairs if scene.with_colour(c) is not None]
        both = [(c, s) for c, s in same_colour if scene.with_shape(s) is not None]
        pairs = both or same_colour
    return pairs


def ask_presence(task: ShapesTask, scene: Scene, rng: random.Random, category: Optional[str] = None) -> VisualQuestion:
    """Is there a {colour} {shape}? Yes or No with equal odds.

    Args:
        category: the POPE category of the negatives; None draws one of those the scene
            has negatives for.

    Raises:
        ValueError: if the scene has no negative of `category`.
    """
    if category is None:
        category = rng.choice([c for c in POPE_CATEGORIES if absent_pairs(task, scene, c)])
    elif not absent_pairs(task, scene, category):
        raise ValueError(f"a scene of {len(scene.objects)} objects has no {category} negatives")
    if rng.random() < 0.5:
        obj = rng.choice(scene.objects)
        colour, shape, answer = obj.colour, obj.shape, YES
    else:
        colour, shape = rng.choice(absent_pairs(task, scene, category))
        answer = NO
    return VisualQuestion("presence", TEMPLATES["presence"].format(colour=colour, shape=shape), answer, category)


def ask_side(task: ShapesTask, scene: Scene, rng: random.Random) -> VisualQuestion:
    """Is the {shape} on the {side} side? Yes or No with equal odds."""
    obj = rng.choice(scene.objects)
    side = rng.choice(SIDES)
    answer = YES if _side_of(task, obj) == side else NO
    return VisualQuestion("side", TEMPLATES["side"].format(shape=obj.shape, side=side), answer)


ASKERS = {"colour": ask_colour, "shape": ask_shape, "presence": ask_presence, "side": ask_side}


def ask(task: ShapesTask, scene: Scene, rng: random.Random, kind: str) -> VisualQuestion:
    """A random question of `kind` about `scene`."""
    return ASKERS[kind](task, scene, rng)




def split_rng(split: str, seed: int) -> random.Random:
    """The random stream of one split; splits never share a stream."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    return random.Random(f"shapes/{split}/{seed}")


# kinds answered Yes / No. An open question and its answer name both attributes of an
# object, so a Yes / No question asked after one could be answered
# from the conversation's text; training conversations never do that (the model would
# learn the text shortcut instead of looking), and open with a Yes / No question more
# often (weight YES_NO_FIRST_WEIGHT to an open kind's 1) since those are learnt last.
YES_NO_KINDS = ("presence", "side")
YES_NO_FIRST_WEIGHT = 2.0


def conversation_questions(task: ShapesTask, scene: Scene, rng: random.Random) -> List[VisualQuestion]:
    """One question of several of the task's kinds about `scene`, for a training
    conversation: a first kind drawn at random (the eval prompt is always a first turn);
    after a Yes / No first question, the other Yes / No kinds then the open ones, after an
    open one only the other open kinds; each group in random order."""
    kinds = list(task.kinds)
    weights = [YES_NO_FIRST_WEIGHT if kind in YES_NO_KINDS else 1.0 for kind in kinds]
    first = rng.choices(kinds, weights)[0]
    rest = [kind for kind in kinds if kind != first]
    rng.shuffle(rest)
    if first in YES_NO_KINDS:
        rest.sort(key=lambda kind: kind not in YES_NO_KINDS)
    else:
        rest = [kind for kind in rest if kind not in YES_NO_KINDS]
    return [ask(task, scene, rng, kind) for kind in [first] + rest]


def train_conversations(task: ShapesTask, seed: int) -> Iterator[Tuple[Scene, List[VisualQuestion]]]:
    """The endless train stream: scenes with one question of each kind (`conversation_questions`)."""
    rng = split_rng("train", seed)
    while True:
        scene = sample_scene(task, rng)
        yield scene, conversation_questions(task, scene, rng)


@dataclass(frozen=True)
class SplitItem:
    """One (image, question) of a written split."""

    question_id: int
    image: str
    scene: Scene
    question: VisualQuestion


def sample_split(task: ShapesTask, split: str, num_images: int, seed: int) -> List[SplitItem]:
    """`num_images` scenes, each asked one question of every kind (presence questions cycle
    through the POPE categories), in a fixed order."""
    rng = split_rng(split, seed)
    items = []
    for index in range(num_images):
        scene = sample_scene(task, rng)
        image = f"images/{split}_{index:04d}.png"
        for kind in task.kinds:
            if kind == "presence":
                question = ask_presence(task, scene, rng, POPE_CATEGORIES[index % len(POPE_CATEGORIES)])
            else:
                question = ask(task, scene, rng, kind)
            items.append(SplitItem(len(items), image, scene, question))
    return items


def question_record(item: SplitItem) -> dict:
    """The item as a LLaVA question-jsonl line, with its answer, kind and category."""
    record = {"question_id": item.question_id, "image": item.image, "text": item.question.text,
              "answer": item.question.answer, "kind": item.question.kind}
    if item.question.category:
        record["category"] = item.question.category
    return record


def conversation_record(conversation_id: str, image: str, questions: Sequence[VisualQuestion]) -> dict:
    """A multi-turn LLaVA instruction-data record; the image goes with the first question."""
    turns = []
    for index, question in enumerate(questions):
        prefix = "<image>\n" if index == 0 else ""
        turns.append({"from": "human", "value": prefix + question.text})
        turns.append({"from": "gpt", "value": question.answer})
    return {"id": conversation_id, "image": image, "conversations": turns}


def _write_jsonl(path: Path, records: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def textvqa_files(items: Sequence[SplitItem]) -> Tuple[List[dict], dict]:
    """TextVQA-format question lines (question_id = image id) and annotation file of the
    open (non-presence) questions; every question gets its answer 10 times."""
    questions, annotations = [], []
    for item in items:
        if item.question.kind == "presence":
            continue
        image_id = Path(item.image).stem
        questions.append({"question_id": image_id, "image": item.image, "text": item.question.text,
                          "answer": item.question.answer, "kind": item.question.kind})
        annotations.append({"image_id": image_id, "question_id": item.question_id, "question": item.question.question,
                            "answers": [item.question.answer] * 10, "image": item.image})
    return questions, {"dataset_name": "shapes", "dataset_type": "test", "data": annotations}


def pope_files(items: Sequence[SplitItem]) -> Tuple[List[dict], Dict[str, List[dict]]]:
    """POPE-format question lines (with `category`) and per-category label lines (in the
    order of that category's questions) of the presence questions."""
    questions, labels = [], {c: [] for c in POPE_CATEGORIES}
    for item in items:
        if item.question.kind != "presence":
            continue
        record = question_record(item)
        questions.append(record)
        labels[item.question.category].append({"question_id": item.question_id, "image": item.image,
                                               "text": item.question.question, "label": item.question.answer.lower()})
    return questions, labels


# the test split as LLaVA's eval tree: folder, file and image-folder names of
# scripts/v1_5/eval/{textvqa,pope}.sh, so they run on it with EVAL_DIR=<output>/eval
EVAL_DIR = "eval"
TEXTVQA_QUESTIONS = "textvqa/llava_textvqa_val_v051_ocr.jsonl"
TEXTVQA_ANNOTATIONS = "textvqa/TextVQA_0.5.1_val.json"
TEXTVQA_IMAGES = "textvqa/train_images"
POPE_QUESTIONS = "pope/llava_pope_test.jsonl"
POPE_LABELS = "pope/coco"
POPE_IMAGES = "pope/val2014"


def write_benchmark_layout(root: Path, task: ShapesTask, items: Sequence[SplitItem]) -> Dict[str, Path]:
    """Writes `items` under `root` as the TextVQA (open questions) and POPE (presence)
    benchmark files and image folders that LLaVA's eval scripts read.

    Returns:
        Name -> path of every question and annotation file written.
    """
    written = {}
    text_questions, text_annotations = textvqa_files(items)
    pope_questions, labels = pope_files(items)
    for folder, questions in ((TEXTVQA_IMAGES, text_questions), (POPE_IMAGES, pope_questions)):
        scenes = {item.image: item.scene for item in items}
        for image in sorted({q["image"] for q in questions}):
            path = root / folder / image
            path.parent.mkdir(parents=True, exist_ok=True)
            render_scene(task, scenes[image]).save(path)
    written["textvqa_questions"] = root / TEXTVQA_QUESTIONS
    _write_jsonl(written["textvqa_questions"], text_questions)
    written["textvqa_annotations"] = root / TEXTVQA_ANNOTATIONS
    written["textvqa_annotations"].write_text(json.dumps(text_annotations) + "\n")
    written["pope_questions"] = root / POPE_QUESTIONS
    _write_jsonl(written["pope_questions"], pope_questions)
    for category, lines in labels.items():
        written[f"pope_{category}"] = root / POPE_LABELS / f"coco_pope_{category}.json"
        _write_jsonl(written[f"pope_{category}"], lines)
    return written


def write_dataset(output: Path, task: ShapesTask, seed: int, calibration_images: int, test_images: int,
                  train_images: int) -> Dict[str, Path]:
    """Writes the splits, images and benchmark annotation files under `output`.

    Args:
        output: directory to write.
        task: scenes and question kinds of every split.
        seed: seed of every split's stream.
        calibration_images, test_images: images of those splits (one question of each
            of the task's kinds per image).
        train_images: conversations of the train stream to write (a sample of it).

    Returns:
        Name -> path of every question and annotation file written.
    """
    written = {}
    for split, count in (("calibration", calibration_images), ("test", test_images)):
        items = sample_split(task, split, count, seed)
        for item in items[::len(task.kinds)]:
            (output / item.image).parent.mkdir(parents=True, exist_ok=True)
            render_scene(task, item.scene).save(output / item.image)
        written[split] = output / f"{split}.jsonl"
        _write_jsonl(written[split], [question_record(i) for i in items])
        if split == "test":
            written.update(write_benchmark_layout(output / EVAL_DIR, task, items))
    stream = train_conversations(task, seed)
    records = []
    for index in range(train_images):
        scene, questions = next(stream)
        image = f"images/train_{index:04d}.png"
        render_scene(task, scene).save(output / image)
        records.append(conversation_record(f"train_{index:04d}", image, questions))
    written["train"] = output / "train.jsonl"
    _write_jsonl(written["train"], records)
    return written


def tokenizer_sentences(task: ShapesTask) -> List[str]:
    """Every question and answer of the task once, and each answer after "ASSISTANT:", so a
    tokenizer trained on them holds each answer as one piece."""
    sentences = []
    for shape in task.shapes:
        sentences.append(TEMPLATES["colour"].format(shape=shape))
        sentences.extend(TEMPLATES["side"].format(shape=shape, side=side) for side in SIDES)
        for colour in task.colours:
            sentences.append(TEMPLATES["presence"].format(colour=colour, shape=shape))
    sentences.extend(TEMPLATES["shape"].format(colour=colour) for colour in task.colours)
    sentences.extend(f"ASSISTANT: {answer}" for answer in task.answers)
    return sentences


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Writes the dataset; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m fitprune.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="playground/shapes", help="directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration-images", type=int, default=128, help="one question of each kind per image")
    parser.add_argument("--test-images", type=int, default=200, help="one question of each kind per image")
    parser.add_argument("--train-images", type=int, default=32, help="sample of the in-memory train stream")
    args = parser.parse_args(argv)
    written = write_dataset(Path(args.output), ShapesTask(), args.seed, args.calibration_images, args.test_images,
                            args.train_images)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
