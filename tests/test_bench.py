"""`python -m fitprune.bench` on the shipped demo model: matched schedules and the written section."""
import pytest

import json

from fitprune.lab.answers import wilson_interval
from fitprune.lab.bench import main
from fitprune.lab.bench_methods import baselines_for
from fitprune.lab.bench_report import section_heading
from fitprune.lab.benchmarks_file import write_section
from fitprune.defaults import DEMO_MODEL_PATH, SHAPES_CALIBRATION_FILE, SHAPES_DIR, SHAPES_TEST_FILE
from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.recipe import RecipeBook
from llava.model.language_model.llava_llama import LlavaConfig

RECIPES = f"{DEMO_MODEL_PATH}/fitprune_recipes.json"
SECTION_HEADING = section_heading("llava-v1.5-shapes")
SCENES_MODEL = "playground/models/llava-v1.5-scenes"


def test_peers_remove_at_least_what_fitprune_removes():
    config = LlavaConfig.from_pretrained(DEMO_MODEL_PATH)
    dims = DecoderDims.from_config(config)
    book = RecipeBook.load(RECIPES)
    for ratio in book.ratios():
        schedules = baselines_for(book, ratio, dims, 144)
        fitprune = schedules["fitprune"]
        assert schedules["random"].keep_counts == fitprune.keep_counts
        for method in ("fastv", "uniform"):
            if method in schedules:
                assert schedules[method].paper_reduction >= fitprune.paper_reduction - 1e-9, (ratio, method)
    assert set(baselines_for(book, 0.0, dims, 144)) == {"fitprune", "fastv", "random", "uniform"}


def test_bench_writes_its_section_and_keeps_the_others(tmp_path, capsys):
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\n## Prefill speed\n\nkept\n")
    assert main(["--model-path", DEMO_MODEL_PATH, "--question-file", SHAPES_TEST_FILE, "--calibration-file",
                 SHAPES_CALIBRATION_FILE, "--image-folder", SHAPES_DIR, "--recipe", RECIPES, "--reduction-ratio", "0", "60", "--limit", "30", "--repeats", "1", "--probe-depths",
                 "--output", str(output), "--plot", str(tmp_path / "quality.png"), "--json", ""]) == 0
    text = output.read_text()
    assert "## Prefill speed\n\nkept\n" in text and text.count(SECTION_HEADING) == 1
    accuracy_rows = [line for line in text.splitlines() if line.startswith(("| 0 | 0.0 |", "| 60 | 60."))]
    assert len(accuracy_rows) == 2 and "oracle" not in text  # the shapes questions name no cells
    assert [line.split(" | ")[1] for line in text.splitlines() if line.startswith("| 60 | ")][1:5] == [
        "fitprune", "fastv", "random", "uniform"]  # the per-kind table
    assert (tmp_path / "quality.png").stat().st_size > 0 and not (tmp_path / "pruning_quality.json").exists()
    write_section(output, SECTION_HEADING, f"{SECTION_HEADING}\n\nreplaced\n")
    assert output.read_text().count(SECTION_HEADING) == 1 and "replaced" in output.read_text()


def test_wilson_interval_matches_known_values():
    assert [round(v, 2) for v in wilson_interval(0, 10)] == [0.0, 27.75]
    assert [round(v, 2) for v in wilson_interval(8, 10)] == [49.02, 94.33]
    low, high = wilson_interval(540, 640)
    assert low < 100 * 540 / 640 < high and round(high - low, 1) == 5.6


