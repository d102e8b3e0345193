"""`LlavaConfig`: the LLaMA config plus every LLaVA, LLaVA-HR and pruning field the code reads.

Each field is declared with upstream LLaVA v1.1.3's default (the value its code assumes when
``config.json`` lacks the key), so code reads ``config.x`` and never ``getattr(config, "x", default)``.
The names are upstream's, so ``save_pretrained`` writes a ``config.json`` that upstream loads; the
extra keys (LLaVA-HR, ``conv_mode``, the pruning fields) are ones upstream ignores.
"""
from __future__ import annotations

from typing import Any, List, Optional

from transformers import LlamaConfig

DEFAULT_POLICY = "fitprune"
"""The scoring policy of a config that names none (`llava.model.pruning.policies.POLICIES`)."""


NONE_DEFAULT_FIELDS = frozenset({
    "mm_vision_tower", "mm_hidden_size", "mm_vision_select_layer", "image_aspect_ratio", "image_grid_pinpoints",
    "vision_tower_slow", "input_image_size", "conv_mode", "fitprune_recipe",
})
"""The declared fields whose default is None, left out of ``config.json`` while they hold it."""


class LlavaConfig(LlamaConfig):
    """LlamaConfig with model_type "llava" and the multimodal and pruning fields.

    Args:
        mm_vision_tower: the CLIP tower's hub name or folder; None for a text-only model.
        mm_hidden_size: width of the tower's features (the projector's input), or None.
        mm_projector_type: "linear", "mlpNx_gelu" or "identity".
        mm_vision_select_layer: the tower's hidden layer whose features are used (-2 in LLaVA-1.5);
            None when the config lacks it (the tower refuses to load).
        mm_vision_select_feature: "patch" (drop CLS) or "cls_patch".
        mm_patch_merge_type: how anyres tiles are merged ("flat", "spatial_unpad", ...).
        image_aspect_ratio: "pad", "anyres" or None (resize and center-crop).
        image_grid_pinpoints: anyres tile grids in pixels, [[w, h], ...], or None.
        mm_use_im_start_end: wrap the image in <im_start>/<im_end> tokens.
        mm_use_im_patch_token: the tokenizer holds <im_patch> (upstream's loader adds it unless False).
        tune_mm_mlp_adapter: training flag read by the splice (False at inference).
        is_multipath_encoder: LLaVA-HR's two-tower encoder (CLIP plus ConvNeXt).
        vision_tower_slow: LLaVA-HR's ConvNeXt name, or None.
        input_image_size: LLaVA-HR's processed image side in pixels, or None.
        freeze_vision: LLaVA-HR's flag; False builds the S2F adapters saved with the model.
        conv_mode: the conversation template the checkpoint was converted with, or None (guessed
            from the name).
        reduction_ratio: paper-convention FLOPs the pruner removes, percent (0: unpruned).
        fitprune_recipe: the recipe file to read, or None to look one up.
        fitprune_policy: the scoring policy's name.
        fitprune_seed: the random policy's seed.
        kwargs: the LLaMA fields (`transformers.LlamaConfig`).
    """

    model_type = "llava"

    def __init__(
        self,
        mm_vision_tower: Optional[str] = None,
        mm_hidden_size: Optional[int] = None,
        mm_projector_type: str = "linear",
        mm_vision_select_layer: Optional[int] = None,
        mm_vision_select_feature: str = "patch",
        mm_patch_merge_type: str = "flat",
        image_aspect_ratio: Optional[str] = None,
        image_grid_pinpoints: Optional[List[List[int]]] = None,
        mm_use_im_start_end: bool = False,
        mm_use_im_patch_token: bool = True,
        tune_mm_mlp_adapter: bool = False,
        is_multipath_encoder: bool = False,
        vision_tower_slow: Optional[str] = None,
        input_image_size: Optional[int] = None,
        freeze_vision: bool = False,
        conv_mode: Optional[str] = None,
        reduction_ratio: float = 0.0,
        fitprune_recipe: Optional[str] = None,
        fitprune_policy: str = DEFAULT_POLICY,
        fitprune_seed: int = 0,
        **kwargs: Any,
    ):
        self.mm_vision_tower = mm_vision_tower
        self.mm_hidden_size = mm_hidden_size
        self.mm_projector_type = mm_projector_type
        self.mm_vision_select_layer = mm_vision_select_layer
        self.mm_vision_select_feature = mm_vision_select_feature
        self.mm_patch_merge_type = mm_patch_merge_type
        self.image_aspect_ratio = image_aspect_ratio
        self.image_grid_pinpoints = image_grid_pinpoints
        self.mm_use_im_start_end = mm_use_im_start_end
        self.mm_use_im_patch_token = mm_use_im_patch_token
        self.tune_mm_mlp_adapter = tune_mm_mlp_adapter
        self.is_multipath_encoder = is_multipath_encoder
        self.vision_tower_slow = vision_tower_slow
        self.input_image_size = input_image_size
        self.freeze_vision = freeze_vision
        self.conv_mode = conv_mode
        self.reduction_ratio = reduction_ratio
        self.fitprune_recipe = fitprune_recipe
        self.fitprune_policy = fitprune_policy
        self.fitprune_seed = fitprune_seed
        super().__init__(**kwargs)

    def to_diff_dict(self) -> dict:
        """As transformers', less the LLaVA fields that hold None (their default): upstream builds a
        tower whenever ``mm_vision_tower`` exists, so a text-only config must not hold it, and a
        ``config.json`` keeps only the keys its model sets."""
        fields = super().to_diff_dict()
        return {k: v for k, v in fields.items() if not (v is None and k in NONE_DEFAULT_FIELDS)}
