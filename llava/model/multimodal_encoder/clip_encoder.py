"""CLIP vision tower: turns pixel tensors into per-patch features for the projector."""

import functools
import logging
import os
from typing import Any, Callable, List, Optional, Tuple, TypeVar, Union

import torch
import torch.nn as nn
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel
from transformers.utils import is_offline_mode

from llava.errors import CheckpointError
from llava.model.multimodal_encoder.visionzip import (
    TowerSelection,
    cls_attention_and_keys,
    encoder_layer_index,
    visionzip_tokens,
)
from llava.utils import safe_weights_loading

logger = logging.getLogger(__name__)

SELECT_FEATURES = ("patch", "cls_patch")
HUB_PROBE_TIMEOUT_S = 5.0
"""How long `hub_unavailable_reason` waits for the hub to answer (huggingface_hub itself retries
an unreachable hub for about 25 s per file before giving up)."""

LoadedT = TypeVar("LoadedT")


def hub_file_is_cached(repo_id: str, filename: str) -> bool:
    """Whether a file of a Hugging Face hub repository is in the local cache.

    Args:
        repo_id: e.g. ``openai/clip-vit-large-patch14-336``.
        filename: e.g. ``config.json``.

    Returns:
        True when the cached file exists; False for an uncached file or a name that is not a repo id.
    """
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError

    try:
        cached = try_to_load_from_cache(repo_id, filename)
    except HFValidationError:
        return False
    return isinstance(cached, str) and os.path.isfile(cached)


@functools.lru_cache(maxsize=None)
def _hub_unreachable_reason(endpoint: str) -> Optional[str]:
    """None when `endpoint` answers an HTTP request (any status), else why not, in a few words."""
    import requests

    try:
        requests.head(endpoint, timeout=HUB_PROBE_TIMEOUT_S)
    except requests.RequestException as err:
        return f"{endpoint} cannot be reached ({type(err).__name__})"
    return None


def hub_unavailable_reason() -> Optional[str]:
    """Why files that are not in the Hugging Face cache cannot be downloaded now, or None when they can.

    Returns:
        ``"downloads are off (HF_HUB_OFFLINE=1)"`` in offline mode; else, when the hub
        (``HF_ENDPOINT``) does not answer within `HUB_PROBE_TIMEOUT_S` (asked once a process),
        ``"<endpoint> cannot be reached (<error type>)"``; else None.
    """
    if is_offline_mode():
        return "downloads are off (HF_HUB_OFFLINE=1)"
    from huggingface_hub import constants

    return _hub_unreachable_reason(constants.ENDPOINT)


def tower_config_location(args: Any) -> str:
    """Where a config naming a vision tower comes from, for messages: ``<checkpoint>/config.json``."""
    source = getattr(args, "_name_or_path", None)
    if not source:
        return "the model config"
    return os.path.join(source, "config.json") if os.path.isdir(source) else f"{source} config.json"


def tower_unavailable_error(where: str, vision_tower: str, unavailable: str) -> CheckpointError:
    """The error for a vision tower that cannot be downloaded now and is not in the cache.

    Args:
        where: the config file and field that name the tower.
        vision_tower: the tower's hub name.
        unavailable: why downloads cannot happen (`hub_unavailable_reason`).

    Returns:
        The `CheckpointError` to raise.
    """
    return CheckpointError(
        f"{where}: vision tower {vision_tower!r} is not available offline: it is not a local directory and not in "
        f"the Hugging Face cache, and {unavailable}; point mm_vision_tower at a local directory, or fetch the tower "
        "once with downloads on"
    )


def load_tower_part(load: Callable[[str], LoadedT], vision_tower: str, config_location: str) -> LoadedT:
    """Calls a ``from_pretrained`` of the tower, turning "cannot be found" into a one-line `CheckpointError`.

    Args:
        load: e.g. ``CLIPVisionConfig.from_pretrained``.
        vision_tower: the tower's hub name or directory.
        config_location: the config file that names it (`tower_config_location`), for messages.

    Returns:
        What `load` returns.

    Raises:
        CheckpointError: the tower is not a readable directory and cannot be fetched (with
            downloads off, ``HF_HUB_OFFLINE=1``, it is not in the cache); or a weights file of
            it is truncated, corrupt or holds more than tensors (`llava.utils.read_weights_file`:
            the message starts with the file's path).
    """
    try:
        with safe_weights_loading():
            return load(vision_tower)
    except OSError as err:
        where = f"{config_location}: field 'mm_vision_tower'"
        if os.path.isdir(vision_tower):
            raise CheckpointError(f"{where}: vision tower directory {vision_tower} cannot be read ({err})") from None
        unavailable = hub_unavailable_reason()
        if unavailable:
            raise tower_unavailable_error(where, vision_tower, unavailable) from None
        raise CheckpointError(f"{where}: vision tower {vision_tower!r} cannot be loaded ({err})") from None


