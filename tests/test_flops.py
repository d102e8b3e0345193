"""FLOPs counting: hand counts on tiny dimensions, and the FitPrune paper's table for LLaVA-1.5-7B."""
import dataclasses
from itertools import product
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from llava.model.pruning.flops import (
    DecoderDims,
    full_decode_step_flops,
    full_prefill_flops,
    full_reduction,
    paper_layer_flops,
    paper_prefill_flops,
    paper_reduction,
)
from llava.model.pruning.recipe import RecipeBook
from llava.model.pruning.recipe_lookup import shipped_recipe_path

TINY = DecoderDims(
    num_layers=3, hidden_size=8, intermediate_size=12, num_attention_heads=4, num_key_value_heads=2, vocab_size=10
)

# The spec's table: nominal ratio -> (actual % under the paper convention, visual tokens after the last layer).
PAPER_TABLE = {
    0: (0.0, 576),
    10: (6.44, 510),
    20: (15.35, 427),
    30: (27.90, 312),
    40: (38.85, 240),
    50: (49.66, 173),
    55: (54.50, 152),
    60: (59.70, 127),
    70: (69.72, 88),
    80: (79.69, 62),
    90: (89.68, 37),
}


def count(*sizes: int) -> int:
    """Multiply-adds of a loop nest over the given extents, enumerated one by one."""
    return sum(1 for _ in product(*(range(s) for s in sizes)))


def paper_hand_count(dims: DecoderDims, keep_counts: list, num_visual: int) -> int:
    """Paper convention by explicit enumeration: one FLOP per multiply-add, visual tokens only."""
    d, m = dims.hidden_size, dims.intermediate_size
    macs, n_in = 0, num_visual
    for n_out in keep_counts:
        macs += 3 * count(n_in, d, d)  # Q, K, V projections: token x output x input
        macs += count(n_in, n_in, d)  # scores: query x key x channel
        macs += count(n_in, n_in, d)  # weighted sum: query x key x channel
        macs += count(n_out, d, d)  # output projection
        macs += 2 * count(n_out, m, d) + count(n_out, d, m)  # gate, up, down
        n_in = n_out
    return macs


def full_hand_count(dims: DecoderDims, keep_counts: list, num_visual: int, other: int, logit_rows=None) -> int:
    """Full convention by explicit enumeration: every token, per-head attention, GQA K/V, LM head (on every row
    left, or on the last `logit_rows`), 2 FLOPs/MAC."""
    d, m, heads = dims.hidden_size, dims.intermediate_size, dims.num_attention_heads
    head_dim = d // heads
    kv_width = dims.num_key_value_heads * head_dim
    macs, n_in = 0, num_visual + other
    for kept in keep_counts:
        n_out = kept + other
        macs += count(n_in, d, d)  # Q projection
        macs += 2 * count(n_in, kv_width, d)  # K and V projections (grouped-query width)
        macs += 2 * count(heads, n_in, n_in, head_dim)  # scores and weighted sum, per head
        macs += count(n_out, d, d)  # output projection
        macs += 2 * count(n_out, m, d) + count(n_out, d, m)  # gated MLP
        n_in = n_out
    head_rows = n_in if logit_rows is None else min(n_in, logit_rows)
    macs += count(head_rows, dims.vocab_size, d)  # LM head over the positions whose logits are computed
    return 2 * macs


def decode_hand_count(dims: DecoderDims, cache_lengths: list) -> int:
    """One decode step by explicit enumeration: one query token over each layer's cache plus itself."""
    d, m, heads = dims.hidden_size, dims.intermediate_size, dims.num_attention_heads
    head_dim = d // heads
    kv_width = dims.num_key_value_heads * head_dim
    macs = 0
    for cached in cache_lengths:
        keys = cached + 1
        macs += count(d, d) + 2 * count(kv_width, d) + count(d, d)  # Q, K, V, O projections
        macs += 2 * count(heads, keys, head_dim)  # scores and weighted sum
        macs += 2 * count(m, d) + count(d, m)  # gated MLP
    macs += count(dims.vocab_size, d)  # LM head, once
    return 2 * macs


