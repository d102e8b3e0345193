"""The relational scenes task: determinism by seed, answers checkable from the metadata,
question kinds, distractors, oracle cells, the written files."""
import json
import random
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from fitprune.lab.scenes.questions import (
    SUFFIX,
    ask_presence,
    neighbour,
    sample_split,
    tokenizer_sentences,
    train_conversations,
)
from fitprune.lab.scenes.scenes import (
    KINDS,
    RelationalScene,
    RelationalTask,
    SceneObject,
    render_scene,
    sample_scene,
)
from fitprune.lab.synthetic import main as synthetic_main

TASK = RelationalTask()
SPLIT = sample_split(TASK, "test", 24, seed=0)


def _scene_answer(item) -> str:
    """The answer recomputed from the scene's metadata alone, parsing the question's words."""
    scene, words = item.scene, item.question.question.rstrip("?").split()
    colours = [w for w in words if w in TASK.colours]
    shapes = [w.rstrip("s") for w in words if w.rstrip("s") in TASK.shapes]
    sizes = [w for w in words if w in TASK.sizes]
    kind = item.question.kind
    if kind == "count":
        return TASK.counts[len(scene.matching(colour=(colours or [None])[0], shape=(shapes or [None])[0]))]
    if kind == "presence":
        return "Yes" if scene.matching(colour=colours[0], shape=shapes[0]) else "No"
    asked = "colour" if "color" in words else "shape"
    if kind == "relation":
        direction = next(d for d in ("left", "right", "above", "below") if d in words)
        [named] = scene.matching(colour=colours[0], shape=shapes[0], size=(sizes or [None])[0])
        return getattr(neighbour(scene, named, direction), asked)
    [target] = scene.matching(colour=(colours or [None])[0], shape=(shapes or [None])[0],
                              size=sizes[0] if sizes else None)
    return getattr(target, asked)


def test_splits_are_determined_by_the_seed():
    again = sample_split(TASK, "test", 24, seed=0)
    assert [i.question for i in again] == [i.question for i in SPLIT]
    assert [i.scene for i in again] == [i.scene for i in SPLIT]
    assert [i.question for i in sample_split(TASK, "test", 24, seed=1)] != [i.question for i in SPLIT]
    assert [i.scene for i in sample_split(TASK, "calibration", 24, seed=0)] != [i.scene for i in SPLIT]


def test_every_image_gets_one_question_of_each_kind():
    assert len(SPLIT) == 24 * len(KINDS)
    assert Counter(i.question.kind for i in SPLIT) == {kind: 24 for kind in KINDS}
    assert Counter(i.question.category for i in SPLIT if i.question.kind == "presence") == {
        "random": 8, "popular": 8, "adversarial": 8}


def test_answers_follow_from_the_scene_metadata():
    for item in SPLIT:
        assert _scene_answer(item) == item.question.answer, item.question


def test_scenes_have_five_to_eight_objects_with_shared_colours_or_shapes_apart_on_the_grid():
    rng = random.Random(0)
    for _ in range(100):
        scene = sample_scene(TASK, rng)
        assert 5 <= len(scene.objects) <= 8
        assert len({o.shape for o in scene.objects}) < len(scene.objects)  # 4 shapes: a shape repeats
        cells = [c for o in scene.objects for c in o.cells(TASK.grid)]
        assert len(cells) == len(set(cells))


def test_attribute_questions_name_their_object_alone_and_have_distractors():
    with_size = 0
    for item in SPLIT:
        if item.question.kind not in ("attribute", "small"):
            continue
        size = "large" if item.question.kind == "attribute" else "small"
        assert len(item.question.cells) == TASK.sizes[size] ** 2
        words = item.question.question.rstrip("?").split()
        with_size += size in words
        named = [w for w in words if w in TASK.colours or w in TASK.shapes]
        sharing = [o for o in item.scene.objects if named[0] in (o.colour, o.shape)]
        if size in words:
            assert len(sharing) >= 2  # the size tells the referred object from a distractor
    assert with_size >= 10


def test_oracle_cells_cover_the_referred_objects():
    for item in SPLIT:
        cells = set(item.question.cells)
        objects = [o for o in item.scene.objects if cells & set(o.cells(TASK.grid))]
        assert cells == {c for o in objects for c in o.cells(TASK.grid)}
        if item.question.kind == "relation":
            assert len(objects) == 2
        if item.question.kind == "count":
            assert TASK.counts[len(objects)] == item.question.answer
        if item.question.kind == "presence" and item.question.answer == "Yes":
            assert objects and all(o.colour + " " + o.shape in item.question.question for o in objects)


def test_neighbour_is_the_nearest_overlapping_box_and_ties_have_none():
    named = SceneObject("circle", "red", "large", 4, 6, 2)
    near = SceneObject("ring", "blue", "small", 5, 2, 1)
    far = SceneObject("bar", "green", "small", 4, 0, 1)
    off_row = SceneObject("bar", "yellow", "small", 8, 5, 1)
    scene = RelationalScene((named, near, far, off_row))
    assert neighbour(scene, named, "left") is near
    assert neighbour(scene, named, "right") is None
    assert neighbour(scene, named, "below") is None  # column 5 does not overlap columns 6-7
    tie = RelationalScene((named, near, SceneObject("bar", "green", "small", 4, 2, 1)))
    assert neighbour(tie, named, "left") is None


