"""The pruning methods beside FitPrune (DART, DivPrune, PyramidDrop, SparseVLM drop-only, the recipe+score
variants, FitPrune with a causal-mean self score): each kept set recomputed here from the published rule
on the tiny model's own tensors, keep counts against the FLOPs budget, half precision, bad budgets."""
import math

import pytest
import torch
import torch.nn.functional as F

from llava.model.builder import load_pretrained_model
from llava.model.pruning.budget import BudgetError
from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.from_config import PruningSettings
from llava.model.pruning.policies import POLICIES, policy_named
from llava.mm_utils import process_images
from tests.helpers import (IMAGE_SIZES, QUESTIONS, assert_pruned_generation_follows, build_prompt, encode_batch,
                           picture, sample_images)

OWN_SCHEDULE = ("dart", "divprune", "pyramiddrop", "sparsevlm-drop")
ON_RECIPE = ("recipe+fastv", "recipe+dart", "recipe+divprune", "fitprune-selfmean")
RATIO = 50.0  # the tiny checkpoint's recipe ratio (tests/conftest.py), so the recipe variants run too


class Recorder:
    """Wraps the model's pruner and keeps what entered each layer (hidden states and layout)."""

    def __init__(self, pruner):
        self.pruner = pruner
        self.inputs = {}

    def before_layer(self, layer_idx, hidden, layout, probe):
        self.inputs[layer_idx] = (hidden.detach().clone(), layout)
        return self.pruner.before_layer(layer_idx, hidden, layout, probe)

    def attention_query(self, layer_idx, layout):
        return self.pruner.attention_query(layer_idx, layout)

    def after_attention(self, layer_idx, hidden, attention_sums, layout):
        return self.pruner.after_attention(layer_idx, hidden, attention_sums, layout)


def _prefill(model, tokenizer, processor, policy):
    """A pruned float32 prefill of the four test prompts under `policy`: (recorder, trace)."""
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    images = sample_images(processor, model.config, len(QUESTIONS))
    recorder = Recorder(model.set_pruning(RATIO, policy=policy))
    with model.prefill_hook_installed(recorder), torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, images=images, use_cache=False)
    return recorder, out.pruning_trace


def _probabilities(layer, hidden, layout, b):
    """(H, T, T) float32 causal softmax attention of sample b at `layer` (keys repeated per query head)."""
    q, k = layer.self_attn.rotated_query_key(layer.input_layernorm(hidden), layout.position_ids)
    q, k = q[b].float(), k[b].float()
    k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return logits.masked_fill(~layout.causal_mask()[b, 0], float("-inf")).softmax(dim=-1)


def _top(scores, rows, count):
    """The `count` rows (of `rows`) with the highest scores."""
    return set(rows[scores[rows].topk(count).indices].tolist())


def _max_min(features, count):
    """DivPrune's published rule, in float64: first the row whose nearest other row is farthest,
    then repeatedly the row farthest from its nearest chosen row (cosine distance)."""
    x = features.double()
    x = x / x.norm(dim=1, keepdim=True)
    distance = 1 - x @ x.T
    n = len(x)
    first = max(range(n), key=lambda j: sorted(distance[:, j].tolist())[1])
    chosen = [first]
    while len(chosen) < count:
        rest = [j for j in range(n) if j not in chosen]
        chosen.append(max(rest, key=lambda j: min(distance[i, j].item() for i in chosen)))
    return chosen


def _dart(keys, states, visual_rows, text_rows, count):
    """DART's rule: 4 visual and 4 text pivots by key L1 norm; visual pivots kept; each pivot in row order
    takes its share (count - visual pivots, split evenly, first pivots one more) of the remaining
    visual rows least cosine-similar to it."""
    norm = keys.double().abs().sum(dim=-1)
    image_pivots = sorted(visual_rows, key=lambda r: -norm[r].item())[:min(4, count)]
    text_pivots = sorted(text_rows, key=lambda r: -norm[r].item())[:4]
    kept = set(image_pivots)
    pivots = sorted(image_pivots) + sorted(text_pivots)
    left = count - len(kept)
    for place, pivot in enumerate(pivots):
        share = left // len(pivots) + (place < left % len(pivots))
        candidates = [r for r in visual_rows if r not in kept]
        similarity = {r: F.cosine_similarity(states[r].double(), states[pivot].double(), dim=0).item() for r in candidates}
        kept.update(sorted(candidates, key=lambda r: similarity[r])[:share])
    return kept


