"""Recipes: JSON round trip, validation messages, budget parsing, atomic saves and the command line."""
import argparse
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from llava.model.pruning.flops import paper_reduction
from llava.model.pruning.recipe import SCHEMA_VERSION, ModelSignature, Recipe, RecipeBook, RecipeError
from llava.model.pruning.recipe_fields import FIT_PUBLISHED
from fitprune.published import import_published
from fitprune.recipe import main
from llava.model.pruning.ratio import parse_reduction_ratio
from llava.model.pruning.recipe_lookup import shipped_recipe_path

REPO_ROOT = Path(__file__).resolve().parents[1]

TINY_CONFIG = {
    "_name_or_path": "someone/tiny-llava",
    "num_hidden_layers": 4,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 50,
}


@pytest.fixture
def signature() -> ModelSignature:
    return ModelSignature.from_config(TINY_CONFIG, num_visual_tokens=10)


@pytest.fixture
def book(signature: ModelSignature) -> RecipeBook:
    recipes = (
        Recipe.from_keep_counts(signature, 30, [10, 8, 6, 6], alpha=0.25),
        Recipe.from_keep_counts(signature, 0, [10, 10, 10, 10], fit=FIT_PUBLISHED),
    )
    return RecipeBook(model=signature, recipes=recipes, provenance={"source": "test", "samples": [1, 2]})


@pytest.fixture
def saved(book: RecipeBook, tmp_path: Path) -> Path:
    path = tmp_path / "recipes.json"
    book.save(path)
    return path


def rewrite(path: Path, edit) -> Path:
    """Loads the JSON at path, applies edit(data) and writes it back."""
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def load_error(path: Path) -> str:
    """The message of the RecipeError that loading path raises."""
    with pytest.raises(RecipeError) as err:
        RecipeBook.load(path)
    return str(err.value)


def recipe_30(data: dict) -> dict:
    return next(r for r in data["recipes"] if r["reduction_ratio"] == 30)


def test_signature_from_config(signature: ModelSignature) -> None:
    assert signature.name == "tiny-llava"
    assert (signature.num_layers, signature.num_key_value_heads, signature.num_visual_tokens) == (4, 2, 10)
    assert ModelSignature.from_config({**TINY_CONFIG, "_name_or_path": ""}, 10).name == ""
    assert ModelSignature.from_config(TINY_CONFIG, 10, name="x").name == "x"
    assert signature.dims().kv_size == 8


def test_recipe_fields(book: RecipeBook, signature: ModelSignature) -> None:
    recipe = book.get(30)
    assert book.ratios() == (0.0, 30.0)
    assert recipe.deleted_per_layer == (0, 2, 2, 0)
    assert recipe.final_visual_tokens == 6
    assert recipe.achieved_paper == paper_reduction(signature.dims(), [10, 8, 6, 6], 10)
    assert 0 < recipe.achieved_full < recipe.achieved_paper
    assert book.get(30 + 1e-9) is recipe


def test_round_trip(book: RecipeBook, saved: Path) -> None:
    assert RecipeBook.load(saved) == book
    text = saved.read_text()
    assert text.endswith("\n")
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_wrong_schema_version(saved: Path) -> None:
    rewrite(saved, lambda d: d.update(schema_version=2))
    assert load_error(saved).startswith(f"{saved}: schema_version=2 is not supported (this code reads 1)")
    rewrite(saved, lambda d: d.pop("schema_version"))
    assert load_error(saved).startswith(f"{saved}: missing field 'schema_version'")


def test_layer_count_mismatch(saved: Path) -> None:
    rewrite(saved, lambda d: recipe_30(d).update(keep_counts=[10, 8, 6]))
    assert load_error(saved) == f"{saved}: recipe 30: 3 keep counts but model 'tiny-llava' has num_layers=4"


def test_rising_counts(saved: Path) -> None:
    rewrite(saved, lambda d: recipe_30(d).update(keep_counts=[10, 8, 9, 6]))
    assert load_error(saved) == (
        f"{saved}: recipe 30: keep_counts[2]=9 rises above keep_counts[1]=8 (keep counts must not increase)"
    )


