"""What the web demo's requests produce: each budget's result, and the events a request streams.

    RequestStarted -> (PartialAnswer* -> BudgetDone | BudgetFailed)* -> RequestDone
    RequestFailed  (bad input or a failed generation, instead of the rest)

Plain data with no model or web framework in it (`llava.serve.demo_requests` makes them,
`llava.serve.web_layout` shows them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import numpy as np

from llava.serve.kept_patches import shade_dropped
from llava.serve.timed_generation import GenerationTiming


@dataclass
class BudgetResult:
    """What one budget answered, kept and cost.

    Attributes:
        ratio: the reduction ratio asked for, percent.
        policy: the pruning policy.
        answer: the answer, post-processed as `llava.eval.run_llava` does.
        new_tokens: tokens generated (stop string included).
        keep_counts: visual tokens left after each layer, or None when the prefill saw no image.
        num_visual: visual tokens entering layer 0 (for anyres models, of this image), or None
            when the prefill saw no image.
        masks: (L, side, side) bool, the patches alive after each layer, or None for anyres models.
        flops: `llava.eval.records.run_summary.flops_summary` of this answer, or None without keep counts.
        timing: prefill latency and decode speed.
        merged: (side, side) bool, the patches merged into contextual tokens in the vision tower
            (VisionZip), or None.
    """

    ratio: float
    policy: str
    answer: str
    new_tokens: int
    keep_counts: Optional[List[int]]
    num_visual: Optional[int]
    masks: Optional[np.ndarray]
    flops: Optional[dict]
    timing: GenerationTiming
    merged: Optional[np.ndarray] = None

    def overlay(self, view: np.ndarray, layer: int) -> Optional[np.ndarray]:
        """`view` (H, W, 3) with the patches dropped by the end of `layer` greyed out and those
        merged into contextual tokens tinted (layer clamped to the model's), or None when the
        patches are not known."""
        if self.masks is None or view is None:
            return None
        return shade_dropped(view, self.masks[min(max(layer, 0), len(self.masks) - 1)], merged=self.merged)

    def summary_lines(self) -> List[str]:
        """Plain-text lines: kept tokens per layer, FLOPs removed in both conventions, speed."""
        lines = []
        if self.keep_counts is not None:
            kept = ", ".join(str(k) for k in self.keep_counts)
            merged = f"; {int(self.merged.sum())} patches merged in the vision tower" if self.merged is not None else ""
            lines.append(f"Visual tokens kept after each layer: {kept} (of {self.num_visual}{merged})")
        if self.flops is not None:
            lines.append(
                f"FLOPs removed: {self.flops['paper_reduction_pct']:.2f}% paper (visual tokens, prefill) · "
                f"{self.flops['full_prefill_reduction_pct']:.2f}% full (whole prefill): "
                f"{self.flops['full_prefill'] / 1e9:.3g} of {self.flops['full_prefill_unpruned'] / 1e9:.3g} GFLOPs"
            )
        speed = self.timing.decode_tokens_per_s
        prefill = f"{self.timing.prefill_s * 1000:.1f} ms" if self.timing.prefill_s is not None else "n/a"
        lines.append(f"Prefill latency: {prefill} · decode: "
                     f"{f'{speed:.1f} tokens/s' if speed else 'n/a'} ({self.new_tokens} new tokens)")
        return lines


@dataclass(frozen=True)
class RequestStarted:
    """The input was accepted; answers follow at each of `ratios`. `note` says when the answer
    length was lowered to fit the context (None when it was not)."""

    ratios: Tuple[float, ...]
    view: Optional[np.ndarray]
    note: Optional[str] = None


@dataclass(frozen=True)
class PartialAnswer:
    """The answer at budget `slot` so far."""

    slot: int
    text: str


@dataclass(frozen=True)
class BudgetDone:
    """Budget `slot` is answered."""

    slot: int
    result: BudgetResult


@dataclass(frozen=True)
class BudgetFailed:
    """Budget `slot` cannot run: no recipe for its ratio (or one for another model).

    Attributes:
        slot: the budget's place in the request.
        message: the recipe lookup's error.
        command: the calibrate command that makes the missing recipe.
    """

    slot: int
    message: str
    command: str


@dataclass(frozen=True)
class RequestFailed:
    """The request cannot be answered; the message says why."""

    message: str


@dataclass(frozen=True)
class RequestDone:
    """Every budget has an answer or a message."""

    message: str


RequestEvent = Union[RequestStarted, PartialAnswer, BudgetDone, BudgetFailed, RequestFailed, RequestDone]