def _expected_rows(policy, model, inputs, layer, b, count):
    """Rows of sample b that `policy`'s published rule keeps at `layer` (from what entered it)."""
    hidden, layout = inputs[layer]
    visual = layout.visual_mask[b].nonzero().squeeze(1)
    text = layout.text_mask[b].nonzero().squeeze(1)
    decoder = model.get_model()
    if policy in ("divprune", "recipe+divprune"):
        return set(visual[_max_min(hidden[b, visual], count)].tolist())
    if policy in ("dart", "recipe+dart"):
        key_layer = layer - 1 if layer > 0 else layer
        key_hidden, key_layout = inputs[key_layer]
        attn = decoder.layers[key_layer].self_attn
        keys = attn.rotated_query_key(decoder.layers[key_layer].input_layernorm(key_hidden), key_layout.position_ids)[1]
        keys = keys.transpose(1, 2).flatten(2)[b]
        real = key_layout.key_mask[b]
        row_of_position = {int(key_layout.position_ids[b, r]): r for r in real.nonzero().squeeze(1).tolist()}
        aligned = [row_of_position.get(int(position), 0) for position in layout.position_ids[b]]
        keys = keys[aligned]  # each row's key depends on that row alone; rows may have left before layer-1
        return _dart(keys, decoder.norm(hidden)[b], visual.tolist(), text.tolist(), count)
    probs = _probabilities(decoder.layers[layer], hidden, layout, b)
    if policy in ("pyramiddrop", "recipe+fastv"):
        return _top(probs.mean(dim=0)[-1], visual, count)
    if policy == "sparsevlm-drop":
        first, first_layout = inputs[0]
        v = first[b, first_layout.visual_mask[b]].float()
        t = first[b, first_layout.text_mask[b]].float()
        relevance = (v @ t.T).softmax(dim=1).mean(dim=0)
        rater_positions = first_layout.position_ids[b, first_layout.text_mask[b]][relevance > relevance.mean()]
        raters = text[torch.isin(layout.position_ids[b, text], rater_positions)]
        return _top(probs.mean(dim=0)[raters].mean(dim=0), visual, count)
    assert policy == "fitprune-selfmean"
    head_max = probs.amax(dim=0)
    cross = head_max[text].mean(dim=0)
    self_mean = torch.zeros_like(cross)
    for j in visual.tolist():
        seeing = [i for i in visual.tolist() if i >= j]
        self_mean[j] = head_max[seeing, j].mean()
    return _top(cross * self_mean, visual, count)


def trace_start(recorder):
    """(B,) visual tokens each sample had before layer 0."""
    return recorder.inputs[0][1].initial_visual


@pytest.mark.parametrize("policy", OWN_SCHEDULE + ON_RECIPE)
def test_each_method_keeps_the_set_its_published_rule_chooses(tiny, policy):
    tokenizer, model, processor = tiny
    recorder, trace = _prefill(model, tokenizer, processor, policy)
    counts = trace.counts()
    entering = torch.cat([trace_start(recorder)[None], counts[:-1]])
    cut_layers = [layer for layer in range(len(counts)) if bool((counts[layer] < entering[layer]).any())]
    assert cut_layers
    for layer in cut_layers:
        hidden, layout = recorder.inputs[layer]
        for b in range(len(QUESTIONS)):
            rows = _expected_rows(policy, model, recorder.inputs, layer, b, int(counts[layer, b]))
            expected = set(layout.visual_index[b, sorted(rows)].tolist())
            assert set(trace.kept_indices(layer, b).tolist()) == expected, (policy, layer, b)


