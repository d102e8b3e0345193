"""Questions about a scene of the synthetic shapes task, each with its one-word answer, and the
reproducible streams of scenes and questions of each split (see `fitprune.lab.shapes.data`)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple


from fitprune.lab.shapes.scenes import NO, YES, ShapesTask, ShapeObject, Scene, sample_scene


SUFFIX = "Answer the question using a single word or phrase."

POPE_CATEGORIES = ("adversarial", "popular", "random")

SPLITS = ("train", "calibration", "test")
TEMPLATES = {
    "colour": "What color is the {shape}?",
    "shape": "What shape is the {colour} object?",
    "presence": "Is there a {colour} {shape} in the image?",
    "side": "Is the {shape} on the {side} side of the image?",
}
SIDES = ("left", "right")

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
