"""Issue 12 faults in the metric steps, the report and the exit codes: scores over runs with
skipped samples say "answered N of M" (fault 5); bad input exits 2 with one line (fault 14);
the report's not-found message says where the runs are (fault 15)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fitprune import report
from llava.eval.records import record_metric
from llava.eval.records.metrics_files import metrics_path
from llava.eval import eval_pope, eval_textvqa
from llava.eval.records.run_record import merge_run_records
from tests.helpers import write_jsonl
from tests.records import VISUAL, write_run
from tests.scripts import REPO, SCRIPTS
SHORT = "Answer the question using a single word or phrase."


def _skip(answers, *question_ids):
    """The errors file a driver writes beside `answers` for questions it skipped."""
    rows = [{"question_id": q, "round_id": None, "line": 1, "field": "image", "message": "bad image"}
            for q in question_ids]
    return write_jsonl(answers.with_name(answers.name[:-len(".jsonl")] + ".errors.jsonl"), rows)


# ---------------------------------------------------------------- fault 5: POPE with a skipped image


def _pope(tmp_path, skipped_qid=None):
    """Two categories: adversarial (labels y n y, answers y n n) and random (labels n y, answers y y).
    The question `skipped_qid` gets no answer."""
    data = {"adversarial": (["yes", "no", "yes"], ["Yes", "No", "No"]), "random": (["no", "yes"], ["Yes", "Yes"])}
    questions, answers = [], []
    for category, (labels, texts) in data.items():
        write_jsonl(tmp_path / "coco" / f"coco_pope_{category}.json", [{"label": label} for label in labels])
        for i, text in enumerate(texts):
            qid = f"{category[0]}{i}"
            questions.append({"question_id": qid, "category": category, "text": "Is there ...?", "image": "x.jpg"})
            if qid != skipped_qid:
                answers.append({"question_id": qid, "text": text})
    answers_file = write_jsonl(tmp_path / "answers.jsonl", answers)
    return (["--annotation-dir", str(tmp_path / "coco"), "--question-file",
             str(write_jsonl(tmp_path / "questions.jsonl", questions)), "--result-file", str(answers_file)],
            answers_file)


def test_pope_scores_the_answered_questions_when_one_image_was_skipped(tmp_path, capsys):
    argv, answers = _pope(tmp_path, skipped_qid="a1")
    errors = _skip(answers, "a1")
    assert eval_pope.main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    # adversarial without its 2nd question: preds y n vs labels y y -> TP 1, FN 1; P 1, R 0.5, F1 2/3
    assert "Category: adversarial, # samples: 2 (answered 2 of 3)\nTP\tFP\tTN\tFN\t\n1\t0\t0\t1\n" in out
    assert "F1 score: 0.6666666666666666\n" in out
    # random: y y vs n y -> F1 2/3; mean 2/3
    assert out.rstrip().endswith(
        "Mean F1 over 2 categories (adversarial, random): 0.667 (66.7); "
        f"answered 4 of 5 (1 skipped, listed in {errors}; the score is over the answered ones)")


def test_pope_with_every_question_answered_says_so(tmp_path, capsys):
    argv, _ = _pope(tmp_path)
    assert eval_pope.main(argv) == 0
    assert "Category: adversarial, # samples: 3\n" in capsys.readouterr().out.replace("\r", "")


def test_pope_refuses_an_unanswered_question_that_was_not_skipped(tmp_path, capsys):
    argv, answers = _pope(tmp_path, skipped_qid="r1")
    assert eval_pope.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (f"{answers}: 1 questions have no answer and are not listed as skipped in "
            f"{answers.with_name('answers.errors.jsonl')} (first: question_id 'r1')") in err


# ---------------------------------------------------------------- fault 5: TextVQA with skipped samples


def _textvqa(tmp_path):
    annotation = write_jsonl(tmp_path / "ann.jsonl", [])
    annotation.write_text(json.dumps({"data": [
        {"image_id": "img1", "question": "What animal?", "answers": ["dog"] * 10},
        {"image_id": "img2", "question": "What colour?", "answers": ["red"] * 10},
        {"image_id": "img3", "question": "What brand?", "answers": ["acme"] * 10},
    ]}))
    answers = write_jsonl(tmp_path / "answers" / "run.jsonl", [
        {"question_id": "img1", "prompt": f"What animal?\n{SHORT}", "text": "dog"},
    ])
    return str(annotation), answers


def test_textvqa_accuracy_says_how_many_were_skipped(tmp_path, capsys):
    annotation, answers = _textvqa(tmp_path)
    errors = _skip(answers, "img2", "img3")
    assert eval_textvqa.eval_single(annotation, str(answers)) == (1, 1.0)
    assert (f"Samples: 1; answered 1 of 3 (2 skipped, listed in {errors}; the score is over the answered ones)\n"
            "Accuracy: 100.00%\n") in capsys.readouterr().out


def test_textvqa_result_dir_does_not_read_errors_files_as_answers(tmp_path, capsys):
    annotation, answers = _textvqa(tmp_path)
    _skip(answers, "img2")
    assert eval_textvqa.main(["--annotation-file", annotation, "--result-dir", str(answers.parent)]) == 0
    out = capsys.readouterr().out
    assert "Skipping run.errors.jsonl" in out and "answered 1 of 2 (1 skipped" in out


# ---------------------------------------------------------------- fault 5: metrics.json and the report


def test_metrics_file_printed_line_and_report_give_answered_of_total(tmp_path, capsys):
    answers = tmp_path / "eval" / "textvqa" / "answers" / "llava-v1.5-7b-r0.jsonl"
    write_run(answers, "textvqa", 0, [VISUAL] * 32, samples=3)
    errors = _skip(answers, 7)
    assert record_metric.main(["--answers-file", str(answers), "--metric", "accuracy",
                        "--value", "50"]) == 0
    assert capsys.readouterr().out.strip().endswith(
        f"; answered 3 of 4 (1 skipped, listed in {errors}; the score is over the answered ones)")
    metrics = json.loads(metrics_path(str(answers)).read_text())
    assert metrics["samples"] == {"answered": 3, "skipped": 1, "total": 4, "errors_file": str(errors)}

    complete = tmp_path / "eval" / "pope" / "answers" / "llava-v1.5-7b-r0.jsonl"
    write_run(complete, "pope", 0, [VISUAL] * 32, samples=2)
    assert record_metric.main(["--answers-file", str(complete), "--value", "80"]) == 0
    assert json.loads(metrics_path(str(complete)).read_text())["samples"]["skipped"] == 0
    assert capsys.readouterr().out.strip().endswith("; answered 2 of 2")

    assert report.main(["--runs-dir", str(tmp_path / "eval"), "--output-dir", str(tmp_path / "out")]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0].split(" | ")
    row = table.splitlines()[2].split(" | ")
    assert row[header.index("Skipped samples")] == "TextVQA: answered 3 of 4"
    csv_text = (tmp_path / "out" / "results.csv").read_text()
    assert "TextVQA: answered 3 of 4" in csv_text


def test_merged_chunks_keep_their_skipped_samples(tmp_path):
    parts = [tmp_path / "2_0.jsonl", tmp_path / "2_1.jsonl"]
    for index, part in enumerate(parts):
        write_run(part, "gqa", 0, [VISUAL] * 32, samples=2, chunk=(index, 2))
    _skip(parts[0], 1)
    _skip(parts[1], 5, 6)
    merged = tmp_path / "merge.jsonl"
    merged.write_text("".join(part.read_text() for part in parts))
    merge_run_records(merged, parts)
    rows = [json.loads(line) for line in (tmp_path / "merge.errors.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [1, 5, 6]
    for part in parts:
        part.with_name(part.stem + ".errors.jsonl").unlink()
    merge_run_records(merged, parts)
    assert not (tmp_path / "merge.errors.jsonl").exists(), "a rerun that skipped nothing leaves no errors file"


def _script_env(**overrides):
    env = {k: v for k, v in os.environ.items() if k not in {"CKPT", "RECIPE", "REDUCTION_RATIO"}}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHON=sys.executable,
               **overrides)
    return env


def test_pope_script_with_one_corrupt_image_records_a_partial_score(tiny_checkpoint, tmp_path):
    """pope.sh end to end on the tiny model: one of four images is corrupt."""
    data = tmp_path / "pope"
    (data / "val2014").mkdir(parents=True)
    questions = []
    for i in range(4):
        image = data / "val2014" / f"{i}.png"
        if i == 2:
            image.write_bytes(b"not a png")
        else:
            Image.fromarray(np.full((20, 20, 3), 50 * i, dtype=np.uint8)).save(image)
        questions.append({"question_id": i, "image": image.name, "text": f"Is there a dog?\n{SHORT}",
                          "category": "random" if i % 2 else "popular"})
    write_jsonl(data / "llava_pope_test.jsonl", questions)
    for category in ("popular", "random"):
        write_jsonl(data / "coco" / f"coco_pope_{category}.json", [{"label": "yes"}, {"label": "no"}])
    result = subprocess.run(["bash", str(SCRIPTS / "pope.sh")], capture_output=True, text=True, timeout=300,
                            cwd=REPO, env=_script_env(EVAL_DIR=str(tmp_path), MODEL_PATH=str(tiny_checkpoint),
                                                      DEVICE="cpu"))
    assert result.returncode == 0, result.stderr[-3000:]
    errors = data / "answers" / "llava-v1.5-tiny-r0.errors.jsonl"
    assert "Category: popular, # samples: 1 (answered 1 of 2)" in result.stdout
    assert f"answered 3 of 4 (1 skipped, listed in {errors}" in result.stdout
    metrics = json.loads((data / "answers" / "llava-v1.5-tiny-r0.metrics.json").read_text())
    assert metrics["samples"] == {"answered": 3, "skipped": 1, "total": 4, "errors_file": str(errors)}


# ---------------------------------------------------------------- fault 14: bad input is one line and exit 2


def _python(args, cwd, **env):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=_script_env(PYTHONPATH=str(REPO), **env))


def test_demo_outside_the_repository_root_is_one_line_and_exit_2(tmp_path):
    result = _python(["-m", "fitprune.demo"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == ("python -m fitprune.demo: error: playground/models/llava-v1.5-scenes/config.json does not "
                             "exist; run python -m fitprune.demo from the repository root\n")


def test_demo_with_a_missing_recipe_file_is_one_line_and_exit_2(tmp_path):
    result = _python(["-m", "fitprune.demo", "--recipe", str(tmp_path / "none.json")], cwd=REPO)
    assert result.returncode == 2
    assert result.stderr == (f"python -m fitprune.demo: error: {tmp_path / 'none.json'} does not exist; run python "
                             "-m fitprune.demo from the repository root\n")


def test_report_without_runs_exits_2_saying_where_runs_are(tmp_path):
    result = _python(["-m", "fitprune.report", "--runs-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")],
                     cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (f"report: error: no run records (*.run.json) under {tmp_path}; the eval scripts write "
                             "them beside the answers in their EVAL_DIR: playground/shapes/eval for the demo model "
                             "(no MODEL_PATH), playground/data/eval for a named model\n")


def test_record_metric_and_merge_bad_input_exit_2(tmp_path):
    answers = tmp_path / "a.jsonl"
    record = _python(["-m", "llava.eval.records.record_metric", "--answers-file", str(answers), "--value", "1"],
                     cwd=tmp_path)
    assert (record.returncode, record.stderr) == (
        2, f"record_metric: error: {tmp_path / 'a.run.json'} does not exist; pass --benchmark\n")
    merge = _python(["-m", "llava.eval.records.run_record", "merge", "--answers-file", str(answers), str(tmp_path / "1_0.jsonl")],
                    cwd=tmp_path)
    assert merge.returncode == 2 and merge.stderr.count("\n") == 1
    assert merge.stderr.startswith("run_record: error: none of the chunks")


def test_script_bad_input_is_exit_2_from_any_directory(tmp_path):
    """A bad setting, and a chunk whose driver refuses its question file, both give exit 2."""
    common = SCRIPTS / "common.sh"
    bad = subprocess.run(["bash", "-c", f'set -euo pipefail; BENCHMARK=toy; source "{common}"'], capture_output=True,
                         text=True, timeout=30, cwd=tmp_path, env=_script_env(REDUCTION_RATIO="lots"))
    assert bad.returncode == 2
    assert bad.stderr == ("bash: error: REDUCTION_RATIO must be a percent such as 60 (or a fraction such as 0.6), "
                          "got 'lots'\n")
    questions = tmp_path / "q.jsonl"
    questions.write_text("{not json\n")
    (tmp_path / "model").mkdir()  # the scripts refuse a missing local MODEL_PATH before any chunk starts
    snippet = (f'set -euo pipefail; BENCHMARK=toy; source "{common}"; run_chunked "{tmp_path / "out"}" '
               f'"${{DRIVER_ARGS[@]}}" --question-file "{questions}" --image-folder "{tmp_path}"')
    chunk = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                           env=_script_env(MODEL_PATH=str(tmp_path / "model"), DEVICE="cpu"))
    assert chunk.returncode == 2, chunk.stderr
    assert chunk.stderr.splitlines()[-1] == ("bash: error: a chunk failed with exit status 2 (see above); rerun the "
                                             "script to resume the unfinished chunks")


# ---------------------------------------------------------------- fault 15: the README's report commands


def test_readme_report_commands_read_where_the_scripts_write():
    """Each EVAL_DIR the scripts default to (demo model, named model) has a report command in the README."""
    script = f'set -euo pipefail; BENCHMARK=toy; source "{SCRIPTS / "common.sh"}"; echo "$EVAL_DIR"'
    eval_dirs = set()
    for model in ({}, {"MODEL_PATH": "liuhaotian/llava-v1.5-7b"}):
        env = {k: v for k, v in _script_env(**model).items() if k != "EVAL_DIR" and (model or k != "MODEL_PATH")}
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, env=env)
        eval_dirs.add(str(Path(result.stdout.strip()).relative_to(REPO)))
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = {line.split("--runs-dir ")[1].split()[0] for line in readme.splitlines()
                if line.startswith("python -m fitprune.report --runs-dir ")}
    assert eval_dirs == {"playground/shapes/eval", "playground/data/eval"}
    assert commands == eval_dirs
