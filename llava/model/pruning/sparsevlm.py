"""SparseVLM (Zhang et al., "SparseVLM: Visual Token Sparsification for Efficient Vision-Language
Model Inference", ICML 2025, arXiv 2410.04417; repository Gumpest/SparseVLMs), drop-only and with
its token recycling.

Both policies choose *raters* before layer 0 (the text rows after the image whose relevance to the
image is above the mean), score each live visual row by the raters' head-mean attention on it after
the attention of layers 2, 6 and 15 of 32 (scaled to depth), and bring their own keep counts for a
FLOPs budget. `SparseVLMPolicy` also recycles: of the rows a cut deletes, the best-rated share is
clustered (DPC-KNN, density peaks over k nearest neighbours) and each cluster comes back as one
token, the mean of its members, in place of its centre (see `SparseVLMPolicy`).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from llava.model.language_model.attention_scores import AttentionQuery
from llava.model.language_model.layer_probe import LayerProbe
from llava.model.language_model.sequence_layout import SequenceLayout
from llava.model.pruning.budget import after_attention_fractions, after_attention_reduction, scaled_layer
from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.pruner import lowest_rows
from llava.model.pruning.schedules import FractionSchedule
from llava.model.pruning.similarity import PAPER_DEPTH
from llava.model.pruning.visual_rows import on_rows, visual_columns


class SparseVLMDropPolicy:
    """SparseVLM (drop-only): SparseVLM without its token recycling.

    Raters: before layer 0, the text rows (after the image) whose relevance to the image is above
    the mean, relevance = softmax over text rows of visual x text embedding products, averaged over
    visual rows. Scores: head-mean attention from the raters to each visual row, averaged over
    raters (a statistics pass beside fused attention). Acts after the attention of layers 2, 6 and
    15 of 32 (scaled to depth). Own schedule: the repository's released counts (its code sets the
    matrix-rank term to 0, so counts are fixed per budget: ``released_counts`` for 64, 128 and 192 tokens
    of LLaVA-1.5's ``paper_visual``); the shape whose FLOPs are nearest the budget, scaled to it.
    """

    name = "sparsevlm-drop"
    label = "SparseVLM (drop-only)"
    paper_layers = (2, 6, 15)
    released_counts = ((66, 30, 17), (303, 110, 36), (300, 200, 110))
    paper_visual = 576  # ok: the token count the released counts are stated for (LLaVA-1.5), scaled to the model

    def __init__(self):
        self._raters: Optional[torch.Tensor] = None
        self._prepared_for: Optional[torch.Tensor] = None

    def prepare(self, probe: LayerProbe) -> None:
        """Chooses each sample's raters from the embeddings entering layer 0 (kept by position)."""
        layout = probe.layout
        hidden = probe.hidden.float()
        raters = torch.full_like(layout.position_ids, -1)
        for b in range(hidden.shape[0]):
            visual, text = layout.visual_mask[b], layout.text_mask[b]
            if not bool(visual.any()) or not bool(text.any()):
                continue
            relevance = (hidden[b, visual] @ hidden[b, text].T).softmax(dim=1).mean(dim=0)
            above = relevance > relevance.mean()
            chosen = layout.position_ids[b, text][above if bool(above.any()) else torch.ones_like(above)]
            raters[b, : len(chosen)] = chosen
        self._raters = raters
        self._prepared_for = layout.initial_visual  # shared by every layout of this prefill

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> AttentionQuery:
        """Head-mean sums over the rater rows, divided by their count.

        Raises:
            ValueError: no raters were chosen for this prefill (its hook never called `before_layer`).
        """
        if self._raters is None or layout.initial_visual is not self._prepared_for:
            raise ValueError(f"{self.label} chooses its raters before layer 0; this prefill's hook never did")
        rows = (layout.position_ids[:, :, None] == self._raters[:, None, :]).any(dim=-1) & layout.text_mask
        weights = rows.float() / rows.sum(dim=1, keepdim=True).clamp(min=1)
        return AttentionQuery(weights[:, None], visual_columns(layout), heads="mean")

    def score(self, layer_idx: int, attention_sums: torch.Tensor, layout: SequenceLayout) -> torch.Tensor:
        """(B, T) the raters' mean head-mean attention on each visual row."""
        return on_rows(attention_sums, layout)[:, 0]

    def schedule_for_budget(self, ratio: float, dims: DecoderDims, num_visual: int) -> FractionSchedule:
        """Cuts after the scaled layers' attention (`budget.after_attention_fractions`)."""
        layers = [scaled_layer(layer, PAPER_DEPTH, dims.num_layers) for layer in self.paper_layers]
        if len(set(layers)) < len(layers):
            raise ValueError(f"SparseVLM needs 3 distinct pruning layers; {dims.num_layers} layers give {layers}")
        shapes = [[count / self.paper_visual for count in counts] for counts in self.released_counts]

        shape = min(shapes, key=lambda shares: abs(after_attention_reduction(dims, layers, shares, num_visual) - ratio))
        return FractionSchedule(after_attention_fractions(dims, layers, shape, ratio, num_visual, self.label))


