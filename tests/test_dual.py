"""Dual activations vs Monte Carlo, high-order quadrature and degenerate covariances."""

from __future__ import annotations

import math

import pytest
import torch

from rntk_empirical.dual import dual_activations, get_dual, get_fused_dual, quadrature_dual
from rntk_empirical.nonlinearities import get_nonlinearity

NAMES = ("relu", "erf", "gelu", "tanh", "identity")
F64 = torch.float64


def _mc(name: str, a: float, b: float, c: float, n: int = 2_000_000):
    """Monte Carlo means and standard errors of phi(u)phi(v) and phi'(u)phi'(v)."""
    g = torch.Generator().manual_seed(1234)
    z1, z2 = torch.randn(2, n, generator=g, dtype=F64)
    sa = math.sqrt(a)
    u = sa * z1
    if a > 0:
        v = (c / sa) * z1 + math.sqrt(max(b - c * c / a, 0.0)) * z2
    else:
        v = math.sqrt(b) * z2
    nl = get_nonlinearity(name)
    out = []
    for f in (nl.phi, nl.dphi):
        prod = f(u) * f(v)
        out.append((float(prod.mean()), float(prod.std()) / math.sqrt(n)))
    return out


CASES = [
    (1.0, 2.0, 0.5),
    (0.3, 1.7, -0.4),
    (2.5, 2.5, 0.96),
    (1.0, 1.0, 0.999999),
    (1.0, 1.0, -0.999999),
    (1e-12, 1.0, 1e-13),
    (0.0, 1.0, 0.0),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("a,b,rho", CASES)
def test_dual_matches_monte_carlo(name, a, b, rho):
    c = rho * math.sqrt(a * b)
    vp, vd = dual_activations(
        name, torch.tensor(a, dtype=F64), torch.tensor(b, dtype=F64), torch.tensor(c, dtype=F64)
    )
    (mp, sp), (md, sd) = _mc(name, a, b, c)
    assert abs(float(vp) - mp) <= 5 * sp + 1e-9
    assert abs(float(vd) - md) <= 5 * sd + 1e-9


@pytest.mark.parametrize("name", ["relu", "erf", "gelu", "identity"])
def test_closed_forms_match_high_order_quadrature(name):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(50, generator=g, dtype=F64) * 3 + 0.05
    b = torch.rand(50, generator=g, dtype=F64) * 3 + 0.05
    rho = torch.rand(50, generator=g, dtype=F64) * 2 - 1
    c = rho * (a * b).sqrt()
    vp, vd = dual_activations(name, a, b, c)
    qp, qd = quadrature_dual(get_nonlinearity(name), a, b, c, points=160)
    tol = 2e-3 if name == "relu" else 1e-10  # relu's kink converges slowly under Gauss-Hermite
    assert torch.allclose(vp, qp, atol=tol, rtol=tol)
    if name != "relu":  # the step function phi' of relu is not quadrature-friendly
        assert torch.allclose(vd, qd, atol=tol, rtol=tol)


def test_tanh_quadrature_converges():
    a, b = torch.tensor([0.5, 2.0], dtype=F64), torch.tensor([1.5, 3.0], dtype=F64)
    c = torch.tensor([0.3, -1.9], dtype=F64)
    lo = quadrature_dual(get_nonlinearity("tanh"), a, b, c, points=64)
    hi = quadrature_dual(get_nonlinearity("tanh"), a, b, c, points=160)
    for x, y in zip(lo, hi):
        assert torch.allclose(x, y, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_degenerate_covariances_finite_and_differentiable(name):
    a = torch.tensor([1.0, 1.0, 1e-12, 0.0, 0.0, 3.0, 1e-300], dtype=F64, requires_grad=True)
    b = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 3.0, 1.0], dtype=F64, requires_grad=True)
    c = torch.tensor([1.0, -1.0, 1e-12, 0.0, 0.0, 3.0 + 1e-15, 0.0], dtype=F64, requires_grad=True)
    vp, vd = dual_activations(name, a, b, c)
    assert torch.isfinite(vp).all() and torch.isfinite(vd).all()
    ga, gb, gc = torch.autograd.grad(
        (vp + vd).sum(), (a, b, c), allow_unused=True, materialize_grads=True
    )
    assert torch.isfinite(ga).all() and torch.isfinite(gb).all() and torch.isfinite(gc).all()


