"""Prompt, image and batch builders shared by the tests."""
import torch
from PIL import Image

from llava.conversation import conv_templates
from llava.mm_utils import process_images, tokenizer_image_token


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
