r"""The analytic kernel bank compiled for the CPU (numba): every pair's recursion in registers.

Same mathematics as :mod:`rntk_empirical.analytic` (see its module docstring; SPEC section 3),
organised for a CPU instead of for tensor libraries. The torch recursion updates a block of
pairs one cell at a time, so each cell costs ~10 passes over memory and mean pooling (T^2
cells per pair) is memory-bound. Here one thread takes one row x_i and a tile of columns
x_j (TILE of them, multiple of ``LANES``); for every shift k it runs the chain
(t, t') = (p, p - k) forward with the whole state of the tile (K^l, G^l of every layer, the
readout sums) in L1 cache, in a loop over the tile that the compiler vectorizes (AVX2 /
AVX-512). arcsin, the only transcendental of the ReLU and erf duals, is a polynomial
(:func:`_asin`), so that loop contains no library call.

Cost: O(N1 N2 L T^2) with ``avg``, O(N1 N2 L T) without, as for the torch path; measured
1.35 ns per cell and layer on 2 cores (AVX-512), 10x the torch path, for one mean-pooling
unit of the UCI grid (``python -m experiments.bench_bank``; 4.2 ns on an AVX2 machine).
Closed forms for ``relu``, ``erf`` and ``identity``; any other nonlinearity through the
torch path's Gauss-Hermite rule with phi tabulated (:func:`quadrature_table`, :func:`_rule`);
float64 arithmetic whatever the output dtype. Mixed lengths as in the torch path
(left-padded, end-aligned): a chain starts once the row and some column of the tile have
started, and a column that has not started yet holds its boundary value (a masked copy of
the cell loop, used only on those steps).

numba is an optional dependency (``pip install rntk_empirical[fast]``); without it
:func:`available` is False and :func:`rntk_empirical.analytic_kernel_bank` uses torch.
"""

from __future__ import annotations

import math
from math import comb

import numpy as np
import torch

from rntk_empirical.activations import get_nonlinearity
from rntk_empirical.analytic import numba_smooth
from rntk_empirical.dual import DEFAULT_QUAD_POINTS, hermite_rule

try:  # optional dependency
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised by the torch fallback tests
    numba = None
    prange = range

    def njit(*args, **kwargs):  # the functions below stay plain Python and are never called
        return lambda f: f


NONLINEARITIES = ("relu", "erf", "identity")  # closed forms; anything else: QUADRATURE
QUADRATURE = 3  # code of a tabulated quadrature dual (tanh, registered nonlinearities)
TABLE_STEP = 2.0**-9  # spacing of the phi table: cubic Hermite error ~h^4/384 max|d^4 f|
TABLE_MAX_NODES = 2**21  # beyond this the spacing grows (very large variances)
# Gauss-Hermite nodes whose weight is below this add nothing a float64 sum can hold; dropping
# them (46 of 64 kept) halves the Q^2 work of a quadrature cell
NODE_WEIGHT_FLOOR = 1e-20
_TAB_HEAD = 4  # header of the packed table: Q, x0, 1/h, n
LANES = 32  # columns are padded to a multiple of this: the vector loop has no scalar tail
TILE = 128  # columns whose state stays in L1 while one chain runs
_READOUT_SLOTS = ("last", "per_step", "avg")
_FASTMATH = {"contract", "reassoc", "nsz"}  # not nnan/ninf: overflow is checked


def disk_cached() -> dict[str, bool]:
    """Whether each compiled entry point keeps its machine code in numba's on-disk cache
    (``cache=True``): the ``__pycache__`` next to this file where it is writable, else the
    user-wide cache directory; ``NUMBA_CACHE_DIR`` overrides both (numba's own rules). So
    only the first process ever on a machine (or after this file changes) compiles."""
    if numba is None:
        return {}
    names = ("_bank_rows", "_chain", "_mirror", "_asin_array", "_avg_pairs", "_half")
    names += ("_diag_variances",)
    kinds = ("cells", "masked", "step2")
    names += tuple(f"_{kind}_{nl}" for kind in kinds for nl in (*NONLINEARITIES, "quadrature"))
    return {n: type(globals()[n]._cache).__name__ != "NullCache" for n in names}


def available() -> bool:
    """Whether numba is installed (the compiled path can run at all)."""
    return numba is not None


def supported(nonlinearity: str, equal_lengths: bool, device: torch.device) -> str | None:
    """None if the compiled path can compute these kernels, else the reason it cannot.
    (``equal_lengths`` is no longer a condition: mixed lengths run compiled too.)"""
    if numba is None:
        return "numba is not installed (pip install 'rntk_empirical[fast]')"
    if device.type != "cpu":
        return f"it runs on the CPU, not on {device.type}"
    return None  # every nonlinearity: closed form or tabulated quadrature


def nonlinearity_code(nonlinearity: str) -> int:
    """0, 1, 2 for the closed forms relu, erf, identity; QUADRATURE for any other."""
    return NONLINEARITIES.index(nonlinearity) if nonlinearity in NONLINEARITIES else QUADRATURE


