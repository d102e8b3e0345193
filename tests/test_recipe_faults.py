"""Issue 12's recipe and calibration faults: labels that disagree with their counts (10), bad
calibrate flags (9), unencodable calibration text (4), recipe files of other provenance (12)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fitprune.calibrate import main as calibrate_main
from fitprune.recipe_merge import merge_provenance
from fitprune.defaults import DEFAULT_CALIBRATION_FILE, DEFAULT_MODEL_PATH
from fitprune.fit import TrialResult, fit_recipe
from llava.model.pruning.flops import paper_reduction
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT
from llava.model.pruning.recipe_lookup import RECIPES_DIR
from llava.model.pruning.recipe import ModelSignature, Recipe, RecipeBook, RecipeError
from fitprune.published import import_published

REPO = Path(__file__).resolve().parents[1]
DEMO = Path(__file__).parent / "data"
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
    assert book.recipes and all(book.paper_reduction_of(r) <= r.reduction_ratio + 1 for r in book.recipes)


def test_authors_published_v15_recipes_load_after_import(tmp_path):
    book = import_published(REFERENCE / "fitprune_llava15_7b_delete_schemes.json", json.loads(CONFIG_7B.read_text()))
    book.save(tmp_path / "published.json")
    loaded = RecipeBook.load(tmp_path / "published.json")
    assert loaded == book and len(loaded.recipes) == 11
    assert round(loaded.paper_reduction_of(loaded.get(10)), 2) == 6.44  # falls short of its label, as published


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


# ----------------------------------------------------------------------------- calibrate: fault 9


@pytest.mark.parametrize("flags, message", [
    (["--num-samples", "0"], "argument --num-samples: expected a positive integer, got '0'"),
    (["--num-samples", "-3"], "argument --num-samples: expected a positive integer, got '-3'"),
    (["--num-samples", "many"], "argument --num-samples: expected a positive integer, got 'many'"),
    (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["--reduction-ratio", "100"], "argument --reduction-ratio/--reduction_ratio: reduction ratio '100' is out of "
                                   "range; expected a percent in [0, 100) such as 60, or a fraction strictly between "
                                   "0 and 1 such as 0.6"),
    (["--reduction-ratio", "60", "0.6"], "argument --reduction-ratio/--reduction_ratio: budget 60 is given twice"),
])
def test_bad_numeric_calibrate_flag_is_one_line_naming_it(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        calibrate_main(flags)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"python -m fitprune.calibrate: error: {message}\n"


# ----------------------------------------------------------------------------- calibrate: faults 4 and 12


def _run(checkpoint: Path, *flags: str, questions: Path = DEMO / "calibration.jsonl") -> int:
    return calibrate_main(["--model-path", str(checkpoint), "--question-file", str(questions), "--image-folder",
                           str(DEMO), "--device", "cpu", "--num-samples", "3", *flags])


def test_unencodable_question_text_is_skipped_and_listed(tiny_checkpoint, tmp_path, capsys):
    lines = (DEMO / "calibration.jsonl").read_text().splitlines()[:3]
    bad = '{"question_id": "bad", "image": "shapes_0.png", "text": "What colour is \\udc80 it?"}'
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(lines[:1] + [bad] + lines[1:]) + "\n")
    output = tmp_path / "recipes.json"
    assert _run(tiny_checkpoint, "--output", str(output), "--reduction-ratio", "30", questions=questions) == 0
    message = (f"{questions}:2: field 'text': character 15 (U+DC80) cannot be encoded as UTF-8 "
               "(surrogates not allowed); the tokenizer cannot read it")
    errors = tmp_path / "recipes.errors.jsonl"
    rows = [json.loads(line) for line in errors.read_text().splitlines()]
    assert rows == [{"question_id": "bad", "round_id": None, "line": 2, "field": "text", "message": message}]
    assert (f"python -m fitprune.calibrate: skipped 1 sample(s) whose text cannot be encoded, listed in {errors} "
            f"(first: {message})\n") in capsys.readouterr().err
    provenance = RecipeBook.load(output).provenance
    assert (provenance["num_samples"], provenance["skipped_unencodable_text"]) == (3, 1)


@pytest.fixture
def checkpoint_copy(tiny_checkpoint, tmp_path) -> Path:
    """The tiny checkpoint with its recipe file (budget 50, provenance {"source": "tests"})."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "llava-v1.5-tiny"))


