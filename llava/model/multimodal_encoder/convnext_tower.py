"""LLaVA-HR's slow branch: a ConvNeXt made of transformers' ConvNeXt modules under the
parameter names of the timm model upstream saves (``stem.0``, ``stages.i.blocks.j.conv_dw``, ...).

The block is transformers' `ConvNextLayer` (depthwise 7x7 conv, channels-last LayerNorm,
Linear 4x, GELU (erf), Linear, layer scale, residual), identical to timm's ConvNeXt block;
its sub-modules are re-registered under timm's names (`ConvNextBlock`), so checkpoints load
key for key, with or without ``low_cpu_mem_usage``. Stem (4x4/4 conv + LayerNorm) and
downsampling (LayerNorm + 2x2/2 conv) use transformers' channels-first `ConvNextLayerNorm`,
which normalises in float32 and applies its affine in the input dtype.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import nn
from transformers import CLIPImageProcessor, ConvNextConfig
from transformers.models.convnext.modeling_convnext import ConvNextLayer, ConvNextLayerNorm

from llava.errors import CheckpointError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3  # PIL.Image.BICUBIC, as the slow tower's CLIPImageProcessor uses
SLOW_CONFIG_FIELD = "vision_tower_slow_config"


@dataclass(frozen=True)
class ConvNextArch:
    """Sizes of a timm-style ConvNeXt.

    Attributes:
        depths: blocks per stage.
        dims: channels per stage.
        layer_norm_eps: eps of every LayerNorm.
        head_hidden_size: width of the head's ``pre_logits.fc`` (None: no such layer).
        num_classes: rows of ``head.fc``.
        stem_patch: stem conv kernel and stride, in pixels.
        downsample_stride: kernel and stride of each later stage's downsampling conv.
    """

    depths: Tuple[int, ...]
    dims: Tuple[int, ...]
    layer_norm_eps: float
    head_hidden_size: Optional[int]
    num_classes: int
    stem_patch: int = 4
    downsample_stride: int = 2

    @property
    def output_stride(self) -> int:
        """Pixels per cell of the last stage's map."""
        return self.stem_patch * self.downsample_stride ** (len(self.dims) - 1)


CONVNEXT_ARCHS = {
    # timm's convnext_large_mlp: default tag clip_laion2b_soup_ft_in12k_in1k_320 (1000 classes)
    "convnext_large_mlp": ConvNextArch((3, 3, 27, 3), (192, 384, 768, 1536), 1e-6, 1536, 1000),
    # timm's convnext_xxlarge: norm_eps 1e-5, default tag clip_laion2b_soup_ft_in1k (1000 classes)
    "convnext_xxlarge": ConvNextArch((3, 4, 30, 3), (384, 768, 1536, 3072), 1e-5, None, 1000),
}
"""Upstream picks the arch by name and ignores the tag after the dot: ``xxlarge`` in the name
gives convnext_xxlarge, anything else convnext_large_mlp; here only these two names are known."""


def convnext_arch(config: Any, where: str) -> ConvNextArch:
    """The ConvNeXt sizes a LLaVA-HR config implies.

    A ``vision_tower_slow_config`` dict (tiny checkpoints record their own sizes: ``depths``,
    ``dims``, ``layer_norm_eps``, ``head_hidden_size``, ``num_classes``) wins; otherwise the
    arch part of ``vision_tower_slow`` (before the first ``.``) is looked up in `CONVNEXT_ARCHS`.

    Raises:
        CheckpointError: naming `where` (the config file) and the field, when neither gives sizes.
    """
    given = getattr(config, SLOW_CONFIG_FIELD, None)
    if given is not None:
        try:
            arch = ConvNextArch(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})
        except TypeError as err:
            raise CheckpointError(f"{where}: field '{SLOW_CONFIG_FIELD}' is not a ConvNeXt size record ({err})") from None
        if len(arch.depths) != len(arch.dims) or not all(isinstance(v, int) and v > 0 for v in arch.depths + arch.dims):
            raise CheckpointError(f"{where}: field '{SLOW_CONFIG_FIELD}': depths {list(arch.depths)} and dims "
                                  f"{list(arch.dims)} must be positive ints, one of each per stage")
        return arch
    name = getattr(config, "vision_tower_slow", None)
    arch = CONVNEXT_ARCHS.get(str(name).split(".")[0])
    if arch is None:
        raise CheckpointError(f"{where}: field 'vision_tower_slow' is {name!r}: not one of the ConvNeXt archs "
                              f"{sorted(CONVNEXT_ARCHS)} (a tag may follow a '.'), and no '{SLOW_CONFIG_FIELD}' "
                              "gives its sizes")
    return arch