def test_pope_negatives_of_each_category():
    scene = RelationalScene((SceneObject("circle", "red", "small", 0, 0, 1),
                             SceneObject("ring", "blue", "small", 0, 4, 1)))
    rng = random.Random(0)
    questions = [ask_presence(TASK, scene, rng, "adversarial") for _ in range(40)]
    negatives = Counter(tuple(w for w in q.question.rstrip("?").split() if w in TASK.colours or w in TASK.shapes)
                        for q in questions if q.answer == "No")
    assert set(negatives) == {("red", "ring"), ("blue", "circle")}
    assert 10 <= sum(negatives.values()) <= 30
    assert all(q.category == "adversarial" for q in questions)


def test_about_half_the_questions_have_the_short_answer_suffix():
    with_suffix = sum(i.question.suffix for i in SPLIT)
    assert 0.35 * len(SPLIT) < with_suffix < 0.65 * len(SPLIT)
    assert all(i.question.text.endswith(SUFFIX) == i.question.suffix for i in SPLIT)


def test_render_paints_only_the_boxes():
    scene = SPLIT[0].scene
    pixels = np.asarray(render_scene(TASK, scene)).astype(int)
    outside = np.ones(pixels.shape[:2], dtype=bool)
    for obj in scene.objects:
        left, top, right, bottom = obj.box(TASK.cell_size)
        outside[top:bottom, left:right] = False
        centre = pixels[(top + bottom) // 2, (left + right) // 2]
        if obj.shape in ("circle", "bar"):
            assert (centre == TASK.colours[obj.colour]).all()
    assert (pixels[outside] == 0).all()


def test_train_stream_starts_conversations_with_any_kind_and_never_asks_presence_later():
    stream = train_conversations(TASK, seed=0)
    firsts = Counter()
    for _ in range(200):
        _, questions = next(stream)
        firsts[questions[0].kind] += 1
        assert all(q.kind != "presence" for q in questions[1:])
    assert set(firsts) == set(KINDS)


def test_presence_follow_ups_bring_presence_to_a_fifth_without_naming_it_earlier():
    stream = train_conversations(replace(TASK, presence_follow_up=True), seed=0)
    kinds, firsts, follow_up_answers = Counter(), Counter(), Counter()
    for _ in range(400):
        _, questions = next(stream)
        kinds.update(q.kind for q in questions)
        firsts[questions[0].kind] += 1
        assert all(q.kind != "presence" for q in questions[2:])
        if questions[0].kind != "presence" and questions[1].kind == "presence":
            first, presence = questions[0], questions[1]
            named = f"{first.question} {first.answer}".replace("?", "").split()
            colour, shape = [w for w in presence.question.rstrip("?").split() if w in TASK.colours or w in TASK.shapes]
            assert colour not in named and shape not in named and shape + "s" not in named
            follow_up_answers[presence.answer] += 1
    assert set(firsts) == set(KINDS)
    assert 0.17 < kinds["presence"] / sum(kinds.values()) < 0.23
    assert set(follow_up_answers) == {"Yes", "No"}
    assert abs(follow_up_answers["Yes"] - follow_up_answers["No"]) < 0.15 * sum(follow_up_answers.values())


def test_tokenizer_sentences_hold_every_answer():
    sentences = tokenizer_sentences(TASK)
    for answer in TASK.answers:
        assert f"ASSISTANT: {answer}" in sentences
    assert "What color is the shape to the left of the small red circle?" in sentences


def test_synthetic_cli_writes_the_scenes_task(tmp_path):
    assert synthetic_main(["--task", "scenes", "--output", str(tmp_path), "--calibration-images", "3",
                           "--test-images", "4"]) == 0
    test = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert len(test) == 4 * len(KINDS)
    assert {"question_id", "image", "text", "answer", "kind", "cells"} <= set(test[0])
    scenes = [json.loads(line) for line in (tmp_path / "test_scenes.jsonl").read_text().splitlines()]
    assert [s["image"] for s in scenes] == [f"images/test_{i:04d}.png" for i in range(4)]
    assert {"shape", "colour", "size", "box", "cells"} == set(scenes[0]["objects"][0])
    assert len((tmp_path / "eval/pope/llava_pope_test.jsonl").read_text().splitlines()) == 4
    assert len(list((tmp_path / "images").iterdir())) == 7


def test_bad_task_settings_are_refused():
    with pytest.raises(ValueError, match="kinds"):
        RelationalTask(kinds=("relation", "size"))
    with pytest.raises(ValueError, match="max_objects"):
        RelationalTask(max_objects=11)


def test_the_bundled_scene_images_render_again_byte_for_byte():
    from PIL import Image

    from fitprune.lab.scenes.questions import sample_split

    task = RelationalTask()
    for item in sample_split(task, "test", 6, 0):
        shipped = np.asarray(Image.open(f"playground/scenes/{item.image}").convert("RGB"))
        assert np.array_equal(np.asarray(render_scene(task, item.scene)), shipped), item.image
