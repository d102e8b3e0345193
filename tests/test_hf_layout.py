"""Hugging Face-layout LLaVA checkpoints (llava-hf/*) load into our model with the originals' answers.

Tiny original-layout checkpoints (LLaVA-1.5 and NeXT) are converted with `python -m llava.model.convert
--to hf` into sharded safetensors; both are loaded and must give the same logits, greedy answers and
FitPrune kept sets. The published llava-hf configs are checked on the meta device: every name the
weight mapping produces, with its shape, is a parameter of the original-layout model of that size.
"""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig

from fitprune.lab.tiny_checkpoint import TinyLlavaSpec, write_tiny_llava
from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.errors import CheckpointError
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.model.convert import main as convert_main
from llava.model.hf_config import HfCheckpoint, llava_config_from_hf
from llava.model.hf_weights import CLASSIC, NESTED, VOCAB_KEYS, HfWeightFiles, plan_hf_names
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
from llava.model.pruning.recipe import ModelSignature, Recipe, RecipeBook
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT, RECIPES_DIR, find_recipe_file
from llava.model.template_choice import CONV_MODE_FIELD
from tests.helpers import IMAGE_SIZES, QUESTIONS, build_prompt, encode_batch, picture, sample_images, strip_pad
from tests.released_configs import (LLAVA_V15_13B_CONFIG, LLAVA_V15_7B_CONFIG, LLAVA_V16_VICUNA_7B_CONFIG,
                                    clip_l_vision_weight_map)

SPECS = {"v1.5": TinyLlavaSpec(), "v1.6": TinyLlavaSpec(version="v1.6", image_size=24)}
VERSIONS = pytest.mark.parametrize("version", list(SPECS))
RATIOS = (0.0, 60.0, 90.0)
# per-layer keep counts (v1.5, 144 visual tokens) and keep fractions (v1.6) of the tiny recipes
KEEP_COUNTS = {60.0: (120, 50, 25, 12), 90.0: (10, 0, 0, 0)}
KEEP_FRACTIONS = {60.0: (0.7, 0.35, 0.2, 0.1), 90.0: (0.05, 0.0, 0.0, 0.0)}
SHARD_SIZE = "100KB"  # the tiny models' weights come out in about a dozen shards
TRAINING_ONLY_FIELDS = {
    "attention_bias", "attention_dropout", "freeze_mm_mlp_adapter", "freeze_mm_vision_resampler",
    "image_crop_resolution", "image_split_resolution", "mm_projector_lr", "mm_resampler_type", "mm_vision_tower_lr",
    "tokenizer_model_max_length", "tokenizer_padding_side", "tune_mm_vision_resampler", "use_mm_proj",
}
"""Original-layout config fields (training settings, read by no inference code) that the Hugging Face layout
does not keep, so a round trip drops them (``tune_mm_mlp_adapter``, which `LlavaConfig` declares, comes back
with its default)."""