def test_paper_prefill_matches_hand_count() -> None:
    keep = [6, 4, 4]
    assert paper_prefill_flops(TINY, keep, 7) == paper_hand_count(TINY, keep, 7)
    assert paper_layer_flops(TINY, 7, 6) == paper_hand_count(dataclasses.replace(TINY, num_layers=1), [6], 7)


def test_paper_reduction_matches_hand_count() -> None:
    keep = [5, 3, 1]
    expected = 100 * (1 - paper_hand_count(TINY, keep, 7) / paper_hand_count(TINY, [7, 7, 7], 7))
    assert paper_reduction(TINY, keep, 7) == pytest.approx(expected, abs=1e-12)
    assert paper_reduction(TINY, [7, 7, 7], 7) == 0.0


def test_full_prefill_matches_hand_count() -> None:
    keep = [6, 4, 4]
    assert full_prefill_flops(TINY, keep, 7, 5) == full_hand_count(TINY, keep, 7, 5)
    expected = 100 * (1 - full_hand_count(TINY, keep, 7, 5) / full_hand_count(TINY, [7, 7, 7], 7, 5))
    assert full_reduction(TINY, keep, 7, 5) == pytest.approx(expected, abs=1e-12)


def test_full_prefill_with_the_last_row_logits_only() -> None:
    keep = [6, 4, 4]
    assert full_prefill_flops(TINY, keep, 7, 5, logit_rows=1) == full_hand_count(TINY, keep, 7, 5, logit_rows=1)
    saved = 2 * count(4 + 5 - 1, TINY.vocab_size, TINY.hidden_size)  # LM head rows not computed
    assert full_prefill_flops(TINY, keep, 7, 5) - full_prefill_flops(TINY, keep, 7, 5, logit_rows=1) == saved
    expected = 100 * (1 - full_hand_count(TINY, keep, 7, 5, 1) / full_hand_count(TINY, [7, 7, 7], 7, 5, 1))
    assert full_reduction(TINY, keep, 7, 5, logit_rows=1) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="logit_rows must be None"):
        full_prefill_flops(TINY, keep, 7, 5, logit_rows=0)


def test_decode_step_matches_hand_count() -> None:
    caches = [40, 33, 30]
    assert full_decode_step_flops(TINY, caches) == decode_hand_count(TINY, caches)


def test_gqa_reduces_kv_cost_by_exact_amount() -> None:
    mha = DecoderDims(3, 8, 12, 4, 4, 10)
    gqa = DecoderDims(3, 8, 12, 4, 1, 10)
    keep, visual, other = [6, 4, 4], 7, 5
    tokens_in = sum(n + other for n in [visual] + keep[:-1])
    # K and V each shrink from d x d to d x (kv_heads * head_dim); 2 FLOPs per multiply-add.
    saved = 2 * 2 * tokens_in * mha.hidden_size * (mha.kv_size - gqa.kv_size)
    assert full_prefill_flops(mha, keep, visual, other) - full_prefill_flops(gqa, keep, visual, other) == saved
    step_saved = 2 * 2 * mha.num_layers * mha.hidden_size * (mha.kv_size - gqa.kv_size)
    assert full_decode_step_flops(mha, [9, 9, 9]) - full_decode_step_flops(gqa, [9, 9, 9]) == step_saved


def test_per_sample_counts_give_the_mean() -> None:
    rows = [[6, 4, 4], [7, 2, 0]]
    for fn, args in (
        (paper_prefill_flops, (7,)),
        (full_prefill_flops, (7, 5)),
    ):
        expected = np.mean([fn(TINY, row, *args) for row in rows])
        assert fn(TINY, rows, *args) == pytest.approx(expected, rel=1e-15)
        assert fn(TINY, np.array(rows), *args) == pytest.approx(expected, rel=1e-15)
        assert fn(TINY, torch.tensor(rows), *args) == pytest.approx(expected, rel=1e-15)
    # One visual count for all samples: the reduction of the mean equals the mean of the reductions.
    expected = np.mean([paper_reduction(TINY, row, 7) for row in rows])
    assert paper_reduction(TINY, torch.tensor(rows), 7) == pytest.approx(expected, abs=1e-12)
    caches = [[40, 33, 30], [12, 12, 10]]
    expected = np.mean([full_decode_step_flops(TINY, row) for row in caches])
    assert full_decode_step_flops(TINY, caches) == pytest.approx(expected, rel=1e-15)


