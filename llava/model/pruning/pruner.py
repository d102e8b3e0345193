"""The one visual-token pruning mechanism of the decoder, with pluggable scoring policies.

During prefill, after each layer's self-attention (and, for policies that act before a layer,
before it), the decoder hands the hidden states to a `PrefillHook` (the decoder's contract,
`llava.model.language_model.prefill_hook`). `TokenPruner` is the hook that prunes: a *schedule* says how many visual
tokens each sample keeps after the layer, a *policy* ranks the live visual tokens, and the
lowest-ranked rows leave the hidden states and the layout. Policies and schedules are
small objects (`llava.model.pruning.policies`, `llava.model.pruning.schedules`); nothing
here knows a model size, a prompt length or a budget.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Protocol, Tuple

import torch

from llava.model.language_model.attention_scores import AttentionQuery
from llava.model.language_model.layer_probe import LayerProbe
from llava.model.language_model.sequence_layout import SequenceLayout


class ScoringPolicy(Protocol):
    """Ranks live visual tokens; higher scores are kept."""

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> Optional[AttentionQuery]:
        """The attention statistics `score` reads at this layer, or None if it reads none."""

    def score(self, layer_idx: int, attention_sums: Optional[torch.Tensor], layout: SequenceLayout) -> torch.Tensor:
        """Returns (B, T) float scores; only rows where `layout.visual_mask` is set are read.

        `attention_sums` is the (B, W, C) answer to `attention_query` (None when it asked none).
        """


class BeforeLayerPolicy(Protocol):
    """A policy that drops rows before a layer runs (``acts_before_layer = True``): it ranks from the
    layer's input (`LayerProbe`: hidden states, keys, attention) instead of the layer's statistics."""

    acts_before_layer: bool

    def rank(self, layer_idx: int, probe: LayerProbe, keep: torch.Tensor) -> torch.Tensor:
        """(B, T) float scores of the rows of `probe.layout` (visual rows read, higher kept), for
        samples keeping `keep` (B,) long visual tokens."""


class RecyclingPolicy(Protocol):
    """A policy that turns some of the rows it would drop into replacement rows (optional
    ``recycle``; SparseVLM's token recycling): the replacements stay, so the sample still leaves
    the layer with exactly the schedule's count."""

    def recycle(
        self, layer_idx: int, hidden: torch.Tensor, layout: SequenceLayout, scores: torch.Tensor, drop: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(hidden', removed): `hidden` (B, T, D) with some rows' states replaced, and the (B, T) bool
        rows to remove, exactly `drop` (B,) live visual rows per sample (`scores` as `score` gave them)."""


class KeepSchedule(Protocol):
    """How many visual tokens each sample keeps after each layer."""

    def keep_counts(self, layer_idx: int, initial_visual: torch.Tensor) -> torch.Tensor:
        """Returns (B,) long visual tokens left after `layer_idx` for samples that started
        with `initial_visual` (B,) visual tokens."""


class TokenPruner:
    """Drops the lowest-ranked live visual tokens down to the schedule's keep counts.

    Attributes:
        policy: ranks the live visual tokens.
        schedule: the keep counts per layer and sample.
        recipe: the `Recipe` the schedule follows, when built from a recipe file (else None).
        recipe_file: where that recipe was read from (else None).
        settings: the `PruningSettings` the pruner was built from (else None).
    """

    def __init__(
        self,
        policy: ScoringPolicy,
        schedule: KeepSchedule,
        recipe: Any = None,
        recipe_file: Optional[Path] = None,
        settings: Any = None,
    ):
        self.policy = policy
        self.schedule = schedule
        self.recipe = recipe
        self.recipe_file = recipe_file
        self.settings = settings

    def _drop_counts(self, layer_idx: int, layout: SequenceLayout) -> torch.Tensor:
        target = self.schedule.keep_counts(layer_idx, layout.initial_visual).to(layout.segment.device)
        return (layout.visual_count() - target).clamp(min=0)

    def before_layer(
        self, layer_idx: int, hidden: torch.Tensor, layout: SequenceLayout, probe: LayerProbe
    ) -> Tuple[torch.Tensor, SequenceLayout]:
        """Before layer 0 a policy with ``prepare(probe)`` reads the prompt's embeddings. At a layer
        where samples drop rows after attention, a policy with ``read_layer_input(layer_idx, probe,
        keep)`` ranks from the layer's input (`keep` (B,) the counts after the cut; its `score`
        returns that ranking). A policy with ``acts_before_layer`` drops its lowest-ranked rows down
        to the schedule's counts for this layer (the layer and its attention run on what is left).
        Others keep every row here."""
        prepare = getattr(self.policy, "prepare", None)
        if layer_idx == 0 and prepare is not None:
            prepare(probe)
        read_layer_input = getattr(self.policy, "read_layer_input", None)
        if read_layer_input is not None:
            drop = self._drop_counts(layer_idx, layout)
            if bool(drop.any()):
                read_layer_input(layer_idx, probe, layout.visual_count() - drop)
        if not getattr(self.policy, "acts_before_layer", False):
            return hidden, layout
        drop = self._drop_counts(layer_idx, layout)
        if not bool(drop.any()):
            return hidden, layout
        scores = self.policy.rank(layer_idx, probe, layout.visual_count() - drop)
        return drop_lowest(hidden, layout, scores, drop)

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> Optional[AttentionQuery]:
        """The policy's statistics, only at layers where some sample drops tokens."""
        if not bool(self._drop_counts(layer_idx, layout).any()):
            return None
        return self.policy.attention_query(layer_idx, layout)

    def after_attention(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        attention_sums: Optional[torch.Tensor],
        layout: SequenceLayout,
    ) -> Tuple[torch.Tensor, SequenceLayout]:
        """Removes the dropped rows from `hidden` (B, T, D) and `layout`.

        Rows are selected per sample: the `drop` lowest scores among live visual rows
        (ties broken by row order), everything else kept in its original order. Samples
        that keep fewer rows than the longest are left-padded again. A policy with
        ``recycle`` (`RecyclingPolicy`) instead says which rows leave and replaces the states of
        some that stay.

        Raises:
            ValueError: `recycle` removed other than exactly `drop` live visual rows of a sample.
        """
        drop = self._drop_counts(layer_idx, layout)
        if not bool(drop.any()):
            return hidden, layout
        scores = self.policy.score(layer_idx, attention_sums, layout)
        recycle = getattr(self.policy, "recycle", None)
        if recycle is None:
            return drop_lowest(hidden, layout, scores, drop)
        hidden, removed = recycle(layer_idx, hidden, layout, scores, drop)
        if bool((removed & ~layout.visual_mask).any()) or not torch.equal(removed.sum(dim=1), drop):
            raise ValueError(f"{self.policy.name} recycled rows but did not remove exactly {drop.tolist()} visual rows")
        return drop_rows(hidden, layout, removed)


def drop_lowest(
    hidden: torch.Tensor, layout: SequenceLayout, scores: torch.Tensor, drop: torch.Tensor
) -> Tuple[torch.Tensor, SequenceLayout]:
    """Removes, per sample, the `drop` (B,) live visual rows with the lowest `scores` (B, T) (ties
    broken by row order) from `hidden` (B, T, D) and `layout`; see `drop_rows`."""
    return drop_rows(hidden, layout, lowest_rows(layout, scores, drop))


def lowest_rows(layout: SequenceLayout, scores: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: per sample, the `count` (B,) live visual rows with the lowest `scores` (B, T),
    ties broken by row order."""
    visual = layout.visual_mask
    scores = scores.float().masked_fill(~visual, float("inf"))
    order = scores.argsort(dim=1, stable=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(order.shape[1], device=order.device).expand_as(order)
    )
    return visual & (rank < count[:, None])


def drop_rows(
    hidden: torch.Tensor, layout: SequenceLayout, drop: torch.Tensor
) -> Tuple[torch.Tensor, SequenceLayout]:
    """Removes the rows marked in `drop` (B, T) from `hidden` (B, T, D) and `layout`.

    Surviving rows keep their order; samples that keep fewer rows than the longest are
    left-padded again (the padding rows are former dropped rows, marked as padding).
    """
    keep = ~drop & layout.key_mask
    new_length = max(int(keep.sum(dim=1).max()), 1)
    rows = keep.to(torch.int8).argsort(dim=1, stable=True)[:, -new_length:]
    real = keep.gather(1, rows)
    hidden = hidden.gather(1, rows[..., None].expand(-1, -1, hidden.shape[-1]))
    return hidden, layout.gather(rows, real)
