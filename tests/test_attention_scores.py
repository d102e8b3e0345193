"""A layer's attention with the statistics a scoring policy reads, a chunk of query rows at a
time, against an explicit float64 softmax of the whole matrix (and transformers' eager attention):
same statistics, outputs and kept sets, and no chunk larger than its budget."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from llava.mm_utils import process_images
import transformers

from llava.model.language_model import attention_scores, decoder_layer
from llava.model.language_model.attention_scores import AttentionQuery, attend
from llava.model.language_model.modeling_llama import LlamaModel
from llava.model.language_model.sequence_layout import SEGMENT_PAD, SEGMENT_PREFIX, SEGMENT_TEXT, SEGMENT_VISUAL, SequenceLayout
from llava.model.pruning.policies import FastVPolicy, FitPrunePolicy, cross_and_self_scores, fitprune_attention_query
from llava.model.pruning.pruner import TokenPruner
from llava.model.pruning.schedules import FractionSchedule
from tests.helpers import IMAGE_SIZES, QUESTIONS, build_prompt, encode_batch, picture, sample_images

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


def _layout(padded: bool = True):
    segments = [SEGMENT_PREFIX] * PREFIX + [SEGMENT_VISUAL] * VISUAL + [SEGMENT_TEXT] * TEXT
    rows = [[SEGMENT_PAD] * PAD + segments[PAD:] if padded else segments, segments]  # sample 0 left-padded if `padded`
    segment = torch.tensor(rows)
    visual_index = torch.where(segment == SEGMENT_VISUAL, (segment == SEGMENT_VISUAL).cumsum(1) - 1, -1)
    return SequenceLayout.from_segments(segment, visual_index)


def _qkv(dtype, length):
    generator = torch.Generator().manual_seed(0)
    shapes = [(BATCH, HEADS, length, HEAD_DIM)] + [(BATCH, KV_HEADS, length, HEAD_DIM)] * 2
    return [(torch.randn(*shape, generator=generator) * 1.5).to(dtype) for shape in shapes]


def explicit_probabilities(query, key, allowed) -> torch.Tensor:
    """(B, H, T, S) float64 softmax of the whole logit matrix, computed in the model's dtype as
    our attention rounds them (q / sqrt(d) k^T, masked keys at the dtype minimum)."""
    group = query.shape[1] // key.shape[1]
    logits = (query * HEAD_DIM ** -0.5) @ key.repeat_interleave(group, dim=1).transpose(-1, -2)
    logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
    return logits.double().softmax(dim=-1)


def explicit_sums(query, key, allowed, statistics: AttentionQuery) -> torch.Tensor:
    """(B, W, C) float64: the statistics from the whole probability tensor at once."""
    probs = explicit_probabilities(query, key, allowed)[..., statistics.columns]
    combined = probs.amax(dim=1) if statistics.heads == "max" else probs.mean(dim=1)
    return statistics.row_weights.double() @ combined


def _tolerance(dtype, query, key):
    """Relative tolerance of a float32 softmax of logits rounded to `dtype`.

    Chunked and whole matrix products may round a logit differently by one unit in the last
    place (eps x |logit|), which changes its probability by that much relatively; the fused
    kernel's log-sum-exp comes from unrounded float32 logits, so a probability from it differs
    from the rounded logits' softmax by the same order; float32 sums of about 10^3 terms add
    ~1e-5. So rtol = 2 eps max|logit| + 1e-4.
    """
    if dtype == torch.float32:
        return 1e-4
    largest = (query.float().abs().amax() * key.float().abs().amax() * HEAD_DIM ** 0.5).item()
    return 2 * torch.finfo(dtype).eps * largest + 1e-4


@pytest.fixture()
def small_chunks(monkeypatch):
    """A chunk budget of 1/8 of the synthetic layer's logits, so attention takes several chunks."""
    length = PREFIX + VISUAL + TEXT
    budget = BATCH * HEADS * length * length // 8
    monkeypatch.setattr(attention_scores, "SCORE_CHUNK_ELEMENTS", budget)
    return budget


