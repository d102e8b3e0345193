"""Reading images for every entry point: checked, converted to RGB, bounded in size.

    image = load_image("images/0.png")                    # RGB PIL image, or ImageError
    image = decode_base64_image(row["image"], name="q.tsv:3")
    image = bound_image_geometry(image, processor, config.image_aspect_ratio)

The eval drivers, calibration, ``run_llava``, the CLI and ``fitprune.visualize`` read
images only through this module, so a bad image gives the same one-line `ImageError`
everywhere: ``<path>: <what is wrong>`` (callers put the question file, line and field
in front). What is checked, and what is done:

- a missing path, a directory or a 0-byte file: error;
- a file PIL cannot identify (not an image): error; a truncated or corrupt file: error
  (the pixels are decoded here, inside the check, not later by the preprocessor);
- more than ``max_bytes`` decoded bytes (`decoded_bytes`: width × height × the bytes per pixel
  of the decoded mode, plus 3 per pixel for the RGB copy made of any other mode; default
  `DEFAULT_MAX_DECODED_BYTES`, 256 MiB, so an RGB image may have PIL's own warning threshold
  of 89.5 Mpx and a 16-bit grey one 53.7 Mpx): error naming the size, mode and limit, raised
  from the file header before any pixel is decoded (the decompression-bomb guard);
- modes: RGB is kept; L, 1, CMYK, YCbCr go through PIL's conversion; images with an
  alpha channel or palette transparency (RGBA, LA, PA, P with ``transparency``) are
  composited on white (`TRANSPARENT_BACKGROUND`), so transparent areas look as an image
  viewer shows them rather than as whatever colour the transparent pixels happen to hold
  (upstream LLaVA drops the alpha channel instead); 16-bit grey (I;16, I;16B, I;16L) and
  32-bit integer (I) images are scaled from 0..65535 to 0..255 (PIL's own conversion
  clips everything above 255 to white) in integers, a lookup table applied a strip of rows
  at a time, so the conversion holds no more than the 8-bit result beside the decoded image;
  32-bit float (F) images go through PIL's conversion (0..255, clipped; in C, no copies);
- geometry (`bound_image_geometry`): preprocessing must never build an image with a side
  longer than `MAX_SIDE_IN_TOWER_SIDES` tower input sides. The pad path
  (``image_aspect_ratio == "pad"``) pastes the image on a square canvas of its longest
  side, so a 20000×10 image would make a 20000×20000 canvas: its longest side is first
  downscaled to the bound (aspect ratio kept, every side at least 1 pixel). The
  resize-and-crop path scales the shortest side to the tower's size, so the same image
  would become 672000 pixels long (336-pixel tower): its long axis is first centre-cropped
  to the bound times its short side; the tower sees the centre square either way. Images within the
  bound (every usual photograph) are left untouched, so their pixels equal upstream's.
  The anyres path resizes straight to a grid resolution and needs no bound. At the other
  end, an image whose processed side would be under `MIN_SIDE` pixels (a 1x1 image, a
  strip 1 pixel high on the resize-and-crop path) is enlarged by an integer factor with
  every pixel repeated, since the image processor cannot tell a 1- or 3-pixel-high image
  from a channels-first array.
"""
from __future__ import annotations

import base64
import binascii
import io
import math
import os
import threading
from pathlib import Path
from typing import Any, BinaryIO, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageMode, UnidentifiedImageError

from llava.errors import InputError

DEFAULT_MAX_DECODED_BYTES = 256 * 1024 * 1024
"""Bytes an image may take decoded (`decoded_bytes`): 256 MiB, which lets an RGB image have PIL's
own decompression-bomb warning threshold of pixels (89,478,485, about 9459 × 9459)."""

RGB_BYTES_PER_PIXEL = 3
"""Bytes per pixel of the RGB image every other mode is converted to."""

TRANSPARENT_BACKGROUND = (255, 255, 255)
"""RGB colour that transparent pixels are composited on: white."""

MAX_SIDE_IN_TOWER_SIDES = 16
"""Longest side preprocessing may build, in tower input sides (5376 pixels for a 336-pixel tower)."""

MIN_SIDE = 4
"""Shortest side handed to the image processor, in pixels: transformers 4.31's processor reads an
array whose first dimension is 1 or 3 as channels-first, so a 1- or 3-pixel-high image breaks it."""

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
"""Integer modes read as 16-bit grey (0..65535) and scaled to 8 bits."""

