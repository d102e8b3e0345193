"""FitPrune on LLaVA-HR: the shipped HR-7B and NeXT-7B books, their lookup by the real model names,
and pruned generation on the tiny HR checkpoint with the HR-7B book resampled onto it (batches,
padding sides, KV cache, ratio 0, half precision) through every entry point."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llava.mm_utils import tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from llava.model.pruning.policies import POLICIES, FitPrunePolicy
from llava.model.pruning.pruner import TokenPruner
from llava.model.pruning.recipe import ModelSignature, RecipeBook
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT, RECIPES_DIR, find_recipe_file
from llava.model.pruning.schedules import RecipeSchedule
from tests.helpers import (QUESTIONS, assert_pruned_generation_follows, build_prompt, encode_batch, greedy_answers,
                           sample_images, strip_pad)

HR_7B_BOOK = RECIPES_DIR / "llava-hr-7b-sft-1024.json"
NEXT_7B_BOOK = RECIPES_DIR / "llava-v1.6-vicuna-7b.json"
CONFIGS = RECIPES_DIR / "configs"
PUBLISHED_RATIOS = (40.0, 60.0)


@pytest.fixture(scope="module")
def _loaded_hr(tiny_hr_checkpoint):
    return load_pretrained_model(str(tiny_hr_checkpoint), None, "llava-hr-tiny", device="cpu")


@pytest.fixture()
def hr(_loaded_hr):
    """(tokenizer, model, image_processor) of the tiny HR model; pruning settings reset after each test."""
    tokenizer, model, processor, _ = _loaded_hr
    yield tokenizer, model, processor
    model.set_pruning()


def _tiny_keep_counts(checkpoint: Path, ratio: float) -> list:
    """The tiny model's keep counts for `ratio`, recomputed here from the shipped HR-7B book: the
    published keep fractions averaged over equal blocks of layers, times the tiny model's tokens."""
    config = json.loads((checkpoint / "config.json").read_text())
    published = RecipeBook.load(HR_7B_BOOK).get(ratio)
    fractions = np.array(published.keep_counts) / published.num_visual_tokens
    block_means = fractions.reshape(config["num_hidden_layers"], -1).mean(axis=1)
    return [int(k) for k in np.floor(block_means * 64 + 0.5)]  # 64 = (256 px / 32)² visual tokens


def test_shipped_hr_book_is_the_authors_deletions_with_flops_recomputed():
    book = RecipeBook.load(HR_7B_BOOK)
    assert book.ratios() == PUBLISHED_RATIOS and book.model.num_visual_tokens == 1024
    assert book.provenance["reference_key"] == "llava_hr_7b"
    # the authors' per-layer deletions for 60, as published (fitprune_next_hr_delete_schemes.json)
    assert book.get(60).deleted_per_layer[:8] == (42, 1, 207, 120, 64, 73, 76, 24)
    assert sum(book.get(60).deleted_per_layer) == 1024 - 251
    d, m = 4096, 11008
    for recipe in book.recipes:
        entering = [1024, *recipe.keep_counts[:-1]]
        kept = sum(3 * a * d * d + 2 * a * a * d + b * d * d + 3 * b * d * m
                   for a, b in zip(entering, recipe.keep_counts))
        unpruned = 32 * (3 * 1024 * d * d + 2 * 1024 ** 2 * d + 1024 * d * d + 3 * 1024 * d * m)
        assert recipe.achieved_paper == pytest.approx(100 * (1 - kept / unpruned), abs=1e-9)


def test_shipped_next_book_scales_the_authors_counts_by_n_over_2880():
    book = RecipeBook.load(NEXT_7B_BOOK)
    assert book.ratios() == PUBLISHED_RATIOS and book.model.num_visual_tokens == 576
    recipe = book.get(60)
    assert recipe.is_fractional and recipe.keep_fractions[0] == pytest.approx((2880 - 98) / 2880)
    assert recipe.keep_fractions[-1] == pytest.approx(784 / 2880)
    assert recipe.keep_counts[-1] == int(784 / 2880 * 576 + 0.5)


