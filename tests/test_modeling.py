"""Our LLaMA decoder and LLaVA model without pruning: parity with transformers 4.31,
KV-cache decoding, batching, image splicing."""
import pytest
import torch
import transformers

from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import tokenizer_image_token
from llava.model.language_model.modeling_llama import LlamaForCausalLM
from tests.helpers import QUESTIONS, build_prompt, encode_batch, greedy_answers, sample_images, strip_pad


def _llama_config(num_kv_heads: int) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=8,
        num_key_value_heads=num_kv_heads,
        initializer_range=0.1,
    )


@pytest.mark.parametrize("num_kv_heads", [8, 2])
def test_logits_match_transformers_llama(num_kv_heads):
    config = _llama_config(num_kv_heads)
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(config).eval()
    ours = LlamaForCausalLM(config).eval()
    missing, unexpected = ours.load_state_dict(reference.state_dict(), strict=True), None
    embeds = torch.randn(2, 23, config.hidden_size)
    with torch.no_grad():
        expected = reference(inputs_embeds=embeds).logits
        got = ours(inputs_embeds=embeds).logits
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4


def test_state_dict_keys_match_transformers_llama():
    config = _llama_config(2)
    assert set(LlamaForCausalLM(config).state_dict()) == set(transformers.LlamaForCausalLM(config).state_dict())


def _greedy_by_recompute(model, ids, steps):
    """Greedy tokens computed by re-running the whole sequence at every step (no cache)."""
    tokens = ids
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=tokens, use_cache=False).logits
        tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens


def test_cached_greedy_equals_recompute():
    config = _llama_config(2)
    torch.manual_seed(1)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(3, config.vocab_size, (2, 9))
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=12, do_sample=False, use_cache=True, eos_token_id=None,
                                pad_token_id=0)
    assert torch.equal(cached, _greedy_by_recompute(model, ids, 12))


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batch_of_four_equals_each_alone(tiny, padding_side):
    tokenizer, model, processor = tiny
    prompts = [build_prompt(q) for q in QUESTIONS]
    images = sample_images(processor, model.config, 4)
    ids, mask = encode_batch(tokenizer, prompts, padding_side)
    assert len(set(mask.sum(1).tolist())) == 4, "questions must have different lengths"
    batched = greedy_answers(model, tokenizer, ids, mask, images)
    for b, prompt in enumerate(prompts):
        alone_ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")[None]
        alone = greedy_answers(model, tokenizer, alone_ids, None, images[b:b + 1])[0]
        assert strip_pad(batched[b]) == strip_pad(alone)


def test_llava_cached_generation_equals_recompute(tiny):
    tokenizer, model, processor = tiny
    ids = tokenizer_image_token(build_prompt(QUESTIONS[0]), tokenizer, return_tensors="pt")[None]
    images = sample_images(processor, model.config, 1)
    cached = greedy_answers(model, tokenizer, ids, None, images, max_new_tokens=8)[0]
    spliced = model.splice_images(ids, None, images)
    embeds = spliced.inputs_embeds
    generated = []
    for _ in range(8):
        with torch.no_grad():
            logits = model(inputs_embeds=embeds, use_cache=False).logits
        token = int(logits[0, -1].argmax())
        generated.append(token)
        if token == model.config.eos_token_id:
            break
        embeds = torch.cat([embeds, model.get_model().embed_tokens(torch.tensor([[token]]))], dim=1)
    assert cached[:len(generated)] == generated


def test_splice_places_features_where_image_token_was(tiny):
    tokenizer, model, processor = tiny
    prompts = [build_prompt(QUESTIONS[0]), build_prompt(QUESTIONS[3])]
    ids, mask = encode_batch(tokenizer, prompts, "right")
    images = sample_images(processor, model.config, 2)
    spliced = model.splice_images(ids, mask, images)
    features = model.encode_images(images)
    num_visual = features.shape[1]
    embed = model.get_model().embed_tokens
    length = spliced.inputs_embeds.shape[1]
    for b in range(2):
        real_ids = ids[b][mask[b].bool()]
        hole = int((real_ids == IMAGE_TOKEN_INDEX).nonzero())
        pad = length - (len(real_ids) - 1 + num_visual)
        row = spliced.inputs_embeds[b]
        assert torch.equal(row[pad + hole:pad + hole + num_visual], features[b])
        assert torch.equal(row[pad:pad + hole], embed(real_ids[:hole]))
        assert torch.equal(row[pad + hole + num_visual:], embed(real_ids[hole + 1:]))
        assert spliced.attention_mask[b].tolist() == [0] * pad + [1] * (length - pad)
        visual_rows = (spliced.layout.visual_index[b] >= 0).nonzero().flatten()
        assert visual_rows.tolist() == list(range(pad + hole, pad + hole + num_visual))
    # the upstream 5-tuple interface returns the same embeddings
    _, mask_out, _, embeds_out, _ = model.prepare_inputs_labels_for_multimodal(ids, mask, None, None, images)
    assert torch.equal(embeds_out, spliced.inputs_embeds)
    assert torch.equal(mask_out, spliced.attention_mask)


def test_splice_rejects_image_count_mismatch(tiny):
    tokenizer, model, processor = tiny
    two_images = build_prompt("Compare <image>\nwith this one.")
    ids, mask = encode_batch(tokenizer, [two_images, build_prompt(QUESTIONS[1])])
    images = sample_images(processor, model.config, 2)
    with pytest.raises(ValueError, match=r"2 images were given .* \[2, 1\] <image> placeholders"):
        model.splice_images(ids, mask, images)
    with pytest.raises(ValueError, match="sample 0 has 2 <image> placeholders but 1 images were given"):
        model.splice_images(ids, mask, [images[0], images[1]])


def test_text_only_sample_in_a_batch(tiny):
    tokenizer, model, processor = tiny
    prompts = [build_prompt(QUESTIONS[0]), build_prompt("Say hello.", image=False)]
    ids, mask = encode_batch(tokenizer, prompts, "left")
    images = sample_images(processor, model.config, 2)
    batched = greedy_answers(model, tokenizer, ids, mask, images)
    alone_ids = tokenizer_image_token(prompts[1], tokenizer, return_tensors="pt")[None]
    alone = greedy_answers(model, tokenizer, alone_ids, None, None)[0]
    assert strip_pad(batched[1]) == strip_pad(alone)


def test_generation_computes_logits_of_the_last_row_only(tiny, monkeypatch):
    tokenizer, model, processor = tiny
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    images = sample_images(processor, model.config, len(QUESTIONS))
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, images=images, use_cache=False)
        last = model(input_ids=ids, attention_mask=mask, images=images, use_cache=False, num_logits_to_keep=1)
    assert full.logits.shape[1] > 1 and last.logits.shape[1] == 1
    assert torch.equal(last.logits[:, 0], full.logits[:, -1])
    rows_through_head = []
    head = model.lm_head.forward
    monkeypatch.setattr(model.lm_head, "forward", lambda x: rows_through_head.append(x.shape[1]) or head(x))
    steps = 4
    with torch.inference_mode():
        model.generate(ids, attention_mask=mask, images=images, do_sample=False, max_new_tokens=steps,
                       min_new_tokens=steps, use_cache=True)
    assert rows_through_head == [1] * steps  # the prefill included


def test_a_loss_refuses_partial_logits(tiny):
    tokenizer, model, _ = tiny
    ids, mask = encode_batch(tokenizer, ["hello there"], "left")
    with pytest.raises(ValueError, match="a loss needs the logits of every row"):
        model(input_ids=ids, attention_mask=mask, labels=ids, num_logits_to_keep=1)
