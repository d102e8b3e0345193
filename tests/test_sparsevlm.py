"""SparseVLM with token recycling (`llava/model/pruning/sparsevlm.py`): the kept set and the merged states of
a pruned prefill recomputed here from the published rule (arXiv 2410.04417; repository Gumpest/SparseVLMs,
`modelling_sparse_llama.py` and `utils.cluster_and_merge`) on the tiny model's own tensors; exact counts in
half precision and on LLaVA-NeXT; cached generation after recycling against a no-cache recompute."""
import math

import pytest
import torch

from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.model.language_model.layer_probe import LayerProbe
from llava.model.language_model.modeling_llama import LlamaForCausalLM
from llava.model.language_model.sequence_layout import SEGMENT_TEXT, SequenceLayout
from llava.model.pruning.policies import METHOD_LABELS, policy_named
from llava.model.pruning.pruner import TokenPruner
from llava.model.pruning.sparsevlm import SparseVLMPolicy
from tests.helpers import (IMAGE_SIZES, QUESTIONS, TINY_RECIPE_RATIO, assert_pruned_generation_follows, build_prompt,
                           encode_batch, greedy_answers, picture, sample_images)


class CutRecorder:
    """Wraps a pruner: keeps, per layer, the rows entering it, the rows handed to the pruning after attention
    and the rows it gave back."""

    def __init__(self, pruner):
        self.pruner = pruner
        self.entered = {}
        self.cuts = {}

    def before_layer(self, layer_idx, hidden, layout, probe):
        self.entered[layer_idx] = hidden.detach().clone()
        return self.pruner.before_layer(layer_idx, hidden, layout, probe)

    def attention_query(self, layer_idx, layout):
        return self.pruner.attention_query(layer_idx, layout)

    def after_attention(self, layer_idx, hidden, attention_sums, layout):
        out_hidden, out_layout = self.pruner.after_attention(layer_idx, hidden, attention_sums, layout)
        self.cuts[layer_idx] = (hidden.detach().clone(), layout, out_hidden.detach().clone(), out_layout)
        return out_hidden, out_layout


def _recorded_prefill(model, ids, mask, images, **kwargs):
    """A pruned prefill (no cache) with the model's pruner recorded: (recorder, output)."""
    recorder = CutRecorder(model.get_model().prefill_hook)
    with model.prefill_hook_installed(recorder), torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, images=images, use_cache=False, **kwargs)
    return recorder, out


