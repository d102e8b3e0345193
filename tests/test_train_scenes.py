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
                       "--max-minutes", "0.00001"]) == 0
    record = json.loads((output / "training.json").read_text())
    assert [entry["step"] for entry in record["log"]] == [1]
    assert record["task"]["min_objects"] == 5 and record["task"]["max_objects"] == 8
    _, model, processor, _ = load_pretrained_model(str(output), None, output.name, device="cpu")
    assert model.get_model().num_visual_tokens() == 256
    assert model.config.num_hidden_layers == SCENES_SPEC.num_hidden_layers == 8
    assert model.config.mm_projector_type == "mlp2x_gelu"
    assert processor.crop_size["height"] == 128
