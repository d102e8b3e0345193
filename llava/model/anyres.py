"""LLaVA-NeXT ("anyres") image features: from per-tile tower features to one token run.

`llava.image_tiling.process_anyres_image` turns an image into a base view plus a grid of
tiles. After the vision tower and projector, each view is a square grid of feature
rows. `merge_image_features` assembles them as LLaVA-NeXT does, depending on the
config's ``mm_patch_merge_type``:

* ``flat``: every view's features, one after the other.
* ``spatial``: the base view, then the tiles' features laid out as one large grid
  (tiles side by side), read row by row.
* ``spatial_unpad``: as ``spatial``, but the large grid is first cropped back to the
  original image's aspect ratio (`unpad_image`, removing the padding added by
  `resize_and_pad_image`), and the learned ``image_newline`` embedding is appended
  after each row.

A view set of a single view (no tiles) is the base features, plus one
``image_newline`` for ``*_unpad``.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import torch

from llava.image_tiling import Resolution, get_anyres_image_grid_shape
from llava.mm_utils import uses_anyres

MERGE_TYPES = ("flat", "spatial", "spatial_unpad")
"""The ``mm_patch_merge_type`` values understood here (``flat`` when the config has none)."""


def merge_type_of(config: Any) -> str:
    """The `LlavaConfig`'s ``mm_patch_merge_type`` (declared default ``"flat"``; a JSON null reads as it).

    Raises:
        ValueError: If the value is not one of `MERGE_TYPES`.
    """
    merge_type = config.mm_patch_merge_type or "flat"
    if merge_type not in MERGE_TYPES:
        raise ValueError(f"config field 'mm_patch_merge_type'={merge_type!r} is not one of {MERGE_TYPES}")
    return merge_type


def unpad_image(features: torch.Tensor, original_size: Resolution) -> torch.Tensor:
    """Crop a padded feature grid back to the original image's aspect ratio.

    With the grid ``(C, H, W)`` and the original ``(w, h)``: if the original is wider
    than the grid (``w / h > W / H``), rows were padded: ``int(h * W / w)`` rows hold
    the image and ``(H - that) // 2`` rows are dropped at the top and at the bottom;
    otherwise the same for columns, with ``int(w * H / h)``.

    Args:
        features: ``(C, H, W)`` grid.
        original_size: ``(width, height)`` of the original image, in pixels.

    Returns:
        The ``(C, H', W')`` cropped view (H' = H or W' = W).
    """
    _, height, width = features.shape
    rows, columns = _unpad_crop(height, width, original_size)
    return features[:, rows, columns]


def _unpad_crop(height: int, width: int, original_size: Resolution) -> Tuple[slice, slice]:
    """The rows and the columns of a padded ``height x width`` grid that `unpad_image` keeps."""
    original_width, original_height = original_size
    if original_width / original_height > width / height:
        margin = (height - int(original_height * (width / original_width))) // 2
        return slice(margin, height - margin), slice(0, width)
    margin = (width - int(original_width * (height / original_height))) // 2
    return slice(0, height), slice(margin, width - margin)


def anyres_token_count(image_size: Resolution, config: Any, tile_pixels: int, view_tokens: int) -> int:
    """Visual tokens `LlavaMetaForCausalLM.encode_anyres_images` makes of one image preprocessed by
    `llava.image_tiling.process_anyres_image` (base view plus tiles), computed before any encoding.

    ``flat`` and ``spatial``: every view's ``view_tokens`` (the base view and ``across x down``
    tiles). ``spatial_unpad``: the base view's, then the tiles' grid of ``down * side`` rows by
    ``across * side`` columns (``side**2 = view_tokens``) cropped as `unpad_image` crops it, plus
    one newline token per kept row.

    Args:
        image_size: ``(width, height)`` of the original image, in pixels.
        config: The model's config (``mm_patch_merge_type``, ``image_grid_pinpoints``).
        tile_pixels: Side of one tile in pixels (the vision tower's image size).
        view_tokens: Features of one view (the tower's ``num_visual_tokens``), a square number.

    Returns:
        The image's visual token count.

    Raises:
        ValueError: An unknown merge type, or an image with a zero side.
    """
    across, down = get_anyres_image_grid_shape(image_size, config.image_grid_pinpoints, tile_pixels)
    if merge_type_of(config) != "spatial_unpad":
        return (1 + across * down) * view_tokens
    side = math.isqrt(view_tokens)
    rows, columns = _unpad_crop(down * side, across * side, image_size)
    kept_rows = len(range(down * side)[rows])
    return view_tokens + kept_rows * (len(range(across * side)[columns]) + 1)


def image_token_count(model: Any, image_size: Resolution) -> int:
    """Visual tokens one image of ``image_size`` (width, height) px puts in `model`'s prompt before
    any pruning: the tower's count, or for anyres (LLaVA-NeXT) models `anyres_token_count`."""
    view_tokens = model.get_model().num_visual_tokens()
    if not uses_anyres(model.config):
        return view_tokens
    tile_pixels = model.get_model().get_vision_tower().config.image_size
    return anyres_token_count(image_size, model.config, tile_pixels, view_tokens)


def _tile_grid(tile_features: torch.Tensor, grid_shape: Tuple[int, int]) -> torch.Tensor:
    """Lay tiles' features out as one large grid.

    Args:
        tile_features: ``(tiles, side * side, D)``, tiles in row-major order.
        grid_shape: ``(tiles across, tiles down)``.

    Returns:
        ``(D, tiles_down * side, tiles_across * side)``.

    Raises:
        ValueError: If the tile count or the features per tile do not fit the grid.
    """
    tiles, per_tile, dim = tile_features.shape
    across, down = grid_shape
    side = math.isqrt(per_tile)
    if side * side != per_tile:
        raise ValueError(f"{per_tile} features per tile do not form a square grid")
    if across * down != tiles:
        raise ValueError(
            f"the image's best grid is {across}x{down} tiles (across x down), but {tiles} tiles were given; "
            "pass the original image sizes (width, height) as image_sizes"
        )
    grid = tile_features.reshape(down, across, side, side, dim)  # (down, across, row, col, D)
    grid = grid.permute(4, 0, 2, 1, 3)  # (D, down, row, across, col)
    return grid.reshape(dim, down * side, across * side)


def merge_image_features(
    view_features: torch.Tensor,
    merge_type: str,
    image_size: Optional[Resolution] = None,
    grid_pinpoints: Optional[Sequence[Resolution]] = None,
    tile_pixels: Optional[int] = None,
    image_newline: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One image's token run from the features of its views.

    Args:
        view_features: ``(views, P, D)``: the base view first, then the tiles row by
            row (the layout of `llava.image_tiling.process_anyres_image`).
        merge_type: One of `MERGE_TYPES`.
        image_size: ``(width, height)`` of the original image; needed for the spatial
            types when there are tiles.
        grid_pinpoints: The config's grid resolutions; needed with ``image_size``.
        tile_pixels: Side of one tile in pixels (the tower's image size).
        image_newline: ``(D,)`` embedding; needed for ``spatial_unpad``.

    Returns:
        ``(V, D)`` features, in the order they enter the prompt.

    Raises:
        ValueError: A spatial type with tiles but no ``image_size``, an unpad type
            without ``image_newline``, or tiles that do not fit the image's grid.
    """
    if merge_type not in MERGE_TYPES:
        raise ValueError(f"mm_patch_merge_type {merge_type!r} is not one of {MERGE_TYPES}")
    if merge_type == "flat":
        return view_features.flatten(0, 1)
    unpad = merge_type.endswith("_unpad")
    if unpad and image_newline is None:
        raise ValueError(f"mm_patch_merge_type {merge_type!r} needs the model's image_newline embedding")
    base = view_features[0]  # (P, D)
    if view_features.shape[0] == 1:
        return torch.cat([base, image_newline[None].to(base)]) if unpad else base
    if image_size is None:
        raise ValueError(
            "anyres images with tiles need their original (width, height): pass image_sizes "
            "(e.g. [image.size for image in images]) to the model's forward or generate"
        )
    grid_shape = get_anyres_image_grid_shape(image_size, grid_pinpoints, tile_pixels)
    grid = _tile_grid(view_features[1:], grid_shape)  # (D, rows, cols)
    if unpad:
        grid = unpad_image(grid, image_size)
        newline = image_newline.to(grid)[:, None, None].expand(-1, grid.shape[1], 1)
        grid = torch.cat([grid, newline], dim=2)  # one newline after each row
    return torch.cat([base, grid.flatten(1, 2).transpose(0, 1)])