def test_per_sample_other_tokens() -> None:
    rows = [[6, 4, 4], [7, 2, 0]]
    expected = np.mean([full_prefill_flops(TINY, row, 7, other) for row, other in zip(rows, [5, 9])])
    assert full_prefill_flops(TINY, rows, 7, [5, 9]) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    "keep, message",
    [
        ([6, 7, 4], "keep counts must not rise"),
        ([8, 4, 4], "keep counts must not rise"),
        ([6, 4], "layers=3"),
        ([6, -1, -1], "must not be negative"),
    ],
)
def test_invalid_counts_raise(keep: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paper_prefill_flops(TINY, keep, 7)


def test_dims_from_config() -> None:
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2,
    )
    assert DecoderDims.from_config(config) == DecoderDims(2, 32, 37, 4, 2, 99)
    no_kv = SimpleNamespace(num_hidden_layers=2, hidden_size=32, intermediate_size=37, num_attention_heads=4,
                            vocab_size=99)
    assert DecoderDims.from_config(no_kv).num_key_value_heads == 4
    mapping = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
               "num_key_value_heads": None, "vocab_size": 99}
    assert DecoderDims.from_config(mapping).num_key_value_heads == 4
    with pytest.raises(ValueError, match="'hidden_size'"):
        DecoderDims.from_config({k: v for k, v in mapping.items() if k != "hidden_size"})
    with pytest.raises(ValueError, match="hidden_size=30 is not divisible by num_attention_heads=4"):
        DecoderDims(2, 30, 37, 4, 4, 99)


@pytest.fixture(scope="module")
def published_7b() -> RecipeBook:
    path = shipped_recipe_path("llava-v1.5-7b")
    assert path is not None, "llava/model/pruning/recipes/llava-v1.5-7b.json is not shipped"
    return RecipeBook.load(path)


def test_paper_table_reproduced_from_shipped_recipes(published_7b: RecipeBook) -> None:
    dims = published_7b.model.dims()
    visual = published_7b.model.num_visual_tokens
    assert published_7b.ratios() == tuple(float(r) for r in PAPER_TABLE)
    for ratio, (actual, final_tokens) in PAPER_TABLE.items():
        recipe = published_7b.get(ratio)
        assert round(paper_reduction(dims, recipe.keep_counts, visual), 2) == actual, ratio
        assert round(recipe.achieved_paper, 2) == actual, ratio
        assert recipe.final_visual_tokens == final_tokens, ratio


def test_full_convention_for_published_60(published_7b: RecipeBook) -> None:
    dims = published_7b.model.dims()
    visual = published_7b.model.num_visual_tokens
    keep = np.array(published_7b.get(60).keep_counts)
    # The spec's "53.9%" is the paper formula with 64 prefix+text tokens added at every layer
    # (one FLOP per multiply-add, no LM head).
    n_in = np.concatenate([[visual], keep[:-1]])
    with_text = paper_layer_flops(dims, n_in + 64, keep + 64).sum()
    unpruned = dims.num_layers * paper_layer_flops(dims, visual + 64, visual + 64)
    assert 100 * (1 - with_text / unpruned) == pytest.approx(53.9, abs=0.05)
    # The full convention also prunes the LM head rows of the deleted positions, which saves a little more.
    assert full_reduction(dims, keep, visual, 64) == pytest.approx(54.17, abs=0.005)
    assert published_7b.get(60).achieved_full == pytest.approx(full_reduction(dims, keep, visual, 64), abs=1e-9)


