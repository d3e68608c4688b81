"""Analytic RNTK / NNGP vs the empirical kernels of finite networks (SPEC section 4).

For every architecture option, on one mixed-length batch (lengths 2..5, m = 2), the relative
Frobenius error of the seed-averaged empirical NTK and NNGP w.r.t. the analytic kernels must
shrink from width 64 to width 2048 and be small at width 2048 (6 networks each). ReLU runs
at s_w = 1 here: at the critical s_w = sqrt(2) the per-network fluctuations are several times
larger (std ~5% at width 4096), which would need many more seeds for a fast test.
"""

from __future__ import annotations

import pytest
import torch

from rntk_empirical.analytic import analytic_kernels
from rntk_empirical.architecture import Architecture
from rntk_empirical.empirical import empirical_nngp, empirical_ntk
from rntk_empirical.network import ElmanRNN

F64 = torch.float64
SEEDS = 6
SMALL, LARGE = 64, 2048
MAX_ERR = 0.06  # asserted relative Frobenius error of the 6-seed mean at width 2048

BASE = {"sigma_w": 1.0}
OPTIONS = [
    {},
    {"readout": "avg"},
    {"readout": "per_step"},
    {"bidirectional": True},
    {"h0": "shared", "sigma_h": 1.0},
    {"h0": "per_input", "sigma_h": 1.0},
    {"depth": 2},
    {"depth": 2, "readout": "per_step", "h0": "per_input", "sigma_h": 0.8},
    {"nonlinearity": "erf", "sigma_w": 1.5},
    {"nonlinearity": "tanh", "sigma_w": 1.2, "readout": "avg"},
    {"nonlinearity": "identity", "sigma_w": 0.8},
    {"init": "orthogonal"},
    {"init": "orthogonal", "nonlinearity": "tanh", "sigma_w": 1.2},
]


def _batch():
    g = torch.Generator().manual_seed(11)
    xs = [torch.randn(T, 2, generator=g, dtype=F64) for T in (3, 5, 2, 5, 4)]
    xs[3] = xs[1].clone()  # a repeated input (per_input h0: x = x')
    return xs


def _errors(arch: Architecture, xs, width: int) -> tuple[float, float]:
    theta, nngp = analytic_kernels(arch, xs)
    ets, eks = [], []
    for seed in range(SEEDS):
        model = ElmanRNN(arch, 2, width, seed=seed, max_len=5)
        ets.append(empirical_ntk(model, xs))
        eks.append(empirical_nngp(model, xs))
    et, ek = torch.stack(ets).mean(0), torch.stack(eks).mean(0)
    return float((et - theta).norm() / theta.norm()), float((ek - nngp).norm() / nngp.norm())


@pytest.mark.parametrize(
    "opt", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default"
)
def test_empirical_converges_to_analytic(opt):
    arch = Architecture(**{**BASE, **opt})
    xs = _batch()
    ntk_small, nngp_small = _errors(arch, xs, SMALL)
    ntk_large, nngp_large = _errors(arch, xs, LARGE)
    print(
        f"{opt}: NTK {ntk_small:.4f} -> {ntk_large:.4f}, NNGP {nngp_small:.4f} -> {nngp_large:.4f}"
    )
    assert ntk_large < ntk_small and nngp_large < nngp_small
    assert ntk_large < MAX_ERR and nngp_large < MAX_ERR


def test_equal_length_default_architecture():
    """The default (critical) ReLU RNN, equal lengths: error small at width 2048 too."""
    arch = Architecture()
    xs = torch.randn(4, 4, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    ntk_small, nngp_small = _errors(arch, xs, SMALL)
    ntk_large, nngp_large = _errors(arch, xs, LARGE)
    assert ntk_large < ntk_small and nngp_large < nngp_small
    assert ntk_large < 0.15 and nngp_large < 0.15


def test_standard_parameterization_ntk_grows_with_width():
    """No NTK limit in the standard parameterization: the empirical NTK grows ~ linearly."""
    arch = Architecture(parameterization="standard", sigma_w=1.0)
    xs = _batch()
    tr = [float(empirical_ntk(ElmanRNN(arch, 2, n, seed=0), xs).trace()) for n in (64, 512)]
    assert tr[1] / tr[0] > 4.0
    with pytest.raises(ValueError, match="standard"):
        analytic_kernels(arch, xs)
