"""The benchmark scripts of scripts/v1_5/eval: data checks before any model load, run names,
chunked runs, and textvqa.sh end to end on the tiny checkpoint."""
import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from fitprune.defaults import DEMO_MODEL_PATH, SHAPES_DIR
from tests.helpers import TINY_KEEP_COUNTS
from tests.scripts import REPO, SCRIPTS, run_script, tiny_textvqa

FIRST_REQUIRED = {
    "textvqa": "textvqa/llava_textvqa_val_v051_ocr.jsonl",
    "gqa": "gqa/llava_gqa_testdev_balanced.jsonl",
    "vqav2": "vqav2/llava_vqav2_mscoco_test-dev2015.jsonl",
    "vizwiz": "vizwiz/llava_test.jsonl",
    "pope": "pope/llava_pope_test.jsonl",
    "mme": "MME/llava_mme.jsonl",
    "mmbench": "mmbench/mmbench_dev_20230712.tsv",
    "mmbench_cn": "mmbench_cn/mmbench_dev_cn_20231003.tsv",
    "sqa": "scienceqa/llava_test_CQM-A.json",
    "seed": "seed_bench/llava-seed-bench.jsonl",
    "mmvet": "mm-vet/llava-mm-vet.jsonl",
    "llavabench": "llava-bench-in-the-wild/questions.jsonl",
}


def test_every_benchmark_has_a_script():
    assert sorted(p.stem for p in SCRIPTS.glob("*.sh") if p.stem != "common") == sorted(FIRST_REQUIRED)


@pytest.mark.parametrize("bench", sorted(FIRST_REQUIRED))
def test_missing_data_stops_before_loading_the_model(bench, tmp_path):
    (tmp_path / "no-model").mkdir()  # a folder that is no checkpoint: loading it would fail, naming it
    result = run_script([str(SCRIPTS / f"{bench}.sh")],
                        {"EVAL_DIR": str(tmp_path), "MODEL_PATH": str(tmp_path / "no-model"), "DEVICE": "cpu"},
                        timeout=30)
    assert result.returncode == 2
    expected = tmp_path / FIRST_REQUIRED[bench]
    assert result.stderr.startswith(f"{bench}.sh: error: missing data file {expected}; it comes from ")
    assert "no-model" not in result.stderr, "the model was never looked at"
    assert result.stdout == ""


def _source_common(tmp_path, snippet, timeout=30, **env):
    script = f'set -euo pipefail; BENCHMARK=toy; source "{SCRIPTS / "common.sh"}"; {snippet}'
    return run_script(["-c", script], {"EVAL_DIR": str(tmp_path), **env}, timeout=timeout)


def test_run_names_derive_from_model_ratio_and_recipe(tmp_path):
    recipe = tmp_path / "my-recipes.json"
    recipe.write_text("{}")
    names = {
        ("liuhaotian/llava-v1.5-7b", "0", ""): "llava-v1.5-7b-r0",
        ("liuhaotian/llava-v1.5-7b", "60", ""): "llava-v1.5-7b-r60",
        ("runs/llava-x/checkpoint-500/", "0.6", ""): "llava-x_checkpoint-500-r60",
        ("liuhaotian/llava-v1.5-13b", "55", str(recipe)): "llava-v1.5-13b-r55-my-recipes",
    }
    for (model, ratio, recipe_file), expected in names.items():
        result = _source_common(tmp_path, 'echo "$CKPT"', MODEL_PATH=model, REDUCTION_RATIO=ratio, RECIPE=recipe_file)
        assert (result.returncode, result.stdout.strip()) == (0, expected), result.stderr
    explicit = _source_common(tmp_path, 'echo "$CKPT"', CKPT="mine", REDUCTION_RATIO="60")
    assert explicit.stdout.strip() == "mine"
    for policy, expected in [("fitprune", "llava-v1.5-7b-r60"), ("fastv", "llava-v1.5-7b-r60-fastv")]:
        result = _source_common(tmp_path, 'echo "$CKPT"', MODEL_PATH="liuhaotian/llava-v1.5-7b", REDUCTION_RATIO="60",
                                POLICY=policy)
        assert result.stdout.strip() == expected