@pytest.fixture(params=["fused kernel's", "softmax's"])
def normalisers(request, monkeypatch):
    """Where the statistics take each row's softmax normaliser from: the CPU fused kernel's
    log-sum-exp, or their own softmax (the path of devices without that kernel); checks it was taken."""
    taken = []
    if request.param == "softmax's":
        monkeypatch.setattr(attention_scores, "_CPU_FUSED_ATTENTION", None)
        spied = "_softmax_columns"
    else:
        assert attention_scores._CPU_FUSED_ATTENTION is not None, "this PyTorch lacks the CPU fused kernel"
        spied = "_normalised_columns"
    original = getattr(attention_scores, spied)
    monkeypatch.setattr(attention_scores, spied, lambda *args: taken.append(1) or original(*args))
    yield request.param
    assert taken, f"the {request.param} normalisers were not used"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_fitprune_statistics_and_output_equal_the_explicit_softmax_within_a_bounded_chunk(dtype, small_chunks,
                                                                                         normalisers):
    layout = _layout()
    query, key, value = _qkv(dtype, layout.segment.shape[1])
    allowed = layout.causal_mask()
    statistics = fitprune_attention_query(layout)
    with LargestFloat32() as recorded:
        output, sums, probs = attend(query, key, value, allowed, statistics)
    assert probs is None and sums.dtype == torch.float32
    length = layout.segment.shape[1]
    # the statistics stay within a chunk; fused attention makes one float copy of the (B, 1, T, T) mask
    assert recorded.largest <= max(small_chunks, BATCH * length**2) < BATCH * HEADS * length**2
    with LargestFloat32() as statistics_only:
        attention_scores.attention_statistics(query, key, allowed, statistics)
    assert statistics_only.largest <= small_chunks
    rtol = _tolerance(dtype, query, key)
    assert torch.allclose(sums.double(), explicit_sums(query, key, allowed, statistics), rtol=rtol, atol=1e-9)
    fused = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=allowed, enable_gqa=True)
    assert torch.equal(output, fused)


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
def test_fitprune_ranking_is_the_explicit_one_in_float32(small_chunks, normalisers, padded):
    layout = _layout(padded)
    query, key, value = _qkv(torch.float32, layout.segment.shape[1])
    statistics = fitprune_attention_query(layout)
    _, sums, _ = attend(query, key, value, layout.causal_mask(), statistics)
    expected = explicit_sums(query, key, layout.causal_mask(), statistics).float()
    scores, reference = FitPrunePolicy().score(0, sums, layout), FitPrunePolicy().score(0, expected, layout)
    cross, self_score = cross_and_self_scores(sums, layout)
    assert not cross[~layout.visual_mask].any() and not self_score[~layout.visual_mask].any()
    for b in range(BATCH):
        rows = layout.visual_mask[b].nonzero().squeeze(1)
        assert torch.equal(scores[b, rows].argsort(stable=True), reference[b, rows].argsort(stable=True))


def test_fastv_statistics_and_whole_probabilities_equal_the_explicit_softmax(small_chunks):
    layout = _layout()
    query, key, value = _qkv(torch.float32, layout.segment.shape[1])
    allowed = layout.causal_mask()
    statistics = FastVPolicy().attention_query(0, layout)
    _, sums, probs = attend(query, key, value, allowed, statistics, keep_probabilities=True)
    assert torch.allclose(sums.double(), explicit_sums(query, key, allowed, statistics), rtol=1e-4, atol=1e-9)
    expected = explicit_probabilities(query, key, allowed)
    assert torch.allclose(probs.double(), expected, rtol=1e-4, atol=1e-9)


def test_without_statistics_the_layer_uses_fused_attention(monkeypatch):
    layout = _layout()
    query, key, value = _qkv(torch.float32, layout.segment.shape[1])
    monkeypatch.setattr(attention_scores, "_row_chunk_size", lambda *a: pytest.fail("chunked path taken"))
    output, sums, probs = attend(query, key, value, layout.causal_mask())
    assert sums is None and probs is None
    fused = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=layout.causal_mask(),
                                                            enable_gqa=True)
    assert torch.equal(output, fused)


