"""The infinite-width NNGP of the erf-gated minimalRNN (rntk_empirical/gated_kernels.py,
docs/gated.md section 3): orthant probabilities, exact agreement with direct quadrature at
T = 1, batch independence with mixed lengths, the finite networks' seed mean, and the
refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_sequences, rel_err
from scipy.special import erf
from scipy.stats import multivariate_normal

from rntk_empirical import Architecture, ElmanRNN
from rntk_empirical.empirical import empirical_nngp
from rntk_empirical.gated_kernels import minimalrnn_nngp, orthant

ARCH = Architecture(
    cell="minimalrnn", gate="erf", nonlinearity="erf", sigma_w=1.3, sigma_u=0.8, sigma_b=0.4,
    sigma_v=1.1,
)  # fmt: skip


def test_orthant_probabilities():
    rng = np.random.default_rng(0)
    for k in (2, 3, 4, 6):
        A = rng.standard_normal((k, k))
        cov = A @ A.T / k + 0.5 * np.eye(k)
        signs = rng.choice([-1.0, 1.0], size=k)
        d = np.diag(signs)
        ref = multivariate_normal.cdf(
            np.zeros(k), cov=d @ cov @ d, abseps=1e-7, releps=0.0, rng=np.random.default_rng(9)
        )
        assert abs(orthant(cov, signs) - ref) < (1e-7 if k <= 3 else 3e-6), k  # Genz, QMC errors
    # independent coordinates: 2^-k exactly; a scaled covariance does not change it
    assert abs(orthant(3.0 * np.eye(5), np.ones(5)) - 1 / 32) < 1e-7
    assert orthant(np.eye(1), np.ones(1)) == 0.5


def gauss_hermite_2d(cov: np.ndarray, f, points: int = 160) -> float:
    """E[f(z0, z1)] for z ~ N(0, cov) by a tensor Gauss-Hermite rule (cov may be singular)."""
    x, w = np.polynomial.hermite_e.hermegauss(points)
    w = w / w.sum()
    lam, V = np.linalg.eigh(cov)
    L = V * np.sqrt(np.clip(lam, 0.0, None))
    z = L @ np.stack([np.repeat(x, points), np.tile(x, points)])
    return float((f(z[0], z[1]) * np.outer(w, w).ravel()).sum())


def test_exact_at_one_step_against_direct_quadrature():
    """T = 1: K = s_v^2 E[(1 - g(p)) (1 - g(p'))] E[erf(v) erf(v')], both expectations by
    direct 2-d quadrature of the gate and phi (no orthant formula, no dual)."""
    xs = random_sequences((1, 1, 1), 3, seed=4)
    X = np.stack([x[0].numpy() for x in xs])
    S = ARCH.sigma_u**2 * X @ X.T / 3 + ARCH.sigma_b**2
    got = minimalrnn_nngp(ARCH, xs).numpy()
    gate = lambda p: 0.5 * (1 + erf(p))  # noqa: E731
    for i in range(3):
        for j in range(3):
            C = S[np.ix_([i, j], [i, j])]
            gates = gauss_hermite_2d(C, lambda a, b: (1 - gate(a)) * (1 - gate(b)))
            cands = gauss_hermite_2d(C, lambda a, b: erf(a) * erf(b))
            assert abs(got[i, j] - ARCH.sigma_v**2 * gates * cands) < 1e-12 * abs(got[i, j])


def test_mixed_lengths_rows_do_not_depend_on_the_batch():
    xs = random_sequences((2, 1, 2), 2, seed=5)
    for readout in ("last", "avg"):
        arch = ARCH.replace(readout=readout)
        K = minimalrnn_nngp(arch, xs)
        assert rel_err(minimalrnn_nngp(arch, [xs[2], xs[0]]), K[np.ix_([2, 0], [2, 0])]) < 1e-6
        assert torch.allclose(K, K.T, rtol=0, atol=1e-15)
    # avg over one step is last
    one = random_sequences((1, 1), 2, seed=6)
    avg = minimalrnn_nngp(ARCH.replace(readout="avg"), one)
    assert rel_err(avg, minimalrnn_nngp(ARCH, one)) < 1e-15


def test_finite_networks_seed_mean():
    """16 networks of width 1024, N = 3 sequences of lengths 2, 1, 2, both readouts: the seed
    mean of the finite NNGP is within 2% of the analytic kernel (docs/gated.md has the
    measured errors at T = 5)."""
    xs = random_sequences((2, 1, 2), 2, seed=7)
    for readout in ("last", "avg"):
        arch = ARCH.replace(readout=readout, sigma_w=1.0)
        K = minimalrnn_nngp(arch, xs)
        mean = torch.stack(
            [empirical_nngp(ElmanRNN(arch, 2, 1024, seed=s), xs) for s in range(16)]
        ).mean(0)
        assert rel_err(mean, K) < 0.02, readout


@pytest.mark.parametrize(
    "change, message",
    [
        ({"cell": "gru"}, "cell='minimalrnn'"),
        ({"gate": "sigmoid"}, "gate='erf'"),
        ({"depth": 2}, "depth=1"),
        ({"h0": "shared"}, "h0='zero'"),
        ({"bidirectional": True}, "bidirectional=False"),
        ({"readout": "per_step"}, "readout last or avg"),
    ],
)
def test_unsupported_options_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        minimalrnn_nngp(ARCH.replace(**change), random_sequences((2,), 2))
