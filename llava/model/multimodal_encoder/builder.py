"""Factory for the vision tower named in a LLaVA config."""

import os
from typing import Any

from llava.errors import CheckpointError
from llava.model.multimodal_encoder.clip_encoder import (
    CLIPVisionTower,
    hub_file_is_cached,
    hub_unavailable_reason,
    tower_config_location,
    tower_unavailable_error,
)
from llava.model.multimodal_encoder.multipath_encoder import MultiPathVisionTower, is_multipath

_HUB_PREFIXES = ("openai", "laion")


def check_vision_tower(name: str, config_location: str) -> None:
    """Checks that a vision tower can be loaded: a local path, or a hub name (cached, when offline).

    Args:
        name: the config's ``mm_vision_tower``.
        config_location: the config file that names it, for messages.

    Raises:
        CheckpointError: the name is neither an existing path nor a hub name starting with
            ``openai`` or ``laion``; or it is a hub name that is not in the Hugging Face cache
            and cannot be downloaded now (`hub_unavailable_reason`).
    """
    where = f"{config_location}: field 'mm_vision_tower'"
    if os.path.exists(name):
        return
    if not name.startswith(_HUB_PREFIXES):
        raise CheckpointError(
            f"{where}: Unknown vision tower {name!r}; it must be an existing directory or a hub name "
            f"starting with one of {_HUB_PREFIXES}"
        )
    if hub_file_is_cached(name, "config.json"):
        return
    unavailable = hub_unavailable_reason()
    if unavailable:
        raise tower_unavailable_error(where, name, unavailable)


def resolve_tower_path(name: str, vision_tower_cfg: Any) -> str:
    """The tower a config names, with a relative name that is a directory inside the config's
    checkpoint folder (``_name_or_path``) made into that directory's path.

    A relative name that is a directory from the current folder, an absolute path and a hub name
    are kept as they are.
    """
    checkpoint = getattr(vision_tower_cfg, "_name_or_path", None)
    if os.path.isabs(name) or os.path.isdir(name) or not checkpoint or not os.path.isdir(checkpoint):
        return name
    inside = os.path.join(checkpoint, name)
    return inside if os.path.isdir(inside) else name


def build_vision_tower(vision_tower_cfg: Any, **kwargs: Any) -> CLIPVisionTower:
    """Build the vision tower a config names.

    Args:
        vision_tower_cfg: Config or namespace with ``mm_vision_tower`` (or, as a
            fallback, ``vision_tower``) plus the ``mm_vision_select_*`` fields.
        **kwargs: Passed to :class:`CLIPVisionTower`, e.g. ``delay_load=True``.

    Returns:
        The CLIP vision tower.

    A relative ``mm_vision_tower`` is found inside the checkpoint folder first (`resolve_tower_path`).
    A config holding ``mm_vision_tower_config`` (Hugging Face-layout checkpoints) gets a tower
    built from it, so its name is not checked. A config with ``is_multipath_encoder`` true gets
    LLaVA-HR's tower (`MultiPathVisionTower`), built from the config alone.

    Raises:
        CheckpointError: If no tower is named, or it cannot be loaded (`check_vision_tower`,
            `llava.model.multimodal_encoder.clip_encoder.load_tower_part`); the message names
            the config file and the field.
    """
    where = tower_config_location(vision_tower_cfg)
    name = getattr(vision_tower_cfg, "mm_vision_tower", getattr(vision_tower_cfg, "vision_tower", None))
    if not name:
        raise CheckpointError(f"{where}: field 'mm_vision_tower' is missing: the config names no vision tower")
    name = resolve_tower_path(name, vision_tower_cfg)
    if is_multipath(vision_tower_cfg):
        return MultiPathVisionTower(vision_tower_cfg, name)
    if not getattr(vision_tower_cfg, "mm_vision_tower_config", None):
        check_vision_tower(name, where)
    return CLIPVisionTower(name, args=vision_tower_cfg, **kwargs)