def quadrature_table(nonlinearity: str, var_max: float, points: int) -> np.ndarray:
    """The packed table of a quadrature dual for variances up to ``var_max``: [Q, x0, 1/h,
    n, the Gauss-Hermite nodes z (Q) and weights w (Q) of
    :func:`rntk_empirical.dual.hermite_rule` with weight >= NODE_WEIGHT_FLOOR, then
    (phi, phi', phi'') at x_k = x0 + k h, k < n, interleaved]. It covers every argument
    of the rule, |x| <= sqrt(2 var_max) max|z|, with h = TABLE_STEP (larger only past
    TABLE_MAX_NODES nodes); phi and phi' are the registered functions themselves, phi''
    is autograd of phi' (a central difference where phi' has no graph)."""
    nl = get_nonlinearity(nonlinearity)
    z, w = hermite_rule(points)
    keep = w >= NODE_WEIGHT_FLOOR
    z, w = z[keep], w[keep]
    reach = math.sqrt(2.0 * max(var_max, 1e-12)) * float(np.abs(z).max())
    h = max(TABLE_STEP, 2.0 * reach / (TABLE_MAX_NODES - 4))
    n = int(math.ceil(2.0 * reach / h)) + 4
    x = torch.arange(n, dtype=torch.float64) * h - (reach + 2.0 * h)
    with torch.no_grad():
        phi = nl.phi(x)
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        dphi = nl.dphi(xg)
        ddphi = None
        if dphi.requires_grad:
            (ddphi,) = torch.autograd.grad(dphi.sum(), xg, allow_unused=True)
    dphi = dphi.detach()
    if ddphi is None:
        e = 1e-5 * torch.clamp(x.abs(), min=1.0)
        with torch.no_grad():
            ddphi = (nl.dphi(x + e) - nl.dphi(x - e)) / (2.0 * e)
    head = np.array([z.size, float(x[0]), 1.0 / h, n], dtype=np.float64)  # _TAB_HEAD
    body = torch.stack([phi, dphi, ddphi], dim=1).reshape(-1).numpy()
    return np.concatenate([head, z, w, body]).astype(np.float64)


_NO_TABLE = np.zeros(_TAB_HEAD)  # the closed forms ignore their table


def _asin_coefficients(degree: int = 11) -> tuple[float, ...]:
    """Power-basis coefficients of P(z) ~ (arcsin(sqrt z) - sqrt z) / z^{3/2} on [0, 1/4].

    A Chebyshev least-squares fit of the Taylor series sum_{n>=1} binom(2n, n) z^{n-1} /
    (4^n (2n + 1)) (80 terms: converged to float64 there). Degree 11 gives arcsin to
    ~3e-16 absolute on [-1, 1] (tests/test_analytic_numba.py checks it against numpy)."""
    z = 0.125 - 0.125 * np.cos(np.pi * (np.arange(2000) + 0.5) / 2000)
    series = np.zeros_like(z)
    for n in range(79, 0, -1):
        series = series * z + comb(2 * n, n) / (4**n * (2 * n + 1))
    fit = np.polynomial.Chebyshev.fit(z, series, degree, domain=[0.0, 0.25])
    coef = fit.convert(kind=np.polynomial.Polynomial, domain=[0.0, 0.25], window=[0.0, 0.25])
    return tuple(float(c) for c in coef.coef)


_C = _asin_coefficients()
_HALF_PI = 0.5 * math.pi
_INV_2PI_SQRT = 1.0 / math.sqrt(2.0 * math.pi)


# module globals are compile-time constants for numba (and cacheable)
_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11 = _C


@njit(inline="always", fastmath=_FASTMATH, cache=True)
def _asin(x):
    """arcsin on [-1, 1] without branches: |x| <= 1/2 directly, else through
    arcsin(x) = pi/2 - 2 arcsin(sqrt((1 - x) / 2))."""
    ax = abs(x)
    big = ax > 0.5
    z = (1.0 - ax) * 0.5 if big else ax * ax
    s = math.sqrt(z) if big else ax
    p = _C11
    p = p * z + _C10
    p = p * z + _C9
    p = p * z + _C8
    p = p * z + _C7
    p = p * z + _C6
    p = p * z + _C5
    p = p * z + _C4
    p = p * z + _C3
    p = p * z + _C2
    p = p * z + _C1
    p = p * z + _C0
    p = s + s * z * p
    r = _HALF_PI - 2.0 * p if big else p
    return r if x >= 0.0 else -r


# The closed forms (see _factors): V_phi and V_dphi * Q of one pair from its covariance S,
# its tangent kernel Q and the per-side factors of its row (ri, fi, gi) and column (rj, ...);
# lo: the lower clamp of the correlation, 1.0 for identical states (rho = 1 exactly, see
# rntk_empirical.dual), else -1.0.
@njit(inline="always", fastmath=_FASTMATH)
def _relu(S, Q, ri, rj, fi, fj, gi, gj, lo, tab):
    rho = min(max(S * ri * rj, lo), 1.0)
    j0 = _HALF_PI + _asin(rho)  # pi - arccos(rho)
    return (math.sqrt(max(1.0 - rho * rho, 0.0)) + j0 * rho) * fi * fj, j0 * Q * gi * gj


@njit(inline="always", fastmath=_FASTMATH)
def _erf(S, Q, ri, rj, fi, fj, gi, gj, lo, tab):
    x = min(max(S * ri * rj, -1.0), 1.0)
    return (2.0 / math.pi) * _asin(x), Q * gi * gj / math.sqrt(max(1.0 - x * x, 1e-300))


@njit(inline="always", fastmath=_FASTMATH)
def _identity(S, Q, ri, rj, fi, fj, gi, gj, lo, tab):
    return S, Q


# Quadrature duals (tanh, registered nonlinearities): the tensor-product Gauss-Hermite rule of
# rntk_empirical.dual.quadrature_dual (same nodes, mean of both orders), with phi and phi'
# read from a table (:func:`quadrature_table`): ``tab`` = [Q, x0, 1/h, n, z (Q), w (Q),
# then (phi, phi', phi'') at x0 + k h for k = 0..n-1, interleaved], interpolated by cubic
# Hermite polynomials on [x_k, x_k+1]. Factors: f = sqrt(a), r = 1/sqrt(a) (0 if a = 0).


