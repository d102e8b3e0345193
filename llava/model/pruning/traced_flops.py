"""FLOPs removed by one recorded prefill, from the visual tokens that entered and left each layer.

`flops.paper_reduction` and `flops.full_reduction` take keep counts and assume layer 0 is entered by
all of the model's visual tokens. A run whose tokens left before a layer ran (DART, DivPrune,
PyramidDrop) or before the decoder at all (VisionZip, in the vision tower) is counted here from its
`PruningTrace`: each layer costs what entered it and what left it, against the unpruned prefill of
`num_visual` tokens per sample (the tower's count). Conventions as in `llava.model.pruning.flops`.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from llava.model.pruning.flops import CountsLike, DecoderDims, full_layer_flops, paper_layer_flops


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


def traced_reductions(
    dims: DecoderDims, entered: CountsLike, left: CountsLike, num_visual: CountsLike, num_other_tokens: CountsLike
) -> Tuple[float, float]:
    """Percent of the prefill FLOPs removed, (paper convention, full convention), from a trace.

    Args:
        dims: decoder dimensions.
        entered: visual tokens entering each layer, (layers,) or (samples, layers)
            (``PruningTrace.entered().T``).
        left: visual tokens leaving each layer, same shape (``PruningTrace.counts().T``).
        num_visual: visual tokens per sample unpruned (the tower's, scalar or per sample).
        num_other_tokens: prefix + text tokens per sample (scalar or per sample).

    Returns:
        (paper, full): 100 · (1 − pruned / unpruned), FLOPs averaged over samples; the full
        convention counts the LM head on every row leaving the last layer.

    Raises:
        ValueError: counts of the wrong shape, negative, or above `num_visual`.
    """
    n_in, n_out = _rows(entered, dims, "entered"), _rows(left, dims, "left")
    if n_in.shape != n_out.shape:
        raise ValueError(f"entered {n_in.shape} and left {n_out.shape} counts differ in shape")
    visual = np.broadcast_to(np.asarray(num_visual, dtype=np.float64).reshape(-1, 1), (n_in.shape[0], 1))
    other = np.broadcast_to(np.asarray(num_other_tokens, dtype=np.float64).reshape(-1, 1), (n_in.shape[0], 1))
    if np.any(n_in > visual) or np.any(n_out > n_in):
        raise ValueError("visual tokens must not exceed num_visual or rise within a layer")
    layers = dims.num_layers
    paper = paper_layer_flops(dims, n_in, n_out).sum(axis=1).mean() / (
        layers * paper_layer_flops(dims, visual, visual).mean()
    )
    lm_head = 2.0 * dims.vocab_size * dims.hidden_size
    pruned = full_layer_flops(dims, n_in + other, n_out + other).sum(axis=1) + lm_head * (n_out[:, -1] + other[:, 0])
    total = visual + other
    unpruned = layers * full_layer_flops(dims, total, total)[:, 0] + lm_head * total[:, 0]
    return float(100.0 * (1.0 - paper)), float(100.0 * (1.0 - pruned.mean() / unpruned.mean()))
