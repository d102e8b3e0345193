"""Baselines: FastV's and the uniform keep counts, and their FLOPs matching."""
import pytest
import torch

from llava.model.pruning.flops import DecoderDims, paper_reduction
from llava.model.pruning.policies import FastVPolicy
from fitprune.lab.baselines import (
    fastv_keep_counts,
    matched_fastv,
    matched_uniform,
    pruner_installed,
    uniform_keep_counts,
)
from tests.helpers import QUESTIONS, build_prompt, encode_batch, sample_images

DIMS = DecoderDims(num_layers=10, hidden_size=64, intermediate_size=256, num_attention_heads=4,
                   num_key_value_heads=4, vocab_size=768)
V = 144


def test_fastv_keeps_everything_before_layer_k_then_the_kept_share():
    assert fastv_keep_counts(6, 100, 2, 75.0) == (100, 25, 25, 25, 25, 25)
    assert fastv_keep_counts(4, 144, 1, 50.0) == (72, 72, 72, 72)
    assert fastv_keep_counts(4, 144, 3, 0.0) == (144,) * 4
    with pytest.raises(ValueError, match="K must be in"):
        fastv_keep_counts(4, 144, 0, 50.0)
    with pytest.raises(ValueError, match="R must be a percent"):
        fastv_keep_counts(4, 144, 2, 120.0)


def test_uniform_removes_the_same_share_at_every_layer():
    assert uniform_keep_counts(3, 100, 0.5) == (50, 25, 12)
    assert uniform_keep_counts(3, 100, 1.0) == (100, 100, 100)


@pytest.mark.parametrize("target", [30.0, 50.0, 60.0, 70.0, 80.0])
def test_matched_fastv_meets_the_target_with_the_most_tokens(target):
    baseline = matched_fastv(DIMS, V, target, k=2)
    kept = baseline.keep_counts[-1]
    assert baseline.keep_counts[0] == V
    assert baseline.paper_reduction == pytest.approx(paper_reduction(DIMS, list(baseline.keep_counts), V))
    assert baseline.paper_reduction >= target
    one_more = fastv_keep_counts(DIMS.num_layers, V, 2, 100 * (1 - (kept + 1) / V))
    assert paper_reduction(DIMS, list(one_more), V) < target


def test_matched_fastv_names_the_reachable_maximum_when_k_is_too_late():
    with pytest.raises(ValueError, match=r"FastV with K=2: a reduction of 90% is out of reach: at most"):
        matched_fastv(DIMS, V, 90.0, k=2)
    assert matched_fastv(DIMS, V, 90.0, k=1).paper_reduction >= 90.0


@pytest.mark.parametrize("target", [30.0, 60.0, 90.0])
def test_matched_uniform_meets_the_target(target):
    baseline = matched_uniform(DIMS, V, target)
    counts = baseline.keep_counts
    assert baseline.paper_reduction >= target
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    looser = tuple(c + 1 if c < V else c for c in counts)
    assert paper_reduction(DIMS, list(looser), V) < baseline.paper_reduction


def test_installed_schedule_prunes_to_its_counts_and_clears(tiny):
    tokenizer, model, processor = tiny
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    images = sample_images(processor, model.config, len(QUESTIONS))
    num_visual = model.get_model().num_visual_tokens()
    counts = fastv_keep_counts(model.config.num_hidden_layers, num_visual, 2, 75.0)
    with pruner_installed(model, FastVPolicy(), counts), torch.no_grad():
        model(input_ids=ids, attention_mask=mask, images=images, use_cache=False)
    trace = model.last_pruning_trace.counts()
    assert trace.tolist() == [[c] * len(QUESTIONS) for c in counts]
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, images=images, use_cache=False)
    assert model.last_pruning_trace is None
