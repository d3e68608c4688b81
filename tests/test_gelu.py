"""The built-in exact GELU, phi(x) = x Phi(x), and its closed-form duals
(rntk_empirical/nonlinearities/gelu.py): against the high-order reference of the smooth-dual
module over variances 1e-3..1e3 and correlations in [-1, 1] (identical states included), its
other forms (derivative, diagonal, compiled cell), every analytic backend, float32, finite
networks, and the registry (the name is built in; F.gelu under another name takes the
series)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_finite_networks_match, kernels_by_path, random_sequences, rel_err

from rntk_empirical import Architecture, analytic_kernels, analytic_ntk
from rntk_empirical.dual import get_dual
from rntk_empirical.nonlinearities import gelu as gelu_module
from rntk_empirical.nonlinearities import get_nonlinearity, register_nonlinearity
from rntk_empirical.smooth_dual import reference_dual

F64 = torch.float64
GELU = get_nonlinearity("gelu")
SERIES = "gelu_series_test"  # F.gelu without the closed form: the smooth-dual series
register_nonlinearity(SERIES, torch.nn.functional.gelu)

# (a, b, rho): every pair of three variances 1e-3..10 at seven correlations, and the
# extremes 1e3 (with 1e-3 and itself) at four; rho = 1 with a = b: identical states
SMALL = (1e-3, 0.1, 10.0)
RHOS = (-1.0, -0.999, -0.5, 0.0, 0.6, 0.999, 1.0)
CELLS = [(a, b, r) for i, a in enumerate(SMALL) for b in SMALL[i:] for r in RHOS]
CELLS += [(a, 1e3, r) for a in (1e-3, 1e3) for r in (-1.0, 0.0, 0.9, 1.0)]


def _scalar_dual(a: float, b: float, rho: float) -> tuple[float, float]:
    a_, b_ = torch.tensor(a, dtype=F64), torch.tensor(b, dtype=F64)
    return tuple(float(v) for v in GELU.dual(a_, b_, rho * torch.sqrt(a_ * b_)))


def test_closed_form_matches_the_high_order_reference():
    """|V - V_ref| <= 1e-14 of the cell's scale sqrt(V(a,a,1) V(b,b,1)), and <= 1e-12 of
    |V| where |V| is at least 1e-3 of the scale (antipodal cells of large variance cancel:
    V_phi(1e3, 1e3, -1) = -0.0059 against a scale of 500 is exact to 2.5e-11 of itself in
    float64, 4e-15 of the scale). Measured on 1001 cells (13 geometric variances 1e-3..1e3,
    11 correlations): 2.3e-15 of the scale, 4.4e-13 of |V|."""
    diag = {v: reference_dual(GELU, v, v, 1.0, strip=3.0) for v in {*SMALL, 1e3}}
    for a, b, rho in CELLS:
        ref = reference_dual(GELU, a, b, rho, strip=3.0)  # GELU is entire: a wide strip
        got = _scalar_dual(a, b, rho)
        for k in range(2):
            scale = math.sqrt(diag[a][k] * diag[b][k])
            err = abs(got[k] - ref[k])
            assert err <= 1e-14 * scale, (a, b, rho, k, err / scale)
            if abs(ref[k]) >= 1e-3 * scale:
                assert err <= 1e-12 * abs(ref[k]), (a, b, rho, k, err / abs(ref[k]))


def test_derivative_diagonal_and_limits():
    """phi' = autograd of F.gelu; the diagonal map (torch and compiled) = V_phi(a, a, a);
    a = 0: V_phi = 0, V_dphi = phi'(0)^2 = 1/4; the dual is differentiable with finite
    gradients at identical and degenerate covariances, and dV_phi/dc = V_dphi (Price)."""
    x = torch.linspace(-20, 20, 4001, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(torch.nn.functional.gelu(x).sum(), x)
    assert float((GELU.dphi(x.detach()) - g).abs().max()) <= 1e-15
    v = torch.tensor([0.0, 1e-3, 0.3, 1.0, 7.0, 1e3], dtype=F64)
    vp, vd = GELU.dual(v, v, v)
    assert torch.allclose(GELU.diagonal(v), vp, rtol=1e-15, atol=0)
    compiled = torch.tensor([gelu_module.diagonal_scalar.py_func(float(a)) for a in v])
    assert torch.allclose(compiled, vp, rtol=1e-15, atol=0)
    assert float(vp[0]) == 0.0 and float(vd[0]) == 0.25
    a = torch.tensor([1.0, 2.0, 0.0, 0.5], dtype=F64, requires_grad=True)
    b = torch.tensor([1.0, 0.5, 1.0, 0.5], dtype=F64, requires_grad=True)
    c = torch.tensor([1.0, -0.3, 0.0, -0.5], dtype=F64, requires_grad=True)
    vp, vd = GELU.dual(a, b, c)
    ga, gb, gc = torch.autograd.grad(vp.sum(), (a, b, c))
    assert all(bool(torch.isfinite(t).all()) for t in (ga, gb, gc))
    assert torch.allclose(gc, vd.detach(), rtol=1e-13, atol=0)


def test_compiled_cell_matches_the_torch_dual():
    """The numba cell (its factors and fast arcsin) = the torch dual to 1e-14 of the cell's
    scale sqrt(V(a,a,a) V(b,b,b)), on variances 1e-3..1e3 (identical states included)."""
    g = torch.Generator().manual_seed(0)
    a = 10.0 ** (torch.rand(200, generator=g, dtype=F64) * 6 - 3)
    b = 10.0 ** (torch.rand(200, generator=g, dtype=F64) * 6 - 3)
    rho = torch.rand(200, generator=g, dtype=F64) * 2 - 1
    rho[:20] = 1.0
    b[:20] = a[:20]
    c = rho * (a * b).sqrt()
    vp, vd = GELU.dual(a, b, c)
    (ea, da), (eb, db) = GELU.dual(a, a, a), GELU.dual(b, b, b)
    fa, fb = gelu_module.factors(a.numpy()), gelu_module.factors(b.numpy())
    for i in range(200):
        k, q = gelu_module.cell(
            float(c[i]), 2.0, fa[0][i], fb[0][i], fa[1][i], fb[1][i], fa[2][i], fb[2][i], -1.0, None
        )
        assert abs(k - float(vp[i])) <= 1e-14 * float((ea[i] * eb[i]).sqrt()), i
        assert abs(q - 2.0 * float(vd[i])) <= 2e-14 * float((da[i] * db[i]).sqrt()), i


FIELDS = dict(nonlinearity="gelu", depth=2, sigma_w=1.3, sigma_u=1.2, sigma_b=0.3, sigma_h=0.5)


def test_every_backend_agrees():
    """Mixed lengths, a repeated sequence (identical states), shared h0, depth 2: the
    reference recursion (autograd), the in-place torch path, the compiled numba path and the
    bank in torch and numba agree to 1e-14; F.gelu by the series (registered under another
    name) to 1e-8; float32 (torch and numba) to 1e-5."""
    xs = random_sequences((3, 5, 4, 5), 2, seed=3, scale=0.9)
    xs[3] = xs[1].clone()
    for readout in ("last", "per_step", "avg"):
        arch = Architecture(readout=readout, h0="shared", **FIELDS)
        ref, paths = kernels_by_path(arch, xs)
        for name, kernels in paths.items():
            for k, r in zip(kernels, ref):
                assert rel_err(k, r) <= 1e-14, (readout, name, rel_err(k, r))
        series = Architecture(readout=readout, h0="shared", **{**FIELDS, "nonlinearity": SERIES})
        for k, r in zip(analytic_kernels(series, xs), ref):
            assert rel_err(k, r) <= 1e-8, (readout, "series", rel_err(k, r))
        for backend in ("torch", "numba"):
            k32 = analytic_ntk(arch, xs, backend=backend, dtype=torch.float32)
            assert k32.dtype == torch.float32
            assert rel_err(k32.double(), ref[0]) <= 1e-5, (readout, backend, "float32")


def test_registry_keeps_the_name():
    """'gelu' is built in: registering another function under it is refused, so the
    closed form is what every path gets (get_dual hands out the module's dual)."""
    assert get_dual("gelu") is gelu_module.dual
    with pytest.raises(ValueError, match="built in"):
        register_nonlinearity("gelu", torch.nn.functional.gelu, overwrite=True)


def test_finite_networks_match():
    """Seed means of the empirical NTK and NNGP of gelu networks (width 256, 200 seeds) are
    within 2.5 sigma of the analytic kernels, and the same check fails for a kernel off by
    5%."""
    arch = Architecture(nonlinearity="gelu", sigma_w=1.1, sigma_u=1.3, sigma_b=0.4, sigma_v=1.2)
    assert_finite_networks_match(arch, 200)
