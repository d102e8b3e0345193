"""Scenes of the relational shapes task: five to eight shapes on a grid, colours and shapes
repeated (so a named object has distractors sharing its colour or its shape), in two sizes,
kept with their metadata so that every answer can be checked and an oracle knows which
patches hold what (`fitprune.lab.scenes.questions` asks the questions).

A scene is a square canvas divided into cells, one per patch of the model (by default
128 px in 8 px cells: 256 visual tokens). A small object fills one cell, a large one a
2×2 block of cells; boxes are aligned to the grid and at least `gap` empty cells apart, so
every patch shows at most one object. Shapes are drawn with the masks of the shapes task
(`fitprune.lab.painting.SHAPE_MASKS`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from fitprune.lab.painting import SHAPE_MASKS, blank_canvas, paint_shape
from fitprune.lab.shapes.scenes import ShapesTask

KINDS = ("attribute", "small", "relation", "count", "presence")  # every kind there is
SIZES = {"small": 1, "large": 2}  # size name -> cells per side of the object's box
_PLACEMENT_TRIES = 100
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@dataclass(frozen=True)
class RelationalTask:
    """What scenes look like and which questions are asked.

    Attributes:
        image_size: canvas side in pixels.
        cell_size: grid cell (patch) side in pixels.
        colours: colour name -> RGB (the shapes task's).
        shapes: shape names (of `SHAPE_MASKS`; the shapes task's).
        sizes: size name -> cells per side.
        large_share: chance that an object is large.
        min_objects, max_objects: objects per scene.
        gap: empty cells kept between two objects' boxes.
        background: RGB of the empty canvas.
        kinds: the question kinds asked (of `KINDS`).
        presence_follow_up: training conversations whose first question is not a presence one
            also ask one second, about a colour and a shape no earlier turn names
            (`fitprune.lab.scenes.questions.conversation_questions`); written splits are unaffected.
    """

    image_size: int = 128
    cell_size: int = 8
    colours: Dict[str, Tuple[int, int, int]] = field(default_factory=lambda: dict(ShapesTask().colours))
    shapes: Tuple[str, ...] = ShapesTask().shapes
    sizes: Dict[str, int] = field(default_factory=lambda: dict(SIZES))
    large_share: float = 0.4
    min_objects: int = 5
    max_objects: int = 8
    gap: int = 1
    background: Tuple[int, int, int] = (0, 0, 0)
    kinds: Tuple[str, ...] = KINDS
    presence_follow_up: bool = False

    def __post_init__(self) -> None:
        if self.image_size % self.cell_size:
            raise ValueError(f"RelationalTask: image_size {self.image_size} is not a multiple of cell_size "
                             f"{self.cell_size}")
        if not self.kinds or set(self.kinds) - set(KINDS):
            raise ValueError(f"RelationalTask: kinds {self.kinds} must be a non-empty subset of {KINDS}")
        unknown = set(self.shapes) - set(SHAPE_MASKS)
        if unknown:
            raise ValueError(f"RelationalTask: unknown shapes {sorted(unknown)}; known: {sorted(SHAPE_MASKS)}")
        if set(self.sizes) != set(SIZES):
            raise ValueError(f"RelationalTask: sizes must name exactly {sorted(SIZES)}, got {sorted(self.sizes)}")
        if not 1 <= self.min_objects <= self.max_objects < len(NUMBER_WORDS):
            raise ValueError(f"RelationalTask: need 1 <= min_objects <= max_objects <= {len(NUMBER_WORDS) - 1}, "
                             f"got {self.min_objects}, {self.max_objects}")

    @property
    def grid(self) -> int:
        """Cells per side."""
        return self.image_size // self.cell_size

    @property
    def counts(self) -> Tuple[str, ...]:
        """The answers of counting questions, by count: "zero" up to `max_objects` (words:
        the tokenizer splits digits off the word-start piece)."""
        return NUMBER_WORDS[:self.max_objects + 1]

    @property
    def answers(self) -> Tuple[str, ...]:
        """Every answer a question can have."""
        return tuple(self.colours) + self.shapes + self.counts + ("Yes", "No")


@dataclass(frozen=True)
class SceneObject:
    """One shape in a scene; its box's top-left cell is (row, col), `span` cells per side."""

    shape: str
    colour: str
    size: str
    row: int
    col: int
    span: int

    @property
    def rows(self) -> range:
        """Grid rows the box covers."""
        return range(self.row, self.row + self.span)

    @property
    def cols(self) -> range:
        """Grid columns the box covers."""
        return range(self.col, self.col + self.span)

    def cells(self, grid: int) -> Tuple[int, ...]:
        """Grid indices (row-major, as the visual tokens are ordered) of the cells the box covers."""
        return tuple(r * grid + c for r in self.rows for c in self.cols)

    def box(self, cell_size: int) -> Tuple[int, int, int, int]:
        """(left, top, right, bottom) of the box in pixels, right and bottom exclusive."""
        return (self.col * cell_size, self.row * cell_size, (self.col + self.span) * cell_size,
                (self.row + self.span) * cell_size)


@dataclass(frozen=True)
class RelationalScene:
    """The objects of one image."""

    objects: Tuple[SceneObject, ...]

    def matching(self, colour: Optional[str] = None, shape: Optional[str] = None,
                 size: Optional[str] = None) -> List[SceneObject]:
        """The objects with every attribute given (None matches anything)."""
        return [o for o in self.objects
                if colour in (None, o.colour) and shape in (None, o.shape) and size in (None, o.size)]

    def with_shape(self, shape: str) -> Optional[SceneObject]:
        """The first object of that shape, or None (as `fitprune.lab.shapes.scenes.Scene`)."""
        return next(iter(self.matching(shape=shape)), None)

    def with_colour(self, colour: str) -> Optional[SceneObject]:
        """The first object of that colour, or None (as `fitprune.lab.shapes.scenes.Scene`)."""
        return next(iter(self.matching(colour=colour)), None)

    def metadata(self, task: RelationalTask) -> List[dict]:
        """Every object's attributes, pixel box and grid cells, as JSON-ready dicts."""
        return [{"shape": o.shape, "colour": o.colour, "size": o.size, "box": list(o.box(task.cell_size)),
                 "cells": list(o.cells(task.grid))} for o in self.objects]


def _free_corners(task: RelationalTask, taken: np.ndarray, span: int) -> List[Tuple[int, int]]:
    """Top-left cells where a box of `span` cells fits with `gap` empty cells to every taken cell."""
    corners = []
    for row in range(task.grid - span + 1):
        for col in range(task.grid - span + 1):
            top, left = max(0, row - task.gap), max(0, col - task.gap)
            if not taken[top:row + span + task.gap, left:col + span + task.gap].any():
                corners.append((row, col))
    return corners


def _place_objects(task: RelationalTask, rng: random.Random) -> Optional[Tuple[SceneObject, ...]]:
    """One try at a scene: a random count of random objects, each at a random free place;
    None if an object finds no place."""
    taken = np.zeros((task.grid, task.grid), dtype=bool)
    objects = []
    for _ in range(rng.randint(task.min_objects, task.max_objects)):
        size = "large" if rng.random() < task.large_share else "small"
        span = task.sizes[size]
        corners = _free_corners(task, taken, span)
        if not corners:
            return None
        row, col = rng.choice(corners)
        taken[row:row + span, col:col + span] = True
        objects.append(SceneObject(rng.choice(task.shapes), rng.choice(list(task.colours)), size, row, col, span))
    return tuple(objects)


def sample_scene(task: RelationalTask, rng: random.Random) -> RelationalScene:
    """A random scene: colours and shapes drawn independently per object (so they repeat).

    Raises:
        ValueError: if the objects do not fit on the grid in `_PLACEMENT_TRIES` tries.
    """
    for _ in range(_PLACEMENT_TRIES):
        objects = _place_objects(task, rng)
        if objects is not None:
            return RelationalScene(objects)
    raise ValueError(f"RelationalTask: {task.max_objects} objects do not fit on a {task.grid}x{task.grid} grid")


def render_scene(task: RelationalTask, scene: RelationalScene) -> Image.Image:
    """The scene as an RGB image, each shape filling its box, anti-aliased by supersampling."""
    canvas = blank_canvas(task.image_size, task.background)
    for obj in scene.objects:
        left, top, right, _ = obj.box(task.cell_size)
        paint_shape(canvas, obj.shape, task.colours[obj.colour], left, top, right - left)
    return Image.fromarray(np.rint(canvas).astype(np.uint8))
