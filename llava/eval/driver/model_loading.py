"""Loading the model a driver evaluates, with its pruning flags applied, and the pruning in effect."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

import torch

from llava.mm_utils import get_model_name_from_path
from llava.eval.driver.flags import resolve_dtype
from llava.pruning_flags import apply_pruning_args

@dataclass
class LoadedModel:
    """A loaded model with its tokenizer and image processor."""

    tokenizer: Any
    model: torch.nn.Module
    image_processor: Any
    model_name: str


def load_model(args: argparse.Namespace) -> LoadedModel:
    """Loads ``--model-path`` on ``--device`` in ``--dtype`` and applies the pruning flags.

    Raises:
        FileNotFoundError: a model path that does not exist (or, offline, is not cached).
        CheckpointError: a config without `mm_vision_tower`, or a vision tower that is not available.
        llava.model.pruning.recipe.RecipeError: pruning asked for but no recipe fits.
    """
    from llava.model.builder import load_pretrained_model
    from llava.utils import disable_torch_init

    disable_torch_init()
    model_path = os.path.expanduser(args.model_path)
    model_name = get_model_name_from_path(model_path)
    device_map = {"": args.device} if ":" in str(args.device) else "auto"
    tokenizer, model, image_processor, _ = load_pretrained_model(
        model_path, args.model_base, model_name, device_map=device_map, device=args.device,
        torch_dtype=resolve_dtype(args), image_processing=args.image_processing,
    )
    model.eval()
    apply_pruning_args(model, args)
    return LoadedModel(tokenizer, model, image_processor, model_name)


def pruning_info(model) -> dict:
    """The pruning in effect: ratio (percent), policy, recipe file and the recipe's keep counts and
    reductions (percent), read from the model's pruner (the recipe is not read again). The policy is
    named whenever a pruner is installed; the recipe fields stay None for a policy that sets its own
    counts (DART, DivPrune, PyramidDrop, SparseVLM, VisionZip)."""
    pruner = model.get_model().prefill_hook
    recipe = getattr(pruner, "recipe", None)
    settings = getattr(pruner, "settings", None)
    info = {"reduction_ratio": float(model.config.reduction_ratio), "policy": settings and settings.policy,
            "recipe_file": None, "keep_counts": None, "achieved_paper": None, "achieved_full": None}
    if recipe is None:
        return info
    info.update(recipe_file=str(pruner.recipe_file),
                keep_counts=list(recipe.keep_counts), achieved_paper=recipe.achieved_paper,
                achieved_full=recipe.achieved_full)
    return info
