"""A closed-form nonlinearity that is not built in, added in one place
(tests/nonlinearity_sin.py: one module, one registration, as docs/extending.md says): sin,
V_phi = exp(-(a+b)/2) sinh(c), V_dphi = exp(-(a+b)/2) cosh(c). Checked against Gauss-Hermite
quadrature, every analytic backend (the autograd reference, the in-place torch recursion,
the compiled numba bank, the one-pass bank in torch and numba) and finite networks."""

from __future__ import annotations

import torch
from conftest import assert_finite_networks_match, kernels_by_path, random_sequences, rel_err
from nonlinearity_sin import SIN

from rntk_empirical import Architecture, analytic_kernels
from rntk_empirical.dual import get_dual, get_fused_dual, quadrature_dual
from rntk_empirical.nonlinearities import get_nonlinearity, register_nonlinearity

SIN_QUAD = "sin_quadrature"  # the same phi, no closed form: duals by quadrature
register_nonlinearity(SIN_QUAD, torch.sin, torch.cos)


def test_closed_form_matches_quadrature_and_its_other_forms():
    """Closed form = 96-point quadrature to 1e-13 on variances 0.3..2.5 and correlations up
    to 0.999; the fused in-place form equals it; the diagonal map is V_phi(a, a, a); the
    registry hands out the closed form; the quadrature twin gets the rule when asked for and
    the smooth-dual series (within its 1e-9 contract) by default."""
    assert get_nonlinearity("sin") is SIN and get_dual("sin") is SIN.dual
    v = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)
    rho = torch.tensor([-0.95, -0.3, 0.0, 0.6, 0.999], dtype=torch.float64)
    a, b = v[:, None, None], v[None, :, None]
    c = rho[None, None, :] * (a * b).sqrt()
    exact = SIN.dual(a, b, c)
    quad = quadrature_dual(SIN, a, b, c, points=96)
    for e, q in zip(exact, quad):
        assert float((e - q).abs().max()) <= 1e-13
    rule = get_dual(SIN_QUAD, quad_points=96)(a, b, c)  # the Gauss-Hermite rule asked for
    for e, q in zip(exact, rule):
        assert float((e - q).abs().max()) <= 1e-12
    series = get_dual(SIN_QUAD)(a, b, c)  # default: the smooth-dual series, 1e-9 contract
    for e, q, d in zip(exact, series, SIN.dual(v, v, v)):
        bound = 1e-9 * (d[:, None, None] * d[None, :, None]).sqrt()
        assert bool(((e - q).abs() <= bound).all())
    col, row, S = v[:, None], v[None, :], 0.4 * (v[:, None] * v[None, :]).sqrt()
    Q = torch.rand(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    K, G, scratch = (torch.empty(3, 3, dtype=torch.float64) for _ in range(3))
    get_fused_dual("sin")(col, row, S.clone(), Q, K, G, scratch)
    vp, vd = SIN.dual(col, row, S)
    assert torch.allclose(K, vp, rtol=1e-15, atol=0) and torch.allclose(G, vd * Q, rtol=1e-15)
    assert torch.allclose(SIN.diagonal(v), SIN.dual(v, v, v)[0], rtol=1e-15, atol=1e-16)


FIELDS = dict(nonlinearity="sin", depth=2, sigma_w=1.1, sigma_u=1.2, sigma_b=0.3, sigma_h=0.5)


def test_every_backend_agrees():
    """Mixed lengths, a repeated sequence (identical states), shared h0, depth 2, every
    readout: the reference recursion (autograd), the in-place torch path, the compiled numba
    path and the bank in torch and numba agree to 1e-13, and the quadrature twin to 1e-10.
    (numba runs the tile kernel, ``last`` and ``per_step``: mean pooling at these sizes
    takes the pairwise kernel, whose compilation would add ~30 s to the suite.)"""
    xs = random_sequences((3, 5, 4, 5), 2, seed=3, scale=0.7)
    xs[3] = xs[1].clone()
    for readout in ("last", "per_step", "avg"):
        arch = Architecture(readout=readout, h0="shared", **FIELDS)
        ref, paths = kernels_by_path(arch, xs, numba=readout != "avg")
        for name, kernels in paths.items():
            for k, r in zip(kernels, ref):
                assert rel_err(k, r) <= 1e-13, (readout, name, rel_err(k, r))
        twin = Architecture(readout=readout, h0="shared", **{**FIELDS, "nonlinearity": SIN_QUAD})
        for k, r in zip(analytic_kernels(twin, xs, backend="torch"), ref):
            assert rel_err(k, r) <= 1e-10, (readout, "quadrature", rel_err(k, r))


def test_finite_networks_match():
    """Seed means of the empirical NTK and NNGP of sin networks (width 256, 60 seeds) are
    within 2.5 sigma of the analytic kernels, and the same check fails for a kernel off by
    5% (so it would catch, for example, sinh and cosh swapped)."""
    arch = Architecture(nonlinearity="sin", sigma_w=0.9, sigma_u=1.3, sigma_b=0.4, sigma_v=1.2)
    assert_finite_networks_match(arch, 60)