def _save_recipes(checkpoint, spec):
    """Recipes at 60 % and 90 % in the checkpoint (the converter copies them along)."""
    config = AutoConfig.from_pretrained(checkpoint)
    signature = ModelSignature.from_config(config, (spec.image_size // spec.patch_size) ** 2)
    if spec.version == "v1.6":
        recipes = [Recipe.from_keep_fractions(signature, r, f) for r, f in KEEP_FRACTIONS.items()]
    else:
        recipes = [Recipe.from_keep_counts(signature, r, c) for r, c in KEEP_COUNTS.items()]
    RecipeBook(model=signature, recipes=tuple(recipes), provenance={"source": "tests"}).save(
        checkpoint / RECIPE_FILE_IN_CHECKPOINT)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{version: (original-layout dir, hf-layout dir converted from it)}."""
    made = {}
    for version, spec in SPECS.items():
        root = tmp_path_factory.mktemp(version)
        original = write_tiny_llava(root / f"llava-{version}-tiny", spec)
        _save_recipes(original, spec)
        hf = root / f"llava-{version[1:]}-tiny-hf"
        assert convert_main(["--to", "hf", str(original), str(hf), "--max-shard-size", SHARD_SIZE]) == 0
        made[version] = (original, hf)
    return made


@pytest.fixture(scope="module")
def loaded(checkpoints):
    """{version: ((tokenizer, model, processor) original, the same from the hf layout)}."""
    return {
        version: tuple(load_pretrained_model(str(path), None, path.name, device="cpu")[:3] for path in paths)
        for version, paths in checkpoints.items()
    }


@pytest.fixture()
def pair(loaded, request):
    """The (original, hf) pair of `version`; pruning is reset after the test."""
    yield loaded[request.param]
    for _, model, _ in loaded[request.param]:
        model.set_pruning()


PAIRS = pytest.mark.parametrize("pair", list(SPECS), indirect=True)


def _inputs(tokenizer, processor, config):
    """(ids, mask, images, image_sizes) of the four questions, left-padded, with images (mixed sizes for anyres)."""
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    if config.image_aspect_ratio != "anyres":
        return ids, mask, sample_images(processor, config, len(QUESTIONS)), None
    images = [picture(IMAGE_SIZES[b], seed=b) for b in range(len(QUESTIONS))]
    return ids, mask, process_images(images, processor, config), [image.size for image in images]


def _same_inputs(pair):
    """The inputs, checked to be identical whichever checkpoint's tokenizer and processor make them."""
    (tok_a, model_a, proc_a), (tok_b, model_b, proc_b) = pair
    a, b = _inputs(tok_a, proc_a, model_a.config), _inputs(tok_b, proc_b, model_b.config)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[3] == b[3]
    images_a, images_b = (x if isinstance(x, list) else [x] for x in (a[2], b[2]))
    assert all(torch.equal(x, y) for x, y in zip(images_a, images_b))
    return a


def _generate(model, ids, mask, images, sizes):
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=mask, images=images, image_sizes=sizes, do_sample=False,
                             max_new_tokens=6, use_cache=True)
    return [strip_pad(row.tolist()) for row in out[:, ids.shape[1]:]]


def _kept_sets(trace, batch):
    if trace is None:
        return None
    return [[trace.kept_indices(layer, b).tolist() for b in range(batch)] for layer in range(len(trace.counts()))]


# ----------------------------------------------------------------------------- tiny checkpoints


@VERSIONS
def test_converted_checkpoint_is_sharded_safetensors_in_the_hf_layout(checkpoints, version):
    _, hf = checkpoints[version]
    config = json.loads((hf / "config.json").read_text())
    index = json.loads((hf / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in hf.glob("model-*.safetensors"))
    assert len(shards) > 1 and sorted(set(index["weight_map"].values())) == shards
    assert config["model_type"] == ("llava_next" if version == "v1.6" else "llava")
    assert {"text_config", "vision_config", "image_token_index", "vision_feature_layer"} <= set(config)
    keys = set(index["weight_map"])
    assert "language_model.model.embed_tokens.weight" in keys and "multi_modal_projector.linear_2.bias" in keys
    assert any(k.startswith("vision_tower.vision_model.") for k in keys)
    assert ("image_newline" in keys) == (version == "v1.6")
    vocab = config["image_token_index"]
    embed = load_file(hf / index["weight_map"]["language_model.model.embed_tokens.weight"])
    assert embed["language_model.model.embed_tokens.weight"].shape[0] == config["vocab_size"] == 576 > vocab + 1
    hf_tokenizer = AutoTokenizer.from_pretrained(hf, use_fast=False)
    assert hf_tokenizer.convert_tokens_to_ids(["<image>", "<pad>"]) == [vocab, vocab + 1]


@PAIRS
def test_same_weights_and_logits_as_the_original(pair):
    (_, original, _), (_, hf, _) = pair
    assert hf.config.vocab_size == original.config.vocab_size
    theirs = dict(hf.named_parameters())
    assert sorted(theirs) == sorted(name for name, _ in original.named_parameters())
    assert all(torch.equal(param, theirs[name]) for name, param in original.named_parameters())
    ids, mask, images, sizes = _same_inputs(pair)
    with torch.no_grad():
        logits = [m(input_ids=ids, attention_mask=mask, images=images, image_sizes=sizes).logits
                  for m in (original, hf)]
    assert logits[0].dtype == torch.float32 and logits[0].shape == logits[1].shape
    assert (logits[0] - logits[1]).abs().max().item() <= 1e-5


@PAIRS
@pytest.mark.parametrize("ratio", RATIOS)
def test_same_greedy_answers_and_kept_sets(pair, ratio):
    ids, mask, images, sizes = _same_inputs(pair)
    results = []
    for _, model, _ in pair:
        model.config.reduction_ratio = ratio
        answers = _generate(model, ids, mask, images, sizes)
        results.append((answers, _kept_sets(model.last_pruning_trace, len(QUESTIONS))))
    assert results[0] == results[1]
    answers, kept = results[0]
    assert any(answers) and (kept is None) == (ratio == 0)
    if ratio:
        assert any(len(layer[0]) < len(kept[0][0]) or not layer[0] for layer in kept[1:])


@PAIRS
def test_prompts_give_the_original_token_ids_and_the_image_span(pair):
    (tok_a, _, _), (tok_b, model_b, _) = pair
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\nWhat is it?")
    conv.append_message(conv.roles[1], "A square.")
    conv.append_message(conv.roles[0], "And the colour?")
    conv.append_message(conv.roles[1], None)
    multi_turn = conv.get_prompt()
    assert "</s>" in multi_turn
    for prompt in (build_prompt(QUESTIONS[1]), multi_turn, "<image> twice <image>"):
        ids = tokenizer_image_token(prompt, tok_b)
        assert ids == tokenizer_image_token(prompt, tok_a)
        assert ids.count(IMAGE_TOKEN_INDEX) == prompt.count("<image>")
        assert max(ids) < model_b.config.vocab_size
    assert tok_b("ok</s>USER: hi").input_ids == tok_a("ok</s>USER: hi").input_ids
    assert len(tok_b) == model_b.config.vocab_size == model_b.get_input_embeddings().weight.shape[0]


def test_round_trip_to_original_gives_back_the_same_checkpoint(checkpoints, tmp_path):
    original, hf = checkpoints["v1.6"]
    back = tmp_path / "llava-v1.6-tiny-back"
    assert convert_main(["--to", "original", str(hf), str(back)]) == 0
    before = torch.load(original / "pytorch_model.bin", weights_only=True)
    after = torch.load(back / "pytorch_model.bin", weights_only=True)
    assert sorted(before) == sorted(after) and all(torch.equal(before[k], after[k]) for k in before)
    fields = json.loads((original / "config.json").read_text())
    written = json.loads((back / "config.json").read_text())
    # the converter adds the template it chose (the original's name guesses llava_v1) to each config.json
    assert written.pop(CONV_MODE_FIELD) == json.loads((hf / "config.json").read_text())[CONV_MODE_FIELD] == "llava_v1"
    assert set(written) <= set(fields)
    assert set(fields) - set(written) == TRAINING_ONLY_FIELDS
    assert {k for k in written if written[k] != fields[k]} == {"mm_vision_tower"}
    assert written["mm_vision_tower"] == "clip-vision-tower"
    assert (back / RECIPE_FILE_IN_CHECKPOINT).read_text() == (original / RECIPE_FILE_IN_CHECKPOINT).read_text()
    _, model, _, _ = load_pretrained_model(str(back), None, back.name, device="cpu")
    assert model.get_model().image_newline.shape == (SPECS["v1.6"].hidden_size,)


def test_v15_round_trip_keeps_the_tower_out_of_the_weights(checkpoints, tmp_path):
    original, hf = checkpoints["v1.5"]
    back = tmp_path / "llava-v1.5-tiny-back"
    assert convert_main(["--to", "original", str(hf), str(back)]) == 0
    before = torch.load(original / "pytorch_model.bin", weights_only=True)
    after = torch.load(back / "pytorch_model.bin", weights_only=True)
    assert sorted(before) == sorted(after) and all(torch.equal(before[k], after[k]) for k in before)
    tower = load_file(back / "clip-vision-tower" / "model.safetensors")
    original_tower = torch.load(original / "clip-vision-tower" / "pytorch_model.bin", weights_only=True)
    assert all(torch.equal(original_tower[k], tower[k]) for k in tower)


def _rewritten(hf, out, edit):
    """A copy of the hf checkpoint whose tensors (one model.safetensors) are `edit(tensors)`."""
    shutil.copytree(hf, out, ignore=shutil.ignore_patterns("model*.safetensors*"))
    tensors = {}
    for shard in sorted(hf.glob("model-*.safetensors")):
        tensors.update(load_file(shard))
    save_file(edit(tensors), out / "model.safetensors", metadata={"format": "pt"})
    return out


def test_newer_nested_key_names_load_the_same_weights(checkpoints, loaded, tmp_path):
    original, _ = checkpoints["v1.6"]
    nested = tmp_path / "llava-1.6-tiny-nested"
    assert convert_main(["--to", "hf", str(original), str(nested), "--key-style", "nested"]) == 0
    keys = load_file(nested / "model.safetensors").keys()
    assert "model.language_model.embed_tokens.weight" in keys and "lm_head.weight" in keys
    assert "model.image_newline" in keys and "model.multi_modal_projector.linear_1.weight" in keys
    _, model, _, _ = load_pretrained_model(str(nested), None, nested.name, device="cpu")
    reference = dict(loaded["v1.6"][0][1].named_parameters())
    assert all(torch.equal(param, reference[name]) for name, param in model.named_parameters())


@pytest.mark.parametrize("edit, message", [
    (lambda t: {**t, "language_model.model.extra.weight": torch.zeros(2)},
     "unknown key 'language_model.model.extra.weight'"),
    (lambda t: {k: v for k, v in t.items() if k != "multi_modal_projector.linear_2.bias"},
     "key 'multi_modal_projector.linear_2.bias' is missing"),
    (lambda t: {**t, "multi_modal_projector.linear_2.bias": torch.zeros(3)},
     "key 'multi_modal_projector.linear_2.bias' has shape [3], but this model's model.mm_projector.2.bias is [64]"),
])
def test_unknown_missing_or_misshapen_key_is_one_line_naming_it(checkpoints, tmp_path, edit, message):
    broken = _rewritten(checkpoints["v1.5"][1], tmp_path / "broken-hf", edit)
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(broken), None, broken.name, device="cpu")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(str(broken / "model.safetensors"))


def test_image_processing_follows_llava_by_default_and_the_checkpoint_when_asked(checkpoints, loaded):
    _, hf = checkpoints["v1.5"]
    (_, original, original_processor), (_, model, processor) = loaded["v1.5"]
    wide = picture((60, 20))
    assert model.config.image_aspect_ratio == "pad"
    padded = process_images([wide], processor, model.config)
    assert torch.equal(padded, process_images([wide], original_processor, original.config))
    _, as_checkpoint, own_processor, _ = load_pretrained_model(str(hf), None, hf.name, device="cpu",
                                                               image_processing="checkpoint")
    assert as_checkpoint.config.image_aspect_ratio == "square"
    cropped = process_images([wide], own_processor, as_checkpoint.config)
    assert torch.equal(cropped, own_processor.preprocess(wide, return_tensors="pt")["pixel_values"])
    assert cropped.shape == padded.shape and not torch.equal(cropped, padded)
    with pytest.raises(ValueError, match="image_processing 'resize' is not one of"):
        load_pretrained_model(str(hf), None, hf.name, device="cpu", image_processing="resize")


def test_hf_layout_refuses_a_model_base(checkpoints):
    original, hf = checkpoints["v1.5"]
    with pytest.raises(CheckpointError, match="holds every weight; load it without a model base"):
        load_pretrained_model(str(hf), str(original), hf.name, device="cpu")
    with pytest.raises(CheckpointError, match="is in the Hugging Face layout; convert it"):
        load_pretrained_model(str(original), str(hf), "llava-v1.5-tiny", device="cpu")


def test_eval_driver_and_run_llava_answer_the_same_from_either_layout(checkpoints, tmp_path):
    from types import SimpleNamespace

    from llava.eval import model_vqa_loader, run_llava

    folder = tmp_path / "images"
    folder.mkdir()
    picture((40, 30)).save(folder / "0.png")
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question_id": 0, "image": "0.png", "text": QUESTIONS[0]}) + "\n")
    answers = []
    for path in checkpoints["v1.5"]:
        out = tmp_path / f"{path.name}.jsonl"
        argv = ["--model-path", str(path), "--question-file", str(questions), "--image-folder", str(folder),
                "--answers-file", str(out), "--temperature", "0", "--conv-mode", "vicuna_v1", "--device", "cpu",
                "--max-new-tokens", "5", "--reduction-ratio", "60"]
        assert model_vqa_loader.main(argv) in (0, None)
        args = SimpleNamespace(model_path=str(path), model_base=None, image_file=str(folder / "0.png"),
                               query="What?", conv_mode="vicuna_v1", temperature=0.0, top_p=None, num_beams=1,
                               max_new_tokens=4, device="cpu", reduction_ratio=60, recipe=None)
        answers.append((json.loads(out.read_text())["text"], run_llava.eval_model(args)))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("argv, message", [
    (["--to", "hf", "{hf}", "{new}"], "is already in the Hugging Face layout"),
    (["--to", "original", "{original}", "{new}"], "is not in the Hugging Face layout"),
    (["--to", "hf", "{original}", "{hf}"], "exists and is not an empty directory"),
    (["--to", "hf", "{original}", "{new}", "--max-shard-size", "lots"], "argument --max-shard-size: 'lots'"),
    (["--to", "hf", "{missing}", "{new}"], "does not exist"),
])
def test_converter_bad_input_is_one_line_and_exit_2(checkpoints, tmp_path, capsys, argv, message):
    original, hf = checkpoints["v1.5"]
    paths = {"hf": hf, "original": original, "new": tmp_path / "new", "missing": tmp_path / "no" / "llava"}
    with pytest.raises(SystemExit) as exit_info:
        convert_main([a.format(**paths) for a in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("convert: error: ")
    assert message in err
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------- the published configs

CLIP_L_336 = {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096, "model_type": "clip_vision_model",
              "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768,
              "vocab_size": 32000}
# config.json of llava-hf/llava-1.5-7b-hf, -13b-hf and llava-v1.6-vicuna-7b-hf (text_config and vision_config
# list only what differs from LlamaConfig's and CLIPVisionConfig's defaults, as published)
LLAVA_HF_15_7B = {
    "architectures": ["LlavaForConditionalGeneration"], "ignore_index": -100, "image_token_index": 32000,
    "model_type": "llava", "pad_token_id": 32001, "projector_hidden_act": "gelu",
    "text_config": {"_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"],
                    "max_position_embeddings": 4096, "model_type": "llama", "rms_norm_eps": 1e-05,
                    "torch_dtype": "float16", "vocab_size": 32064},
    "tie_word_embeddings": False, "torch_dtype": "float16", "vision_config": CLIP_L_336,
    "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064,
}
LLAVA_HF_15_13B = {
    **LLAVA_HF_15_7B,
    "text_config": {"_name_or_path": "lmsys/vicuna-13b-v1.5", "architectures": ["LlamaForCausalLM"],
                    "hidden_size": 5120, "intermediate_size": 13824, "max_position_embeddings": 4096,
                    "model_type": "llama", "num_attention_heads": 40, "num_hidden_layers": 40,
                    "num_key_value_heads": 40, "pad_token_id": 0, "rms_norm_eps": 1e-05, "torch_dtype": "float16",
                    "vocab_size": 32064},
}
LLAVA_HF_16_VICUNA_7B = {
    **LLAVA_HF_15_7B, "architectures": ["LlavaNextForConditionalGeneration"], "model_type": "llava_next",
    "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    "text_config": {**LLAVA_HF_15_7B["text_config"], "pad_token_id": 0}, "use_image_newline_parameter": True,
}
PUBLISHED = {
    "llava-1.5-7b-hf": (LLAVA_HF_15_7B, LLAVA_V15_7B_CONFIG, dict(hidden=4096, ffn=11008, layers=32)),
    "llava-1.5-13b-hf": (LLAVA_HF_15_13B, LLAVA_V15_13B_CONFIG, dict(hidden=5120, ffn=13824, layers=40)),
    "llava-v1.6-vicuna-7b-hf": (LLAVA_HF_16_VICUNA_7B, LLAVA_V16_VICUNA_7B_CONFIG, dict(hidden=4096, ffn=11008,
                                                                                        layers=32)),
}


def published_hf_weight_map(hidden, ffn, layers, newline):
    """{key: shape} of a llava-hf checkpoint (classic names), written out from the published layout."""
    rows, vision = 32064, 1024
    shapes = {"language_model.model.embed_tokens.weight": (rows, hidden),
              "language_model.model.norm.weight": (hidden,), "language_model.lm_head.weight": (rows, hidden),
              "multi_modal_projector.linear_1.weight": (hidden, vision),
              "multi_modal_projector.linear_1.bias": (hidden,),
              "multi_modal_projector.linear_2.weight": (hidden, hidden),
              "multi_modal_projector.linear_2.bias": (hidden,)}
    for i in range(layers):
        layer = f"language_model.model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"{layer}self_attn.{proj}.weight"] = (hidden, hidden)
        for proj, shape in (("gate_proj", (ffn, hidden)), ("up_proj", (ffn, hidden)), ("down_proj", (hidden, ffn))):
            shapes[f"{layer}mlp.{proj}.weight"] = shape
        shapes[f"{layer}input_layernorm.weight"] = (hidden,)
        shapes[f"{layer}post_attention_layernorm.weight"] = (hidden,)
    shapes.update(clip_l_vision_weight_map(prefix="vision_tower.vision_model."))
    if newline:
        shapes["image_newline"] = (hidden,)
    return shapes


@pytest.fixture(scope="module")
def clip_l_336_dir(tmp_path_factory):
    """Config and preprocessor of openai/clip-vit-large-patch14-336 (what the original layout names)."""
    path = tmp_path_factory.mktemp("clip-vit-large-patch14-336")
    CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                     image_size=336, patch_size=14, projection_dim=768).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).save_pretrained(path)
    return path