def test_bad_ratio_and_missing_recipe_are_refused(tmp_path):
    bad = _source_common(tmp_path, "true", REDUCTION_RATIO="sixty")
    assert bad.returncode == 2 and "REDUCTION_RATIO must be a percent" in bad.stderr
    missing = _source_common(tmp_path, "true", RECIPE=str(tmp_path / "none.json"))
    assert missing.returncode == 2 and f"missing data file {tmp_path / 'none.json'}" in missing.stderr


@pytest.mark.skipif(importlib.util.find_spec("llava.eval.eval_textvqa") is None,
                    reason="llava.eval.eval_textvqa (the metric step) is not written yet")
def test_textvqa_script_end_to_end_on_cpu(tiny_checkpoint, tmp_path):
    from llava.eval.eval_textvqa import eval_single

    data = tiny_textvqa(tmp_path)
    env = {"EVAL_DIR": str(tmp_path), "MODEL_PATH": str(tiny_checkpoint), "DEVICE": "cpu",
           "REDUCTION_RATIO": "50", "BATCH_SIZE": "2"}
    result = run_script([str(SCRIPTS / "textvqa.sh")], env)
    assert result.returncode == 0, result.stderr[-3000:]

    answers = data / "answers" / "llava-v1.5-tiny-r50.jsonl"
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == ["0a0b", "0a1b"]
    record = json.loads(answers.with_name("llava-v1.5-tiny-r50.run.json").read_text())
    assert (record["benchmark"], record["run_name"]) == ("textvqa", "llava-v1.5-tiny-r50")
    assert record["visual_tokens"]["kept_per_layer_mean"] == list(TINY_KEEP_COUNTS)
    metrics = json.loads(answers.with_name("llava-v1.5-tiny-r50.metrics.json").read_text())
    _, accuracy = eval_single(str(data / "TextVQA_0.5.1_val.json"), str(answers))
    assert metrics["benchmark"] == "textvqa"
    assert metrics["value"] == pytest.approx(100 * accuracy, abs=0.005)



def test_policy_reaches_the_driver_and_names_the_run(tiny_checkpoint, tmp_path):
    """POLICY=divprune: the answers and run record carry the policy in their name, the record names
    it, and DivPrune's one cut before layer 0 holds through every layer; the metric is recorded."""
    tiny_textvqa(tmp_path)
    env = {"EVAL_DIR": str(tmp_path), "MODEL_PATH": str(tiny_checkpoint), "DEVICE": "cpu",
           "REDUCTION_RATIO": "60", "POLICY": "divprune", "BATCH_SIZE": "2"}
    result = run_script([str(SCRIPTS / "textvqa.sh")], env)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = tmp_path / "textvqa" / "answers"
    assert sorted(p.name for p in answers.glob("*.run.json")) == ["llava-v1.5-tiny-r60-divprune.run.json"]
    record = json.loads((answers / "llava-v1.5-tiny-r60-divprune.run.json").read_text())
    assert (record["pruning"]["policy"], record["pruning"]["reduction_ratio"]) == ("divprune", 60.0)
    kept = record["visual_tokens"]["kept_per_layer_mean"]
    assert len(set(kept)) == 1 and kept[0] < TINY_KEEP_COUNTS[0]
    assert json.loads((answers / "llava-v1.5-tiny-r60-divprune.metrics.json").read_text())["benchmark"] == "textvqa"


def test_an_unknown_policy_stops_the_script_in_one_line(tiny_checkpoint, tmp_path):
    tiny_textvqa(tmp_path)
    result = run_script([str(SCRIPTS / "textvqa.sh")], {"EVAL_DIR": str(tmp_path), "MODEL_PATH": str(tiny_checkpoint),
                                                        "DEVICE": "cpu", "POLICY": "nope"})
    assert result.returncode == 2
    assert result.stderr.startswith("model_vqa_loader: error: argument --policy: invalid choice: 'nope'")
    assert result.stderr.count("\n") == 1