def _paper_removed(dims, entering, leaving, num_visual):
    """Percent of the paper-convention FLOPs removed (3nd^2 + 2n^2d + n'd^2 + 3n'dm per layer), written here."""
    d, m = dims.hidden_size, dims.intermediate_size

    def layer(n, n_out):
        return 3 * n * d * d + 2 * n * n * d + n_out * d * d + 3 * n_out * d * m

    pruned = sum(layer(n, n_out) for n, n_out in zip(entering, leaving))
    return 100 * (1 - pruned / (dims.num_layers * layer(num_visual, num_visual)))


@pytest.mark.parametrize("policy", ["dart", "divprune"])
def test_single_cut_keeps_the_most_tokens_the_budget_allows(tiny, policy):
    _, model, _ = tiny
    dims = DecoderDims.from_config(model.config)
    n = model.get_model().num_visual_tokens()
    cut = 0 if policy == "divprune" else max(1, int(2 * dims.num_layers / 32 + 0.5))  # DART: layer 2 of 32
    for ratio in (10.0, 50.0, 70.0):  # DART's cut at layer 1 of 4 leaves at most 75% to remove
        schedule = policy_named(policy).schedule_for_budget(ratio, dims, n)
        counts = [int(schedule.keep_counts(layer, torch.tensor([n]))[0]) for layer in range(dims.num_layers)]
        k = counts[-1]
        assert counts == [n] * cut + [k] * (dims.num_layers - cut)

        def removed(kept):
            alive = [n] * cut + [kept] * (dims.num_layers - cut)
            return _paper_removed(dims, alive, alive, n)

        assert removed(k) >= ratio > removed(k + 1)


def test_pyramiddrop_stages_and_sparsevlm_layers_meet_the_budget(tiny):
    _, model, _ = tiny
    dims = DecoderDims.from_config(model.config)
    n = model.get_model().num_visual_tokens()
    layers = dims.num_layers
    for ratio in (20.0, 50.0, 70.0):
        schedule = policy_named("pyramiddrop").schedule_for_budget(ratio, dims, n)
        counts = [int(schedule.keep_counts(layer, torch.tensor([n]))[0]) for layer in range(layers)]
        stage_ends = [max(1, int(s * layers / 32 + 0.5)) for s in (8, 16, 24)]
        lam = counts[stage_ends[0]] / n
        assert all(counts[layer] == n for layer in range(stage_ends[0]))
        assert counts[stage_ends[1]] in {int(n * x ** 2) for x in (lam, lam + 1 / n)}
        assert _paper_removed(dims, counts, counts, n) >= ratio
        sparse = policy_named("sparsevlm-drop").schedule_for_budget(ratio, dims, n)
        kept = [int(sparse.keep_counts(layer, torch.tensor([n]))[0]) for layer in range(layers)]
        assert _paper_removed(dims, [n] + kept[:-1], kept, n) >= ratio
        assert kept == sorted(kept, reverse=True)


@pytest.fixture(scope="module", params=[torch.float32, torch.float16, torch.bfloat16], ids=str)
def typed_model(request, tiny_checkpoint):
    tokenizer, model, processor, _ = load_pretrained_model(
        str(tiny_checkpoint), None, "llava-v1.5-tiny", device="cpu", torch_dtype=request.param
    )
    return request.param, tokenizer, model, processor


@pytest.mark.parametrize("policy", OWN_SCHEDULE + ON_RECIPE)
def test_pruned_generation_follows_the_schedule_in_every_dtype(typed_model, policy):
    # only counts, order and segments are checked: which rows win may differ between precisions
    dtype, tokenizer, model, processor = typed_model
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    images = sample_images(processor, model.config, len(QUESTIONS)).to(dtype)
    schedule = model.set_pruning(RATIO, policy=policy).schedule
    assert_pruned_generation_follows(model, ids, mask, images, schedule)


