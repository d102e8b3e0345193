"""The command-line drivers on the tiny checkpoint: run_llava, serve/cli and the pruning flags."""
import builtins
import importlib.util
import re
from io import BytesIO

import numpy as np
import pytest
import torch
from PIL import Image

from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT
from llava.model.pruning.recipe import Recipe, RecipeBook
from llava.constants import IMAGE_TOKEN_INDEX
from llava.cli_support import load_image, select_conv_mode
from llava.eval import run_llava
from llava.mm_utils import tokenizer_image_token
from llava.serve import cli
from llava.model.template_choice import auto_conv_mode
from tests.helpers import TINY_RECIPE_RATIO, build_prompt

QUESTION = "What is in the picture?"
MAX_NEW_TOKENS = 6
OTHER_KEEP_COUNTS = (144, 100, 72, 41)
KEPT_LINE = re.compile(r"visual tokens kept after the last layer: (\d+) of (\d+)")


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    """A small non-square RGB PNG with seeded random pixels."""
    pixels = np.random.default_rng(7).integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("images") / "shapes.png"
    Image.fromarray(pixels).save(path)
    return path


def _run_llava_argv(checkpoint, image, *extra):
    return [
        "--model-path", str(checkpoint), "--image-file", str(image), "--query", QUESTION,
        "--device", "cpu", "--temperature", "0", "--max-new-tokens", str(MAX_NEW_TOKENS), *extra,
    ]


def test_eval_model_greedy_matches_a_manual_generate(tiny_checkpoint, tiny, image_file, capsys):
    args = run_llava.build_parser().parse_args(_run_llava_argv(tiny_checkpoint, image_file))
    answer = run_llava.eval_model(args)

    tokenizer, model, processor = tiny
    prompt = build_prompt(QUESTION, conv_mode="llava_v1")  # auto-picked for "llava-v1.5-tiny"
    ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    pixels = processor.preprocess(Image.open(image_file).convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = model.generate(ids, images=pixels, do_sample=False, max_new_tokens=MAX_NEW_TOKENS, use_cache=True)
    expected = tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)[0].strip()

    assert expected, "the tiny model answered nothing; the comparison would be vacuous"
    assert answer == expected
    captured = capsys.readouterr()
    assert captured.out == answer + "\n"
    assert not KEPT_LINE.search(captured.err), "no pruning line when pruning is off"


@pytest.mark.parametrize("explicit_recipe", [False, True], ids=["recipe-in-checkpoint", "recipe-flag"])
def test_run_llava_with_pruning_keeps_the_recipe_count(tiny_checkpoint, image_file, tmp_path, capsys,
                                                       explicit_recipe):
    recipe_file = tiny_checkpoint / RECIPE_FILE_IN_CHECKPOINT
    extra = ["--reduction-ratio", "50"]
    if explicit_recipe:  # a different schedule, so the count shows which file was used
        book = RecipeBook.load(recipe_file)
        other = Recipe.from_keep_counts(book.model, TINY_RECIPE_RATIO, OTHER_KEEP_COUNTS, fit="test")
        recipe_file = tmp_path / "recipes.json"
        book.with_recipe(other).save(recipe_file)
        extra += ["--recipe", str(recipe_file)]
    recipe = RecipeBook.load(recipe_file).get(50.0)
    assert (recipe.keep_counts == OTHER_KEEP_COUNTS) == explicit_recipe

    answer = run_llava.main(_run_llava_argv(tiny_checkpoint, image_file, *extra))

    err = capsys.readouterr().err
    match = KEPT_LINE.search(err)
    assert match, f"no kept-token line on stderr: {err!r}"
    assert int(match.group(1)) == recipe.keep_counts[-1]
    assert int(match.group(2)) == recipe.num_visual_tokens
    assert isinstance(answer, str)


def test_run_llava_missing_image_exits_2_naming_the_file(tiny_checkpoint, tmp_path, capsys):
    missing = tmp_path / "no-such-image.jpg"
    with pytest.raises(SystemExit) as exit_info:
        run_llava.main(_run_llava_argv(tiny_checkpoint, missing))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert str(missing) in err
    assert len(err.splitlines()) == 1


