"""The demo model's training script: a checkpoint in the real layout, and curriculum runs
that start from a previous run's weights."""
import json

import pytest
import torch

from fitprune.defaults import DEFAULT_CALIBRATION_FILE, SHAPES_DIR
from fitprune.lab.train_demo import main as train_main
from llava.model.builder import load_pretrained_model

# a few validation questions, so a run stays a second or two
VALIDATION_QUESTIONS = 6


@pytest.fixture(scope="module")
def validation_file(tmp_path_factory):
    lines = open(DEFAULT_CALIBRATION_FILE).read().splitlines()[:VALIDATION_QUESTIONS]
    path = tmp_path_factory.mktemp("validation") / "validation.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(output, validation_file, *extra):
    return train_main(["--output", str(output), "--validation-file", str(validation_file), "--validation-folder",
                       SHAPES_DIR, "--batch-size", "2", "--steps", "2", "--eval-every", "0", "--threads", "1",
                       *extra])


def _weights(path):
    _, model, _, _ = load_pretrained_model(str(path), None, path.name, device="cpu")
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def first_stage(tmp_path_factory, validation_file):
    output = tmp_path_factory.mktemp("stage") / "llava-shapes-1"
    assert _run(output, validation_file, "--objects", "1") == 0
    return output


def test_a_run_writes_a_loadable_checkpoint_with_its_record(first_stage):
    record = json.loads((first_stage / "training.json").read_text())
    assert record["task"]["min_objects"] == record["task"]["max_objects"] == 1
    assert [entry["step"] for entry in record["log"]] == [2]
    assert record["init_from"] is None
    weights = _weights(first_stage)
    assert any(k.startswith("model.vision_tower.") for k in weights)


def test_init_from_starts_from_the_previous_weights(first_stage, tmp_path, validation_file):
    second = tmp_path / "llava-shapes-2"
    # a zero learning rate (and so no weight decay either) leaves the starting weights as they are
    assert _run(second, validation_file, "--init-from", str(first_stage), "--objects", "2", "--lr", "0") == 0
    before, after = _weights(first_stage), _weights(second)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    record = json.loads((second / "training.json").read_text())
    assert record["task"]["min_objects"] == 2
    assert record["init_from"]["task"]["min_objects"] == 1
    assert record["total_wall_time_s"] >= record["wall_time_s"] + record["init_from"]["wall_time_s"] - 0.2


def test_init_from_names_the_missing_file(tmp_path, validation_file, capsys):
    assert _run(tmp_path / "llava-out", validation_file, "--init-from", str(tmp_path / "empty")) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"python -m fitprune.train_demo: error: {tmp_path}/empty/pytorch_model.bin: "
                     "--init-from needs a checkpoint written by this script")


def test_an_impossible_object_count_is_a_one_line_error(tmp_path, validation_file, capsys):
    assert _run(tmp_path / "llava-out", validation_file, "--objects", "9") == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("python -m fitprune.train_demo: error: ShapesTask: need 1 <= min_objects <= max_objects <= 4")
    assert "\n" not in error


def test_decoder_sizes_from_the_command_line(first_stage, tmp_path, validation_file, capsys):
    wide = tmp_path / "llava-shapes-wide"
    assert _run(wide, validation_file, "--objects", "1", "--hidden-size", "96", "--num-attention-heads", "6",
                "--intermediate-size", "160") == 0
    config = json.loads((wide / "config.json").read_text())
    assert (config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"],
            config["intermediate_size"]) == (96, 6, 6, 160)
    assert json.loads((wide / "training.json").read_text())["spec"]["hidden_size"] == 96
    capsys.readouterr()
    # continuing the default-sized first stage at another width is a one-line error, not a traceback
    assert _run(tmp_path / "llava-out", validation_file, "--init-from", str(first_stage), "--hidden-size", "96",
                "--num-attention-heads", "6") == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("python -m fitprune.train_demo: error: --init-from: the checkpoint's decoder has other "
                            "sizes") and "\n" not in error
    # a later stage keeps the wide checkpoint's sizes without repeating them
    assert _run(tmp_path / "llava-wide-2", validation_file, "--init-from", str(wide), "--objects", "2") == 0
    assert json.loads((tmp_path / "llava-wide-2" / "config.json").read_text())["hidden_size"] == 96
    capsys.readouterr()
    assert _run(tmp_path / "llava-out2", validation_file, "--hidden-size", "100", "--num-attention-heads", "6") == 2
    assert "--hidden-size 100 is not a multiple of --num-attention-heads 6" in capsys.readouterr().err


def test_a_missing_validation_file_is_a_one_line_error(tmp_path, capsys):
    assert _run(tmp_path / "llava-out", tmp_path / "absent.jsonl") == 2
    error = capsys.readouterr().err.strip()
    assert error == f"python -m fitprune.train_demo: error: {tmp_path}/absent.jsonl: question file does not exist"
