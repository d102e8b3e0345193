"""Scenes of the synthetic shapes task: the task's settings, objects on a grid, and their rendering.

A scene is a square canvas divided into cells, one per patch of the demo model; some cells
hold a shape, each of a different shape and a different colour, on a black background
(`fitprune.lab.shapes.data` describes the whole task).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

from fitprune.lab.painting import SHAPE_MASKS, blank_canvas, paint_shape


YES, NO = "Yes", "No"
KINDS = ("colour", "shape", "presence", "side")  # every kind there is; a task asks its `kinds`

@dataclass(frozen=True)
class ShapesTask:
    """What scenes look like.

    Attributes:
        image_size: canvas side in pixels.
        cell_size: grid cell side in pixels; one shape fills one cell.
        colours: colour name -> RGB.
        shapes: shape names (of `SHAPE_MASKS`).
        min_objects, max_objects: objects per scene (distinct shapes and colours).
        background: RGB of the empty canvas.
        kinds: the question kinds asked (of `KINDS`).
    """

    image_size: int = 96
    cell_size: int = 8
    colours: Dict[str, Tuple[int, int, int]] = field(
        default_factory=lambda: {
            "red": (220, 40, 40),
            "green": (40, 180, 60),
            "blue": (50, 90, 230),
            "yellow": (235, 215, 40),
            "purple": (150, 60, 200),
        }
    )
    # shapes whose 8 px masks differ most from each other (`SHAPE_MASKS` has more)
    shapes: Tuple[str, ...] = ("circle", "triangle", "ring", "bar")
    min_objects: int = 2
    max_objects: int = 2
    background: Tuple[int, int, int] = (0, 0, 0)
    kinds: Tuple[str, ...] = ("colour", "shape", "presence")

    def __post_init__(self) -> None:
        if self.image_size % self.cell_size:
            raise ValueError(f"ShapesTask: image_size {self.image_size} is not a multiple of cell_size {self.cell_size}")
        if self.grid % 2:
            raise ValueError(f"ShapesTask: the grid has {self.grid} columns; an even count splits left and right")
        if not self.kinds or set(self.kinds) - set(KINDS):
            raise ValueError(f"ShapesTask: kinds {self.kinds} must be a non-empty subset of {KINDS}")
        unknown = set(self.shapes) - set(SHAPE_MASKS)
        if unknown:
            raise ValueError(f"ShapesTask: unknown shapes {sorted(unknown)}; known: {sorted(SHAPE_MASKS)}")
        limit = min(len(self.shapes), len(self.colours), self.grid * self.grid)
        if not 1 <= self.min_objects <= self.max_objects <= limit:
            raise ValueError(
                f"ShapesTask: need 1 <= min_objects <= max_objects <= {limit}, "
                f"got {self.min_objects}, {self.max_objects}"
            )

    @property
    def grid(self) -> int:
        """Cells per side."""
        return self.image_size // self.cell_size

    @property
    def answers(self) -> Tuple[str, ...]:
        """Every answer a question can have."""
        return tuple(self.colours) + self.shapes + (YES, NO)


@dataclass(frozen=True)
class ShapeObject:
    """One shape in a scene, at grid cell (row, col)."""

    shape: str
    colour: str
    row: int
    col: int


@dataclass(frozen=True)
class Scene:
    """The objects of one image."""

    objects: Tuple[ShapeObject, ...]

    def with_shape(self, shape: str) -> Optional[ShapeObject]:
        """The object of that shape, or None."""
        return next((o for o in self.objects if o.shape == shape), None)

    def with_colour(self, colour: str) -> Optional[ShapeObject]:
        """The object of that colour, or None."""
        return next((o for o in self.objects if o.colour == colour), None)

def sample_scene(task: ShapesTask, rng: random.Random) -> Scene:
    """A scene with distinct shapes, distinct colours and distinct cells."""
    count = rng.randint(task.min_objects, task.max_objects)
    shapes = rng.sample(task.shapes, count)
    colours = rng.sample(list(task.colours), count)
    cells = rng.sample(range(task.grid * task.grid), count)
    return Scene(tuple(ShapeObject(s, c, cell // task.grid, cell % task.grid) for s, c, cell in zip(shapes, colours, cells)))


def render_scene(task: ShapesTask, scene: Scene) -> Image.Image:
    """The scene as an RGB image, shapes anti-aliased by supersampling."""
    canvas = blank_canvas(task.image_size, task.background)
    for obj in scene.objects:
        paint_shape(canvas, obj.shape, task.colours[obj.colour], obj.col * task.cell_size, obj.row * task.cell_size,
                    task.cell_size)
    return Image.fromarray(np.rint(canvas).astype(np.uint8))  # (H, W, 3) uint8: RGB
