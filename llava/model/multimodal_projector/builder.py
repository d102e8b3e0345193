"""Factory for the projector that maps vision features into the language model's width."""

import re
from typing import Any, Dict, Tuple

import torch
import torch.nn as nn

_MLP_GELU_PATTERN = re.compile(r"^mlp(\d+)x_gelu$")


class IdentityMap(nn.Module):
    """A projector that returns its input unchanged."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Return ``x`` as is.

        Args:
            x: Vision features of any shape.
            *args: Ignored.
            **kwargs: Ignored.

        Returns:
            ``x``.
        """
        return x

    @property
    def config(self) -> Dict[str, str]:
        """The config fragment that rebuilds this projector."""
        return {"mm_projector_type": "identity"}


def _feature_sizes(config: Any, projector_type: str) -> Tuple[int, int]:
    """Return ``(mm_hidden_size, hidden_size)`` from the config."""
    sizes = tuple(getattr(config, key, None) for key in ("mm_hidden_size", "hidden_size"))
    if None in sizes:
        raise ValueError(
            f"Projector {projector_type!r} needs 'mm_hidden_size' and 'hidden_size' in the config, "
            f"got mm_hidden_size={sizes[0]!r}, hidden_size={sizes[1]!r}"
        )
    return sizes


def build_vision_projector(config: Any, delay_load: bool = False, **kwargs: Any) -> nn.Module:
    """Build the projector named by ``config.mm_projector_type`` (default ``'linear'``).

    Args:
        config: Config with ``mm_projector_type``, ``mm_hidden_size`` (vision width)
            and ``hidden_size`` (language-model width).
        delay_load: Unused; accepted for interface compatibility.
        **kwargs: Unused; accepted for interface compatibility.

    Returns:
        ``'linear'``: ``Linear(mm_hidden_size, hidden_size)``.
        ``'mlp{d}x_gelu'``: ``Sequential`` of ``Linear(mm_hidden_size, hidden_size)``
        followed by ``d - 1`` pairs of ``GELU()`` and ``Linear(hidden_size, hidden_size)``
        (state-dict keys ``0.weight``, ``0.bias``, ``2.weight``, ...).
        ``'identity'``: :class:`IdentityMap`.

    Raises:
        ValueError: For an unknown projector type, an MLP depth below 1, or missing sizes.
    """
    # config_checks probes projector types with a SimpleNamespace, not a LlavaConfig
    projector_type = getattr(config, "mm_projector_type", "linear")
    if projector_type == "identity":
        return IdentityMap()

    if projector_type == "linear":
        mm_hidden_size, hidden_size = _feature_sizes(config, projector_type)
        return nn.Linear(mm_hidden_size, hidden_size)

    match = _MLP_GELU_PATTERN.match(projector_type)
    if match:
        depth = int(match.group(1))
        if depth < 1:
            raise ValueError(f"Projector {projector_type!r} has depth {depth}; it must be at least 1")
        mm_hidden_size, hidden_size = _feature_sizes(config, projector_type)
        layers = [nn.Linear(mm_hidden_size, hidden_size)]
        for _ in range(depth - 1):
            layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_size, hidden_size))
        return nn.Sequential(*layers)

    raise ValueError(f"Unknown projector type: {projector_type!r}; expected 'linear', 'mlp<N>x_gelu' or 'identity'")
