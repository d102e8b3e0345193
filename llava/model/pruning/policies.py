"""Scoring policies for the decoder's token pruner: which live visual tokens matter most.

Each policy is a small object with `attention_query(layer_idx, layout)`: the attention
statistics it reads at a layer (an `AttentionQuery`, or None), which the layer's attention
computes alongside its output; and `score(layer_idx, attention_sums, layout) -> (B, T)`,
higher scores kept. Only the visual rows of the scores are read. A policy with
``acts_before_layer`` instead ranks the rows entering a layer (`rank(layer_idx, probe, keep)`, see
`llava.model.pruning.pruner.BeforeLayerPolicy`). A policy with ``schedule_for_budget(ratio, dims,
num_visual)`` brings its own keep counts for a FLOPs budget; the others follow a recipe file.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from llava.model.language_model.attention_scores import AttentionQuery
from llava.model.language_model.layer_probe import LayerProbe
from llava.model.language_model.sequence_layout import SequenceLayout
from llava.model.pruning.budget import scaled_layer, staged_fractions
from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.schedules import FractionSchedule
from llava.model.pruning.similarity import PAPER_DEPTH, DartPolicy, DivPrunePolicy
from llava.model.pruning.sparsevlm import SparseVLMDropPolicy, SparseVLMPolicy
from llava.model.pruning.visual_rows import on_rows as _on_rows, visual_columns as _visual_columns
from llava.model.pruning.visionzip import VisionZipPolicy


def fitprune_attention_query(layout: SequenceLayout) -> AttentionQuery:
    """The statistics FitPrune's scores need: head-max probabilities on the visual key columns,
    summed over text query rows and over visual query rows, each divided by its row count."""
    text = layout.text_mask.float()
    visual = layout.visual_mask.float()
    weights = torch.stack([text / text.sum(dim=1, keepdim=True).clamp(min=1),
                           visual / visual.sum(dim=1, keepdim=True).clamp(min=1)], dim=1)  # (B, 2, T)
    return AttentionQuery(weights, _visual_columns(layout), heads="max")


def cross_and_self_scores(attention_sums: torch.Tensor, layout: SequenceLayout) -> Tuple[torch.Tensor, torch.Tensor]:
    """FitPrune's per-token attention scores on the head-max map, from the answer to
    `fitprune_attention_query`.

    With A[b, i, j] = max over heads of the softmax probabilities:
    cross[b, j] = sum of A[b, i, j] over text queries i / number of text queries;
    self[b, j] = sum of A[b, i, j] over visual queries i / number of visual queries.
    Summed over visual keys j they give the layer's W_cross and W_self.

    Args:
        attention_sums: (B, 2, C) float32 sums on the visual columns.
        layout: the rows' segments.

    Returns:
        cross, self: (B, T) float32; meaningful on visual rows only (0 elsewhere).
    """
    cross, self_score = _on_rows(attention_sums, layout).unbind(dim=1)
    return cross, self_score


class FitPrunePolicy:
    """FitPrune's inference ranking: cross score × self score (see `cross_and_self_scores`)."""

    name = "fitprune"

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> AttentionQuery:
        """Head-max sums over text and visual queries (`fitprune_attention_query`)."""
        return fitprune_attention_query(layout)

    def score(self, layer_idx: int, attention_sums: torch.Tensor, layout: SequenceLayout) -> torch.Tensor:
        """(B, T) cross × self scores."""
        cross, self_score = cross_and_self_scores(attention_sums, layout)
        return cross * self_score


class FastVPolicy:
    """FastV's ranking: attention each visual token receives from the sample's last
    prompt token, averaged over heads."""

    name = "fastv"

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> AttentionQuery:
        """Head-mean probabilities of the last row (left-padded batches end on a real token)."""
        batch, length = layout.segment.shape
        last_row = torch.zeros(batch, 1, length, device=layout.segment.device)
        last_row[:, :, -1] = 1.0
        return AttentionQuery(last_row, _visual_columns(layout), heads="mean")

    def score(self, layer_idx: int, attention_sums: torch.Tensor, layout: SequenceLayout) -> torch.Tensor:
        """(B, T) the last row's head-mean attention on each visual row."""
        return _on_rows(attention_sums, layout)[:, 0]


