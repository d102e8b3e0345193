"""Visual-token pruning flags shared by every command that generates.

    parser = argparse.ArgumentParser()
    add_pruning_args(parser)            # --reduction-ratio / --reduction_ratio, --recipe, --policy
    args = parser.parse_args()
    tokenizer, model, processor, _ = load_pretrained_model(...)
    apply_pruning_args(model, args)     # builds the pruner; writes model.config.reduction_ratio etc.
    ... model.generate(...) ...
    line = pruning_summary(model)       # "visual tokens kept ..." or None when pruning is off
"""
from __future__ import annotations

import argparse
import logging
from typing import Optional

from llava.model.pruning.policies import METHOD_LABELS, POLICIES
from llava.model.pruning.ratio import parse_reduction_ratio

logger = logging.getLogger(__name__)


def add_pruning_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the FitPrune flags to a driver's parser.

    ``--reduction-ratio`` and the fork's ``--reduction_ratio`` are the same flag
    (dest ``reduction_ratio``): the FLOPs budget as a percent (60) or a fraction (0.6),
    0 meaning unpruned. ``--recipe`` names a recipe file; without it the recipe is looked
    up beside the checkpoint, then among the shipped ones. ``--policy`` names the method (a key
    of `llava.model.pruning.policies.POLICIES`; default: the checkpoint config's
    ``fitprune_policy``, FitPrune unless it records another); an unknown name is argparse's
    one-line "invalid choice" listing the known ones.

    Args:
        parser: the driver's parser.

    Returns:
        The same parser.
    """
    group = parser.add_argument_group("FitPrune visual-token pruning")
    group.add_argument(
        "--reduction-ratio", "--reduction_ratio", dest="reduction_ratio", type=parse_reduction_ratio, default=0.0,
        metavar="R", help="FLOPs to remove, percent (60) or fraction (0.6); 0 (default) disables pruning",
    )
    group.add_argument(
        "--recipe", default=None, metavar="PATH",
        help="recipe book JSON (default: fitprune_recipes.json in the checkpoint, then the shipped recipes)",
    )
    group.add_argument(
        "--policy", choices=list(POLICIES), default=None, metavar="NAME",
        help="pruning method: " + "; ".join(f"{name} ({label})" for name, label in METHOD_LABELS.items())
             + ". Default: the checkpoint's (fitprune)",
    )
    return parser


def apply_pruning_args(model, args: argparse.Namespace) -> None:
    """Configures a loaded LLaVA model's pruning from the parsed flags.

    The ratio was parsed by the flag's type (`parse_reduction_ratio`); the policy is
    ``--policy``'s, else the model config's, and the seed is the config's. The pruner is built
    here, once (`set_pruning`), so a missing recipe or an unsupported ratio fails before the first
    generation, and the config's pruning fields (``reduction_ratio`` in percent,
    ``fitprune_policy``, ...) are set to match.

    Args:
        model: a `LlavaLlamaForCausalLM`.
        args: parsed flags with ``reduction_ratio``, ``recipe`` and ``policy`` (missing ones
            read as 0, None and None, for callers that build their own namespace).

    Raises:
        llava.model.pruning.recipe.RecipeError: no recipe for the model or the ratio, or a
            recipe fitted for another model.
        llava.model.pruning.ratio.ReductionRatioError: the ratio is not a percent in [0, 100).
    """
    ratio = getattr(args, "reduction_ratio", 0.0) or 0.0
    recipe = getattr(args, "recipe", None)
    if ratio == 0 and recipe:
        logger.warning("--recipe %s is ignored because the reduction ratio is 0 (pruning off)", recipe)
    policy = getattr(args, "policy", None) or model.config.fitprune_policy
    model.set_pruning(ratio, recipe=recipe, policy=policy, seed=model.config.fitprune_seed)


def pruning_summary(model) -> Optional[str]:
    """One line on what the latest prefill kept, for a driver to print to stderr.

    Args:
        model: a `LlavaLlamaForCausalLM` that has run at least one prefill.

    Returns:
        ``"visual tokens kept after the last layer: K of N (reduction ratio R%)"`` with
        K for each sample of the batch, or None when pruning is off or nothing was traced.
    """
    ratio = getattr(model.config, "reduction_ratio", 0) or 0
    trace = getattr(model, "last_pruning_trace", None)
    if not ratio or trace is None or not trace.live_counts:
        return None
    kept = ", ".join(str(int(k)) for k in trace.counts()[-1].tolist())
    total = model.get_model().num_visual_tokens()
    return f"visual tokens kept after the last layer: {kept} of {total} (reduction ratio {ratio:g}%)"
