"""The smooth-nonlinearity dual (Mehler series) against the high-order reference: the error
contract |V - V_ref| <= tol sqrt(V(a,a,1) V(b,b,1)) on a grid of cells including rho -> +-1,
a = b, a or b -> 0 and identical states, for tanh, softplus, sigmoid, swish and GELU."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from rntk_empirical import smooth_dual as sd
from rntk_empirical.analytic import numba_smooth
from rntk_empirical.nonlinearities import get_nonlinearity, register_nonlinearity

F = torch.nn.functional
SMOOTH = {
    "tanh": None,
    "smooth_test_softplus": F.softplus,
    "smooth_test_sigmoid": torch.sigmoid,
    "smooth_test_swish": lambda x: x * torch.sigmoid(x),
    "smooth_test_gelu": F.gelu,
}
for _name, _phi in SMOOTH.items():
    if _phi is not None:
        register_nonlinearity(_name, _phi)

# (a, b, rho): generic cells, rho -> +-1, a = b, a or b -> 0, large variances; the last
# (16, 16, 0.9999) is past the series for tanh (the 2-D rule takes it)
CELLS = [
    (1.0, 1.0, 0.3),
    (2.0, 0.5, -0.7),
    (4.0, 4.0, 0.999999),
    (4.0, 4.0, -1.0),
    (9.0, 2.0, 0.99),
    (0.0, 3.0, 0.4),
    (1e-8, 2.0, 0.9),
    (12.0, 12.0, 0.95),
    (25.0, 1.0, -0.5),
    (16.0, 16.0, 0.9999),
]


def _reference(name, cells):
    nl = get_nonlinearity(name)
    ref = np.array([sd.reference_dual(nl, a, b, r) for a, b, r in cells])
    variances = {c[0] for c in cells} | {c[1] for c in cells}
    diag = {v: sd.reference_dual(nl, v, v, 1.0) for v in variances}
    scale = np.array([[math.sqrt(diag[a][k] * diag[b][k]) for k in range(2)] for a, b, _ in cells])
    return ref, scale, diag


@pytest.mark.parametrize("name", list(SMOOTH))
def test_series_meets_the_error_contract(name):
    """Compiled cells (as the recursion evaluates them) and the torch evaluator within
    tol = 1e-9 of the scale, measured ~2.5e-10 (the per-part bound is tol / 4)."""
    ref, scale, diag = _reference(name, CELLS)
    a, b, r = (np.array(col, dtype=np.float64) for col in zip(*CELLS))
    vp, vd = numba_smooth.evaluate(name, a, b, r)
    err = np.abs(np.stack([vp, vd], 1) - ref) / np.maximum(scale, 1e-300)
    err[scale == 0] = np.abs(np.stack([vp, vd], 1) - ref)[scale == 0]  # exact zeros (a = 0)
    assert err.max() <= sd.DEFAULT_TOL, (name, err.max(axis=1))
    assert err.max() > 1e-14  # the grid includes cells where the truncation shows
    sm = sd.prepare_smooth(name, 25.0)
    t = [torch.tensor(x) for x in (a, b, r * np.sqrt(a * b))]
    tp, td = sd.torch_dual(sm, *t)
    err_t = np.abs(np.stack([tp.numpy(), td.numpy()], 1) - ref) / np.maximum(scale, 1e-300)
    assert np.nanmax(np.where(scale > 0, err_t, 0.0)) <= sd.DEFAULT_TOL
    # identical states: exactly the diagonal values (V(a, a, 1) = E[phi(sqrt(a) z)^2])
    v = np.array([0.5, 6.0, 20.0])
    sp, sdd = numba_smooth.evaluate(name, v, v, np.ones(3), same=np.ones(3, bool))
    for k, x in enumerate(v):
        want = sd.reference_dual(get_nonlinearity(name), x, x, 1.0)
        assert abs(sp[k] - want[0]) <= 1e-12 * want[0]
        assert abs(sdd[k] - want[1]) <= 1e-12 * want[1]


def test_symmetric_in_the_two_variances():
    """V(a, b, rho) = V(b, a, rho) to rounding (rho = S r_a r_b itself rounds by order)."""
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0, 20, 400), rng.uniform(0, 20, 400)
    r = np.concatenate([rng.uniform(-1, 1, 390), [0.99999, -0.99999] * 5])
    p1, d1 = numba_smooth.evaluate("tanh", a, b, r)
    p2, d2 = numba_smooth.evaluate("tanh", b, a, r)
    assert np.abs(p1 - p2).max() <= 1e-14 and np.abs(d1 - d2).max() <= 1e-14


def test_tighter_tolerance_costs_terms():
    """tol = 1e-11 holds on the hardest series cells and needs more terms than 1e-9."""
    cells = [(4.0, 4.0, 0.999), (9.0, 2.0, 0.97), (1.0, 3.0, -0.9)]
    ref, scale, _ = _reference("tanh", cells)
    a, b, r = (np.array(col) for col in zip(*cells))
    vp, vd = numba_smooth.evaluate("tanh", a, b, r, tol=1e-11)
    assert (np.abs(np.stack([vp, vd], 1) - ref) / scale).max() <= 1e-11
    sm = sd.prepare_smooth("tanh", 9.0)
    loose = sd.side_table(sm.grid, a, 1e-9).terms
    tight = sd.side_table(sd.prepare_smooth("tanh", 9.0, 1e-11).grid, a, 1e-11).terms
    both = (tight >= 0) & (loose >= 0)  # bins covered at both tolerances
    assert (tight[both] >= loose[both]).all() and (tight[both] > loose[both]).any()
    assert ((tight < 0) >= (loose < 0)).all()  # a tighter tol covers no more bins


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_series_tol_reaches_the_kernels(backend):
    """analytic_ntk's series_tol sets the contract of every cell: the kernels at 1e-5 and
    1e-9 against 1e-12 move by amounts that shrink with the tolerance (measured 3.0-3.5e-7
    and 1.6-2.5e-11 relative on these inputs, numba and torch), one grid serves every
    tolerance, and a value outside [1e-12, 1) is refused up front, for a closed form too."""
    from rntk_empirical.analytic import analytic_ntk
    from rntk_empirical.architecture import Architecture

    arch = Architecture(readout="avg", nonlinearity="tanh")
    x = torch.randn(6, 12, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ref = analytic_ntk(arch, x, series_tol=1e-12, backend=backend)
    err = {}
    for tol in (1e-5, 1e-9):
        got = analytic_ntk(arch, x, series_tol=tol, backend=backend)
        err[tol] = float((got - ref).abs().max() / ref.abs().max())
    assert 1e-9 < err[1e-5] <= 1e-5, err
    assert err[1e-9] <= 1e-9 and err[1e-9] < err[1e-5] * 1e-2, err
    assert sd.prepare_smooth("tanh", 9.0, 1e-11).grid is sd.prepare_smooth("tanh", 9.0).grid
    for bad in (0.0, 1e-13, 1.0, True, "1e-9"):
        for name in ("tanh", "relu"):
            with pytest.raises(ValueError, match="series_tol"):
                analytic_ntk(replace(arch, nonlinearity=name), x, series_tol=bad)


def test_a_tighter_tol_gets_a_grid_of_its_range():
    """A tighter tol does not inherit a wider grid that interpolates too coarsely for it
    (softplus: 4.8e-12 up to variance 181, 8.6e-14 up to 27, measured): it builds one of its
    own range, and past that range it is refused with the tolerance in the reason."""
    name = "smooth_test_softplus"
    assert sd.prepare_smooth(name, 100.0).grid.check > 1e-11 / 20
    sm = sd.prepare_smooth(name, 16.0, 1e-11)
    assert sm.grid.check <= 1e-11 / 20 and sm.var_max < 100.0
    with pytest.raises(sd.SmoothDualUnsupported, match=r"tol = 1e-11\)"):
        sd.prepare_smooth(name, 100.0, 1e-11)


def test_reference_against_adaptive_scipy():
    """The reference (trapezoid rules, refined) against scipy's adaptive dblquad at one
    cell in the standard basis: ~1e-12 agreement."""
    from scipy.integrate import dblquad

    a, b, rho = 2.0, 3.0, 0.6
    tau = math.sqrt(1 - rho * rho)

    def f(z2, z1):
        u, v = math.sqrt(a) * z1, math.sqrt(b) * (rho * z1 + tau * z2)
        return math.tanh(u) * math.tanh(v) * math.exp(-0.5 * (z1 * z1 + z2 * z2)) / (2 * math.pi)

    want, _ = dblquad(f, -9, 9, -9, 9, epsabs=1e-14, epsrel=1e-13)
    got = sd.reference_dual(get_nonlinearity("tanh"), a, b, rho)[0]
    assert abs(got - want) <= 1e-11


@pytest.mark.parametrize(
    "phi,why",
    [(lambda x: F.leaky_relu(x, 0.1), "does not converge"), (F.hardtanh, "interpolate")],
)
def test_kinks_are_refused_with_the_reason(phi, why):
    """A kink (leaky ReLU: a jump in phi') or a clipped function (hard tanh) cannot meet the
    contract: SmoothDualUnsupported says why, and table_or_none warns once and returns None."""
    name = f"smooth_test_kink_{why.split()[0]}"
    register_nonlinearity(name, phi)
    with pytest.raises(sd.SmoothDualUnsupported, match=why):
        sd.prepare_smooth(name, 4.0)
    with pytest.warns(UserWarning, match="Gauss-Hermite"):
        assert numba_smooth.table_or_none(name, np.ones(3), np.ones(3)) is None


def test_get_dual_takes_the_series_without_grad():
    """dual_activations of tanh: the series (within the contract of the reference) when no
    grad is asked for; the Gauss-Hermite rule (differentiable) when it is, and when
    quad_points is not the default."""
    from rntk_empirical.dual import dual_activations, quadrature_dual

    a, b, rho = torch.tensor([[9.0]]), torch.tensor([[4.0]]), 0.97
    c = torch.tensor([[rho * 6.0]])
    ref, scale, _ = _reference("tanh", [(9.0, 4.0, rho)])
    vp, vd = dual_activations("tanh", a, b, c)
    assert abs(float(vp) - ref[0, 0]) <= 1e-9 * scale[0, 0]
    assert abs(float(vd) - ref[0, 1]) <= 1e-9 * scale[0, 1]
    rule = quadrature_dual(get_nonlinearity("tanh"), a, b, c)
    assert abs(float(rule[0]) - ref[0, 0]) > 1e-8 * scale[0, 0]  # the rule errs more here
    cg = c.clone().requires_grad_(True)
    gp, _ = dual_activations("tanh", a, b, cg)
    assert float(gp.detach()) == float(rule[0]) and gp.requires_grad
    assert float(dual_activations("tanh", a, b, c, quad_points=32)[0]) == float(
        quadrature_dual(get_nonlinearity("tanh"), a, b, c, 32)[0]
    )


def test_variances_past_the_verified_range_are_refused():
    """Past MAX_VARIANCE (unbounded phi with a large s_w diverges there) the series is not
    verified: SmoothDualUnsupported, so the caller keeps the Gauss-Hermite rule."""
    with pytest.raises(sd.SmoothDualUnsupported, match="verified range"):
        sd.prepare_smooth("tanh", 2.0 * sd.MAX_VARIANCE)


def test_compiled_diagonal_recursion_matches_the_grid():
    """numba_smooth.variances (compiled, Clenshaw on the grid's E_phi column) against the
    recursion S = s_w^2 E_phi(S_prev) + |x_t|^2 + s_b^2 by CoefficientGrid.diagonal, two
    layers, mixed starts, s_w = 3 with large inputs: variances past the first grid (25),
    so the grid grows and the recursion runs again."""
    gen = torch.Generator().manual_seed(5)
    xs = 3.0 * torch.randn(3, 30, 2, generator=gen, dtype=torch.float64)
    starts = torch.tensor([0, 4, 29])
    sw2, su2, sb2, kb = 9.0, 1.0, 0.01, 0.0
    got = numba_smooth.variances("tanh", (sw2, su2, sb2, 1.0, kb, False), 2, xs, starts)
    assert float(got.max()) > 25.0  # the grid grew
    grid = sd.prepare_smooth("tanh", float(got.max())).grid
    want = np.ones((2, 3, 30))
    for i in range(3):
        K = [kb, kb]
        for p in range(int(starts[i]), 30):
            drive = float((xs[i, p] ** 2).sum())
            for l in range(2):
                S = sw2 * K[l] + drive + sb2
                want[l, i, p] = S
                K[l] = float(grid.diagonal(np.array([math.sqrt(S)]))[0, 0])
                drive = su2 * K[l]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=0)


# (a, b, rho) where a side stores fewer terms than the cell needs: a low-variance side beside
# a high-variance one (the level rule, or the grid's missing terms) and |rho| past
# numba_smooth.STORE_TO_RHO (the grid)
SHORT_SIDE_CELLS = [
    (0.05, 20.0, 0.15),
    (0.05, 20.0, 0.3),
    (0.01, 25.0, 0.2),
    (0.05, 20.0, 0.5),
    (0.05, 20.0, 0.8),
    (0.05, 20.0, 0.9),
    (0.3, 16.0, 0.97),
    (1.0, 9.0, 0.995),
    (2.0, 20.0, 0.9999),
    (20.0, 0.5, -0.98),
    (6.0, 7.0, 0.999),
    (0.25, 1.4, 0.96),
]


@pytest.mark.parametrize("name", ["tanh", "smooth_test_softplus"])
def test_cells_past_a_sides_stored_terms_meet_the_contract(name):
    """The ways of handling terms a side does not store occur on these cells (the level rule
    stopping within the shorter side's terms where the larger side's own count at tol / 4
    is past them, the missing terms from the grid), and every cell stays within tol of the
    reference."""
    a, b, r = (np.array(col, dtype=np.float64) for col in zip(*SHORT_SIDE_CELLS))
    tab, (oa, ob) = numba_smooth.prepare(name, [a, b])
    K, n = numba_smooth.cell_terms(tab, oa, ob, r)
    mid = numba_smooth.LEVELS // 2  # the level of tol / 4: the max rule of side_table
    shift = numba_smooth.LEVEL_BITS * mid
    k = sd.rho_bin(r)
    at_mid = np.maximum(
        (tab[oa.astype(int) + 5 + k].astype(np.int64) >> shift) & numba_smooth.NOT_CONVERGED,
        (tab[ob.astype(int) + 5 + k].astype(np.int64) >> shift) & numba_smooth.NOT_CONVERGED,
    )
    assert (K <= at_mid).all()
    assert ((K <= n) & (at_mid > n)).any()  # the level rule saves the grid
    assert (K > n).any()  # the grid's terms
    ref, scale, _ = _reference(name, SHORT_SIDE_CELLS)
    vp, vd = numba_smooth.evaluate(name, a, b, r)
    err = np.abs(np.stack([vp, vd], 1) - ref) / scale
    assert err.max() <= sd.DEFAULT_TOL, err.max(axis=1)


@pytest.mark.parametrize(
    "name, layout",
    [("tanh", numba_smooth.ODD), ("smooth_test_sigmoid", numba_smooth.ODD),
     ("smooth_test_softplus", numba_smooth.EVEN), ("smooth_test_swish", numba_smooth.EVEN),
     ("smooth_test_gelu", numba_smooth.EVEN)],
)
def test_parity_layouts_equal_the_generic_layout(name, layout, monkeypatch):
    """tanh and the sigmoid take the odd layout, softplus, swish and GELU the even one (half
    the Hermite coefficients vanish by symmetry and are left out); the values equal those of
    the generic layout (all four parts, every coefficient) to rounding where few terms are
    needed and within the contract elsewhere, on cells with few and many terms, the grid's
    missing terms, rho < 0 and a = 0."""
    cells = SHORT_SIDE_CELLS + [(0.0, 2.0, 0.3), (3.0, 0.0, -0.2), (0.7, 1.3, -0.6)]
    a, b, r = (np.array(col, dtype=np.float64) for col in zip(*cells))
    tab, (oa, ob) = numba_smooth.prepare(name, [a, b])
    assert tab[1] == layout
    K, _ = numba_smooth.cell_terms(tab, oa, ob, r)
    got = np.stack(numba_smooth.evaluate(name, a, b, r), 1)
    monkeypatch.setattr(numba_smooth, "PARITY_BELOW", -1.0)  # no layout qualifies
    monkeypatch.setattr(numba_smooth, "_GRIDS", {})
    tab, _ = numba_smooth.prepare(name, [a, b])
    assert tab[1] == numba_smooth.GENERIC
    generic = np.stack(numba_smooth.evaluate(name, a, b, r), 1)
    scale = np.sqrt(np.stack(numba_smooth.evaluate(name, a, a, np.ones_like(a)), 1)
                    * np.stack(numba_smooth.evaluate(name, b, b, np.ones_like(b)), 1))
    diff = np.abs(got - generic)
    assert diff.max() > 0.0  # two summation orders, not one
    # the layouts sum different numbers of powers past a cell's K (HOT against 2 HOT_SLOTS;
    # 2 ceil(K / 2) against K): terms below the truncation bound, which the contract covers;
    # where K is at most half of HOT both sums are complete to rounding
    few = K <= numba_smooth.HOT // 2
    assert few.sum() >= 5
    np.testing.assert_array_less(diff[few], 1e-13 * scale[few] + 1e-300)
    np.testing.assert_array_less(diff, sd.DEFAULT_TOL * scale + 1e-300)


def test_level_counts_match_the_side_table():
    """The packed counts of the middle level (tol / 4) are smooth_dual.side_table's (the
    most over the four parts per bin; NOT_CONVERGED for -1), and the counts grow with the
    level (a tighter threshold needs more terms)."""
    v = np.array([0.0, 0.01, 0.3, 1.0, 2.5, 7.0, 16.0, 40.0])
    tab, (o,) = numba_smooth.prepare("tanh", [v])
    o = o.astype(int)
    packed = tab[o[:, None] + 5 + np.arange(sd.RHO_BINS)[None, :]].astype(np.int64)
    levels = np.stack(
        [(packed >> (numba_smooth.LEVEL_BITS * lv)) & numba_smooth.NOT_CONVERGED
         for lv in range(numba_smooth.LEVELS)],
        axis=2,
    )
    terms = sd.side_table(sd.prepare_smooth("tanh", 40.0).grid, v, sd.DEFAULT_TOL).terms
    want = np.where((terms < 0).any(1), numba_smooth.NOT_CONVERGED, terms.max(1))
    got = levels[:, :, numba_smooth.LEVELS // 2]
    assert np.abs(got - want).max() <= 1 and (got == want).mean() > 0.95
    assert (np.diff(levels, axis=2) >= 0).all()
    assert (levels[:, :, -1] > levels[:, :, 0]).any()


@pytest.mark.parametrize("name", ["tanh", "smooth_test_softplus"])
def test_fine_grid_counts_bound_each_sides_own(name):
    """A side's packed level counts (from numba_smooth.fine_counts) are at least its own
    counts (numba_smooth._side_terms at its s) at the levels down to tol / 4 in every bin and
    down to 2.5e-13 of E in the bins that set its stored length (|rho| <= STORE_TO_RHO), and
    mostly equal them; past that the counts are the rounding of the Parseval remainder."""
    v = np.concatenate([[0.0, 1e-6], np.random.default_rng(3).uniform(0.0, 12.0, 400)])
    tab, (o,) = numba_smooth.prepare(name, [v])
    packed = tab[o.astype(int)[:, None] + 5 + np.arange(sd.RHO_BINS)[None, :]].astype(np.int64)
    got = np.stack(
        [(packed >> (numba_smooth.LEVEL_BITS * lv)) & numba_smooth.NOT_CONVERGED
         for lv in range(numba_smooth.LEVELS)],
        axis=2,
    )
    sm = sd.prepare_smooth(name, v.max())
    grid = sm.grid
    own = np.empty_like(got)
    numba_smooth._side_terms(
        np.sqrt(v), grid.bounds, np.ascontiguousarray(grid.cheb), grid.kmax,
        numba_smooth.level_thresholds(sd.DEFAULT_TOL), numba_smooth._powers(grid.kmax // 2),
        np.array(grid.at_zero), own,
    )
    mid, store = numba_smooth.LEVELS // 2, numba_smooth.STORE_LEVEL
    assert (got[:, :, : mid + 1] >= own[:, :, : mid + 1]).all()
    bins = numba_smooth._store_bins()
    assert (got[:, :bins, store] >= own[:, :bins, store]).all()
    assert (got == own).mean() > 0.95


def test_a_table_over_the_cap_stores_a_looser_level(monkeypatch):
    """A call whose table would pass TABLE_MAX_BYTES stores fewer terms per side (a looser
    level; the cells take the rest from the grid) and gives the same values; under the
    smallest table it gives up the series with the reason."""
    a, b, r = (np.array(col, dtype=np.float64) for col in zip(*SHORT_SIDE_CELLS))
    full, _ = numba_smooth.prepare("tanh", [a, b])
    want = numba_smooth.evaluate("tanh", a, b, r)
    monkeypatch.setattr(numba_smooth, "TABLE_MAX_BYTES", 8 * (full.size - 1))
    small, (oa, ob) = numba_smooth.prepare("tanh", [a, b])
    assert small.size < full.size
    K, n = numba_smooth.cell_terms(small, oa, ob, r)
    assert (K > n).any()
    got = numba_smooth.evaluate("tanh", a, b, r)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-15)
    monkeypatch.setattr(numba_smooth, "TABLE_MAX_BYTES", 8 * 1000)
    with pytest.raises(sd.SmoothDualUnsupported, match="GiB"):
        numba_smooth.prepare("tanh", [a, b])


def test_vector_horner_sums_the_four_polynomials():
    """compiled.horner_products4 (LLVM IR, four lanes) against numpy's sum of the products
    of two sides' entries times powers of x, for ranges of every length mod 4 (and empty)."""
    from rntk_empirical.nonlinearities.compiled import horner_products4, njit

    @njit
    def run(tab, ci, cj, lo, hi, x, acc):
        return horner_products4(tab, ci, cj, lo, hi, x, x * x, acc[0], acc[1], acc[2], acc[3])

    rng = np.random.default_rng(3)
    tab = rng.standard_normal(2000)
    acc = np.array([0.3, -1.2, 0.7, 2.0])
    ci, cj, x = 17, 901, -0.93
    for lo, hi in [(0, 0), (0, 1), (0, 13), (3, 16), (16, 82), (5, 103)]:
        m = np.arange(lo, hi)
        A = tab[ci + 4 * m[:, None] + np.arange(4)]
        B = tab[cj + 4 * m[:, None] + np.arange(4)]
        want = acc * x ** (hi - lo) + ((A * B) * x ** (m - lo)[:, None]).sum(axis=0)
        got = np.array(run(tab, ci, cj, lo, hi, x, acc))
        scale = acc * x ** (hi - lo) + (np.abs(A * B) * np.abs(x) ** (m - lo)[:, None]).sum(0)
        assert np.all(np.abs(got - want) <= 1e-14 * np.abs(scale) + 1e-300), (lo, hi)