def _merged_tokens(dropped, kept):
    """The repository's merged-token count r when a cut must leave `kept` of its rows and `dropped` go: it
    deletes dropped + r rows by score, recycles int(0.3 x deleted) + 1 of them into int(recycled / 10) + 1
    clusters; the smallest r consistent with that, at most `kept` (brute force)."""
    if dropped == 0 or kept == 0:
        return 0
    return next((r for r in range(1, kept + 1) if (int((dropped + r) * 0.3) + 1) // 10 + 1 == r), kept)


def _rater_scores(layer, first, entering, layout, b):
    """(T,) float64 SparseVLM's score of each row of sample b at a cut: raters = text rows whose softmax
    relevance to the image (visual x text products of the embeddings, softmax over text, mean over visual)
    is above the mean; score = head-mean causal attention of the raters, averaged over raters."""
    embeds, first_layout = first
    visual, text = embeds[b, first_layout.visual_mask[b]].double(), embeds[b, first_layout.text_mask[b]].double()
    relevance = (visual @ text.T).softmax(dim=1).mean(dim=0)
    rater_positions = first_layout.position_ids[b, first_layout.text_mask[b]][relevance > relevance.mean()]
    q, k = layer.self_attn.rotated_query_key(layer.input_layernorm(entering), layout.position_ids)
    q, k = q[b].double(), k[b].double().repeat_interleave(q.shape[1] // k.shape[1], dim=0)
    logits = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~layout.causal_mask()[b, 0], -math.inf)
    raters = layout.text_mask[b] & torch.isin(layout.position_ids[b], rater_positions)
    return logits.softmax(dim=-1).mean(dim=0)[raters].mean(dim=0)


def _density_peaks(points, k):
    """DPC-KNN as published, in float64 and plain loops: (centres in score order, members of each centre)."""
    x = points.double()
    n = len(x)
    dist = [[(x[i] - x[j]).norm().item() / math.sqrt(x.shape[1]) for j in range(n)] for i in range(n)]
    density = [math.exp(-sum(v * v for v in sorted(dist[i])[:k]) / k) for i in range(n)]
    farthest = max(max(row) for row in dist)
    parent = [min([dist[i][j] for j in range(n) if density[j] > density[i]], default=farthest) for i in range(n)]
    centres = sorted(range(n), key=lambda i: -parent[i] * density[i])[:k]
    members = {c: [] for c in centres}
    for i in range(n):
        members[i if i in members else min(centres, key=lambda c: dist[i][c])].append(i)
    return centres, members


def _expected_cut(model, recorder, layer_idx, b, kept):
    """Rows of sample b at a cut to `kept` visual rows: (kept rows, {centre row: float64 merged state})."""
    hidden, layout, _, _ = recorder.cuts[layer_idx]
    first = (recorder.entered[0], recorder.cuts[0][1])
    scores = _rater_scores(model.get_model().layers[layer_idx], first, recorder.entered[layer_idx], layout, b)
    rows = layout.visual_mask[b].nonzero().squeeze(1).tolist()
    r = _merged_tokens(len(rows) - kept, kept)
    deleted = sorted(rows, key=lambda row: (scores[row].item(), row))[:len(rows) - kept + r]
    recycled = sorted(deleted, key=lambda row: (-scores[row].item(), row))[:int(len(deleted) * 0.3) + 1]
    merged = {}
    if r:
        centres, members = _density_peaks(hidden[b, recycled], r)
        merged = {recycled[c]: hidden[b, [recycled[m] for m in members[c]]].double().mean(dim=0) for c in centres}
    return set(rows) - set(deleted) | set(merged), merged


def test_recycling_keeps_the_published_set_and_merges_each_cluster_into_its_centre(tiny):
    tokenizer, model, processor = tiny
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    assert not bool(mask[:, 0].all())  # a left-padded batch
    schedule = model.set_pruning(TINY_RECIPE_RATIO, policy="sparsevlm").schedule
    recorder, out = _recorded_prefill(model, ids, mask, sample_images(processor, model.config, len(QUESTIONS)))
    trace = out.pruning_trace
    counts = trace.counts()
    start = out.sequence_layout.initial_visual
    assert counts.tolist() == [schedule.keep_counts(layer, start).tolist() for layer in range(len(counts))]
    cut_layers = [layer for layer in recorder.cuts if recorder.cuts[layer][1] is not recorder.cuts[layer][3]]
    assert len(cut_layers) == 3
    clusters = []
    for layer in cut_layers:
        hidden, layout, out_hidden, out_layout = recorder.cuts[layer]
        for b in range(len(QUESTIONS)):
            kept_rows, merged = _expected_cut(model, recorder, layer, b, int(counts[layer, b]))
            clusters.append(len(merged))
            assert set(trace.kept_indices(layer, b).tolist()) == set(layout.visual_index[b, sorted(kept_rows)].tolist())
            row_of = {int(p): r for r, p in enumerate(out_layout.position_ids[b].tolist()) if out_layout.key_mask[b, r]}
            for row in kept_rows:
                state = out_hidden[b, row_of[int(layout.position_ids[b, row])]]
                if row in merged:
                    # a float32 mean of at most ~25 states against float64: rounding below 25 x 6e-8 relative
                    assert torch.allclose(state.double(), merged[row], rtol=1e-5, atol=1e-6), (layer, b, row)
                else:
                    assert torch.equal(state, hidden[b, row])
    assert min(clusters) >= 1 and max(clusters) >= 2  # the clustering, not only a mean, is exercised


@pytest.fixture(scope="module", params=[torch.float16, torch.bfloat16], ids=str)
def half_model(request, tiny_checkpoint):
    tokenizer, model, processor, _ = load_pretrained_model(str(tiny_checkpoint), None, "llava-v1.5-tiny",
                                                           device="cpu", torch_dtype=request.param)
    yield request.param, tokenizer, model, processor
    model.set_pruning()


def _changed_rows(recorder, counts):
    """Per cut and sample: (kept rows whose state differs from what entered the pruning, merged-token count)."""
    changed = []
    for layer, (hidden, layout, out_hidden, out_layout) in recorder.cuts.items():
        if layout is out_layout:
            continue
        for b in range(hidden.shape[0]):
            before = {int(p): hidden[b, r] for r, p in enumerate(layout.position_ids[b].tolist())
                      if layout.visual_mask[b, r]}
            after = [(int(p), out_hidden[b, r]) for r, p in enumerate(out_layout.position_ids[b].tolist())
                     if out_layout.visual_mask[b, r]]
            kept = int(counts[layer, b])
            differ = sum(not torch.equal(state, before[p]) for p, state in after)
            changed.append((differ, _merged_tokens(int(layout.visual_mask[b].sum()) - kept, kept)))
    return changed


def test_half_precision_recycles_within_the_schedule(half_model):
    # which rows win may differ between precisions: counts, order and the number of replaced rows are checked
    dtype, tokenizer, model, processor = half_model
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    images = sample_images(processor, model.config, len(QUESTIONS)).to(dtype)
    schedule = model.set_pruning(TINY_RECIPE_RATIO, policy="sparsevlm").schedule
    assert_pruned_generation_follows(model, ids, mask, images, schedule)
    recorder, out = _recorded_prefill(model, ids, mask, images)
    changed = _changed_rows(recorder, out.pruning_trace.counts())
    assert all(differ <= merged for differ, merged in changed) and sum(differ for differ, _ in changed) > 0


def test_llava_next_samples_with_different_visual_tokens_each_recycle_to_their_own_count(next_model):
    tokenizer, model, processor = next_model
    images = [picture(size, seed) for seed, size in enumerate(IMAGE_SIZES)]
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    fractions = model.set_pruning(TINY_RECIPE_RATIO, policy="sparsevlm").schedule.keep_fractions
    recorder, out = _recorded_prefill(model, ids, mask, process_images(images, processor, model.config),
                                      image_sizes=[i.size for i in images])
    n = out.sequence_layout.initial_visual.tolist()
    assert len(set(n)) > 1
    trace = out.pruning_trace
    assert trace.counts().tolist() == [[int(math.floor(share * k + 0.5)) for k in n] for share in fractions]
    kept = [trace.kept_indices(layer, b) for layer in range(len(fractions)) for b in range(len(n))]
    assert all(torch.equal(indices, indices.sort().values) for indices in kept)
    changed = _changed_rows(recorder, out.pruning_trace.counts())
    assert all(differ <= merged for differ, merged in changed) and sum(differ for differ, _ in changed) > 0


class PromptRaters(SparseVLMPolicy):
    """SparseVLM whose raters are chosen from the first `prompt_rows` rows only: a recompute appends the
    generated tokens as text rows, which the cached prefill never saw."""

    def __init__(self, prompt_rows):
        super().__init__()
        self.prompt_rows = prompt_rows

    def prepare(self, probe):
        layout, p = probe.layout, self.prompt_rows
        prompt = SequenceLayout(layout.segment[:, :p], layout.position_ids[:, :p], layout.visual_index[:, :p],
                                layout.initial_visual)
        super().prepare(LayerProbe(probe.layer, probe.final_norm, probe.hidden[:, :p], prompt))


def test_cached_generation_after_recycling_equals_recompute(tiny):
    # one no-cache prefill of the prompt and the cached answer (teacher forcing): by causality its rows after
    # the prompt are each decode step recomputed, with the prompt's raters, cuts and merged tokens
    tokenizer, model, processor = tiny
    ids = tokenizer_image_token(build_prompt(QUESTIONS[3]), tokenizer, return_tensors="pt")[None]
    images = sample_images(processor, model.config, 1)
    schedule = model.set_pruning(TINY_RECIPE_RATIO, policy="sparsevlm").schedule
    cached = greedy_answers(model, tokenizer, ids, None, images, max_new_tokens=8)[0]
    assert len(set(cached)) > 1
    spliced = model.splice_images(ids, None, images)
    fed = torch.tensor([cached[:-1]])
    segment = torch.cat([spliced.layout.segment.long(), torch.full_like(fed, SEGMENT_TEXT)], dim=1)
    grid_index = torch.cat([spliced.layout.visual_index, torch.full_like(fed, -1)], dim=1)
    layout = SequenceLayout.from_segments(segment, grid_index)
    embeds = torch.cat([spliced.inputs_embeds, model.get_model().embed_tokens(fed)], dim=1)
    pruner = TokenPruner(PromptRaters(spliced.inputs_embeds.shape[1]), schedule)
    with model.prefill_hook_installed(pruner), torch.no_grad():
        out = LlamaForCausalLM.forward(model, inputs_embeds=embeds, use_cache=False, sequence_layout=layout)
    assert out.logits[0, -len(cached):].argmax(dim=-1).tolist() == cached


class MiscountingRecycler(SparseVLMPolicy):
    """Recycles, then keeps one row too many."""

    def recycle(self, layer_idx, hidden, layout, scores, drop):
        hidden, removed = super().recycle(layer_idx, hidden, layout, scores, drop)
        first = removed.long().argmax(dim=1)
        return hidden, removed.scatter(1, first[:, None], False)


def test_a_recycler_must_remove_exactly_the_scheduled_rows(tiny):
    tokenizer, model, processor = tiny
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS[:2]], "left")
    schedule = model.set_pruning(TINY_RECIPE_RATIO, policy="sparsevlm").schedule
    with model.prefill_hook_installed(TokenPruner(MiscountingRecycler(), schedule)), torch.no_grad():
        with pytest.raises(ValueError) as err:
            model(input_ids=ids, attention_mask=mask, images=sample_images(processor, model.config, 2), use_cache=False)
    n = model.get_model().num_visual_tokens()
    first_cut = next(layer for layer in range(model.config.num_hidden_layers)
                     if int(schedule.keep_counts(layer, torch.tensor([n]))[0]) < n)
    drop = n - int(schedule.keep_counts(first_cut, torch.tensor([n]))[0])
    assert str(err.value) == f"sparsevlm recycled rows but did not remove exactly {[drop, drop]} visual rows"


def test_sparsevlm_is_named_in_the_registry_beside_the_drop_only_version():
    assert (METHOD_LABELS["sparsevlm"], METHOD_LABELS["sparsevlm-drop"]) == ("SparseVLM", "SparseVLM (drop-only)")
    full, drop_only = policy_named("sparsevlm"), policy_named("sparsevlm-drop")
    assert isinstance(full, SparseVLMPolicy) and not hasattr(drop_only, "recycle")
