"""Questions about a relational scene (`fitprune.lab.scenes.scenes`), each with its
one-token answer, its kind and the grid cells of the objects it refers to (what an oracle
keeps), the reproducible split streams, and the dataset writer.

Kinds (several phrasings each, half of them with LLaVA's short-answer suffix):

- attribute: the colour or shape of a large object named by the other attribute, with the
  size added when a distractor shares the named attribute ("What color is the large ring?");
- small: the same about a small (one-patch) object;
- relation: the colour or shape of the nearest object left of / right of / above / below a
  named one, among objects whose boxes overlap its rows (columns) ("What color is the shape
  to the left of the red circle?");
- count: "How many blue shapes are there?", of a colour or a shape, "zero" to "eight";
- presence (POPE-style): "Is there a red ring in the image?", Yes / No with equal odds,
  negatives random, popular or adversarial (`fitprune.lab.shapes.questions.absent_pairs`).

    python -m fitprune.synthetic --task scenes --output playground/scenes
"""
from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from fitprune.lab.shapes.data import EVAL_DIR
from fitprune.lab.scenes.eval_layout import write_eval_layout
from fitprune.lab.scenes.scenes import RelationalScene, RelationalTask, SceneObject, render_scene, sample_scene
from fitprune.lab.shapes.questions import POPE_CATEGORIES, SPLITS, SUFFIX, absent_pairs

SUFFIX_SHARE = 0.5
TEMPLATES = {
    "colour": ("What color is the {ref}?", "What is the color of the {ref}?", "Which color does the {ref} have?"),
    "shape": ("What shape is the {ref}?", "What is the shape of the {ref}?", "Which shape is the {ref}?"),
    "relation_colour": ("What color is the shape {rel} the {ref}?", "What is the color of the object {rel} the {ref}?"),
    "relation_shape": ("What shape is {rel} the {ref}?", "Which shape is {rel} the {ref}?"),
    "count_colour": ("How many {colour} shapes are there?", "How many {colour} objects are in the image?"),
    "count_shape": ("How many {shape}s are there?", "How many {shape}s are in the image?"),
    "presence": ("Is there a {colour} {shape} in the image?", "Do you see a {colour} {shape}?",
                 "Is a {colour} {shape} present in the picture?"),
}
RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
# fields a referring expression may use, fewest first, for asking the other attribute
REFERENCES = {"colour": (("shape",), ("size", "shape")), "shape": (("colour",), ("size", "colour")),
              "relation": (("colour", "shape"), ("size", "colour", "shape"))}


@dataclass(frozen=True)
class SceneQuestion:
    """A question about a scene.

    Attributes:
        kind: of `fitprune.lab.scenes.scenes.KINDS`.
        question: the question alone.
        answer: its one-token answer.
        cells: sorted grid indices of the objects the question refers to (the oracle's cells).
        suffix: whether the short-answer suffix follows the question.
        category: POPE negative category of a presence question, else None.
    """

    kind: str
    question: str
    answer: str
    cells: Tuple[int, ...]
    suffix: bool
    category: Optional[str] = None

    @property
    def text(self) -> str:
        """The question as the model sees it, with the suffix on its own line when it has one."""
        return f"{self.question}\n{SUFFIX}" if self.suffix else self.question


def phrase(obj: SceneObject, fields: Sequence[str]) -> str:
    """A noun phrase naming `obj` by `fields` ("large red circle", "small blue object")."""
    words = [getattr(obj, f) for f in ("size", "colour") if f in fields]
    return " ".join(words + [obj.shape if "shape" in fields else "object"])


def unique_fields(scene: RelationalScene, obj: SceneObject, options: Sequence[Sequence[str]]) -> Optional[Tuple[str, ...]]:
    """The first field set of `options` that names `obj` alone in `scene`, or None."""
    for fields in options:
        if scene.matching(**{f: getattr(obj, f) for f in fields}) == [obj]:
            return tuple(fields)
    return None


def _cells(task: RelationalTask, objects: Sequence[SceneObject]) -> Tuple[int, ...]:
    return tuple(sorted({c for o in objects for c in o.cells(task.grid)}))


