"""LLaVA-NeXT (v1.6, anyres) and FitPrune with per-sample visual token counts.

A tiny v1.6-layout checkpoint (24 px tower, 4 px patches: 36 tokens per view; grid pinpoints
llava-v1.6's multiples of the tower size) is checked against a direct computation of the anyres
and unpad rules; the real llava-v1.6-vicuna-7b config is checked on the meta device.
"""
import json
import math

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, CLIPImageProcessor, CLIPVisionConfig

from fitprune.calibrate import main as calibrate_main
from fitprune.keep_rounding import round_keep_fractions
from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT
from llava.model.pruning.schedules import FractionSchedule
from llava.model.pruning.recipe import ModelSignature, Recipe, RecipeBook, RecipeError
from llava.mm_utils import parse_grid_pinpoints, process_images, select_best_resolution, tokenizer_image_token
from llava.model.anyres import merge_image_features
from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from tests.helpers import IMAGE_SIZES, NEXT_SPEC, QUESTIONS, build_prompt, encode_batch, picture, strip_pad
from tests.released_configs import (LLAVA_V16_VICUNA_7B_CONFIG, WEIGHT_MAP_DIMS, clip_l_vision_weight_map,
                                    expected_weight_map)

FRACTIONAL_RATIO = 50.0
KEEP_FRACTIONS = (1.0, 0.7, 0.45, 0.25)
V16_PINPOINTS = LLAVA_V16_VICUNA_7B_CONFIG["image_grid_pinpoints"]


# ----------------------------------------------------------------------------- the checkpoint