@njit(inline="always", fastmath=_FASTMATH)
def _lookup(tab, x, base, x0, ih, n):
    """(phi(x), phi'(x)) from the table: cubic Hermite interpolation (x clamped to it)."""
    t = min(max((x - x0) * ih, 0.0), n - 1.000001)
    k = int(t)
    t -= k
    t2 = t * t
    t3 = t2 * t
    h01 = 3.0 * t2 - 2.0 * t3
    h00 = 1.0 - h01
    h11 = (t3 - t2) / ih
    h10 = (t3 - 2.0 * t2 + t) / ih
    o = base + 3 * k
    p = h00 * tab[o] + h10 * tab[o + 1] + h01 * tab[o + 3] + h11 * tab[o + 4]
    d = h00 * tab[o + 1] + h10 * tab[o + 2] + h01 * tab[o + 4] + h11 * tab[o + 5]
    return p, d


@njit(inline="always", fastmath=_FASTMATH)
def _rule(tab, sa, sb, rho, tau):
    """One order of the rule: sum_i w_i f(s_a z_i) sum_j w_j f(s_b (rho z_i + tau z_j)) for
    f = phi and f = phi'."""
    nq = int(tab[0])
    x0, ih, n = tab[1], tab[2], int(tab[3])
    zb, wb, base = _TAB_HEAD, _TAB_HEAD + nq, _TAB_HEAD + 2 * nq
    vp, vd = 0.0, 0.0
    for i in range(nq):
        zi = tab[zb + i]
        pu, du = _lookup(tab, sa * zi, base, x0, ih, n)
        m, s = sb * rho * zi, sb * tau
        ip, idd = 0.0, 0.0
        for j in range(nq):
            pv, dv = _lookup(tab, m + s * tab[zb + j], base, x0, ih, n)
            ip += tab[wb + j] * pv
            idd += tab[wb + j] * dv
        vp += tab[wb + i] * pu * ip
        vd += tab[wb + i] * du * idd
    return vp, vd


@njit(inline="always", fastmath=_FASTMATH)
def _quadrature(S, Q, ri, rj, fi, fj, gi, gj, lo, tab):
    if tab[0] < 0.0:  # the smooth-dual series (g: block offsets; numba_smooth.prepare)
        return numba_smooth.cell(S, Q, ri, rj, fi, fj, gi, gj, lo, tab)
    rho = min(max(S * ri * rj, lo), 1.0)
    tau = math.sqrt(max(1.0 - rho * rho, 0.0))
    p1, d1 = _rule(tab, fi, fj, rho, tau)
    p2, d2 = _rule(tab, fj, fi, rho, tau)
    return 0.5 * (p1 + p2), 0.5 * (d1 + d2) * Q


def _cells_for(dual):
    """The in-place update of one layer at one cell for a tile of pairs, for one closed form
    (a separate compiled loop each, so the loop over the tile has no branch and vectorizes):

        S = s_w^2 K(t-1,t'-1) + drive + s_b^2,  Q = S + s_w^2 G(t-1,t'-1) + s_u^2 G^{l-1}(t,t')
        K, G = dual(S, Q);  drive = s_u^2 K and glow = G for the layer above (SPEC section 3)

    Returns (cells, masked cells, both layers of depth 2 at once): ``masked`` takes ``live``
    ``(TILE,)`` (1.0 where the pair is active at this cell) and holds the state of the other
    pairs, adding nothing for them. Every cell is added to the sums sk, st times ``acc``
    (1.0 or 0.0): a weight, not a branch, which the vectorizer would turn into masked
    stores (measured 2x slower per cell on AVX2).
    """

    @njit(fastmath=_FASTMATH, cache=True)
    def cells(K, G, drive, glow, rj, fj, gj, ri, fi, gi, sw2, su2, sb2, sk, st, lo, tab, acc, n):
        for j in range(n):
            S = sw2 * K[j] + drive[j] + sb2
            Q = S + sw2 * G[j] + su2 * glow[j]
            k, g = dual(S, Q, ri, rj[j], fi, fj[j], gi, gj[j], lo[j], tab)
            K[j] = k
            G[j] = g
            drive[j] = su2 * k
            glow[j] = g
            sk[j] += acc * k
            st[j] += acc * (k + g)

    @njit(fastmath=_FASTMATH, cache=True)
    def masked(
        K, G, drive, glow, rj, fj, gj, ri, fi, gi, sw2, su2, sb2, sk, st, lo, tab, acc, n, live
    ):
        for j in range(n):
            S = sw2 * K[j] + drive[j] + sb2
            Q = S + sw2 * G[j] + su2 * glow[j]
            k, g = dual(S, Q, ri, rj[j], fi, fj[j], gi, gj[j], lo[j], tab)
            on = live[j] > 0.0
            k = k if on else K[j]
            g = g if on else G[j]
            K[j] = k
            G[j] = g
            drive[j] = su2 * k
            glow[j] = g
            w = acc * live[j]
            sk[j] += w * k
            st[j] += w * (k + g)

    @njit(fastmath=_FASTMATH, cache=True)
    def step2(K, G, dr, f1, i, p, f2, q, j0, sw2, su2, sb2, sk, st, lo, tab, acc, n):
        """Both layers of a depth-2 recursion at one cell of the tile, in one loop (the
        drive and tangent of layer 2 stay in registers: no drive/glow arrays, one pass)."""
        ri0, fi0, gi0 = f1[0, 0, i, p], f1[1, 0, i, p], f1[2, 0, i, p]
        ri1, fi1, gi1 = f1[0, 1, i, p], f1[1, 1, i, p], f1[2, 1, i, p]
        K0, G0, K1, G1 = K[0], G[0], K[1], G[1]
        r0, h0, g0 = f2[0, 0, q, j0 : j0 + n], f2[1, 0, q, j0 : j0 + n], f2[2, 0, q, j0 : j0 + n]
        r1, h1, g1 = f2[0, 1, q, j0 : j0 + n], f2[1, 1, q, j0 : j0 + n], f2[2, 1, q, j0 : j0 + n]
        sk0, st0, sk1, st1 = sk[0], st[0], sk[1], st[1]
        for j in range(n):
            S = sw2 * K0[j] + dr[j] + sb2
            k, g = dual(S, S + sw2 * G0[j], ri0, r0[j], fi0, h0[j], gi0, g0[j], lo[j], tab)
            K0[j] = k
            G0[j] = g
            S = sw2 * K1[j] + su2 * k + sb2
            k1, g1v = dual(
                S, S + sw2 * G1[j] + su2 * g, ri1, r1[j], fi1, h1[j], gi1, g1[j], lo[j], tab
            )
            K1[j] = k1
            G1[j] = g1v
            sk0[j] += acc * k
            st0[j] += acc * (k + g)
            sk1[j] += acc * k1
            st1[j] += acc * (k1 + g1v)

    return cells, masked, step2


