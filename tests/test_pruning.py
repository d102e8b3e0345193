"""FitPrune at inference on the tiny model: the pruning mechanism, policies and recipes."""
import copy
import json

import pytest
import torch

from llava.model.pruning.policies import FitPrunePolicy, ForcedPolicy, RandomPolicy
from llava.model.pruning.schedules import RecipeSchedule
from llava.model.pruning.recipe import RecipeError
from llava.mm_utils import tokenizer_image_token
from llava.model.language_model import decoder_layer
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
from llava.model.language_model.modeling_llama import LlamaForCausalLM
from llava.model.language_model.sequence_layout import (
    SEGMENT_PREFIX,
    SEGMENT_TEXT,
    SEGMENT_VISUAL,
    SequenceLayout,
)
from llava.eval.records.sidecar_files import RUN_RECORD_SUFFIX, sidecar_path
from llava.model.pruning.pruner import TokenPruner
from tests.helpers import (QUESTIONS, TINY_KEEP_COUNTS, TINY_RECIPE_RATIO, build_prompt, encode_batch, greedy_answers,
                           sample_images, strip_pad)


@pytest.fixture()
def attention_calls(monkeypatch):
    """Per attention call: whether it computed probabilities (statistics for a policy, or
    `output_attentions`) instead of the fused `scaled_dot_product_attention`."""
    calls = []
    original = decoder_layer.LlamaAttention.forward

    def recording(self, *args, statistics=None, keep_probabilities=False, **kwargs):
        calls.append(statistics is not None or keep_probabilities)
        return original(self, *args, statistics=statistics, keep_probabilities=keep_probabilities, **kwargs)

    monkeypatch.setattr(decoder_layer.LlamaAttention, "forward", recording)
    return calls


def _batch(tiny, padding_side="left"):
    tokenizer, model, processor = tiny
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], padding_side)
    return ids, mask, sample_images(processor, model.config, len(QUESTIONS))


def _forward(model, ids, mask, images, **kwargs):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, images=images, use_cache=False, **kwargs)


def test_ratio_zero_is_the_unpruned_model_and_computes_no_probabilities(tiny, attention_calls):
    _, model, _ = tiny
    ids, mask, images = _batch(tiny)
    unpruned = _forward(model, ids, mask, images).logits
    model.set_pruning(0)
    ratio_zero = _forward(model, ids, mask, images)
    num_visual = model.get_model().num_visual_tokens()
    keep_all = RecipeSchedule([num_visual] * model.config.num_hidden_layers, num_visual)
    with model.prefill_hook_installed(TokenPruner(FitPrunePolicy(), keep_all)):
        keep_everything = _forward(model, ids, mask, images)
    assert torch.equal(ratio_zero.logits, unpruned)
    assert ratio_zero.pruning_trace is None
    assert torch.equal(keep_everything.logits, unpruned)
    assert attention_calls and not any(attention_calls)


def test_live_counts_follow_the_recipe_and_text_is_never_dropped(tiny, attention_calls):
    _, model, _ = tiny
    ids, mask, images = _batch(tiny)
    before = model.splice_images(ids, mask, images).layout
    model.set_pruning(TINY_RECIPE_RATIO)
    out = _forward(model, ids, mask, images)
    counts = out.pruning_trace.counts()
    assert counts.tolist() == [[k] * len(QUESTIONS) for k in TINY_KEEP_COUNTS]
    after = out.sequence_layout
    for segment in (SEGMENT_PREFIX, SEGMENT_TEXT):
        assert torch.equal((after.segment == segment).sum(1), (before.segment == segment).sum(1))
    assert ((after.segment == SEGMENT_VISUAL).sum(1) == TINY_KEEP_COUNTS[-1]).all()
    for layer in range(len(TINY_KEEP_COUNTS)):
        for b in range(len(QUESTIONS)):
            kept = out.pruning_trace.kept_indices(layer, b)
            assert (kept[1:] > kept[:-1]).all()
            if layer:
                assert set(kept.tolist()) <= set(out.pruning_trace.kept_indices(layer - 1, b).tolist())
    # probabilities only at the layers that drop tokens (1, 2, 3), never at layer 0
    drops = [TINY_KEEP_COUNTS[0] < 144] + [a > b for a, b in zip(TINY_KEEP_COUNTS, TINY_KEEP_COUNTS[1:])]
    assert attention_calls == drops


def _slow_fitprune_drop(probs, segment, visual_index, num_drop):
    """The spec's cross × self ranking, written out with loops over tokens."""
    head_max = probs.max(dim=0).values
    visual_rows = [i for i in range(len(segment)) if segment[i] == SEGMENT_VISUAL]
    text_rows = [i for i in range(len(segment)) if segment[i] == SEGMENT_TEXT]
    scores = {}
    for j in visual_rows:
        cross = sum(float(head_max[i, j]) for i in text_rows)
        self_score = sum(float(head_max[i, j]) for i in visual_rows) / len(visual_rows)
        scores[int(visual_index[j])] = cross * self_score
    return set(sorted(scores, key=scores.get)[:num_drop])


