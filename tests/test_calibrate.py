"""Fitting recipes: the selection rules on synthetic scores, the bisection, the CLI, torchrun."""
import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fitprune.calibrate import main as calibrate_main
from fitprune.fit import FIT_PRODUCT, lowest_within_mass, select_deletions
from fitprune.keep_rounding import round_keep_counts
from llava.model.pruning.flops import DecoderDims, paper_reduction
from llava.model.pruning.recipe import RecipeBook
from llava.model.pruning.recipe_fields import FIT_INTERSECTION
from fitprune.lab.tiny_checkpoint import TinyLlavaSpec, write_tiny_llava

REPO = Path(__file__).resolve().parents[1]
DEMO = Path(__file__).parent / "data"


def test_hand_computed_intersection():
    # one sample, 5 visual tokens (rows 1..5); row 0 is text
    valid = torch.tensor([[False, True, True, True, True, True]])
    cross = torch.tensor([[9.0, 0.10, 0.05, 0.30, 0.40, 0.15]])
    self_score = torch.tensor([[9.0, 0.02, 0.30, 0.04, 0.50, 0.14]])
    # alpha 0.3: cross floor 0.7 of W=1.0 -> lowest by cross 0.05, 0.10, 0.15 (sum 0.30) -> rows 2, 1, 5
    # self floor 0.7 of W=1.0 -> lowest by self 0.02, 0.04, 0.14 (sum 0.20; +0.30 would exceed) -> rows 1, 3, 5
    drop = select_deletions(cross, self_score, valid, torch.tensor([1.0]), torch.tensor([1.0]), 0.3)
    assert drop.nonzero()[:, 1].tolist() == [1, 5]
    # product ranking: products .002 .015 .012 .2 .021 -> order rows 1, 3, 2, 5, 4; removing 1, 3 keeps
    # cross 0.60 >= 0.7? no -> only row 1 (cross left 0.90, self left 0.98)
    drop = select_deletions(cross, self_score, valid, torch.tensor([1.0]), torch.tensor([1.0]), 0.3, FIT_PRODUCT)
    assert drop.nonzero()[:, 1].tolist() == [1]


def _brute_force(scores, valid, mass, floor):
    """Largest k such that removing the k lowest valid scores leaves mass >= floor."""
    rows = [i for i in range(len(scores)) if valid[i]]
    order = sorted(rows, key=lambda i: (float(scores[i]), i))
    best = set()
    for k in range(len(order) + 1):
        removed = order[:k]
        left = sum(float(mass[i]) for i in rows if i not in removed)
        if left >= float(floor):
            best = set(removed)
        else:
            break
    return best


def test_cumsum_selection_equals_brute_force():
    generator = torch.Generator().manual_seed(0)
    for trial in range(50):
        scores = torch.rand(3, 17, generator=generator)
        valid = torch.rand(3, 17, generator=generator) > 0.3
        mass = scores
        floor = (scores * valid).sum(1) * torch.rand(3, generator=generator)
        got = lowest_within_mass(scores, valid, [(mass, floor)])
        for b in range(3):
            assert set(got[b].nonzero().flatten().tolist()) == _brute_force(scores[b], valid[b], mass[b], floor[b])


def test_rounding_meets_the_budget_within_one_point():
    dims = DecoderDims(num_layers=8, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=100)
    for ratio, deleted in itertools.product([10, 30, 60, 85], [[0, 20.4, 10.2, 5.5, 0, 0, 0, 0],
                                                                [60.3, 30.1, 0, 0, 0, 0, 0, 0]]):
        keep = round_keep_counts(dims, 144, [d * ratio / 30 for d in deleted], ratio)
        achieved = paper_reduction(dims, keep, 144)
        assert ratio <= achieved < ratio + 1, (ratio, keep, achieved)
        assert all(a >= b for a, b in zip([144] + keep, keep))


@pytest.fixture(scope="module")
def eight_layer_checkpoint(tmp_path_factory):
    return write_tiny_llava(tmp_path_factory.mktemp("ckpt8") / "llava-v1.5-tiny8", TinyLlavaSpec(num_hidden_layers=8))


