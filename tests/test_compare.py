"""`python -m fitprune.bench --all-methods`: every method at matched FLOPs and at the literature's token rows,
the schema-2 JSON, and the keep counts each method's paper states for a token row."""
import json

import pytest

from fitprune.lab.compare import main, section_heading
from fitprune.lab.compare_report import QUALITY_SCHEMA_VERSION, write_quality_json
from fitprune.lab.method_runs import Budget, _token_row_counts, equivalent_ratio, nearest_ratio
from fitprune.defaults import DEMO_MODEL_PATH
from llava.model.language_model.llava_llama import LlavaConfig
from llava.model.pruning.budget import before_layer_reduction
from llava.model.pruning.flops import DecoderDims, paper_reduction
from llava.model.pruning.recipe import RecipeBook


@pytest.fixture(scope="module")
def shapes_dims():
    return DecoderDims.from_config(LlavaConfig.from_pretrained(DEMO_MODEL_PATH))


def test_token_rows_follow_each_paper(shapes_dims):
    assert Budget(tokens=64).scaled_tokens(144) == 16 and Budget(tokens=192).scaled_tokens(576) == 192
    counts, _, _ = _token_row_counts("divprune", shapes_dims, 144, 16)
    assert counts == (16,) * 8
    counts, _, _ = _token_row_counts("fastv", shapes_dims, 144, 16)
    assert counts == (144,) + (16,) * 7  # dropped after layer K-1 = 1's attention
    counts, _, _ = _token_row_counts("dart", shapes_dims, 144, 16)
    assert counts == (144,) + (16,) * 7  # before layer 2 of 32 scaled to 8 layers: layer 1
    # SparseVLM's released 64-token counts 66/30/17 of 576 at layers 2/6/15 of 32 -> layers 1/2/4 of 8
    for name in ("sparsevlm-drop", "sparsevlm"):  # with and without recycling: the same released counts
        counts, text, policy = _token_row_counts(name, shapes_dims, 144, 16)
        assert counts == (144, 16, 8, 8, 4, 4, 4, 4) and text == "16/8/4 after layers 1/2/4" and policy.name == name
    ratio = equivalent_ratio(shapes_dims, 144, 16)
    assert ratio <= before_layer_reduction(shapes_dims, [16] * 8, 144) < ratio + 0.01


def test_a_token_row_without_its_recipe_takes_the_nearest():
    book = RecipeBook.load(f"{DEMO_MODEL_PATH}/fitprune_recipes.json")
    assert nearest_ratio(book, 70.0) == 70.0 and nearest_ratio(book, 73.6) == 70.0
    assert nearest_ratio(book, 75.0) == 80.0 and nearest_ratio(book, 99.0) == 90.0


def test_compare_writes_schema_2_and_keeps_other_models(tmp_path, shapes_dims, monkeypatch):
    quality = tmp_path / "q.json"
    write_quality_json(quality, "other-model", {"methods": {}})
    output = tmp_path / "B.md"
    assert main(["--model", "shapes", "--limit", "6", "--reduction-ratio", "90", "--tokens", "64", "--methods",
                 "fitprune", "fastv", "divprune", "recipe+divprune", "random", "--output", str(output), "--plot",
                 str(tmp_path / "p.png"), "--json", str(quality)]) == 0
    data = json.loads(quality.read_text())
    assert data["schema_version"] == QUALITY_SCHEMA_VERSION == 2 and set(data["models"]) == {"other-model",
                                                                                            "llava-v1.5-shapes"}
    methods = data["models"]["llava-v1.5-shapes"]["methods"]
    assert set(methods) == {"fitprune", "fastv", "divprune", "recipe+divprune", "random"}
    recipe = RecipeBook.load(f"{DEMO_MODEL_PATH}/fitprune_recipes.json").get(90)
    fitprune, randomly = methods["fitprune"]["90%"], methods["random"]["90%"]
    assert fitprune["visual_tokens_leaving"] == list(map(float, recipe.keep_counts))
    assert fitprune["flops_removed_paper"] == round(paper_reduction(shapes_dims, list(recipe.keep_counts), 144), 2)
    assert "difference_vs_fitprune" not in fitprune
    # a recipe variant enters and leaves every layer as FitPrune does: the same FLOPs
    variant = methods["recipe+divprune"]["90%"]
    for field in ("visual_tokens_entering", "visual_tokens_leaving", "flops_removed_paper", "flops_removed_full"):
        assert variant[field] == fitprune[field]
    assert randomly["difference_vs_fitprune"] == pytest.approx(randomly["accuracy"] - fitprune["accuracy"], abs=0.02)
    low, high = randomly["difference_ci95"]
    assert low <= randomly["difference_vs_fitprune"] <= high and randomly["total"] == 6
    divprune = methods["divprune"]["64 tokens"]
    assert divprune["visual_tokens_entering"] == [16.0] * 8
    assert divprune["flops_removed_paper"] == round(before_layer_reduction(shapes_dims, [16] * 8, 144), 2)
    assert divprune["flops_removed_full"] < divprune["flops_removed_paper"]
    assert methods["fastv"]["64 tokens"]["visual_tokens_entering"][:3] == [144.0, 144.0, 16.0]
    text = output.read_text()
    assert section_heading("llava-v1.5-shapes") in text and "| DivPrune |" in text
    assert (tmp_path / "p.png").stat().st_size > 0
    # the section is drawn from the JSON alone
    redrawn = tmp_path / "again.md"
    assert main(["--model", "shapes", "--render-only", "--json", str(quality), "--output", str(redrawn), "--plot",
                 str(tmp_path / "p.png")]) == 0
    assert redrawn.read_text() == text
    # an empty --plot draws nothing and links nothing (it once drew the default PNG)
    monkeypatch.chdir(tmp_path)
    bare = tmp_path / "bare.md"
    assert main(["--model", "shapes", "--render-only", "--json", str(quality), "--output", str(bare), "--plot", ""]) == 0
    assert "![" not in bare.read_text() and not (tmp_path / "benchmarks").exists()


def test_the_bench_hands_all_methods_to_the_comparison(capsys):
    from fitprune.lab.bench import main as bench_main

    with pytest.raises(SystemExit) as exit_info:
        bench_main(["--all-methods", "--model", "nonesuch"])
    assert exit_info.value.code == 2
    assert "python -m fitprune.bench --all-methods: error: argument --model: invalid choice" in capsys.readouterr().err
