"""Constants of the tiny test checkpoints, and the prompt, image, batch and greedy-answer helpers
shared by the tests."""
import json

import torch
from PIL import Image

from llava.conversation import conv_templates
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.language_model.sequence_layout import SEGMENT_PREFIX, SEGMENT_TEXT
from fitprune.lab.tiny_checkpoint import TinyLlavaSpec

TINY_RECIPE_RATIO = 50.0
# visual tokens left after each of the tiny model's 4 layers (it has 144)
TINY_KEEP_COUNTS = (144, 97, 61, 30)

# the tiny LLaVA-NeXT (anyres) checkpoint
NEXT_SPEC = TinyLlavaSpec(version="v1.6", image_size=24)
NEXT_NAME = "llava-v1.6-tiny"
# (width, height) -> grid (across x down), feature rows x columns kept of the grid's: 2x1, 6 x 12 of
# 6 x 12 (exact width 11, margin 0); 1x3, 18 x 6 of 18 x 6 (exact 5); 3x1, 6 x 14 of 6 x 18 (exact 13,
# margin 2 a side); 2x2, 12 x 12, nothing cropped
IMAGE_SIZES = [(50, 26), (30, 100), (90, 40), (50, 50)]


def build_prompt(question: str, conv_mode: str = "vicuna_v1", image: bool = True) -> str:
    """The single-turn eval prompt for `question`."""
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], ("<image>\n" if image else "") + question)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


QUESTIONS = [
    "What colour is the square?",
    "Is there a red circle in the image? Answer the question using a single word or phrase.",
    "How many shapes?",
    "Which shape is on the left of the blue triangle, and what colour is it?",
]


def sample_images(processor, config, count: int) -> torch.Tensor:
    """`count` distinct padded images (count, 3, H, W) with random pixels."""
    generator = torch.Generator().manual_seed(1234)
    images = []
    for i in range(count):
        pixels = (torch.rand(20 + 7 * i, 30 + 5 * i, 3, generator=generator) * 255).to(torch.uint8)
        images.append(Image.fromarray(pixels.numpy()))
    return process_images(images, processor, config)


def encode_batch(tokenizer, prompts, padding_side: str = "right"):
    """(input_ids, attention_mask) for prompts holding <image>, padded on one side with id 0."""
    rows = [tokenizer_image_token(p, tokenizer, return_tensors="pt") for p in prompts]
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for b, row in enumerate(rows):
        span = slice(0, len(row)) if padding_side == "right" else slice(length - len(row), length)
        ids[b, span] = row
        mask[b, span] = 1
    return ids, mask


def picture(size, seed=0) -> Image.Image:
    """A random RGB image of `size` (width, height)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size[1], size[0], 3, generator=generator) * 255).to(torch.uint8)
    return Image.fromarray(pixels.numpy())


def greedy_answers(model, tokenizer, ids, mask, images, max_new_tokens=10):
    """Per row, the token ids `generate` adds greedily (cached) after the prompt."""
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=mask, images=images, do_sample=False,
                             max_new_tokens=max_new_tokens, use_cache=True)
    return [row.tolist() for row in out[:, ids.shape[1]:]]


def assert_pruned_generation_follows(model, ids, mask, images, schedule):
    """Greedy-generate 3 tokens from a pruned model and check its prefill trace against `schedule`:
    each layer's live visual counts equal the schedule's, kept indices increase, and the prefill keeps
    every prefix and text token the spliced prompt had. Returns the trace."""
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, images=images, do_sample=False, max_new_tokens=3,
                             use_cache=True)
    assert out.shape[1] > ids.shape[1]
    trace = model.last_pruning_trace
    n = torch.full((ids.shape[0],), model.get_model().num_visual_tokens())
    before = getattr(model.get_model().prefill_hook.policy, "acts_before_layer", False)
    for layer, live in enumerate(trace.counts()):
        assert live.tolist() == schedule.keep_counts(layer, n).tolist()
        entered = trace.entered()[layer].tolist()
        assert entered == (live.tolist() if before else (n if layer == 0 else trace.counts()[layer - 1]).tolist())
        for b in range(ids.shape[0]):
            kept = trace.kept_indices(layer, b)
            assert torch.equal(kept, kept.sort().values)
    with torch.no_grad():
        prefill = model(input_ids=ids, attention_mask=mask, images=images, use_cache=False)
    spliced = model.splice_images(ids, mask, images).layout
    after = prefill.sequence_layout
    for segment in (SEGMENT_PREFIX, SEGMENT_TEXT):
        assert torch.equal((after.segment == segment).sum(dim=1), (spliced.segment == segment).sum(dim=1))
    assert after.visual_count().tolist() == live.tolist()
    return trace


def strip_pad(tokens):
    """`tokens` without its trailing pad ids (0)."""
    while tokens and tokens[-1] == 0:
        tokens = tokens[:-1]
    return tokens


def write_jsonl(path, rows):
    """`rows` as JSON lines (UTF-8) at `path`, its folders made; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
