"""The relational scenes' test split as LLaVA's eval tree (`eval/textvqa`, `eval/pope`), so
that ``scripts/v1_5/eval/{textvqa,pope}.sh`` score the scenes model unchanged:

    DEVICE=cpu MODEL_PATH=playground/models/llava-v1.5-scenes EVAL_DIR=playground/scenes/eval \\
        REDUCTION_RATIO=60 bash scripts/v1_5/eval/textvqa.sh

TextVQA lines follow upstream's two-line form without OCR tokens: the question, a newline and
the short-answer suffix, on every question (the split itself carries the suffix on about half
of them; `llava.eval.eval_textvqa` recovers the question from line 0 of such a prompt and
refuses any other form). A scene is asked four open questions, so the question id names the
question, not the image: ``<image stem>_q<split question id>`` (``test_0000_q2``). The scorer
matches an answer's ``question_id`` against the annotation's ``image_id`` (as upstream's, where
the two are the TextVQA image id), so the annotation's ``image_id`` holds that same id; the
image is in ``image``, the split's numeric id in ``question_id``. POPE files are the shapes
task's (`fitprune.lab.shapes.data.pope_files`), whose ids are already the split's unique ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from fitprune.lab.scenes.scenes import RelationalTask, render_scene
from fitprune.lab.shapes.data import write_benchmark_layout
from fitprune.lab.shapes.questions import SUFFIX

DATASET_NAME = "scenes"


def textvqa_question_id(item: Any) -> str:
    """The TextVQA id of a split item: its image's stem and its split question id."""
    return f"{Path(item.image).stem}_q{item.question_id}"


def textvqa_files(items: Sequence[Any]) -> Tuple[List[dict], dict]:
    """TextVQA question lines (every open question with the short-answer suffix, one id per
    question) and the annotation file (``data``: ``image_id`` = that id, ``question_id``,
    ``question``, ``answers`` (the answer 10 times), ``image``) of the non-presence items."""
    questions, annotations = [], []
    for item in items:
        if item.question.kind == "presence":
            continue
        question_id = textvqa_question_id(item)
        questions.append({"question_id": question_id, "image": item.image,
                          "text": f"{item.question.question}\n{SUFFIX}",
                          "answer": item.question.answer, "kind": item.question.kind})
        annotations.append({"image_id": question_id, "question_id": item.question_id,
                            "question": item.question.question, "answers": [item.question.answer] * 10,
                            "image": item.image})
    return questions, {"dataset_name": DATASET_NAME, "dataset_type": "test", "data": annotations}


def write_eval_layout(root: Path, task: RelationalTask, items: Sequence[Any]) -> Dict[str, Path]:
    """Writes the split `items` under `root` as LLaVA's TextVQA and POPE files and image folders.

    Returns:
        Name -> path of every question and annotation file written.
    """
    return write_benchmark_layout(root, lambda scene: render_scene(task, scene), items, textvqa=textvqa_files)
