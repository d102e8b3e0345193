"""VisionZip as a policy of the one pruning mechanism: it acts in the vision tower, not in the decoder.

The policy brings its own schedule for a FLOPs budget: n visual tokens from layer 0 on (the paper
convention of the method: one cut before layer 0, `budget.single_cut_fractions`, as DivPrune). The
tower hands the decoder those n tokens (`llava.model.multimodal_encoder.visionzip`), so the decoder
starts with n and its pruner keeps them all; the prefill's trace records n entering layer 0.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from llava.model.anyres import uses_anyres
from llava.model.language_model.sequence_layout import SequenceLayout
from llava.model.multimodal_encoder.multipath_encoder import is_multipath
from llava.model.multimodal_encoder.visionzip import token_split
from llava.model.pruning.budget import BudgetError, single_cut_fractions
from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.recipe import RecipeError


class TowerPolicyError(RecipeError):
    """A policy that acts in the vision tower asked of a model whose tower it cannot act in."""


class TowerCutSchedule:
    """The schedule of a policy acting in the tower: the decoder keeps every visual token it is
    given; the tower keeps `tower_fraction` of its tokens."""

    def __init__(self, tower_fraction: float):
        self.tower_fraction = tower_fraction

    def keep_counts(self, layer_idx: int, initial_visual: torch.Tensor) -> torch.Tensor:
        """(B,) the visual tokens each sample entered the decoder with (nothing leaves in it)."""
        return initial_visual.clone()

    def tower_tokens(self, num_visual: int) -> int:
        """Tokens the tower hands on of its `num_visual`: ``floor(tower_fraction * num_visual + 0.5)``."""
        return int(self.tower_fraction * num_visual + 0.5)


class VisionZipPolicy:
    """VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language
    Models", CVPR 2025): keeps the vision tower's dominant tokens and merges the rest into a few
    contextual ones before the decoder.

    Scores: the [CLS] attention of the layer LLaVA selects (``mm_vision_select_layer``, summed over
    heads) picks the dominant tokens ([CLS] included); the remaining patches join evenly spaced
    targets by key cosine similarity (keys averaged over heads). Acts in the tower (CLIP towers of
    LLaVA-1.5 only), computing the [CLS] row of one layer's attention from its queries and keys: no
    attention probabilities are read in the decoder. Own schedule: n tokens from layer 0, the most
    the FLOPs budget allows, split as the repository's 54 dominant + 10 contextual of 64 (10/64
    contextual). Defaults: 54 + 10 (64 tokens), 108 + 20 (128), 162 + 30 (192). The decoder keeps
    the tokens' order: dominant tokens in grid order, then contextual tokens.
    """

    name = "visionzip"
    label = "VisionZip"
    acts_in_tower = True

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> None:
        """No statistics in the decoder."""
        return None

    def score(self, layer_idx: int, attention_sums: Optional[torch.Tensor], layout: SequenceLayout) -> torch.Tensor:
        """(B, T) zeros: the decoder never drops a token of this policy (its schedule keeps all)."""
        return torch.zeros(layout.segment.shape, device=layout.segment.device)

    def schedule_for_budget(self, ratio: float, dims: DecoderDims, num_visual: int) -> TowerCutSchedule:
        """The tower keeps the most tokens that, entering layer 0, remove `ratio` percent of the
        paper-convention FLOPs.

        Raises:
            BudgetError: the budget leaves fewer than 1 token, so not 1 dominant token.
        """
        try:
            fractions = single_cut_fractions(dims, 0, ratio, num_visual, self.label)
        except BudgetError as err:
            raise BudgetError(f"{err} (VisionZip keeps at least 1 dominant token, the [CLS] token)") from None
        return TowerCutSchedule(fractions[0])

    def check_model(self, config: Any) -> None:
        """Refuses, when pruning is set up, a model whose tower this policy cannot act in.

        Raises:
            TowerPolicyError: `config` is anyres (LLaVA-NeXT) or asks for LLaVA-HR's multi-path tower.
        """
        if uses_anyres(config):
            raise _anyres_refusal(self)
        if is_multipath(config):
            raise _tower_refusal(self, "LLaVA-HR's multi-path tower (is_multipath_encoder)")


def _anyres_refusal(policy: Any) -> TowerPolicyError:
    return TowerPolicyError(
        f"policy {policy.name!r} ({policy.label}) reduces one square CLIP view per image; anyres "
        "(LLaVA-NeXT) models are not supported"
    )


def _tower_refusal(policy: Any, tower: str) -> TowerPolicyError:
    return TowerPolicyError(f"policy {policy.name!r} ({policy.label}) needs a CLIP vision tower; {tower} is not one")


def tower_token_split(hook: Any, tower: Any, anyres: bool) -> Optional[Tuple[int, int]]:
    """(dominant, contextual) tokens `tower` keeps of its ``num_visual_tokens`` under the prefill
    `hook` (a `TokenPruner`), or None when the hook's policy does not act in the tower.

    Raises:
        TowerPolicyError: the model is `anyres` (LLaVA-NeXT) or its tower is not a CLIP tower (LLaVA-HR).
    """
    policy = getattr(hook, "policy", None)
    if not getattr(policy, "acts_in_tower", False):
        return None
    if anyres:
        raise _anyres_refusal(policy)
    if not hasattr(tower, "encode_visionzip"):
        raise _tower_refusal(policy, type(tower).__name__)
    return token_split(hook.schedule.tower_tokens(tower.num_visual_tokens))
