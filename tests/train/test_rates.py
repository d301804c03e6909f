"""Per-step rates follow the configured distribution, are identical for identical (seed, step, micro), and bad specs fail."""

from __future__ import annotations

import numpy as np
import pytest

from videoprune.train import RateDistribution, rate_for_step

N = 4000
KS_CRITICAL = 1.63 / np.sqrt(N)  # Kolmogorov-Smirnov, alpha = 0.01


def draws(spec: str, seed: int = 0) -> np.ndarray:
    dist = RateDistribution.parse(spec)
    return np.array([rate_for_step(dist, seed, step, micro) for step in range(N // 2) for micro in range(2)])


def ks_statistic(samples: np.ndarray, cdf) -> float:
    x = np.sort(samples)
    f = cdf(x)
    n = len(x)
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n)))


def beta_cdf(alpha: float, beta: float, scale: float):
    """Numerical CDF of scale * Beta(alpha, beta) (trapezoid on a fine grid; exact enough for KS)."""
    grid = np.linspace(0.0, 1.0, 200_001)
    pdf = grid ** (alpha - 1) * (1 - grid) ** (beta - 1)
    cum = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(grid))])
    cum /= cum[-1]
    return lambda x: np.interp(np.asarray(x) / scale, grid, cum)


def test_fixed_rate_is_constant():
    """fixed:R gives R at every step."""
    assert set(draws("fixed:0.75").tolist()) == {0.75}


def test_uniform_rates_follow_the_uniform_cdf():
    """uniform:a,b draws lie in [a, b] and pass a Kolmogorov-Smirnov test against the uniform CDF."""
    a, b = 0.2, 0.9
    x = draws(f"uniform:{a},{b}")
    assert x.min() >= a and x.max() <= b
    assert ks_statistic(x, lambda v: (v - a) / (b - a)) < KS_CRITICAL


@pytest.mark.parametrize("alpha,beta,scale", [(2.0, 2.0, 0.9), (5.0, 1.5, 0.8)])
def test_beta_rates_follow_the_scaled_beta_cdf(alpha, beta, scale):
    """beta:alpha,beta,scale draws lie in [0, scale] and pass a Kolmogorov-Smirnov test against the scaled beta CDF."""
    x = draws(f"beta:{alpha},{beta},{scale}")
    assert x.min() >= 0.0 and x.max() <= scale
    assert ks_statistic(x, beta_cdf(alpha, beta, scale)) < KS_CRITICAL


def test_a_wrong_distribution_fails_the_same_test():
    """The KS check can fail: Beta(2, 2) draws are not uniform on [0, 0.9]."""
    x = draws("beta:2,2,0.9")
    assert ks_statistic(x, lambda v: v / 0.9) > KS_CRITICAL


def test_rate_is_a_pure_function_of_seed_step_and_micro_batch():
    """A step's rate depends only on seed, step and micro-batch: the same triple repeats it and another step changes it,
    so resumed and multi-rank runs agree."""
    dist = RateDistribution.parse("uniform:0,0.9")
    assert rate_for_step(dist, 3, 17, 1) == rate_for_step(dist, 3, 17, 1)
    assert rate_for_step(dist, 3, 17, 1) != rate_for_step(dist, 3, 18, 1)


@pytest.mark.parametrize("spec", ["0.5", "fixed:1.0", "fixed:-0.1", "uniform:0.8,0.2", "uniform:0.1",
                                  "beta:0,1,0.5", "beta:2,2,1.0", "gauss:0.5,0.1", "uniform:a,b"])
def test_bad_specs_raise_value_error(spec):
    """A rate_dist without a kind, with rates outside [0, 1), reversed bounds, missing or non-numeric parameters, or an
    unknown kind is refused."""
    with pytest.raises(ValueError, match="rate_dist"):
        RateDistribution.parse(spec)
