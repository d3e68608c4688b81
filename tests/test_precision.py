"""Accuracy of the analytic kernels in the precision asked for (issue 13), and no silent
non-finite kernel: exact diagonals of identical sequences, agreement with an independent
float64 reference, float32 against float64 at long T on both backends, overflow messages."""

import math

import pytest
import torch

from rntk_empirical import Architecture, ElmanRNN
from rntk_empirical.analytic import analytic_kernel_bank, analytic_kernels
from rntk_empirical.dual import dual_activations, get_fused_dual
from rntk_empirical.empirical import empirical_kernels

SW = (1.0, math.sqrt(2.0))


def _x(N, T, seed=0, m=1):
    return torch.randn(N, T, m, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def _reference_last(arch: Architecture, x: torch.Tensor, y: torch.Tensor, same: bool) -> float:
    """The depth-1 ReLU RNTK with ``last`` readout of one pair, h0 = 0, written as plainly as
    possible: math.acos of c / sqrt(a b) at every step, or rho = 1 exactly when ``same``
    (x and y are the same sequence)."""
    sw2, su2, sb2, sv2 = arch.sigma_w**2, arch.sigma_u**2, arch.sigma_b**2, arch.sigma_v**2
    m = x.shape[1]
    ka = kb = kc = g = 0.0
    for t in range(x.shape[0]):
        a = sw2 * ka + su2 * float(x[t] @ x[t]) / m + sb2
        b = sw2 * kb + su2 * float(y[t] @ y[t]) / m + sb2
        c = sw2 * kc + su2 * float(x[t] @ y[t]) / m + sb2
        theta = 0.0 if same else math.acos(max(-1.0, min(1.0, c / math.sqrt(a * b))))
        ka, kb = a / 2, b / 2  # V_phi(a, a, a) = a / 2 for relu
        kc = (
            math.sqrt(a * b)
            / (2 * math.pi)
            * (math.sin(theta) + (math.pi - theta) * math.cos(theta))
        )
        g = (math.pi - theta) / (2 * math.pi) * (c + sw2 * g)
    return sv2 * (kc + g)


def test_dual_is_exact_on_identical_states():
    a = torch.tensor([0.3, 1.7, 25.0, 1e4], dtype=torch.float64)
    # c = a reached through other operations than a itself: rho = c / sqrt(a a) != 1 in floats
    c = (a * 3.0 + 0.1) / 3.0 - 0.1 / 3.0
    for dtype in (torch.float64, torch.float32):
        ad, cd = a.to(dtype), c.to(dtype)
        same = torch.ones(4, dtype=torch.bool)
        vp, vd = dual_activations("relu", ad, ad, cd, same=same)
        assert torch.equal(vd, torch.full_like(vd, 0.5))  # (pi - 0) / (2 pi)
        torch.testing.assert_close(vp, ad / 2, rtol=2 * torch.finfo(dtype).eps, atol=0)
        K, G = torch.empty_like(ad), torch.empty_like(ad)
        Q = torch.ones_like(ad)
        get_fused_dual("relu")(ad, ad, cd.clone(), Q, K, G, torch.empty_like(ad), same)
        assert torch.equal(G, torch.full_like(G, 0.5))
        torch.testing.assert_close(K, ad / 2, rtol=2 * torch.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("sw", SW)
def test_float64_matches_plain_reference_diagonal_and_off_diagonal(sw):
    arch = Architecture(sigma_w=sw, sigma_b=0.1, sigma_h=0.0)
    x = _x(3, 100, seed=4, m=2)
    ref = torch.tensor(
        [[_reference_last(arch, x[i], x[j], i == j) for j in range(3)] for i in range(3)],
        dtype=torch.float64,
    )
    got = {
        "analytic_kernels": analytic_kernels(arch, x, nngp=False)[0],
        "x2 given": analytic_kernels(arch, x, x.clone(), nngp=False)[0],
        "bank torch": analytic_kernel_bank(arch, x, readouts=("last",), backend="torch")[
            (1, "last")
        ][0],
        "bank numba": analytic_kernel_bank(arch, x, readouts=("last",), backend="numba")[
            (1, "last")
        ][0],
    }
    for name, theta in got.items():
        err = ((theta - ref).abs() / ref.abs()).max()
        assert err < 1e-14, (name, float(err))


def test_backends_agree_on_the_diagonal_at_T50():
    arch = Architecture(depth=2)
    x = _x(4, 50, seed=1)
    kw = dict(readouts=("last", "per_step", "avg"))
    t = analytic_kernel_bank(arch, x, backend="torch", **kw)
    n = analytic_kernel_bank(arch, x, backend="numba", **kw)
    for key in t:
        for a, b in zip(t[key], n[key]):
            assert float(((a.diagonal() - b.diagonal()) / b.diagonal()).abs().max()) < 1e-14, key


@pytest.mark.parametrize("sw", SW)
def test_float32_against_float64_at_T1000_both_backends(sw):
    arch = Architecture(sigma_w=sw)
    x = _x(3, 1000, seed=0)
    t64 = analytic_kernels(arch, x, nngp=False)[0]
    t32 = analytic_kernels(arch, x, dtype=torch.float32, nngp=False)[0]
    assert t32.dtype == torch.float32
    assert _rel(t32, t64) < 1e-5
    kw = dict(readouts=("last",), backend="numba")
    n64 = analytic_kernel_bank(arch, x, **kw)[(1, "last")][0]
    n32 = analytic_kernel_bank(arch, x, dtype=torch.float32, **kw)[(1, "last")][0]
    assert n32.dtype == torch.float32
    assert _rel(n32, n64) < 1e-5 and _rel(n64, t64) < 1e-12


def test_overflow_messages_name_dtype_sigma_T_and_the_right_fix():
    arch = Architecture(nonlinearity="identity", sigma_w=2.0)
    x = _x(2, 70)  # ~4^70 = 1e42: beyond float32, fine in float64
    assert torch.isfinite(analytic_kernels(arch, x)[0]).all()
    with pytest.raises(OverflowError, match=r"float32 at T=70 with sigma_w=2.*dtype=float64"):
        analytic_kernels(arch, x, dtype=torch.float32)
    with pytest.raises(OverflowError, match=r"float32 at T=70 with sigma_w=2.*dtype=float64"):
        analytic_kernel_bank(arch, x, dtype=torch.float32, readouts=("last",), backend="numba")
    x = _x(2, 600)  # 4^600 = 1e361: beyond float64 too; advising float64 would be wrong
    for dtype in (torch.float64, torch.float32):
        with pytest.raises(OverflowError, match=r"float64 at T=600") as info:
            analytic_kernels(arch, x, dtype=dtype)
        assert "dtype=float64" not in str(info.value) and "\n" not in str(info.value)


def test_empirical_kernels_raise_instead_of_returning_nan():
    model = ElmanRNN(Architecture(nonlinearity="identity", sigma_w=8.0), 1, 16, dtype=torch.float32)
    x = _x(2, 100).float()
    with pytest.raises(OverflowError, match=r"float32 at T=100 with sigma_w=8.*dtype=float64"):
        empirical_kernels(model, x)
    small = ElmanRNN(Architecture(), 1, 16, dtype=torch.float32)
    theta, k = empirical_kernels(small, x[:, :10])
    assert torch.isfinite(theta).all() and torch.isfinite(k).all()
