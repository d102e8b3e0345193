"""Paired statistics of the comparison bench (fitprune.lab.paired) against hand-computed cases."""
import math

import numpy as np
import pytest

from fitprune.lab.paired import (
    bootstrap_interval,
    discordant_counts,
    mcnemar_exact,
    minimal_detectable_difference,
    paired_bootstrap,
    questions_needed,
)


def test_discordant_counts_and_difference():
    a = np.array([1, 1, 0, 0, 1, 1], dtype=bool)
    b = np.array([1, 0, 1, 0, 0, 1], dtype=bool)
    assert discordant_counts(a, b) == (2, 1)
    result = paired_bootstrap(a, b)
    assert result.difference == pytest.approx(100 * (2 - 1) / 6)
    assert result.discordant_share == pytest.approx(3 / 6)
    with pytest.raises(ValueError, match="one length"):
        discordant_counts(a, b[:3])


def test_exact_mcnemar_by_hand():
    # b = 1, c = 5: 2 * P(X <= 1), X ~ Bin(6, 1/2) = 2 * (1 + 6) / 64
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64)
    assert mcnemar_exact(5, 1) == pytest.approx(14 / 64)
    assert mcnemar_exact(0, 0) == 1.0


def test_exact_mcnemar_with_more_than_1023_discordant_questions():
    # the binomial tail summed in log space (lgamma), independent of the integer arithmetic under test
    def log_tail(low, n):
        terms = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2) for k in range(low + 1)]
        top = max(terms)
        return top + math.log(sum(math.exp(t - top) for t in terms))

    assert mcnemar_exact(560, 640) == pytest.approx(2 * math.exp(log_tail(560, 1200)), rel=1e-9)
    assert mcnemar_exact(1000, 1000) == 1.0
    assert 0.0 <= mcnemar_exact(10, 3000) < 1e-300
    assert mcnemar_exact(3, 3) == 1.0  # 2 * 42/64 capped at 1
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)


def test_bootstrap_of_two_questions_by_hand():
    """One question only A gets right, one both miss: a resample holds the first question 0, 1 or 2
    times with probabilities 1/4, 1/2, 1/4, so the difference is 0, 50 or 100 points."""
    low, high = bootstrap_interval(1, 0, 2, resamples=4000, seed=1)
    assert (low, high) == (0.0, 100.0)
    assert bootstrap_interval(3, 0, 3) == (100.0, 100.0)


def test_bootstrap_matches_resampling_question_indices():
    rng = np.random.default_rng(5)
    a = rng.random(200) < 0.7
    b = np.where(rng.random(200) < 0.8, a, ~a)
    picks = rng.integers(0, 200, size=(20000, 200))
    brute = np.percentile(100 * (a[picks].mean(axis=1) - b[picks].mean(axis=1)), [2.5, 97.5])
    result = paired_bootstrap(a, b, resamples=20000)
    assert result.low == pytest.approx(brute[0], abs=0.6) and result.high == pytest.approx(brute[1], abs=0.6)
    assert result.low < result.difference < result.high


def test_detectable_difference_by_hand():
    # (z_0.975 + z_0.8) * sqrt(0.2 / 640) * 100 = 2.801585 * 0.0176777 * 100
    assert minimal_detectable_difference(0.2, 640) == pytest.approx(4.9526, abs=1e-3)
    assert questions_needed(0.2, 3.0) == 1745
    assert minimal_detectable_difference(0.2, questions_needed(0.2, 3.0)) <= 3.0
