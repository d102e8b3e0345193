"""Painting shapes on a canvas, shared by the lab's tasks (`fitprune.lab.shapes`, `fitprune.lab.scenes`).

A shape fills a square pixel box; its mask is a test on box coordinates in [-1, 1], and its
edges are anti-aliased by supersampling. Canvases are (H, W, 3) float64 RGB in [0, 255].
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

# sub-pixel samples per axis when rasterising shapes (anti-aliased edges)
_SUPERSAMPLE = 4


def _circle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x * x + y * y <= 0.9 ** 2


def _square(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (np.abs(x) <= 0.8) & (np.abs(y) <= 0.8)


def _triangle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (y <= 0.85) & (np.abs(x) <= (y + 0.95) / 2)


def _diamond(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(x) + np.abs(y) <= 0.95


def _ring(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    radius2 = x * x + y * y
    return (radius2 <= 0.95 ** 2) & (radius2 >= 0.5 ** 2)


def _bar(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (np.abs(y) <= 0.35) & (np.abs(x) <= 0.95)  # ok: bar half-extents in cell units, not a model size


# name -> inside test on cell coordinates in [-1, 1] (y grows downwards)
SHAPE_MASKS = {"circle": _circle, "square": _square, "triangle": _triangle, "diamond": _diamond, "ring": _ring,
               "bar": _bar}


def paint_shape(canvas: np.ndarray, shape: str, rgb: Tuple[int, int, int], left: int, top: int, side: int) -> None:
    """Paints `shape` filling the `side` x `side` pixel box at (`left`, `top`) of `canvas`
    (H, W, 3) float64, in place, anti-aliased: each pixel moves toward `rgb` by the share of its
    `_SUPERSAMPLE`² sub-pixels inside the shape."""
    offsets = (np.arange(side * _SUPERSAMPLE) + 0.5) / (side * _SUPERSAMPLE) * 2 - 1  # box coords in (-1, 1)
    x, y = np.meshgrid(offsets, offsets)
    inside = SHAPE_MASKS[shape](x, y).astype(np.float64)
    coverage = inside.reshape(side, _SUPERSAMPLE, side, _SUPERSAMPLE).mean(axis=(1, 3))[..., None]  # (s, s, 1)
    box = canvas[top:top + side, left:left + side]
    canvas[top:top + side, left:left + side] = box * (1 - coverage) + np.asarray(rgb) * coverage


def blank_canvas(size: int, background: Tuple[int, int, int]) -> np.ndarray:
    """(size, size, 3) float64 canvas of the background colour."""
    return np.tile(np.asarray(background, dtype=np.float64), (size, size, 1))
