"""Shared fixtures: a tiny LLaVA checkpoint written once per session, loaded offline."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from llava.model.pruning.recipe import ModelSignature, Recipe, RecipeBook  # noqa: E402
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT, shipped_recipe_path  # noqa: E402
from llava.model.builder import load_pretrained_model  # noqa: E402
from fitprune.lab.tiny_checkpoint import write_tiny_llava  # noqa: E402
from fitprune.lab.tiny_hr_checkpoint import write_tiny_hr  # noqa: E402
from fitprune.published import resampled_book  # noqa: E402

# tiny models are overhead-bound: one thread is faster, and steadier on a shared 2-core machine
torch.set_num_threads(1)

TINY_RECIPE_RATIO = 50.0
# visual tokens left after each of the tiny model's 4 layers (it has 144)
TINY_KEEP_COUNTS = (144, 97, 61, 30)


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


@pytest.fixture(autouse=True)
def _undo_disable_torch_init(monkeypatch):
    """The drivers call `disable_torch_init`, which patches torch for the whole process;
    put the initialisers back after each test so later tests build initialised models."""
    monkeypatch.setattr(torch.nn.Linear, "reset_parameters", torch.nn.Linear.reset_parameters)
    monkeypatch.setattr(torch.nn.LayerNorm, "reset_parameters", torch.nn.LayerNorm.reset_parameters)