def _real_config(name: str, path: str) -> LlavaConfig:
    fields = json.loads((CONFIGS / name).read_text())
    fields["_name_or_path"] = path
    config = LlavaConfig(**fields)
    config.reduction_ratio = 60
    return config


@pytest.mark.parametrize("path", ["favor123/llava-hr-7b-sft-1024", "someone/llava-hr-7b-finetuned"])
def test_the_hr_7b_book_is_found_by_name_and_by_signature_and_fits_the_model_on_meta(path):
    config = _real_config("llava-hr-7b-sft-1024.json", path)
    assert find_recipe_file(config) == HR_7B_BOOK
    with torch.device("meta"):
        model = LlavaLlamaForCausalLM(config)
    tokens = model.get_model().num_visual_tokens()
    assert tokens == 1024
    RecipeBook.load(HR_7B_BOOK).check_model(ModelSignature.from_config(config, tokens))


def test_a_v1_5_7b_under_another_name_still_finds_the_v1_5_book_not_the_hr_one():
    config = _real_config("llava-v1.5-7b.json", "someone/vicuna-7b-llava-finetune")
    config.mm_vision_tower = "openai/clip-vit-large-patch14-336"
    assert find_recipe_file(config) == RECIPES_DIR / "llava-v1.5-7b.json"


@pytest.mark.parametrize("path", ["liuhaotian/llava-v1.6-vicuna-7b", "someone/next-7b"])
def test_the_next_7b_book_is_found_for_llava_v1_6_vicuna_7b(path):
    config = _real_config("llava-v1.6-vicuna-7b.json", path)
    assert find_recipe_file(config) == NEXT_7B_BOOK
    RecipeBook.load(NEXT_7B_BOOK).check_model(ModelSignature.from_config(config, 576))


def test_tiny_hr_recipe_is_the_hr_7b_book_resampled(tiny_hr_checkpoint):
    book = RecipeBook.load(tiny_hr_checkpoint / RECIPE_FILE_IN_CHECKPOINT)
    assert book.ratios() == PUBLISHED_RATIOS
    for ratio in PUBLISHED_RATIOS:
        assert list(book.get(ratio).keep_counts) == _tiny_keep_counts(tiny_hr_checkpoint, ratio)


def _batch(hr, padding_side):
    tokenizer, model, processor = hr
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], padding_side)
    return ids, mask, sample_images(processor, model.config, len(QUESTIONS))


@pytest.mark.parametrize("ratio", PUBLISHED_RATIOS)
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_pruned_batch_of_four_keeps_the_sets_and_answers_of_each_alone(hr, tiny_hr_checkpoint, ratio, padding_side):
    tokenizer, model, _ = hr
    ids, mask, images = _batch(hr, padding_side)
    model.set_pruning(ratio)
    batched = greedy_answers(model, tokenizer, ids, mask, images, max_new_tokens=6)
    trace = model.last_pruning_trace
    keep = _tiny_keep_counts(tiny_hr_checkpoint, ratio)
    assert trace.counts().tolist() == [[k] * len(QUESTIONS) for k in keep]
    batched_kept = [[trace.kept_indices(layer, b).tolist() for layer in range(len(keep))] for b in range(len(QUESTIONS))]
    for b, question in enumerate(QUESTIONS):
        alone_ids = tokenizer_image_token(build_prompt(question), tokenizer, return_tensors="pt")[None]
        alone = greedy_answers(model, tokenizer, alone_ids, None, images[b:b + 1], max_new_tokens=6)[0]
        alone_trace = model.last_pruning_trace
        assert [alone_trace.kept_indices(layer, 0).tolist() for layer in range(len(keep))] == batched_kept[b]
        assert strip_pad(batched[b]) == strip_pad(alone)


