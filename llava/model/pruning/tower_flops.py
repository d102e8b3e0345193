"""FLOPs of the vision towers, in the full convention of `llava.model.pruning.flops`.

`flops.full_prefill_flops` counts the decoder only: neither LLaVA-1.5's CLIP nor LLaVA-HR's dual
tower is in it. This module counts the tower's forward for one image, two FLOPs per multiply-add,
convolutions, linear layers and attention matmuls only (norms, activations, softmax, position
tables, the resampling of maps and the residual adds are left out, as the decoder's norms are),
so that an end-to-end figure (`full_reduction_with_tower`) can add it to both the pruned and the
unpruned prefill: pruning visual tokens in the decoder removes none of it.

* CLIP (`clip_vit_flops`): the patch-embedding conv and every encoder layer (Q, K, V, O projections,
  scores and weighted sum over all tokens, the two MLP linears) on the patch tokens, plus CLS where
  the tower keeps it. LLaVA-1.5's tower runs all layers on (image / patch)² + 1 tokens even though it
  reads the second-to-last layer's output.
* LLaVA-HR (`multipath_tower_flops`): the ConvNeXt at ``input_image_size`` px (stem conv; per stage
  the downsampling conv and, per block, the depthwise conv and the two pointwise linears), the CLIP
  at the fast size (``fast_image_size`` px, no CLS: (fast / patch)² tokens), the three S2F adapters
  (slow 1x1 convs on the ConvNeXt map, depthwise and 1x1 convs on the ViT grid, the gate once per
  image) and the final align (two linears). Every size comes from the tower's settings and modules.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from llava.model.pruning.flops import CountsLike, DecoderDims, full_prefill_flops


def _conv_macs(conv: nn.Conv2d, out_side: int) -> int:
    """Multiply-adds of a square-output conv: out cells · out channels · (in channels / groups) · kernel area."""
    kh, kw = conv.kernel_size
    return out_side * out_side * conv.out_channels * (conv.in_channels // conv.groups) * kh * kw


def _linear_macs(linear: nn.Linear, rows: int) -> int:
    """Multiply-adds of a linear layer applied to `rows` rows."""
    return rows * linear.in_features * linear.out_features


def clip_vit_flops(clip: Any, image_size: int, with_cls: bool) -> int:
    """FLOPs of a CLIP vision transformer's forward on one square image, full convention.

    Args:
        clip: the ``CLIPVisionConfig`` (hidden_size, intermediate_size, num_hidden_layers,
            num_channels, patch_size).
        image_size: the side of the image it runs on, in pixels (336 for LLaVA-1.5, the fast size for HR).
        with_cls: whether the CLS token runs through the encoder (LLaVA-1.5: yes; LLaVA-HR drops it).

    Returns:
        FLOPs (two per multiply-add): patch conv + all layers.
    """
    grid = image_size // clip.patch_size
    tokens = grid * grid + (1 if with_cls else 0)
    width, mlp = clip.hidden_size, clip.intermediate_size
    patch_embed = grid * grid * width * clip.num_channels * clip.patch_size**2
    layer = 4 * tokens * width * width + 2 * tokens * tokens * width + 2 * tokens * width * mlp
    return 2 * (patch_embed + clip.num_hidden_layers * layer)


def convnext_flops(backbone: nn.Module, image_size: int) -> int:
    """FLOPs of the ConvNeXt backbone (stem and stages, no head) on one square image, full convention.

    Args:
        backbone: the `ConvNextBackbone` (``stem``, ``stages``, ``arch``).
        image_size: the input side in pixels (``input_image_size``).

    Returns:
        FLOPs (two per multiply-add).
    """
    stem = backbone.stem[0]
    side = image_size // stem.stride[0]
    macs = _conv_macs(stem, side)
    for stage in backbone.stages:
        for module in stage.downsample.modules():
            if isinstance(module, nn.Conv2d):
                side //= module.stride[0]
                macs += _conv_macs(module, side)
        for block in stage.blocks:
            macs += _conv_macs(block.conv_dw, side)
            macs += _linear_macs(block.mlp.fc1, side * side) + _linear_macs(block.mlp.fc2, side * side)
    return 2 * macs


def _adapter_flops(tower: nn.Module) -> int:
    """FLOPs of the S2F adapters and the final align of a `MultiPathVisionTower`, one image."""
    settings = tower.settings
    fast, slow = settings.fast_grid, settings.slow_grid
    macs = 0
    for adapter in getattr(tower, "align_stages_latent", []):
        macs += _conv_macs(adapter.slow_conv, slow) + _conv_macs(adapter.slow_proj, slow)
        macs += _conv_macs(adapter.fast_conv, fast) + _conv_macs(adapter.fast_proj, fast)
        macs += sum(_linear_macs(layer, 1) for layer in adapter.gate if isinstance(layer, nn.Linear))
    align = tower.align_stages[0]
    macs += _linear_macs(align.fast_proj, fast * fast) + _linear_macs(align.slow_proj, slow * slow)
    return 2 * macs


@dataclass(frozen=True)
class TowerFlops:
    """A vision tower's FLOPs for one image, full convention, by part.

    Attributes:
        slow: the ConvNeXt (LLaVA-HR; 0 for a CLIP-only tower).
        fast: the CLIP ViT.
        adapters: LLaVA-HR's S2F adapters and final align (0 for a CLIP-only tower).
    """

    slow: int
    fast: int
    adapters: int

    @property
    def total(self) -> int:
        """All parts, FLOPs."""
        return self.slow + self.fast + self.adapters


def multipath_tower_flops(tower: nn.Module) -> TowerFlops:
    """FLOPs of LLaVA-HR's tower for one image: ConvNeXt at ``input_image_size`` px, CLIP at
    ``fast_image_size`` px without CLS, S2F adapters and align (see the module docstring).

    Args:
        tower: a `MultiPathVisionTower` (its settings and modules give every size; meta device is enough).
    """
    settings = tower.settings
    return TowerFlops(
        slow=convnext_flops(tower.slow_vision_tower.vision_tower, settings.input_image_size),
        fast=clip_vit_flops(settings.clip, settings.fast_image_size, with_cls=False),
        adapters=_adapter_flops(tower),
    )


def vision_tower_flops(tower: nn.Module) -> TowerFlops:
    """FLOPs of a LLaVA vision tower for one image: LLaVA-HR's (`multipath_tower_flops`), or a CLIP
    tower's (``image_size`` from its config, CLS included, every layer)."""
    if hasattr(tower, "settings"):
        return multipath_tower_flops(tower)
    config = tower.config
    return TowerFlops(slow=0, fast=clip_vit_flops(config, config.image_size, with_cls=True), adapters=0)


def full_reduction_with_tower(
    dims: DecoderDims,
    keep_counts: CountsLike,
    num_visual: CountsLike,
    num_other_tokens: CountsLike,
    tower_flops: float,
    logit_rows: int | None = None,
) -> float:
    """Share of the whole prefill's FLOPs removed by pruning, full convention, the vision tower included.

    Args:
        dims, keep_counts, num_visual, num_other_tokens, logit_rows: as in `flops.full_reduction`.
        tower_flops: the tower's FLOPs per sample (`vision_tower_flops(...).total`), paid pruned or not.

    Returns:
        Reduction in percent: 100 · (1 − (pruned + tower) / (unpruned + tower)), means over samples.
    """
    pruned = full_prefill_flops(dims, keep_counts, num_visual, num_other_tokens, logit_rows)
    rows = np.atleast_2d(np.asarray(keep_counts, dtype=np.float64))
    every_token = np.broadcast_to(np.asarray(num_visual, dtype=np.float64).reshape(-1, 1), rows.shape)
    unpruned = full_prefill_flops(dims, every_token, num_visual, num_other_tokens, logit_rows)
    return float(100.0 * (1.0 - (pruned + tower_flops) / (unpruned + tower_flops)))
