"""The synthetic shapes task: scenes, answers, determinism and the benchmark file formats."""
import json
import random

import numpy as np
import pytest

from fitprune.lab.shapes.data import (
    EVAL_DIR,
    POPE_IMAGES,
    POPE_LABELS,
    POPE_QUESTIONS,
    TEXTVQA_ANNOTATIONS,
    TEXTVQA_IMAGES,
    TEXTVQA_QUESTIONS,
    tokenizer_sentences,
)
from fitprune.lab.synthetic import main
from fitprune.lab.shapes.scenes import KINDS, NO, YES, Scene, ShapeObject, ShapesTask, render_scene, sample_scene
from fitprune.lab.shapes.questions import (
    POPE_CATEGORIES,
    SUFFIX,
    YES_NO_KINDS,
    absent_pairs,
    ask_presence,
    conversation_questions,
    sample_split,
)
from llava.eval.driver.questions import load_questions

# up to four objects and every kind of question (the default task is two objects, three kinds)
TASK = ShapesTask(min_objects=2, max_objects=4, kinds=KINDS)
LAST = TASK.grid - 1
SCENE = Scene((ShapeObject("circle", "red", 0, 0), ShapeObject("triangle", "blue", LAST, LAST)))


def test_scenes_hold_distinct_shapes_colours_and_cells():
    rng = random.Random(0)
    for _ in range(200):
        scene = sample_scene(TASK, rng)
        assert TASK.min_objects <= len(scene.objects) <= TASK.max_objects
        for values in ({o.shape for o in scene.objects}, {o.colour for o in scene.objects},
                       {(o.row, o.col) for o in scene.objects}):
            assert len(values) == len(scene.objects)