@pytest.mark.parametrize("num_kv_heads", [4, 2])
def test_output_attentions_equal_transformers_eager_attention(num_kv_heads):
    config = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=num_kv_heads, initializer_range=0.1)
    torch.manual_seed(0)
    reference = transformers.LlamaModel(config).eval()
    ours = LlamaModel(config).eval()
    ours.load_state_dict(reference.state_dict())
    embeds = torch.randn(2, 29, config.hidden_size)
    mask = torch.ones(2, 29, dtype=torch.long)
    mask[0, :5] = 0  # left padding
    with torch.no_grad():
        expected = reference(inputs_embeds=embeds, attention_mask=mask, output_attentions=True).attentions
        got = ours(inputs_embeds=embeds, attention_mask=mask, output_attentions=True).attentions
    real = mask.bool()[:, None, :, None]
    for layer_expected, layer_got in zip(expected, got):
        assert ((layer_got - layer_expected).abs() * real).max() < 1e-5


def _geometric_fractions(num_layers: int, last: float):
    """Keep fractions falling geometrically to `last` after the final layer."""
    return [last ** ((layer + 1) / num_layers) for layer in range(num_layers)]


@pytest.fixture()
def explicit_statistics(monkeypatch):
    """A switch: while on, every layer's statistics are replaced by the explicit float64 ones
    computed from the same queries and keys (the reference ranking)."""
    state = {"on": False}
    original = decoder_layer.attend

    def attend_with_reference(query, key, value, allowed, statistics=None, keep_probabilities=False):
        output, sums, probs = original(query, key, value, allowed, statistics, keep_probabilities)
        if state["on"] and statistics is not None:
            sums = explicit_sums(query, key, allowed, statistics).float()
        return output, sums, probs

    monkeypatch.setattr(decoder_layer, "attend", attend_with_reference)
    monkeypatch.setattr(attention_scores, "SCORE_CHUNK_ELEMENTS", 4096)  # several chunks per layer
    return state


def _pruned_run(model, policy, fractions, **inputs):
    with model.prefill_hook_installed(TokenPruner(policy, FractionSchedule(fractions))), torch.no_grad():
        return model(use_cache=False, **inputs)


def _assert_same_pruning(model, inputs, policy, explicit_statistics):
    for last in (0.4, 0.1):  # about 60% and 90% of the visual tokens gone by the end
        fractions = _geometric_fractions(model.config.num_hidden_layers, last)
        explicit_statistics["on"] = True
        expected = _pruned_run(model, policy, fractions, **inputs)
        explicit_statistics["on"] = False
        actual = _pruned_run(model, policy, fractions, **inputs)
        assert actual.pruning_trace.counts().tolist() == expected.pruning_trace.counts().tolist()
        for layer in range(model.config.num_hidden_layers):
            for b in range(inputs["input_ids"].shape[0]):
                assert torch.equal(actual.pruning_trace.kept_indices(layer, b),
                                   expected.pruning_trace.kept_indices(layer, b)), (last, layer, b)
        assert torch.equal(actual.logits, expected.logits)


@pytest.mark.parametrize("policy", [FitPrunePolicy, FastVPolicy], ids=["fitprune", "fastv"])
def test_tiny_llava_padded_batch_keeps_what_the_explicit_softmax_keeps(tiny, explicit_statistics, policy):
    tokenizer, model, processor = tiny
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    images = sample_images(processor, model.config, len(QUESTIONS))
    _assert_same_pruning(model, dict(input_ids=ids, attention_mask=mask, images=images), policy(), explicit_statistics)


def test_tiny_llava_next_anyres_batch_keeps_what_the_explicit_softmax_keeps(next_model, explicit_statistics):
    tokenizer, model, processor = next_model
    pictures = [picture(size, seed) for seed, size in enumerate(IMAGE_SIZES)]
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    inputs = dict(input_ids=ids, attention_mask=mask, images=process_images(pictures, processor, model.config),
                  image_sizes=[p.size for p in pictures])
    _assert_same_pruning(model, inputs, FitPrunePolicy(), explicit_statistics)


def test_statistics_columns_must_increase():
    weights = torch.ones(1, 1, 4)
    with pytest.raises(ValueError, match="strictly increasing"):
        AttentionQuery(weights, torch.tensor([2, 1]), heads="max")
