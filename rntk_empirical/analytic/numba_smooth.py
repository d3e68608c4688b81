r"""The smooth-nonlinearity dual of :mod:`rntk_empirical.smooth_dual`, compiled: one packed
table per call and an inline per-cell evaluator for the numba recursion.

:func:`prepare` turns the per-side data of a call (every variance of the rows and columns)
into one float64 array ``tab`` and, per variance, the offset of its block in it (a float,
carried by the recursion in the per-side factor slot of the closed forms). :func:`cell`
evaluates one pair:

    rho = clamp(S r_i r_j, lo, 1)
    identical states (lo = 1):  V_phi = E_phi(i),  V_dphi = E_dphi(i)       (exact)
    else, b = bin of |rho|, K = max(K_i[b], K_j[b]) terms (K: the most any parity part of
    the side needs there),
        V = P_even(rho^2) + rho P_odd(rho^2),  P(x) = sum_{m < K} c_m(i) c_m(j) x^m   (Horner,
    the four parts of V_phi and V_dphi in one loop)
    where a side's series has not converged in bin b (K = -1): the 2-D trapezoid rule of
    :func:`rntk_empirical.smooth_dual.trapezoid_dual` on a table of phi (cubic Hermite).

Layout of ``tab``: [-1 (tells it from a quadrature table), L, 0, 0, 0, P, strip, digits] then
one block of ``stride`` values per side: [E_phi, E_dphi, terms K per bin (RHO_BINS; -1:
not converged), coefficients (L, 4): phi-even, phi-odd, dphi-even, dphi-odd of each power
(L: the most terms any cell may use)], then at P the phi table [x0, 1/h, n, (phi, phi',
phi'') at x0 + k h].
"""

from __future__ import annotations

import math

import numpy as np

from rntk_empirical.nonlinearities.compiled import FASTMATH, njit, table_lookup
from rntk_empirical.smooth_dual import (
    DEFAULT_TOL,
    RHO_BINS,
    TRAP_RANGE,
    SmoothDualUnsupported,
    prepare_smooth,
    side_table,
    warn_unsupported,
)

HEAD = 8
NB = RHO_BINS
TABLE_MAX_BYTES = 2**31  # larger per-call tables: SmoothDualUnsupported (memory)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def prepare(
    nonlinearity: str, variances: list[np.ndarray], tol: float = DEFAULT_TOL
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(tab, offsets): the packed table of a call and, for each array of ``variances``, the
    float offsets of its entries' blocks (same shape). Raises
    :class:`~rntk_empirical.smooth_dual.SmoothDualUnsupported` (with the reason) for a
    nonlinearity whose contract cannot be verified or a table over TABLE_MAX_BYTES."""
    from rntk_empirical.analytic.numba_backend import quadrature_table

    flat = [np.asarray(v, dtype=np.float64).ravel() for v in variances]
    allv = np.concatenate(flat) if flat else np.zeros(0)
    uniq, inverse = np.unique(np.maximum(allv, 0.0), return_inverse=True)
    var_max = float(uniq[-1]) if uniq.size else 1.0
    sm = prepare_smooth(nonlinearity, var_max, tol)
    st = side_table(sm.grid, uniq, tol)
    n = uniq.size
    terms = st.terms.max(axis=1)  # (n, NB): one count for the four parts of a bin
    terms[(st.terms < 0).any(axis=1)] = -1
    L = max(int(terms.max(initial=0)), 1)  # the most terms any cell may use
    stride = 2 + NB + 4 * L
    if (HEAD + n * stride) * 8 > TABLE_MAX_BYTES:
        raise SmoothDualUnsupported(
            f"the series table would take {(HEAD + n * stride) * 8 / 2**30:.1f} GiB"
        )
    phi_tab = quadrature_table(sm.nonlinearity.name, 1.1 * var_max, 64)
    blocks = np.zeros((n, stride))
    blocks[:, :2] = st.diag
    blocks[:, 2 : 2 + NB] = terms
    m = min(L, st.coef.shape[2])
    coef = blocks[:, 2 + NB :].reshape(n, L, 4)  # interleaved: the four parts of one power
    coef[:, :m] = st.coef[:, :, :m].transpose(0, 2, 1)
    P = HEAD + n * stride
    head = np.array([-1.0, L, 0.0, 0.0, 0.0, P, sm.strip, math.log(1.0 / tol) + 8.0])
    # the phi table of quadrature_table: [Q, x0, 1/h, n, z (Q), w (Q), body]
    q = int(phi_tab[0])
    tab = np.concatenate([head, blocks.ravel(), phi_tab[1:4], phi_tab[4 + 2 * q :]])
    offsets = HEAD + stride * inverse.astype(np.float64)
    out, start = [], 0
    for v, f in zip(variances, flat):
        out.append(offsets[start : start + f.size].reshape(np.shape(v)))
        start += f.size
    return tab, out


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
def cell(S, Q, ri, rj, fi, fj, oi, oj, lo, tab):
    """(V_phi, V_dphi * Q) of one pair: covariance S, tangent Q, per-side factors r = 1/sqrt(a)
    (0 if a = 0), f = sqrt(a) and block offsets o (:func:`prepare`); lo = 1.0 marks
    identical states (rho = 1 exactly), else -1.0."""
    i = int(oi)
    j = int(oj)
    if lo >= 1.0:
        return tab[i], tab[i + 1] * Q
    rho = min(max(S * ri * rj, -1.0), 1.0)
    b = 2 + min(NB - 1, int(NB * (1.0 - math.sqrt(1.0 - abs(rho)))))
    ki, kj = tab[i + b], tab[j + b]
    if min(ki, kj) < 0.0:  # a series that has not converged in this bin
        vp, vd = trapezoid(tab, fi, fj, rho)
        return vp, vd * Q
    x = rho * rho
    ci = i + 2 + NB
    cj = j + 2 + NB
    pe, po, de, do = 0.0, 0.0, 0.0, 0.0  # four independent Horner chains, interleaved
    for m in range(int(max(ki, kj)) - 1, -1, -1):
        u = 4 * m
        pe = pe * x + tab[ci + u] * tab[cj + u]
        po = po * x + tab[ci + u + 1] * tab[cj + u + 1]
        de = de * x + tab[ci + u + 2] * tab[cj + u + 2]
        do = do * x + tab[ci + u + 3] * tab[cj + u + 3]
    return pe + rho * po, (de + rho * do) * Q


@njit(fastmath=FASTMATH, cache=True)
def _cells_array(S, ri, rj, fi, fj, oi, oj, lo, tab, vp, vd):
    for u in range(S.shape[0]):
        vp[u], vd[u] = cell(S[u], 1.0, ri[u], rj[u], fi[u], fj[u], oi[u], oj[u], lo[u], tab)


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


def table_or_none(nonlinearity: str, var1: np.ndarray, var2: np.ndarray):
    """:func:`prepare` for the variances of both sides of a call, or None (with a one-line
    warning, once per reason) where the contract cannot be verified: the caller then keeps
    the tabulated Gauss-Hermite rule."""
    try:
        return prepare(nonlinearity, [var1, var2])
    except SmoothDualUnsupported as err:
        warn_unsupported(err)
        return None
