"""FLOPs of a LLaMA-style decoder whose visual tokens are pruned layer by layer.

Pure functions of the decoder's dimensions (`DecoderDims`, read from a config) and of the token
counts per layer. Fitting, reports and tests all count FLOPs here and nowhere else.

Two conventions, and every figure printed elsewhere names the one it uses:

* **paper** (the FitPrune paper's, used to state budgets): visual tokens only, one multiply-add
  counted as one FLOP. A layer entered by ``n_in`` and left by ``n_out`` visual tokens costs
  ``3·n_in·d² + 2·n_in²·d + n_out·d² + 3·n_out·d·m`` (Q/K/V projections, attention scores and
  weighted sum, output projection, gated FFN), with d the hidden size and m the FFN size.
* **full** (what an engineer would quote): every token of the sequence (prefix + visual + text),
  two FLOPs per multiply-add, Q and O projections d×d, K and V projections d×(kv_heads·head_dim)
  (grouped-query attention), attention scores and weighted sum over the real key length (no causal
  halving), gated MLP 3·d·m per token, and the LM head (vocab·d) for every position that leaves the
  last layer in prefill (or for the last ``logit_rows`` positions per sample where a caller says so:
  generation needs only the last one), once per decode step. The final norm and the softmax are
  ignored. The vision tower is not in these figures, neither LLaVA-1.5's CLIP nor LLaVA-HR's
  ConvNeXt + CLIP + adapters: pruning in the decoder removes none of its cost, and
  `llava.model.pruning.tower_flops` counts it in this convention (for LLaVA-HR: the ConvNeXt at
  ``input_image_size`` px, the CLIP at the fast size, the adapters) for an end-to-end figure
  (`tower_flops.full_reduction_with_tower`).

Keep counts: ``keep_counts[l]`` is the number of visual tokens left after layer ``l``; layer ``l`` is
entered by ``keep_counts[l-1]`` and layer 0 by ``num_visual``. A 1-D sequence is one sample; a 2-D
array-like or torch tensor of shape ``(samples, layers)`` holds one row per sample, and the functions
then return the mean over samples.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
from numpy.typing import ArrayLike

# A scalar, a per-sample vector, or a (samples, layers) matrix; torch tensors (any device) are accepted too.
CountsLike = ArrayLike


@dataclass(frozen=True)
class DecoderDims:
    """The dimensions of a decoder stack that its FLOPs depend on.

    Attributes:
        num_layers: number of decoder layers.
        hidden_size: model width d.
        intermediate_size: FFN width m.
        num_attention_heads: query heads.
        num_key_value_heads: key/value heads (equal to the query heads without grouped-query attention).
        vocab_size: rows of the LM head.
    """

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int

    def __post_init__(self) -> None:
        for name in (
            "num_layers",
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"DecoderDims.{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"DecoderDims: hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"DecoderDims: num_attention_heads={self.num_attention_heads} is not divisible by "
                f"num_key_value_heads={self.num_key_value_heads}"
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head: hidden_size / num_attention_heads."""
        return self.hidden_size // self.num_attention_heads

    @property
    def kv_size(self) -> int:
        """Output width of the K (and of the V) projection: num_key_value_heads · head_dim."""
        return self.num_key_value_heads * self.head_dim

    @classmethod
    def from_config(cls, config: Any) -> "DecoderDims":
        """Reads the dimensions from a transformers ``LlamaConfig``-style config.

        Args:
            config: an object with the attributes ``num_hidden_layers``, ``hidden_size``,
                ``intermediate_size``, ``num_attention_heads``, ``vocab_size`` and optionally
                ``num_key_value_heads`` (defaults to ``num_attention_heads`` when missing or None),
                or a mapping with the same keys (e.g. a parsed ``config.json``).

        Returns:
            The decoder dimensions.

        Raises:
            ValueError: a required field is missing, or a value is not a positive int.
        """

        def field(key: str) -> Any:
            if isinstance(config, Mapping):
                return config.get(key)
            return getattr(config, key, None)

        values = {}
        for attr, key in (
            ("num_layers", "num_hidden_layers"),
            ("hidden_size", "hidden_size"),
            ("intermediate_size", "intermediate_size"),
            ("num_attention_heads", "num_attention_heads"),
            ("vocab_size", "vocab_size"),
        ):
            value = field(key)
            if value is None:
                raise ValueError(f"config ({type(config).__name__}) has no field '{key}'")
            values[attr] = value
        kv_heads = field("num_key_value_heads")
        values["num_key_value_heads"] = values["num_attention_heads"] if kv_heads is None else kv_heads
        return cls(**values)


