"""Paired statistics of two methods answering the same questions: the accuracy difference with a
paired bootstrap interval, the exact McNemar test, and the difference such a bench can detect.

Each method's answers are a boolean vector over the same questions (True: correct). Only the
discordant questions (one method right, the other wrong) carry information about the difference:
with ``b`` questions only A gets right and ``c`` only B gets right out of ``n``, the difference is
``100 · (b − c) / n`` points.

- `paired_bootstrap`: resamples questions with replacement (``resamples`` times, numpy generator
  seeded by ``seed``) and takes the 2.5th and 97.5th percentiles of the resampled difference. A
  resample of n questions is a multinomial draw of how many (+1, −1, 0) differences it holds, so
  the bootstrap draws those three counts directly: the same distribution as resampling indices.
- `mcnemar_exact`: two-sided exact binomial test of b against Binomial(b + c, 1/2).
- `minimal_detectable_difference`: the normal approximation of McNemar's test, the difference
  (points) detected with probability ``power`` at two-sided level ``alpha`` given the share of
  discordant questions d: ``(z_{1−α/2} + z_{power}) · sqrt(d / n) · 100``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Tuple

import numpy as np

BOOTSTRAP_RESAMPLES = 10000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class PairedDifference:
    """Method A minus method B on the same questions.

    Attributes:
        difference: accuracy of A minus accuracy of B, points (percent).
        low, high: paired bootstrap 95% interval of the difference, points.
        only_a, only_b: questions only A (only B) answers correctly.
        total: questions.
        p_value: exact McNemar two-sided p-value.
    """

    difference: float
    low: float
    high: float
    only_a: int
    only_b: int
    total: int
    p_value: float

    @property
    def discordant_share(self) -> float:
        """Share (0..1) of questions where exactly one of the two methods is right."""
        return (self.only_a + self.only_b) / self.total


def discordant_counts(a: np.ndarray, b: np.ndarray) -> Tuple[int, int]:
    """(questions only `a` gets right, questions only `b` gets right) of two boolean vectors.

    Raises:
        ValueError: vectors of different lengths or empty.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired answers need two non-empty vectors of one length, got {a.shape} and {b.shape}")
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def bootstrap_interval(only_a: int, only_b: int, total: int, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> Tuple[float, float]:
    """Percentile 95% interval (points) of the paired difference by resampling questions."""
    shares = np.array([only_a, only_b, total - only_a - only_b], dtype=np.float64) / total
    draws = np.random.default_rng(seed).multinomial(total, shares, size=resamples)
    differences = 100.0 * (draws[:, 0] - draws[:, 1]) / total
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: 2 · P(X ≤ min(b, c)) for X ~ Binomial(b + c, 1/2), at most 1."""
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    # integer numerator and denominator, divided once: a float 2.0 ** n overflows past n = 1023
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1)) / 2 ** discordant
    return min(1.0, 2.0 * tail)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> PairedDifference:
    """A's accuracy minus B's on the same questions, with its bootstrap interval and McNemar p-value."""
    only_a, only_b = discordant_counts(a, b)
    total = int(np.asarray(a).size)
    low, high = bootstrap_interval(only_a, only_b, total, resamples, seed)
    return PairedDifference(100.0 * (only_a - only_b) / total, low, high, only_a, only_b, total,
                            mcnemar_exact(only_a, only_b))


def _z_sum(alpha: float, power: float) -> float:
    normal = NormalDist()
    return normal.inv_cdf(1 - alpha / 2) + normal.inv_cdf(power)


def minimal_detectable_difference(discordant_share: float, total: int, alpha: float = 0.05,
                                  power: float = 0.8) -> float:
    """Smallest paired accuracy difference (points) detected with probability `power` by a two-sided
    level-`alpha` McNemar test on `total` questions with `discordant_share` (0..1) discordant."""
    return 100.0 * _z_sum(alpha, power) * math.sqrt(discordant_share / total)


def questions_needed(discordant_share: float, difference: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Questions needed for `minimal_detectable_difference` to reach `difference` points."""
    return math.ceil(discordant_share * (100.0 * _z_sum(alpha, power) / difference) ** 2)