def _question(task: RelationalTask, rng: random.Random, kind: str, template: str, answer: str,
              referred: Sequence[SceneObject], category: Optional[str] = None, **words: str) -> SceneQuestion:
    """A question of a random phrasing of `template`, with or without the suffix at random."""
    text = rng.choice(TEMPLATES[template]).format(**words)
    return SceneQuestion(kind, text, answer, _cells(task, referred), rng.random() < SUFFIX_SHARE, category)


def ask_attribute(task: RelationalTask, scene: RelationalScene, rng: random.Random,
                  size: str, kind: str) -> Optional[SceneQuestion]:
    """The colour or shape of an object of `size`, named by the other attribute (and its
    size when needed); objects with a distractor sharing the named attribute come first.
    None if no object of that size can be named."""
    asked = rng.choice(("colour", "shape"))
    named = [(o, unique_fields(scene, o, REFERENCES[asked])) for o in scene.matching(size=size)]
    named = [(o, f) for o, f in named if f is not None]
    if not named:
        return None
    with_distractor = [(o, f) for o, f in named if "size" in f]
    obj, fields = rng.choice(with_distractor or named)
    return _question(task, rng, kind, asked, getattr(obj, asked), [obj], ref=phrase(obj, fields))


def neighbour(scene: RelationalScene, obj: SceneObject, direction: str) -> Optional[SceneObject]:
    """The nearest object in `direction` whose box overlaps `obj`'s rows (left, right) or
    columns (above, below); None if there is none or two are equally near."""
    found = []
    for other in scene.objects:
        if other is obj:
            continue
        across = set(other.rows) & set(obj.rows) if direction in ("left", "right") else set(other.cols) & set(obj.cols)
        distance = {"left": obj.col - (other.col + other.span), "right": other.col - (obj.col + obj.span),
                    "above": obj.row - (other.row + other.span), "below": other.row - (obj.row + obj.span)}[direction]
        if across and distance >= 0:
            found.append((distance, other))
    found.sort(key=lambda pair: pair[0])
    if not found or (len(found) > 1 and found[0][0] == found[1][0]):
        return None
    return found[0][1]


def ask_relation(task: RelationalTask, scene: RelationalScene, rng: random.Random) -> Optional[SceneQuestion]:
    """The colour or shape of the neighbour of a named object in some direction; None if no
    nameable object has a neighbour."""
    pairs = []
    for obj in scene.objects:
        fields = unique_fields(scene, obj, REFERENCES["relation"])
        for direction in RELATIONS:
            target = neighbour(scene, obj, direction) if fields else None
            if target is not None:
                pairs.append((obj, fields, direction, target))
    if not pairs:
        return None
    obj, fields, direction, target = rng.choice(pairs)
    asked = rng.choice(("colour", "shape"))
    return _question(task, rng, "relation", f"relation_{asked}", getattr(target, asked), [obj, target],
                     ref=phrase(obj, fields), rel=RELATIONS[direction])


def ask_count(task: RelationalTask, scene: RelationalScene, rng: random.Random) -> SceneQuestion:
    """How many objects of a random colour, or of a random shape, the scene has."""
    if rng.random() < 0.5:
        colour = rng.choice(list(task.colours))
        found = scene.matching(colour=colour)
        return _question(task, rng, "count", "count_colour", task.counts[len(found)], found, colour=colour)
    shape = rng.choice(task.shapes)
    found = scene.matching(shape=shape)
    return _question(task, rng, "count", "count_shape", task.counts[len(found)], found, shape=shape)


def ask_presence(task: RelationalTask, scene: RelationalScene, rng: random.Random,
                 category: Optional[str] = None) -> Optional[SceneQuestion]:
    """Is there a {colour} {shape}? Yes or No with equal odds; a No names an absent pair of
    POPE `category` (None: a random category the scene has negatives of). None if the scene
    has no negative of `category`."""
    categories = [c for c in POPE_CATEGORIES if absent_pairs(task, scene, c)]
    if category is None and categories:
        category = rng.choice(categories)
    if category not in categories:
        return None
    if rng.random() < 0.5:
        obj = rng.choice(scene.objects)
        return _presence_question(task, scene, rng, obj.colour, obj.shape, "Yes", category)
    colour, shape = rng.choice(absent_pairs(task, scene, category))
    return _presence_question(task, scene, rng, colour, shape, "No", category)


