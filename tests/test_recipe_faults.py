"""Issue 12's recipe and calibration faults: labels that disagree with their counts (10), bad
calibrate flags (9), unencodable calibration text (4), recipe files of other provenance (12)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fitprune.fit import TrialResult, fit_recipe
from fitprune.flops import paper_reduction
from fitprune.recipe import RECIPES_DIR, ModelSignature, Recipe, RecipeBook, RecipeError, import_published

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"
CONFIG_7B = RECIPES_DIR / "configs" / "llava-v1.5-7b.json"
TINY_DIMS = {"num_hidden_layers": 4, "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 50}


@pytest.fixture
def signature() -> ModelSignature:
    return ModelSignature.from_config(TINY_DIMS, num_visual_tokens=10, name="tiny")


def _saved(tmp_path: Path, signature: ModelSignature, *recipes: Recipe) -> Path:
    path = tmp_path / "recipes.json"
    RecipeBook(model=signature, recipes=recipes, provenance={"source": "tests"}).save(path)
    return path


def _load_error(path: Path) -> str:
    with pytest.raises(RecipeError) as err:
        RecipeBook.load(path)
    return str(err.value)


# ----------------------------------------------------------------------------- fault 10


def test_counts_that_remove_far_more_than_the_label_are_refused(signature, tmp_path):
    # keep nothing after layer 0: 90.56% removed, labelled 60
    path = _saved(tmp_path, signature, Recipe.from_keep_counts(signature, 60, [0, 0, 0, 0]))
    assert _load_error(path) == (
        f"{path}: recipe 60: its keep counts remove 90.56% of FLOPs (paper convention) but its label "
        "says 60% (more than 1 point over)"
    )


def test_counts_edited_behind_their_achieved_figure_are_refused(signature, tmp_path):
    path = _saved(tmp_path, signature, Recipe.from_keep_counts(signature, 60, [10, 8, 6, 6]))  # removes 22.33%
    data = json.loads(path.read_text())
    data["recipes"][0]["keep_counts"] = [10, 10, 10, 10]
    path.write_text(json.dumps(data))
    assert _load_error(path) == (
        f"{path}: recipe 60: its keep counts remove 0.00% of FLOPs (paper convention) but its "
        "achieved_paper says 22.33%"
    )


def test_a_point_over_the_label_is_accepted_and_more_is_not(signature, tmp_path):
    counts = [4, 4, 4, 4]  # removes 56.33%
    assert paper_reduction(signature.dims(), counts, 10) == pytest.approx(56.3333333)
    assert RecipeBook.load(_saved(tmp_path, signature, Recipe.from_keep_counts(signature, 55.34, counts)))
    path = _saved(tmp_path, signature, Recipe.from_keep_counts(signature, 55.33, counts))
    assert "remove 56.33% of FLOPs (paper convention) but its label says 55.33%" in _load_error(path)


def test_fractional_recipe_over_its_label_is_refused(signature, tmp_path):
    recipe = Recipe.from_keep_fractions(signature, 40, [0.0, 0.0, 0.0, 0.0], visual_counts=[10, 30])
    path = _saved(tmp_path, signature, recipe)
    assert _load_error(path) == (
        f"{path}: recipe 40: its keep counts remove 90.56% of FLOPs (paper convention) but its label "
        "says 40% (more than 1 point over)"
    )


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.glob("*.json")) + sorted(REPO.glob("playground/models/*/"
                                                                                        "fitprune_recipes.json")),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_recipe_files_load(path):
    book = RecipeBook.load(path)
    assert book.recipes and all(book.removed_paper(r) <= r.reduction_ratio + 1 for r in book.recipes)


def test_authors_published_v15_recipes_load_after_import(tmp_path):
    book = import_published(REFERENCE / "fitprune_llava15_7b_delete_schemes.json", json.loads(CONFIG_7B.read_text()))
    book.save(tmp_path / "published.json")
    loaded = RecipeBook.load(tmp_path / "published.json")
    assert loaded == book and len(loaded.recipes) == 11
    assert round(loaded.removed_paper(loaded.get(10)), 2) == 6.44  # falls short of its label, as published


def test_authors_published_next_and_hr_recipes_load(tmp_path):
    schemes = json.loads((REFERENCE / "fitprune_next_hr_delete_schemes.json").read_text())
    config = json.loads(CONFIG_7B.read_text())
    hr, nxt = schemes["llava_hr_7b"], schemes["llava_next_7b"]
    hr_signature = ModelSignature.from_config(config, hr["num_visual_tokens"], name="llava-hr-7b")
    hr_recipes = [Recipe.from_keep_counts(hr_signature, float(ratio), hr["num_visual_tokens"] - np.cumsum(deleted),
                                          fit="published") for ratio, deleted in hr["delete_per_layer"].items()]
    next_signature = ModelSignature.from_config(config, 576, name="llava-v1.6-7b")
    total = nxt["num_visual_tokens_reference"]
    next_recipes = [Recipe.from_keep_fractions(next_signature, float(ratio), (total - np.cumsum(deleted)) / total,
                                               visual_counts=[total], fit="published")
                    for ratio, deleted in nxt["delete_per_layer"].items()]
    for name, signature, recipes in (("hr", hr_signature, hr_recipes), ("next", next_signature, next_recipes)):
        path = tmp_path / f"{name}.json"
        RecipeBook(model=signature, recipes=tuple(recipes)).save(path)
        assert RecipeBook.load(path).ratios() == (40.0, 60.0)


def test_calibration_refuses_a_budget_it_can_only_overshoot():
    # 2 visual tokens, 1 layer: deleting one removes 34.15%, so a 10% budget has no recipe within a point
    signature = ModelSignature.from_config({**TINY_DIMS, "num_hidden_layers": 1}, num_visual_tokens=2, name="t")
    walk = lambda alpha: TrialResult(alpha, True, torch.tensor([1.0], dtype=torch.float64), 1)  # noqa: E731
    with pytest.raises(ValueError) as err:
        fit_recipe(walk, signature, 10)
    assert str(err.value) == (
        "cannot be met within 1 point with this model's 2 visual tokens and 1 layer (recipe 10: its keep counts "
        "remove 34.15% of FLOPs (paper convention) but its label says 10% (more than 1 point over))"
    )
    assert fit_recipe(walk, signature, 33.5)[0].keep_counts == (1,)