def _to_float_array(value: CountsLike, name: str) -> np.ndarray:
    """Converts a list, numpy array or (any-device) torch tensor to a finite, non-negative float64 array."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric and rectangular, got {value!r}: {err}") from None
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if np.any(array < 0):
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return array


def _as_rows(values: CountsLike, dims: DecoderDims, name: str) -> np.ndarray:
    """Shapes per-layer counts as (samples, layers), checking the layer count."""
    array = _to_float_array(values, name)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dims.num_layers:
        raise ValueError(
            f"{name} must have shape (layers,) or (samples, layers) with layers={dims.num_layers}, "
            f"got shape {tuple(array.shape)}"
        )
    return array


def _per_sample(value: CountsLike, num_samples: int, name: str) -> np.ndarray:
    """Broadcasts a scalar or a per-sample vector to shape (samples,)."""
    array = _to_float_array(value, name).reshape(-1)
    if array.size == 1:
        return np.full(num_samples, array[0])
    if array.size != num_samples:
        raise ValueError(f"{name} has {array.size} values but the keep counts have {num_samples} samples")
    return array


def _visual_in_out(
    dims: DecoderDims, keep_counts: CountsLike, num_visual: CountsLike
) -> tuple[np.ndarray, np.ndarray]:
    """Visual tokens entering and leaving each layer, both of shape (samples, layers).

    Raises:
        ValueError: wrong shape, a count above num_visual, or a count that rises from one layer to the next.
    """
    n_out = _as_rows(keep_counts, dims, "keep_counts")  # (S, L)
    visual = _per_sample(num_visual, n_out.shape[0], "num_visual")  # (S,)
    n_in = np.concatenate([visual[:, None], n_out[:, :-1]], axis=1)  # (S, L)
    rising = np.argwhere(n_out > n_in)
    if rising.size:
        sample, layer = (int(i) for i in rising[0])
        raise ValueError(
            f"keep_counts sample {sample}: layer {layer} leaves {n_out[sample, layer]:g} visual tokens "
            f"but is entered by {n_in[sample, layer]:g} (num_visual={visual[sample]:g}); "
            "keep counts must not rise"
        )
    return n_in, n_out


def paper_layer_flops(dims: DecoderDims, n_in: CountsLike, n_out: CountsLike) -> Union[float, np.ndarray]:
    """FLOPs of one decoder layer under the paper convention.

    ``3·n_in·d² + 2·n_in²·d + n_out·d² + 3·n_out·d·m``: visual tokens only, one FLOP per multiply-add.

    Args:
        dims: decoder dimensions (d = hidden_size, m = intermediate_size).
        n_in: visual tokens entering the layer (scalar or array).
        n_out: visual tokens leaving it (broadcastable with n_in).

    Returns:
        FLOPs (multiply-adds), elementwise over the broadcast inputs.
    """
    d, m = dims.hidden_size, dims.intermediate_size
    n_in = _to_float_array(n_in, "n_in")
    n_out = _to_float_array(n_out, "n_out")
    flops = 3 * n_in * d * d + 2 * n_in * n_in * d + n_out * d * d + 3 * n_out * d * m
    return float(flops) if flops.ndim == 0 else flops


def paper_prefill_flops(dims: DecoderDims, keep_counts: CountsLike, num_visual: CountsLike) -> float:
    """Prefill FLOPs of the visual tokens under the paper convention.

    Args:
        dims: decoder dimensions.
        keep_counts: visual tokens left after each layer, shape (layers,) or (samples, layers).
        num_visual: visual tokens entering layer 0 (scalar, or one per sample).

    Returns:
        FLOPs (multiply-adds) summed over layers, mean over samples.

    Raises:
        ValueError: wrong shape, negative or rising counts.
    """
    n_in, n_out = _visual_in_out(dims, keep_counts, num_visual)
    return float(paper_layer_flops(dims, n_in, n_out).sum(axis=1).mean())


def paper_reduction(dims: DecoderDims, keep_counts: CountsLike, num_visual: CountsLike) -> float:
    """Share of the visual tokens' prefill FLOPs removed by pruning, paper convention.

    Args:
        dims: decoder dimensions.
        keep_counts: visual tokens left after each layer, shape (layers,) or (samples, layers).
        num_visual: visual tokens entering layer 0 (scalar, or one per sample).

    Returns:
        Reduction in percent: 100 · (1 − pruned FLOPs / unpruned FLOPs), FLOPs averaged over samples
        (with one num_visual for all samples this is the mean of the per-sample reductions).

    Raises:
        ValueError: wrong shape, negative or rising counts.
    """
    n_in, n_out = _visual_in_out(dims, keep_counts, num_visual)
    pruned = paper_layer_flops(dims, n_in, n_out).sum(axis=1).mean()
    full = paper_layer_flops(dims, n_in[:, :1], n_in[:, :1]).mean() * dims.num_layers
    return float(100.0 * (1.0 - pruned / full))


def full_layer_flops(
    dims: DecoderDims, n_in: CountsLike, n_out: CountsLike
) -> Union[float, np.ndarray]:
    """FLOPs of one decoder layer in prefill under the full convention (LM head excluded).

    ``2·(N_in·d² + 2·N_in·d·kv + 2·N_in²·d + N_out·d² + 3·N_out·d·m)`` with kv = kv_heads·head_dim:
    Q, K, V projections and attention scores/weighted sum over the N_in tokens entering; the output
    projection and gated MLP over the N_out tokens leaving.

    Args:
        dims: decoder dimensions.
        n_in: all tokens (prefix + visual + text) entering the layer (scalar or array).
        n_out: all tokens leaving it (broadcastable with n_in).

    Returns:
        FLOPs (two per multiply-add), elementwise over the broadcast inputs.
    """
    d, m, kv = dims.hidden_size, dims.intermediate_size, dims.kv_size
    n_in = _to_float_array(n_in, "n_in")
    n_out = _to_float_array(n_out, "n_out")
    macs = (
        n_in * d * d  # Q projection
        + 2 * n_in * d * kv  # K and V projections
        + 2 * n_in * n_in * d  # scores Q·Kᵀ and weighted sum P·V, over all heads
        + n_out * d * d  # output projection
        + 3 * n_out * d * m  # gate, up and down projections
    )
    flops = 2 * macs
    return float(flops) if flops.ndim == 0 else flops


def _full_prefill_per_sample(
    dims: DecoderDims,
    keep_counts: CountsLike,
    num_visual: CountsLike,
    num_other_tokens: CountsLike,
    logit_rows: Optional[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Full-convention prefill FLOPs per sample, pruned and unpruned, each of shape (samples,)."""
    if logit_rows is not None and logit_rows < 1:
        raise ValueError(f"logit_rows must be None (every row) or >= 1, got {logit_rows}")
    n_in, n_out = _visual_in_out(dims, keep_counts, num_visual)
    other = _per_sample(num_other_tokens, n_in.shape[0], "num_other_tokens")[:, None]  # (S, 1)
    lm_head = 2.0 * dims.vocab_size * dims.hidden_size

    def head_rows(rows_left: np.ndarray) -> np.ndarray:
        return rows_left if logit_rows is None else np.minimum(rows_left, logit_rows)

    pruned = full_layer_flops(dims, n_in + other, n_out + other).sum(axis=1) + lm_head * head_rows(
        n_out[:, -1] + other[:, 0]
    )
    total = n_in[:, :1] + other  # (S, 1): every token, no pruning
    unpruned = full_layer_flops(dims, total, total)[:, 0] * dims.num_layers + lm_head * head_rows(total[:, 0])
    return pruned, unpruned


