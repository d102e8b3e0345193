"""Attention scores computed from a layer's queries and keys, a chunk of rows at a time, against
an explicit float64 softmax of the whole matrix: same scores, same kept sets, bounded memory."""
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from llava.mm_utils import process_images
from llava.model.language_model import attention_scores
from llava.model.language_model.attention_scores import LayerAttention
from llava.model.language_model.sequence_layout import SEGMENT_PAD, SEGMENT_PREFIX, SEGMENT_TEXT, SEGMENT_VISUAL, SequenceLayout
from llava.model.pruning.policies import FastVPolicy, FitPrunePolicy, cross_and_self_scores
from llava.model.pruning.pruner import TokenPruner
from llava.model.pruning.schedules import FractionSchedule
from tests.helpers import QUESTIONS, build_prompt, encode_batch, sample_images
from tests.test_llava_next import IMAGE_SIZES, _loaded_next, next_checkpoint, next_model, picture  # noqa: F401

BATCH, HEADS, KV_HEADS, HEAD_DIM = 2, 4, 2, 16
PREFIX, VISUAL, TEXT, PAD = 5, 600, 119, 24


class LargestFloat32:
    """Records the largest float32 tensor any operation returns while active (elements)."""

    def __init__(self):
        self.largest = 0

    def __enter__(self):
        recorder = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for tensor in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32:
                        recorder.largest = max(recorder.largest, tensor.numel())
                return out

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def _layout():
    segments = [SEGMENT_PREFIX] * PREFIX + [SEGMENT_VISUAL] * VISUAL + [SEGMENT_TEXT] * TEXT
    rows = [[SEGMENT_PAD] * PAD + segments[PAD:], segments]  # sample 0 left-padded
    segment = torch.tensor(rows)
    visual_index = torch.where(segment == SEGMENT_VISUAL, (segment == SEGMENT_VISUAL).cumsum(1) - 1, -1)
    return SequenceLayout.from_segments(segment, visual_index)


def _layer_attention(dtype, layout):
    generator = torch.Generator().manual_seed(0)
    length = layout.segment.shape[1]
    query = (torch.randn(BATCH, HEADS, length, HEAD_DIM, generator=generator) * 1.5).to(dtype)
    key = (torch.randn(BATCH, KV_HEADS, length, HEAD_DIM, generator=generator) * 1.5).to(dtype)
    return LayerAttention(query, key, layout.causal_mask(), 1.0 / math.sqrt(HEAD_DIM))


def explicit_probabilities(attention: LayerAttention) -> torch.Tensor:
    """(B, H, T, S) float64 softmax of the whole logit matrix; rows that see no key are 0."""
    group = attention.query.shape[1] // attention.key.shape[1]
    key = attention.key.double().repeat_interleave(group, dim=1)
    logits = attention.query.double() @ key.transpose(-1, -2) * attention.scale
    logits = logits.masked_fill(~attention.allowed, float("-inf"))
    return logits.softmax(dim=-1).nan_to_num(0.0)


def explicit_cross_and_self(attention: LayerAttention, layout: SequenceLayout):
    """FitPrune's cross and self scores in float64 from the whole head-max map at once."""
    head_max = explicit_probabilities(attention).amax(dim=1)  # (B, T, S)
    text, visual = layout.text_mask.double(), layout.visual_mask.double()
    cross = (head_max * text[:, :, None]).sum(1) / text.sum(1, keepdim=True)
    self_score = (head_max * visual[:, :, None]).sum(1) / visual.sum(1, keepdim=True)
    return cross, self_score


class ExplicitFitPrune:
    """FitPrune's ranking from the explicit float64 softmax (the reference policy)."""

    def score(self, layer_idx, attention, layout):
        cross, self_score = explicit_cross_and_self(attention, layout)
        return cross * self_score


class ExplicitFastV:
    """FastV's ranking from the explicit float64 softmax of the last row."""

    def score(self, layer_idx, attention, layout):
        return explicit_probabilities(attention)[:, :, -1].mean(dim=1)


@pytest.fixture()
def small_chunks(monkeypatch):
    """A chunk budget of 1/8 of the synthetic layer's logits, so scores take several chunks."""
    length = PREFIX + VISUAL + TEXT
    budget = BATCH * HEADS * length * length // 8
    monkeypatch.setattr(attention_scores, "SCORE_CHUNK_ELEMENTS", budget)
    return budget