def _presence_question(task: RelationalTask, scene: RelationalScene, rng: random.Random, colour: str, shape: str,
                       answer: str, category: str) -> SceneQuestion:
    """The presence question about (`colour`, `shape`); its referred objects are those that
    match (Yes) or share the colour or the shape (No)."""
    if answer == "Yes":
        referred = scene.matching(colour=colour, shape=shape)
    else:
        referred = [o for o in scene.objects if o.colour == colour or o.shape == shape]
    return _question(task, rng, "presence", "presence", answer, referred, category, colour=colour, shape=shape)


def _named_words(questions: Sequence[SceneQuestion]) -> set:
    """Every word of the questions and their answers, with plurals also in the singular."""
    words = {w.strip("?.,").lower() for q in questions for w in f"{q.question} {q.answer}".split()}
    return words | {w[:-1] for w in words if w.endswith("s")}


def unmentioned_presence(task: RelationalTask, scene: RelationalScene, rng: random.Random,
                         earlier: Sequence[SceneQuestion]) -> Optional[SceneQuestion]:
    """A presence question to follow `earlier` in a conversation, about a colour and a shape
    that none of their questions and answers names, so that its answer cannot be read from
    the text. The answer is drawn first (Yes or No, equal odds); a No names an absent pair of
    a random POPE category. None if the scene has no unnamed pair for the drawn answer."""
    named = _named_words(earlier)

    def unnamed(pairs):
        return [(c, s) for c, s in pairs if c not in named and s not in named]

    categories = [c for c in POPE_CATEGORIES if absent_pairs(task, scene, c)]
    if rng.random() < 0.5:
        pairs = unnamed(sorted({(o.colour, o.shape) for o in scene.objects}))
        if not pairs:
            return None
        colour, shape = rng.choice(pairs)
        return _presence_question(task, scene, rng, colour, shape, "Yes", rng.choice(categories))
    categories = [c for c in categories if unnamed(absent_pairs(task, scene, c))]
    if not categories:
        return None
    category = rng.choice(categories)
    colour, shape = rng.choice(unnamed(absent_pairs(task, scene, category)))
    return _presence_question(task, scene, rng, colour, shape, "No", category)


def ask(task: RelationalTask, scene: RelationalScene, rng: random.Random, kind: str,
        category: Optional[str] = None) -> Optional[SceneQuestion]:
    """A random question of `kind` about `scene`, or None if the scene has none."""
    if kind == "attribute":
        return ask_attribute(task, scene, rng, "large", kind)
    if kind == "small":
        return ask_attribute(task, scene, rng, "small", kind)
    if kind == "relation":
        return ask_relation(task, scene, rng)
    if kind == "count":
        return ask_count(task, scene, rng)
    return ask_presence(task, scene, rng, category)