def full_prefill_flops(
    dims: DecoderDims,
    keep_counts: CountsLike,
    num_visual: CountsLike,
    num_other_tokens: CountsLike,
    logit_rows: Optional[int] = None,
) -> float:
    """Prefill FLOPs of the whole sequence under the full convention, LM head included.

    Args:
        dims: decoder dimensions.
        keep_counts: visual tokens left after each layer, shape (layers,) or (samples, layers).
        num_visual: visual tokens entering layer 0 (scalar, or one per sample).
        num_other_tokens: prefix + text tokens, never pruned (scalar, or one per sample).
        logit_rows: LM head rows per sample: None for every row leaving the last layer (the
            convention), 1 for a prefill that starts generation (`num_logits_to_keep=1`).

    Returns:
        FLOPs (two per multiply-add), mean over samples.

    Raises:
        ValueError: wrong shape, negative or rising counts, a per-sample length mismatch, or
            `logit_rows` below 1.
    """
    pruned, _ = _full_prefill_per_sample(dims, keep_counts, num_visual, num_other_tokens, logit_rows)
    return float(pruned.mean())


def full_reduction(
    dims: DecoderDims,
    keep_counts: CountsLike,
    num_visual: CountsLike,
    num_other_tokens: CountsLike,
    logit_rows: Optional[int] = None,
) -> float:
    """Share of the whole prefill's FLOPs removed by pruning, full convention.

    Args:
        dims: decoder dimensions.
        keep_counts: visual tokens left after each layer, shape (layers,) or (samples, layers).
        num_visual: visual tokens entering layer 0 (scalar, or one per sample).
        num_other_tokens: prefix + text tokens, never pruned (scalar, or one per sample).
        logit_rows: LM head rows per sample, as in `full_prefill_flops`.

    Returns:
        Reduction in percent: 100 · (1 − mean pruned FLOPs / mean unpruned FLOPs) over samples.

    Raises:
        ValueError: wrong shape, negative or rising counts, a per-sample length mismatch, or
            `logit_rows` below 1.
    """
    pruned, unpruned = _full_prefill_per_sample(dims, keep_counts, num_visual, num_other_tokens, logit_rows)
    return float(100.0 * (1.0 - pruned.mean() / unpruned.mean()))


def full_decode_step_flops(dims: DecoderDims, cache_lengths: CountsLike) -> float:
    """FLOPs of one decode step (one new token) under the full convention, LM head included.

    At layer l the new token's query attends to ``cache_lengths[l] + 1`` keys (the cache plus itself).

    Args:
        dims: decoder dimensions.
        cache_lengths: each layer's KV-cache length before the step, in tokens, shape (layers,) or
            (samples, layers); pruned layers have shorter caches.

    Returns:
        FLOPs (two per multiply-add), mean over samples.

    Raises:
        ValueError: wrong shape or negative lengths.
    """
    d, m, kv = dims.hidden_size, dims.intermediate_size, dims.kv_size
    keys = _as_rows(cache_lengths, dims, "cache_lengths") + 1  # (S, L)
    macs = (
        d * d  # Q projection
        + 2 * d * kv  # K and V projections
        + 2 * keys * d  # scores and weighted sum over the cache plus the new token
        + d * d  # output projection
        + 3 * d * m  # gated MLP
    )
    per_sample = 2 * macs.sum(axis=1) + 2.0 * dims.vocab_size * d
    return float(per_sample.mean())