def test_bench_on_the_scenes_adds_the_oracle_and_writes_the_json(tmp_path):
    quality = tmp_path / "pruning_quality.json"
    assert main(["--model-path", SCENES_MODEL, "--recipe", f"{SCENES_MODEL}/fitprune_recipes.json",
                 "--question-file", "playground/scenes/test.jsonl", "--calibration-file",
                 "playground/scenes/calibration.jsonl", "--image-folder", "playground/scenes", "--reduction-ratio", "0", "90",
                 "--limit", "40", "--repeats", "1", "--probe-depths", "1", "--probe-keeps", "0",
                 "--output", str(tmp_path / "B.md"), "--plot", "", "--json", str(quality)]) == 0
    data = json.loads(quality.read_text())
    assert data["schema_version"] == 1 and data["questions"] == 40
    assert set(data["policies"]) == {"fitprune", "fastv", "random", "uniform", "oracle"}
    assert data["policies"]["oracle"]["90"]["keep_counts"] == data["policies"]["fitprune"]["90"]["keep_counts"]
    assert data["policies"]["random"]["0"]["accuracy"] == data["unpruned"]["accuracy"]
    for entry in [data["unpruned"], *(p["90"] for p in data["policies"].values())]:
        low, high = entry["ci95"]
        assert low <= entry["accuracy"] <= high and entry["total"] == 40
        assert set(entry["per_kind"]) == {"attribute", "count", "presence", "relation", "small"}
    # no visual token after layer 0: the depth probe's (d=1, k=0) row is the same run by another path
    text = (tmp_path / "B.md").read_text()
    probe_row = next(line for line in text.splitlines() if line.startswith("| 1 | 0 |"))
    assert float(probe_row.split(" | ")[2]) == round(data["no_visual_after_layer_0"]["accuracy"], 1)
    assert section_heading("llava-v1.5-scenes") in text and "| oracle |" in text
    # the oracle keeps the referred cells first, random keeps about its keep share of them, and
    # everything is kept unpruned
    oracle, randomly = data["policies"]["oracle"]["90"], data["policies"]["random"]["90"]
    share_kept = 100 * oracle["keep_counts"][-1] / 256
    assert oracle["referred_cells_kept_pct"][-1] > 3 * share_kept > randomly["referred_cells_kept_pct"][-1] / 3
    assert all(o >= r for o, r in zip(oracle["referred_cells_kept_pct"], randomly["referred_cells_kept_pct"]))
    assert data["policies"]["fitprune"]["0"]["referred_cells_kept_pct"] == [100.0] * len(oracle["keep_counts"])


def test_depth_probe_runs_each_policy_on_its_counts():
    from fitprune.lab.answers import answer_accuracy, encode_questions, load_answered_questions
    from fitprune.lab.bench_methods import PROBE_POLICIES, depth_probe
    from llava.model.pruning.policies import RandomPolicy
    from fitprune.lab.baselines import pruner_installed
    from llava.model.builder import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(DEMO_MODEL_PATH, None, "llava-v1.5-shapes", device="cpu")
    batches = encode_questions(load_answered_questions(SHAPES_TEST_FILE, 24), tokenizer, processor, model.config,
                               SHAPES_DIR)
    layers = model.config.num_hidden_layers
    probe = depth_probe(model, batches, [1, 99], [0, 3], seed=0)
    assert list(probe) == [(1, 0), (1, 3), (layers, 0), (layers, 3)]
    assert model.get_model().prefill_hook is None
    with pruner_installed(model, RandomPolicy(0), (3,) * layers):
        direct = answer_accuracy(model, batches).accuracy
    assert probe[(1, 3)]["random"] == direct
    # with nothing kept the policy cannot matter
    assert len({probe[(1, 0)][m] for m in PROBE_POLICIES}) == 1


def test_score_profile_sums_to_the_calibration_masses(tiny):
    """Summed over the grid, the mean self and cross scores are the statistics pass's mean
    W_self and W_cross (two code paths over the same attention)."""
    import torch

    from fitprune.lab.answers import PromptBatch
    from fitprune.lab.score_profile import score_profile
    from fitprune.stats import collect_stats
    from tests.helpers import QUESTIONS, build_prompt, encode_batch, sample_images

    tokenizer, model, processor = tiny
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS])
    images = sample_images(processor, model.config, len(QUESTIONS))
    batch = PromptBatch(ids, mask, images, torch.zeros(len(QUESTIONS), dtype=torch.long), [""] * len(QUESTIONS))
    profile = score_profile(model, [batch], layer=1)
    assert profile.samples == len(QUESTIONS) and profile.cross.numel() == model.get_model().num_visual_tokens()
    with torch.no_grad():
        spliced = model.splice_images(ids, mask, images)
    stats = collect_stats(model.get_model(), [(spliced.inputs_embeds, spliced.layout)])
    assert torch.allclose(profile.self_score.sum(), stats.w_self[:, 1].mean(), rtol=1e-5)
    assert torch.allclose(profile.cross.sum(), stats.w_cross[:, 1].mean(), rtol=1e-5)
    cross_rows, self_rows = profile.by_row(12)
    assert cross_rows.shape == self_rows.shape == (12,)
    assert torch.allclose(self_rows.sum() * 12, profile.self_score.sum())


def test_a_question_without_its_answer_is_named_by_file_and_line(tmp_path):
    from fitprune.lab.answers import load_answered_questions
    from llava.eval.driver.questions import QuestionFileError

    path = tmp_path / "q.jsonl"
    good = '{"question_id": 1, "image": "a.png", "text": "Colour?", "answer": "red"}'
    path.write_text(good + "\n\n" + '{"question_id": 2, "image": "a.png", "text": "Shape?"}\n')
    with pytest.raises(QuestionFileError, match=rf"^{path}:3: field 'answer' is missing$"):
        load_answered_questions(path)
