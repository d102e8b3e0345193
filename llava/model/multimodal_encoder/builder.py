"""Factory for the vision tower named in a LLaVA config."""

import os
from typing import Any

from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower

_HUB_PREFIXES = ("openai", "laion")


def build_vision_tower(vision_tower_cfg: Any, **kwargs: Any) -> CLIPVisionTower:
    """Build the vision tower a config names.

    Args:
        vision_tower_cfg: Config or namespace with ``mm_vision_tower`` (or, as a
            fallback, ``vision_tower``) plus the ``mm_vision_select_*`` fields.
        **kwargs: Passed to :class:`CLIPVisionTower`, e.g. ``delay_load=True``.

    Returns:
        The CLIP vision tower.

    Raises:
        ValueError: If no tower is named, or the name is neither an existing path nor
            a hub name starting with ``openai`` or ``laion``.
    """
    name = getattr(vision_tower_cfg, "mm_vision_tower", getattr(vision_tower_cfg, "vision_tower", None))
    if not name:
        raise ValueError("Config names no vision tower: set 'mm_vision_tower' (or 'vision_tower')")
    if os.path.exists(name) or name.startswith(_HUB_PREFIXES):
        return CLIPVisionTower(name, args=vision_tower_cfg, **kwargs)
    raise ValueError(
        f"Unknown vision tower: {name!r}; it must be an existing directory or a hub name "
        f"starting with one of {_HUB_PREFIXES}"
    )
