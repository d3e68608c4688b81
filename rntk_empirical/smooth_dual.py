r"""A fast dual for smooth nonlinearities: the Mehler (Hermite) series with per-variance
coefficients, a certified truncation per cell, and a stated error.

For (u, v) ~ N(0, [[a, c], [c, b]]) and rho = c / sqrt(a b), Mehler's formula gives

    V_phi(a, b, rho)  = sum_k alpha_k(a) alpha_k(b) rho^k,   alpha_k(a) = E[phi(sqrt(a) z) h_k(z)]
    V_dphi(a, b, rho) = sum_k beta_k(a)  beta_k(b)  rho^k,   beta_k(a)  = E[phi'(sqrt(a) z) h_k(z)]

with h_k = He_k / sqrt(k!) the orthonormal probabilists' Hermite polynomials and z ~ N(0, 1).
The coefficients depend on one variance each (N T values per call: precomputed once), so a
cell costs one Horner polynomial of K terms for each of V_phi and V_dphi.

Truncation. For one side, let E(a) = E[phi(sqrt(a) z)^2] = sum_k alpha_k(a)^2 (Parseval: the
value at rho = 1, a = b). By Cauchy-Schwarz the tail of a cell is

    |sum_{k >= K} alpha_k(a) alpha_k(b) rho^k| <= sqrt(R_a(K, |rho|) R_b(K, |rho|)),
    R_a(K, r) = sum_{k >= K} alpha_k(a)^2 r^k,

so choosing, per side and per bin of |rho| (upper edge r), the smallest K with
R_a(K, r) <= (tol / 2) E(a) bounds the truncation error of every cell by
(tol / 2) sqrt(E(a) E(b)). R is the sum of the stored squares beyond K plus the Parseval
remainder r^KMAX (E - sum_{k < KMAX} alpha_k^2), E computed independently by quadrature.

**Error contract.** For every cell, |V - V_exact| <= tol * sqrt(V(a, a, 1) V(b, b, 1)) (the
Cauchy-Schwarz scale of the cell, |V| <= that scale), for V_phi and V_dphi alike; default
tol = 1e-9. tests/test_smooth_dual.py measures it against :func:`reference_dual` (trapezoid
rules in the sum/difference basis, refined until two successive step halvings agree to
1e-13). Where the series has not converged by ``kmax`` terms (large variances with |rho|
near 1) the side marks that bin uncovered and such cells are evaluated by the 2-D trapezoid
rule (:func:`trapezoid_dual`), exact to the same tolerance but ~1000x slower; identical
states (x = x') take the diagonal values E exactly.

Coefficients as a function of s = sqrt(a) are interpolated from a per-nonlinearity grid
(:class:`CoefficientGrid`, Chebyshev interpolation of degree ``GRID_DEGREE`` on geometric
intervals of s, built once per process and nonlinearity, each interval checked against the
direct quadrature at a point between its nodes). Which nonlinearities qualify: those whose
unit-variance series converges within ``kmax`` terms for phi and phi' (analytic in a strip:
tanh, logistic sigmoid, softplus, swish, GELU, erf; the built-in ``gelu`` and ``erf`` take
their closed forms instead, so GELU reaches this path only as a function registered under
another name, as the benchmarks' ``gelu_series``); a kink (ReLU, leaky ReLU, hard tanh: a
jump in phi' makes its coefficients decay like k^-3/4) raises :class:`SmoothDualUnsupported`
with the measured reason, and the caller keeps its current path.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from rntk_empirical.nonlinearities import Nonlinearity, get_nonlinearity

DEFAULT_TOL = 1e-9
KMAX = 1024  # most series terms a side stores (cells past it take the trapezoid rule)
RHO_BINS = 24  # bins of |rho|: edge r_b = 1 - (1 - (b + 1) / RHO_BINS)^2, finer near 1
GRID_DEGREE = 16  # Chebyshev degree per interval of s = sqrt(a)
GRID_S0 = 0.125  # first interval [0, GRID_S0]; then geometric intervals of ratio GRID_RATIO
GRID_RATIO = 2.0**0.125
Z_RANGE = 13.0  # |z| beyond which sqrt(phi_gauss(z)) < 1e-18: the Hermite functions vanish
TRAP_RANGE = 9.5  # the 2-D rule's range per axis (Gaussian weight < 1e-19 beyond)


class SmoothDualUnsupported(ValueError):
    """The nonlinearity's series does not converge fast enough to verify the contract."""


