"""Power-law fits and their bootstrap intervals on synthetic power laws of known exponent."""

import math

import numpy as np
import pytest

from rntk_empirical.metrics import mean_kernel_error
from rntk_empirical.scaling import bootstrap_power_law, fit_power_law

WIDTHS = [64, 128, 256, 512, 1024, 2048, 4096]


def lognormal_samples(rng, exponent, seeds, sigma=0.4, c=3.0):
    """Per-seed errors c n^p exp(sigma Z): their mean is exactly proportional to n^p."""
    return {w: c * w**exponent * np.exp(sigma * rng.standard_normal(seeds)) for w in WIDTHS}


def test_fit_exact_power_law():
    p, logc = fit_power_law(WIDTHS, [3.0 * w**-0.7 for w in WIDTHS])
    assert p == pytest.approx(-0.7, abs=1e-12)
    assert logc == pytest.approx(math.log(3.0), abs=1e-10)


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="two distinct widths"):
        fit_power_law([64, 64], [1.0, 2.0])
    with pytest.raises(ValueError, match="> 0"):
        fit_power_law([64, 128], [1.0, 0.0])
    with pytest.raises(ValueError, match="two distinct widths"):
        bootstrap_power_law({64: [1.0, 2.0]})
    with pytest.raises(ValueError, match="level"):
        bootstrap_power_law({64: [1.0], 128: [0.5]}, level=1.5)


def test_bootstrap_interval_covers_truth():
    rng = np.random.default_rng(1)
    fit = bootstrap_power_law(lognormal_samples(rng, -0.5, 16), n_boot=2000, seed=3)
    assert fit.covers(-0.5)
    assert fit.ci_low < fit.exponent < fit.ci_high
    assert fit.ci_high - fit.ci_low < 0.25  # informative, not just wide
    assert fit.n_valid == fit.n_boot == 2000
    assert fit.widths == tuple(WIDTHS) and fit.n_seeds == (16,) * len(WIDTHS)
    for v, lo, hi in zip(fit.values, fit.value_low, fit.value_high):
        assert lo <= v <= hi
    np.testing.assert_allclose(fit.predict([64]), [math.exp(fit.intercept) * 64**fit.exponent])
    # deterministic for one bootstrap seed
    again = bootstrap_power_law(lognormal_samples(np.random.default_rng(1), -0.5, 16), seed=3)
    assert (again.ci_low, again.ci_high) == (fit.ci_low, fit.ci_high)


def test_bootstrap_coverage_over_repetitions():
    """The 95% interval covers the true exponent in most of 40 independent experiments."""
    rng = np.random.default_rng(7)
    hits = [
        bootstrap_power_law(lognormal_samples(rng, -0.5, 12), n_boot=400, seed=i).covers(-0.5)
        for i in range(40)
    ]
    assert np.mean(hits) >= 0.8


def test_bootstrap_distinguishes_exponents():
    rng = np.random.default_rng(2)
    fit = bootstrap_power_law(lognormal_samples(rng, -1.0, 16), n_boot=1000)
    assert fit.covers(-1.0) and not fit.covers(-0.5)


def test_bootstrap_of_a_kernel_statistic():
    """Items may be kernels: K_s = B + n^(-1/2) G_s, whose seed mean errs like n^(-1/2)."""
    rng = np.random.default_rng(4)
    ref = np.eye(5) + 0.5
    samples = {}
    for w in WIDTHS[::2]:
        g = rng.standard_normal((24, 5, 5))
        samples[w] = ref + w**-0.5 * (g + g.transpose(0, 2, 1))
    fit = bootstrap_power_law(samples, lambda ks: mean_kernel_error(ks, ref), n_boot=300)
    assert fit.covers(-0.5)
    assert fit.values[0] == pytest.approx(mean_kernel_error(samples[WIDTHS[0]], ref))


def test_bootstrap_without_replicates():
    fit = bootstrap_power_law({64: [1.0, 1.2], 256: [0.5, 0.6]}, n_boot=0)
    assert math.isnan(fit.ci_low) and fit.n_valid == 0
    assert fit.exponent == pytest.approx(math.log(0.55 / 1.1) / math.log(4))
