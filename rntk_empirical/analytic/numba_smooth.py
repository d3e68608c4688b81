r"""The smooth-nonlinearity dual of :mod:`rntk_empirical.smooth_dual`, compiled: one packed
table per call, built by compiled code, and an inline per-cell evaluator for the numba
recursion.

:func:`prepare` turns the per-side data of a call (every variance of the rows and columns)
into one float64 array ``tab`` and, per variance, the offset of its block in it (a float,
carried by the recursion in the per-side factor slot of the closed forms). :func:`cell`
evaluates one pair:

    rho = clamp(S r_i r_j, -1, 1)
    identical states (lo = 1):  V_phi = E_phi(i),  V_dphi = E_dphi(i)       (exact)
    else, b = bin of |rho| (upper edge r), and K terms (power pairs) by the level rule below
    (at least HOT: every cell sums the first HOT, stored by every block),
        V = P_even(rho^2) + rho P_odd(rho^2),  P(x) = sum_{m < K} c_m(i) c_m(j) x^m   (Horner,
    four powers a step, the four parts of V_phi and V_dphi as the lanes of one vector:
    :func:`rntk_empirical.nonlinearities.compiled.horner_products4`; in the parity layouts
    below, two parts and two powers per vector)
    where no level pair has converged (K = NOT_CONVERGED): the 2-D trapezoid rule of
    :func:`rntk_empirical.smooth_dual.trapezoid_dual` on a table of phi (cubic Hermite).

The level rule (a per-cell truncation from the product of the two sides' tails). For one
side s and one parity part c_0.. of its coefficients, let T_s(m, r) = (r^(2m) sum_{k >= m}
c_k^2 + r^(2M) U_s) / E_s: the bound of smooth_dual's module docstring on the part's
weighted tail sum_{k >= m} c_k^2 r^(2k), relative to E_s (E_phi or E_dphi of the side; U_s
its Parseval remainder). A side stores, per |rho| bin and for each of the ``LEVELS``
thresholds theta_l = (tol / 4) 10^(LEVEL_DECADES (c - l)), c = LEVELS // 2 (l = 0 the
loosest, theta_c = tol / 4, theta_(L-1-l) = (tol / 4)^2 / theta_l), the fewest terms K_s[l]
with T_s(m, r) <= theta_l for all four parts (NOT_CONVERGED where no m <= M does: theta_l <=
r^(2M) U_s / E_s). By Cauchy-Schwarz a part's truncation error at m terms is at most
sqrt(T_i(m, r) T_j(m, r) E_i E_j), so any m >= max(K_i[l], K_j[L-1-l]) bounds it by
sqrt(theta_l theta_(L-1-l)) sqrt(E_i E_j) = (tol / 4) sqrt(E_i E_j), the same per-part bound
as smooth_dual.side_table (the level pair l = c is its rule, K = max of the two sides'
terms at tol / 4); the cell takes

    K = min over l of max(K_i[l], K_j[L-1-l])   (symmetric in i and j),

so a fast-decaying side (a small variance) that reaches a tight level in few terms lets its
partner stop at a loose one. The LEVELS counts of a bin are packed into one float,
sum_l K[l] 2^(LEVEL_BITS l) (exact: < 2^53).

Blocks have variable length: a side stores n = the most terms its level ``STORE_LEVEL``
needs over the bins up to |rho| <= ``STORE_TO_RHO``, so that in a cell where it is the
fast-decaying side its tight level is at hand. A cell that needs K > n terms of a side (its
partner decays slower, or |rho| is beyond) evaluates the missing terms from the coefficient
grid itself (the Chebyshev series of :class:`rntk_empirical.smooth_dual.CoefficientGrid`,
copied into ``tab``: the values side_table gives, ~70 flops per term). A side's level
counts come from a fine grid of s = sqrt(a), once per coefficient grid and tolerance
(:func:`fine_counts`: the larger count of the two fine points around s); the blocks are
written by a compiled loop, in the order of the variances passed: callers pass them in the
order the recursion reads them.

Parity layouts. Every registered smooth nonlinearity has a symmetry that zeroes half of the
four parts: tanh and the logistic sigmoid (phi - phi(0) odd, phi' even) have no phi-even
part past alpha_0 and no dphi-odd part (layout ODD); softplus, swish and GELU (phi minus
x phi'(0) even, phi' - phi'(0) odd) no phi-odd part past alpha_1 and no dphi-even part past
beta_0 (EVEN). A table takes such a layout where the vanishing coefficients are below
PARITY_BELOW of the largest in the whole grid (they are quadrature noise there), and a unit
of a block is then a slot of two power pairs, 2m and 2m + 1, of the two parts that remain:

    ODD:   lanes (alpha_4m+1, beta_4m, alpha_4m+3, beta_4m+2), summed by Horner in y = rho^4:
           V_phi = alpha_0(i) alpha_0(j) + rho (L0 + rho^2 L2),  V_dphi = L1 + rho^2 L3
    EVEN:  lanes (alpha_4m, beta_4m+1, alpha_4m+2, beta_4m+3):
           V_phi = alpha_1(i) alpha_1(j) rho + L0 + rho^2 L2,
           V_dphi = beta_0(i) beta_0(j) + rho (L1 + rho^2 L3)

(alpha_k, beta_k: the Hermite coefficients of phi and phi' of a side; the lone alpha and
beta in the block's head). Half the loads, products and bytes per power: the hot part holds
``HOT_SLOTS`` slots (2 HOT_SLOTS powers) for the cost of HOT_SLOTS power pairs, so fewer
cells take the (mispredicted) branch to the cold part. A level count K (power pairs) is
ceil(K / 2) slots. The generic layout (a units is a power pair, the four parts as lanes)
serves any other smooth nonlinearity.

Hot and cold terms: a side's block holds its first ``HOT`` units (``HOT_SLOTS`` in a parity
layout), the rest of its n sit in the cold part after all blocks. The cells of one step of
the recursion read the blocks of consecutive sides, so these are a few cache lines each and
adjacent (a tanh side stores ~110 power pairs, 3.5 KiB, of which a cell reads ~13: with
whole blocks side by side every cell read a new page, and the cell loop waited on memory).

Layout of ``tab``: [-1 (tells it from a quadrature table), layout (GENERIC, ODD, EVEN), 0,
0, 0, P, strip, digits, G, GK (power pairs per part in the grid), GM (grid intervals), GD
(Chebyshev degree + 1)] (``HEAD`` values), then one block per side: [E_phi, E_dphi, n
(units stored), grid interval (-1: a = 0), Chebyshev coordinate, packed level counts per
bin (RHO_BINS), cold pointer c, lone alpha, lone beta (parity layouts; else 0), units
(min(n, hot), 4): phi-even, phi-odd, dphi-even, dphi-odd of each power pair, or the slots
above] (``SIDE_HEAD`` values before the units), then the cold part (unit m >= hot of a side
at tab[c + 4 m]), then at G the grid (GM, GK, 4, GD), then at P the phi table [x0, 1/h, n,
(phi, phi', phi'') at x0 + k h].
"""