def test_dropped_tokens_match_a_slow_reference_ranking(tiny):
    _, model, _ = tiny
    ids, mask, images = _batch(tiny)
    layout = model.splice_images(ids, mask, images).layout
    reference = _forward(model, ids, mask, images, output_attentions=True)
    model.set_pruning(TINY_RECIPE_RATIO)
    pruned = _forward(model, ids, mask, images)
    layer = 1  # the first layer that drops tokens; its input is the unpruned sequence
    num_drop = TINY_KEEP_COUNTS[0] - TINY_KEEP_COUNTS[1]
    for b in range(len(QUESTIONS)):
        expected = _slow_fitprune_drop(
            reference.attentions[layer][b], layout.segment[b], layout.visual_index[b], num_drop
        )
        kept = set(pruned.pruning_trace.kept_indices(layer, b).tolist())
        dropped = set(range(TINY_KEEP_COUNTS[0])) - kept
        assert dropped == expected


def test_cached_pruned_generation_equals_recompute_with_forced_kept_sets(tiny):
    tokenizer, model, processor = tiny
    ids = tokenizer_image_token(build_prompt(QUESTIONS[3]), tokenizer, return_tensors="pt")[None]
    images = sample_images(processor, model.config, 1)
    model.config.reduction_ratio = TINY_RECIPE_RATIO
    steps = 8
    cached = greedy_answers(model, tokenizer, ids, None, images, max_new_tokens=steps)[0]
    trace = model.last_pruning_trace
    kept = {layer: trace.kept_indices(layer, 0)[None] for layer in range(len(TINY_KEEP_COUNTS))}
    num_visual = model.get_model().num_visual_tokens()
    forced = TokenPruner(ForcedPolicy(kept), RecipeSchedule(TINY_KEEP_COUNTS, num_visual))
    spliced = model.splice_images(ids, None, images)
    embeds, layout = spliced.inputs_embeds, spliced.layout
    generated = []
    for _ in range(steps):
        with model.prefill_hook_installed(forced), torch.no_grad():
            out = LlamaForCausalLM.forward(model, inputs_embeds=embeds, use_cache=False, sequence_layout=layout)
        token = int(out.logits[0, -1].argmax())
        generated.append(token)
        if token == model.config.eos_token_id:
            break
        embeds = torch.cat([embeds, model.get_model().embed_tokens(torch.tensor([[token]]))], dim=1)
        layout = SequenceLayout.from_segments(
            torch.cat([layout.segment.long(), torch.tensor([[SEGMENT_TEXT]])], dim=1),
            torch.cat([layout.visual_index, torch.tensor([[-1]])], dim=1),
        )
    assert cached[:len(generated)] == generated
    assert len(set(generated)) > 1