def test_run_llava_unknown_ratio_exits_2_listing_the_available_ones(tiny_checkpoint, image_file, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_llava.main(_run_llava_argv(tiny_checkpoint, image_file, "--reduction-ratio", "30"))
    assert exit_info.value.code == 2
    assert f"available: {TINY_RECIPE_RATIO:g}" in capsys.readouterr().err


@pytest.mark.parametrize("module", [run_llava, cli], ids=["run_llava", "cli"])
def test_both_ratio_spellings_parse_to_the_same_percent(module):
    base = ["--model-path", "m", "--image-file", "i.png"] + (["--query", "q"] if module is run_llava else [])
    parser = module.build_parser()
    underscore = parser.parse_args(base + ["--reduction_ratio", "0.5"])
    dash = parser.parse_args(base + ["--reduction-ratio", "50"])
    assert underscore.reduction_ratio == dash.reduction_ratio == 50.0
    assert parser.parse_args(base).reduction_ratio == 0
    assert parser.parse_args(base + ["--recipe", "r.json"]).recipe == "r.json"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(base + ["--reduction-ratio", "120"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    "name, mode",
    [("llava-v1.5-7b", "llava_v1"), ("llava-llama-2-13b-chat", "llava_llama_2"), ("llava-mpt-7b", "mpt"),
     ("LLaVA-Lightning-7B", "llava_v0"), ("llava-hr-7b-sft-1024", "vicuna_v1")],
)
def test_conv_mode_auto_pick(name, mode):
    assert auto_conv_mode(name) == mode


def test_conv_mode_override_warns_only_when_it_differs(capsys):
    assert select_conv_mode("llava-v1.5-7b", None) == "llava_v1"
    assert select_conv_mode("llava-v1.5-7b", "llava_v1") == "llava_v1"
    assert capsys.readouterr().err == (
        "conversation template: llava_v1 (guessed from the model name 'llava-v1.5-7b')\n"
        "conversation template: llava_v1 (--conv-mode, the same as guessed from the model name 'llava-v1.5-7b')\n")
    assert select_conv_mode("llava-v1.5-7b", "vicuna_v1") == "vicuna_v1"
    err = capsys.readouterr().err
    assert "WARNING" in err and "llava_v1" in err and "vicuna_v1" in err


def test_load_image_from_url_is_rgb(monkeypatch, image_file):
    import requests

    buffer = BytesIO()
    Image.open(image_file).convert("L").save(buffer, format="PNG")

    class Response:
        content = buffer.getvalue()

        def raise_for_status(self):
            pass

    requested = []
    monkeypatch.setattr(requests, "get", lambda url, timeout: requested.append(url) or Response())
    image = load_image("https://example.com/shapes.png")
    assert requested == ["https://example.com/shapes.png"]
    assert image.mode == "RGB" and image.size == (60, 40)


def test_serve_cli_one_turn_then_eof(tiny_checkpoint, image_file, monkeypatch, capsys):
    turns = iter(["Describe the image."])
    prompts = []

    def fake_input(prompt=""):
        prompts.append(prompt)
        try:
            return next(turns)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr(builtins, "input", fake_input)
    conv = cli.main([
        "--model-path", str(tiny_checkpoint), "--image-file", str(image_file), "--device", "cpu",
        "--temperature", "0", "--max-new-tokens", str(MAX_NEW_TOKENS),
    ])

    assert prompts == ["USER: ", "USER: "]
    assert [role for role, _ in conv.messages] == ["USER", "ASSISTANT"]
    assert conv.messages[0][1] == "<image>\nDescribe the image."
    reply = conv.messages[1][1]
    assert reply and reply.removesuffix("</s>").strip()
    out = capsys.readouterr().out
    assert out.startswith("ASSISTANT: ")
    assert reply.removesuffix("</s>").strip() in out
    assert out.rstrip().endswith("exit...")


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_cli_load_8bit_without_bitsandbytes_is_one_line_exit_2(tiny_checkpoint, image_file, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--model-path", str(tiny_checkpoint), "--image-file", str(image_file), "--device", "cpu",
                  "--load-8bit"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(": error: load_8bit/load_4bit need the bitsandbytes package: pip install bitsandbytes")
    assert not any("Traceback" in line for line in err)