def test_kv_cache_holds_the_kept_tokens(hr, tiny_hr_checkpoint):
    tokenizer, model, processor = hr
    ids = tokenizer_image_token(build_prompt(QUESTIONS[3]), tokenizer, return_tensors="pt")[None]
    images = sample_images(processor, model.config, 1)
    model.set_pruning(60)
    with torch.no_grad():
        out = model(input_ids=ids, images=images, use_cache=True)
    keep = _tiny_keep_counts(tiny_hr_checkpoint, 60)
    other = ids.shape[1] - 1  # the prompt's tokens but the <image> placeholder
    # layer l caches the tokens that enter it: all 64 visual ones at layer 0, then what layer l-1 kept
    assert out.past_key_values.layer_lengths() == [other + n for n in [64, *keep[:-1]]]
    assert [out.past_key_values[layer][0].shape[2] for layer in range(len(keep))] == [other + n for n in [64, *keep[:-1]]]


def test_greedy_answers_at_ratio_0_equal_the_unpruned_path(hr):
    tokenizer, model, _ = hr
    ids, mask, images = _batch(hr, "left")
    model.set_pruning(0)
    plain = greedy_answers(model, tokenizer, ids, mask, images, max_new_tokens=8)
    assert model.last_pruning_trace is None
    num_visual = model.get_model().num_visual_tokens()
    keep_all = RecipeSchedule([num_visual] * model.config.num_hidden_layers, num_visual)
    with model.prefill_hook_installed(TokenPruner(FitPrunePolicy(), keep_all)):
        through_the_pruner = greedy_answers(model, tokenizer, ids, mask, images, max_new_tokens=8)
        assert model.last_pruning_trace.counts()[-1].tolist() == [num_visual] * len(QUESTIONS)
    assert plain == through_the_pruner


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_pruned_runs_keep_the_recipe_counts(tiny_hr_checkpoint, dtype):
    tokenizer, model, processor, _ = load_pretrained_model(str(tiny_hr_checkpoint), None, "llava-hr-tiny",
                                                           device="cpu", torch_dtype=dtype)
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS[:2]], "left")
    images = sample_images(processor, model.config, 2).to(dtype)
    model.set_pruning(60)
    answers = greedy_answers(model, tokenizer, ids, mask, images, max_new_tokens=3)
    keep = _tiny_keep_counts(tiny_hr_checkpoint, 60)
    assert model.dtype == dtype and len(answers) == 2
    assert model.last_pruning_trace.counts().tolist() == [[k, k] for k in keep]


def test_run_llava_answers_with_the_resampled_book_at_60(tiny_hr_checkpoint, capsys):
    from llava.eval import run_llava

    run_llava.main(["--model-path", str(tiny_hr_checkpoint), "--device", "cpu", "--temperature", "0",
                    "--max-new-tokens", "3", "--reduction-ratio", "60",
                    "--image-file", "tests/data/shapes.png", "--query", "What is in the picture?"])
    keep = _tiny_keep_counts(tiny_hr_checkpoint, 60)
    assert f"visual tokens kept after the last layer: {keep[-1]} of 64" in capsys.readouterr().err


