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

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple


from PIL import Image

from fitprune.lab.shapes.scenes import ShapesTask, render_scene
from fitprune.lab.shapes.questions import (
    POPE_CATEGORIES,
    TEMPLATES,
    SIDES,
    VisualQuestion,
    train_conversations,
    SplitItem,
    sample_split,
)


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


def write_benchmark_layout(root: Path, render: Callable[[Any], Image.Image], items: Sequence[Any],
                           dataset_name: Optional[str] = None,
                           textvqa: Callable[[Sequence[Any]], Tuple[List[dict], dict]] = textvqa_files,
                           ) -> Dict[str, Path]:
    """Writes `items` under `root` as the TextVQA (open questions) and POPE (presence)
    benchmark files and image folders that LLaVA's eval scripts read.

    Args:
        root: the eval tree's root.
        render: draws an item's scene.
        items: the split's items (`image`, `scene`, `question`), of any synthetic task.
        dataset_name: the TextVQA annotations' ``dataset_name``, when not the default.
        textvqa: the TextVQA question lines and annotation file of `items` (`textvqa_files`
            by default; a task with several open questions per image gives its own).

    Returns:
        Name -> path of every question and annotation file written.
    """
    written = {}
    text_questions, text_annotations = textvqa(items)
    if dataset_name is not None:
        text_annotations["dataset_name"] = dataset_name
    pope_questions, labels = pope_files(items)
    scenes = {item.image: item.scene for item in items}
    for folder, questions in ((TEXTVQA_IMAGES, text_questions), (POPE_IMAGES, pope_questions)):
        for image in sorted({q["image"] for q in questions}):
            path = root / folder / image
            path.parent.mkdir(parents=True, exist_ok=True)
            render(scenes[image]).save(path)
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
            written.update(write_benchmark_layout(output / EVAL_DIR, lambda scene: render_scene(task, scene), items))
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
