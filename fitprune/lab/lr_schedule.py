"""The learning-rate schedule of the lab's training runs."""
from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Learning rate at `step` (0-based): linear warm-up to `peak` over `warmup_steps`, then
    cosine decay to a tenth of it at `total_steps`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
