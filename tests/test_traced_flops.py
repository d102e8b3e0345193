"""FLOPs removed counted from the visual tokens entering and leaving each layer
(`llava.model.pruning.traced_flops`), in run records: before-layer and tower-side methods (DivPrune,
VisionZip) against a hand count, FitPrune bit-identical to its recipe; and VisionZip refused at
pruning setup on models whose tower it cannot act in."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fitprune.lab.timed_hook import TimedHook
from llava.eval import run_llava
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
from llava.model.pruning.flops import DecoderDims, full_reduction, paper_reduction
from llava.model.pruning.from_config import PruningSettings, build_pruner
from llava.model.pruning.recipe import RecipeBook
from llava.model.pruning.traced_flops import traced_flops
from llava.model.pruning.visionzip import TowerPolicyError
from tests.driver_runs import driver_record  # model_vqa_loader's run record of one question
from tests.helpers import QUESTIONS, TINY_RECIPE_RATIO, build_prompt, encode_batch, sample_images

IMAGE = "tests/data/shapes.png"


def _hand_layer(k: int, d: int, m: int) -> int:
    """Paper-convention multiply-adds of one layer entered and left by k visual tokens, written out:
    Q/K/V projections 3kd², scores and weighted sum 2k²d, output projection kd², gated FFN 3kdm."""
    return 3 * k * d * d + 2 * k * k * d + k * d * d + 3 * k * d * m


def _hand_count(record: dict, ratio: float):
    """(k, percent): the most tokens entering every layer that remove `ratio` percent of the paper
    FLOPs (found by search), and the percent they remove, from the record's dimensions."""
    dims, n = record["model"]["decoder_dims"], record["model"]["num_visual_tokens"]
    d, m = dims["hidden_size"], dims["intermediate_size"]
    k = max(k for k in range(1, n + 1) if 100 * (1 - _hand_layer(k, d, m) / _hand_layer(n, d, m)) >= ratio)
    return k, 100 * (1 - _hand_layer(k, d, m) / _hand_layer(n, d, m))


@pytest.mark.parametrize("policy", ["divprune", "visionzip"])
def test_a_before_layer_run_record_counts_flops_from_the_tokens_entering(policy, tiny_checkpoint, tmp_path):
    record = driver_record(tiny_checkpoint, tmp_path, "--policy", policy)
    layers, n = record["model"]["decoder_dims"]["num_layers"], record["model"]["num_visual_tokens"]
    k, hand = _hand_count(record, TINY_RECIPE_RATIO)
    # the tower's full count is the unpruned one, also for VisionZip whose decoder starts with k
    assert record["visual_tokens"]["initial_mean"] == n
    assert record["visual_tokens"]["entered_per_layer_mean"] == [k] * layers
    assert record["visual_tokens"]["kept_per_layer_mean"] == [k] * layers
    # the sums are integers far below 2^53: the hand count and the record differ only by the division's rounding
    assert record["flops"]["paper_reduction_pct"] == pytest.approx(hand, rel=1e-12, abs=1e-12)
    assert TINY_RECIPE_RATIO <= record["flops"]["paper_reduction_pct"]
    assert 0 < record["flops"]["full_prefill_reduction_pct"] < record["flops"]["paper_reduction_pct"]
    assert record["flops"]["paper_prefill"] == pytest.approx(layers * _hand_layer(
        k, record["model"]["decoder_dims"]["hidden_size"], record["model"]["decoder_dims"]["intermediate_size"]))


def test_a_fitprune_run_record_is_bit_identical_to_its_recipe(tiny_checkpoint, tmp_path):
    record = driver_record(tiny_checkpoint, tmp_path)
    recipe = RecipeBook.load(tiny_checkpoint / "fitprune_recipes.json").get(TINY_RECIPE_RATIO)
    assert record["flops"]["paper_reduction_pct"] == recipe.achieved_paper
    assert record["visual_tokens"]["entered_per_layer_mean"] == [recipe.num_visual_tokens, *recipe.keep_counts[:-1]]