@pytest.mark.parametrize("policy", ["fitprune", "random", "fastv"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_pruned_batch_of_four_equals_each_alone(tiny, padding_side, policy):
    tokenizer, model, _ = tiny
    ids, mask, images = _batch(tiny, padding_side)
    model.set_pruning(TINY_RECIPE_RATIO, policy=policy)
    batched = greedy_answers(model, tokenizer, ids, mask, images)
    assert model.last_pruning_trace.counts()[-1].tolist() == [TINY_KEEP_COUNTS[-1]] * len(QUESTIONS)
    for b, question in enumerate(QUESTIONS):
        alone_ids = tokenizer_image_token(build_prompt(question), tokenizer, return_tensors="pt")[None]
        alone = greedy_answers(model, tokenizer, alone_ids, None, images[b:b + 1])[0]
        assert strip_pad(batched[b]) == strip_pad(alone)


def test_pruning_changes_the_answer_logits(tiny):
    _, model, _ = tiny
    ids, mask, images = _batch(tiny)
    unpruned = _forward(model, ids, mask, images).logits[:, -1]
    model.set_pruning(TINY_RECIPE_RATIO)
    pruned = _forward(model, ids, mask, images).logits[:, -1]
    assert not torch.allclose(unpruned, pruned)


def test_random_policy_depends_on_its_seed(tiny):
    _, model, _ = tiny
    ids, mask, images = _batch(tiny)
    num_visual = model.get_model().num_visual_tokens()
    kept = []
    for seed in (0, 0, 1):
        pruner = TokenPruner(RandomPolicy(seed), RecipeSchedule(TINY_KEEP_COUNTS, num_visual))
        with model.prefill_hook_installed(pruner):
            kept.append(_forward(model, ids, mask, images).pruning_trace.kept_indices(3, 0).tolist())
    assert kept[0] == kept[1] != kept[2]


def test_a_new_seed_rebuilds_the_random_pruner(tiny):
    _, model, _ = tiny
    ids, mask, images = _batch(tiny)
    kept = []
    for seed in (0, 1, 0):
        model.set_pruning(TINY_RECIPE_RATIO, policy="random", seed=seed)
        kept.append(_forward(model, ids, mask, images).pruning_trace.kept_indices(3, 0).tolist())
    assert kept[0] == kept[2] != kept[1]


@pytest.mark.parametrize("ratio", [0, TINY_RECIPE_RATIO])
def test_model_without_vision_tower_runs_text_prompts_at_any_ratio(tiny, ratio):
    tokenizer, model, _ = tiny
    config = copy.deepcopy(model.config)
    config.mm_vision_tower = None
    config.reduction_ratio = ratio
    torch.manual_seed(0)
    text_only = LlavaLlamaForCausalLM(config).eval()
    assert text_only.get_vision_tower() is None
    ids, mask = encode_batch(tokenizer, [build_prompt(q, image=False) for q in QUESTIONS[:2]], "left")
    out = _forward(text_only, ids, mask, None)
    assert out.logits.shape[:2] == ids.shape
    assert out.pruning_trace is None or not out.pruning_trace.live_counts


def test_fraction_is_read_as_percent(tiny):
    _, model, _ = tiny
    ids, mask, images = _batch(tiny)
    model.config.reduction_ratio = TINY_RECIPE_RATIO / 100
    model.apply_config_pruning()
    out = _forward(model, ids, mask, images)
    assert out.pruning_trace.counts()[-1].tolist() == [TINY_KEEP_COUNTS[-1]] * len(QUESTIONS)


def test_ratio_without_recipe_lists_available_ratios_and_the_calibrate_command(tiny):
    _, model, _ = tiny
    ids, mask, images = _batch(tiny)
    with pytest.raises(RecipeError) as err:
        model.set_pruning(30)
    assert "50" in str(err.value) and "python -m fitprune.calibrate" in str(err.value)


def test_recipe_for_another_model_is_rejected_before_the_config_changes(tiny):
    _, model, _ = tiny
    from llava.model.pruning.recipe_lookup import shipped_recipe_path

    with pytest.raises(RecipeError, match="num_layers"):
        model.set_pruning(60, recipe=shipped_recipe_path("llava-v1.5-7b"))
    assert (model.config.reduction_ratio, model.config.fitprune_recipe) == (0, None)


@pytest.mark.parametrize("driver", ["run_llava", "model_vqa_loader"])
def test_a_pruned_run_parses_its_ratio_once_and_reads_its_recipe_once(tiny_checkpoint, monkeypatch, capsys,
                                                                      tmp_path, driver):
    """A driver at ratio 0.5 (read as 50 %): the flag's value is parsed by argparse and never again
    (the pruner keeps its settings), and the recipe file is read once (the run record takes the
    recipe from the pruner)."""
    from llava.eval import model_vqa_loader, run_llava
    from llava import pruning_flags
    from llava.model import pruning_setup
    from llava.model.pruning import ratio
    from llava.model.pruning.recipe import RecipeBook

    parses, loads = [], []

    def counting_parse(value):
        parses.append(value)
        return ratio.parse_reduction_ratio(value)

    original_load = RecipeBook.load.__func__

    def counting_load(cls, path):
        loads.append(str(path))
        return original_load(cls, path)

    monkeypatch.setattr(pruning_flags, "parse_reduction_ratio", counting_parse)
    monkeypatch.setattr(pruning_setup, "parse_reduction_ratio", counting_parse)
    monkeypatch.setattr(RecipeBook, "load", classmethod(counting_load))
    common = ["--model-path", str(tiny_checkpoint), "--device", "cpu", "--temperature", "0",
              "--max-new-tokens", "3", "--reduction-ratio", "0.5"]
    if driver == "run_llava":
        run_llava.main(common + ["--image-file", "tests/data/shapes.png", "--query", "What is in the picture?"])
    else:
        answers = tmp_path / "answers.jsonl"
        assert model_vqa_loader.main(common + ["--question-file", "tests/data/questions.jsonl",
                                               "--image-folder", "tests/data", "--answers-file", str(answers)]) == 0
        record = json.loads(sidecar_path(answers, RUN_RECORD_SUFFIX).read_text())
        assert record["pruning"]["keep_counts"] == list(TINY_KEEP_COUNTS)

    assert parses.count("0.5") == 1 and set(parses) <= {"0.5", 0.0}  # the flag once; the config's 0 at load
    assert loads == [str(tiny_checkpoint / "fitprune_recipes.json")]
    if driver == "run_llava":
        assert f"visual tokens kept after the last layer: {TINY_KEEP_COUNTS[-1]} of 144" in capsys.readouterr().err
