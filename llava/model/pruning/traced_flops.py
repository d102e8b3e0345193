"""FLOPs of recorded prefills, from the visual tokens that entered and left each layer.

`flops.paper_reduction` and `flops.full_reduction` take keep counts and assume layer 0 is entered by
all of the model's visual tokens. A run whose tokens left before a layer ran (DART, DivPrune,
PyramidDrop) or before the decoder at all (VisionZip, in the vision tower) is counted here from its
`PruningTrace`: each layer costs what entered it and what left it, against the unpruned prefill of
`num_visual` tokens per sample (the tower's count, `unpruned_visual_counts`). Conventions as in
`llava.model.pruning.flops`. Run records, the web demo and the reports count a trace here and
nowhere else; for a run whose layer 0 is entered by every visual token (FitPrune, FastV, random)
the figures are bit-identical to `flops.paper_reduction` / `flops.full_reduction`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from llava.model.pruning.flops import CountsLike, DecoderDims, full_layer_flops, paper_layer_flops


@dataclass(frozen=True)
class TracedFlops:
    """Prefill FLOPs per sample (means over samples), pruned and unpruned, in both conventions.

    Attributes:
        paper_prefill, paper_prefill_unpruned: visual tokens only, multiply-adds.
        full_prefill, full_prefill_unpruned: every token, 2 FLOPs per multiply-add, LM head on every
            row leaving the last layer.
    """

    paper_prefill: float
    paper_prefill_unpruned: float
    full_prefill: float
    full_prefill_unpruned: float

    @property
    def paper_reduction(self) -> float:
        """Percent of the paper-convention prefill FLOPs removed."""
        return float(100.0 * (1.0 - self.paper_prefill / self.paper_prefill_unpruned))

    @property
    def full_reduction(self) -> float:
        """Percent of the full-convention prefill FLOPs removed."""
        return float(100.0 * (1.0 - self.full_prefill / self.full_prefill_unpruned))


def _rows(counts: CountsLike, dims: DecoderDims, name: str) -> np.ndarray:
    """(samples, layers) float64 counts from a (layers,) or (samples, layers) array-like or tensor."""
    if hasattr(counts, "detach"):
        counts = counts.detach().cpu().numpy()
    array = np.asarray(counts, dtype=np.float64)
    array = array[None] if array.ndim == 1 else array
    if array.ndim != 2 or array.shape[1] != dims.num_layers or np.any(array < 0):
        raise ValueError(
            f"{name} must be non-negative with shape (layers,) or (samples, layers), layers={dims.num_layers}"
        )
    return array


def _column(values: CountsLike, samples: int) -> np.ndarray:
    """(samples, 1) float64 from a scalar or a per-sample vector."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.broadcast_to(np.asarray(values, dtype=np.float64).reshape(-1, 1), (samples, 1))


def after_layer_entered(left: CountsLike, num_visual: CountsLike) -> np.ndarray:
    """(samples, layers) visual tokens entering each layer of a run that drops tokens only after a
    layer ran: layer 0 entered by `num_visual`, layer l by what left layer l-1. For logs that did not
    record entering counts."""
    out = np.asarray(left.detach().cpu().numpy() if hasattr(left, "detach") else left, dtype=np.float64)
    out = out[None] if out.ndim == 1 else out
    return np.concatenate([_column(num_visual, out.shape[0]), out[:, :-1]], axis=1)


def traced_flops(
    dims: DecoderDims, entered: CountsLike, left: CountsLike, num_visual: CountsLike, num_other_tokens: CountsLike
) -> TracedFlops:
    """Prefill FLOPs of recorded prefills, pruned and unpruned, both conventions.

    Args:
        dims: decoder dimensions.
        entered: visual tokens entering each layer, (layers,) or (samples, layers)
            (``PruningTrace.entered().T``).
        left: visual tokens leaving each layer, same shape (``PruningTrace.counts().T``).
        num_visual: visual tokens per sample unpruned (the tower's, scalar or per sample).
        num_other_tokens: prefix + text tokens per sample (scalar or per sample).

    Returns:
        The FLOPs, means over samples (`TracedFlops`).

    Raises:
        ValueError: counts of the wrong shape, negative, above `num_visual` or rising within a layer.
    """
    n_in, n_out = _rows(entered, dims, "entered"), _rows(left, dims, "left")
    if n_in.shape != n_out.shape:
        raise ValueError(f"entered {n_in.shape} and left {n_out.shape} counts differ in shape")
    visual, other = _column(num_visual, n_in.shape[0]), _column(num_other_tokens, n_in.shape[0])
    if np.any(n_in > visual) or np.any(n_out > n_in):
        raise ValueError("visual tokens must not exceed num_visual or rise within a layer")
    layers = dims.num_layers
    lm_head = 2.0 * dims.vocab_size * dims.hidden_size
    pruned = full_layer_flops(dims, n_in + other, n_out + other).sum(axis=1) + lm_head * (n_out[:, -1] + other[:, 0])
    total = visual + other
    unpruned = layers * full_layer_flops(dims, total, total)[:, 0] + lm_head * total[:, 0]
    return TracedFlops(
        paper_prefill=float(paper_layer_flops(dims, n_in, n_out).sum(axis=1).mean()),
        paper_prefill_unpruned=float(layers * paper_layer_flops(dims, visual, visual).mean()),
        full_prefill=float(pruned.mean()),
        full_prefill_unpruned=float(unpruned.mean()),
    )


def traced_reductions(
    dims: DecoderDims, entered: CountsLike, left: CountsLike, num_visual: CountsLike, num_other_tokens: CountsLike
) -> Tuple[float, float]:
    """Percent of the prefill FLOPs removed, (paper convention, full convention), from a trace:
    `traced_flops`' reductions (same arguments and errors)."""
    counted = traced_flops(dims, entered, left, num_visual, num_other_tokens)
    return counted.paper_reduction, counted.full_reduction


def unpruned_visual_counts(model: Any, initial_visual: Optional[Sequence[int]]) -> Optional[List[int]]:
    """Visual tokens each sample of `model`'s latest prefill would have had unpruned: its
    `initial_visual` (those spliced into the decoder), scaled back to the tower's count per image
    when a policy acting in the tower (VisionZip, `last_tower_selection`) handed on fewer."""
    if initial_visual is None:
        return None
    selection = getattr(model, "last_tower_selection", None)
    if selection is None:
        return [int(v) for v in initial_visual]
    handed_on, full = selection.grid_index.shape[1], model.get_model().num_visual_tokens()
    return [int(v) // handed_on * full for v in initial_visual]