def test_tiny_v16_checkpoint_loads_with_its_newline_and_tower_weights(next_checkpoint, next_model):
    _, model, processor = next_model
    saved = torch.load(next_checkpoint / "pytorch_model.bin")
    config = json.loads((next_checkpoint / "config.json").read_text())
    assert config["image_aspect_ratio"] == "anyres" and config["mm_patch_merge_type"] == "spatial_unpad"
    assert config["image_grid_pinpoints"] == [[24, 48], [48, 24], [48, 48], [72, 24], [24, 72]]
    assert set(saved) == set(model.state_dict())
    assert saved["model.image_newline"].shape == (NEXT_SPEC.hidden_size,)
    assert torch.equal(model.get_model().image_newline, saved["model.image_newline"])
    tower_keys = [k for k in saved if k.startswith("model.vision_tower.vision_tower.vision_model.")]
    assert tower_keys and all(torch.equal(model.state_dict()[k], saved[k]) for k in tower_keys)
    assert model.get_model().num_visual_tokens() == (NEXT_SPEC.image_size // NEXT_SPEC.patch_size) ** 2
    assert processor.crop_size["height"] == NEXT_SPEC.image_size


# ----------------------------------------------------------------------------- anyres rules


@pytest.mark.parametrize("size, expected", [
    ((1000, 500), (672, 336)),  # 672x336 fills as much as 672x672 or 1008x336 and wastes nothing
    ((100, 100), (336, 672)),  # every candidate holds all 10,000 pixels: least waste, first listed
    ((899, 1024), (672, 672)),
    ((300, 1000), (336, 1008)),
])
def test_best_resolution_hand_computed(size, expected):
    assert select_best_resolution(size, V16_PINPOINTS) == expected


def test_grid_pinpoints_as_list_or_literal_string_and_bad_values():
    as_pairs = [tuple(pair) for pair in V16_PINPOINTS]
    assert parse_grid_pinpoints(V16_PINPOINTS) == as_pairs
    assert parse_grid_pinpoints(str([tuple(pair) for pair in V16_PINPOINTS])) == as_pairs
    with pytest.raises(ValueError, match=r"image_grid_pinpoints\[1\]=\[672\] is not a \[width, height\] pair"):
        parse_grid_pinpoints([[336, 672], [672]])
    with pytest.raises(ValueError, match="must be a non-empty list"):
        parse_grid_pinpoints(None)


@pytest.mark.parametrize("size, tokens", [
    ((672, 672), 576 + 48 * 49),  # 2x2 tiles, nothing cropped: the most a v1.6-7b image gets
    ((1000, 500), 576 + 24 * 49),  # 2x1, aspect equal to the grid's: nothing cropped
    ((899, 1024), 576 + 48 * 43),  # 2x2, int(899 * 48 / 1024) = 42 columns, margin 3 each side
])
def test_visual_token_counts_at_v16_7b_geometry(size, tokens):
    across, down = (side // 336 for side in select_best_resolution(size, V16_PINPOINTS))
    features = torch.randn(1 + across * down, 576, 4)
    merged = merge_image_features(features, "spatial_unpad", size, V16_PINPOINTS, 336, torch.randn(4))
    assert merged.shape == (tokens, 4)


def _reference_views(image, pinpoints, tile):
    """The base view and the tiles, from the anyres rules written out, and the grid (across, down)."""
    width, height = image.size
    best = None
    for cand_w, cand_h in pinpoints:
        scale = min(cand_w / width, cand_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = cand_w * cand_h - effective
        if best is None or effective > best[0] or (effective == best[0] and wasted < best[1]):
            best = (effective, wasted, cand_w, cand_h)
    _, _, grid_w, grid_h = best
    if grid_w / width < grid_h / height:
        inner = (grid_w, min(math.ceil(height * grid_w / width), grid_h))
    else:
        inner = (min(math.ceil(width * grid_h / height), grid_w), grid_h)
    canvas = Image.new("RGB", (grid_w, grid_h), (0, 0, 0))
    canvas.paste(image.resize(inner), ((grid_w - inner[0]) // 2, (grid_h - inner[1]) // 2))
    tiles = [canvas.crop((col * tile, row * tile, (col + 1) * tile, (row + 1) * tile))
             for row in range(grid_h // tile) for col in range(grid_w // tile)]
    return [image.resize((tile, tile))] + tiles, (grid_w // tile, grid_h // tile)


def _reference_tokens(model, processor, image):
    """The image's visual token rows, assembled feature by feature from the rules."""
    tile = model.get_vision_tower().config.image_size
    side = tile // model.get_vision_tower().config.patch_size
    views, (across, down) = _reference_views(image, model.config.image_grid_pinpoints, tile)
    pixels = [processor.preprocess(view, return_tensors="pt")["pixel_values"] for view in views]
    with torch.no_grad():
        features = [model.encode_images(p)[0] for p in pixels]  # each (side * side, D)
    rows, cols = down * side, across * side
    width, height = image.size
    row_range, col_range = range(rows), range(cols)
    if width / height > cols / rows:
        margin = (rows - int(height * cols / width)) // 2
        row_range = range(margin, rows - margin)
    else:
        margin = (cols - int(width * rows / height)) // 2
        col_range = range(margin, cols - margin)
    tokens = list(features[0])
    for r in row_range:
        for c in col_range:
            tile_index = (r // side) * across + c // side
            tokens.append(features[1 + tile_index][(r % side) * side + c % side])
        tokens.append(model.get_model().image_newline.detach())
    return torch.stack(tokens), torch.cat(pixels)


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_visual_tokens_follow_the_anyres_and_unpad_rules(next_model, size):
    tokenizer, model, processor = next_model
    image = picture(size)
    expected, expected_pixels = _reference_tokens(model, processor, image)
    pixels = process_images([image], processor, model.config)
    assert torch.equal(pixels[0], expected_pixels)
    ids = tokenizer_image_token(build_prompt(QUESTIONS[0]), tokenizer, return_tensors="pt")[None]
    with torch.no_grad():
        spliced = model.splice_images(ids, None, pixels, image_sizes=[image.size])
    visual = spliced.inputs_embeds[0][spliced.layout.visual_mask[0]]
    assert visual.shape == expected.shape
    torch.testing.assert_close(visual, expected, rtol=1e-5, atol=1e-5)
    assert spliced.layout.visual_index[0][spliced.layout.visual_mask[0]].tolist() == list(range(len(expected)))


def test_anyres_errors_and_the_plain_tensor_path(next_model):
    tokenizer, model, processor = next_model
    image = picture((90, 40))
    ids = tokenizer_image_token(build_prompt(QUESTIONS[0]), tokenizer, return_tensors="pt")[None]
    views = process_images([image], processor, model.config)
    with pytest.raises(ValueError, match="image_sizes"):
        model.splice_images(ids, None, views)
    with pytest.raises(ValueError, match=r"1 image_sizes were given for 2 images"):
        model.splice_images(ids.repeat(2, 1), None, [views[0], views[0]], image_sizes=[image.size])
    with pytest.raises(ValueError, match=r"best grid is 2x2 tiles .* but 3 tiles were given"):
        model.splice_images(ids, None, views, image_sizes=[(50, 50)])
    # a 4-D tensor is one plain view per image, as upstream: the base tokens, no newline
    plain = processor.preprocess(image, return_tensors="pt")["pixel_values"]
    layout = model.splice_images(ids, None, plain).layout
    assert layout.visual_count().tolist() == [model.get_model().num_visual_tokens()]


# ----------------------------------------------------------------------------- batches


def _next_batch(next_model, padding_side):
    tokenizer, model, processor = next_model
    images = [picture(size, seed) for seed, size in enumerate(IMAGE_SIZES)]
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], padding_side)
    pixels = process_images(images, processor, model.config)
    return images, ids, mask, pixels


def _answers_with_sizes(model, ids, mask, pixels, sizes, max_new_tokens=8):
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=mask, images=pixels, image_sizes=sizes, do_sample=False,
                             max_new_tokens=max_new_tokens, use_cache=True)
    return [strip_pad(row.tolist()) for row in out[:, ids.shape[1]:]]


def _save_fractional_recipe(checkpoint, model):
    signature = ModelSignature.from_config(model.config, model.get_model().num_visual_tokens())
    recipe = Recipe.from_keep_fractions(signature, FRACTIONAL_RATIO, KEEP_FRACTIONS)
    RecipeBook(model=signature, recipes=(recipe,), provenance={"source": "tests"}).save(
        checkpoint / RECIPE_FILE_IN_CHECKPOINT
    )


@pytest.mark.parametrize("pruned, policy", [(False, None), (True, "fitprune"), (True, "fastv"), (True, "random")])
def test_mixed_aspect_ratio_batch_equals_each_alone(next_checkpoint, next_model, pruned, policy):
    tokenizer, model, _ = next_model
    if pruned:
        _save_fractional_recipe(next_checkpoint, model)
        model.set_pruning(FRACTIONAL_RATIO, policy=policy)
    alone = []
    for b, question in enumerate(QUESTIONS):
        image = picture(IMAGE_SIZES[b], seed=b)
        alone_ids = tokenizer_image_token(build_prompt(question), tokenizer, return_tensors="pt")[None]
        pixels = process_images([image], next_model[2], model.config)
        alone.append(_answers_with_sizes(model, alone_ids, None, pixels, [image.size])[0])
    assert any(len(set(answer)) > 1 for answer in alone)
    for padding_side in ("left", "right"):
        images, ids, mask, pixels = _next_batch(next_model, padding_side)
        sizes = [image.size for image in images]
        assert isinstance(pixels, list) and len({p.shape[0] for p in pixels}) > 1, "tile counts must differ"
        assert _answers_with_sizes(model, ids, mask, pixels, sizes) == alone, padding_side
        initial = model.splice_images(ids, mask, pixels, image_sizes=sizes).layout.initial_visual.tolist()
        assert len(set(initial)) == len(images)
        if pruned:
            expected = [[math.floor(f * n + 0.5) for n in initial] for f in KEEP_FRACTIONS]
            assert model.last_pruning_trace.counts().tolist() == expected
        else:
            assert model.last_pruning_trace is None


def test_absolute_recipe_on_an_anyres_model_names_the_fix(next_checkpoint, next_model, tmp_path):
    _, model, _ = next_model
    images, ids, mask, pixels = _next_batch(next_model, "left")
    signature = ModelSignature.from_config(model.config, model.get_model().num_visual_tokens())
    absolute = Recipe.from_keep_counts(signature, 40, [36, 30, 20, 10])
    path = tmp_path / "absolute.json"
    RecipeBook(model=signature, recipes=(absolute,)).save(path)
    model.set_pruning(40, recipe=path)
    with pytest.raises(RecipeError, match="fit a fractional recipe"):
        model(input_ids=ids, attention_mask=mask, images=pixels, image_sizes=[i.size for i in images])


# ----------------------------------------------------------------------------- fractional recipes


def test_fraction_schedule_keeps_a_share_of_each_sample():
    schedule = FractionSchedule([1.0, 0.5, 0.25])
    initial = torch.tensor([0, 5, 144, 2928])
    assert schedule.keep_counts(0, initial).tolist() == [0, 5, 144, 2928]
    assert schedule.keep_counts(1, initial).tolist() == [0, 3, 72, 1464]  # 2.5 rounds up
    assert schedule.keep_counts(2, initial).tolist() == [0, 1, 36, 732]


@pytest.fixture
def tiny_signature():
    return ModelSignature.from_config(
        {"num_hidden_layers": 4, "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 50}, num_visual_tokens=10, name="tiny-next")


def test_fractional_recipe_round_trip_and_old_files(tiny_signature, tmp_path):
    fractional = Recipe.from_keep_fractions(tiny_signature, 40, [1.0, 0.75, 0.5, 0.25], visual_counts=[10, 30])
    absolute = Recipe.from_keep_counts(tiny_signature, 30, [10, 8, 6, 6])
    assert fractional.keep_counts == (10, 8, 5, 3) and fractional.is_fractional and not absolute.is_fractional
    book = RecipeBook(model=tiny_signature, recipes=(fractional, absolute))
    path = tmp_path / "book.json"
    book.save(path)
    data = json.loads(path.read_text())
    by_ratio = {r["reduction_ratio"]: r for r in data["recipes"]}
    assert by_ratio[40.0]["keep_fractions"] == [1.0, 0.75, 0.5, 0.25]
    assert "keep_fractions" not in by_ratio[30.0], "absolute recipes keep the schema-1 layout"
    assert data["schema_version"] == 1
    assert RecipeBook.load(path) == book


def test_fractional_recipe_achieved_is_on_the_samples_counts(tiny_signature):
    dims = tiny_signature.dims()
    fractions = [1.0, 0.6, 0.3, 0.3]
    counts = [10, 31, 57]
    recipe = Recipe.from_keep_fractions(tiny_signature, 40, fractions, visual_counts=counts)
    d, m = dims.hidden_size, dims.intermediate_size
    pruned = unpruned = 0.0
    for n in counts:
        previous = n
        for f in fractions:
            kept = math.floor(f * n + 0.5)
            pruned += 3 * previous * d * d + 2 * previous ** 2 * d + kept * d * d + 3 * kept * d * m
            unpruned += 3 * n * d * d + 2 * n ** 2 * d + n * d * d + 3 * n * d * m
            previous = kept
    assert recipe.achieved_paper == pytest.approx(100 * (1 - pruned / unpruned))


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(keep_fractions=[1.0, 0.8, 0.9, 0.5]),
     "keep_fractions[2]=0.9 rises above keep_fractions[1]=0.8 (keep fractions must not increase)"),
    (lambda r: r.update(keep_fractions=[1.0, 0.8, 0.6, -0.1]), "keep_fractions[3]=-0.1 is not a number in [0, 1]"),
    (lambda r: r.update(keep_fractions=[1.0, 0.8, 0.6, "x"]), "keep_fractions[3]='x' is not a number in [0, 1]"),
    (lambda r: r.update(keep_fractions=[1.0, 0.8, 0.6, 0.2]),
     "keep_counts[3]=3 but keep_fractions[3]=0.2 of num_visual_tokens=10 gives 2"),
    (lambda r: r.update(keep_fractions=[1.0, 0.8, 0.6]), "3 keep_fractions but 4 keep_counts"),
])
def test_fractional_recipe_validation_names_file_recipe_field_and_value(tiny_signature, tmp_path, edit, message):
    recipe = Recipe.from_keep_fractions(tiny_signature, 40, [1.0, 0.8, 0.6, 0.3])
    path = tmp_path / "book.json"
    RecipeBook(model=tiny_signature, recipes=(recipe,)).save(path)
    data = json.loads(path.read_text())
    edit(data["recipes"][0])
    path.write_text(json.dumps(data))
    with pytest.raises(RecipeError) as err:
        RecipeBook.load(path)
    assert str(err.value) == f"{path}: recipe 40: {message}"


def test_fraction_rounding_meets_the_budget_on_mixed_counts():
    dims = DecoderDims(num_layers=8, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=100)
    counts = [144, 394, 540, 744, 601]
    for ratio in (10, 30, 60, 85):
        # roughly what a trial meeting each budget deletes (as in the absolute rounding test)
        deleted = [f * ratio / 30 for f in (0, 0.2, 0.1, 0.05, 0, 0, 0, 0)]
        fractions = round_keep_fractions(dims, counts, deleted, ratio)
        assert all(a >= b for a, b in zip([1.0] + fractions, fractions))
        assert all(round(f, 4) == f for f in fractions)
        keep = [[math.floor(f * n + 0.5) for f in fractions] for n in counts]
        layer_flops = [[3 * a * 64 * 64 + 2 * a * a * 64 + b * 64 * 64 + 3 * b * 64 * 128
                        for a, b in zip([n] + row[:-1], row)] for n, row in zip(counts, keep)]
        full = sum(8 * (3 * n * 64 * 64 + 2 * n * n * 64 + n * 64 * 64 + 3 * n * 64 * 128) for n in counts)
        achieved = 100 * (1 - sum(map(sum, layer_flops)) / full)
        assert ratio <= achieved < ratio + 1, (ratio, fractions, achieved)


def test_calibrated_fractional_recipe_meets_its_budget_on_mixed_aspect_ratios(next_checkpoint, next_model, tmp_path):
    tokenizer, model, processor = next_model
    sizes = [(90, 40), (30, 100), (65, 100), (40, 40)]
    lines = []
    for index, size in enumerate(sizes):
        picture(size, seed=10 + index).save(tmp_path / f"img{index}.png")
        lines.append({"question_id": index, "image": f"img{index}.png", "text": QUESTIONS[index % len(QUESTIONS)]})
    questions = tmp_path / "calibration.jsonl"
    questions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    output = tmp_path / "recipes.json"
    assert calibrate_main(["--model-path", str(next_checkpoint), "--question-file", str(questions),
                           "--image-folder", str(tmp_path), "--device", "cpu", "--output", str(output),
                           "--reduction-ratio", "30", "60"]) == 0
    book = RecipeBook.load(output)
    assert book.provenance["keep"] == "fractions"
    assert book.model.num_visual_tokens == model.get_model().num_visual_tokens()

    images = [Image.open(tmp_path / f"img{i}.png").convert("RGB") for i in range(len(sizes))]
    ids, mask = encode_batch(tokenizer, [build_prompt(line["text"]) for line in lines], "left")
    pixels = process_images(images, processor, model.config)
    image_sizes = [image.size for image in images]
    counts = model.splice_images(ids, mask, pixels, image_sizes=image_sizes).layout.initial_visual.tolist()
    assert len(set(counts)) > 1
    assert book.provenance["visual_tokens_per_sample"]["max"] == max(counts)
    d, m = model.config.hidden_size, model.config.intermediate_size
    layers = model.config.num_hidden_layers

    def flops(n_in, n_out):
        return 3 * n_in * d * d + 2 * n_in * n_in * d + n_out * d * d + 3 * n_out * d * m

    for recipe in book.recipes:
        assert recipe.is_fractional and len(recipe.keep_fractions) == layers
        model.set_pruning(recipe.reduction_ratio, recipe=output)
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, images=pixels, image_sizes=image_sizes, use_cache=False)
        live = model.last_pruning_trace.counts()  # (layers, samples), as inference pruned them
        assert live.tolist() == [[math.floor(f * n + 0.5) for n in counts] for f in recipe.keep_fractions]
        pruned = sum(flops(a, b) for n, column in zip(counts, live.T.tolist())
                     for a, b in zip([n] + column[:-1], column))
        unpruned = sum(layers * flops(n, n) for n in counts)
        achieved = 100 * (1 - pruned / unpruned)
        assert recipe.reduction_ratio <= achieved < recipe.reduction_ratio + 1
        assert achieved == pytest.approx(recipe.achieved_paper)


# ----------------------------------------------------------------------------- the real v1.6 layout


@pytest.fixture(scope="module")
def clip_l_336_dir(tmp_path_factory):
    """Config and preprocessor of openai/clip-vit-large-patch14-336 (spec 3.2), no weights."""
    path = tmp_path_factory.mktemp("clip-vit-large-patch14-336")
    CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                     image_size=336, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                     projection_dim=768).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).save_pretrained(path)
    return path


def test_v16_vicuna_7b_config_and_weight_map_on_meta(clip_l_336_dir, tmp_path):
    fields = {**LLAVA_V16_VICUNA_7B_CONFIG, "mm_vision_tower": str(clip_l_336_dir)}
    (tmp_path / "config.json").write_text(json.dumps(fields, indent=2))
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, LlavaConfig)
    saved = config.to_dict()
    written_by_this_version = ("_name_or_path", "transformers_version")
    assert {k: saved[k] for k in fields if k not in written_by_this_version} == {
        k: v for k, v in fields.items() if k not in written_by_this_version
    }
    with torch.device("meta"):
        model = LlavaLlamaForCausalLM(config)
    expected = {**expected_weight_map(**WEIGHT_MAP_DIMS["7b"]), "model.image_newline": (4096,),
                **clip_l_vision_weight_map()}
    actual = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    assert sorted(set(actual) - set(expected)) == [], "keys the checkpoint does not have"
    assert sorted(set(expected) - set(actual)) == [], "checkpoint keys the model lacks"
    assert actual == expected
    assert model.get_vision_tower().is_loaded, "v1.6 holds its fine-tuned tower: built to receive the weights"
    assert model.get_model().num_visual_tokens() == 576


@pytest.mark.parametrize("pruned", [False, True])
def test_loader_driver_batches_mixed_aspect_ratios_like_batch_of_one(next_checkpoint, next_model, tmp_path, pruned):
    from llava.eval import model_vqa_loader

    _, model, _ = next_model
    if pruned:
        _save_fractional_recipe(next_checkpoint, model)
    folder = tmp_path / "images"
    folder.mkdir()
    sizes = [(40, 20), (20, 60), (50, 50)]
    lines = []
    for i, size in enumerate(sizes):
        picture(size, seed=i).save(folder / f"{i}.png")
        lines.append({"question_id": i, "image": f"{i}.png", "text": QUESTIONS[i]})
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    answers = {}
    for batch_size in (1, 3):
        out = tmp_path / f"answers_{batch_size}.jsonl"
        argv = ["--model-path", str(next_checkpoint), "--question-file", str(questions), "--image-folder",
                str(folder), "--answers-file", str(out), "--temperature", "0", "--conv-mode", "vicuna_v1",
                "--device", "cpu", "--max-new-tokens", "6", "--batch-size", str(batch_size)]
        if pruned:
            argv += ["--reduction-ratio", str(FRACTIONAL_RATIO)]
        assert model_vqa_loader.main(argv) in (0, None)
        answers[batch_size] = [(row["question_id"], row["text"]) for row in map(json.loads, out.read_text().splitlines())]
    assert answers[1] == answers[3] and len(answers[1]) == len(sizes)
    record = json.loads((tmp_path / "answers_3.run.json").read_text())
    assert record["samples"]["answered"] == len(sizes)


def test_run_llava_passes_the_image_size(next_checkpoint, next_model, tmp_path):
    from types import SimpleNamespace

    from llava.eval import run_llava

    image = tmp_path / "wide.png"
    picture((60, 20)).save(image)
    args = SimpleNamespace(model_path=str(next_checkpoint), model_base=None, image_file=str(image), query="What?",
                           conv_mode="vicuna_v1", temperature=0.0, top_p=None, num_beams=1, max_new_tokens=4,
                           device="cpu", reduction_ratio=0, recipe=None)
    assert isinstance(run_llava.eval_model(args), str)
