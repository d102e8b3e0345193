"""LLaVA-HR's adapters between its two branches: `S2FAdapter` (upstream's S2FStitchAlignModuleV2,
mixing the slow ConvNeXt map into the ViT tokens between layer groups) and `MultiPathAlign`
(upstream's MultiPathAlignModule, the final sum of both branches)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def grid_side(num_tokens: int) -> int:
    """Side of the square grid `num_tokens` tokens form.

    Raises:
        ValueError: `num_tokens` is not a square.
    """
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{num_tokens} tokens do not form a square grid")
    return side


def align_token_count(tokens: torch.Tensor, target: int) -> torch.Tensor:
    """Resamples (B, L, C) grid tokens to `target` tokens as upstream's src2dst_align does:
    bilinear upsampling with align_corners=True, in float32, when L < target; average pooling
    with a kernel and stride of side(L) // side(target) when L > target; unchanged when equal.

    Raises:
        ValueError: neither count divides the other, or a count is not a square.
    """
    count = tokens.shape[1]
    if count == target:
        return tokens
    if count % target and target % count:
        raise ValueError(f"{count} slow tokens and {target} fast tokens: neither count divides the other")
    batch, _, channels = tokens.shape
    side, target_side = grid_side(count), grid_side(target)
    grid = tokens.transpose(1, 2).reshape(batch, channels, side, side)  # (B, C, s, s)
    if count < target:
        grid = F.interpolate(grid.float(), size=(target_side, target_side), mode="bilinear",
                             align_corners=True).to(tokens.dtype)
    else:
        grid = F.avg_pool2d(grid, side // target_side, side // target_side)
    return grid.flatten(2).transpose(1, 2)


def map_to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H * W, C), row-major."""
    return feature_map.flatten(2).transpose(1, 2)


class S2FAdapter(nn.Module):
    """Slow-to-fast adapter: ``fast + slow * tanh(gate)``, with one scalar gate per image.

    slow = resampled tokens of ``slow_proj(gelu(slow_conv(x_slow)))`` (1x1 convs C_s -> C_s -> C_f);
    fast = ``y + fast_proj(gelu(fast_conv(y)))`` on the token grid (depthwise 7x7, then 1x1);
    gate = ``Linear(2 C_f -> C_f / 2) -> GELU -> Linear(-> 1)`` of the token mean of [fast, slow].
    """

    def __init__(self, fast_dim: int, slow_dim: int, kernel_size: int = 7):
        super().__init__()
        self.slow_conv = nn.Conv2d(slow_dim, slow_dim, 1)
        self.slow_proj = nn.Conv2d(slow_dim, fast_dim, 1)
        self.fast_conv = nn.Conv2d(fast_dim, fast_dim, kernel_size, padding=kernel_size // 2, groups=fast_dim)
        self.fast_proj = nn.Conv2d(fast_dim, fast_dim, 1)
        self.gate = nn.Sequential(nn.Linear(2 * fast_dim, fast_dim // 2), nn.GELU(), nn.Linear(fast_dim // 2, 1))

    def forward(self, fast: torch.Tensor, slow_map: torch.Tensor) -> torch.Tensor:
        """(B, N, C_f) ViT tokens and a (B, C_s, h, w) slow map -> (B, N, C_f)."""
        batch, count, width = fast.shape
        slow = align_token_count(map_to_tokens(self.slow_proj(F.gelu(self.slow_conv(slow_map)))), count)
        side = grid_side(count)
        grid = fast.transpose(1, 2).reshape(batch, width, side, side)  # (B, C_f, g, g)
        grid = grid + self.fast_proj(F.gelu(self.fast_conv(grid)))
        fast = map_to_tokens(grid)
        gate = self.gate(torch.cat([fast, slow], dim=-1).mean(dim=1)).unsqueeze(1)  # (B, 1, 1)
        return fast + slow * gate.tanh()


class MultiPathAlign(nn.Module):
    """Final combination: ``fast_proj(y) + slow_proj(resampled slow tokens)``, both Linear to C_f."""

    def __init__(self, fast_dim: int, slow_dim: int):
        super().__init__()
        self.fast_proj = nn.Linear(fast_dim, fast_dim)
        self.slow_proj = nn.Linear(slow_dim, fast_dim)

    def forward(self, fast: torch.Tensor, slow_map: torch.Tensor) -> torch.Tensor:
        """(B, N, C_f) tokens and a (B, C_s, h, w) slow map -> (B, N, C_f)."""
        slow = align_token_count(map_to_tokens(slow_map), fast.shape[1])
        return self.fast_proj(fast) + self.slow_proj(slow)