class SparseVLMPolicy(SparseVLMDropPolicy):
    """SparseVLM with token recycling: the raters, scores, layers and schedule of
    `SparseVLMDropPolicy`; at each cut some deleted rows come back merged (``recycle``).

    A sample cut from n to c live visual rows keeps its c - r best-rated rows and r merged tokens,
    so it leaves the layer with exactly c (the traced FLOPs stay the schedule's):
    - deleted: the n - c + r lowest-rated rows; recycled: the best-rated ``int(0.3 * deleted) + 1``
      of them (``recycle_share``); r = ``int(recycled / 10) + 1`` clusters (``tokens_per_cluster``),
      the repository's rule, r the smallest count consistent with it (at most c);
    - DPC-KNN on the recycled rows' hidden states (after the layer's attention): distances
      ||x_i - x_j|| / sqrt(D), density exp(-mean squared distance to the r nearest rows, itself
      included), parent distance the distance to the nearest denser row (the largest pairwise distance
      for the densest), the r rows of largest density x parent distance are the centres, every row joins
      its nearest centre;
    - each cluster becomes the plain mean of its members' hidden states.

    Where a merged token sits: in its centre's row, which stays in the sequence with its own
    position id and grid index (the layout, the trace's kept indices and the KV cache of the later
    layers all see it there) and the cluster's mean as its state. The repository instead appends the
    merged tokens after the kept visual tokens and renumbers the positions.

    Other deviations from the repository: it keeps its released count by score and adds the merged
    tokens on top (count + r live rows), here they count among the schedule's count; it prunes after
    the whole layer, this policy after the layer's attention (before the MLP, like every policy here;
    the merged states are those of the residual stream there); it adds uniform noise below 1e-6 to
    the densities to break ties and divides each cluster's sum by its size + 1e-6, here ties go to
    the better-rated recycled row and the mean is exact; clustering runs in float32 in any model
    dtype; batches of any size (the repository handles one sample).
    """

    name = "sparsevlm"
    label = "SparseVLM"
    recycle_share = 0.3
    tokens_per_cluster = 10

    def merged_count(self, dropped: int, kept: int) -> int:
        """Merged tokens r of a sample that leaves `dropped` of its visual rows and keeps `kept`: the
        smallest r with r = ``int(int((dropped + r) * recycle_share) + 1) / tokens_per_cluster) + 1``
        (the repository's cluster count of ``dropped + r`` deleted rows), at most `kept`; 0 when
        nothing is dropped or nothing kept."""
        if dropped == 0 or kept == 0:
            return 0
        merged = 0
        while True:
            recycled = int((dropped + merged) * self.recycle_share) + 1
            wanted = min(kept, recycled // self.tokens_per_cluster + 1)
            if wanted == merged:
                return merged
            merged = wanted

    def recycle(
        self, layer_idx: int, hidden: torch.Tensor, layout: SequenceLayout, scores: torch.Tensor, drop: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(hidden', removed): each sample's deleted rows (`drop` (B,) + its merged count, lowest
        `scores` (B, T)) are removed except the cluster centres, whose states in `hidden` (B, T, D)
        become their cluster's mean (see the class docstring)."""
        kept = layout.visual_count() - drop
        merged = [self.merged_count(int(d), int(k)) for d, k in zip(drop.tolist(), kept.tolist())]
        removed = lowest_rows(layout, scores, drop + torch.tensor(merged, device=drop.device))
        hidden = hidden.clone()
        centres_kept = torch.zeros_like(removed)
        for b, count in enumerate(merged):
            if count == 0:
                continue
            deleted = removed[b].nonzero().squeeze(1)
            best_first = scores[b, deleted].float().argsort(descending=True, stable=True)
            recycled = deleted[best_first[: int(len(deleted) * self.recycle_share) + 1]]
            centres, states = merge_clusters(hidden[b, recycled].float(), count)
            hidden[b, recycled[centres]] = states.to(hidden.dtype)
            centres_kept[b, recycled[centres]] = True
        return hidden, removed & ~centres_kept


def density_peak_clusters(points: torch.Tensor, clusters: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """DPC-KNN of `points` (N, D) into `clusters` groups, `clusters` nearest neighbours for the density.

    Returns:
        centres: (K,) long, the rows that are centres, in order of density x parent distance
            (largest first, ties to the earlier row);
        assignment: (N,) long, each row's cluster (index into `centres`; the nearest centre,
            ties to the earlier one; a centre is its own).
    """
    distance = torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(points.shape[1])
    nearest = distance.topk(clusters, dim=1, largest=False).values
    density = (-(nearest ** 2).mean(dim=1)).exp()
    denser = density[None, :] > density[:, None]  # [i, j]: row j is denser than row i
    parent = torch.where(denser, distance, distance.max()).min(dim=1).values
    centres = (parent * density).argsort(descending=True, stable=True)[:clusters]
    assignment = distance[:, centres].argmin(dim=1)
    assignment[centres] = torch.arange(clusters, device=points.device)
    return centres, assignment


def merge_clusters(points: torch.Tensor, clusters: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(centres (K,) long, means (K, D)): the `density_peak_clusters` of `points` (N, D) and the mean
    of each cluster's points."""
    centres, assignment = density_peak_clusters(points, clusters)
    sums = points.new_zeros(clusters, points.shape[1]).index_add_(0, assignment, points)
    sizes = torch.bincount(assignment, minlength=clusters).to(points.dtype)
    return centres, sums / sizes[:, None]

