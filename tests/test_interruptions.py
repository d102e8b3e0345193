"""Runs killed mid-way (SIGKILL, SIGTERM) in a subprocess: no truncated answers file, run record or
recipe is left behind, and an eval run resumed afterwards ends with the uninterrupted run's answers."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List

import numpy as np
import pytest
from PIL import Image

from fitprune.calibrate import main as calibrate_main
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT
from llava.model.pruning.recipe import RecipeBook
from llava.eval import model_vqa_loader
from llava.eval.records.sidecar_files import RUN_RECORD_SUFFIX, RUN_STATS_SUFFIX, sidecar_path

REPO = Path(__file__).resolve().parents[1]
DEMO = Path(__file__).parent / "data"
NUM_QUESTIONS = 10
MAX_NEW_TOKENS = "32"
WAIT_S = 300


@pytest.fixture(scope="module")
def vqa(tmp_path_factory):
    """Ten questions on ten small images."""
    folder = tmp_path_factory.mktemp("vqa")
    rng = np.random.default_rng(5)
    lines = []
    for i in range(NUM_QUESTIONS):
        Image.fromarray(rng.integers(0, 256, size=(30 + i, 44, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        lines.append(json.dumps({"question_id": i, "image": f"{i}.png", "text": f"What is in picture {i}?"}))
    questions = folder / "questions.jsonl"
    questions.write_text("\n".join(lines) + "\n")
    return questions, folder


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def _start(module: str, argv: List[str], log: Path) -> subprocess.Popen:
    with log.open("wb") as handle:
        return subprocess.Popen([sys.executable, "-m", module, *argv], cwd=REPO, env=_env(), stdout=handle,
                                stderr=subprocess.STDOUT)


def _interrupt_when(process: subprocess.Popen, ready: Callable[[], bool], sig: int, log: Path) -> None:
    """Sends `sig` to our subprocess as soon as `ready()`; fails if it ends first."""
    deadline = time.monotonic() + WAIT_S
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"the run ended (status {process.returncode}) before it could be interrupted:\n"
                        f"{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"no sign of progress after {WAIT_S} s:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.005)
    process.send_signal(sig)
    assert process.wait(timeout=60) == -sig


def _complete_lines(path: Path) -> List[str]:
    """The newline-terminated lines of a file (a cut-off last line is left out)."""
    if not path.is_file():
        return []
    data = path.read_text(encoding="utf-8")
    return data.splitlines()[: data.count("\n")]


def _driver_argv(tiny_checkpoint: Path, vqa, answers: Path) -> List[str]:
    questions, folder = vqa
    return ["--model-path", str(tiny_checkpoint), "--question-file", str(questions), "--image-folder", str(folder),
            "--answers-file", str(answers), "--temperature", "0", "--conv-mode", "vicuna_v1", "--device", "cpu",
            "--max-new-tokens", MAX_NEW_TOKENS, "--batch-size", "1"]


@pytest.fixture(scope="module")
def uninterrupted() -> dict:
    """The uninterrupted run's answers, computed by the first test that needs them (inside a test,
    where the torch-init fixture of tests/conftest.py is active)."""
    return {}


def _ids_and_texts(path: Path) -> list:
    return [(row["question_id"], row["text"]) for row in map(json.loads, path.read_text().splitlines())]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_eval_run_resumes_to_the_uninterrupted_answers(tiny_checkpoint, vqa, tmp_path, sig, uninterrupted):
    answers = tmp_path / "run.jsonl"
    argv = _driver_argv(tiny_checkpoint, vqa, answers)
    log = tmp_path / "driver.log"
    process = _start("llava.eval.model_vqa_loader", argv, log)
    _interrupt_when(process, lambda: len(_complete_lines(answers)) >= 2, sig, log)

    written = _complete_lines(answers)
    assert 2 <= len(written) < NUM_QUESTIONS, "interrupted mid-way: some answers written, not all"
    assert all(json.loads(line)["question_id"] == i for i, line in enumerate(written)), "whole lines, in order"
    for line in _complete_lines(sidecar_path(answers, RUN_STATS_SUFFIX)):
        json.loads(line)
    record = sidecar_path(answers, RUN_RECORD_SUFFIX)
    assert not record.exists(), "the run record is written at the end of a run"
    assert not list(tmp_path.glob(".*.tmp*")), "no temporary file left behind"

    assert model_vqa_loader.main(argv) == 0
    if not uninterrupted:
        whole = tmp_path / "whole.jsonl"
        assert model_vqa_loader.main(_driver_argv(tiny_checkpoint, vqa, whole)) == 0
        uninterrupted["answers"] = _ids_and_texts(whole)
    resumed = _ids_and_texts(answers)
    assert resumed == uninterrupted["answers"]
    assert [qid for qid, _ in resumed] == list(range(NUM_QUESTIONS)), "each question answered once"
    assert json.loads(record.read_text())["samples"]["answered"] == NUM_QUESTIONS


@pytest.mark.parametrize("sig, previous", [(signal.SIGKILL, True), (signal.SIGTERM, False)],
                         ids=["SIGKILL, previous recipe file", "SIGTERM, no recipe file"])
def test_killed_calibration_leaves_the_previous_recipe_file(tiny_checkpoint, tmp_path, sig, previous):
    output = tmp_path / "recipes.json"
    if previous:
        shutil.copy(tiny_checkpoint / RECIPE_FILE_IN_CHECKPOINT, output)
    before = output.read_bytes() if previous else None
    argv = ["--model-path", str(tiny_checkpoint), "--question-file", str(DEMO / "calibration.jsonl"),
            "--image-folder", str(DEMO), "--device", "cpu", "--output", str(output), "--reduction-ratio", "30"]
    log = tmp_path / "calibrate.log"
    process = _start("fitprune.calibrate", argv, log)
    _interrupt_when(process, lambda: b"statistics" in log.read_bytes(), sig, log)

    left = sorted(p.name for p in tmp_path.iterdir())
    lock = "recipes.json.lock"  # the killed run's lock, stale: the next run takes it over
    assert left == (["calibrate.log", "recipes.json", lock] if previous else ["calibrate.log", lock]), \
        "no temporary file"
    if not previous:
        return
    assert output.read_bytes() == before
    assert RecipeBook.load(output).ratios() == (50.0,)

    assert calibrate_main(argv) == 0
    assert RecipeBook.load(output).ratios() == (30.0, 50.0), "the rerun adds its budget to the intact file"
    assert not (tmp_path / lock).exists()
