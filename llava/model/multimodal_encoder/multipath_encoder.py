"""LLaVA-HR's dual-resolution vision tower (upstream's MultiPathCLIPVisionTower).

An image at ``input_image_size`` px (1024) goes whole to the ConvNeXt (`ConvNextVisionTower`;
its last stage is a (input / 32)² map) and, resized to ``fast_image_size`` px (448), to a CLIP
ViT whose position table is resized to the larger grid on every forward. The ViT runs on its
patch tokens only (CLS dropped before ``pre_layrnorm``), all layers, in four equal groups; an
`S2FAdapter` after groups 1-3 mixes the ConvNeXt map in, and `MultiPathAlign` adds both branches
at the end (no ``post_layernorm``). Output: (B, (fast_image_size / patch)², CLIP width).

The module tree equals upstream's, so checkpoint keys load unchanged:
``fast_vision_tower.vision_tower.vision_model.*``, ``slow_vision_tower.vision_tower.{stem,stages,head}.*``,
``align_stages_latent.{0,1,2}.*``, ``align_stages.0.*``. Upstream never uses
``fast_vision_tower.vision_tower.vision_model.post_layernorm.*``, ``...embeddings.class_embedding``
(its token is dropped before the encoder) and ``slow_vision_tower.vision_tower.head.*``; they are
kept so checkpoints load strictly. Everything is built from the config: no hub weights are read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from llava.errors import CheckpointError
from llava.model.multimodal_encoder.clip_encoder import load_tower_part, tower_config_location
from llava.model.multimodal_encoder.convnext_tower import (
    SLOW_CONFIG_FIELD,
    ConvNextArch,
    ConvNextVisionTower,
    convnext_arch,
    shape_mismatches,
)
from llava.model.multimodal_encoder.multipath_adapters import MultiPathAlign, S2FAdapter, grid_side
from llava.model.multimodal_encoder.weight_shapes import checkpoint_shapes

LAYER_GROUPS = 4  # upstream splits the ViT layers into four groups, adapters between them
TOWER_PREFIX = "model.vision_tower."
SLOW_PREFIX = TOWER_PREFIX + "slow_vision_tower."

KNOWN_CLIP_TOWERS = {
    "openai/clip-vit-large-patch14-336": dict(
        hidden_size=1024, intermediate_size=4096, projection_dim=768,  # ok: the hub tower's published config
        num_hidden_layers=24, num_attention_heads=16,
        num_channels=3, image_size=336, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    ),
}
"""CLIP vision configs of the fast towers the released LLaVA-HR checkpoints name, so they load
offline: the checkpoint carries the weights, the sizes are the hub config's."""


def is_multipath(config: Any) -> bool:
    """Whether a LLaVA config asks for LLaVA-HR's tower (``is_multipath_encoder`` true)."""
    return bool(getattr(config, "is_multipath_encoder", False))