def test_count_above_visual_tokens(saved: Path) -> None:
    rewrite(saved, lambda d: recipe_30(d).update(keep_counts=[11, 8, 6, 6]))
    assert load_error(saved) == f"{saved}: recipe 30: keep_counts[0]=11 is above num_visual_tokens=10"


def test_negative_count(saved: Path) -> None:
    rewrite(saved, lambda d: recipe_30(d).update(keep_counts=[10, 8, -1, -1]))
    assert load_error(saved) == f"{saved}: recipe 30: keep_counts[2]=-1 is negative"


def test_missing_fields(saved: Path) -> None:
    rewrite(saved, lambda d: recipe_30(d).pop("fit"))
    assert load_error(saved).startswith(f"{saved}: recipe 30: missing field 'fit'")
    rewrite(saved, lambda d: d["model"].pop("vocab_size"))
    assert load_error(saved).startswith(f"{saved}: model: missing field 'vocab_size'")
    rewrite(saved, lambda d: d.pop("recipes"))
    assert load_error(saved).startswith(f"{saved}: missing field 'recipes'")


def test_wrong_types(saved: Path) -> None:
    rewrite(saved, lambda d: recipe_30(d).update(alpha="high"))
    assert load_error(saved) == f"{saved}: recipe 30: field 'alpha' must be null or a number in [0, 1], got 'high'"
    rewrite(saved, lambda d: recipe_30(d).update(alpha=0.5, keep_counts=[10, 8.5, 6, 6]))
    assert load_error(saved).startswith(f"{saved}: recipe 30: keep_counts[1]=8.5 is not an int")


def test_invalid_json(saved: Path) -> None:
    saved.write_text('{\n "schema_version": 1,\n "model": {,\n}\n')
    assert load_error(saved).startswith(f"{saved}: invalid JSON at line 3, column 12")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="no such recipe file"):
        RecipeBook.load(tmp_path / "absent.json")


def test_get_missing_ratio(book: RecipeBook) -> None:
    with pytest.raises(RecipeError) as err:
        book.get(65)
    message = str(err.value)
    assert "available: 0, 30" in message
    assert "python -m fitprune.calibrate --model-path <path> --reduction-ratio 65 --output <file>" in message


def test_with_recipe(book: RecipeBook, signature: ModelSignature) -> None:
    new = book.with_recipe(Recipe.from_keep_counts(signature, 20, [10, 9, 8, 8]))
    assert new.ratios() == (0.0, 20.0, 30.0)
    assert book.ratios() == (0.0, 30.0)
    replaced = new.with_recipe(Recipe.from_keep_counts(signature, 30, [9, 7, 5, 5], alpha=0.5))
    assert replaced.ratios() == (0.0, 20.0, 30.0)
    assert replaced.get(30).alpha == 0.5


def test_duplicate_ratios_rejected(book: RecipeBook) -> None:
    with pytest.raises(RecipeError, match="recipe 30: two recipes for the same reduction ratio"):
        RecipeBook(model=book.model, recipes=book.recipes + (book.get(30),))


def test_check_model(book: RecipeBook, signature: ModelSignature) -> None:
    book.check_model(ModelSignature.from_config(TINY_CONFIG, 10, name="other-name"))
    bigger = ModelSignature.from_config({**TINY_CONFIG, "num_hidden_layers": 5}, 12)
    with pytest.raises(RecipeError) as err:
        book.check_model(bigger)
    assert "num_layers 4 (recipes) vs 5 (model)" in str(err.value)
    assert "num_visual_tokens 10 (recipes) vs 12 (model)" in str(err.value)


def test_from_keep_counts_checks_the_signature(signature: ModelSignature) -> None:
    with pytest.raises(RecipeError, match="recipe 40: 3 keep counts but model 'tiny-llava' has num_layers=4"):
        Recipe.from_keep_counts(signature, 40, [10, 8, 6])