def test_default_output_of_other_provenance_is_not_replaced(checkpoint_copy, capsys):
    recipes = checkpoint_copy / RECIPE_FILE_IN_CHECKPOINT
    before = recipes.read_bytes()
    assert _run(checkpoint_copy, "--reduction-ratio", "30", "50") == 2
    assert capsys.readouterr().err == (
        f"python -m fitprune.calibrate: error: {recipes}: already holds recipe(s) for budget(s) 50 from another "
        "calibration (source 'tests' there, 'python -m fitprune.calibrate' now); pass --overwrite to replace the "
        "file, or --output for another file\n"
    )
    assert recipes.read_bytes() == before


def test_new_budgets_are_added_with_their_provenance_and_reruns_replace_them(checkpoint_copy, capsys):
    recipes = checkpoint_copy / RECIPE_FILE_IN_CHECKPOINT
    assert _run(checkpoint_copy, "--reduction-ratio", "30") == 0
    assert capsys.readouterr().out.endswith(f"recipes written to {recipes}: added 30; kept 50\n")
    book = RecipeBook.load(recipes)
    assert book.ratios() == (30.0, 50.0)
    (added,) = book.provenance.pop("added")
    assert book.provenance == {"source": "tests"}, "the file's own provenance still describes budget 50"
    assert (added["reduction_ratios"], added["num_samples"], added["seed"]) == ([30.0], 3, 0)

    before = recipes.read_bytes()
    assert _run(checkpoint_copy, "--reduction-ratio", "30") == 0, "the same calibration may refit its budget"
    assert capsys.readouterr().out.endswith(f"recipes in {recipes} left as they were: this calibration gave the "
                                            "recipes the file holds for 30\n")
    assert recipes.read_bytes() == before

    assert _run(checkpoint_copy, "--reduction-ratio", "30", "--seed", "1") == 2
    assert "budget(s) 30 from another calibration (seed 0 there, 1 now)" in capsys.readouterr().err
    assert recipes.read_bytes() == before


def test_overwrite_writes_a_new_file_with_this_runs_budgets(checkpoint_copy, capsys):
    recipes = checkpoint_copy / RECIPE_FILE_IN_CHECKPOINT
    assert _run(checkpoint_copy, "--reduction-ratio", "50", "--overwrite") == 0
    assert capsys.readouterr().out.endswith(f"recipes written to {recipes}: added 50\n")
    book = RecipeBook.load(recipes)
    assert book.ratios() == (50.0,) and book.provenance["source"] == "python -m fitprune.calibrate"
    assert "added" not in book.provenance


def test_plain_calibrate_does_not_rewrite_the_tracked_demo_recipes(tmp_path, monkeypatch, capsys):
    # a copy of the files the command reads before loading the model, so the tracked file cannot change
    for name in (f"{DEFAULT_MODEL_PATH}/config.json", f"{DEFAULT_MODEL_PATH}/{RECIPE_FILE_IN_CHECKPOINT}",
                 DEFAULT_CALIBRATION_FILE):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    recipes = Path(DEFAULT_MODEL_PATH) / RECIPE_FILE_IN_CHECKPOINT
    before = recipes.read_bytes()
    assert calibrate_main(["--num-samples", "8"]) == 2
    assert f"{recipes}: already holds recipe(s) for budget(s) 30, 50, 60, 70 from another calibration " \
           "(num_samples 128 there, 8 now)" in capsys.readouterr().err
    assert recipes.read_bytes() == before


def test_merged_provenance_keeps_each_budgets_calibration():
    first = {"source": "python -m fitprune.calibrate", "model_path": "m", "seed": 0, "wall_time_s": 1.0}
    other = {**first, "seed": 1, "wall_time_s": 2.0}
    book = merge_provenance(first, other, [30.0, 60.0])
    assert book == {**first, "added": [{**other, "reduction_ratios": [30.0, 60.0]}]}
    rerun = {**other, "model_path": "./m", "wall_time_s": 3.0}  # same calibration, path spelled otherwise
    book = merge_provenance(book, rerun, [60.0, 70.0])
    assert book == {**first, "added": [{**rerun, "reduction_ratios": [30.0, 60.0, 70.0]}]}
    refit = {**first, "wall_time_s": 4.0}
    assert merge_provenance(book, refit, [30.0, 60.0, 70.0]) == refit, "budgets return to the file's own calibration"
