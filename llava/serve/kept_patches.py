"""Drawing which image patches a pruned prefill kept: the image as the tower saw it, dropped
patches greyed out.

    view = tower_view(image, processor, model.config)        # (H, W, 3) uint8
    masks = kept_patch_masks(kept_per_layer, num_visual)     # (L, side, side) bool
    picture = shade_dropped(view, masks[layer])              # (H, W, 3) uint8
    merged = merged_patch_mask(model.last_tower_selection.merged_into[0], num_visual)  # VisionZip
    picture = shade_dropped(view, masks[layer], merged=merged)  # merged patches blue-tinted

Used by the web demo (`llava.serve.gradio_web_server`) and by ``python -m fitprune.visualize``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from llava.mm_utils import expand2square

GREY = np.array([128, 128, 128], dtype=np.float32)
"""Colour dropped patches are blended towards."""
MERGED = np.array([40, 90, 230], dtype=np.float32)
"""Colour patches merged into a contextual token (VisionZip) are blended towards."""


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


def merged_patch_mask(merged_into: torch.Tensor, num_visual: int) -> np.ndarray:
    """(side, side) bool: True where a patch was merged into a contextual token (VisionZip's
    `TowerSelection.merged_into` of one image, (P,) with -1 on the patches kept as they are)."""
    masks = kept_patch_masks([torch.as_tensor(merged_into).cpu().ge(0).nonzero().flatten()], num_visual)
    return masks[0]


def _cells_to_pixels(image: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(H, W) bool: each pixel of `image` (H, W, ...) takes the value of its cell in `cells` (side, side)."""
    height, width = image.shape[:2]
    rows = np.arange(height) * cells.shape[0] // height
    cols = np.arange(width) * cells.shape[1] // width
    return cells[rows][:, cols]


def shade_dropped(image: np.ndarray, alive: np.ndarray, strength: float = 0.75,
                  merged: Optional[np.ndarray] = None) -> np.ndarray:
    """Blends dropped patches of `image` (H, W, 3) uint8 towards grey; `alive` is (side, side).
    Patches in `merged` (side, side), merged into a contextual token, are blended half-way towards
    blue instead (`MERGED`)."""
    out = image.astype(np.float32)
    merged_pixels = _cells_to_pixels(image, merged) if merged is not None else np.zeros(image.shape[:2], bool)
    dropped = ~_cells_to_pixels(image, alive) & ~merged_pixels
    out[dropped] = (1 - strength) * out[dropped] + strength * GREY
    out[merged_pixels] = 0.5 * out[merged_pixels] + 0.5 * MERGED
    return out.clip(0, 255).astype(np.uint8)


def tower_view(image: Image.Image, processor, config) -> np.ndarray:
    """The image as the vision tower sees its geometry: padded to a square when the model
    pads, resized to the tower's input size; (H, W, 3) uint8."""
    if config.image_aspect_ratio == "pad":
        image = expand2square(image, tuple(int(x * 255) for x in processor.image_mean))
    crop = processor.crop_size
    size = (crop["width"], crop["height"]) if isinstance(crop, dict) else (crop, crop)
    return np.asarray(image.convert("RGB").resize(size, Image.BICUBIC))