from __future__ import annotations

import math

import numpy as np

from rntk_empirical.nonlinearities.compiled import (
    FASTMATH,
    horner_products4,
    njit,
    prange,
    table_lookup,
)
from rntk_empirical.smooth_dual import (
    DEFAULT_TOL,
    RHO_BINS,
    TRAP_RANGE,
    SmoothDual,
    SmoothDualUnsupported,
    prepare_smooth,
    resolve_tol,
    rho_bin,
    rho_bin_edges,
    warn_unsupported,
)

NB = RHO_BINS
HEAD = 12
LEVEL_AT = 5  # a block's offset of its packed level counts, one per |rho| bin
COLD = LEVEL_AT + NB  # a block's offset of the cold pointer, after the level counts
CA_AT = COLD + 1  # a block's offset of the parity layouts' lone alpha (alpha_0 or alpha_1)
CB_AT = CA_AT + 1  # and of their lone beta (beta_0 of the even layout)
SIDE_HEAD = CB_AT + 1  # E_phi, E_dphi, n, interval, coordinate, levels, cold, lone alpha, beta
# A side's first HOT power pairs sit in its block, the rest in the cold part (module
# docstring). 16 covers ~75% of tanh's cells (mean 12.7 terms, tanh last N=2000 T=50).
HOT = 16
HOT_SLOTS = 12  # the parity layouts' hot slots: two power pairs each (24 powers; below)
# The parity layouts (module docstring). ODD: phi - phi(0) odd, phi' even (tanh, the logistic
# sigmoid): the even Hermite coefficients alpha_k of phi past alpha_0 and the odd beta_k of
# phi' vanish. EVEN: phi minus its linear part even, phi' - phi'(0) odd (softplus, swish,
# GELU): the odd alpha_k past alpha_1 and the even beta_k past beta_0 vanish. In the grid they
# are quadrature noise (1e-16 of the largest coefficient; softplus 6e-13); a layout is taken
# where all of them are below PARITY_BELOW of the largest, and they are left out.
GENERIC, ODD, EVEN = 0, 1, 2
PARITY_BELOW = 1e-11
# The level rule (module docstring): LEVELS thresholds LEVEL_DECADES decades apart around
# tol / 4, a side storing the terms of its level STORE_LEVEL. Measured on the cells of tanh
# last N=300 T=50 (the recursion's order, one thread, 2-core machine under load): the grid's
# missing terms per cell 0.79 -> 0.08 (storing the tightest level: 0.02, the table 1.3x
# larger again, no faster), mean terms per cell 13.3 -> 12.8, 1.14-1.32x faster over four
# runs (with Horner in x^2), the table 1.36-1.47x (254 -> 373 MiB at N=2000 T=50).
LEVELS = 5
LEVEL_DECADES = 3.0
LEVEL_BITS = 10
NOT_CONVERGED = 2**LEVEL_BITS - 1  # > M = KMAX / 2 = 512: a count never reached
STORE_LEVEL = LEVELS // 2 + 1  # LEVEL_DECADES below tol / 4
# A side stores the terms of its own cells up to |rho| <= STORE_TO_RHO (beyond, and where the
# partner needs more, the cell evaluates the grid: ~70 flops per missing term). 0.99, not 0.95:
# states with a large common mean (sigmoid, softplus) put most cells above 0.95; measured on
# idle cores with whole blocks side by side (before HOT; avg N=64 T=150): softplus 19.6 ->
# 10.2 s, sigmoid 6.2 -> 5.0 s, tanh last N=1000 T=50 5.8 -> 4.3 s, tanh last N=2000 T=50
# 16 -> 18 s (+70 MiB of table).
STORE_TO_RHO = 0.99
FINE_PER_INTERVAL = 64  # points per grid interval at which the level counts are taken
TABLE_MAX_BYTES = 2**31  # a larger table stores a looser level; over it at level 0: unsupported
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SIDES_PER_TASK = 256


def _store_bins() -> int:
    """Bins 0.. this one (exclusive) set a side's stored length."""
    return int(np.searchsorted(rho_bin_edges(), STORE_TO_RHO) + 1)


@njit(inline="always")
def _basis(x, out):
    out[0] = 1.0
    if out.shape[0] > 1:
        out[1] = x
    for d in range(2, out.shape[0]):
        out[d] = 2.0 * x * out[d - 1] - out[d - 2]


