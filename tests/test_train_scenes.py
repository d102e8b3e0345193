"""Training a demo model on the relational scenes (`--task scenes`) and the wall-time cap."""
import json

from fitprune.lab.train_demo import SCENES_SPEC
from fitprune.lab.train_demo import main as train_main
from llava.model.builder import load_pretrained_model


def test_a_scenes_run_stops_at_its_time_cap_and_writes_the_scenes_model(tmp_path):
    validation = tmp_path / "validation.jsonl"
    validation.write_text("".join(open("playground/scenes/calibration.jsonl").readlines()[:5]))
    output = tmp_path / "llava-scenes"
    assert train_main(["--task", "scenes", "--output", str(output), "--validation-file", str(validation),
                       "--batch-size", "2", "--steps", "50", "--eval-every", "0", "--threads", "1",
                       "--max-minutes", "0.00001", "--presence-follow-up"]) == 0
    record = json.loads((output / "training.json").read_text())
    assert [entry["step"] for entry in record["log"]] == [1]
    assert record["task"]["presence_follow_up"] is True
    assert record["task"]["min_objects"] == 5 and record["task"]["max_objects"] == 8
    _, model, processor, _ = load_pretrained_model(str(output), None, output.name, device="cpu")
    assert model.get_model().num_visual_tokens() == 256
    assert model.config.num_hidden_layers == SCENES_SPEC.num_hidden_layers == 8
    assert model.config.mm_projector_type == "mlp2x_gelu"
    assert processor.crop_size["height"] == 128


def test_presence_follow_ups_outside_the_scenes_task_are_a_one_line_error(tmp_path, capsys):
    assert train_main(["--output", str(tmp_path / "llava-shapes"), "--presence-follow-up"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("python -m fitprune.train_demo: error: --presence-follow-up applies to --task scenes "
                           "only, not shapes")


def _scenes_run(output, validation, *extra):
    return train_main(["--task", "scenes", "--output", str(output), "--validation-file", str(validation),
                       "--batch-size", "2", "--steps", "1", "--eval-every", "0", "--threads", "1", *extra])


def test_a_stage_with_more_objects_reuses_the_first_stages_tokenizer(tmp_path, capsys):
    validation = tmp_path / "validation.jsonl"
    validation.write_text("".join(open("playground/scenes/calibration.jsonl").readlines()[:5]))
    first = tmp_path / "llava-scenes-1"
    assert _scenes_run(first, validation, "--objects", "1") == 0
    # the count answers ("zero" .. max_objects) shape the tokenizer, so a 3-object task trains another one
    assert _scenes_run(tmp_path / "llava-scenes-3a", validation, "--init-from", str(first), "--objects", "3") == 2
    assert "the checkpoint's tokenizer.model differs from this task's" in capsys.readouterr().err
    second = tmp_path / "llava-scenes-3"
    assert _scenes_run(second, validation, "--init-from", str(first), "--objects", "3", "--reuse-tokenizer") == 0
    assert (second / "tokenizer.model").read_bytes() == (first / "tokenizer.model").read_bytes()
    record = json.loads((second / "training.json").read_text())
    assert record["task"]["max_objects"] == 3 and record["init_from"]["task"]["max_objects"] == 1