class ConvNextBlock(ConvNextLayer):
    """transformers' `ConvNextLayer`, its forward unchanged, with timm's parameter names:
    ``conv_dw`` (dwconv), ``norm`` (layernorm), ``mlp.fc1``/``mlp.fc2`` (pwconv1/2) and the
    layer scale as ``weight`` (upstream's name for timm's ``gamma``)."""

    _TIMM_NAMES = {
        "dwconv": ("conv_dw",),
        "layernorm": ("norm",),
        "pwconv1": ("mlp", "fc1"),
        "pwconv2": ("mlp", "fc2"),
        "layer_scale_parameter": ("weight",),
    }

    def __init__(self, config: ConvNextConfig, dim: int, eps: float):
        super().__init__(config, dim)
        self.conv_dw = self._modules.pop("dwconv")
        self.norm = self._modules.pop("layernorm")
        self.norm.eps = eps
        self.mlp = nn.Module()
        self.mlp.fc1 = self._modules.pop("pwconv1")
        self.mlp.fc2 = self._modules.pop("pwconv2")
        self.weight = self._parameters.pop("layer_scale_parameter")

    def __getattr__(self, name: str) -> Any:
        path = self._TIMM_NAMES.get(name)
        if path is None:
            return super().__getattr__(name)
        target: Any = self
        for part in path:
            target = nn.Module.__getattr__(target, part)
        return target


def _norm_first(dim: int, eps: float) -> ConvNextLayerNorm:
    return ConvNextLayerNorm(dim, eps=eps, data_format="channels_first")


class ConvNextStage(nn.Module):
    """One stage: ``downsample`` (LayerNorm + strided conv, or identity for the first) then ``blocks``."""

    def __init__(self, config: ConvNextConfig, arch: ConvNextArch, index: int):
        super().__init__()
        dim = arch.dims[index]
        if index == 0:
            self.downsample: nn.Module = nn.Identity()
        else:
            stride = arch.downsample_stride
            self.downsample = nn.Sequential(
                _norm_first(arch.dims[index - 1], arch.layer_norm_eps),
                nn.Conv2d(arch.dims[index - 1], dim, kernel_size=stride, stride=stride),
            )
        self.blocks = nn.Sequential(*[ConvNextBlock(config, dim, arch.layer_norm_eps)
                                      for _ in range(arch.depths[index])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C, H / stride, W / stride)."""
        return self.blocks(self.downsample(x))


class ConvNextHead(nn.Module):
    """timm's classifier head (``norm``, optional ``pre_logits.fc``, ``fc``): kept so checkpoints
    load strictly; LLaVA-HR never runs it."""

    def __init__(self, arch: ConvNextArch):
        super().__init__()
        width = arch.dims[-1]
        self.norm = _norm_first(width, arch.layer_norm_eps)
        if arch.head_hidden_size is not None:
            self.pre_logits = nn.Sequential(OrderedDict(fc=nn.Linear(width, arch.head_hidden_size)))
            width = arch.head_hidden_size
        self.fc = nn.Linear(width, arch.num_classes)


class ConvNextBackbone(nn.Module):
    """``stem``, ``stages`` and the unused ``head``; the forward returns the last stage's map."""

    def __init__(self, arch: ConvNextArch, num_channels: int = 3):
        super().__init__()
        self.arch = arch
        config = ConvNextConfig(num_channels=num_channels, depths=list(arch.depths), hidden_sizes=list(arch.dims),
                                hidden_act="gelu", layer_scale_init_value=1e-6)
        self.stem = nn.Sequential(
            nn.Conv2d(num_channels, arch.dims[0], kernel_size=arch.stem_patch, stride=arch.stem_patch),
            _norm_first(arch.dims[0], arch.layer_norm_eps),
        )
        self.stages = nn.ModuleList([ConvNextStage(config, arch, i) for i in range(len(arch.dims))])
        self.head = ConvNextHead(arch)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels -> (B, dims[-1], H / output_stride, W / output_stride)."""
        x = self.stem(pixels)
        for stage in self.stages:
            x = stage(x)
        return x


def slow_image_processor(input_image_size: int) -> CLIPImageProcessor:
    """The processor LLaVA-HR uses for every image: OpenAI CLIP mean/std, bicubic resize of the
    shortest edge to `input_image_size` px and a centre crop of that size."""
    return CLIPImageProcessor(
        size={"shortest_edge": input_image_size},
        crop_size={"height": input_image_size, "width": input_image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        resample=BICUBIC,
    )


class ConvNextVisionTower(nn.Module):
    """The slow tower: ``vision_tower`` (the ConvNeXt) and the image processor at `input_image_size`."""

    def __init__(self, arch: ConvNextArch, input_image_size: int):
        super().__init__()
        self.vision_tower = ConvNextBackbone(arch)
        self.image_processor = slow_image_processor(input_image_size)

    @property
    def hidden_size(self) -> int:
        """Channels of the last stage's map."""
        return self.vision_tower.arch.dims[-1]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, hidden_size, H / 32, W / 32) for the real archs."""
        return self.vision_tower(pixels)


def shape_mismatches(expected: Sequence[Tuple[str, Tuple[int, ...]]], found: dict) -> list:
    """``'key: checkpoint (a, b), config (c, d)'`` for each expected key whose shape in `found` differs,
    and ``'key: missing'`` for each expected key `found` lacks."""
    out = []
    for key, shape in expected:
        if key not in found:
            out.append(f"{key}: missing from the checkpoint")
        elif tuple(found[key]) != tuple(shape):
            out.append(f"{key}: checkpoint {tuple(found[key])}, config {tuple(shape)}")
    return out
