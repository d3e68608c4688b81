"""The deterministic T <= 2 kernels of the gated cells (rntk_empirical/gated_exact.py,
docs/gated.md section 5) against closed forms (T = 1, erf gate and erf phi), the exact RNTK
(the Elman cell through the same symbolic forward and backward passes), an independent rule for
the same integrals (Gauss-Hermite against the erf gate's orthant forms), scipy's multivariate
normal CDF (the 4-d orthant), the orthant NNGP of the erf-gated minimalRNN, and the particle
simulation within its standard errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import random_sequences, rel_err
from scipy.stats import multivariate_normal

from rntk_empirical import Architecture, analytic_kernels
from rntk_empirical.gated_exact import centered_orthant, exact_kernels_t2
from rntk_empirical.gated_kernels import minimalrnn_nngp
from rntk_empirical.gated_limit import limit_kernels


def one_step_erf(arch: Architecture, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(theta, nngp) of a one-step gated network with erf gate and erf phi on ``x (N, m)``,
    in closed form: h = gate * c with S = s_u^2 <x, x'> / m + s_b^2 for every
    pre-activation, E[g g'] = 1/4 + asin(S / sqrt((S_xx + 1/2)(S_x'x' + 1/2))) / (2 pi)
    (Sheppard; g(p) = Pr(xi <= p), xi ~ N(0, 1/2); 1 - g gives the same), E[g' g'] =
    det(I + 2 S_2x2)^(-1/2) / pi, and Williams' erf duals."""
    S = arch.sigma_u**2 * (x @ x.T) / x.shape[1] + arch.sigma_b**2
    d = np.diag(S)
    gg = 0.25 + np.arcsin(S / np.sqrt(np.outer(d + 0.5, d + 0.5))) / (2 * math.pi)
    dgdg = 1.0 / (math.pi * np.sqrt(np.outer(1 + 2 * d, 1 + 2 * d) - 4 * S * S))
    cc = 2 / math.pi * np.arcsin(2 * S / np.sqrt(np.outer(1 + 2 * d, 1 + 2 * d)))
    dcdc = 4 / math.pi / np.sqrt(np.outer(1 + 2 * d, 1 + 2 * d) - 4 * S * S)
    K = arch.sigma_v**2 * gg * cc
    return K + arch.sigma_v**2 * S * (cc * dgdg + gg * dcdc), K


@pytest.mark.parametrize("cell", ["gru", "minimalrnn"])
def test_one_step_closed_form(cell):
    arch = Architecture(cell=cell, gate="erf", nonlinearity="erf", sigma_w=1.3, sigma_u=1.1,
                        sigma_b=0.4, sigma_v=0.9)  # fmt: skip
    gen = torch.Generator().manual_seed(3)
    x1 = torch.randn(3, 1, 3, generator=gen, dtype=torch.float64)
    x2 = torch.cat([x1[1:], torch.randn(2, 1, 3, generator=gen, dtype=torch.float64)])
    th, k = exact_kernels_t2(arch, x1, x2)
    Th, K = one_step_erf(arch, torch.cat([x1, x2])[:, 0].numpy())
    assert rel_err(th, torch.from_numpy(Th[:3, 3:])) < 1e-13
    assert rel_err(k, torch.from_numpy(K[:3, 3:])) < 1e-13
    assert th[1, 1] == th[2, 0] and k[1, 1] == k[2, 0]  # K(b, c) = K(c, b), b and c repeated


@pytest.mark.parametrize("phi, readout", [("erf", "last"), ("relu", "avg"), ("tanh", "per_step")])
def test_elman_matches_the_exact_rntk(phi, readout):
    """The same symbolic passes on the Elman cell against the RNTK recursion: a check of the
    backward pass, the readouts (shared and independent) and mixed lengths."""
    arch = Architecture(nonlinearity=phi, sigma_w=1.2, sigma_b=0.3, readout=readout)
    x = random_sequences((2, 1, 2, 2), 3, seed=2)
    th, k = exact_kernels_t2(arch, x)
    Th, K = analytic_kernels(arch, x, backend="torch")
    tol = 1e-10 if phi == "tanh" else 1e-13  # tanh: both sides quadrature
    assert rel_err(th, Th) < tol and rel_err(k, K) < tol