def test_render_paints_each_shape_in_its_cell_only():
    pixels = np.asarray(render_scene(TASK, SCENE)).astype(int)
    cell = TASK.cell_size
    assert pixels.shape == (TASK.image_size, TASK.image_size, 3)
    assert (pixels[cell // 2, cell // 2] == TASK.colours["red"]).all()
    assert (pixels[-cell // 2, -cell // 2] == TASK.colours["blue"]).all()
    background = np.ones((TASK.image_size, TASK.image_size), dtype=bool)
    background[:cell, :cell] = background[-cell:, -cell:] = False
    assert (pixels[background] == TASK.background).all()


def test_pope_negatives_follow_their_category():
    assert ("red", "circle") not in absent_pairs(TASK, SCENE, "random")
    assert set(absent_pairs(TASK, SCENE, "adversarial")) == {("red", "triangle"), ("blue", "circle")}
    popular = absent_pairs(TASK, SCENE, "popular")
    assert {shape for _, shape in popular} == {"circle", "triangle"} and len(popular) == 2 * (len(TASK.colours) - 1)
    lonely = Scene(SCENE.objects[:1])
    assert absent_pairs(TASK, lonely, "adversarial") == [("red", s) for s in TASK.shapes if s != "circle"]
    with pytest.raises(ValueError, match="unknown POPE category"):
        ask_presence(TASK, lonely, random.Random(0), "frequent")


def test_the_default_task_asks_its_kinds_about_two_objects():
    task = ShapesTask()
    assert (task.min_objects, task.max_objects, task.grid) == (2, 2, 12)
    items = sample_split(task, "calibration", 6, seed=0)
    assert [i.question.kind for i in items] == list(task.kinds) * 6
    assert all(len(i.scene.objects) == 2 for i in items)
    categories = [i.question.category for i in items if i.question.kind == "presence"]
    assert categories == list(POPE_CATEGORIES) * 2
    with pytest.raises(ValueError, match="kinds"):
        ShapesTask(kinds=("colour", "size"))


def test_answers_are_correct_for_the_scene():
    rng = random.Random(1)
    for _ in range(100):
        scene = sample_scene(TASK, rng)
        for question in conversation_questions(TASK, scene, rng):
            words = question.question.rstrip("?").split()
            if question.kind == "colour":
                assert scene.with_shape(words[-1]).colour == question.answer
            elif question.kind == "shape":
                assert scene.with_colour(words[4]).shape == question.answer
            elif question.kind == "presence":
                present = any(o.colour == words[3] and o.shape == words[4] for o in scene.objects)
                assert question.answer == (YES if present else NO)
            else:
                obj = scene.with_shape(words[2])
                left = obj.col < TASK.grid // 2
                assert question.answer == (YES if left == (words[5] == "left") else NO)


def test_splits_are_deterministic_and_differ():
    first = sample_split(TASK, "test", 5, seed=0)
    assert first == sample_split(TASK, "test", 5, seed=0)
    assert [i.scene for i in first] != [i.scene for i in sample_split(TASK, "calibration", 5, seed=0)]
    assert [i.question.kind for i in first[:len(KINDS)]] == list(KINDS)


def test_written_files_load_in_the_llava_and_benchmark_formats(tmp_path):
    assert main(["--output", str(tmp_path), "--calibration-images", "3", "--test-images", "6",
                 "--train-images", "2"]) == 0
    kinds = ShapesTask().kinds
    test = load_questions(tmp_path / "test.jsonl")
    assert len(test) == 6 * len(kinds) and all((tmp_path / q.image).is_file() for q in test)
    assert test[0].text.endswith("\n" + SUFFIX)
    train = load_questions(tmp_path / "train.jsonl")
    assert len(train) == 2 and train[0].text.endswith(SUFFIX)
    root = tmp_path / EVAL_DIR
    annotations = json.loads((root / TEXTVQA_ANNOTATIONS).read_text())["data"]
    textvqa = [json.loads(line) for line in (root / TEXTVQA_QUESTIONS).open()]
    assert all((root / TEXTVQA_IMAGES / q["image"]).is_file() for q in textvqa)
    keys = {(a["image_id"], a["question"].lower()) for a in annotations}
    assert len(keys) == len(annotations) == len(textvqa) == 6 * (len(kinds) - 1)
    assert all((q["question_id"], q["text"].splitlines()[0].lower()) in keys for q in textvqa)
    assert all(len(a["answers"]) == 10 for a in annotations)
    pope = [json.loads(line) for line in (root / POPE_QUESTIONS).open()]
    assert all((root / POPE_IMAGES / q["image"]).is_file() for q in pope)
    label_dir = root / POPE_LABELS
    assert sorted(p.name for p in label_dir.iterdir()) == [f"coco_pope_{c}.json" for c in POPE_CATEGORIES]
    for category in POPE_CATEGORIES:
        labels = [json.loads(line)["label"] for line in (label_dir / f"coco_pope_{category}.json").open()]
        answers = [q["answer"].lower() for q in pope if q["category"] == category]
        assert labels == answers and len(labels) == 2


def test_tokenizer_sentences_cover_every_answer():
    sentences = " ".join(tokenizer_sentences(TASK))
    assert all(answer in sentences for answer in TASK.answers)


def test_training_conversations_never_ask_yes_no_after_an_open_question():
    rng = random.Random(2)
    firsts = []
    for _ in range(300):
        scene = sample_scene(TASK, rng)
        kinds = [q.kind for q in conversation_questions(TASK, scene, rng)]
        assert len(set(kinds)) == len(kinds)
        yes_no = [k in YES_NO_KINDS for k in kinds]
        assert yes_no == sorted(yes_no, reverse=True)
        assert len(kinds) == (len(TASK.kinds) if yes_no[0] else 2)
        firsts.append(kinds[0])
    # a Yes / No kind opens twice as often as an open kind
    assert 1.5 < firsts.count("presence") / firsts.count("colour") < 2.7


def test_the_bundled_test_images_render_again_byte_for_byte():
    from PIL import Image

    from fitprune.lab.shapes.questions import sample_split

    task = ShapesTask()
    for item in sample_split(task, "test", 6, 0):
        shipped = np.asarray(Image.open(f"playground/shapes/{item.image}").convert("RGB"))
        assert np.array_equal(np.asarray(render_scene(task, item.scene)), shipped), item.image