def test_chunked_run_merges_answers_and_run_records(tiny_checkpoint, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.full((20, 20, 3), 40, dtype=np.uint8)).save(folder / "a.png")
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image": "a.png", "text": f"Q{i}?"}) + "\n"
                                 for i in range(3)))
    out = tmp_path / "answers" / "run"
    snippet = (f'run_chunked "{out}" "${{DRIVER_ARGS[@]}}" --question-file "{questions}" '
               f'--image-folder "{folder}" --max-new-tokens 4')
    result = _source_common(tmp_path, snippet, timeout=300, MODEL_PATH=str(tiny_checkpoint), DEVICE="cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "merge.jsonl").read_text() == (out / "1_0.jsonl").read_text()
    record = json.loads((out / "merge.run.json").read_text())
    assert record["chunk"]["merged_from"] == [str(out / "1_0.jsonl")]
    assert record["samples"]["answered"] == record["samples"]["measured"] == 3


def test_no_model_means_the_demo_model_on_its_shapes_data_on_cpu():
    script = f'set -euo pipefail; BENCHMARK=toy; source "{SCRIPTS / "common.sh"}"; echo "$MODEL_PATH|$EVAL_DIR|$DEVICE|$CKPT"'
    unset = ("MODEL_PATH", "EVAL_DIR", "DEVICE")
    result = run_script(["-c", script], {"REDUCTION_RATIO": "60"}, timeout=30, unset=unset)
    assert result.stdout.strip() == f"{REPO / DEMO_MODEL_PATH}|{REPO / SHAPES_DIR}/eval|cpu|llava-v1.5-shapes-r60", \
        result.stderr
    named = run_script(["-c", script], {"MODEL_PATH": "liuhaotian/llava-v1.5-7b"}, timeout=30, unset=unset)
    assert named.stdout.strip() == f"liuhaotian/llava-v1.5-7b|{REPO}/playground/data/eval|cuda|llava-v1.5-7b-r0"


def test_textvqa_script_on_the_demo_model_scores_its_answers(tmp_path):
    """textvqa.sh with no model: the demo model, pruned to 60 % by its own recipe; the
    script's TextVQA accuracy equals the first-token accuracy of the same questions."""
    import shutil

    from fitprune.lab.answers import answer_accuracy, encode_questions, load_answered_questions
    from llava.model.builder import load_pretrained_model

    source = REPO / SHAPES_DIR / "eval" / "textvqa"
    data = tmp_path / "textvqa"
    (data / "train_images").mkdir(parents=True)
    lines = (source / "llava_textvqa_val_v051_ocr.jsonl").read_text().splitlines()[:24]
    (data / "llava_textvqa_val_v051_ocr.jsonl").write_text("\n".join(lines) + "\n")
    for question in map(json.loads, lines):
        target = data / "train_images" / question["image"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / "train_images" / question["image"], target)
    shutil.copy(source / "TextVQA_0.5.1_val.json", data / "TextVQA_0.5.1_val.json")
    result = run_script([str(SCRIPTS / "textvqa.sh")], {"EVAL_DIR": str(tmp_path), "REDUCTION_RATIO": "60",
                                                        "BATCH_SIZE": "8"}, unset=("MODEL_PATH", "DEVICE"))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((data / "answers" / "llava-v1.5-shapes-r60.metrics.json").read_text())

    model_path = REPO / DEMO_MODEL_PATH
    tokenizer, model, processor, _ = load_pretrained_model(str(model_path), None, model_path.name, device="cpu")
    model.set_pruning(60)
    answered = load_answered_questions(data / "llava_textvqa_val_v051_ocr.jsonl")
    report = answer_accuracy(model, encode_questions(answered, tokenizer, processor, model.config,
                                                     data / "train_images"))
    assert report.total == len(lines)
    assert metrics["value"] == pytest.approx(report.accuracy, abs=0.005)  # the metric prints 2 decimals