def _original_parameters(fields, clip_dir, tmp_path):
    """{name: shape} of the parameters of the original-layout model, its vision tower loaded."""
    (tmp_path / "config.json").write_text(json.dumps({**fields, "mm_vision_tower": str(clip_dir)}))
    with torch.device("meta"):
        model = LlavaLlamaForCausalLM(AutoConfig.from_pretrained(tmp_path))
        tower = model.get_vision_tower()
        if not tower.is_loaded:
            tower.build_from_vision_config(tower.cfg_only)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_config_maps_every_weight_onto_the_original_model(name, clip_l_336_dir, tmp_path):
    hf_fields, original_fields, dims = PUBLISHED[name]
    config = llava_config_from_hf(HfCheckpoint(f"llava-hf/{name}", hf_fields))
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == tuple(dims.values())
    assert (config.vocab_size, config.mm_hidden_size, config.mm_vision_select_layer) == (32000, 1024, -2)
    assert config.mm_vision_select_feature == "patch" and config.mm_projector_type == "mlp2x_gelu"
    assert config.image_aspect_ratio == ("anyres" if "v1.6" in name else "pad")
    assert getattr(config, "image_grid_pinpoints", None) == hf_fields.get("image_grid_pinpoints")
    with torch.device("meta"):
        model = LlavaLlamaForCausalLM(config)
    assert model.get_model().num_visual_tokens() == 576
    hf_map = published_hf_weight_map(**dims, newline="v1.6" in name)
    mapped = {CLASSIC.to_ours(key): (32000,) + shape[1:] if CLASSIC.to_ours(key) in VOCAB_KEYS else shape
              for key, shape in hf_map.items()}
    assert len(mapped) == len(hf_map)
    expected = _original_parameters(original_fields, clip_l_336_dir, tmp_path)
    assert sorted(set(mapped) ^ set(expected)) == []
    assert mapped == expected
    assert {n: tuple(p.shape) for n, p in model.named_parameters()} == expected
    nested = {NESTED.to_hf(ours): hf_map[key] for key, ours in ((k, CLASSIC.to_ours(k)) for k in hf_map)}
    files = HfWeightFiles({key: "model.safetensors" for key in nested}, nested)
    state = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    assert set(plan_hf_names(files, state, expected, config.vocab_size).values()) == set(expected)