def split_rng(split: str, seed: int) -> random.Random:
    """The random stream of one split; splits never share a stream (nor the shapes task's)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    return random.Random(f"relational/{split}/{seed}")


def conversation_questions(task: RelationalTask, scene: RelationalScene, rng: random.Random) -> List[SceneQuestion]:
    """Questions of a training conversation: one of each askable kind in random order, a
    presence question only first (a Yes / No asked after open answers could be read from
    the conversation's text). With `task.presence_follow_up`, a conversation that starts with
    another kind asks a presence question second (`unmentioned_presence`), which brings
    presence from about 5 % of the training questions to about the 20 % of the splits."""
    kinds = list(task.kinds)
    rng.shuffle(kinds)
    kinds = kinds[:1] + [k for k in kinds[1:] if k != "presence"]
    questions = [q for q in (ask(task, scene, rng, k) for k in kinds) if q is not None]
    if task.presence_follow_up and "presence" in task.kinds and questions and questions[0].kind != "presence":
        follow_up = unmentioned_presence(task, scene, rng, questions[:1])
        if follow_up is not None:
            questions.insert(1, follow_up)
    return questions


def train_conversations(task: RelationalTask, seed: int) -> Iterator[Tuple[RelationalScene, List[SceneQuestion]]]:
    """The endless train stream: scenes with their conversation questions."""
    rng = split_rng("train", seed)
    while True:
        scene = sample_scene(task, rng)
        questions = conversation_questions(task, scene, rng)
        if questions:
            yield scene, questions


@dataclass(frozen=True)
class SplitItem:
    """One (image, question) of a written split."""

    question_id: int
    image: str
    scene: RelationalScene
    question: SceneQuestion


def sample_split(task: RelationalTask, split: str, num_images: int, seed: int) -> List[SplitItem]:
    """`num_images` scenes, each asked one question of every kind (presence questions cycle
    through the POPE categories); a scene without a question of some kind is redrawn."""
    rng = split_rng(split, seed)
    items: List[SplitItem] = []
    for index in range(num_images):
        image = f"images/{split}_{index:04d}.png"
        category = POPE_CATEGORIES[index % len(POPE_CATEGORIES)]
        while True:
            scene = sample_scene(task, rng)
            questions = [ask(task, scene, rng, kind, category) for kind in task.kinds]
            if all(q is not None for q in questions):
                break
        items.extend(SplitItem(len(items) + n, image, scene, q) for n, q in enumerate(questions))
    return items


def question_record(task: RelationalTask, item: SplitItem) -> dict:
    """The item as a LLaVA question-jsonl line, with answer, kind, category and oracle cells."""
    record = {"question_id": item.question_id, "image": item.image, "text": item.question.text,
              "answer": item.question.answer, "kind": item.question.kind, "cells": list(item.question.cells)}
    if item.question.category:
        record["category"] = item.question.category
    return record


def _write_jsonl(path: Path, records: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def write_dataset(output: Path, task: RelationalTask, seed: int, calibration_images: int,
                  test_images: int) -> Dict[str, Path]:
    """Writes the calibration and test splits under `output`: question jsonl (with answers,
    kinds and oracle cells), PNG images, each split's scene metadata
    (`{split}_scenes.jsonl`: image -> objects with boxes and cells) and the test split as
    LLaVA's eval tree (`eval/`, `fitprune.lab.scenes.eval_layout`). The train split is
    generated in memory (`train_conversations`).

    Returns:
        Name -> path of every question and annotation file written.
    """
    written = {}
    for split, count in (("calibration", calibration_images), ("test", test_images)):
        items = sample_split(task, split, count, seed)
        firsts = items[::len(task.kinds)]
        for item in firsts:
            (output / item.image).parent.mkdir(parents=True, exist_ok=True)
            render_scene(task, item.scene).save(output / item.image)
        written[split] = output / f"{split}.jsonl"
        _write_jsonl(written[split], [question_record(task, i) for i in items])
        written[f"{split}_scenes"] = output / f"{split}_scenes.jsonl"
        _write_jsonl(written[f"{split}_scenes"], [{"image": i.image, "objects": i.scene.metadata(task)}
                                                 for i in firsts])
        if split == "test":
            written.update(write_eval_layout(output / EVAL_DIR, task, items))
    return written


def tokenizer_sentences(task: RelationalTask) -> List[str]:
    """Every phrasing of every question over the task's colours, shapes and sizes once, and
    each answer after "ASSISTANT:", so a tokenizer trained on them holds each answer as one piece."""
    words = {"colour": list(task.colours), "shape": list(task.shapes), "rel": list(RELATIONS.values()),
             "ref": [" ".join([w for w in (size, colour) if w] + [shape])
                     for size in ("",) + tuple(task.sizes) for colour in ("",) + tuple(task.colours)
                     for shape in ("object",) + task.shapes]}
    sentences = [SUFFIX]
    for templates in TEMPLATES.values():
        for template in templates:
            names = [n for n in words if "{" + n + "}" in template]
            for values in itertools.product(*(words[n] for n in names)):
                sentences.append(template.format(**dict(zip(names, values))))
    sentences.extend(f"ASSISTANT: {answer}" for answer in task.answers)
    return sentences