@pytest.mark.parametrize(
    "value, expected",
    [(0, 0.0), ("0", 0.0), (0.6, 60.0), ("0.6", 60.0), (60, 60.0), ("60", 60.0), (1, 1.0), (99.5, 99.5)],
)
def test_parse_reduction_ratio(value, expected: float) -> None:
    assert parse_reduction_ratio(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", [-1, 100, "abc", math.nan, "nan", True, None])
def test_parse_reduction_ratio_rejects(value) -> None:
    with pytest.raises(ValueError) as err:
        parse_reduction_ratio(value)
    assert repr(value) in str(err.value)
    assert "[0, 100)" in str(err.value)


def test_parse_reduction_ratio_as_argparse_type(capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reduction-ratio", "--reduction_ratio", type=parse_reduction_ratio)
    assert parser.parse_args(["--reduction_ratio", "0.6"]).reduction_ratio == pytest.approx(60.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--reduction-ratio", "150"])
    assert "reduction ratio '150' is out of range" in capsys.readouterr().err


def test_interrupted_save_keeps_old_file(
    book: RecipeBook, saved: Path, signature: ModelSignature, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = saved.read_bytes()

    def dump_half_then_fail(obj, fp, **kwargs) -> None:
        text = json.dumps(obj, **kwargs)
        fp.write(text[: len(text) // 2])
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(json, "dump", dump_half_then_fail)
    newer = book.with_recipe(Recipe.from_keep_counts(signature, 50, [9, 6, 4, 2]))
    with pytest.raises(KeyboardInterrupt):
        newer.save(saved)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["recipes.json"]


def test_show_prints_every_ratio(saved: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["show", str(saved)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert [row[0] for row in rows if row and row[0] in {"0", "30"}] == ["0", "30"]
    assert "10 8 6 6" in out
    assert "paper %" in out and "full %" in out


def test_show_reports_invalid_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[")
    assert main(["show", str(bad)]) == 2
    assert f"{bad}: invalid JSON at line 1" in capsys.readouterr().err


def test_show_shipped_book_as_module() -> None:
    path = shipped_recipe_path("llava-v1.5-7b")
    result = subprocess.run(
        [sys.executable, "-m", "fitprune.recipe", "show", str(path)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )
    firsts = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    for ratio in ("0", "10", "20", "30", "40", "50", "55", "60", "70", "80", "90"):
        assert ratio in firsts


def test_import_published(tmp_path: Path) -> None:
    reference = tmp_path / "schemes.json"
    reference.write_text(json.dumps({
        "source": "a test schedule",
        "num_layers": 4,
        "num_visual_tokens": 10,
        "delete_per_layer": {"0": [0, 0, 0, 0], "40": [1, 3, 2, 0]},
    }))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_CONFIG))
    output = tmp_path / "book.json"
    assert main(["import-published", "--reference", str(reference), "--config", str(config),
                 "--output", str(output)]) == 0
    book = RecipeBook.load(output)
    assert book == import_published(reference, TINY_CONFIG)
    assert book.model.name == "tiny-llava"
    assert book.get(40).keep_counts == (9, 6, 4, 4)
    assert book.get(40).deleted_per_layer == (1, 3, 2, 0)
    assert book.get(40).fit == FIT_PUBLISHED and book.get(40).alpha is None
    assert book.provenance["source"] == "a test schedule"
    assert book.provenance["reference_sha256"] == hashlib.sha256(reference.read_bytes()).hexdigest()


def test_import_published_rejects_overdeletion(tmp_path: Path) -> None:
    reference = tmp_path / "schemes.json"
    reference.write_text(json.dumps({
        "source": "x", "num_layers": 4, "num_visual_tokens": 10, "delete_per_layer": {"90": [5, 5, 1, 0]},
    }))
    with pytest.raises(RecipeError) as err:
        import_published(reference, TINY_CONFIG)
    assert str(err.value) == f"{reference}: delete_per_layer['90'] deletes more than num_visual_tokens=10 by layer 2"


def test_shipped_recipe_path() -> None:
    path = shipped_recipe_path("llava-v1.5-7b")
    assert path is not None and path.name == "llava-v1.5-7b.json"
    assert shipped_recipe_path("LLaVA-v1.5-7B") == path
    assert shipped_recipe_path("liuhaotian/llava-v1.5-7b") == path
    assert shipped_recipe_path("no-such-model") is None
    RecipeBook.load(path).check_model(
        ModelSignature.from_config(json.loads((path.parent / "configs" / "llava-v1.5-7b.json").read_text()), 576)
    )


def test_show_plot_draws_the_shipped_book(tmp_path, capsys):
    from fitprune.recipe import main
    from llava.model.pruning.recipe_lookup import shipped_recipe_path

    png = tmp_path / "recipes.png"
    assert main(["show", str(shipped_recipe_path("llava-v1.5-7b")), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in capsys.readouterr().out


def _two_model_reference(tmp_path: Path) -> Path:
    reference = tmp_path / "two.json"
    reference.write_text(json.dumps({
        "source": "two test schedules",
        "absolute": {"num_visual_tokens": 16, "delete_per_layer": {"50": [2, 6, 4, 0, 1, 1, 0, 0]}},
        "fractional": {"num_visual_tokens_reference": 40, "delete_per_layer": {"40": [4, 8, 0, 8]}},
    }))
    return reference


# TINY_CONFIG with a 16 px CLIP of 4 px patches: 16 visual tokens per tower image
TOWER_CONFIG = {**TINY_CONFIG, "mm_vision_tower_config": {"image_size": 16, "patch_size": 4}}


def test_import_published_by_key_fractional_entry(tmp_path: Path) -> None:
    reference = _two_model_reference(tmp_path)
    output = tmp_path / "book.json"
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TOWER_CONFIG))
    assert main(["import-published", "--reference", str(reference), "--key", "fractional", "--config", str(config),
                 "--output", str(output)]) == 0
    book = RecipeBook.load(output)
    recipe = book.get(40)
    assert book.model.num_visual_tokens == 16 and book.provenance["reference_key"] == "fractional"
    assert recipe.keep_fractions == pytest.approx((36 / 40, 28 / 40, 28 / 40, 20 / 40))
    assert recipe.keep_counts == tuple(math.floor(f * 16 + 0.5) for f in (36 / 40, 28 / 40, 28 / 40, 20 / 40))
    # achieved at the reference's 40 tokens
    assert recipe.achieved_paper == pytest.approx(paper_reduction(book.model.dims(), [36, 28, 28, 20], 40))


def test_import_published_unknown_key_missing_tower_and_depth_are_one_line(tmp_path: Path) -> None:
    reference = _two_model_reference(tmp_path)
    with pytest.raises(RecipeError) as err:
        import_published(reference, TINY_CONFIG, key="nope")
    assert str(err.value) == f"{reference}: no model entry 'nope' (entries: absolute, fractional)"
    with pytest.raises(RecipeError) as err:
        import_published(reference, TINY_CONFIG, key="fractional")
    assert str(err.value).startswith(f"{reference}: fractional: the model's visual tokens per tower image are needed")
    with pytest.raises(RecipeError) as err:
        import_published(reference, TINY_CONFIG, key="absolute")
    assert str(err.value) == (f"{reference}: absolute: delete_per_layer['50']: recipe 50: 8 keep counts but model "
                              "'tiny-llava' has num_layers=4")


def test_import_published_resample_takes_block_means_onto_the_config(tmp_path: Path) -> None:
    reference = _two_model_reference(tmp_path)
    small = {**TOWER_CONFIG, "mm_vision_tower_config": {"image_size": 8, "patch_size": 4}}  # 4 visual tokens
    book = import_published(reference, small, key="absolute", resample=True)
    keep16 = [14, 8, 4, 4, 3, 2, 2, 2]  # 16 minus the cumulative deletions
    means = [(keep16[2 * i] + keep16[2 * i + 1]) / 2 / 16 for i in range(4)]
    assert book.get(50).keep_counts == tuple(math.floor(m * 4 + 0.5) for m in means)
    assert book.model.num_visual_tokens == 4 and "--resample" in book.provenance["tool"]
