"""What `python benchmarks/prefill_speed.py` times: a LLaVA-shaped random decoder, its prompt,
and each budget's keep counts.

There is no calibration on a random model, so each budget's keep counts come from a
one-parameter shape found by bisection on `llava.model.pruning.flops.paper_reduction`:

- ``geometric`` (default): keep ``round(V * q**(l + 1))`` visual tokens after layer l;
- ``published``: the keep fractions of the authors' LLaVA-1.5-7B 60% recipe (shipped in
  ``llava/model/pruning/recipes/llava-v1.5-7b.json``) resampled to the layer count, raised to a power.
"""
from __future__ import annotations

import argparse
from typing import List, Tuple

import numpy as np
import torch
import transformers

from llava.model.language_model.sequence_layout import SEGMENT_PREFIX, SEGMENT_TEXT, SEGMENT_VISUAL, SequenceLayout
from llava.model.pruning.flops import DecoderDims, paper_reduction
from llava.model.pruning.recipe import RecipeBook
from llava.model.pruning.recipe_lookup import shipped_recipe_path

# The benchmark's model and prompt: LLaVA-1.5-shaped (576 visual tokens, vicuna_v1 prefix),
# a decoder large enough that matrix products dominate on CPU. All overridable from the CLI.
BENCHMARK_SIZES = {
    "hidden": 1024,
    "intermediate": 2816,
    "layers": 8,
    "heads": 16,
    "kv_heads": None,  # None: one key/value head per query head (no grouped-query attention)
    "vocab": 32000,
    "prefix_tokens": 35,  # ok: benchmark preset, vicuna_v1 system prompt length
    "visual_tokens": 576,  # ok: benchmark preset, LLaVA-1.5 grid (24 x 24)
    "text_tokens": 29,
}
PUBLISHED_SHAPE_MODEL = "llava-v1.5-7b"
PUBLISHED_SHAPE_RATIO = 60.0


def _published_fractions(num_layers: int) -> np.ndarray:
    """Keep fractions after each of `num_layers` layers, from the shipped 7B 60% recipe.

    Layer l of the benchmark model takes the fraction the 7B recipe keeps at the same
    relative depth, (l + 1) / num_layers of the way through its layers.
    """
    path = shipped_recipe_path(PUBLISHED_SHAPE_MODEL)
    if path is None:
        raise FileNotFoundError(f"no shipped recipe for {PUBLISHED_SHAPE_MODEL} under llava/model/pruning/recipes/")
    recipe = RecipeBook.load(path).get(PUBLISHED_SHAPE_RATIO)
    source = np.asarray(recipe.keep_counts, dtype=np.float64) / recipe.num_visual_tokens
    depth = (np.arange(num_layers) + 1) / num_layers  # relative depth at which each layer ends
    index = np.clip(np.ceil(depth * len(source)).astype(int) - 1, 0, len(source) - 1)
    return source[index]


def shape_counts(shape: str, strength: float, num_layers: int, num_visual: int) -> List[int]:
    """Keep counts of a one-parameter shape; `strength` in [0, 1) (0 keeps everything).

    Args:
        shape: "geometric" or "published".
        strength: pruning strength; counts are non-increasing in it, elementwise.
        num_layers: decoder layers.
        num_visual: visual tokens entering layer 0.

    Returns:
        Visual tokens left after each layer, non-increasing.

    Raises:
        ValueError: an unknown shape or a strength outside [0, 1).
    """
    if not 0 <= strength < 1:
        raise ValueError(f"strength must be in [0, 1), got {strength}")
    if shape == "geometric":
        fractions = (1.0 - strength) ** (np.arange(num_layers) + 1.0)
    elif shape == "published":
        fractions = _published_fractions(num_layers) ** (strength / (1.0 - strength))
    else:
        raise ValueError(f"unknown keep-count shape {shape!r}; choose 'geometric' or 'published'")
    counts = np.clip(np.round(fractions * num_visual), 0, num_visual).astype(int)
    return np.minimum.accumulate(counts).tolist()


def fit_keep_counts(dims: DecoderDims, shape: str, ratio: float, num_visual: int, tolerance: float = 1.0) -> List[int]:
    """Keep counts of `shape` whose paper-convention reduction is >= `ratio` and within `tolerance`.

    Bisection on the shape's strength for the weakest pruning that meets the budget.

    Raises:
        ValueError: if the shape cannot reach the budget, or overshoots it by more than `tolerance`.
    """
    def reduction(strength: float) -> float:
        return paper_reduction(dims, shape_counts(shape, strength, dims.num_layers, num_visual), num_visual)

    if reduction(0.0) >= ratio:
        return shape_counts(shape, 0.0, dims.num_layers, num_visual)
    low, high = 0.0, 1.0 - 1e-9
    if reduction(high) < ratio:
        raise ValueError(
            f"shape {shape!r} reaches at most {reduction(high):.2f}% (paper convention) on "
            f"{dims.num_layers} layers, short of the budget {ratio}%"
        )
    for _ in range(80):
        middle = (low + high) / 2
        if reduction(middle) >= ratio:
            high = middle
        else:
            low = middle
    counts = shape_counts(shape, high, dims.num_layers, num_visual)
    achieved = paper_reduction(dims, counts, num_visual)
    if achieved - ratio > tolerance:
        raise ValueError(
            f"shape {shape!r}: the weakest keep counts meeting {ratio}% removes {achieved:.2f}%, more than "
            f"{tolerance} point over budget (counts {counts})"
        )
    return counts


def build_config(args: argparse.Namespace) -> transformers.LlamaConfig:
    """The random benchmark model's config (fp32, random init)."""
    return transformers.LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads or args.heads,
        initializer_range=0.02,
        torch_dtype="float32",
    )


def build_prompt(
    prefix: int, visual: int, text: int, hidden: int, seed: int, batch: int = 1,
    device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32,
) -> Tuple[torch.Tensor, SequenceLayout]:
    """Random embeddings (batch, T, D) in `dtype` and the matching layout, both on `device`:
    prefix, visual, then text rows; every sample of a batch is the same prompt (the same
    embeddings whatever the device or dtype)."""
    segment = torch.cat(
        [
            torch.full((prefix,), SEGMENT_PREFIX),
            torch.full((visual,), SEGMENT_VISUAL),
            torch.full((text,), SEGMENT_TEXT),
        ]
    )[None]  # (1, T)
    visual_index = torch.full_like(segment, -1)
    visual_index[0, prefix : prefix + visual] = torch.arange(visual)
    generator = torch.Generator().manual_seed(seed)
    embeds = torch.randn(1, segment.shape[1], hidden, generator=generator).repeat(batch, 1, 1)  # (B, T, D)
    layout = SequenceLayout.from_segments(segment.repeat(batch, 1).to(device), visual_index.repeat(batch, 1).to(device))
    return embeds.to(device=device, dtype=dtype), layout