def _calibrate(checkpoint, output, *extra):
    return calibrate_main([
        "--model-path", str(checkpoint), "--question-file", str(DEMO / "calibration.jsonl"),
        "--image-folder", str(DEMO), "--device", "cpu", "--output", str(output), *extra,
    ])


def test_fitted_recipes_meet_their_budgets(eight_layer_checkpoint, tmp_path, capsys):
    output = tmp_path / "recipes.json"
    assert _calibrate(eight_layer_checkpoint, output, "--reduction-ratio", "10", "30", "60", "90",
                      "--num-samples", "6", "--plot", str(tmp_path / "recipes.png")) == 0
    book = RecipeBook.load(output)
    assert book.ratios() == (10.0, 30.0, 60.0, 90.0)
    for recipe in book.recipes:
        assert recipe.reduction_ratio <= recipe.achieved_paper < recipe.reduction_ratio + 1
        assert 0 < recipe.alpha <= 1 and recipe.fit == FIT_INTERSECTION
    assert book.provenance["num_samples"] == 6
    assert len(book.provenance["calibration_sha256"]) == 64
    assert (tmp_path / "recipes.png").stat().st_size > 0
    table = capsys.readouterr().out
    assert "| 60 |" in table and "achieved % (paper)" in table


def test_product_fit_and_merge_into_existing_file(eight_layer_checkpoint, tmp_path):
    output = tmp_path / "recipes.json"
    assert _calibrate(eight_layer_checkpoint, output, "--reduction-ratio", "40", "--num-samples", "4") == 0
    assert _calibrate(eight_layer_checkpoint, output, "--reduction-ratio", "0.5", "--num-samples", "4",
                      "--fit", "product") == 0
    book = RecipeBook.load(output)
    assert book.ratios() == (40.0, 50.0)
    assert book.get(50).fit == FIT_PRODUCT and book.get(40).fit == FIT_INTERSECTION


def test_unreachable_budget_is_reported_and_others_are_kept(tiny_checkpoint, tmp_path, capsys):
    output = tmp_path / "recipes.json"
    assert _calibrate(tiny_checkpoint, output, "--reduction-ratio", "20", "95", "--num-samples", "3") == 2
    assert "budget 95%: not reachable" in capsys.readouterr().err
    assert RecipeBook.load(output).ratios() == (20.0,)


def test_instruction_data_and_samples_without_image(tiny_checkpoint, tmp_path):
    data = [
        {"id": "a", "image": "shapes_0.png", "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                                               {"from": "gpt", "value": "Shapes."}]},
        {"id": "a", "conversations": [{"from": "human", "value": "Hello?"}]},
        {"id": "b", "image": "shapes_1.png", "conversations": [{"from": "human", "value": "Colours?\n<image>"}]},
    ]
    questions = tmp_path / "mix.json"
    questions.write_text(json.dumps(data))
    output = tmp_path / "recipes.json"
    assert calibrate_main(["--model-path", str(tiny_checkpoint), "--question-file", str(questions),
                           "--image-folder", str(DEMO), "--device", "cpu", "--output", str(output),
                           "--reduction-ratio", "30"]) == 0
    provenance = RecipeBook.load(output).provenance
    assert provenance["num_samples"] == 2 and provenance["skipped_without_image"] == 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (a fixed port collides with other runs)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_ranks_give_the_one_process_recipe(tiny_checkpoint, tmp_path):
    single, double = tmp_path / "one.json", tmp_path / "two.json"
    common = ["--model-path", str(tiny_checkpoint), "--question-file", str(DEMO / "calibration.jsonl"),
              "--image-folder", str(DEMO), "--device", "cpu", "--reduction-ratio", "30", "60",
              "--num-samples", "8"]
    assert calibrate_main(common + ["--output", str(single)]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(free_port()), "-m", "fitprune.calibrate", *common, "--output", str(double)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = RecipeBook.load(single), RecipeBook.load(double)
    assert one.recipes == two.recipes
    assert two.provenance["processes"] == 2