def test_four_dimensional_orthant():
    """Plackett's reduction singles out the fourth variable: exact values (equicorrelation
    1/2: 1/5; two independent blocks: a product of Sheppard's), permutation invariance to
    round-off, and scipy's (quasi-Monte-Carlo) multivariate normal CDF."""
    eq = np.full((4, 4), 0.5) + 0.5 * np.eye(4)
    assert abs(centered_orthant(eq) - 0.2) < 1e-14
    blocks = np.eye(4)
    blocks[0, 3] = blocks[3, 0] = 0.7
    blocks[1, 2] = blocks[2, 1] = -0.4
    sheppard = (0.25 + math.asin(0.7) / (2 * math.pi)) * (0.25 + math.asin(-0.4) / (2 * math.pi))
    assert abs(centered_orthant(2.0 * blocks) - sheppard) < 1e-14
    rng = np.random.default_rng(1)
    A = rng.normal(size=(4, 4))
    M = A @ A.T + 0.3 * np.eye(4)
    p = centered_orthant(M)
    for perm in ([3, 2, 1, 0], [1, 3, 0, 2]):
        assert abs(centered_orthant(M[np.ix_(perm, perm)]) - p) < 1e-14
    ref = multivariate_normal(np.zeros(4), M, abseps=1e-8, releps=0).cdf(np.zeros(4))
    assert abs(p - ref) < 1e-7


@pytest.mark.parametrize("cell", ["gru", "minimalrnn"])
def test_erf_gate_orthant_forms_equal_quadrature_at_two_steps(cell):
    """Two independent rules for every gate integral at T = 2 (4-d at most): exact orthant
    forms and tensor Gauss-Hermite (which converges fast at these small variances)."""
    arch = Architecture(cell=cell, gate="erf", nonlinearity="tanh", sigma_w=0.65, sigma_u=0.55,
                        sigma_b=0.2, readout="avg")  # fmt: skip
    x = random_sequences((2, 2), 3, seed=7)
    exact = exact_kernels_t2(arch, x, gate_rule="exact")
    quad = exact_kernels_t2(arch, x, gate_rule="quadrature", points=32)
    assert rel_err(quad[0], exact[0]) < 1e-11 and rel_err(quad[1], exact[1]) < 1e-11


@pytest.mark.parametrize("readout", ["last", "avg"])
def test_minimalrnn_nngp_equals_the_orthant_recursion(readout):
    """The erf-gated minimalRNN's NNGP by the unrolled orthant sums of gated_kernels (Genz
    QMC above dimension 3, ~1e-6) at T = 2: measured 6e-7 (last) and 2e-7 (avg), 2e-8 and
    7e-9 with 2^18 points."""
    arch = Architecture(cell="minimalrnn", gate="erf", nonlinearity="erf", sigma_w=1.3,
                        sigma_u=0.8, sigma_b=0.4, sigma_v=1.1, readout=readout)  # fmt: skip
    x = random_sequences((2, 1, 2, 2), 3, seed=5)
    assert rel_err(minimalrnn_nngp(arch, x), exact_kernels_t2(arch, x)[1]) < 3e-6


@pytest.mark.parametrize(
    "cell, gate, phi, readout",
    [("gru", "erf", "erf", "last"), ("gru", "sigmoid", "tanh", "avg"),
     ("minimalrnn", "sigmoid", "tanh", "last")],
)  # fmt: skip
def test_two_steps_against_the_particle_simulation(cell, gate, phi, readout):
    arch = Architecture(cell=cell, gate=gate, nonlinearity=phi, sigma_w=1.3, sigma_u=1.1,
                        sigma_b=0.4, sigma_v=0.9, readout=readout)  # fmt: skip
    x = random_sequences((2, 2, 1), 3, seed=7)
    th, k = exact_kernels_t2(arch, x, points=32)
    r = limit_kernels(arch, x, particles=2**12, batches=8)
    assert r.relative_se("ntk") < 4e-3 and r.relative_se("nngp") < 4e-3
    assert float((r.ntk - th).norm() / r.ntk_se.norm()) < 4
    assert float((r.nngp - k).norm() / r.nngp_se.norm()) < 4
    # a kernel 1% off is many standard errors away: the comparison can fail
    assert float((r.ntk - 1.01 * th).norm() / r.ntk_se.norm()) > 4


@pytest.mark.parametrize(
    "change, lengths, message",
    [
        ({}, (3, 2), "length <= 2"),
        ({"depth": 2}, (2,), "depth=1"),
        ({"bidirectional": True}, (2,), "bidirectional"),
        ({"h0": "per_input"}, (2,), "h0='zero'"),
        ({"init": "orthogonal"}, (2,), "init='gaussian'"),
        ({"parameterization": "standard"}, (2,), "parameterization='ntk'"),
    ],
)
def test_unsupported_options_are_refused(change, lengths, message):
    arch = Architecture(cell="gru", gate="erf", nonlinearity="erf").replace(**change)
    with pytest.raises(ValueError, match=message):
        exact_kernels_t2(arch, random_sequences(lengths, 2))
    with pytest.raises(ValueError, match="gate_rule"):
        exact_kernels_t2(Architecture(cell="gru"), random_sequences((2,), 2), gate_rule="x")
