"""VisionZip: the tower's dominant and contextual tokens recomputed here from the published rule on the
tiny model's CLIP layers (run one by one with transformers' attention probabilities), in float32 and half
precision; pruned generation starting the decoder with the solved count; bad budgets and towers."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llava.model.multimodal_encoder.visionzip import token_split
from llava.model.pruning.budget import BudgetError
from llava.model.pruning.flops import DecoderDims, paper_layer_flops
from llava.model.pruning.policies import METHOD_LABELS, policy_named
from llava.model.pruning.pruner import TokenPruner
from llava.model.pruning.traced_flops import traced_reductions
from llava.model.pruning.visionzip import TowerCutSchedule, TowerPolicyError, VisionZipPolicy, tower_token_split
from llava.serve.kept_patches import merged_patch_mask, shade_dropped
from tests.helpers import QUESTIONS, build_prompt, encode_batch, sample_images

RATIO = 70.0


def _layer_outputs(tower, pixels):
    """transformers' CLIP layers run one by one: (input of the select layer, its output, its attention
    probabilities (B, H, N, N), its keys averaged over heads (B, N, head_dim))."""
    vision = tower.vision_tower.vision_model
    hidden = vision.pre_layrnorm(vision.embeddings(pixels.to(tower.dtype)))
    layers = vision.encoder.layers
    index = len(layers) + tower.select_layer  # hidden_states[-2] is the output of layer L - 2
    for layer in layers[: index + 1]:
        layer_input = hidden
        hidden, probs = layer(hidden, None, None, output_attentions=True)
    attn = layers[index].self_attn
    keys = attn.k_proj(layers[index].layer_norm1(layer_input))
    keys = keys.view(*keys.shape[:2], attn.num_heads, attn.head_dim).mean(dim=2)
    return hidden, probs, keys


def _published_rule(hidden, probs, keys, dominant, contextual, top=None):
    """The repository's rule, one sample at a time: [CLS] + the dominant - 1 patches of largest
    head-summed [CLS] attention (original order), then contextual tokens: evenly spaced targets among
    the other patches, each other patch joining its most key-cosine-similar target, contextual = target
    hidden + mean of its joiners. `top` (B, d-1) overrides the attention ranking. Returns (tokens, cells)."""
    tokens, cells = [], []
    for b in range(hidden.shape[0]):
        score = probs[b, :, 0, 1:].float().sum(dim=0)
        chosen = score.topk(dominant - 1).indices if top is None else top[b]
        chosen = sorted(chosen.tolist())
        rest = [p for p in range(hidden.shape[1] - 1) if p not in set(chosen)]
        rows = [hidden[b, 0].float()] + [hidden[b, 1 + p].float() for p in chosen]
        step = max(1, len(rest) // contextual)
        targets = list(range(0, len(rest), step))[:contextual]
        others = [i for i in range(len(rest)) if i not in targets]
        unit = F.normalize(keys[b, 1:][rest].float(), dim=-1)
        joins = (unit[others] @ unit[targets].T).argmax(dim=1).tolist()
        for j, t in enumerate(targets):
            members = [hidden[b, 1 + rest[o]].float() for o, k in zip(others, joins) if k == j]
            mean = torch.stack(members).mean(dim=0) if members else torch.zeros_like(rows[0])
            rows.append(hidden[b, 1 + rest[t]].float() + mean)
        tokens.append(torch.stack(rows))
        cells.append([-1] + chosen + [-1] * contextual)
    return torch.stack(tokens), torch.tensor(cells)


def test_the_tower_keeps_and_merges_what_the_published_rule_does_in_float32(tiny):
    _, model, processor = tiny
    tower = model.get_model().get_vision_tower()
    pixels = sample_images(processor, model.config, 3)
    dominant, contextual = token_split(40)
    with torch.no_grad():
        ours, selection = tower.encode_visionzip(pixels, dominant, contextual)
        expected, cells = _published_rule(*_layer_outputs(tower, pixels), dominant, contextual)
    assert (dominant, contextual) == (34, 6)
    assert torch.equal(selection.grid_index, cells)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)  # float32 sums in another order
    for b in range(3):
        merged = selection.merged_into[b]
        assert torch.equal((merged < 0).nonzero().flatten(), cells[b][1:dominant])
        assert set(merged[merged >= 0].tolist()) <= set(range(contextual))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_the_tower_follows_the_published_rule_in_half_precision(tiny, dtype):
    _, model, processor = tiny
    tower = copy.deepcopy(model.get_model().get_vision_tower()).to(dtype)
    pixels = sample_images(processor, model.config, 3).to(dtype)
    dominant, contextual = token_split(64)
    with torch.no_grad():
        ours, selection = tower.encode_visionzip(pixels, dominant, contextual)
        hidden, probs, keys = _layer_outputs(tower, pixels)
        top = selection.grid_index[:, 1:dominant]
        expected, _ = _published_rule(hidden, probs, keys, dominant, contextual, top=top)
    # the [CLS] attention here comes from half probabilities (transformers) and ours from a float32
    # softmax of half logits: a patch may swap only with one whose score is within a few roundings
    # of the cut (fp16 eps 2^-10, bf16 2^-7, over logits of a few units and heads summed)
    eps = torch.finfo(dtype).eps
    for b in range(3):
        score = probs[b, :, 0, 1:].float().sum(dim=0)
        cut = score.topk(dominant - 1).values[-1]
        swapped = set(top[b].tolist()) ^ set(score.topk(dominant - 1).indices.tolist())
        assert all(abs(score[p] - cut) <= 16 * eps * score.max() for p in swapped)
    # same dominant set given: the merge reads the same half hidden states and keys; ours sums in
    # float32 and rounds once to the dtype, so one rounding of the result (2 eps relative) plus eps
    torch.testing.assert_close(ours.float(), expected, rtol=2 * eps, atol=2 * eps)
    assert ours.dtype == dtype


def _solved_count(dims, ratio, n):
    """The most tokens from layer 0 that remove `ratio` percent of the paper-convention FLOPs, by search."""
    full = paper_layer_flops(dims, n, n)
    return max(k for k in range(1, n + 1) if 100 * (1 - paper_layer_flops(dims, k, k) / full) >= ratio)


def test_pruned_generation_starts_the_decoder_with_the_solved_count(tiny):
    tokenizer, model, processor = tiny
    n = model.get_model().num_visual_tokens()
    dims = DecoderDims.from_config(model.config)
    count = _solved_count(dims, RATIO, n)
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    images = sample_images(processor, model.config, len(QUESTIONS))
    model.set_pruning(RATIO, policy="visionzip")
    try:
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, images=images, do_sample=False, max_new_tokens=3)
        trace, selection = model.last_pruning_trace, model.last_tower_selection
    finally:
        model.set_pruning(0)
    assert METHOD_LABELS["visionzip"] == "VisionZip"
    assert out.shape[1] > ids.shape[1]
    assert trace.entered().tolist() == [[count] * len(QUESTIONS)] * dims.num_layers
    assert trace.counts().tolist() == [[count] * len(QUESTIONS)] * dims.num_layers
    dominant, contextual = token_split(count)
    for b in range(len(QUESTIONS)):
        assert torch.equal(trace.kept_indices(0, b), selection.grid_index[b, 1:dominant])
        assert int((selection.merged_into[b] >= 0).sum()) == n - (dominant - 1)
    paper, full = traced_reductions(dims, trace.entered().T, trace.counts().T, n, 0)
    single_cut = 100 * (1 - paper_layer_flops(dims, count, count) / paper_layer_flops(dims, n, n))
    assert RATIO <= paper == pytest.approx(single_cut)
    assert 0 < full < 100


def test_the_kept_patch_picture_tints_merged_cells():
    merged_into = torch.tensor([-1, 0, 1, -1])
    merged = merged_patch_mask(merged_into, 4)
    assert merged.tolist() == [[False, True], [True, False]]
    view = np.full((4, 4, 3), 200, dtype=np.uint8)
    alive = np.array([[True, False], [False, False]])
    picture = shade_dropped(view, alive, merged=merged)
    assert picture[0, 0].tolist() == [200, 200, 200]  # kept
    assert picture[0, 3].tolist() == [120, 145, 215]  # merged: half-way to blue
    assert picture[3, 3].tolist() == [146, 146, 146]  # dropped: 3/4 of the way to grey


def test_default_splits_and_bad_budgets_are_one_line_errors(tiny):
    _, model, _ = tiny
    assert [token_split(k) for k in (64, 128, 192)] == [(54, 10), (108, 20), (162, 30)]
    dims = DecoderDims.from_config(model.config)
    n = model.get_model().num_visual_tokens()
    keep_one = 100 * (1 - paper_layer_flops(dims, 1, 1) / paper_layer_flops(dims, n, n))
    message = (
        f"reduction ratio 99.9%: VisionZip would keep fewer than 1 visual token before layer 0 (keeping 1 removes "
        f"{keep_one:.1f}% of the paper-convention FLOPs); choose a smaller ratio (VisionZip keeps at least 1 "
        "dominant token, the [CLS] token)"
    )
    with pytest.raises(BudgetError) as err:
        policy_named("visionzip").schedule_for_budget(99.9, dims, n)
    assert str(err.value) == message
    with pytest.raises(BudgetError) as err:
        model.set_pruning(99.9, policy="visionzip")
    assert str(err.value) == message


def test_anyres_and_non_clip_towers_are_refused(tiny):
    _, model, _ = tiny
    tower = model.get_model().get_vision_tower()
    hook = TokenPruner(VisionZipPolicy(), TowerCutSchedule(0.5))
    assert tower_token_split(hook, tower, anyres=False) == token_split(int(0.5 * tower.num_visual_tokens + 0.5))
    assert tower_token_split(TokenPruner(policy_named("fastv"), TowerCutSchedule(0.5)), tower, False) is None
    with pytest.raises(TowerPolicyError) as err:
        tower_token_split(hook, tower, anyres=True)
    assert str(err.value) == (
        "policy 'visionzip' (VisionZip) reduces one square CLIP view per image; anyres (LLaVA-NeXT) models "
        "are not supported"
    )
    with pytest.raises(TowerPolicyError) as err:
        tower_token_split(hook, object(), anyres=False)
    assert str(err.value) == "policy 'visionzip' (VisionZip) needs a CLIP vision tower; object is not one"
