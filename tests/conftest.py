"""Shared fixtures: the tiny LLaVA checkpoints (v1.5 and LLaVA-HR once per session, LLaVA-NeXT once per
module), loaded offline; drivers on the tiny model; a folder of run records."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from llava.model.pruning.recipe import ModelSignature, Recipe, RecipeBook  # noqa: E402
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT, shipped_recipe_path  # noqa: E402
from llava.model.builder import load_pretrained_model  # noqa: E402
from fitprune.lab.tiny_checkpoint import write_tiny_llava  # noqa: E402
from fitprune.lab.tiny_hr_checkpoint import write_tiny_hr  # noqa: E402
from fitprune.published import resampled_book  # noqa: E402
from llava.eval.driver import loop as driver_loop  # noqa: E402
from llava.eval.driver.model_loading import LoadedModel  # noqa: E402
from llava.eval.records import record_metric  # noqa: E402
from llava.pruning_flags import apply_pruning_args  # noqa: E402
from tests.checkpoint_copies import converted_to_hf  # noqa: E402
from tests.helpers import NEXT_NAME, NEXT_SPEC, QUESTIONS, TINY_KEEP_COUNTS, TINY_RECIPE_RATIO  # noqa: E402
from tests.records import PRUNED_KEEP, VISUAL, record_value, write_run  # noqa: E402

# tiny models are overhead-bound: one thread is faster, and steadier on a shared 2-core machine
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random llava-v1.5-layout checkpoint with a recipe file beside its weights."""
    path = write_tiny_llava(tmp_path_factory.mktemp("ckpt") / "llava-v1.5-tiny")
    tokenizer, model, _, _ = load_pretrained_model(str(path), None, "llava-v1.5-tiny", device="cpu")
    signature = ModelSignature.from_config(model.config, model.get_model().num_visual_tokens())
    recipe = Recipe.from_keep_counts(signature, TINY_RECIPE_RATIO, TINY_KEEP_COUNTS, fit="test")
    RecipeBook(model=signature, recipes=(recipe,), provenance={"source": "tests"}).save(
        path / RECIPE_FILE_IN_CHECKPOINT
    )
    return path


@pytest.fixture(scope="session")
def tiny_hr_checkpoint(tmp_path_factory) -> Path:
    """A tiny random LLaVA-HR checkpoint (64 visual tokens, 4 layers) with a recipe file beside its
    weights: the shipped LLaVA-HR-7B book (the authors' 40 and 60) resampled onto it (`resampled_book`)."""
    path = write_tiny_hr(tmp_path_factory.mktemp("ckpt_hr") / "llava-hr-tiny")
    config = json.loads((path / "config.json").read_text())
    shipped = RecipeBook.load(shipped_recipe_path("llava-hr-7b-sft-1024"))
    resampled_book(shipped, config, name="llava-hr-tiny").save(path / RECIPE_FILE_IN_CHECKPOINT)
    return path


@pytest.fixture(scope="session")
def _loaded_tiny(tiny_checkpoint):
    return load_pretrained_model(str(tiny_checkpoint), None, "llava-v1.5-tiny", device="cpu")


@pytest.fixture()
def tiny(_loaded_tiny):
    """(tokenizer, model, image_processor); pruning is switched off after each test (`set_pruning`)."""
    tokenizer, model, processor, _ = _loaded_tiny
    yield tokenizer, model, processor
    model.set_pruning()


@pytest.fixture(scope="module")
def hf_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint converted to the llava-hf layout, once per module."""
    return converted_to_hf(tiny_checkpoint, tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def next_checkpoint(tmp_path_factory) -> Path:
    """A tiny random LLaVA-NeXT (anyres) checkpoint, written once per module (tests add recipes to it)."""
    return write_tiny_llava(tmp_path_factory.mktemp("next") / NEXT_NAME, NEXT_SPEC)


@pytest.fixture(scope="module")
def _loaded_next(next_checkpoint):
    return load_pretrained_model(str(next_checkpoint), None, NEXT_NAME, device="cpu")


@pytest.fixture()
def next_model(_loaded_next):
    """(tokenizer, model, image_processor); pruning is switched off after each test (`set_pruning`)."""
    tokenizer, model, processor, _ = _loaded_next
    yield tokenizer, model, processor
    model.set_pruning()


@pytest.fixture()
def preloaded(tiny, monkeypatch):
    """Drivers get the session's tiny model instead of loading it again (pruning flags applied)."""
    tokenizer, model, processor = tiny
    loads = []

    def load(args):
        loads.append(args)
        apply_pruning_args(model, args)
        return LoadedModel(tokenizer, model, processor, "llava-v1.5-tiny")

    monkeypatch.setattr(driver_loop, "load_model", load)
    return loads


@pytest.fixture()
def vqa_data(tmp_path):
    """Five questions of different lengths on images of different sizes; ids int and str."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    lines = []
    for i in range(5):
        pixels = rng.integers(0, 256, size=(24 + 9 * i, 40 - 3 * i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        question_id = i * 10 if i % 2 else f"img{i}"
        lines.append({"question_id": question_id, "image": f"{i}.png", "text": QUESTIONS[i % len(QUESTIONS)] + "?" * i})
    question_file = tmp_path / "questions.jsonl"
    question_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return question_file, folder


@pytest.fixture()
def runs_dir(tmp_path):
    """textvqa at ratios 0 and 50 (both scored), pope at ratio 0 only (scored), gqa at 50 (unscored)."""
    runs = tmp_path / "eval"
    base = runs / "textvqa" / "answers" / "llava-v1.5-7b-r0.jsonl"
    pruned = runs / "textvqa" / "answers" / "llava-v1.5-7b-r50.jsonl"
    pope = runs / "pope" / "answers" / "llava-v1.5-7b-r0.jsonl"
    write_run(base, "textvqa", 0, [VISUAL] * 32)
    write_run(pruned, "textvqa", 50, PRUNED_KEEP)
    write_run(pope, "pope", 0, [VISUAL] * 32)
    write_run(runs / "gqa" / "answers" / "llava-v1.5-7b-r50.jsonl", "gqa", 50, PRUNED_KEEP)
    assert record_value(base, "Samples: 3\nAccuracy: 58.20%\n", "--metric", "accuracy", "--pattern",
                        r"Accuracy: ([0-9.]+)%") == 0
    assert record_metric.main(["--answers-file", str(pruned), "--metric", "accuracy",
                               "--value", "55.29"]) == 0
    pope_log = "F1 score: 0.8\nF1 score: 0.9\nF1 score: 0.85\nMean F1 over 3 categories: 0.850\n"
    assert record_value(pope, pope_log, "--pattern", r"F1 score: ([0-9.]+)", "--reduce", "mean",
                        "--scale", "100") == 0
    return runs


@pytest.fixture(autouse=True)
def _undo_disable_torch_init(monkeypatch):
    """The drivers call `disable_torch_init`, which patches torch for the whole process;
    put the initialisers back after each test so later tests build initialised models."""
    monkeypatch.setattr(torch.nn.Linear, "reset_parameters", torch.nn.Linear.reset_parameters)
    monkeypatch.setattr(torch.nn.LayerNorm, "reset_parameters", torch.nn.LayerNorm.reset_parameters)