def test_relu_zero_variance_convention_and_limits():
    one = torch.tensor(1.0, dtype=F64)
    vp, vd = dual_activations(
        "relu", torch.tensor(0.0, dtype=F64), one, torch.tensor(0.0, dtype=F64)
    )
    assert float(vp) == 0.0 and float(vd) == 0.0  # u = 0 a.s. and relu'(0) = 0 (torch)
    vp, vd = dual_activations("relu", one, one, one)
    assert float(vp) == pytest.approx(0.5, abs=1e-15)
    assert float(vd) == pytest.approx(0.5, abs=1e-15)
    vp, vd = dual_activations("relu", one, one, -one)
    assert float(vp) == pytest.approx(0.0, abs=1e-15) and float(vd) == pytest.approx(0.0, abs=1e-15)


def test_relu_gradient_is_price_theorem():
    """dV_phi/dc = V_dphi (Price's theorem), also at rho = 1 where naive autograd is 0 * inf."""
    a = torch.tensor([1.0, 2.0, 1.0], dtype=F64)
    b = torch.tensor([1.0, 0.5, 1.0], dtype=F64)
    c = torch.tensor([0.3, -0.2, 1.0], dtype=F64, requires_grad=True)
    vp, vd = dual_activations("relu", a, b, c)
    (gc,) = torch.autograd.grad(vp.sum(), c)
    assert torch.allclose(gc, vd.detach(), atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_fused_equals_reference(name):
    g = torch.Generator().manual_seed(3)
    a = torch.rand(5, 1, generator=g, dtype=F64) + 0.2
    b = torch.rand(1, 6, generator=g, dtype=F64) + 0.2
    a[1] = 0.0
    S = (torch.rand(5, 6, generator=g, dtype=F64) * 2 - 1) * (a * b).sqrt()
    Q = torch.rand(5, 6, generator=g, dtype=F64)
    vp, vd = get_dual(name)(a, b, S)
    K, G, scratch = (torch.empty(5, 6, dtype=F64) for _ in range(3))
    get_fused_dual(name)(a, b, S.clone(), Q, K, G, scratch)
    assert torch.allclose(K, vp, rtol=1e-14, atol=1e-15)
    assert torch.allclose(G, vd * Q, rtol=1e-14, atol=1e-15)


def test_broadcasting_and_errors():
    a = torch.rand(4, 1, dtype=F64) + 0.1
    b = torch.rand(1, 3, dtype=F64) + 0.1
    c = 0.5 * (a * b).sqrt()
    for name in NAMES:
        vp, vd = dual_activations(name, a, b, c)
        assert vp.shape == (4, 3) and vd.shape == (4, 3)
    with pytest.raises(ValueError):
        dual_activations("nope", a, b, c)
    with pytest.raises(ValueError):
        quadrature_dual(get_nonlinearity("tanh"), a, b, c, points=1)


@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_same_makes_the_correlation_exactly_one(name):
    """same=True: the value at c = sqrt(ab) exactly, whatever c's rounding (here off by 1e-9,
    which moves ReLU's V_dphi by ~1e-5 and tanh's quadrature by ~1e-9 without the flag; erf's
    closed form is well conditioned there and takes c as it is)."""
    a = torch.tensor([1.3], dtype=F64)
    exact = dual_activations(name, a, a, a.clone())
    off = a * (1 - 1e-9)
    flagged = dual_activations(name, a, a, off, same=torch.tensor([True]))
    plain = dual_activations(name, a, a, off)
    for e, f, p in zip(exact, flagged, plain):
        assert torch.equal(f, e)
        assert (p - e).abs().max() > 1e-12
    for q, e in zip(get_dual(name)(a, a, off, torch.tensor([True])), exact):
        assert torch.equal(q, e)


def test_quad_points_reaches_the_quadrature():
    a, b, c = (torch.tensor([v], dtype=F64) for v in (1.1, 0.8, 0.5))
    coarse = dual_activations("tanh", a, b, c, quad_points=4)
    ref = quadrature_dual(get_nonlinearity("tanh"), a, b, c, 4)
    fine = dual_activations("tanh", a, b, c)
    for x, r, f in zip(coarse, ref, fine):
        assert torch.equal(x, r)
        assert (x - f).abs().max() > 1e-6  # 4 points are visibly worse than 64
