"""LLaVA-NeXT's "anyres" image preprocessing: an image becomes a base view plus a grid of tiles.

    pinpoints = parse_grid_pinpoints(config.image_grid_pinpoints)   # [(672, 672), (336, 1008), ...]
    pixels = process_anyres_image(image, processor, pinpoints)        # (1 + tiles, 3, H, W)
    grid = get_anyres_image_grid_shape(image.size, pinpoints, 336)    # tiles across, tiles down

The grid resolution is the pinpoint that keeps most of the image's pixels with the least
padding (`select_best_resolution`); `llava.model.anyres` assembles the tiles' features
again. Upstream LLaVA defines these names in ``llava.mm_utils``, which imports them from here.
"""
import ast
import math
from typing import Any, List, Sequence, Tuple

import torch
from PIL import Image


Resolution = Tuple[int, int]
"""An image size or a grid pinpoint, as ``(width, height)`` in pixels (PIL's order)."""


def parse_grid_pinpoints(grid_pinpoints: Any) -> List[Resolution]:
    """Read a config's ``image_grid_pinpoints``.

    Args:
        grid_pinpoints: A list of ``[width, height]`` pairs, or its Python-literal
            string form (older configs store ``"[(336, 672), ...]"``).

    Returns:
        The pinpoints as ``(width, height)`` tuples of ints, in the given order.

    Raises:
        ValueError: If the value is missing, empty, not parseable, or holds an entry
            that is not a pair of positive ints.
    """
    raw = grid_pinpoints
    if isinstance(raw, str):
        try:
            raw = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"image_grid_pinpoints {grid_pinpoints!r} is not a list literal: {err}") from None
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError(
            f"image_grid_pinpoints must be a non-empty list of [width, height] pairs, got {grid_pinpoints!r}"
        )
    pinpoints = []
    for index, pair in enumerate(raw):
        valid = (
            isinstance(pair, (list, tuple))
            and len(pair) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
        )
        if not valid:
            raise ValueError(
                f"image_grid_pinpoints[{index}]={pair!r} is not a [width, height] pair of positive ints"
            )
        pinpoints.append((pair[0], pair[1]))
    return pinpoints


def select_best_resolution(original_size: Resolution, possible_resolutions: Sequence[Resolution]) -> Resolution:
    """Pick the grid resolution that keeps most of an image's pixels (LLaVA-NeXT's rule).

    For each candidate ``(W, H)`` the image is scaled by ``s = min(W / w, H / h)``
    (fitting inside the candidate, aspect ratio kept); its effective resolution is
    ``min(int(w * s) * int(h * s), w * h)``: the pixels it fills, never more than the
    original has. The candidate with the largest effective resolution wins; ties go
    to the one wasting the least area (``W * H`` minus the effective resolution), and
    remaining ties to the earliest candidate.

    Args:
        original_size: ``(width, height)`` of the image, in pixels.
        possible_resolutions: Candidate ``(width, height)`` resolutions, in pixels.

    Returns:
        The chosen ``(width, height)``.

    Raises:
        ValueError: If there is no candidate or the image has a zero side.
    """
    width, height = original_size
    if width <= 0 or height <= 0:
        raise ValueError(f"image size {original_size!r} has a side of zero pixels")
    if not possible_resolutions:
        raise ValueError("no candidate resolutions to choose from")
    best, best_key = None, None
    for candidate_width, candidate_height in possible_resolutions:
        scale = min(candidate_width / width, candidate_height / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = candidate_width * candidate_height - effective
        key = (effective, -wasted)
        if best_key is None or key > best_key:
            best, best_key = (candidate_width, candidate_height), key
    return best


def resize_and_pad_image(image: Image.Image, target_resolution: Resolution) -> Image.Image:
    """Scale an image to fit a resolution, keeping its aspect ratio, and centre it on black.

    The side whose scale factor is smaller fills the target exactly; the other is
    ``ceil(side * scale)`` pixels (at most the target). The resize uses Pillow's
    default filter (bicubic for RGB); the canvas is RGB black and the image is pasted
    at ``((W - w') // 2, (H - h') // 2)``.

    Args:
        image: The image.
        target_resolution: ``(width, height)`` of the result, in pixels.

    Returns:
        A new RGB image of exactly ``target_resolution``.
    """
    width, height = image.size
    target_width, target_height = target_resolution
    scale_w, scale_h = target_width / width, target_height / height
    if scale_w < scale_h:
        new_size = (target_width, min(math.ceil(height * scale_w), target_height))
    else:
        new_size = (min(math.ceil(width * scale_h), target_width), target_height)
    canvas = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    canvas.paste(image.resize(new_size), ((target_width - new_size[0]) // 2, (target_height - new_size[1]) // 2))
    return canvas


def divide_to_patches(image: Image.Image, patch_size: int) -> List[Image.Image]:
    """Cut an image into square tiles, row by row (left to right, then top to bottom).

    Args:
        image: The image; its sides should be multiples of ``patch_size``.
        patch_size: Side of each tile, in pixels.

    Returns:
        The tiles, ``ceil(height / patch_size) * ceil(width / patch_size)`` of them.
    """
    width, height = image.size
    return [
        image.crop((left, top, left + patch_size, top + patch_size))
        for top in range(0, height, patch_size)
        for left in range(0, width, patch_size)
    ]


def get_anyres_image_grid_shape(image_size: Resolution, grid_pinpoints: Any, patch_size: int) -> Tuple[int, int]:
    """The tile grid an image is cut into by :func:`process_anyres_image`.

    Args:
        image_size: ``(width, height)`` of the original image, in pixels.
        grid_pinpoints: The config's ``image_grid_pinpoints`` (see :func:`parse_grid_pinpoints`).
        patch_size: Side of one tile in pixels (the vision tower's image size).

    Returns:
        ``(num_patch_width, num_patch_height)``: tiles across and tiles down.
    """
    width, height = select_best_resolution(image_size, parse_grid_pinpoints(grid_pinpoints))
    return width // patch_size, height // patch_size


def process_anyres_image(image: Image.Image, processor: Any, grid_pinpoints: Any) -> torch.Tensor:
    """LLaVA-NeXT's "anyres" preprocessing of one image: a base view plus grid tiles.

    The image is resized and padded to the best grid resolution
    (:func:`select_best_resolution`, :func:`resize_and_pad_image`) and cut into tiles
    of the processor's crop size; the base view is the whole image resized (squashed,
    not padded) to ``shortest_edge`` square. Every view then goes through
    ``processor.preprocess``.

    Args:
        image: The image.
        processor: A ``CLIPImageProcessor`` (reads ``crop_size['height']`` and
            ``size['shortest_edge']``).
        grid_pinpoints: The config's ``image_grid_pinpoints``.

    Returns:
        ``(1 + tiles, 3, H, W)`` pixels: the base view first, then the tiles row by row.
    """
    resolution = select_best_resolution(image.size, parse_grid_pinpoints(grid_pinpoints))
    tiles = divide_to_patches(resize_and_pad_image(image, resolution), processor.crop_size["height"])
    side = processor.size["shortest_edge"]
    views = [image.resize((side, side))] + tiles
    return torch.stack([processor.preprocess(view, return_tensors="pt")["pixel_values"][0] for view in views])
