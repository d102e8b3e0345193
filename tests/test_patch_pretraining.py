"""The relational demo's vision-tower pretraining (`fitprune.lab.patch_pretraining`): per-patch
targets read from the scene metadata, a short run that learns them, and `train_demo
--init-tower/--freeze-tower` starting the LLaVA stage from that tower."""
import json

import pytest
import torch
from transformers import CLIPVisionModel

from fitprune.lab.patch_pretraining import RECORD_NAME, head_sizes, patch_targets
from fitprune.lab.patch_pretraining import main as pretrain_main
from fitprune.lab.scenes.scenes import RelationalScene, RelationalTask, SceneObject
from fitprune.lab.train_demo import main as train_main


def test_targets_follow_the_scene_metadata():
    task = RelationalTask()
    small = SceneObject("ring", "blue", "small", row=0, col=3, span=1)
    large = SceneObject("circle", "red", "large", row=5, col=7, span=2)
    targets = patch_targets(task, RelationalScene((small, large)))
    grid = task.grid
    colour_ids = {name: i + 1 for i, name in enumerate(task.colours)}
    shape_ids = {name: i + 1 for i, name in enumerate(task.shapes)}
    assert targets["colour"][3] == colour_ids["blue"] and targets["shape"][3] == shape_ids["ring"]
    assert (targets["size"][3], targets["part"][3]) == (1, 1)
    large_cells = [5 * grid + 7, 5 * grid + 8, 6 * grid + 7, 6 * grid + 8]  # row-major: TL, TR, BL, BR
    assert targets["part"][large_cells].tolist() == [2, 3, 4, 5]
    assert targets["colour"][large_cells].tolist() == [colour_ids["red"]] * 4
    assert targets["size"][large_cells].tolist() == [2] * 4
    assert int((targets["colour"] > 0).sum()) == 5  # every other patch is background
    assert (targets["row"][grid + 2], targets["col"][grid + 2]) == (1, 2)
    assert all(int(t.max()) < head_sizes(task)[name] for name, t in targets.items())


@pytest.fixture(scope="module")
def pretrained_tower(tmp_path_factory):
    out = tmp_path_factory.mktemp("tower") / "tower"
    assert pretrain_main(["--output", str(out), "--steps", "60", "--batch-size", "8", "--eval-scenes", "16",
                          "--threads", "1"]) == 0
    return out


def test_a_short_pretraining_learns_the_colours_and_writes_its_record(pretrained_tower):
    record = json.loads((pretrained_tower / RECORD_NAME).read_text())
    accuracy = record["log"][-1]["held_out_accuracy"]
    # colour is one linear read of a patch's pixels: 60 steps get well past chance (1 in 6 on
    # object patches, background aside)
    assert accuracy["colour_objects"] > 60, accuracy
    assert record["pretrain"]["steps"] == 60 and record["wall_time_s"] > 0
    assert CLIPVisionModel.from_pretrained(pretrained_tower).config.image_size == record["spec"]["image_size"]


def _stage(tmp_path, *extra):
    validation = tmp_path / "validation.jsonl"
    validation.write_text("".join(open("playground/scenes/calibration.jsonl").readlines()[:4]))
    output = tmp_path / "llava-scenes"
    code = train_main(["--task", "scenes", "--output", str(output), "--validation-file", str(validation),
                       "--batch-size", "2", "--steps", "2", "--eval-every", "0", "--threads", "1", *extra])
    return code, output


def test_a_frozen_pretrained_tower_is_shipped_unchanged_and_recorded(pretrained_tower, tmp_path):
    code, output = _stage(tmp_path, "--init-tower", str(pretrained_tower), "--freeze-tower", "--lr", "0.01")
    assert code == 0
    before = CLIPVisionModel.from_pretrained(pretrained_tower).state_dict()
    after = CLIPVisionModel.from_pretrained(output / "clip-vision-tower").state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    record = json.loads((output / "training.json").read_text())
    tower_time = record["init_tower"]["wall_time_s"]
    assert record["total_wall_time_s"] == pytest.approx(record["wall_time_s"] + tower_time, abs=0.11)


def test_an_unfrozen_tower_trains(pretrained_tower, tmp_path):
    code, output = _stage(tmp_path, "--init-tower", str(pretrained_tower), "--lr", "0.01")
    assert code == 0
    before = CLIPVisionModel.from_pretrained(pretrained_tower).state_dict()
    after = CLIPVisionModel.from_pretrained(output / "clip-vision-tower").state_dict()
    assert not all(torch.equal(before[name], after[name]) for name in before)


def test_init_tower_names_what_is_missing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _ = _stage(tmp_path, "--init-tower", str(tmp_path / "empty"))
    assert code == 2
    assert f"{tmp_path / 'empty' / 'config.json'}: --init-tower needs a tower written by" in capsys.readouterr().err