class ReadsNoAttention:
    """Base of the policies that rank without attention: the layer keeps its fast attention."""

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> None:
        """No statistics."""
        return None


class RandomPolicy(ReadsNoAttention):
    """Random ranking for ablations, fixed by a seed, the layer and the grid index, so a
    sample gets the same choice alone or in any batch."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, layer_idx: int, attention_sums: Optional[torch.Tensor], layout: SequenceLayout) -> torch.Tensor:
        """(B, T) pseudo-random scores of the visual rows."""
        grid_size = int(layout.initial_visual.max()) + 1
        generator = torch.Generator().manual_seed(self.seed * 100003 + layer_idx)
        table = torch.rand(grid_size, generator=generator).to(layout.visual_index.device)
        return table[layout.visual_index.clamp(min=0)]


class ForcedPolicy(ReadsNoAttention):
    """Keeps exactly the grid indices given per layer (replays a recorded pruning)."""

    name = "forced"

    def __init__(self, kept: Dict[int, torch.Tensor]):
        """Args:
        kept: layer index -> (B, K) grid indices to keep after that layer.
        """
        self.kept = kept

    def score(self, layer_idx: int, attention_sums: Optional[torch.Tensor], layout: SequenceLayout) -> torch.Tensor:
        """(B, T) 1.0 on rows whose grid index is in the forced set of this layer, else 0."""
        wanted = self.kept[layer_idx].to(layout.visual_index.device)  # (B, K)
        hits = (layout.visual_index[:, :, None] == wanted[:, None, :]).any(dim=-1)
        return hits.float()


class FitPruneSelfMeanPolicy(FitPrunePolicy):
    """This project's variant of FitPrune (not the paper's): cross score x self score, the self
    score of key j averaged over the visual queries that can see it (causal: query i sees key j
    when i >= j) instead of summed over them and divided by all visual queries, so early image rows
    are not favoured for being seen by more queries. Reads head-max attention after the layer's
    attention (a statistics pass beside fused attention); follows the recipe file."""

    name = "fitprune-selfmean"

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> AttentionQuery:
        """Head-max sums over text queries (divided by their count) and over visual queries (plain sums)."""
        text = layout.text_mask.float()
        weights = torch.stack([text / text.sum(dim=1, keepdim=True).clamp(min=1), layout.visual_mask.float()], dim=1)
        return AttentionQuery(weights, _visual_columns(layout), heads="max")

    def score(self, layer_idx: int, attention_sums: torch.Tensor, layout: SequenceLayout) -> torch.Tensor:
        """(B, T) cross x (visual queries' sum on key j / visual rows at or after j)."""
        cross, visual_sums = _on_rows(attention_sums, layout).unbind(dim=1)
        seeing = layout.visual_mask.long().flip(1).cumsum(dim=1).flip(1).clamp(min=1)
        return cross * (visual_sums / seeing)


class PyramidDropPolicy:
    """PyramidDrop (Xing et al., "PyramidDrop: Accelerating Your Large Vision-Language Models via
    Pyramid Visual Redundancy Reduction", CVPR 2025).

    Scores: the attention of the last instruction token (the prompt's last row) on each visual
    row, softmax over all keys, averaged over heads, of the layer about to run on its input (as the
    repository's rank-and-drop does). Acts before the layers ending stages 1-3, L/4, L/2 and 3L/4
    (8/16/24 of 32); reads attention probabilities (one extra statistics pass of the last row at
    those layers). Own schedule: stage s keeps ``int(n * lambda**s)`` tokens, lambda solved to the
    FLOPs budget (the paper's default is 0.5); budgets beyond what dropping everything after L/4
    removes are an error.
    """

    name = "pyramiddrop"
    acts_before_layer = True
    stage_ends = (8, 16, 24)

    def rank(self, layer_idx: int, probe: LayerProbe, keep: torch.Tensor) -> torch.Tensor:
        """(B, T) the last row's head-mean attention on each visual row."""
        query = FastVPolicy().attention_query(layer_idx, probe.layout)
        return _on_rows(probe.statistics(query), probe.layout)[:, 0]

    def schedule_for_budget(self, ratio: float, dims: DecoderDims, num_visual: int) -> FractionSchedule:
        """Stages ending at the scaled layers, lambda solved (`budget.staged_fractions`)."""
        layers = [scaled_layer(layer, PAPER_DEPTH, dims.num_layers, minimum=1) for layer in self.stage_ends]
        return FractionSchedule(staged_fractions(dims, layers, ratio, num_visual, "PyramidDrop"))


class RecipeWithScore:
    """This project's variant (not any paper's method): FitPrune's recipe decides when and how many
    visual tokens leave (the recipe file's keep counts, after the layer's attention, as FitPrune),
    another method's ranking decides which. A method that ranks from a layer's input (DART,
    DivPrune: ``acts_before_layer``) ranks the rows entering a cut layer (`read_layer_input`) and
    its choice leaves after that layer's attention, so the same number of rows enters and leaves
    every layer as under FitPrune (the same FLOPs)."""

    def __init__(self, policy):
        self.policy = policy
        self.name = f"recipe+{policy.name}"
        self._ranks_input = getattr(policy, "acts_before_layer", False)
        self._input_ranking: Optional[Tuple[int, SequenceLayout, torch.Tensor]] = None

    def read_layer_input(self, layer_idx: int, probe: LayerProbe, keep: torch.Tensor) -> None:
        """Ranks the rows entering a cut layer when the wrapped method ranks from a layer's input."""
        if self._ranks_input:
            self._input_ranking = (layer_idx, probe.layout, self.policy.rank(layer_idx, probe, keep))

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> Optional[AttentionQuery]:
        """The wrapped policy's statistics (none for one that ranks from the layer's input)."""
        return None if self._ranks_input else self.policy.attention_query(layer_idx, layout)

    def score(self, layer_idx: int, attention_sums: Optional[torch.Tensor], layout: SequenceLayout) -> torch.Tensor:
        """(B, T) the wrapped policy's scores after attention, or its ranking of this layer's input.

        Raises:
            ValueError: the layer's input was not ranked (its hook never called `read_layer_input`).
        """
        if not self._ranks_input:
            return self.policy.score(layer_idx, attention_sums, layout)
        ranking = self._input_ranking
        if ranking is None or ranking[0] != layer_idx or ranking[1] is not layout:
            raise ValueError(f"{self.name} ranks a layer's input before its attention; layer {layer_idx}'s "
                             "hook never called read_layer_input")
        return ranking[2]


POLICIES = {
    "fitprune": lambda seed: FitPrunePolicy(),
    "fastv": lambda seed: FastVPolicy(),
    "random": RandomPolicy,
    "dart": lambda seed: DartPolicy(),
    "divprune": lambda seed: DivPrunePolicy(),
    "pyramiddrop": lambda seed: PyramidDropPolicy(),
    "sparsevlm-drop": lambda seed: SparseVLMDropPolicy(),
    "sparsevlm": lambda seed: SparseVLMPolicy(),
    "recipe+fastv": lambda seed: RecipeWithScore(FastVPolicy()),
    "recipe+dart": lambda seed: RecipeWithScore(DartPolicy()),
    "recipe+divprune": lambda seed: RecipeWithScore(DivPrunePolicy()),
    "fitprune-selfmean": lambda seed: FitPruneSelfMeanPolicy(),
    "visionzip": lambda seed: VisionZipPolicy(),
}
"""Policies a config can name (``fitprune_policy``), each built from the config's ``fitprune_seed``."""

METHOD_LABELS = {
    "fitprune": "FitPrune",
    "fastv": "FastV",
    "random": "random",
    "dart": "DART",
    "divprune": "DivPrune",
    "pyramiddrop": "PyramidDrop",
    "sparsevlm-drop": SparseVLMDropPolicy.label,
    "sparsevlm": SparseVLMPolicy.label,
    "recipe+fastv": "FitPrune recipe + FastV score (this project's variant)",
    "recipe+dart": "FitPrune recipe + DART score (this project's variant)",
    "recipe+divprune": "FitPrune recipe + DivPrune score (this project's variant)",
    "fitprune-selfmean": "FitPrune, self score averaged over causal queries (this project's variant)",
    "visionzip": VisionZipPolicy.label,
}
"""How tables and reports name each policy."""


def policy_named(name: str, seed: int = 0):
    """The scoring policy called `name` (a key of `POLICIES`); `seed` fixes the random one.

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    if name not in POLICIES:
        raise ValueError(f"unknown pruning policy {name!r}; choose one of {sorted(POLICIES)}")
    return POLICIES[name](seed)