def _check_select_feature(select_feature: str) -> None:
    """Raise if ``select_feature`` is not one of :data:`SELECT_FEATURES`."""
    if select_feature not in SELECT_FEATURES:
        raise ValueError(f"Unexpected select feature: {select_feature!r}; expected one of {SELECT_FEATURES}")


class CLIPVisionTower(nn.Module):
    """A frozen ``CLIPVisionModel`` whose hidden states at one layer are the image features.

    The features are ``hidden_states[select_layer]`` (no post-layernorm), with the CLS
    token dropped for ``'patch'`` or kept for ``'cls_patch'``.

    Args:
        vision_tower: Hub name or local directory of a CLIP checkpoint.
        args: Config or namespace with ``mm_vision_select_layer`` and optionally
            ``mm_vision_select_feature`` (default ``'patch'``).
        delay_load: Only read the CLIP config now; call :meth:`load_model` later. When
            ``args.unfreeze_mm_vision_tower`` is true (LLaVA-NeXT checkpoints, whose
            fine-tuned tower weights are part of the LLaVA checkpoint), the tower is
            built from its config instead (:meth:`build_for_checkpoint_weights`), so
            the checkpoint's ``model.vision_tower.vision_tower.*`` weights load into it.
            A config with ``mm_vision_tower_config`` (a CLIP vision config as a dict: the
            Hugging Face-layout checkpoints, `llava.model.hf_config`) gets its tower built
            from that, reading no file; its weights and image processor come with the
            checkpoint.

    Raises:
        ValueError: If ``args`` has no ``mm_vision_select_layer`` or names an unknown
            select feature.
    """

    def __init__(self, vision_tower: str, args: Any, delay_load: bool = False):
        super().__init__()
        select_layer = getattr(args, "mm_vision_select_layer", None)
        if select_layer is None:
            raise ValueError(f"Vision tower {vision_tower!r} needs 'mm_vision_select_layer' in its config")
        select_feature = getattr(args, "mm_vision_select_feature", "patch")
        _check_select_feature(select_feature)

        self.is_loaded = False
        self.vision_tower_name = vision_tower
        self.select_layer = select_layer
        self.select_feature = select_feature
        self.config_location = tower_config_location(args)

        vision_config = getattr(args, "mm_vision_tower_config", None)
        if vision_config:
            self.image_processor = None
            self.build_from_vision_config(CLIPVisionConfig(**vision_config))
        elif not delay_load:
            self.load_model()
        elif getattr(args, "unfreeze_mm_vision_tower", False):
            self.build_for_checkpoint_weights()
        else:
            self.cfg_only = self._load(CLIPVisionConfig.from_pretrained)

    def _load(self, load: Callable[[str], LoadedT]) -> LoadedT:
        return load_tower_part(load, self.vision_tower_name, self.config_location)

    def build_for_checkpoint_weights(self) -> None:
        """Build the vision model from its config, with weights to be filled by the LLaVA
        checkpoint, and load the image processor; the tower then counts as loaded."""
        self.image_processor = self._load(CLIPImageProcessor.from_pretrained)
        self.build_from_vision_config(self._load(CLIPVisionConfig.from_pretrained))

    def build_from_vision_config(self, vision_config: CLIPVisionConfig) -> None:
        """Build the frozen vision model from `vision_config`, with weights to be filled by the LLaVA
        checkpoint; the tower then counts as loaded."""
        self.vision_tower = CLIPVisionModel(vision_config)
        self.vision_tower.requires_grad_(False)
        self.is_loaded = True

    def load_model(self) -> None:
        """Load the image processor and the frozen vision model from ``vision_tower_name``."""
        if self.is_loaded:
            logger.info("Vision tower %s is already loaded; skipping", self.vision_tower_name)
            return
        self.image_processor = self._load(CLIPImageProcessor.from_pretrained)
        self.vision_tower = self._load(CLIPVisionModel.from_pretrained)
        self.vision_tower.requires_grad_(False)
        self.is_loaded = True

    def _require_loaded(self) -> None:
        """Raise if the weights have not been loaded yet."""
        if not self.is_loaded:
            raise RuntimeError(
                f"Vision tower {self.vision_tower_name!r} was built with delay_load=True; call load_model() first"
            )

    def feature_select(self, image_forward_outs: Any) -> torch.Tensor:
        """Pick the features of the selected layer.

        Args:
            image_forward_outs: ``CLIPVisionModel`` output with ``hidden_states``.

        Returns:
            ``(B, num_visual_tokens, hidden_size)`` features.

        Raises:
            ValueError: If ``select_feature`` is not ``'patch'`` or ``'cls_patch'``.
        """
        _check_select_feature(self.select_feature)
        features = image_forward_outs.hidden_states[self.select_layer]  # (B, 1 + P, C)
        if self.select_feature == "patch":
            features = features[:, 1:]  # (B, P, C): drop CLS
        return features

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Run the tower on ``(B, 3, H, W)`` pixels and return features in the input dtype."""
        outs = self.vision_tower(pixel_values.to(device=self.device, dtype=self.dtype), output_hidden_states=True)
        return self.feature_select(outs).to(pixel_values.dtype)

    @torch.no_grad()
    def encode_visionzip(
        self, images: torch.Tensor, dominant: int, contextual: int
    ) -> Tuple[torch.Tensor, TowerSelection]:
        """VisionZip's reduced features of ``(B, 3, H, W)`` images
        (`llava.model.multimodal_encoder.visionzip`), at the selected layer.

        Returns:
            ``(B, dominant + contextual, hidden_size)`` features in the input dtype ([CLS] and the
            dominant patches in order, then the contextual tokens), and the grid cells behind them.

        Raises:
            RuntimeError: If the weights are not loaded.
            ValueError: a select layer naming the embeddings, or more tokens than patches.
        """
        self._require_loaded()
        if images.dim() != 4:
            raise ValueError(f"Expected images as (B, 3, H, W), got shape {tuple(images.shape)}")
        layers = self.vision_tower.vision_model.encoder.layers
        index = encoder_layer_index(self.select_layer, len(layers))
        outs = self.vision_tower(images.to(device=self.device, dtype=self.dtype), output_hidden_states=True)
        cls_attention, keys = cls_attention_and_keys(layers[index], outs.hidden_states[index])
        tokens, selection = visionzip_tokens(outs.hidden_states[index + 1], cls_attention, keys, dominant, contextual)
        return tokens.to(images.dtype), selection

    @torch.no_grad()
    def forward(self, images: Union[torch.Tensor, List[torch.Tensor]]) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Encode images.

        Args:
            images: A ``(B, 3, H, W)`` tensor, or a list of ``(3, H, W)`` tensors
                encoded one at a time.

        Returns:
            ``(B, num_visual_tokens, hidden_size)`` for a tensor, or a list of
            ``(1, num_visual_tokens, hidden_size)`` tensors for a list; each in the
            dtype of its input.

        Raises:
            RuntimeError: If the weights are not loaded.
            ValueError: If a tensor input is not 4-D or a list item is not 3-D.
        """
        self._require_loaded()
        if isinstance(images, (list, tuple)):
            features = []
            for image in images:
                if image.dim() != 3:
                    raise ValueError(f"Expected each listed image as (3, H, W), got shape {tuple(image.shape)}")
                features.append(self._encode(image.unsqueeze(0)))
            return features
        if images.dim() != 4:
            raise ValueError(f"Expected images as (B, 3, H, W), got shape {tuple(images.shape)}")
        return self._encode(images)

    @property
    def dummy_feature(self) -> torch.Tensor:
        """A ``(1, hidden_size)`` zero feature on the tower's device and dtype."""
        return torch.zeros(1, self.hidden_size, device=self.device, dtype=self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype of the loaded vision model."""
        self._require_loaded()
        return self.vision_tower.dtype

    @property
    def device(self) -> torch.device:
        """Device of the loaded vision model."""
        self._require_loaded()
        return self.vision_tower.device

    @property
    def config(self) -> CLIPVisionConfig:
        """The loaded model's config, or the config read at delay-load time."""
        if self.is_loaded:
            return self.vision_tower.config
        return self.cfg_only

    @property
    def hidden_size(self) -> int:
        """Width of each visual feature."""
        return self.config.hidden_size

    @property
    def num_patches(self) -> int:
        """Number of image patches, ``(image_size // patch_size) ** 2``."""
        return self.num_patches_per_side**2

    @property
    def num_patches_per_side(self) -> int:
        """Patches along one side of the image, ``image_size // patch_size``."""
        return self.config.image_size // self.config.patch_size

    @property
    def num_visual_tokens(self) -> int:
        """Number of features per image: the patches, plus CLS for ``'cls_patch'``."""
        return self.num_patches + (1 if self.select_feature == "cls_patch" else 0)