@dataclass(frozen=True)
class MultiPathSettings:
    """The LLaVA-HR fields of a config, checked.

    Attributes:
        input_image_size: side of the processed image in pixels (the ConvNeXt's input).
        freeze_vision: upstream's flag; False builds the three S2F adapters.
        arch: the ConvNeXt's sizes.
        clip: the fast ViT's config.
    """

    input_image_size: int
    freeze_vision: bool
    arch: ConvNextArch
    clip: CLIPVisionConfig

    @property
    def fast_image_size(self) -> int:
        """Pixels the ViT sees: max(input / slow stride * patch, CLIP image size) (448 for 1024)."""
        return max(self.input_image_size * self.clip.patch_size // self.arch.output_stride, self.clip.image_size)

    @property
    def fast_grid(self) -> int:
        """ViT patches per side."""
        return self.fast_image_size // self.clip.patch_size

    @property
    def slow_grid(self) -> int:
        """ConvNeXt cells per side of its last map."""
        return self.input_image_size // self.arch.output_stride


def _fast_clip_config(config: Any, name: Optional[str], where: str) -> CLIPVisionConfig:
    """The ViT's config: ``mm_vision_tower_config`` when given, else a `KNOWN_CLIP_TOWERS` entry, else
    the config.json of the directory or cached hub repository `name` (``mm_vision_tower``) names."""
    given = getattr(config, "mm_vision_tower_config", None)
    if given:
        return CLIPVisionConfig(**given)
    if not name:
        raise CheckpointError(f"{where}: field 'mm_vision_tower' is missing: the config names no vision tower")
    if name in KNOWN_CLIP_TOWERS:
        return CLIPVisionConfig(**KNOWN_CLIP_TOWERS[name])
    return load_tower_part(CLIPVisionConfig.from_pretrained, name, where)


def _required(config: Any, field: str, kind: type, where: str) -> Any:
    value = getattr(config, field, None)
    if value is None:
        raise CheckpointError(f"{where}: field '{field}' is missing; LLaVA-HR (is_multipath_encoder) needs it")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CheckpointError(f"{where}: field '{field}' must be a {kind.__name__}, got {value!r}")
    return value


def multipath_settings(config: Any, vision_tower: Optional[str] = None) -> MultiPathSettings:
    """Reads and checks the LLaVA-HR fields of `config`; `vision_tower` is the fast ViT's name or
    directory (default: ``mm_vision_tower``).

    Raises:
        CheckpointError: one line naming the config file and the field: ``vision_tower_slow``,
            ``input_image_size`` or ``freeze_vision`` missing or of the wrong type; an image size
            that is not a positive multiple of the ConvNeXt's stride, or whose slow and fast token
            counts do not divide one another; a ViT whose layer count is not a multiple of 4.
    """
    where = tower_config_location(config)
    _required(config, "vision_tower_slow", str, where)
    size = _required(config, "input_image_size", int, where)
    freeze = _required(config, "freeze_vision", bool, where)
    arch = convnext_arch(config, where)
    name = vision_tower or getattr(config, "mm_vision_tower", None) or getattr(config, "vision_tower", None)
    clip = _fast_clip_config(config, name, where)
    if clip.num_hidden_layers % LAYER_GROUPS:
        raise CheckpointError(f"{where}: field 'mm_vision_tower': LLaVA-HR runs the ViT in {LAYER_GROUPS} equal "
                              f"groups, but it has {clip.num_hidden_layers} layers")
    if size <= 0 or size % arch.output_stride:
        raise CheckpointError(f"{where}: field 'input_image_size' is {size}: it must be a positive multiple of the "
                              f"ConvNeXt's stride {arch.output_stride}")
    settings = MultiPathSettings(size, freeze, arch, clip)
    fast, slow = settings.fast_grid**2, settings.slow_grid**2
    if fast % slow and slow % fast:
        raise CheckpointError(f"{where}: field 'input_image_size' is {size}: its {slow} ConvNeXt cells and {fast} "
                              "ViT patches must divide one another")
    return settings


def resize_position_table(table: torch.Tensor, grid: int) -> torch.Tensor:
    """The patch rows of a (1 + n², C) CLIP position table resized to (grid², C): bicubic with
    antialias (align_corners False) in float32, cast back to the table's dtype; unchanged rows when n == grid."""
    patches = table[1:]
    side = grid_side(patches.shape[0])
    if side == grid:
        return patches
    square = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, C, n, n)
    square = F.interpolate(square.float(), size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
    return square.to(table.dtype).permute(0, 2, 3, 1).reshape(grid * grid, -1)


class FastCLIPTower(nn.Module):
    """The fast branch's holder: ``vision_tower`` is a `CLIPVisionModel` built from its config."""

    def __init__(self, clip: CLIPVisionConfig):
        super().__init__()
        self.vision_tower = CLIPVisionModel(clip)

    def embed(self, pixels: torch.Tensor, fast_image_size: int) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels -> (B, P, C) patch tokens after ``pre_layrnorm``.

        The pixels are resized to `fast_image_size` (bilinear, align_corners=True, float32); the
        patch embeddings get the resized position table (`resize_position_table`); the CLS token
        is dropped before the encoder, as upstream does.
        """
        model = self.vision_tower.vision_model
        embeddings = model.embeddings
        size = (fast_image_size, fast_image_size)
        resized = F.interpolate(pixels.float(), size=size, mode="bilinear", align_corners=True).to(pixels.dtype)
        patches = embeddings.patch_embedding(resized.to(embeddings.patch_embedding.weight.dtype))  # (B, C, g, g)
        tokens = patches.flatten(2).transpose(1, 2)  # (B, g², C)
        grid = patches.shape[-1]
        tokens = tokens + resize_position_table(embeddings.position_embedding.weight, grid)
        return model.pre_layrnorm(tokens)


class MultiPathVisionTower(nn.Module):
    """LLaVA-HR's tower, built from a LLaVA config's HR fields (`multipath_settings`) and checked against
    the checkpoint's ConvNeXt weights when the config comes from a checkpoint directory.

    Attributes:
        image_processor: the slow tower's processor at ``input_image_size`` (what every driver uses).

    Raises:
        CheckpointError: see `multipath_settings`; or the ConvNeXt sizes the config gives do not match
            the checkpoint's weights (names the field that gave them).
    """

    def __init__(self, config: Any, vision_tower: Optional[str] = None):
        super().__init__()
        self.settings = multipath_settings(config, vision_tower)
        self.config_location = tower_config_location(config)
        self.slow_vision_tower = ConvNextVisionTower(self.settings.arch, self.settings.input_image_size)
        self.fast_vision_tower = FastCLIPTower(self.settings.clip)
        fast_dim, slow_dim = self.settings.clip.hidden_size, self.slow_vision_tower.hidden_size
        if not self.settings.freeze_vision:
            self.align_stages_latent = nn.ModuleList([S2FAdapter(fast_dim, slow_dim) for _ in range(LAYER_GROUPS - 1)])
        self.align_stages = nn.ModuleList([MultiPathAlign(fast_dim, slow_dim)])
        self.image_processor = self.slow_vision_tower.image_processor
        self.is_loaded = True
        self._check_slow_weights(getattr(config, "_name_or_path", None), config)

    def _check_slow_weights(self, directory: Optional[str], config: Any) -> None:
        """Compares the ConvNeXt's parameter shapes with the checkpoint's, when `directory` holds weights."""
        found = checkpoint_shapes(directory, SLOW_PREFIX) if directory else None
        if found is None:
            return
        expected = [(SLOW_PREFIX + k, tuple(v.shape)) for k, v in self.slow_vision_tower.state_dict().items()]
        problems = shape_mismatches(expected, found)
        problems += [f"{k}: in the checkpoint, not in the config's ConvNeXt" for k in sorted(set(found) - dict(expected).keys())]
        if problems:
            field = SLOW_CONFIG_FIELD if getattr(config, SLOW_CONFIG_FIELD, None) is not None else "vision_tower_slow"
            raise CheckpointError(f"{self.config_location}: field '{field}': the ConvNeXt it gives (depths "
                                  f"{list(self.settings.arch.depths)}, dims {list(self.settings.arch.dims)}) does not "
                                  f"match the checkpoint's weights: {problems[0]}"
                                  + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))

    def load_model(self) -> None:
        """Nothing to load: the tower is built from the config and its weights come with the checkpoint."""

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) at S = input_image_size -> (B, fast_grid², hidden_size), in the input's dtype."""
        size = self.settings.input_image_size
        if pixels.shape[-2:] != (size, size):
            raise ValueError(f"LLaVA-HR images must be {size}x{size} px (input_image_size), got "
                             f"{tuple(pixels.shape[-2:])}")
        x = pixels.to(device=self.device, dtype=self.dtype)
        slow = self.slow_vision_tower(x)  # (B, C_s, s, s)
        y = self.fast_vision_tower.embed(x, self.settings.fast_image_size)  # (B, g², C_f)
        layers = self.fast_vision_tower.vision_tower.vision_model.encoder.layers
        per_group = len(layers) // LAYER_GROUPS
        adapters = getattr(self, "align_stages_latent", None)
        for index, layer in enumerate(layers):
            y = layer(y, None, None)[0]
            done = index + 1
            if adapters is not None and done % per_group == 0 and done < len(layers):
                y = adapters[done // per_group - 1](y, slow)
        return self.align_stages[0](y, slow).to(pixels.dtype)

    @torch.no_grad()
    def forward(self, images: Union[torch.Tensor, List[torch.Tensor]]) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Encodes a (B, 3, S, S) tensor to (B, num_visual_tokens, hidden_size), or a list of (3, S, S)
        tensors to a list of (1, num_visual_tokens, hidden_size); S is ``input_image_size``.

        Raises:
            ValueError: an image of another shape.
        """
        if isinstance(images, (list, tuple)):
            return [self._encode(image.unsqueeze(0)) for image in images]
        if images.dim() != 4:
            raise ValueError(f"Expected images as (B, 3, H, W), got shape {tuple(images.shape)}")
        return self._encode(images)

    @property
    def dummy_feature(self) -> torch.Tensor:
        """A (1, hidden_size) zero feature on the tower's device and dtype."""
        return torch.zeros(1, self.hidden_size, device=self.device, dtype=self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype of the ViT."""
        return self.fast_vision_tower.vision_tower.dtype

    @property
    def device(self) -> torch.device:
        """Device of the ViT."""
        return self.fast_vision_tower.vision_tower.device

    @property
    def config(self) -> CLIPVisionConfig:
        """The fast ViT's config."""
        return self.settings.clip

    @property
    def hidden_size(self) -> int:
        """Width of each visual feature: the ViT's."""
        return self.settings.clip.hidden_size

    @property
    def num_patches_per_side(self) -> int:
        """Visual tokens per side: the ViT's grid at ``fast_image_size`` (32 for 1024 px)."""
        return self.settings.fast_grid

    @property
    def num_patches(self) -> int:
        """Visual tokens per image, ``num_patches_per_side ** 2`` (1024 for 1024 px)."""
        return self.num_patches_per_side**2

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens spliced into the prompt per image (no CLS): `num_patches`."""
        return self.num_patches