def test_textvqa_script_prunes_the_hr_checkpoint(tiny_hr_checkpoint, tmp_path):
    from tests.scripts import SCRIPTS, run_script, tiny_textvqa

    data = tiny_textvqa(tmp_path)
    result = run_script([str(SCRIPTS / "textvqa.sh")], {
        "EVAL_DIR": str(tmp_path), "MODEL_PATH": str(tiny_hr_checkpoint), "DEVICE": "cpu",
        "REDUCTION_RATIO": "60", "BATCH_SIZE": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((data / "answers" / "llava-hr-tiny-r60.run.json").read_text())
    assert record["visual_tokens"]["kept_per_layer_mean"] == _tiny_keep_counts(tiny_hr_checkpoint, 60)


def test_calibrate_fits_a_budget_on_the_hr_checkpoint(tiny_hr_checkpoint, tmp_path):
    from fitprune.calibrate import main as calibrate_main

    output = tmp_path / "recipes.json"
    data = Path(__file__).parent / "data"
    assert calibrate_main(["--model-path", str(tiny_hr_checkpoint), "--question-file", str(data / "calibration.jsonl"),
                           "--image-folder", str(data), "--device", "cpu", "--output", str(output),
                           "--reduction-ratio", "50", "--num-samples", "3"]) == 0
    book = RecipeBook.load(output)
    assert book.model.num_visual_tokens == 64 and book.ratios() == (50.0,)
    assert 49 <= book.paper_reduction_of(book.get(50)) <= 51


def test_visualize_draws_the_kept_patches_on_the_hr_grid(tiny_hr_checkpoint, tmp_path, capsys, monkeypatch):
    from fitprune import visualize

    grids = []
    real_masks = visualize.kept_patch_masks
    monkeypatch.setattr(visualize, "kept_patch_masks", lambda kept, n: grids.append(real_masks(kept, n)) or grids[-1])
    out = tmp_path / "kept.png"
    assert visualize.main(["--model-path", str(tiny_hr_checkpoint), "--image", "tests/data/shapes.png",
                           "--question", "What?", "--reduction-ratio", "60", "--out", str(out)]) == 0
    keep = _tiny_keep_counts(tiny_hr_checkpoint, 60)
    assert out.is_file() and f"{keep[-1]} of 64 visual tokens kept" in capsys.readouterr().out
    # the tiny tower's ViT grid: (max(256 px * 4 / 32, 16 px) / 4 px)² = 8 x 8 patches
    assert grids[0].shape == (4, 8, 8) and grids[0].sum(axis=(1, 2)).tolist() == keep


def test_web_demo_overlays_the_kept_patches_on_the_hr_grid(hr, tiny_hr_checkpoint, capsys):
    from llava.serve.demo_requests import DemoModel, DemoRequest, run_request
    from llava.serve.demo_results import BudgetDone
    from llava.serve.kept_patches import tower_view
    from PIL import Image

    tokenizer, model, processor = hr
    demo = DemoModel(tokenizer, model, processor, "llava-hr-tiny")
    request = DemoRequest("tests/data/shapes.png", "What is in the picture?", "llava_v1", (60.0,), max_new_tokens=4)
    (result,) = [e.result for e in run_request(demo, request) if isinstance(e, BudgetDone)]
    keep = _tiny_keep_counts(tiny_hr_checkpoint, 60)
    assert result.keep_counts == keep and result.num_visual == 64
    assert result.masks.shape == (4, 8, 8) and result.masks.sum(axis=(1, 2)).tolist() == keep
    # the view is the padded image at the HR input size (256 px), which the 8 x 8 grid is drawn over
    assert tower_view(Image.open("tests/data/shapes.png"), processor, model.config).shape == (256, 256, 3)
    assert result.flops["paper_reduction_pct"] == pytest.approx(
        RecipeBook.load(tiny_hr_checkpoint / RECIPE_FILE_IN_CHECKPOINT).get(60).achieved_paper)


@pytest.mark.parametrize("policy", sorted(set(POLICIES) - {"visionzip"}))  # VisionZip refuses HR: test_traced_flops.py
def test_every_policy_prunes_a_left_padded_hr_batch_as_its_schedule_says(hr, policy):
    tokenizer, model, processor = hr
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS[:2]], "left")
    images = sample_images(processor, model.config, 2)
    schedule = model.set_pruning(60, policy=policy).schedule
    trace = assert_pruned_generation_follows(model, ids, mask, images, schedule)
    assert all(0 < kept < 64 for kept in trace.counts()[-1].tolist())  # the tiny HR tower's 64 tokens
