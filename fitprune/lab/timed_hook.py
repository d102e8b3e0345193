"""A prefill hook wrapped to add up the time spent inside it: what `python
benchmarks/prefill_speed.py` reports as the pruner's own cost per prefill."""
from __future__ import annotations

import time
from typing import Optional, Tuple

import torch

from llava.model.language_model.attention_scores import AttentionQuery
from llava.model.language_model.layer_probe import LayerProbe
from llava.model.language_model.sequence_layout import SequenceLayout
from llava.model.pruning.pruner import TokenPruner


class TimedHook:
    """Wraps a prefill hook and adds up the time spent inside it (scoring, ranking, gather); its
    `policy` and `schedule` are the wrapped pruner's, so a policy acting in the vision tower
    (VisionZip) still sees them."""

    def __init__(self, hook: TokenPruner):
        self.hook = hook
        self.policy, self.schedule = hook.policy, hook.schedule
        self.seconds = 0.0

    def before_layer(
        self, layer_idx: int, hidden: torch.Tensor, layout: SequenceLayout, probe: LayerProbe
    ) -> Tuple[torch.Tensor, SequenceLayout]:
        """The wrapped hook's drop before the layer (DART, DivPrune, PyramidDrop), timed."""
        return self._timed(hidden.device, lambda: self.hook.before_layer(layer_idx, hidden, layout, probe))

    def _timed(self, device: torch.device, work):
        """`work()`, its time added (on a GPU from the queued work before it to its own finished work)."""
        wait_for(device)
        start = time.perf_counter()
        result = work()
        wait_for(device)
        self.seconds += time.perf_counter() - start
        return result

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> Optional[AttentionQuery]:
        """The wrapped hook's statistics request, timed."""
        start = time.perf_counter()
        query = self.hook.attention_query(layer_idx, layout)
        self.seconds += time.perf_counter() - start
        return query

    def after_attention(
        self, layer_idx: int, hidden: torch.Tensor, attention_sums: Optional[torch.Tensor], layout: SequenceLayout
    ) -> Tuple[torch.Tensor, SequenceLayout]:
        """The wrapped hook's pruning (scoring, ranking, gather), timed (on a GPU from the layer's
        finished attention to the hook's finished work)."""
        return self._timed(hidden.device, lambda: self.hook.after_attention(layer_idx, hidden, attention_sums, layout))


def wait_for(device: torch.device) -> None:
    """Waits until the GPU `device` has finished its queued work (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
