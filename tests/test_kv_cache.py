"""The per-layer KV cache: decode steps write into room past the held tokens (no copy of the
whole cache per step), forks never see each other's tokens, and a long cached decode still
equals recomputing the sequence."""
import torch
import transformers

from llava.model.language_model.kv_cache import DECODE_RESERVE_TOKENS, PrunedKVCache
from llava.model.language_model.modeling_llama import LlamaForCausalLM

BATCH, HEADS, HEAD_DIM = 2, 3, 4


def _step(length: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    keys = torch.randn(BATCH, HEADS, length, HEAD_DIM, generator=generator)
    values = torch.randn(BATCH, HEADS, length, HEAD_DIM, generator=generator)
    mask = torch.rand(BATCH, length, generator=generator) > 0.2
    return keys, values, mask


def _decode(cache: PrunedKVCache, steps: int, first_seed: int, layer: int = 0):
    """Appends `steps` one-token steps to `layer`; returns what was appended and the buffer
    addresses seen after each step."""
    appended, addresses = [], []
    for i in range(steps):
        step = _step(1, first_seed + i)
        cache.append(layer, *step)
        appended.append(step)
        addresses.append(cache[layer][0].data_ptr())
    return appended, addresses


def _concatenated(pieces):
    return (torch.cat([p[0] for p in pieces], dim=2), torch.cat([p[1] for p in pieces], dim=2),
            torch.cat([p[2] for p in pieces], dim=1))


def test_appends_hold_the_concatenation_and_reallocate_rarely():
    cache = PrunedKVCache(2, torch.zeros(BATCH, dtype=torch.long))
    prefill = _step(50, seed=0)
    held = cache.append(0, *prefill)
    assert all(a is b for a, b in zip(held, prefill)), "the prefill's tensors are kept as they come"
    steps = 3 * DECODE_RESERVE_TOKENS
    appended, addresses = _decode(cache, steps, first_seed=1)
    keys, values, mask = _concatenated([prefill] + appended)
    assert torch.equal(cache[0][0], keys) and torch.equal(cache[0][1], values)
    assert torch.equal(cache.append(1, *prefill)[2], prefill[2]) and cache.layer_lengths() == [50 + steps, 50]
    reallocations = len(set(addresses))
    assert 1 <= reallocations <= 3, f"{reallocations} buffers for {steps} steps: the cache is copied per step"
    # the held tokens' bytes only: keys and values float32, the mask bool
    assert cache.nbytes() == sum(2 * BATCH * HEADS * n * HEAD_DIM * 4 + BATCH * n for n in cache.layer_lengths())


def test_the_mask_of_the_held_tokens_is_the_concatenation():
    cache = PrunedKVCache(1, torch.zeros(BATCH, dtype=torch.long))
    prefill = _step(5, seed=3)
    cache.append(0, *prefill)
    appended, _ = _decode(cache, 70, first_seed=10)
    last = cache.append(0, *_step(2, seed=99))
    expected = _concatenated([prefill] + appended + [_step(2, seed=99)])
    assert all(torch.equal(got, want) for got, want in zip(last, expected))


def test_forks_and_the_original_never_see_each_others_tokens():
    original = PrunedKVCache(1, torch.zeros(BATCH, dtype=torch.long))
    prefill = _step(6, seed=0)
    original.append(0, *prefill)
    original.append(0, *_step(1, seed=1))  # the buffer now has room past the held tokens
    before = original[0][0].clone()
    first, second = original.fork(), original.fork()
    first_steps, _ = _decode(first, 4, first_seed=20)
    second_steps, _ = _decode(second, 4, first_seed=40)
    own_steps, _ = _decode(original, 2, first_seed=60)
    assert torch.equal(first[0][0], torch.cat([before] + [s[0] for s in first_steps], dim=2))
    assert torch.equal(second[0][0], torch.cat([before] + [s[0] for s in second_steps], dim=2))
    assert torch.equal(original[0][0], torch.cat([before] + [s[0] for s in own_steps], dim=2))
    assert first.layer_lengths() == second.layer_lengths() == [11] and original.layer_lengths() == [9]


def test_a_decode_past_several_reallocations_equals_recompute():
    config = transformers.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1)
    torch.manual_seed(4)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(3, config.vocab_size, (2, 9))
    steps = 2 * DECODE_RESERVE_TOKENS + 10
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=steps, do_sample=False, use_cache=True, eos_token_id=None,
                                pad_token_id=0)
        tokens = ids
        for _ in range(steps):
            logits = model(input_ids=tokens, use_cache=False).logits
            tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, tokens)