_SIXTEEN_TO_EIGHT = ((np.arange(65536, dtype=np.int64) + 128) // 257).astype(np.uint8)
"""round(v / 257) for every 16-bit value v (257 is odd, so no v lies half-way): 0..65535 -> 0..255."""

STRIP_PIXELS = 1 << 16
"""Pixels converted at a time from 16 to 8 bits (bounds the conversion's temporary arrays)."""

_PIL_LIMIT_LOCK = threading.Lock()

PathLike = Union[str, "os.PathLike[str]"]


class ImageError(InputError):
    """An image that cannot be used; the message names the file (or source) and the problem."""


class ImageNotFoundError(ImageError, FileNotFoundError):
    """An image path that does not exist (caught as either an `ImageError` or a FileNotFoundError)."""


def bytes_per_pixel(mode: str) -> int:
    """Bytes one pixel of a PIL `mode` takes decoded: 1 for L, P and 1, 2 for I;16 and LA, 3 for
    RGB, 4 for RGBA, CMYK, I and F.

    Raises:
        KeyError: a mode PIL does not know.
    """
    described = ImageMode.getmode(mode)
    return np.dtype(described.typestr).itemsize * len(described.bands)


def decoded_bytes(mode: str, size: Tuple[int, int]) -> int:
    """Bytes an image of `mode` and `size` (width, height) takes once read: its decoded pixels, plus
    the RGB copy `to_rgb` makes of any mode other than RGB (e.g. 5 bytes per pixel for I;16)."""
    per_pixel = bytes_per_pixel(mode) + (0 if mode == "RGB" else RGB_BYTES_PER_PIXEL)
    return size[0] * size[1] * per_pixel


def _open_checked(source: Union[PathLike, BinaryIO], name: str, max_bytes: int) -> Image.Image:
    """Opens, size-checks and decodes an image; every failure becomes an `ImageError` naming `name`."""
    # PIL's own guard reads the process-wide Image.MAX_IMAGE_PIXELS; it is lifted while the header is
    # parsed (under a lock) so that this function's limit, checked right after, is the one that applies.
    try:
        with _PIL_LIMIT_LOCK:
            previous = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                image = Image.open(source)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (PIL cannot identify its format)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{name}: cannot read the image header ({err})") from None
    width, height = image.size
    try:
        needed = decoded_bytes(image.mode, image.size)
    except KeyError:
        raise ImageError(f"{name}: image mode {image.mode!r} is not supported") from None
    if needed > max_bytes:
        raise ImageError(
            f"{name}: {width}x{height} pixels of mode {image.mode} take {needed} bytes decoded, above the "
            f"limit of {max_bytes} bytes (decompression-bomb guard)"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as err:
        raise ImageError(f"{name}: truncated or corrupt {image.format or 'image'} file ({err})") from None
    return image


def _sixteen_bit_to_grey(image: Image.Image) -> Image.Image:
    """An L image from a 16-bit (or 32-bit integer) grey image, 0..65535 scaled to 0..255 (rounded;
    values outside 0..65535 clipped), converted `STRIP_PIXELS` at a time in integers."""
    width, height = image.size
    grey = np.empty((height, width), dtype=np.uint8)  # (H, W)
    rows = max(1, STRIP_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        strip = np.asarray(image.crop((0, top, width, min(top + rows, height))))  # (rows, W) uint16 or int32
        grey[top:top + rows] = _SIXTEEN_TO_EIGHT[strip if strip.dtype.itemsize == 2 else np.clip(strip, 0, 65535)]
    return Image.fromarray(grey)  # mode L


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """An RGB copy of `image` (or the image itself when it is RGB); see the module notes on modes.

    Args:
        image: a decoded PIL image.
        name: the file or source, for the error message.

    Returns:
        The RGB image, same size.

    Raises:
        ImageError: a mode PIL cannot convert to RGB.
    """
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_grey(image).convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    try:
        if has_alpha:
            background = Image.new("RGBA", image.size, TRANSPARENT_BACKGROUND + (255,))
            return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
        return image.convert("RGB")
    except ValueError as err:
        raise ImageError(f"{name}: image mode {image.mode!r} cannot be converted to RGB ({err})") from None


def load_image(path: PathLike, *, max_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> Image.Image:
    """Reads an image file, checked and decoded, as RGB.

    Args:
        path: the image file.
        max_bytes: most bytes the image may take decoded (`decoded_bytes`).

    Returns:
        The decoded RGB image.

    Raises:
        ImageError: missing path (an `ImageNotFoundError`), a directory, an empty file, not an
            image, a truncated or corrupt file, too many decoded bytes, or a mode without an RGB
            conversion; the message starts with the path.
    """
    path = Path(path)
    if not path.exists():
        raise ImageNotFoundError(f"{path}: image file does not exist")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: image file is empty (0 bytes)")
    with path.open("rb") as handle:
        return to_rgb(_open_checked(handle, str(path), max_bytes), str(path))


def decode_image(data: bytes, *, name: str, max_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> Image.Image:
    """Decodes an encoded image file held in memory (PNG, JPEG, ...), checked, as RGB.

    Args:
        data: the file's bytes.
        name: where they came from (URL, question file and line), for messages.
        max_bytes: most bytes the image may take decoded (`decoded_bytes`).

    Returns:
        The decoded RGB image.

    Raises:
        ImageError: no bytes, not an image, truncated or corrupt, too many decoded bytes, or a
            mode without an RGB conversion; the message starts with `name`.
    """
    if not data:
        raise ImageError(f"{name}: image data is empty (0 bytes)")
    return to_rgb(_open_checked(io.BytesIO(data), name, max_bytes), name)


def decode_base64_image(text: Union[str, bytes], *, name: str,
                        max_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> Image.Image:
    """Decodes a base64-encoded image file (MMBench's TSV column), checked, as RGB.

    Args:
        text: the base64 text.
        name: where it came from (question file and line), for messages.
        max_bytes: most bytes the image may take decoded (`decoded_bytes`).

    Returns:
        The decoded RGB image.

    Raises:
        ImageError: not base64, or any `decode_image` failure; the message starts with `name`.
    """
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError) as err:
        raise ImageError(f"{name}: not valid base64 image data ({err})") from None
    return decode_image(data, name=name, max_bytes=max_bytes)


def tower_input_side(image_processor: Any) -> int:
    """The vision tower's input side in pixels: the largest of the processor's crop and resize sizes.

    Args:
        image_processor: a CLIP image processor (``crop_size`` and ``size`` as dicts or ints).

    Returns:
        The side, e.g. 336.

    Raises:
        ValueError: the processor has neither size.
    """
    sides = []
    for sizes in (getattr(image_processor, "crop_size", None), getattr(image_processor, "size", None)):
        if isinstance(sizes, dict):
            sides.extend(int(v) for v in sizes.values())
        elif sizes:
            sides.append(int(sizes))
    if not sides:
        raise ValueError(f"image processor {type(image_processor).__name__} has neither crop_size nor size")
    return max(sides)


def _enlarge(image: Image.Image, factor: int) -> Image.Image:
    """The image `factor` times larger on both sides, each pixel repeated (colours kept exactly)."""
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def bound_image_geometry(image: Image.Image, image_processor: Any, image_aspect_ratio: Optional[str]) -> Image.Image:
    """Resizes an image whose preprocessing would build too long a side, or hand over too short a one.

    See the module notes: the pad path's canvas side is bounded by downscaling, the resize-and-crop
    path's long axis by centre-cropping; and an image whose processed side would be shorter than
    `MIN_SIDE` pixels is enlarged by an integer factor, every pixel repeated.

    Args:
        image: an RGB image.
        image_processor: the vision tower's image processor (gives `tower_input_side`).
        image_aspect_ratio: the preprocessing path: "pad" (square canvas), "anyres" (grid
            resolutions), anything else or None (resize the shortest side, centre-crop).

    Returns:
        `image` itself when within the bounds (every usual photograph), else a resized copy.
    """
    width, height = image.size
    if image_aspect_ratio == "anyres":
        return image
    if image_aspect_ratio == "pad":
        bound = MAX_SIDE_IN_TOWER_SIDES * tower_input_side(image_processor)
        longest = max(width, height)
        if longest > bound:
            size = (max(1, round(width * bound / longest)), max(1, round(height * bound / longest)))
            return image.resize(size, Image.BICUBIC)
        return _enlarge(image, math.ceil(MIN_SIDE / longest)) if longest < MIN_SIDE else image
    shortest = min(width, height)
    if max(width, height) > MAX_SIDE_IN_TOWER_SIDES * shortest:
        keep = MAX_SIDE_IN_TOWER_SIDES * shortest
        if width > height:
            left = (width - keep) // 2
            image = image.crop((left, 0, left + keep, height))
        else:
            top = (height - keep) // 2
            image = image.crop((0, top, width, top + keep))
    return _enlarge(image, math.ceil(MIN_SIDE / shortest)) if shortest < MIN_SIDE else image