def test_after_layer_counts_equal_the_keep_count_functions_bit_for_bit():
    dims = DecoderDims(num_layers=5, hidden_size=64, intermediate_size=172, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=300)
    rng = np.random.default_rng(0)
    num_visual = np.array([576, 576, 300])
    keep = np.sort(rng.integers(0, 300, size=(3, 5)), axis=1)[:, ::-1].astype(np.float64)
    other = np.array([40, 71, 12])
    entered = np.concatenate([num_visual[:, None], keep[:, :-1]], axis=1)
    counted = traced_flops(dims, entered, keep, num_visual, other)
    assert traced_flops(dims, entered, keep, num_visual, 0).paper_reduction == paper_reduction(dims, keep, num_visual)
    assert counted.full_reduction == full_reduction(dims, keep, num_visual, other)


def _config(tiny, **fields):
    _, model, _ = tiny
    return SimpleNamespace(**{**model.config.to_dict(), **fields})


@pytest.mark.parametrize("fields, message", [
    ({"image_aspect_ratio": "anyres"}, "policy 'visionzip' (VisionZip) reduces one square CLIP view per image; "
                                       "anyres (LLaVA-NeXT) models are not supported"),
    ({"is_multipath_encoder": True}, "policy 'visionzip' (VisionZip) needs a CLIP vision tower; LLaVA-HR's "
                                     "multi-path tower (is_multipath_encoder) is not one"),
])
def test_visionzip_refuses_next_and_hr_models_when_pruning_is_set_up(tiny, fields, message):
    _, model, _ = tiny
    settings = PruningSettings(reduction_ratio=TINY_RECIPE_RATIO, policy="visionzip")
    assert build_pruner(settings, _config(tiny), model.get_model().num_visual_tokens()) is not None
    with pytest.raises(TowerPolicyError) as caught:
        build_pruner(settings, _config(tiny, **fields), model.get_model().num_visual_tokens())
    assert str(caught.value) == message


@pytest.mark.parametrize("checkpoint, message", [
    ("tiny_hr_checkpoint", "needs a CLIP vision tower; LLaVA-HR's multi-path tower (is_multipath_encoder) is not one"),
    ("next_checkpoint", "reduces one square CLIP view per image; anyres (LLaVA-NeXT) models are not supported"),
])
def test_run_llava_with_visionzip_on_hr_or_next_is_one_line_before_generating(checkpoint, message, request, capsys,
                                                                             monkeypatch):
    def no_generation(*args, **kwargs):
        pytest.fail("the model generated before the policy was refused")

    monkeypatch.setattr(LlavaLlamaForCausalLM, "generate", no_generation)
    with pytest.raises(SystemExit) as caught:
        run_llava.main(["--model-path", str(request.getfixturevalue(checkpoint)), "--image-file", IMAGE,
                        "--query", "What is it?", "--device", "cpu", "--temperature", "0", "--max-new-tokens", "2",
                        "--reduction-ratio", "50", "--policy", "visionzip"])
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert err.strip().splitlines()[-1] == f"run_llava: error: policy 'visionzip' (VisionZip) {message}"
    assert out == "" and "Traceback" not in err


@pytest.mark.parametrize("policy", ["divprune", "visionzip"])
def test_the_prefill_benchmark_wrapper_prunes_as_the_pruner_it_wraps(policy, tiny):
    tokenizer, model, processor = tiny
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    images = sample_images(processor, model.config, len(QUESTIONS))
    pruner = model.set_pruning(TINY_RECIPE_RATIO, policy=policy)
    traces = []
    for hook in (pruner, TimedHook(pruner)):
        with torch.no_grad(), model.prefill_hook_installed(hook):
            model(input_ids=ids, attention_mask=mask, images=images)
        traces.append(model.last_pruning_trace)
    assert traces[1].entered().tolist() == traces[0].entered().tolist()
    assert traces[1].counts().tolist() == traces[0].counts().tolist()
    assert traces[0].entered()[0].tolist() != [model.get_model().num_visual_tokens()] * len(QUESTIONS)