@pytest.mark.parametrize("name, shipped", [("llava-1.5-7b-hf", "llava-v1.5-7b.json"), ("llava-1.5-13b-hf", None),
                                           ("llava-v1.6-vicuna-7b-hf", "llava-v1.6-vicuna-7b.json")])
def test_shipped_recipes_are_found_by_signature(name, shipped):
    config = llava_config_from_hf(HfCheckpoint(f"llava-hf/{name}", PUBLISHED[name][0]))
    config.reduction_ratio = 60
    if shipped is None:
        with pytest.raises(ValueError, match=f"no FitPrune recipe for {name}"):
            find_recipe_file(config)
        return
    path = find_recipe_file(config)
    assert path == RECIPES_DIR / shipped
    book = RecipeBook.load(path)
    book.check_model(ModelSignature.from_config(config, 576))
    assert book.get(60.0).keep_counts[0] <= 576


def test_image_processing_flag_reaches_the_loader_of_every_entry_point(checkpoints, tmp_path, monkeypatch):
    from fitprune import calibrate, visualize
    from llava import cli_support
    from llava.eval import model_vqa_loader, run_llava
    from llava.model import builder

    _, hf = checkpoints["v1.5"]
    asked = []

    def recording(real):
        def load(*args, **kwargs):
            asked.append(kwargs.get("image_processing"))
            return real(*args, **kwargs)
        return load

    for module in (builder, cli_support):  # the driver and calibrate import the builder's at run time
        monkeypatch.setattr(module, "load_pretrained_model", recording(module.load_pretrained_model))
    folder = tmp_path / "images"
    folder.mkdir()
    picture((40, 30)).save(folder / "0.png")
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question_id": 0, "image": "0.png", "text": QUESTIONS[0]}) + "\n")
    common = ["--model-path", str(hf), "--device", "cpu", "--image-processing", "checkpoint"]
    assert model_vqa_loader.main(common + ["--question-file", str(questions), "--image-folder", str(folder),
                                           "--answers-file", str(tmp_path / "a.jsonl"), "--temperature", "0",
                                           "--max-new-tokens", "2"]) in (0, None)
    run_llava.main(common + ["--image-file", str(folder / "0.png"), "--query", "What?", "--temperature", "0",
                             "--max-new-tokens", "2"])
    assert calibrate.main(common + ["--question-file", str(questions), "--image-folder", str(folder),
                                    "--reduction-ratio", "30", "--output", str(tmp_path / "r.json")]) == 0
    assert visualize.main(common + ["--image", str(folder / "0.png"), "--question", "What?",
                                    "--reduction-ratio", "30", "--recipe", str(tmp_path / "r.json"),
                                    "--out", str(tmp_path / "kept.png")]) == 0
    assert asked == ["checkpoint"] * 4


@pytest.mark.parametrize("name", ["llava-1.5-7b-hf", "llava-1.5-13b-hf", "llava-v1.6-vicuna-7b-hf"])
def test_hf_checkpoint_names_pick_the_vicuna_v1_template(name):
    from llava.model.template_choice import auto_conv_mode

    assert auto_conv_mode(name) == "llava_v1"