def rho_bin_edges(bins: int = RHO_BINS) -> np.ndarray:
    """Upper edges r_b of the |rho| bins; bin of |rho| = min(bins - 1, int(bins (1 -
    sqrt(1 - |rho|))))."""
    b = np.arange(1, bins + 1, dtype=np.float64)
    return 1.0 - (1.0 - b / bins) ** 2


def rho_bin(r: np.ndarray | float, bins: int = RHO_BINS):
    """The bin index of |rho| (the inverse of :func:`rho_bin_edges`)."""
    x = np.minimum(np.abs(r), 1.0)
    return np.minimum(bins - 1, (bins * (1.0 - np.sqrt(1.0 - x))).astype(np.int64))


# ------------------------------------------------------------------ direct coefficients
@lru_cache(maxsize=8)
def _hermite_functions(kmax: int, hz: float) -> tuple[np.ndarray, np.ndarray]:
    """(z, Psi): trapezoid nodes z on [-Z_RANGE, Z_RANGE] and Psi[k, i] = hz h_k(z_i)
    phi_gauss(z_i) (the quadrature weight folded in), by the stable recurrence of the
    Hermite functions psi_k = h_k sqrt(phi_gauss)."""
    n = int(math.ceil(Z_RANGE / hz))
    z = np.arange(-n, n + 1, dtype=np.float64) * hz
    root = np.exp(-0.25 * z * z) / (2.0 * math.pi) ** 0.25  # sqrt of the Gaussian density
    psi = np.empty((kmax, z.size))
    prev, cur = np.zeros_like(z), root.copy()
    for k in range(kmax):
        psi[k] = cur
        prev, cur = cur, (z * cur - math.sqrt(k) * prev) / math.sqrt(k + 1)
    return z, psi * (hz * root)


