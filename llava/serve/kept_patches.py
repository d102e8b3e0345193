"""Drawing which image patches a pruned prefill kept: the image as the tower saw it, dropped
patches greyed out.

    view = tower_view(image, processor, model.config)        # (H, W, 3) uint8
    masks = kept_patch_masks(kept_per_layer, num_visual)     # (L, side, side) bool
    picture = shade_dropped(view, masks[layer])              # (H, W, 3) uint8

Used by the web demo (`llava.serve.gradio_web_server`) and by ``python -m fitprune.visualize``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from llava.mm_utils import expand2square

GREY = np.array([128, 128, 128], dtype=np.float32)
"""Colour dropped patches are blended towards."""


def kept_patch_masks(kept_per_layer: Sequence[torch.Tensor], num_visual: int) -> np.ndarray:
    """(L, side, side) bool: True where the patch is still alive after each layer.

    Args:
        kept_per_layer: per layer, the grid indices kept (row-major over a square grid).
        num_visual: visual tokens of one image; must be a square number.

    Raises:
        ValueError: if the visual tokens do not form a square grid.
    """
    side = math.isqrt(num_visual)
    if side * side != num_visual:
        raise ValueError(f"{num_visual} visual tokens do not form a square grid of patches")
    masks = np.zeros((len(kept_per_layer), side * side), dtype=bool)
    for layer, kept in enumerate(kept_per_layer):
        masks[layer, torch.as_tensor(kept).numpy()] = True
    return masks.reshape(len(kept_per_layer), side, side)


def shade_dropped(image: np.ndarray, alive: np.ndarray, strength: float = 0.75) -> np.ndarray:
    """Blends dropped patches of `image` (H, W, 3) uint8 towards grey; `alive` is (side, side)."""
    height, width = image.shape[:2]
    rows = np.arange(height) * alive.shape[0] // height
    cols = np.arange(width) * alive.shape[1] // width
    dropped = ~alive[rows][:, cols]
    out = image.astype(np.float32)
    out[dropped] = (1 - strength) * out[dropped] + strength * GREY
    return out.clip(0, 255).astype(np.uint8)


def tower_view(image: Image.Image, processor, config) -> np.ndarray:
    """The image as the vision tower sees its geometry: padded to a square when the model
    pads, resized to the tower's input size; (H, W, 3) uint8."""
    if getattr(config, "image_aspect_ratio", None) == "pad":
        image = expand2square(image, tuple(int(x * 255) for x in processor.image_mean))
    crop = processor.crop_size
    size = (crop["width"], crop["height"]) if isinstance(crop, dict) else (crop, crop)
    return np.asarray(image.convert("RGB").resize(size, Image.BICUBIC))
