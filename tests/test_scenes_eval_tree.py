"""The relational scenes' eval tree (playground/scenes/eval): its TextVQA files are what the
generator writes, every question has its own id and the short-answer suffix, and the tree
scores through scripts/v1_5/eval/textvqa.sh with the scenes model."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fitprune.lab.scenes.eval_layout import textvqa_files
from fitprune.lab.scenes.questions import sample_split
from fitprune.lab.scenes.scenes import RelationalTask
from fitprune.lab.shapes.questions import SUFFIX
from llava.eval import eval_textvqa

REPO = Path(__file__).resolve().parents[1]
TREE = REPO / "playground" / "scenes" / "eval"
QUESTIONS = TREE / "textvqa" / "llava_textvqa_val_v051_ocr.jsonl"
ANNOTATIONS = TREE / "textvqa" / "TextVQA_0.5.1_val.json"
MODEL = REPO / "playground" / "models" / "llava-v1.5-scenes"
# the shipped tree: `python -m fitprune.synthetic --task scenes` (seed 0, 128 test images)
SEED, TEST_IMAGES = 0, 128


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_shipped_textvqa_files_are_the_generators():
    questions, annotations = textvqa_files(sample_split(RelationalTask(), "test", TEST_IMAGES, SEED))
    assert _jsonl(QUESTIONS) == questions
    assert json.loads(ANNOTATIONS.read_text()) == annotations


def test_shipped_question_ids_are_unique_and_prompts_scoreable():
    questions = _jsonl(QUESTIONS)
    annotations = json.loads(ANNOTATIONS.read_text())["data"]
    ids = [q["question_id"] for q in questions]
    assert len(ids) == len(set(ids)) == len(annotations) == 512  # 4 open questions of 128 images
    by_key = {(a["image_id"], a["question"].lower()): a for a in annotations}
    for question in questions:
        assert question["text"].endswith(f"\n{SUFFIX}") and question["text"].count("\n") == 1
        annotation = by_key[(question["question_id"], eval_textvqa.prompt_processor(question["text"]))]
        assert annotation["answers"] == [question["answer"]] * 10
        assert annotation["image"] == question["image"]
        assert (TREE / "textvqa" / "train_images" / question["image"]).is_file()
    pope_ids = [q["question_id"] for q in _jsonl(TREE / "pope" / "llava_pope_test.jsonl")]
    assert len(pope_ids) == len(set(pope_ids)) == 128


def test_prompt_without_the_suffix_is_one_line_naming_question_and_suffix(tmp_path, capsys):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": "test_0000", "prompt": "Which shape is the red object?",
                                   "text": "circle"}) + "\n")
    assert eval_textvqa.main(["--annotation-file", str(ANNOTATIONS), "--result-file", str(answers)]) == 2
    error = capsys.readouterr().err
    assert error == (f"eval_textvqa: error: {answers}: answer 1 (question_id 'test_0000'): unrecognised TextVQA "
                     "prompt (1 lines): 'Which shape is the red object?'; expected the question, optionally a "
                     f"'Reference OCR token: '... line, then the suffix '{SUFFIX}' on its own line\n")


def test_a_subset_of_the_tree_scores_through_textvqa_sh(tmp_path):
    data = tmp_path / "textvqa"
    subset = _jsonl(QUESTIONS)[:4]  # test_0000's four open questions: one image, four ids
    (data / "train_images" / "images").mkdir(parents=True)
    for question in subset:
        shutil.copy(TREE / "textvqa" / "train_images" / question["image"], data / "train_images" / question["image"])
    (data / QUESTIONS.name).write_text("".join(json.dumps(q) + "\n" for q in subset))
    shutil.copy(ANNOTATIONS, data / ANNOTATIONS.name)
    env = {k: v for k, v in os.environ.items() if k not in {"CKPT", "RECIPE", "POLICY", "BATCH_SIZE"}}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHON=sys.executable,
               DEVICE="cpu", MODEL_PATH=str(MODEL), EVAL_DIR=str(tmp_path), REDUCTION_RATIO="60")
    result = subprocess.run(["bash", str(REPO / "scripts" / "v1_5" / "eval" / "textvqa.sh")], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Samples: 4; answered 4 of 4" in result.stdout
    assert "Accuracy: " in result.stdout
    answers = _jsonl(data / "answers" / "llava-v1.5-scenes-r60.jsonl")
    assert [a["question_id"] for a in answers] == [q["question_id"] for q in subset]