def test_budgets_a_schedule_cannot_reach_are_one_line_errors(tiny):
    _, model, _ = tiny
    dims = DecoderDims.from_config(model.config)
    n = model.get_model().num_visual_tokens()
    with pytest.raises(BudgetError) as err:
        policy_named("divprune").schedule_for_budget(99.9, dims, n)
    keep_one = _paper_removed(dims, [1] * dims.num_layers, [1] * dims.num_layers, n)
    assert str(err.value) == (
        f"reduction ratio 99.9%: DivPrune would keep fewer than 1 visual token before layer 0 (keeping 1 "
        f"removes {keep_one:.1f}% of the paper-convention FLOPs); choose a smaller ratio"
    )
    first_stage = max(1, int(8 * dims.num_layers / 32 + 0.5))
    with pytest.raises(BudgetError) as err:
        policy_named("pyramiddrop").schedule_for_budget(90.0, dims, n)
    most = 100 * (1 - first_stage / dims.num_layers)
    assert str(err.value) == (
        f"reduction ratio 90%: PyramidDrop removes at most {most:.1f}% of the paper-convention FLOPs "
        f"(every visual token stays in layers before {first_stage}); choose a smaller ratio"
    )
    assert "\n" not in str(err.value)
    with pytest.raises(BudgetError, match="DivPrune would keep fewer than 1 visual token"):
        model.set_pruning(99.9, policy="divprune")


def test_an_unknown_policy_lists_the_known_names():
    with pytest.raises(ValueError) as err:
        PruningSettings(reduction_ratio=50.0, policy="tome")
    assert str(err.value) == f"unknown pruning policy 'tome'; choose one of {sorted(POLICIES)}"
    for name in OWN_SCHEDULE + ON_RECIPE:
        assert name in POLICIES


@pytest.mark.parametrize("policy", OWN_SCHEDULE)
def test_own_schedules_scale_to_each_samples_visual_tokens_on_llava_next(next_model, policy):
    tokenizer, model, processor = next_model
    images = [picture(size, seed) for seed, size in enumerate(IMAGE_SIZES)]
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    pixels = process_images(images, processor, model.config)
    fractions = model.set_pruning(RATIO, policy=policy).schedule.keep_fractions
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, images=pixels, image_sizes=[i.size for i in images],
                    use_cache=False)
    n = out.sequence_layout.initial_visual
    assert len(set(n.tolist())) > 1
    for layer, live in enumerate(out.pruning_trace.counts()):
        assert live.tolist() == [int(math.floor(fractions[layer] * k + 0.5)) for k in n.tolist()]
        for b in range(len(QUESTIONS)):
            kept = out.pruning_trace.kept_indices(layer, b)
            assert torch.equal(kept, kept.sort().values)


def test_sparsevlm_refuses_raters_of_another_prefill(tiny):
    tokenizer, model, processor = tiny
    recorder, _ = _prefill(model, tokenizer, processor, "sparsevlm-drop")
    layout = recorder.inputs[0][1]
    fresh = policy_named("sparsevlm-drop")
    with pytest.raises(ValueError, match="chooses its raters before layer 0; this prefill's hook never did"):
        fresh.attention_query(0, layout)
    used = recorder.pruner.policy
    other = type(layout)(layout.segment, layout.position_ids, layout.visual_index, layout.initial_visual.clone())
    with pytest.raises(ValueError, match="chooses its raters before layer 0"):
        used.attention_query(0, other)


@pytest.mark.parametrize("policy", ["recipe+dart", "recipe+divprune"])
def test_recipe_variants_of_input_ranking_methods_cut_where_and_as_much_as_fitprune(tiny, policy):
    # they rank a cut layer's input and cut after its attention: every layer entered and left as under FitPrune
    tokenizer, model, processor = tiny
    _, fitprune = _prefill(model, tokenizer, processor, "fitprune")
    _, variant = _prefill(model, tokenizer, processor, policy)
    assert torch.equal(variant.entered(), fitprune.entered()) and torch.equal(variant.counts(), fitprune.counts())
    kept = [variant.kept_indices(layer, 0).tolist() for layer in range(len(variant.counts()))]
    assert kept != [fitprune.kept_indices(layer, 0).tolist() for layer in range(len(fitprune.counts()))]


def test_a_recipe_variant_refuses_a_layer_whose_input_it_did_not_rank(tiny):
    tokenizer, model, processor = tiny
    recorder, _ = _prefill(model, tokenizer, processor, "recipe+divprune")
    layout = recorder.inputs[0][1]
    with pytest.raises(ValueError, match="^recipe\\+divprune ranks a layer's input before its attention; layer 0's hook "
                                         "never called read_layer_input$"):
        policy_named("recipe+divprune").score(0, None, layout)