(
    (_cells_relu, _masked_relu, _step2_relu),
    (_cells_erf, _masked_erf, _step2_erf),
    (_cells_identity, _masked_identity, _step2_identity),
    (_cells_quadrature, _masked_quadrature, _step2_quadrature),
) = (_cells_for(f) for f in (_relu, _erf, _identity, _quadrature))


@njit(fastmath=_FASTMATH, cache=True)
def _chain(nl, i, j0, n, k, x1, x2, f1, f2, cst, K, G, dr, gl, sk, st, lo, tab, acc, p0, s2, live):
    """Run chain k (x_i at p, x_j at p - k) of the tile of columns j0:j0+n; K, G ``(L, TILE)``
    hold its boundary and end in its last cell; every active cell is added to sk, st times
    ``acc`` (1.0 or 0.0); ``lo`` ``(TILE,)``: the lower clamp of the correlation (1.0 on
    identical states).
    Mixed lengths: the chain starts at p0 (row i started, some column started); column j is
    active from q = s2[j] on (``s2`` ``(N2p,)`` its padded start), held at its boundary before.
    """
    sw2, su2, sb2 = cst[0], cst[1], cst[2]
    L, T, m = f1.shape[1], f1.shape[3], x1.shape[2]
    s_max = 0
    for j in range(n):
        s_max = max(s_max, s2[j0 + j])
    for p in range(p0, min(T, T + k)):
        q = p - k
        full = q >= s_max
        if not full:
            for j in range(n):
                live[j] = 1.0 if q >= s2[j0 + j] else 0.0
        for j in range(n):
            dr[j] = 0.0
        for c in range(m):
            xi = x1[i, p, c]
            xj = x2[q, c, j0 : j0 + n]
            for j in range(n):
                dr[j] += xi * xj[j]
        if full and L == 2:
            a2 = (K, G, dr, f1, i, p, f2, q, j0, sw2, su2, sb2, sk, st, lo, tab, acc, n)
            if nl == 0:
                _step2_relu(*a2)
            elif nl == 1:
                _step2_erf(*a2)
            elif nl == 2:
                _step2_identity(*a2)
            else:
                _step2_quadrature(*a2)
            continue
        for j in range(n):
            gl[j] = 0.0
        for l in range(L):
            rj, fj, gj = f2[0, l, q, j0:], f2[1, l, q, j0:], f2[2, l, q, j0:]
            ri, fi, gi = f1[0, l, i, p], f1[1, l, i, p], f1[2, l, i, p]
            args = (K[l], G[l], dr, gl, rj, fj, gj, ri, fi, gi, sw2, su2, sb2, sk[l], st[l], lo)
            if full:
                if nl == 0:
                    _cells_relu(*args, tab, acc, n)
                elif nl == 1:
                    _cells_erf(*args, tab, acc, n)
                elif nl == 2:
                    _cells_identity(*args, tab, acc, n)
                else:
                    _cells_quadrature(*args, tab, acc, n)
            elif nl == 0:
                _masked_relu(*args, tab, acc, n, live)
            elif nl == 1:
                _masked_erf(*args, tab, acc, n, live)
            elif nl == 2:
                _masked_identity(*args, tab, acc, n, live)
            else:
                _masked_quadrature(*args, tab, acc, n, live)


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _bank_rows(rows, x1, x2, f1, f2, keys1, keys2, s1, s2, cst, nl, tab, slots, sym, n_out, out):
    """Kernels of the given rows against all columns (from the row's lane block on if
    ``sym``; the caller mirrors).

    Shapes: x1 ``(N1, T, m)``, x2 ``(T, m, N2p)`` (N2p a multiple of LANES, zero-padded);
    f1 ``(3, L, N1, T)`` and f2 ``(3, L, T, N2p)`` the factors r, f, g of :func:`_factors`;
    keys ``(N1,)``, ``(N2p,)``; s1 ``(N1,)``, s2 ``(N2p,)`` the first valid padded positions
    (T - length; 0 for equal lengths); ``cst`` = (s_w^2, s_u^2, s_b^2, s_v^2, boundary
    K^l(0, 0), 1.0 if the boundary needs equal keys); ``slots``: output slot of last,
    per_step, avg (-1: not wanted); out ``(L, R, 2, N1, n_out)``, [:, :, 0] the NTK,
    [:, :, 1] the NNGP.
    """
    sv2, kb, kb_keys = cst[3], cst[4], cst[5]
    L, T = f1.shape[1], f1.shape[3]
    N2p = f2.shape[3]
    s_last, s_ps, s_avg = slots[0], slots[1], slots[2]
    acc0 = 1.0 if (s_ps >= 0 or s_avg >= 0) else 0.0  # a weight (see _cells_for)
    for u in prange(rows.shape[0]):
        i = rows[u]
        si = s1[i]
        K = np.empty((L, TILE))
        G = np.empty((L, TILE))
        dr = np.empty(TILE)
        gl = np.empty(TILE)
        live = np.empty(TILE)
        pk = np.empty((L, TILE))  # shift 0 (per_step, and the diagonal of avg)
        pt = np.empty((L, TILE))
        sk = np.empty((L, TILE))  # the other shifts (avg)
        st = np.empty((L, TILE))
        lo0 = np.empty(TILE)  # chain 0: 1.0 where x_j is x_i (identical states)
        lo = np.full(TILE, -1.0)  # other chains: states never identical
        first = (i // LANES) * LANES if sym else 0
        for j0 in range(first, N2p, TILE):
            n = min(TILE, N2p - j0)
            w = min(n, n_out - j0)
            s_min = T
            for j in range(n):
                s_min = min(s_min, s2[j0 + j])
            for j in range(n):
                equal = keys1[i] == keys2[j0 + j] and si == s2[j0 + j]
                lo0[j] = 1.0 if (equal and j0 + j < n_out) else -1.0
                b = kb if (si == s2[j0 + j] and (kb_keys == 0.0 or equal)) else 0.0
                for l in range(L):
                    K[l, j] = b
                    G[l, j] = 0.0
                    pk[l, j] = 0.0
                    pt[l, j] = 0.0
                    sk[l, j] = 0.0
                    st[l, j] = 0.0
            p0 = max(si, s_min)
            run = (x1, x2, f1, f2, cst, K, G, dr, gl)  # what every chain of the tile shares
            _chain(nl, i, j0, n, 0, *run, pk, pt, lo0, tab, acc0, p0, s2, live)
            for l in range(L):
                for j in range(w):
                    if s_last >= 0:
                        out[l, s_last, 0, i, j0 + j] = sv2 * (K[l, j] + G[l, j])
                        out[l, s_last, 1, i, j0 + j] = sv2 * K[l, j]
                    if s_ps >= 0:
                        scale = sv2 / math.sqrt((T - si) * (T - s2[j0 + j]))
                        out[l, s_ps, 0, i, j0 + j] = scale * pt[l, j]
                        out[l, s_ps, 1, i, j0 + j] = scale * pk[l, j]
            if s_avg < 0:
                continue
            for k in range(1 - T, T):
                if k == 0:
                    continue
                for j in range(n):
                    # the boundary s_h^2 term: chain k where both sequences start together
                    b = kb if (si - k == s2[j0 + j] and kb_keys == 0.0) else 0.0
                    for l in range(L):
                        K[l, j] = b
                        G[l, j] = 0.0
                p0 = max(k, si, s_min + k)
                _chain(nl, i, j0, n, k, *run, sk, st, lo, tab, 1.0, p0, s2, live)
            for l in range(L):
                for j in range(w):
                    scale = sv2 / ((T - si) * (T - s2[j0 + j]))
                    out[l, s_avg, 0, i, j0 + j] = scale * (st[l, j] + pt[l, j])
                    out[l, s_avg, 1, i, j0 + j] = scale * (sk[l, j] + pk[l, j])


PAD = 32  # front padding of the per-pair layout: the vector loop may start up to LANES - 1 early


@njit(fastmath=_FASTMATH, cache=True)
def _half(nl, xa, fa, oa, Ta, xb, fb, ob, Tb, d0, cst, K, G, dr, gl, ak, at, lo, tab, lanes):
    """Chains d = d0..Ta-1 of one pair (unpadded steps: a of length Ta, b of length Tb), all
    at once: at step s chain d is at the cell (t_a, t_b) = (s + d, s), so the active chains
    d < Ta - s are a prefix and their inputs contiguous in d; the loop over them runs on a
    multiple of ``lanes`` (the extra chains below d0 are scratch, never read).

    xa ``(m, PAD + T)``, fa ``(3, L, PAD + T)``: sequence a left-padded by PAD, its step t at
    ``oa + t``; the same for b. K, G, ak, at ``(L, PAD + T)``, dr, gl, lo ``(PAD + T,)``:
    state, cell sums (K and K + G) and correlation clamp of chain d at index PAD + d.
    """
    sw2, su2, sb2 = cst[0], cst[1], cst[2]
    L, m = K.shape[0], xa.shape[0]
    for s in range(min(Tb, Ta - d0)):
        hi = PAD + Ta - s
        n = -(-(Ta - s - d0) // lanes) * lanes
        lo_i = hi - n
        base = oa + s - PAD  # chain index u reads step s + u - PAD of a
        for u in range(lo_i, hi):
            dr[u] = 0.0
            gl[u] = 0.0
        for c in range(m):
            xbv = xb[c, ob + s]
            xs = xa[c, base + lo_i : base + hi]
            dv = dr[lo_i:hi]
            for u in range(n):
                dv[u] += xs[u] * xbv
        for l in range(L):
            rb, fbv, gb = fb[0, l, ob + s], fb[1, l, ob + s], fb[2, l, ob + s]
            ra = fa[0, l, base + lo_i : base + hi]
            fav = fa[1, l, base + lo_i : base + hi]
            ga = fa[2, l, base + lo_i : base + hi]
            args = (K[l, lo_i:hi], G[l, lo_i:hi], dr[lo_i:hi], gl[lo_i:hi], ra, fav, ga)
            args2 = (rb, fbv, gb, sw2, su2, sb2, ak[l, lo_i:hi], at[l, lo_i:hi], lo[lo_i:hi])
            if nl == 0:
                _cells_relu(*args, *args2, tab, 1.0, n)
            elif nl == 1:
                _cells_erf(*args, *args2, tab, 1.0, n)
            elif nl == 2:
                _cells_identity(*args, *args2, tab, 1.0, n)
            else:
                _cells_quadrature(*args, *args2, tab, 1.0, n)


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _avg_pairs(
    pi, pj, x1, f1, s1, x2, f2, s2, keys1, keys2, cst, nl, tab, slots, chunks, lanes, out
):
    """Every readout of the pairs (pi[u], pj[u]) with ``avg`` among them, one pair at a time
    (each chain runs in unpadded steps: mixed lengths need no mask). For few sequences or
    long ones, where a tile of columns would be mostly padding.

    x1 ``(N1, m, PAD + T)``, f1 ``(N1, 3, L, PAD + T)``: inputs and factors left-padded by
    PAD (step p of the padded batch at PAD + p); s1 ``(N1,)`` starts; the same for x2, f2,
    s2; ``chunks``: pair ranges, one per parallel task; ``cst``, ``slots``, ``out`` as in
    :func:`_bank_rows`. Writes out[..., pi[u], pj[u]] only.
    """
    sv2, kb, kb_keys = cst[3], cst[4], cst[5]
    L, W = f1.shape[2], f1.shape[3]
    T = W - PAD
    s_last, s_ps, s_avg = slots[0], slots[1], slots[2]
    for ch in prange(chunks.shape[0] - 1):
        K = np.empty((L, W))
        G = np.empty((L, W))
        ak = np.empty((L, W))
        at = np.empty((L, W))
        dr = np.empty(W)
        gl = np.empty(W)
        lo = np.empty(W)
        tot_k = np.empty(L)
        tot_t = np.empty(L)
        end_k = np.empty(L)
        end_t = np.empty(L)
        sum_k = np.empty(L)
        sum_t = np.empty(L)
        work = (cst, K, G, dr, gl, ak, at, lo, tab, lanes)  # what every _half call shares
        for u in range(chunks[ch], chunks[ch + 1]):
            i, j = pi[u], pj[u]
            Ti, Tj = T - s1[i], T - s2[j]
            equal = keys1[i] == keys2[j] and Ti == Tj
            b0 = kb if (kb_keys == 0.0 or equal) else 0.0
            tot_k[:] = 0.0
            tot_t[:] = 0.0
            for half in range(2):
                if half == 0:  # chains t_i - t_j = d >= 0
                    xa, fa, oa, Ta, xb, fb, ob, Tb = (
                        x1[i],
                        f1[i],
                        PAD + s1[i],
                        Ti,
                        x2[j],
                        f2[j],
                        PAD + s2[j],
                        Tj,
                    )
                else:  # chains t_j - t_i = d >= 1
                    xa, fa, oa, Ta, xb, fb, ob, Tb = (
                        x2[j],
                        f2[j],
                        PAD + s2[j],
                        Tj,
                        x1[i],
                        f1[i],
                        PAD + s1[i],
                        Ti,
                    )
                K[:, :] = 0.0
                G[:, :] = 0.0
                ak[:, :] = 0.0
                at[:, :] = 0.0
                lo[:] = -1.0
                if half == 0:
                    K[:, PAD] = b0  # chain 0 starts with both sequences
                    if equal:
                        lo[PAD] = 1.0
                _half(nl, xa, fa, oa, Ta, xb, fb, ob, Tb, half, *work)
                for l in range(L):
                    for u2 in range(PAD + half, PAD + Ta):
                        tot_k[l] += ak[l, u2]
                        tot_t[l] += at[l, u2]
                d_end = Ti - Tj if half == 0 else Tj - Ti  # the end-aligned chain
                if (half == 0 and d_end >= 0) or (half == 1 and d_end >= 1):
                    for l in range(L):
                        end_k[l] = K[l, PAD + d_end]
                        end_t[l] = K[l, PAD + d_end] + G[l, PAD + d_end]
                        sum_k[l] = ak[l, PAD + d_end]
                        sum_t[l] = at[l, PAD + d_end]
            for l in range(L):
                if s_last >= 0:
                    out[l, s_last, 0, i, j] = sv2 * end_t[l]
                    out[l, s_last, 1, i, j] = sv2 * end_k[l]
                if s_ps >= 0:
                    scale = sv2 / math.sqrt(Ti * Tj)
                    out[l, s_ps, 0, i, j] = scale * sum_t[l]
                    out[l, s_ps, 1, i, j] = scale * sum_k[l]
                if s_avg >= 0:
                    scale = sv2 / (Ti * Tj)
                    out[l, s_avg, 0, i, j] = scale * tot_t[l]
                    out[l, s_avg, 1, i, j] = scale * tot_k[l]


@njit(parallel=True, cache=True)
def _diag_variances(xs, starts, L, sw2, su2, sb2, kb, nl, out):
    """out ``(L, N, T)``: S^l(x_i, x_i)(p, p), the pair recursion on (i, i) where the
    correlation is 1 (relu: V_phi = S / 2; erf: (2/pi) arcsin(2S / (1 + 2S)); identity: S);
    1.0 before the start; xs ``(N, T, m)`` already scaled by s_u / sqrt(m)."""
    N, T, m = xs.shape
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
                if nl == 0:
                    K[l] = 0.5 * max(S, 0.0)
                elif nl == 1:
                    S0 = max(S, 0.0)
                    K[l] = (2.0 / math.pi) * math.asin(min(2.0 * S0 / (1.0 + 2.0 * S0), 1.0))
                else:
                    K[l] = S
                drive = su2 * K[l]


@njit(parallel=True, cache=True)
def _mirror(out):
    """Lower triangles from the upper ones, for every matrix of ``(L, R, 2, N, N)``."""
    L, R, _, N, _ = out.shape
    for i in prange(N):
        for l in range(L):
            for r in range(R):
                for k in range(2):
                    for j in range(i):
                        out[l, r, k, i, j] = out[l, r, k, j, i]


@njit(fastmath=_FASTMATH, cache=True)
def _asin_array(x, out):
    for i in range(x.shape[0]):
        out[i] = _asin(x[i])


def _require() -> None:
    reason = supported("relu", True, torch.device("cpu"))
    if reason is not None:
        raise RuntimeError(f"the compiled kernel bank cannot run: {reason}")


def asin(x: np.ndarray) -> np.ndarray:
    """The compiled arcsin, elementwise in float64 (exposed for testing)."""
    flat = np.ascontiguousarray(x, dtype=np.float64).ravel()
    out = np.empty_like(flat)
    _require()
    _asin_array(flat, out)
    return out.reshape(np.shape(x))


def _factors(nonlinearity: str, var: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sequence factors (r, f, g) of the variances ``var`` (any shape) such that, for a
    pair with variances a, b and covariance S, the compiled cells compute

        relu:  rho = S r_a r_b,  V_phi = J_1(rho) f_a f_b,  V_dphi = J_0(rho) g_a g_b
        erf:   x = S r_a r_b,    V_phi = (2/pi) arcsin(x),  V_dphi = g_a g_b / sqrt(1 - x^2)

    (r = 1/sqrt(a), f = sqrt(a / 2 pi), g = [a > 0] / sqrt(2 pi) for relu, the degenerate
    a = 0 giving 0 as in :mod:`rntk_empirical.dual`; r = sqrt(2 / (1 + 2a)),
    g = sqrt(4 / pi) / sqrt(1 + 2a) for erf; unused for identity; r = 1/sqrt(a) (0 if
    a = 0), f = sqrt(a) for a quadrature dual)."""
    ones = np.ones_like(var)
    if nonlinearity == "relu":
        pos = var > 0
        r = np.where(pos, 1.0 / np.sqrt(np.where(pos, var, 1.0)), 0.0)
        return r, np.sqrt(np.maximum(var, 0.0)) * _INV_2PI_SQRT, pos * _INV_2PI_SQRT
    if nonlinearity == "erf":
        d = 1.0 / np.sqrt(1.0 + 2.0 * np.maximum(var, 0.0))
        return math.sqrt(2.0) * d, ones, math.sqrt(4.0 / math.pi) * d
    if nonlinearity_code(nonlinearity) == QUADRATURE:
        pos = var > 0
        r = np.where(pos, 1.0 / np.sqrt(np.where(pos, var, 1.0)), 0.0)
        return r, np.sqrt(np.maximum(var, 0.0)), ones
    return ones, ones, ones


def _pad_columns(a: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad the last axis to length n (contiguous)."""
    out = np.zeros(a.shape[:-1] + (n,), dtype=a.dtype)
    out[..., : a.shape[-1]] = a
    return out


def pairwise(n_columns: int, T: int) -> bool:
    """Whether mean pooling runs pair by pair (:func:`_avg_pairs`: all chains of a pair in
    one vector loop) rather than by tiles of columns (:func:`_bank_rows`: all columns of a
    tile in one vector loop). Pairs when the tile would be mostly padding (few columns) or
    the chains are long enough to fill the vector loop; measured crossover below."""
    return n_columns < PAIRWISE_BELOW_COLUMNS or T >= PAIRWISE_FROM_T


PAIRWISE_BELOW_COLUMNS = 96
PAIRWISE_FROM_T = 128
PAIR_LANES = 16  # the chain loop of _avg_pairs runs on a multiple of this (<= PAD); 8-32 measured


def _pad_front(a: np.ndarray) -> np.ndarray:
    """PAD zeros before the last axis (contiguous)."""
    out = np.zeros(a.shape[:-1] + (PAD + a.shape[-1],), dtype=np.float64)
    out[..., PAD:] = a
    return out


def _pair_chunks(
    rows: np.ndarray, len1: np.ndarray, len2: np.ndarray, symmetric: bool, tasks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of these rows (j >= i if symmetric) and ``tasks + 1`` bounds splitting them
    into ranges of about equal cells (T_i T_j each)."""
    n2 = len2.shape[0]
    pi = np.concatenate([np.full(n2 - (r if symmetric else 0), r, np.int64) for r in rows])
    pj = np.concatenate([np.arange(r if symmetric else 0, n2, dtype=np.int64) for r in rows])
    cost = np.cumsum(len1[pi] * len2[pj], dtype=np.float64)
    cuts = np.searchsorted(cost, cost[-1] * np.arange(1, tasks) / tasks)
    return pi, pj, np.unique(np.concatenate([[0], cuts, [len(pi)]])).astype(np.int64)


def variances(
    nonlinearity: str, consts: tuple, depth: int, xs: torch.Tensor, starts: torch.Tensor
) -> torch.Tensor:
    """``(L, N, T)`` float64 per-sequence variances S^l(x_i, x_i)(p, p) (1.0 before the start
    s_i), compiled: what :func:`rntk_empirical.analytic.common.sides` computes in torch one
    time step at a time. ``consts`` as for :func:`kernel_bank`; xs ``(N, T, m)`` scaled by
    s_u / sqrt(m); starts ``(N,)``."""
    _require()
    x = xs.detach().to("cpu", torch.float64).numpy()
    st = starts.cpu().numpy().astype(np.int64)
    out = np.empty((depth, x.shape[0], x.shape[1]))
    sw2, su2, sb2, _, kb, _ = consts
    nl = NONLINEARITIES.index(nonlinearity)
    _diag_variances(x, st, depth, sw2, su2, sb2, kb, nl, out)
    return torch.from_numpy(out)


def _balanced_rows(n: int, symmetric: bool) -> np.ndarray:
    """Row order 0, n-1, 1, n-2, ... when row i costs ~ n - i (symmetric): any contiguous
    chunk of it, split evenly between threads, gives each thread the same work."""
    if not symmetric:
        return np.arange(n, dtype=np.int64)
    idx = np.empty(n, dtype=np.int64)
    idx[0::2] = np.arange((n + 1) // 2)
    idx[1::2] = np.arange(n - 1, (n + 1) // 2 - 1, -1)
    return idx


def kernel_bank(
    consts: tuple[float, float, float, float, float, bool],
    nonlinearity: str,
    side1,
    side2,
    readouts: tuple[str, ...],
    symmetric: bool,
    progress=None,
    quad_points: int = DEFAULT_QUAD_POINTS,
) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    """``{(l, readout): (theta, nngp)}`` of one direction, each ``(N1, N2)`` float64 on the
    CPU (whatever dtype the caller returns: one compiled specialization; a float32 output
    would double the compile time, ~70 s on first use, and the caller's
    :func:`~rntk_empirical.analytic.common.finish` casts and tells a float64 overflow from a
    float32 one).

    Args:
        consts: (s_w^2, s_u^2, s_b^2, s_v^2, boundary K^l(0, 0) of pairs that share h0,
            whether sharing needs equal content keys (``per_input``)).
        side1, side2: the prepared rows and columns (:class:`~rntk_empirical.analytic.BatchSide`:
            ``xs (N, T, m)``,
            ``var (L, N, T)``, ``keys (N,)``, ``starts (N,)``), any lengths.
        readouts: a subset of last, per_step, avg.
        symmetric: side2 is side1; only j >= i is computed, the rest mirrored.
        progress: optional callable, called with the number of rows finished after each
            chunk of rows.
        quad_points: Gauss-Hermite points per dimension of a quadrature dual (nonlinearities
            without a closed form: :func:`quadrature_table`).
    """
    _require()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    as_np = lambda t: t.detach().to("cpu", torch.float64).numpy()  # noqa: E731
    x1, var1 = as_np(side1.xs), as_np(side1.var)
    x2, var2 = as_np(side2.xs), as_np(side2.var)
    N1, N2 = x1.shape[0], x2.shape[0]
    N2p = -(-N2 // LANES) * LANES
    f1 = np.stack(_factors(nonlinearity, var1))  # (3, L, N1, T)
    f2 = _pad_columns(np.stack(_factors(nonlinearity, var2)).transpose(0, 1, 3, 2), N2p)
    x2t = _pad_columns(x2.transpose(1, 2, 0), N2p)  # (T, m, N2p)
    keys1 = side1.keys.cpu().numpy()
    keys2 = _pad_columns(side2.keys.cpu().numpy(), N2p)
    s1 = side1.starts.cpu().numpy().astype(np.int64)
    s2 = side2.starts.cpu().numpy().astype(np.int64)
    s2 = np.concatenate(
        [s2, np.full(N2p - N2, s2.min(), np.int64)]
    )  # padding: inside the tile's range
    sw2, su2, sb2, sv2, kb, kb_keys = consts
    packed = np.array([sw2, su2, sb2, sv2, kb, 1.0 if kb_keys else 0.0])
    wanted = [r for r in _READOUT_SLOTS if r in readouts]
    slots = np.array([wanted.index(r) if r in wanted else -1 for r in _READOUT_SLOTS], np.int64)
    L = var1.shape[0]
    out = np.zeros((L, len(wanted), 2, N1, N2))
    nl = nonlinearity_code(nonlinearity)
    tab = _NO_TABLE
    smooth = nl == QUADRATURE and quad_points == DEFAULT_QUAD_POINTS  # else the rule asked for
    offsets = numba_smooth.table_or_none(nonlinearity, var1, var2) if smooth else None
    if offsets is not None:  # g factors: the sides' block offsets in the series table
        tab, (o1, o2) = offsets
        f1[2], f2[2] = o1, numba_smooth.HEAD
        f2[2, :, :, :N2] = o2.transpose(0, 2, 1)
    elif nl == QUADRATURE:
        var_max = max(float(var1.max(initial=0.0)), float(var2.max(initial=0.0)))
        tab = quadrature_table(nonlinearity, var_max, quad_points)
    order = _balanced_rows(N1, symmetric)
    pairs = "avg" in readouts and pairwise(N2, var1.shape[2])
    # Each call is one parallel region, whose barrier costs milliseconds when the cores are
    # shared (measured: 60-90 ns instead of 9 per cell for ``last`` in 64 calls): one call
    # unless progress is reported (then up to 64), pair lists capped at ~1e6 pairs a call.
    chunk = max(2 * numba.get_num_threads(), -(-N1 // 64)) if progress is not None else N1
    if pairs:
        chunk = min(chunk, max(1, 2**20 // N2))
    if pairs:
        f2n = np.stack(_factors(nonlinearity, var2)).transpose(2, 0, 1, 3)  # (N2, 3, L, T)
        if offsets is not None:
            f2n[:, 2] = offsets[1][1].transpose(1, 0, 2)
        px1, pf1 = _pad_front(x1.transpose(0, 2, 1)), _pad_front(f1.transpose(2, 0, 1, 3))
        px2, pf2 = _pad_front(x2.transpose(0, 2, 1)), _pad_front(f2n)
        if offsets is not None:  # the padding's scratch cells read a valid block
            pf1[:, 2, :, :PAD] = pf2[:, 2, :, :PAD] = numba_smooth.HEAD
        len1, len2 = var1.shape[2] - s1, var2.shape[2] - s2[:N2]
    for s in range(0, N1, chunk):
        rows = order[s : s + chunk]
        if pairs:
            pi, pj, bounds = _pair_chunks(rows, len1, len2, symmetric, 4 * numba.get_num_threads())
            args = (px1, pf1, s1, px2, pf2, s2, keys1, keys2, packed, nl, tab, slots, bounds)
            _avg_pairs(pi, pj, *args, PAIR_LANES, out)
        else:
            _bank_rows(
                rows,
                x1,
                x2t,
                f1,
                f2,
                keys1,
                keys2,
                s1,
                s2,
                packed,
                nl,
                tab,
                slots,
                symmetric,
                N2,
                out,
            )
        if progress is not None:
            progress(len(rows))
    if symmetric:
        _mirror(out)
    t = torch.from_numpy(out)
    return {
        (l + 1, r): (t[l, wanted.index(r), 0], t[l, wanted.index(r), 1])
        for l in range(L)
        for r in wanted
    }