# --- the vision tower (llava.model.pruning.tower_flops) -------------------------------------------

def _tiny_hr_tower(tiny_hr_checkpoint):
    import json

    from llava.model.language_model.llava_llama import LlavaConfig
    from llava.model.multimodal_encoder.multipath_encoder import MultiPathVisionTower

    fields = json.loads((tiny_hr_checkpoint / "config.json").read_text())
    return MultiPathVisionTower(LlavaConfig(**fields))


def test_hr_tower_flops_match_a_hand_count_and_torch_flop_counter(tiny_hr_checkpoint) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from llava.model.pruning.tower_flops import multipath_tower_flops

    tower = _tiny_hr_tower(tiny_hr_checkpoint)
    counted = multipath_tower_flops(tower)
    # The tiny HR (fitprune.lab.tiny_hr_checkpoint): 256 px input; ConvNeXt depths (1, 1, 2, 1), dims
    # (8, 16, 24, 32), 4 px stem, 7x7 depthwise convs, 4x MLP; ViT width 32, MLP 128, 4 layers, 4 px
    # patches at max(256 * 4 / 32, 16) = 32 px: 8 x 8 = 64 tokens, no CLS; adapters on the 8 x 8 map.
    def block(cells, c):
        return cells * c * 49 + 2 * cells * c * 4 * c
    convnext = (64 * 64 * 8 * 3 * 4 * 4 + block(64 * 64, 8)
                + 32 * 32 * 16 * 8 * 4 + block(32 * 32, 16)
                + 16 * 16 * 24 * 16 * 4 + 2 * block(16 * 16, 24)
                + 8 * 8 * 32 * 24 * 4 + block(8 * 8, 32))
    clip = 64 * 32 * 3 * 4 * 4 + 4 * (4 * 64 * 32 * 32 + 2 * 64 * 64 * 32 + 2 * 64 * 32 * 128)
    s2f = 64 * 32 * 32 + 64 * 32 * 32 + 64 * 32 * 49 + 64 * 32 * 32 + (64 * 16 + 16 * 1)
    align = 64 * 32 * 32 + 64 * 32 * 32
    assert (counted.slow, counted.fast, counted.adapters) == (2 * convnext, 2 * clip, 2 * (3 * s2f + align))
    # torch's own counter over the real forward (convs, linears, attention matmuls, two FLOPs per multiply-add)
    with FlopCounterMode(display=False) as counter:
        tower(torch.zeros(1, 3, 256, 256))
    assert counter.get_total_flops() == counted.total


def test_clip_tower_flops_count_cls_and_every_layer() -> None:
    from transformers import CLIPVisionConfig

    from llava.model.pruning.tower_flops import clip_vit_flops

    clip = CLIPVisionConfig(hidden_size=16, intermediate_size=40, num_hidden_layers=3, patch_size=4, image_size=12,
                            num_channels=3)
    tokens = 3 * 3 + 1
    per_layer = 4 * tokens * 16 * 16 + 2 * tokens * tokens * 16 + 2 * tokens * 16 * 40
    assert clip_vit_flops(clip, 12, with_cls=True) == 2 * (9 * 16 * 3 * 16 + 3 * per_layer)


def test_the_tower_is_paid_pruned_or_not() -> None:
    from llava.model.pruning.tower_flops import full_reduction_with_tower

    keep = [6, 4, 2]
    decoder_only = full_reduction(TINY, keep, 6, 5)
    assert full_reduction_with_tower(TINY, keep, 6, 5, 0) == pytest.approx(decoder_only, abs=1e-12)
    pruned = full_prefill_flops(TINY, keep, 6, 5)
    unpruned = full_prefill_flops(TINY, [6, 6, 6], 6, 5)
    tower = 12345.0
    assert full_reduction_with_tower(TINY, keep, 6, 5, tower) == pytest.approx(
        100 * (1 - (pruned + tower) / (unpruned + tower)), abs=1e-12)