@njit(inline="always")
def _locate(s, bounds):
    """(interval, Chebyshev coordinate) of s in the grid (as CoefficientGrid.evaluate)."""
    M = bounds.shape[0] - 1
    lo_i, hi_i = 0, M
    while hi_i - lo_i > 1:  # the last bound <= s (searchsorted right, minus 1), clipped
        mid = (lo_i + hi_i) // 2
        if bounds[mid] <= s:
            lo_i = mid
        else:
            hi_i = mid
    lo, hi = bounds[lo_i], bounds[lo_i + 1]
    x = min(max((2.0 * s - lo - hi) / (hi - lo), -1.0), 1.0)
    return lo_i, x


@njit(parallel=True, cache=True)
def _side_terms(s, bounds, cheb, kmax, thresholds, pw, at_zero, terms):
    """Per point u (s[u] = sqrt(a); :func:`fine_counts`): the coefficients of the grid, the Parseval
    remainders, and per |rho| bin b and level l the fewest terms m of each parity part with
    r^(2m) sum_{j >= m} c_j^2 + r^(2 M) U <= thresholds[l] E (smooth_dual._terms_needed at
    each level; here a scan upward in m and bins, the count growing with both; ``pw[b, m]``
    = r_b^(2m), m <= M); terms[u, b, l] the most over the four parts (NOT_CONVERGED if one
    has not converged; :func:`stored_terms` reads a side's stored length from them)."""
    n, D1, C = s.shape[0], cheb.shape[1], cheb.shape[2]
    KH = kmax // 2
    L = thresholds.shape[0]
    tasks = (n + _SIDES_PER_TASK - 1) // _SIDES_PER_TASK
    for task in prange(tasks):
        cols = np.empty(C)
        basis = np.empty(D1)
        tail = np.empty((4, KH + 1))
        for u in range(task * _SIDES_PER_TASK, min(n, (task + 1) * _SIDES_PER_TASK)):
            if s[u] == 0.0:  # a = 0: u = 0 surely, exact values
                cols[:] = 0.0
                cols[0] = at_zero[0]
                cols[kmax] = at_zero[1]
                cols[2 * kmax] = at_zero[0] * at_zero[0]
                cols[2 * kmax + 1] = at_zero[1] * at_zero[1]
            else:
                mi, x = _locate(s[u], bounds)
                _basis(x, basis)
                cols[:] = 0.0
                for d in range(D1):
                    t = basis[d]
                    for c in range(C):
                        cols[c] += t * cheb[mi, d, c]
            for b in range(NB):
                for lv in range(L):
                    terms[u, b, lv] = 0
            # the sums side by side, each in its own order: a chain of dependent additions
            # each, so interleaved they take the time of one
            s0, s1 = 0.0, 0.0
            for k in range(kmax):
                s0 += cols[k] ** 2
                s1 += cols[kmax + k] ** 2
            for q in range(4):  # q = 2 f + par
                tail[q, KH] = 0.0
            for m in range(KH - 1, -1, -1):
                for q in range(4):
                    c = cols[(q // 2) * kmax + 2 * m + q % 2]
                    tail[q, m] = tail[q, m + 1] + c * c
            for f in range(2):
                e = max(cols[2 * kmax + f], 0.0)
                U = max(e - (s0 if f == 0 else s1), 0.0)
                for par in range(2):
                    q = 2 * f + par
                    for lv in range(L):
                        thr = thresholds[lv] * e
                        m = 0
                        for b in range(NB):
                            room = thr - U * pw[b, KH]
                            if not room >= 0.0:  # tail[., KH] = 0: m <= KH meets it iff room >= 0
                                terms[u, b, lv] = NOT_CONVERGED
                                continue
                            while tail[q, m] * pw[b, m] > room:
                                m += 1
                            if terms[u, b, lv] != NOT_CONVERGED and m > terms[u, b, lv]:
                                terms[u, b, lv] = m


@njit(inline="always")
def _pair_at(tab, o, m, hot):
    """Offset in ``tab`` of unit m (a power pair, or a slot of two in the odd layout) of the
    side whose block is at o: in the block below ``hot`` (HOT or HOT_SLOTS), in the side's
    cold part from there on (its cold pointer c: unit m at c + 4 m)."""
    return o + SIDE_HEAD + 4 * m if m < hot else int(tab[o + COLD]) + 4 * m


@njit(parallel=True, cache=True)
def _write_blocks(
    s, bounds, cheb, kmax, at_zero, packed, fine, n_store, offsets, cold, layout, tab
):
    """Each side's block at its offset and its units past the hot ones at its cold offset
    (layouts in the module docstring); ``n_store`` in units (slots in the parity layouts),
    the level counts ``packed[fine[u]]`` (:func:`fine_counts`)."""
    n, D1 = s.shape[0], cheb.shape[1]
    hot = HOT if layout == GENERIC else HOT_SLOTS
    # the columns of unit m's four lanes (alpha: phi's, beta: phi''s Hermite coefficients)
    # and of the lone alpha and beta (-1: none)
    if layout == ODD:  # alpha_4m+1, beta_4m, alpha_4m+3, beta_4m+2; alpha_0
        k0, k1, k2, k3, ka, kb, step = 1, kmax, 3, kmax + 2, 0, -1, 4
    elif layout == EVEN:  # alpha_4m, beta_4m+1, alpha_4m+2, beta_4m+3; alpha_1, beta_0
        k0, k1, k2, k3, ka, kb, step = 0, kmax + 1, 2, kmax + 3, 1, kmax, 4
    else:  # alpha_2m, alpha_2m+1, beta_2m, beta_2m+1
        k0, k1, k2, k3, ka, kb, step = 0, 1, kmax, kmax + 1, -1, -1, 2
    tasks = (n + _SIDES_PER_TASK - 1) // _SIDES_PER_TASK
    for task in prange(tasks):
        basis = np.empty(D1)
        for u in range(task * _SIDES_PER_TASK, min(n, (task + 1) * _SIDES_PER_TASK)):
            o = offsets[u]
            ns = n_store[u]
            for b in range(NB):
                tab[o + LEVEL_AT + b] = packed[fine[u], b]
            tab[o + 2] = ns
            tab[o + COLD] = cold[u] - 4 * hot  # unit m >= hot at tab[cold + 4 m]
            c0 = o + SIDE_HEAD
            if s[u] == 0.0:  # alpha_0 = phi(0) and beta_0 = phi'(0), nothing above
                tab[o] = at_zero[0] * at_zero[0]
                tab[o + 1] = at_zero[1] * at_zero[1]
                tab[o + 3] = -1.0
                tab[o + 4] = 0.0
                tab[o + CA_AT] = at_zero[0] if ka == 0 else 0.0
                tab[o + CB_AT] = at_zero[1] if kb == kmax else 0.0
                for m in range(ns):
                    at = _pair_at(tab, o, m, hot)
                    for p in range(4):
                        tab[at + p] = 0.0
                if k0 == 0:  # alpha_0 in lane 0 of unit 0
                    tab[c0] = at_zero[0]
                if k1 == kmax:  # beta_0 in lane 1 (odd) or lane 2 (generic) of unit 0
                    tab[c0 + 1] = at_zero[1]
                elif k2 == kmax:
                    tab[c0 + 2] = at_zero[1]
                continue
            mi, x = _locate(s[u], bounds)
            _basis(x, basis)
            tab[o + 3] = mi
            tab[o + 4] = x
            for f in range(4):  # E_phi, E_dphi, the lone alpha and beta
                col = 2 * kmax + f if f < 2 else (ka if f == 2 else kb)
                e = 0.0
                if col >= 0:
                    for d in range(D1):
                        e += basis[d] * cheb[mi, d, col]
                if f < 2:
                    tab[o + f] = max(e, 0.0)
                else:
                    tab[o + (CA_AT if f == 2 else CB_AT)] = e
            for m in range(ns):
                at = _pair_at(tab, o, m, hot)
                k = step * m
                v0, v1, v2, v3 = 0.0, 0.0, 0.0, 0.0  # four independent sums, each in d order
                for d in range(D1):
                    t = basis[d]
                    v0 += t * cheb[mi, d, k + k0]
                    v1 += t * cheb[mi, d, k + k1]
                    v2 += t * cheb[mi, d, k + k2]
                    v3 += t * cheb[mi, d, k + k3]
                tab[at] = v0
                tab[at + 1] = v1
                tab[at + 2] = v2
                tab[at + 3] = v3


def _powers(M: int) -> np.ndarray:
    """``(RHO_BINS, M + 1)``: r_b^(2m) at the upper edge r_b of each |rho| bin."""
    return np.exp(np.outer(2.0 * np.log(rho_bin_edges()), np.arange(M + 1)))


def level_thresholds(tol: float) -> np.ndarray:
    """``(LEVELS,)``: theta_l = (tol / 4) 10^(LEVEL_DECADES (LEVELS // 2 - l)), loosest first."""
    return (tol / 4.0) * 10.0 ** (LEVEL_DECADES * (LEVELS // 2 - np.arange(LEVELS)))


_GRIDS: dict[int, tuple[SmoothDual, np.ndarray, np.ndarray, int]] = {}


def _grid_arrays(sm: SmoothDual) -> tuple[np.ndarray, np.ndarray, int]:
    """(cheb ``(M, D + 1, 2 kmax + 2)`` contiguous, pairs ``(M, kmax / 2, 4, D + 1)``: the
    grid of the four parity parts for the cells' on-the-fly terms, the layout: GENERIC, ODD
    or EVEN, by PARITY_BELOW), cached per grid."""
    have = _GRIDS.get(id(sm.grid))
    if have is None or have[0].grid is not sm.grid:
        cheb = np.ascontiguousarray(sm.grid.cheb)
        K = sm.grid.kmax
        parts = [cheb[:, :, 0:K:2], cheb[:, :, 1:K:2], cheb[:, :, K : 2 * K : 2]]
        parts.append(cheb[:, :, K + 1 : 2 * K : 2])
        pairs = np.ascontiguousarray(np.stack(parts, axis=1).transpose(0, 3, 1, 2))
        top = np.abs(cheb[:, :, : 2 * K]).max()
        vanish_odd = max(np.abs(cheb[:, :, 2:K:2]).max(), np.abs(parts[3]).max())
        vanish_even = max(np.abs(cheb[:, :, 3:K:2]).max(), np.abs(parts[2][:, :, 1:]).max())
        layout = GENERIC
        if vanish_odd <= PARITY_BELOW * top:
            layout = ODD
        elif vanish_even <= PARITY_BELOW * top:
            layout = EVEN
        have = _GRIDS[id(sm.grid)] = (sm, cheb, pairs, layout)
    return have[1], have[2], have[3]


_PHI_TABLES: dict[tuple, tuple[SmoothDual, np.ndarray]] = {}


def _phi_table(sm: SmoothDual, var_max: float) -> np.ndarray:
    """The phi table of the 2-D rule (numba_backend.quadrature_table) for variances up to
    the power of 2 above 1.1 var_max, cached per nonlinearity and power."""
    from rntk_empirical.analytic.numba_backend import quadrature_table

    top = 2.0 ** math.ceil(math.log2(max(1.1 * var_max, 1.0)))
    key = (sm.nonlinearity.name, id(sm.nonlinearity.phi), top)
    have = _PHI_TABLES.get(key)
    if have is None or have[0] is not sm:
        have = _PHI_TABLES[key] = (sm, quadrature_table(sm.nonlinearity.name, top, 64))
    return have[1]


def prepare(
    nonlinearity: str, variances: list[np.ndarray], tol: float = DEFAULT_TOL
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(tab, offsets): the packed table of a call and, for each array of ``variances``, the
    float offsets of its entries' blocks (same shape; blocks in the arrays' C order, so
    pass them in the order the recursion reads them). Raises
    :class:`~rntk_empirical.smooth_dual.SmoothDualUnsupported` (with the reason) for a
    nonlinearity whose contract cannot be verified or a table over TABLE_MAX_BYTES."""
    flat = [np.maximum(np.asarray(v, dtype=np.float64).ravel(), 0.0) for v in variances]
    # block 0 (at HEAD): a valid side for padding and scratch cells
    allv = np.concatenate([np.ones(1), *flat])
    var_max = float(allv.max())
    sm = prepare_smooth(nonlinearity, var_max, tol)
    grid = sm.grid
    if math.sqrt(var_max) > grid.bounds[-1] * (1 + 1e-12):
        raise ValueError(f"variance {var_max:g} is beyond the grid ({grid.bounds[-1] ** 2:g})")
    cheb, pairs, layout = _grid_arrays(sm)
    hot = HOT if layout == GENERIC else HOT_SLOTS
    s = np.sqrt(allv)
    s_fine, terms, packed = fine_counts(sm, tol)
    fine = np.clip(np.searchsorted(s_fine, s), 1, s_fine.size - 1) - 1  # s in (s_k, s_k+1]
    at_zero = np.array(grid.at_zero, dtype=np.float64)
    phi_tab = _phi_table(sm, var_max)
    q = int(phi_tab[0])
    # a table over the cap stores the terms of a looser level (the cells take the rest from
    # the grid: the same values, slower) before the call gives up the series
    for level in range(STORE_LEVEL, -1, -1):
        n_store = stored_terms(terms, level)[fine]
        if layout != GENERIC:  # units: slots of two power pairs
            n_store = np.maximum((n_store + 1) // 2, HOT_SLOTS)
        sizes = SIDE_HEAD + 4 * np.minimum(n_store, hot)
        cold_sizes = 4 * np.maximum(n_store - hot, 0)
        C = HEAD + int(sizes.sum())
        G = C + int(cold_sizes.sum())
        P = G + pairs.size
        total = P + 3 + (phi_tab.size - 4 - 2 * q)
        if total * 8 <= TABLE_MAX_BYTES:
            break
    else:
        raise SmoothDualUnsupported(f"the series table would take {total * 8 / 2**30:.1f} GiB")
    offsets = HEAD + np.concatenate([[0], np.cumsum(sizes[:-1])])
    cold = C + np.concatenate([[0], np.cumsum(cold_sizes[:-1])])
    tab = np.empty(total)
    tab[:HEAD] = [-1.0, float(layout), 0.0, 0.0, 0.0, P, sm.strip,
                  math.log(1.0 / tol) + 8.0, G, pairs.shape[1], pairs.shape[0], pairs.shape[3]]
    _write_blocks(
        s, grid.bounds, cheb, grid.kmax, at_zero, packed, fine, n_store, offsets, cold, layout,
        tab,
    )
    tab[G:P] = pairs.ravel()
    tab[P : P + 3] = phi_tab[1:4]  # the phi table of quadrature_table: [Q, x0, 1/h, n, z, w, body]
    tab[P + 3 :] = phi_tab[4 + 2 * q :]
    out, start = [], 1
    off = offsets.astype(np.float64)
    for v, f in zip(variances, flat):
        out.append(off[start : start + f.size].reshape(np.shape(v)))
        start += f.size
    return tab, out


_FINE: dict[tuple[int, float], tuple[SmoothDual, np.ndarray, np.ndarray, np.ndarray]] = {}


def fine_counts(sm: SmoothDual, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s_fine ``(F,)``, terms ``(F - 1, RHO_BINS, LEVELS)``, packed ``(F - 1, RHO_BINS)``):
    the level counts of :func:`_side_terms` at FINE_PER_INTERVAL + 1 equispaced points of
    s = sqrt(a) in each interval of the grid (s = 0 first, exact), and for each fine interval
    the larger of its two ends' counts (a side with s in (s_k, s_k+1] takes interval k's),
    packed for the blocks. Cached per grid and tolerance: a call reads its sides' counts
    from here instead of evaluating ~2 kmax columns per side (tanh ``last`` N=2000 T=50:
    0.8 s of a 4.4 s call on 2 cores).

    The counts grow with s, so the larger end bounds the interior. Measured against each
    side's own counts (tests/test_smooth_dual.py, 400 variances up to 12 for tanh and
    softplus, and 5 x 10^4 of tanh ``last`` for all five): never below them at the levels
    down to tol / 4 (2.5e-10 of E), nor at 2.5e-13 of E in the bins that set a side's stored
    length (|rho| <= STORE_TO_RHO); 95-99% equal. Below in the top two bins (|rho| > 0.993)
    at 2.5e-13 and 2.5e-16 of E only (0.01-0.06% of the counts), where the Parseval remainder
    U, a difference of interpolated values, is rounding of that size and a count flips
    between a number and NOT_CONVERGED from one s to the next: noise on either side."""
    key = (id(sm.grid), float(tol))
    have = _FINE.get(key)
    if have is None or have[0].grid is not sm.grid:
        grid = sm.grid
        cheb, _, _ = _grid_arrays(sm)
        b = grid.bounds
        s_fine = np.unique(np.concatenate(
            [np.linspace(b[k], b[k + 1], FINE_PER_INTERVAL + 1) for k in range(b.size - 1)]
        ))
        points = np.empty((s_fine.size, NB, LEVELS), np.int64)
        _side_terms(
            s_fine, b, cheb, grid.kmax, level_thresholds(tol), _powers(grid.kmax // 2),
            np.array(grid.at_zero, dtype=np.float64), points,
        )
        terms = np.maximum(points[:-1], points[1:])
        shifts = LEVEL_BITS * np.arange(LEVELS)
        packed = (terms << shifts).sum(axis=2).astype(np.float64)  # exact: < 2^53
        have = _FINE[key] = (sm, s_fine, terms, packed)
    return have[1], have[2], have[3]


def stored_terms(terms: np.ndarray, level: int) -> np.ndarray:
    """``(n,)`` terms each side stores at ``level`` (STORE_LEVEL, or a looser one for a table
    over the cap): the most of its converged bins up to STORE_TO_RHO, at least HOT (every
    cell sums the first HOT: :func:`cell`); ``terms`` ``(n, RHO_BINS, LEVELS)``."""
    t = terms[:, : _store_bins(), level]
    return np.maximum(HOT, np.where(t != NOT_CONVERGED, t, 0).max(axis=1))


def cell_terms(
    tab: np.ndarray, oa: np.ndarray, ob: np.ndarray, rho: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(K, n) per cell (flat arrays of block offsets and correlations): the terms the level
    rule of :func:`cell` takes (NOT_CONVERGED: the 2-D rule) and the fewer stored by its two
    sides (K > n: the grid gives the rest)."""
    oa, ob = np.asarray(oa).astype(np.int64), np.asarray(ob).astype(np.int64)
    b = rho_bin(np.minimum(np.abs(rho), 1.0))
    wi = tab[oa + LEVEL_AT + b].astype(np.int64)
    wj = tab[ob + LEVEL_AT + b].astype(np.int64)
    K = np.full(wi.shape, NOT_CONVERGED)
    for lv in range(LEVELS):
        ki = (wi >> (LEVEL_BITS * lv)) & NOT_CONVERGED
        kj = (wj >> (LEVEL_BITS * (LEVELS - 1 - lv))) & NOT_CONVERGED
        K = np.minimum(K, np.maximum(ki, kj))
    n = np.minimum(tab[oa + 2], tab[ob + 2]).astype(np.int64)
    return K, 2 * n if tab[1] != GENERIC else n


@njit(inline="always", fastmath=FASTMATH)
def _phi_lookup(tab, x):
    """(phi(x), phi'(x)) from the table at tab[P:] (cubic Hermite; x clamped to it)."""
    P = int(tab[5])
    return table_lookup(tab, x, P + 3, tab[P], tab[P + 1], int(tab[P + 2]))


@njit(fastmath=FASTMATH, cache=True)
def trapezoid(tab, sa, sb, rho):
    """The 2-D trapezoid rule of smooth_dual.trapezoid_dual (steps of
    smooth_dual.trapezoid_steps from the table's strip and digits), phi from the table."""
    strip, digits = tab[6], tab[7]
    s = max(sa, sb)
    p = math.sqrt(0.5 * (1.0 + rho))
    q = math.sqrt(max(0.5 * (1.0 - rho), 0.0))
    h1 = min(0.5, 2.0 * math.pi * strip / max(p * s, 1e-300) / digits)
    h2 = min(0.5, 2.0 * math.pi * strip / max(q * s, 1e-300) / digits)
    n1 = int(math.ceil(TRAP_RANGE / h1))
    n2 = int(math.ceil(TRAP_RANGE / h2))
    vp, vd = 0.0, 0.0
    for i in range(-n1, n1 + 1):
        w1 = i * h1
        c1 = h1 * _INV_SQRT_2PI * math.exp(-0.5 * w1 * w1)
        ip, idd = 0.0, 0.0
        for j in range(-n2, n2 + 1):
            w2 = j * h2
            c2 = h2 * _INV_SQRT_2PI * math.exp(-0.5 * w2 * w2)
            pu, du = _phi_lookup(tab, sa * (p * w1 + q * w2))
            pv, dv = _phi_lookup(tab, sb * (p * w1 - q * w2))
            ip += c2 * pu * pv
            idd += c2 * du * dv
        vp += c1 * ip
        vd += c1 * idd
    return vp, vd


@njit(inline="always", fastmath=FASTMATH)
def _grid_pair(tab, o, m):
    """The four parity parts of power pair m of the side at o from the grid (Clenshaw's
    sum of its Chebyshev series at the side's coordinate; zeros for a = 0)."""
    mi = int(tab[o + 3])
    if mi < 0:
        return 0.0, 0.0, 0.0, 0.0
    x2 = 2.0 * tab[o + 4]
    GK, GD = int(tab[9]), int(tab[11])
    g = int(tab[8]) + (mi * GK + m) * 4 * GD
    a1, a2, b1, b2, c1, c2, d1, d2 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    for d in range(GD - 1, 0, -1):
        a1, a2 = tab[g + d] + x2 * a1 - a2, a1
        b1, b2 = tab[g + GD + d] + x2 * b1 - b2, b1
        c1, c2 = tab[g + 2 * GD + d] + x2 * c1 - c2, c1
        d1, d2 = tab[g + 3 * GD + d] + x2 * d1 - d2, d1
    h = 0.5 * x2
    return (
        tab[g] + h * a1 - a2,
        tab[g + GD] + h * b1 - b2,
        tab[g + 2 * GD] + h * c1 - c2,
        tab[g + 3 * GD] + h * d1 - d2,
    )


@njit(inline="always", fastmath=FASTMATH)
def _grid_unit(tab, o, m, layout):
    """The four lanes of unit m of the side at o from the grid: power pair m, or in a parity
    layout the slot of power pairs 2m and 2m + 1 (the parts that do not vanish)."""
    if layout == GENERIC:
        return _grid_pair(tab, o, m)
    a0, a1, a2, a3 = _grid_pair(tab, o, 2 * m)
    b0, b1, b2, b3 = _grid_pair(tab, o, 2 * m + 1)
    if layout == ODD:
        return a1, a2, b1, b2
    return a0, a3, b0, b3


@njit(fastmath=FASTMATH, cache=True)
def _high_terms(tab, i, j, lo, hi, x, layout):
    """Horner in x over the units hi-1 .. lo (lo: the fewer in the two sides' blocks) of the
    four lanes, reading stored coefficients (the block's, then the cold part's) or
    evaluating the grid."""
    ni, nj = int(tab[i + 2]), int(tab[j + 2])
    hot = HOT if layout == GENERIC else HOT_SLOTS
    pe, po, de, do = 0.0, 0.0, 0.0, 0.0
    for m in range(hi - 1, lo - 1, -1):
        if m < ni:
            u = _pair_at(tab, i, m, hot)
            a0, a1, a2, a3 = tab[u], tab[u + 1], tab[u + 2], tab[u + 3]
        else:
            a0, a1, a2, a3 = _grid_unit(tab, i, m, layout)
        if m < nj:
            u = _pair_at(tab, j, m, hot)
            b0, b1, b2, b3 = tab[u], tab[u + 1], tab[u + 2], tab[u + 3]
        else:
            b0, b1, b2, b3 = _grid_unit(tab, j, m, layout)
        pe = pe * x + a0 * b0
        po = po * x + a1 * b1
        de = de * x + a2 * b2
        do = do * x + a3 * b3
    return pe, po, de, do


@njit(inline="always")
def _level_terms(wi, wj):
    """K = min over l of max(K_i[l], K_j[L-1-l]) from two packed level counts (module
    docstring; NOT_CONVERGED where no pair of levels has converged)."""
    K = NOT_CONVERGED
    for lv in range(LEVELS):
        ki = (wi >> (LEVEL_BITS * lv)) & NOT_CONVERGED
        kj = (wj >> (LEVEL_BITS * (LEVELS - 1 - lv))) & NOT_CONVERGED
        K = min(K, max(ki, kj))
    return K


_U1, _U2 = np.uint64(1), np.uint64(2)
_UCOLD = np.uint64(COLD)
_UCA = np.uint64(CA_AT)
_UCB = np.uint64(CB_AT)


@njit(inline="always", fastmath=FASTMATH)
def cell(S, Q, ri, rj, fi, fj, oi, oj, lo, tab):
    """(V_phi, V_dphi * Q) of one pair: covariance S, tangent Q, per-side factors r = 1/sqrt(a)
    (0 if a = 0), f = sqrt(a) and block offsets o (:func:`prepare`); lo = 1.0 marks
    identical states (rho = 1 exactly), else -1.0.

    The first HOT power pairs are summed before the level rule is read, a fixed count
    (every block stores them): the cell's first branch on its term count comes after its
    main work, so a mispredicted one does not discard it (tanh last N=300 T=50, one
    thread: 64-88 against 88-101 ns per cell; docs/analytic_backends.md has the API's).
    Past HOT, V += x^HOT (the sum from HOT)."""
    i = np.uint64(oi)  # unsigned: no wraparound check on the loads (~60 integer instructions)
    j = np.uint64(oj)
    if lo >= 1.0:
        return tab[i], tab[i + _U1] * Q
    rho = min(max(S * ri * rj, -1.0), 1.0)
    x = rho * rho
    layout = int(tab[1])  # the same for every cell of a call: predicted branches
    odd = layout != GENERIC  # units of two power pairs
    y = x * x if odd else x  # the Horner variable of a unit
    y2 = y * y
    ci, cj = int(i) + SIDE_HEAD, int(j) + SIDE_HEAD
    if odd:
        pe, po, de, do = horner_products4(tab, ci, cj, 0, HOT_SLOTS, y, y2, 0.0, 0.0, 0.0, 0.0)
    else:
        pe, po, de, do = horner_products4(tab, ci, cj, 0, HOT, y, y2, 0.0, 0.0, 0.0, 0.0)
    b = np.uint64(min(NB - 1, int(NB * (1.0 - math.sqrt(1.0 - abs(rho))))) + LEVEL_AT)
    K = _level_terms(int(tab[i + b]), int(tab[j + b]))
    if K > (2 * HOT_SLOTS if odd else HOT):
        if K == NOT_CONVERGED:  # no pair of levels has converged in this bin
            vp, vd = trapezoid(tab, fi, fj, rho)
            return vp, vd * Q
        hot = HOT_SLOTS if odd else HOT
        k = (K + 1) // 2 if odd else K  # units
        n = min(k, int(min(tab[i + _U2], tab[j + _U2])))  # >= hot: blocks store hot units
        ue, uo, ve, vo = 0.0, 0.0, 0.0, 0.0
        if k > n:  # past what a side stores: the missing units from the grid
            ue, uo, ve, vo = _high_terms(tab, int(i), int(j), n, k, y, layout)
        ci, cj = int(tab[i + _UCOLD]), int(tab[j + _UCOLD])  # the sides' cold parts
        ue, uo, ve, vo = horner_products4(tab, ci, cj, hot, n, y, y2, ue, uo, ve, vo)
        xh = y**HOT_SLOTS if odd else x**HOT
        pe += xh * ue
        po += xh * uo
        de += xh * ve
        do += xh * vo
    if layout == ODD:  # lanes: alpha_4m+1, beta_4m, alpha_4m+3, beta_4m+2 (y = rho^4)
        return tab[i + _UCA] * tab[j + _UCA] + rho * (pe + x * de), (po + x * do) * Q
    if layout == EVEN:  # lanes: alpha_4m, beta_4m+1, alpha_4m+2, beta_4m+3
        vp = tab[i + _UCA] * tab[j + _UCA] * rho + pe + x * de
        return vp, (tab[i + _UCB] * tab[j + _UCB] + rho * (po + x * do)) * Q
    return pe + rho * po, (de + rho * do) * Q


@njit(fastmath=FASTMATH, cache=True)
def _cells_array(S, ri, rj, fi, fj, oi, oj, lo, tab, vp, vd):
    for u in range(S.shape[0]):
        vp[u], vd[u] = cell(S[u], 1.0, ri[u], rj[u], fi[u], fj[u], oi[u], oj[u], lo[u], tab)


@njit(parallel=True, cache=True)
def _diag_recursion(xs, starts, L, sw2, su2, sb2, kb, bounds, cheb, col, e0, out):
    """out ``(L, N, T)``: S^l(x_i, x_i)(p, p) of the pair recursion on (i, i), K^l =
    E_phi(S) = V_phi(S, S, 1) from the grid's E_phi column ``col`` (Clenshaw; e0 at S = 0);
    1.0 before the start. Returns the largest S past the grid (0.0 if none: then out is
    complete; else the caller grows the grid and runs again)."""
    N, T, m = xs.shape
    D1 = cheb.shape[1]
    smax = bounds[bounds.shape[0] - 1]
    past = 0.0
    for i in prange(N):
        K = np.full(L, kb)
        for p in range(T):
            if p < starts[i]:
                for l in range(L):
                    out[l, i, p] = 1.0
                continue
            drive = 0.0
            for c in range(m):
                drive += xs[i, p, c] * xs[i, p, c]
            for l in range(L):
                S = sw2 * K[l] + drive + sb2
                out[l, i, p] = S
                s = math.sqrt(max(S, 0.0))
                if s > smax * (1 + 1e-12):
                    past = max(past, S)
                    s = smax
                if s == 0.0:
                    e = e0
                else:
                    mi, x = _locate(s, bounds)
                    b1, b2 = 0.0, 0.0
                    for d in range(D1 - 1, 0, -1):
                        b1, b2 = cheb[mi, d, col] + 2.0 * x * b1 - b2, b1
                    e = max(cheb[mi, 0, col] + x * b1 - b2, 0.0)
                K[l] = e
                drive = su2 * e
    return past


def variances(nonlinearity: str, consts: tuple, depth: int, xs, starts):
    """``(L, N, T)`` float64 tensor of the per-sequence variances (as
    :func:`rntk_empirical.analytic.numba_backend.variances`: xs ``(N, T, m)`` scaled by
    s_u / sqrt(m), starts ``(N,)``), compiled, with V_phi(S, S, 1) = E_phi(S) from the
    smooth dual's grid (grown and run again if a variance passes it). For a nonlinearity
    that :func:`qualifies`."""
    import torch

    x = xs.detach().to("cpu", torch.float64).numpy()
    st = starts.cpu().numpy().astype(np.int64)
    out = np.empty((depth, x.shape[0], x.shape[1]))
    sw2, su2, sb2, _, kb, _ = consts
    var_max = 16.0
    while True:
        sm = prepare_smooth(nonlinearity, var_max)
        cheb, _, _ = _grid_arrays(sm)
        e0 = sm.grid.at_zero[0] ** 2
        past = _diag_recursion(
            x, st, depth, sw2, su2, sb2, kb, sm.grid.bounds, cheb, 2 * sm.grid.kmax, e0, out
        )
        if past == 0.0:
            return torch.from_numpy(out)
        # the recursion ran on E_phi clamped at the grid's end, so ``past`` understates the
        # range: 4x (one rebuild of the grid, ~0.4 s, where 2x took two for softplus at
        # T = 150); prepare_smooth refuses past its verified range
        var_max = 4.0 * past


def qualifies(nonlinearity: str) -> bool:
    """Whether the nonlinearity takes the smooth-dual series (no warning here: the kernel
    bank's :func:`table_or_none` says why not)."""
    try:
        prepare_smooth(nonlinearity, 1.0)
    except SmoothDualUnsupported:
        return False
    return True


def evaluate(
    nonlinearity: str,
    a: np.ndarray,
    b: np.ndarray,
    rho: np.ndarray,
    same: np.ndarray | None = None,
    tol: float = DEFAULT_TOL,
) -> tuple[np.ndarray, np.ndarray]:
    """(V_phi, V_dphi) at cells (a, b, rho) (flat arrays of one length) through
    :func:`prepare` and :func:`cell`, exactly as the recursion evaluates them (for tests
    and the benchmark); ``same`` marks identical states."""
    a, b, rho = (np.ascontiguousarray(x, dtype=np.float64).ravel() for x in (a, b, rho))
    tab, (oa, ob) = prepare(nonlinearity, [a, b], tol)
    fa, fb = np.sqrt(np.maximum(a, 0.0)), np.sqrt(np.maximum(b, 0.0))
    ra = np.where(fa > 0, 1.0 / np.where(fa > 0, fa, 1.0), 0.0)
    rb = np.where(fb > 0, 1.0 / np.where(fb > 0, fb, 1.0), 0.0)
    S = rho * fa * fb
    lo = np.where(same, 1.0, -1.0) if same is not None else np.full(a.size, -1.0)
    vp, vd = np.empty(a.size), np.empty(a.size)
    _cells_array(S, ra, rb, fa, fb, oa, ob, lo, tab, vp, vd)
    return vp, vd


def table_or_none(nonlinearity: str, *variances: np.ndarray, tol: float | None = None):
    """:func:`prepare` for the variances of the sides of a call (one array per side, in
    access order) at error tolerance ``tol`` (None: the default), or None (with a one-line
    warning, once per reason) where the contract cannot be verified: the caller then keeps
    the tabulated Gauss-Hermite rule."""
    try:
        return prepare(nonlinearity, list(variances), resolve_tol(tol))
    except SmoothDualUnsupported as err:
        warn_unsupported(err)
        return None