# float32 logits of 16-term dot products of values below ~8: absolute error below 1e-5, so each
# probability's relative error is below ~1e-5 and sums of them below 1e-4 relative (rtol 1e-4);
# the float64 reference sees the same (exactly representable) half-precision inputs
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cross_and_self_equal_the_explicit_softmax_within_a_bounded_chunk(dtype, small_chunks):
    layout = _layout()
    attention = _layer_attention(dtype, layout)
    with LargestFloat32() as recorded:
        cross, self_score = cross_and_self_scores(attention, layout)
    assert recorded.largest <= small_chunks < BATCH * HEADS * layout.segment.shape[1] ** 2
    assert cross.dtype == self_score.dtype == torch.float32
    expected_cross, expected_self = explicit_cross_and_self(attention, layout)
    visual = layout.visual_mask
    assert torch.allclose(cross[visual].double(), expected_cross[visual], rtol=1e-4, atol=1e-9)
    assert torch.allclose(self_score[visual].double(), expected_self[visual], rtol=1e-4, atol=1e-9)
    assert not cross[~visual].any() and not self_score[~visual].any()


def test_the_ranking_is_the_explicit_one_in_float32(small_chunks):
    layout = _layout()
    attention = _layer_attention(torch.float32, layout)
    scores = FitPrunePolicy().score(0, attention, layout)
    expected = ExplicitFitPrune().score(0, attention, layout)
    for b in range(BATCH):
        rows = layout.visual_mask[b].nonzero().squeeze(1)
        assert torch.equal(scores[b, rows].argsort(stable=True), expected[b, rows].argsort(stable=True))


def test_fastv_row_and_whole_probabilities_equal_the_explicit_softmax(small_chunks):
    layout = _layout()
    attention = _layer_attention(torch.float32, layout)
    expected = explicit_probabilities(attention)
    assert torch.allclose(FastVPolicy().score(0, attention, layout).double(), expected[:, :, -1].mean(1),
                          rtol=1e-4, atol=1e-9)
    with LargestFloat32() as recorded:
        whole = attention.probabilities()
    assert recorded.largest == whole.numel()  # only the result asked for is whole
    assert torch.allclose(whole.double(), expected, rtol=1e-4, atol=1e-9)


def test_rows_outside_the_weights_are_never_computed():
    layout = _layout()
    attention = _layer_attention(torch.float32, layout)
    computed = []
    original = LayerAttention._probabilities

    def recording(self, rows, columns):
        computed.extend(rows.tolist())
        return original(self, rows, columns)

    LayerAttention._probabilities = recording
    try:
        cross_and_self_scores(attention, layout)
    finally:
        LayerAttention._probabilities = original
    real = layout.text_mask | layout.visual_mask
    assert sorted(computed) == real.any(dim=0).nonzero().squeeze(1).tolist()  # no prefix-only row


def _geometric_fractions(num_layers: int, last: float):
    """Keep fractions falling geometrically to `last` after the final layer."""
    return [last ** ((layer + 1) / num_layers) for layer in range(num_layers)]


def _pruned_run(model, policy, fractions, **inputs):
    decoder = model.get_model()
    decoder.prefill_hook = TokenPruner(policy, FractionSchedule(fractions))
    try:
        with torch.no_grad():
            out = model(use_cache=False, **inputs)
    finally:
        decoder.prefill_hook = None
    return out


def _assert_same_pruning(model, inputs, reference_policy, policy):
    for last in (0.4, 0.1):  # about 60% and 90% of the visual tokens gone by the end
        fractions = _geometric_fractions(model.config.num_hidden_layers, last)
        expected = _pruned_run(model, reference_policy, fractions, **inputs)
        actual = _pruned_run(model, policy, fractions, **inputs)
        assert actual.pruning_trace.counts().tolist() == expected.pruning_trace.counts().tolist()
        for layer in range(model.config.num_hidden_layers):
            for b in range(inputs["input_ids"].shape[0]):
                assert torch.equal(actual.pruning_trace.kept_indices(layer, b),
                                   expected.pruning_trace.kept_indices(layer, b)), (last, layer, b)
        assert torch.equal(actual.logits, expected.logits)


@pytest.mark.parametrize("policy, reference", [(FitPrunePolicy, ExplicitFitPrune), (FastVPolicy, ExplicitFastV)],
                         ids=["fitprune", "fastv"])
def test_tiny_llava_padded_batch_keeps_what_the_explicit_softmax_keeps(tiny, monkeypatch, policy, reference):
    tokenizer, model, processor = tiny
    monkeypatch.setattr(attention_scores, "SCORE_CHUNK_ELEMENTS", 4096)  # several chunks per layer
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    images = sample_images(processor, model.config, len(QUESTIONS))
    _assert_same_pruning(model, dict(input_ids=ids, attention_mask=mask, images=images), reference(), policy())


def test_tiny_llava_next_anyres_batch_keeps_what_the_explicit_softmax_keeps(next_model, monkeypatch):
    tokenizer, model, processor = next_model
    monkeypatch.setattr(attention_scores, "SCORE_CHUNK_ELEMENTS", 4096)
    pictures = [picture(size, seed) for seed, size in enumerate(IMAGE_SIZES)]
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    inputs = dict(input_ids=ids, attention_mask=mask, images=process_images(pictures, processor, model.config),
                  image_sizes=[p.size for p in pictures])
    _assert_same_pruning(model, inputs, ExplicitFitPrune(), FitPrunePolicy())