def _torch_eval(nl: Nonlinearity, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    with torch.no_grad():
        return nl.phi(t).numpy().copy(), nl.dphi(t).detach().numpy().copy()


def direct_coefficients(
    nl: Nonlinearity, s: np.ndarray, kmax: int = KMAX, strip: float = 1.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(alpha ``(len(s), kmax)``, beta, E_phi ``(len(s),)``, E_dphi) at s = sqrt(a) by the
    trapezoid rule in z (exponentially accurate for phi analytic in a strip of half-width
    ``strip``: the step resolves both the strip, ``strip / s``, and the Hermite
    oscillation of degree kmax)."""
    s = np.asarray(s, dtype=np.float64)
    smax = max(float(s.max(initial=0.0)), 1e-3)
    d = strip / smax
    hz = min(0.05, 2.0 * math.pi * d / (40.0 + math.sqrt(2.0 * kmax) * d))
    hz = 2.0 ** math.floor(math.log2(hz))  # a few cached node sets
    z, psi = _hermite_functions(kmax, hz)
    phi, dphi = _torch_eval(nl, s[:, None] * z[None, :])
    alpha, beta = phi @ psi.T, dphi @ psi.T
    w = hz * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return alpha, beta, (phi * phi) @ w, (dphi * dphi) @ w


# ------------------------------------------------------------------ the grid in s = sqrt(a)
def _interval_bounds(smax: float) -> np.ndarray:
    """[0, S0, S0 r, S0 r^2, ...] up to the first bound >= smax."""
    n = max(1, int(math.ceil(math.log(max(smax, GRID_S0) / GRID_S0) / math.log(GRID_RATIO))))
    return np.concatenate([[0.0], GRID_S0 * GRID_RATIO ** np.arange(n + 1)])


def _cheb_nodes(lo: float, hi: float, degree: int) -> np.ndarray:
    x = np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))  # first kind
    return 0.5 * (lo + hi) + 0.5 * (hi - lo) * x


def _cheb_basis(x: np.ndarray, degree: int) -> np.ndarray:
    """T_0..T_degree at x in [-1, 1]: ``(len(x), degree + 1)``."""
    t = np.empty((x.size, degree + 1))
    t[:, 0] = 1.0
    if degree:
        t[:, 1] = x
    for j in range(2, degree + 1):
        t[:, j] = 2.0 * x * t[:, j - 1] - t[:, j - 2]
    return t


@dataclass
class CoefficientGrid:
    """Chebyshev coefficients of alpha_k(s), beta_k(s), E_phi(s), E_dphi(s) on intervals
    of s = sqrt(a): ``bounds`` ``(M + 1,)``, ``cheb`` ``(M, GRID_DEGREE + 1, 2 kmax + 2)``
    (columns: alpha_0.., beta_0.., E_phi, E_dphi); ``check`` the largest difference, at a
    point between the nodes of every interval, from the direct quadrature (relative to
    sqrt(E) of the coefficient's function)."""

    bounds: np.ndarray
    cheb: np.ndarray
    kmax: int
    check: float
    at_zero: tuple[float, float] = (0.0, 0.0)  # (phi(0), phi'(0)): the exact a = 0 side

    def evaluate(self, s: np.ndarray, columns: slice = slice(None)) -> np.ndarray:
        """``(len(s), 2 kmax + 2)`` (or the given columns): the interpolated columns at
        each s (s <= bounds[-1])."""
        s = np.asarray(s, dtype=np.float64).ravel()
        idx = np.clip(np.searchsorted(self.bounds, s, side="right") - 1, 0, len(self.cheb) - 1)
        lo, hi = self.bounds[idx], self.bounds[idx + 1]
        basis = _cheb_basis(np.clip((2.0 * s - lo - hi) / (hi - lo), -1.0, 1.0), GRID_DEGREE)
        cheb = self.cheb[:, :, columns]
        order = np.argsort(idx, kind="stable")
        bounds = np.searchsorted(idx[order], np.arange(len(self.cheb) + 1))
        out = np.empty((s.size, cheb.shape[2]))
        for m in np.nonzero(np.diff(bounds))[0]:  # the intervals that hold some s
            rows = order[bounds[m] : bounds[m + 1]]
            out[rows] = basis[rows] @ cheb[m]
        return out

    def diagonal(self, s: np.ndarray) -> np.ndarray:
        """``(len(s), 2)``: E_phi and E_dphi at each s (V(a, a, 1) of phi and phi')."""
        e = np.maximum(self.evaluate(s, slice(2 * self.kmax, 2 * self.kmax + 2)), 0.0)
        zero = np.asarray(s).ravel() == 0.0
        e[zero] = np.array(self.at_zero) ** 2
        return e


def _columns(nl: Nonlinearity, s: np.ndarray, kmax: int, strip: float) -> np.ndarray:
    alpha, beta, e_phi, e_dphi = direct_coefficients(nl, s, kmax, strip)
    return np.concatenate([alpha, beta, e_phi[:, None], e_dphi[:, None]], axis=1)


def build_grid(nl: Nonlinearity, smax: float, kmax: int = KMAX, strip: float = 1.5):
    """The :class:`CoefficientGrid` of a nonlinearity for s in [0, smax]."""
    bounds = _interval_bounds(smax)
    M, n = len(bounds) - 1, GRID_DEGREE
    cheb = np.empty((M, n + 1, 2 * kmax + 2))
    # the interpolating Chebyshev series from values at first-kind nodes (a DCT)
    j = np.arange(n + 1)
    theta = np.pi * (j + 0.5) / (n + 1)
    dct = np.cos(np.outer(j, theta)) * (2.0 / (n + 1))
    dct[0] *= 0.5
    nodes = np.concatenate([_cheb_nodes(bounds[m], bounds[m + 1], n) for m in range(M)])
    probe = 0.5 * (bounds[:-1] + bounds[1:]) + 0.013 * (bounds[1:] - bounds[:-1])
    vals = _columns(nl, np.concatenate([nodes, probe]), kmax, strip)
    for m in range(M):
        cheb[m] = dct @ vals[m * (n + 1) : (m + 1) * (n + 1)]
    p0, d0 = _torch_eval(nl, np.zeros(1))
    grid = CoefficientGrid(bounds, cheb, kmax, 0.0, (float(p0[0]), float(d0[0])))
    got, want = grid.evaluate(probe), vals[M * (n + 1) :]
    scale = np.sqrt(
        np.concatenate(
            [np.repeat(want[:, -2:-1], kmax, 1), np.repeat(want[:, -1:], kmax, 1), want[:, -2:]],
            axis=1,
        )
    )
    grid.check = float(np.max(np.abs(got - want) / np.maximum(scale, 1e-300)))
    return grid


# ------------------------------------------------------------------ per-side truncation
def _terms_needed(
    part: torch.Tensor, unresolved: torch.Tensor, thr: torch.Tensor, lr: torch.Tensor
) -> torch.Tensor:
    """``(n, RHO_BINS)`` long: per side and |rho| bin (edge r, ``lr`` = log r^2 per bin),
    the fewest terms m of one parity part c_0.. (powers r^(2m) or r^(2m+1): bounded by
    r^(2m) either way) with

        r^(2m) sum_{j >= m} c_j^2 + r^(2 M) U <= thr,

    the Cauchy-Schwarz half of the tail bound (module docstring); -1 where even m = M (all
    stored terms) fails: the series has not converged there (U: the Parseval remainder).
    Bisection on the predicate, which falls with m; any device."""
    n, M = part.shape
    sq = part * part
    tail = torch.flip(torch.cumsum(torch.flip(sq, [1]), 1), [1])  # tail[:, m] = sum_{j >= m}
    tail = torch.cat([tail, sq.new_zeros(n, 1)], 1)
    thr, u = thr[:, None], unresolved[:, None]

    def ok(m: torch.Tensor) -> torch.Tensor:  # (n, B)
        return torch.gather(tail, 1, m) * torch.exp(lr * m) + u * torch.exp(lr * M) <= thr

    lo = torch.zeros(n, RHO_BINS, dtype=torch.long, device=part.device)
    hi = torch.full_like(lo, M)
    good = ok(hi)
    for _ in range(int(math.ceil(math.log2(M + 1))) + 1):
        mid = (lo + hi) // 2
        sel = ok(mid)
        hi = torch.where(sel, mid, hi)
        lo = torch.where(sel, lo, mid + 1)
    return torch.where(good, hi, -1)


@dataclass
class SideTable:
    """Per-side data of one call (see :func:`side_table`); n sides, M = kmax / 2. Tensors
    on the device of the variances (:func:`side_tensors`) or numpy arrays
    (:func:`side_table`)."""

    terms: np.ndarray | torch.Tensor  # (n, 4, RHO_BINS) int: terms of phi-even, phi-odd,
    # dphi-even, dphi-odd
    coef: np.ndarray | torch.Tensor  # (n, 4, M): the four parity parts' coefficients
    diag: np.ndarray | torch.Tensor  # (n, 2): E_phi = V_phi(a, a, 1), E_dphi = V_dphi(a, a, 1)


_GRID_TENSORS: dict[tuple, tuple[CoefficientGrid, torch.Tensor, torch.Tensor]] = {}


def _grid_tensors(grid: CoefficientGrid, device: torch.device):
    """(bounds, cheb) of a grid as float64 tensors on a device (cached per grid and device)."""
    key = (id(grid), str(device))
    have = _GRID_TENSORS.get(key)
    if have is None or have[0] is not grid:
        as_t = lambda x: torch.as_tensor(x, dtype=torch.float64, device=device)  # noqa: E731
        have = _GRID_TENSORS[key] = (grid, as_t(grid.bounds), as_t(grid.cheb))
    return have[1], have[2]


def side_tensors(grid: CoefficientGrid, var: torch.Tensor, tol: float) -> SideTable:
    """Coefficients, diagonal values and terms per |rho| bin for each variance in ``var``
    (flat), as float64 / long tensors on var's device: each part's truncation is bounded by
    (tol / 4) sqrt(E_a E_b), so the cell's V_phi (two parts) by (tol / 2) sqrt(E_a E_b),
    and V_dphi likewise. The grid's Chebyshev series are summed per interval that holds a
    variance (one matrix product each)."""
    dev = var.device
    s = var.detach().to(torch.float64).reshape(-1).clamp(min=0.0).sqrt()
    bounds, cheb = _grid_tensors(grid, dev)
    if s.numel() and float(s.max()) > grid.bounds[-1] * (1 + 1e-12):
        top, edge = float(s.max()) ** 2, grid.bounds[-1] ** 2
        raise ValueError(f"variance {top:g} is beyond the grid ({edge:g})")
    Mi = cheb.shape[0]
    idx = (torch.searchsorted(bounds, s, right=True) - 1).clamp(0, Mi - 1)
    lo, hi = bounds[idx], bounds[idx + 1]
    x = ((2.0 * s - lo - hi) / (hi - lo)).clamp(-1.0, 1.0)
    basis = [torch.ones_like(x), x]
    for _ in range(2, GRID_DEGREE + 1):
        basis.append(2.0 * x * basis[-1] - basis[-2])
    basis = torch.stack(basis[: GRID_DEGREE + 1], 1)
    cols = s.new_empty(s.numel(), cheb.shape[2])
    for m in torch.unique(idx).tolist():  # the intervals that hold some s
        rows = (idx == m).nonzero().squeeze(1)
        cols[rows] = basis[rows] @ cheb[m]
    K = grid.kmax
    alpha, beta = cols[:, :K], cols[:, K : 2 * K]
    e_phi, e_dphi = cols[:, 2 * K].clamp(min=0.0), cols[:, 2 * K + 1].clamp(min=0.0)
    zero = s == 0.0  # a = 0: u = 0 surely, exact values (no interpolation noise)
    if bool(zero.any()):
        p0, d0 = grid.at_zero
        alpha[zero], beta[zero] = 0.0, 0.0
        alpha[zero, 0], beta[zero, 0] = p0, d0
        e_phi[zero], e_dphi[zero] = p0 * p0, d0 * d0
    lr = torch.as_tensor(2.0 * np.log(rho_bin_edges()), dtype=torch.float64, device=dev)
    terms, coef = [], []
    for c, e in ((alpha, e_phi), (beta, e_dphi)):
        # float noise of the difference: ~1e-15 E; the thresholds below are >= 1e-13 E
        unresolved = (e - (c * c).sum(1)).clamp(min=0.0)
        for part in (c[:, 0::2], c[:, 1::2]):  # V = P_even(rho^2) + rho P_odd(rho^2)
            terms.append(_terms_needed(part, unresolved, (tol / 4.0) * e, lr))
            coef.append(part)
    return SideTable(torch.stack(terms, 1), torch.stack(coef, 1), torch.stack([e_phi, e_dphi], 1))


def side_table(grid: CoefficientGrid, var: np.ndarray, tol: float) -> SideTable:
    """:func:`side_tensors` for a numpy array of variances, as numpy arrays."""
    st = side_tensors(grid, torch.as_tensor(np.asarray(var, dtype=np.float64)), tol)
    return SideTable(st.terms.numpy(), st.coef.numpy(), st.diag.numpy())


# ------------------------------------------------------------------ the 2-D trapezoid rule
def trapezoid_steps(a: float, b: float, rho: float, strip: float, tol: float):
    """Steps (h1, h2) of the 2-D rule of :func:`trapezoid_dual` along w1 and w2: the
    trapezoid rule on the real line errs by ~exp(-2 pi d / h) for an integrand analytic in
    the strip |Im| < d; along w1 phi's argument moves by sqrt(a) p per unit, so d =
    strip / (p max(sqrt a, sqrt b)), the same with q along w2; 0.5 at most (the Gaussian
    weight itself, exp(-2 pi^2 / h^2) < 1e-34)."""
    s = math.sqrt(max(a, b, 0.0))
    r = min(max(rho, -1.0), 1.0)
    p, q = math.sqrt(0.5 * (1.0 + r)), math.sqrt(0.5 * (1.0 - r))
    digits = math.log(1.0 / tol) + 8.0
    h1 = min(0.5, 2.0 * math.pi * strip / max(p * s, 1e-300) / digits)
    h2 = min(0.5, 2.0 * math.pi * strip / max(q * s, 1e-300) / digits)
    return h1, h2


def trapezoid_dual(
    nl: Nonlinearity, a: float, b: float, rho: float, h1: float, h2: float
) -> tuple[float, float]:
    """(V_phi, V_dphi) by the trapezoid rule in the sum/difference basis

        u = sqrt(a) (p w1 + q w2),  v = sqrt(b) (p w1 - q w2),  p, q = sqrt((1 +- rho) / 2)

    (w1, w2 independent standard normals), steps h1, h2 on [-TRAP_RANGE, TRAP_RANGE]: near
    rho = 1 the w2 direction is nearly flat (few nodes), near rho = -1 the w1 direction."""
    r = min(max(rho, -1.0), 1.0)
    p, q = math.sqrt(0.5 * (1.0 + r)), math.sqrt(0.5 * (1.0 - r))
    w = []
    for h in (h1, h2):
        x = np.arange(-math.ceil(TRAP_RANGE / h), math.ceil(TRAP_RANGE / h) + 1) * h
        w.append((x, h * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)))
    (x1, c1), (x2, c2) = w
    sa, sb = math.sqrt(max(a, 0.0)), math.sqrt(max(b, 0.0))
    pu, du = _torch_eval(nl, sa * (p * x1[:, None] + q * x2[None, :]))
    pv, dv = _torch_eval(nl, sb * (p * x1[:, None] - q * x2[None, :]))
    return float(c1 @ (pu * pv) @ c2), float(c1 @ (du * dv) @ c2)


def reference_dual(
    nl: Nonlinearity, a: float, b: float, rho: float, strip: float = 1.5, agree: float = 1e-13
) -> tuple[float, float]:
    """(V_phi, V_dphi) to ~``agree`` (relative to the cell's scale): :func:`trapezoid_dual`
    with both steps halved until two successive results agree (a ValueError if they never
    do). The high-order reference of the error contract; float64 throughout, phi itself
    (no table)."""
    h1, h2 = trapezoid_steps(a, b, rho, strip, 1e-16)
    prev = trapezoid_dual(nl, a, b, rho, h1, h2)
    scale = None
    for _ in range(6):
        h1, h2 = 0.5 * h1, 0.5 * h2
        cur = trapezoid_dual(nl, a, b, rho, h1, h2)
        if scale is None:
            ea = trapezoid_dual(nl, a, a, 1.0, h1, h2)
            eb = trapezoid_dual(nl, b, b, 1.0, h1, h2)
            scale = [math.sqrt(max(ea[k] * eb[k], 1e-300)) for k in range(2)]
        if all(abs(cur[k] - prev[k]) <= agree * scale[k] for k in range(2)):
            return cur
        prev = cur
    raise ValueError(f"reference_dual did not converge at a={a}, b={b}, rho={rho}")


# ------------------------------------------------------------------ qualification, cache
def strip_estimate(grid: CoefficientGrid) -> float:
    """A conservative half-width d of the strip where phi and phi' are analytic (the 2-D
    rule's step rule), from their unit-variance coefficients: a least-squares fit of
    log|c_k| ~ c0 + c1 log k - d sqrt(2k) to the envelope over k in [kmax/8, kmax), on the
    terms above 1e-14 of the scale; times 0.8, clipped to [0.3, 3] (3: entire-like, e.g.
    GELU, whose coefficients reach the float64 floor first)."""
    cols = grid.evaluate(np.array([1.0]))[0]
    K = grid.kmax
    est = []
    for c, e in ((cols[:K], cols[2 * K]), (cols[K : 2 * K], cols[2 * K + 1])):
        env = np.maximum.accumulate(np.abs(c[::-1]))[::-1] / math.sqrt(max(e, 1e-300))
        k = np.arange(K // 8, K)
        keep = env[k] > 1e-14
        if keep.sum() < 16:
            est.append(3.0)
            continue
        k = k[keep]
        X = np.stack([np.ones(k.size), np.log(k), -np.sqrt(2.0 * k)], axis=1)
        est.append(float(np.linalg.lstsq(X, np.log(env[k]), rcond=None)[0][2]))
    return float(np.clip(0.8 * min(est), 0.3, 3.0))


@dataclass
class SmoothDual:
    """The precomputed data of one nonlinearity: its grid (variances up to ``var_max``),
    the strip estimate of its 2-D rule and the tolerance of the contract."""

    nonlinearity: Nonlinearity
    grid: CoefficientGrid
    strip: float
    tol: float

    @property
    def var_max(self) -> float:
        return float(self.grid.bounds[-1] ** 2)


MIN_TOL = 1e-12  # the grid interpolates to ~1e-13; tighter is not verifiable
MAX_VARIANCE = 400.0  # beyond: not verified (the grid's cost grows with sqrt(var))


def _qualify(nl: Nonlinearity, grid: CoefficientGrid, tol: float) -> None:
    """Raise SmoothDualUnsupported unless the unit-variance series of phi and phi' converge
    within kmax terms at rho = 1 and the grid interpolates to tol / 20 (a coefficient error
    e moves a cell by ~sqrt(K) e; softplus measures 1.2e-11 at variances up to 25)."""
    if not np.all(np.isfinite(grid.cheb)):
        raise SmoothDualUnsupported(f"{nl.name}: phi or phi' is not finite on the grid")
    if grid.check > tol / 20.0:
        raise SmoothDualUnsupported(
            f"{nl.name}: coefficients interpolate to {grid.check:.1e} only, above tol / 20 = "
            f"{tol / 20.0:.0e} (not smooth enough for tol = {tol:g})"
        )
    table = side_table(grid, np.array([1.0]), tol)
    if (table.terms[:, :, -1] < 0).any():
        raise SmoothDualUnsupported(
            f"{nl.name}: its Hermite series at unit variance does not converge to {tol:g} "
            f"within {grid.kmax} terms (a kink or a jump in phi or phi')"
        )


_CACHE: dict[tuple, SmoothDual] = {}
_REFUSED: dict[tuple, str] = {}  # the reason, per nonlinearity refused at its first range


def resolve_tol(tol: float | None) -> float:
    """The tolerance of the error contract a caller asked for (the ``series_tol`` of the
    public functions): :data:`DEFAULT_TOL` for None, else ``tol`` itself, which must lie in
    [:data:`MIN_TOL`, 1) (ValueError otherwise)."""
    if tol is None:
        return DEFAULT_TOL
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not MIN_TOL <= tol < 1.0:
        raise ValueError(
            f"series_tol={tol!r} is not valid; expected {MIN_TOL:g} <= series_tol < 1 (the "
            "grid interpolates the coefficients to ~1e-13: tighter is not verifiable)"
        )
    return float(tol)


def prepare_smooth(
    nonlinearity: str | Nonlinearity, var_max: float, tol: float = DEFAULT_TOL
) -> SmoothDual:
    """The :class:`SmoothDual` of a nonlinearity for variances up to ``var_max`` and error
    tolerance ``tol`` (cached per process; a larger var_max rebuilds the grid, ~0.5-1 s; one
    grid serves every tol), or SmoothDualUnsupported with the reason when the contract
    cannot be verified for it."""
    tol = resolve_tol(tol)
    nl = get_nonlinearity(nonlinearity) if isinstance(nonlinearity, str) else nonlinearity
    if nl.closed_form:
        raise SmoothDualUnsupported(f"{nl.name} has a closed form")
    if not var_max <= MAX_VARIANCE:
        raise SmoothDualUnsupported(
            f"{nl.name}: variance {var_max:.3g} is beyond the verified range {MAX_VARIANCE:g}"
        )
    key = (nl.name, id(nl.phi), tol)
    have = _CACHE.get(key)
    if have is not None and have.var_max >= var_max:
        return have
    if key in _REFUSED:  # a nonlinearity refused once is refused at every range
        raise SmoothDualUnsupported(_REFUSED[key])
    # a grid built for another tol (the grid does not depend on it), unless it spans a wider
    # range than asked and interpolates too coarsely for this tol there: then one of this range
    grid = min(
        (sm.grid for k, sm in _CACHE.items() if k[:2] == key[:2] and sm.var_max >= var_max),
        key=lambda g: g.bounds[-1],
        default=None,
    )
    if grid is None or grid.check > tol / 20.0:
        smax = math.sqrt(max(var_max, 16.0)) * 1.25  # headroom: a grown range rebuilds
        with np.errstate(all="ignore"):
            grid = build_grid(nl, smax)
    try:
        _qualify(nl, grid, tol)
    except SmoothDualUnsupported as err:
        if have is None:
            _REFUSED[key] = str(err)
        raise
    _CACHE[key] = SmoothDual(nl, grid, strip_estimate(grid), tol)
    return _CACHE[key]


# ------------------------------------------------------------------ the torch evaluator
def _side_tensors(sm: SmoothDual, v: torch.Tensor):
    """Side data of the distinct values of v as tensors on v's device (computed there:
    :func:`side_tensors`): (terms ``(n, 4, RHO_BINS)`` long, coef ``(n, 4, M)``, diag
    ``(n, 2)`` in v's dtype) and the index of each entry."""
    uniq, inv = torch.unique(v.detach().clamp(min=0.0), return_inverse=True)
    st = side_tensors(sm.grid, uniq, sm.tol)
    return st.terms, st.coef.to(v.dtype), st.diag.to(v.dtype), inv


def torch_dual(
    sm: SmoothDual, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, same=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(V_phi, V_dphi) for tensors a, b, c of broadcastable shapes (no autograd through the
    coefficients: callers use it without grad), on any device: the series of every cell
    with the most terms any cell of the call needs per parity part (more terms only shrink
    the tail), identical states (``same``) from the diagonal values, and the cells whose
    series has not converged by the 2-D trapezoid rule (one at a time, on the CPU: rare)."""
    if max(float(a.max()), float(b.max())) > sm.var_max:
        raise ValueError(f"variance beyond the prepared range {sm.var_max:g}")
    shape = torch.broadcast_shapes(a.shape, b.shape, c.shape)
    if same is not None and same.numel() == 1 and bool(same):  # the diagonal run
        uniq, inv = torch.unique(a.detach().clamp(min=0.0), return_inverse=True)
        d = sm.grid.diagonal(uniq.to("cpu", torch.float64).sqrt().numpy())
        d = torch.as_tensor(d, dtype=a.dtype, device=a.device)
        return d[inv, 0].expand(shape), d[inv, 1].expand(shape)
    ta, ca, da, ia = _side_tensors(sm, a)
    tb, cb, db, ib = _side_tensors(sm, b)
    sa, sb = a.clamp(min=0.0).sqrt(), b.clamp(min=0.0).sqrt()
    ra = torch.where(sa > 0, 1.0 / torch.where(sa > 0, sa, 1.0), 0.0)
    rb = torch.where(sb > 0, 1.0 / torch.where(sb > 0, sb, 1.0), 0.0)
    rho = (c * ra * rb).clamp(-1.0, 1.0).expand(shape)
    # rho = 1 with a = b is the diagonal: its exact value, as for flagged identical states
    at_one = (rho >= 1.0) & (a == b)
    same = at_one if same is None else same.expand(shape) | at_one
    x = rho * rho
    k = torch.clamp((RHO_BINS * (1.0 - torch.sqrt(1.0 - rho.abs()))).long(), max=RHO_BINS - 1)
    ia_c, ib_c = ia.expand(shape), ib.expand(shape)
    bad = torch.zeros(shape, dtype=torch.bool, device=c.device)
    out = []
    for part in range(4):
        need_a, need_b = ta[ia_c, part, k], tb[ib_c, part, k]
        bad |= torch.minimum(need_a, need_b) < 0
        need = torch.maximum(need_a, need_b)
        if same is not None:  # identical states take the diagonal values below
            need = torch.where(same.expand(shape), 0, need)
        kmax = int(need.max()) if need.numel() else 0
        acc = torch.zeros(shape, dtype=c.dtype, device=c.device)
        A, B = ca[ia, part], cb[ib, part]  # a's shape + (M,), b's shape + (M,)
        for m in range(kmax - 1, -1, -1):
            acc = acc * x + A[..., m] * B[..., m]
        out.append(acc)
    if same is not None:
        bad &= ~same.expand(shape)
    v_phi, v_dphi = out[0] + rho * out[1], out[2] + rho * out[3]
    if same is not None:
        same = same.expand(shape)
        v_phi = torch.where(same, da[ia, 0].expand(shape), v_phi)
        v_dphi = torch.where(same, da[ia, 1].expand(shape), v_dphi)
    if bad.any():
        v_phi, v_dphi = v_phi.clone(), v_dphi.clone()
        ae, be = a.expand(shape), b.expand(shape)
        for idx in bad.nonzero().tolist():
            ix = tuple(idx)
            h1, h2 = trapezoid_steps(float(ae[ix]), float(be[ix]), float(rho[ix]), sm.strip, sm.tol)
            p, d = trapezoid_dual(
                sm.nonlinearity, float(ae[ix]), float(be[ix]), float(rho[ix]), h1, h2
            )
            v_phi[ix], v_dphi[ix] = p, d
    return v_phi, v_dphi


_WARNED: set[str] = set()


def warn_unsupported(err: SmoothDualUnsupported) -> None:
    """One line, once per reason: the caller keeps the Gauss-Hermite quadrature dual."""
    if str(err) not in _WARNED:
        _WARNED.add(str(err))
        warnings.warn(
            f"{err}; using the Gauss-Hermite quadrature dual instead (~40 K cells/s compiled)",
            stacklevel=3,
        )


def prepared_or_none(
    nl: Nonlinearity, a: torch.Tensor, b: torch.Tensor, tol: float = DEFAULT_TOL
) -> SmoothDual | None:
    """:func:`prepare_smooth` for the variances of a call (a, b tensors), or None (with
    :func:`warn_unsupported`) where the contract cannot be verified."""
    if nl.closed_form:
        return None
    var_max = max(float(a.max()) if a.numel() else 0.0, float(b.max()) if b.numel() else 0.0)
    try:
        return prepare_smooth(nl, var_max, tol)
    except SmoothDualUnsupported as err:
        warn_unsupported(err)
        return None
