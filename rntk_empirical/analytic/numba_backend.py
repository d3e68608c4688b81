r"""The analytic kernel bank compiled for the CPU (numba): every pair's recursion in registers.

Same mathematics as :mod:`rntk_empirical.analytic` (see its module docstring; SPEC section 3),
organised for a CPU instead of for tensor libraries. The torch recursion updates a block of
pairs one cell at a time, so each cell costs ~10 passes over memory and mean pooling (T^2
cells per pair) is memory-bound. Here one thread takes one row x_i and a tile of columns
x_j (TILE of them, multiple of ``LANES``); for every shift k it runs the chain
(t, t') = (p, p - k) forward with the whole state of the tile (K^l, G^l of every layer, the
readout sums) in L1 cache, in a loop over the tile that the compiler vectorizes (AVX2 /
AVX-512). Readouts of the final cell with the smooth-dual series, whose columns bring
kilobytes of coefficients per step, run a task's rows step by step instead (all rows at
step p, then p + 1: the tile's blocks of a step are read from L2 by every row). arcsin,
the only transcendental of the ReLU and erf duals, is a polynomial
(:func:`rntk_empirical.nonlinearities.compiled.fast_asin`), so that loop contains no library
call.

Cost: O(N1 N2 L T^2) with ``avg``, O(N1 N2 L T) without, as for the torch path; measured
1.35 ns per cell and layer on 2 cores (AVX-512), 10x the torch path, for one mean-pooling
unit of the UCI grid (``python -m experiments.bench.bank``; 4.2 ns on an AVX2 machine).
Each nonlinearity brings its compiled dual (the ``compiled`` field of its
:class:`~rntk_empirical.nonlinearities.Nonlinearity`: per-sequence factors, a per-pair cell
and the diagonal map), and the entry points are compiled once per dual
(:func:`_kernels`: the cell is a compile-time constant, so the loop over a tile has no
branch); a nonlinearity without a closed form runs the torch path's Gauss-Hermite rule with
phi tabulated (:func:`quadrature_table`, :func:`_rule`), and one with a closed form but no
compiled dual has no compiled path (:func:`supported` says so);
float64 arithmetic whatever the output dtype. Mixed lengths as in the torch path
(left-padded, end-aligned): a chain starts once the row and some column of the tile have
started, and a column that has not started yet holds its boundary value (a masked copy of
the cell loop, used only on those steps).

numba is an optional dependency (``pip install rntk_empirical[fast]``); without it
:func:`available` is False and :func:`rntk_empirical.analytic_kernel_bank` uses torch.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import re
import types
from pathlib import Path

import numpy as np
import torch

from rntk_empirical.analytic import numba_smooth
from rntk_empirical.dual import DEFAULT_QUAD_POINTS, hermite_rule
from rntk_empirical.nonlinearities import (
    CompiledDual,
    Nonlinearity,
    available_nonlinearities,
    get_nonlinearity,
)
from rntk_empirical.nonlinearities import compiled as compiled_helpers
from rntk_empirical.nonlinearities.compiled import (
    FASTMATH,
    fast_asin,
    njit,
    numba,
    prange,
    table_lookup,
)
from rntk_empirical.nonlinearities.registry import BUILT_IN
from rntk_empirical.readouts import get_readout

TABLE_STEP = 2.0**-9  # spacing of the phi table: cubic Hermite error ~h^4/384 max|d^4 f|
TABLE_MAX_NODES = 2**21  # beyond this the spacing grows (very large variances)
# Gauss-Hermite nodes whose weight is below this add nothing a float64 sum can hold; dropping
# them (46 of 64 kept) halves the Q^2 work of a quadrature cell
NODE_WEIGHT_FLOOR = 1e-20
_TAB_HEAD = 4  # header of the packed table: Q, x0, 1/h, n
LANES = 32  # columns are padded to a multiple of this: the vector loop has no scalar tail
TILE = 128  # columns whose state stays in L1 while one chain runs
ROW_GROUP = 8  # rows of one parallel task of _bank_rows, each through a tile in turn
ROW_GROUP_FINAL = 64  # the same for readouts of the final cell only (one chain per pair)
_READOUT_SLOTS = ("final", "diag", "full")  # the kinds of rntk_empirical.readouts.Readout.kind
_FASTMATH = FASTMATH


def disk_cached() -> dict[str, bool]:
    """Whether each compiled entry point of the built-in nonlinearities keeps its machine
    code in numba's on-disk cache (``cache=True``): the ``__pycache__`` next to this file
    where it is writable, else the user-wide cache directory; ``NUMBA_CACHE_DIR`` overrides
    both (numba's own rules). So
    only the first process ever on a machine (or after this file changes) compiles."""
    if numba is None:
        return {}
    fns = {"_mirror": _mirror, "_asin_array": _asin_array}
    for nl in BUILT_IN:  # (a registered nonlinearity's kernels are cached the same way)
        k = _kernels(nl)
        if k is not None:
            fns |= {f"{e.py_func.__qualname__}": e for e in k.entry_points()}
    return {n: type(f._cache).__name__ != "NullCache" for n, f in fns.items()}


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
    nl = get_nonlinearity(nonlinearity)
    if nl.closed_form and nl.compiled is None:
        return f"{nonlinearity!r} has a closed-form dual but no compiled one (its `compiled`)"
    return None  # a compiled closed form or the tabulated quadrature


def compiled_nonlinearities() -> tuple[str, ...]:
    """The registered nonlinearities the compiled bank can run (a compiled closed form or a
    quadrature dual)."""
    return tuple(n for n in available_nonlinearities() if _kernels(n) is not None)


def compiled_variances(nonlinearity: str) -> bool:
    """Whether :func:`variances` can compute this nonlinearity's per-sequence variances
    (its compiled dual has a diagonal map; quadrature duals take the torch dual)."""
    k = _kernels(nonlinearity)
    return k is not None and k.diag_variances is not None


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


# Quadrature duals (tanh, registered nonlinearities): the tensor-product Gauss-Hermite rule of
# rntk_empirical.dual.quadrature_dual (same nodes, mean of both orders), with phi and phi'
# read from a table (:func:`quadrature_table`): ``tab`` = [Q, x0, 1/h, n, z (Q), w (Q),
# then (phi, phi', phi'') at x0 + k h for k = 0..n-1, interleaved], interpolated by cubic
# Hermite polynomials on [x_k, x_k+1]. Factors: f = sqrt(a), r = 1/sqrt(a) (0 if a = 0).


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
        pu, du = table_lookup(tab, sa * zi, base, x0, ih, n)
        m, s = sb * rho * zi, sb * tau
        ip, idd = 0.0, 0.0
        for j in range(nq):
            pv, dv = table_lookup(tab, m + s * tab[zb + j], base, x0, ih, n)
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
    """The in-place update of one layer at one cell for a tile of pairs, for one dual cell
    (a separate compiled loop each, so the loop over the tile has no branch and vectorizes):

        S = s_w^2 K(t-1,t'-1) + drive + s_b^2,  Q = S + s_w^2 G(t-1,t'-1) + s_u^2 G^{l-1}(t,t')
        K, G = dual(S, Q);  drive = s_u^2 K and glow = G for the layer above (SPEC section 3)

    Returns (cells, masked cells, both layers of depth 2 at once): ``masked`` takes ``live``
    ``(TILE,)`` (1.0 where the pair is active at this cell) and holds the state of the other
    pairs, adding nothing for them. Every cell is added to the sums sk, st times ``acc``
    (1.0 or 0.0): a weight, not a branch, which the vectorizer would turn into masked
    stores (measured 2x slower per cell on AVX2).
    """

    @njit(fastmath=_FASTMATH)
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

    @njit(fastmath=_FASTMATH)
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

    @njit(fastmath=_FASTMATH)
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


# The templates below are compiled once per dual by :func:`_kernels`, with the names _cells,
# _masked, _step2 (from :func:`_cells_for`), _diagonal, _chain and _half bound to that dual's
# functions: plain Python here, never called undecorated.
_cells = _masked = _step2 = _diagonal = None  # bound per dual (see _Kernels)


def _chain(
    i, j0, n, k, x1, x2, f1, f2, cst, K, G, dr, gl, sk, st, lo, tab, acc, prof, p0, p_end, s2,
    live,
):
    """Run chain k (x_i at p, x_j at p - k) of the tile of columns j0:j0+n over the steps
    p0 <= p < p_end (and p < T, p - k < T); K, G ``(L, TILE)`` hold its state at p0 (its
    boundary) and end in its last cell; every active cell is added to sk, st times
    ``acc * prof[T-1-p] * prof[T-1-q]`` (acc 1.0 or 0.0; ``prof`` ``(T,)`` the readout's
    weight profile by distance from the end, the same for every column of the chain);
    ``lo`` ``(TILE,)``: the lower clamp of the correlation (1.0 on identical states).
    Mixed lengths: the chain starts at p0 (row i started, some column started); column j is
    active from q = s2[j] on (``s2`` ``(N2p,)`` its padded start), held at its boundary before.
    """
    sw2, su2, sb2 = cst[0], cst[1], cst[2]
    L, T, m = f1.shape[1], f1.shape[3], x1.shape[2]
    s_max = 0
    for j in range(n):
        s_max = max(s_max, s2[j0 + j])
    for p in range(p0, min(T, T + k, p_end)):
        q = p - k
        a = acc * prof[T - 1 - p] * prof[T - 1 - q]  # a scalar: the cell loops are unchanged
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
            _step2(K, G, dr, f1, i, p, f2, q, j0, sw2, su2, sb2, sk, st, lo, tab, a, n)
            continue
        for j in range(n):
            gl[j] = 0.0
        for l in range(L):
            rj, fj, gj = f2[0, l, q, j0:], f2[1, l, q, j0:], f2[2, l, q, j0:]
            ri, fi, gi = f1[0, l, i, p], f1[1, l, i, p], f1[2, l, i, p]
            args = (K[l], G[l], dr, gl, rj, fj, gj, ri, fi, gi, sw2, su2, sb2, sk[l], st[l], lo)
            if full:
                _cells(*args, tab, a, n)
            else:
                _masked(*args, tab, a, n, live)


def _bank_rows(
    rows,
    group,
    x1,
    x2,
    f1,
    f2,
    keys1,
    keys2,
    s1,
    s2,
    cst,
    tab,
    slots,
    prof,
    d1,
    d2,
    sym,
    n_out,
    by_step,
    out,
):
    """Kernels of the given rows against all columns (from the row's lane block on if
    ``sym``; the caller mirrors).

    Shapes: x1 ``(N1, T, m)``, x2 ``(T, m, N2p)`` (N2p a multiple of LANES, zero-padded);
    f1 ``(3, L, N1, T)`` and f2 ``(3, L, T, N2p)`` the factors r, f, g of the dual;
    keys ``(N1,)``, ``(N2p,)``; s1 ``(N1,)``, s2 ``(N2p,)`` the first valid padded positions
    (T - length; 0 for equal lengths); ``cst`` = (s_w^2, s_u^2, s_b^2, s_v^2, boundary
    K^l(0, 0), 1.0 if the boundary needs equal keys); ``slots``: output slot of the final
    cell, the weighted end-aligned sum and the weighted sum of every cell (-1: not wanted);
    ``prof`` ``(T,)``: the weight profile by distance from the end of the weighted sums;
    d1 ``(3, N1)``, d2 ``(3, N2p)``: per-sequence divisors of each slot (the kernel is
    s_v^2 sum / (d1 d2)); ``by_step``: run chain 0 of a task's rows step by step (below);
    out ``(L, R, 2, N1, n_out)``, [:, :, 0] the NTK, [:, :, 1] the NNGP.
    """
    sv2, kb, kb_keys = cst[3], cst[4], cst[5]
    L, T = f1.shape[1], f1.shape[3]
    N2p = f2.shape[3]
    s_last, s_ps, s_avg = slots[0], slots[1], slots[2]
    acc0 = 1.0 if (s_ps >= 0 or s_avg >= 0) else 0.0  # a weight (see _cells_for)
    # a task takes ``group`` rows through each tile of columns in turn: the tile's column
    # data (the smooth dual's coefficient blocks: ~0.75 KB per column, step and layer) is
    # read from cache by all of them. With ``by_step`` (the series, final-cell readouts only)
    # the rows run chain 0 step by step, all rows at step p before any at p + 1, so the
    # blocks of one step (~100 KB a tile and layer) come from L2, not from L3 once per row:
    # tanh ``last`` N=2000 T=50 1.37x less time (in-process pairs; 16 rows at a time:
    # 1.2-1.3x). Row by row otherwise: closed forms read 24 bytes per column, step and
    # layer, and mean pooling's chains each read every step.
    rows_at_once = group if (by_step and s_avg < 0) else 1
    n_tasks = (rows.shape[0] + group - 1) // group
    for task in prange(n_tasks):
        K = np.empty((L, TILE))
        G = np.empty((L, TILE))
        dr = np.empty(TILE)
        gl = np.empty(TILE)
        live = np.empty(TILE)
        sk = np.empty((L, TILE))  # the other shifts (avg)
        st = np.empty((L, TILE))
        lo = np.full(TILE, -1.0)  # other chains: states never identical
        # per row of a step group: the state of chain 0 (K, G; pk, pt its sums for per_step
        # and the diagonal of avg), lo0 (1.0 where x_j is x_i: identical states), and the
        # row's tile (first column, columns, first step, earliest column start)
        Kg = np.empty((rows_at_once, L, TILE))
        Gg = np.empty((rows_at_once, L, TILE))
        pk = np.empty((rows_at_once, L, TILE))
        pt = np.empty((rows_at_once, L, TILE))
        lo0 = np.empty((rows_at_once, TILE))
        tile = np.empty((rows_at_once, 4), np.int64)
        u_end = min(rows.shape[0], (task + 1) * group)
        for jt in range(0, N2p, TILE):
            for u0 in range(task * group, u_end, rows_at_once):
                nr = min(rows_at_once, u_end - u0)
                p_first = T
                for g in range(nr):
                    _tile_start(
                        rows[u0 + g], jt, N2p, T, L, sym, n_out, keys1, keys2, s1, s2, kb,
                        kb_keys, Kg[g], Gg[g], pk[g], pt[g], lo0[g], tile[g],
                    )
                    if tile[g, 1] > 0:
                        p_first = min(p_first, tile[g, 2])
                # one row: its whole chain in one call; several: one call per row and step
                steps = T if nr == 1 else 1
                for p in range(p_first, T, steps):
                    for g in range(nr):
                        if tile[g, 1] > 0 and p + steps > tile[g, 2]:
                            # chain 0, as an int64 (a literal 0 compiles a second _chain)
                            _chain(
                                rows[u0 + g], tile[g, 0], tile[g, 1], np.int64(0), x1, x2, f1,
                                f2, cst, Kg[g], Gg[g], dr, gl, pk[g], pt[g], lo0[g], tab, acc0,
                                prof, max(p, tile[g, 2]), p + steps, s2, live,
                            )
                for g in range(nr):
                    i, j0, n = rows[u0 + g], tile[g, 0], tile[g, 1]
                    if n == 0:
                        continue
                    w = min(n, n_out - j0)
                    for l in range(L):
                        for j in range(w):
                            if s_last >= 0:
                                scale = sv2 / (d1[0, i] * d2[0, j0 + j])
                                out[l, s_last, 0, i, j0 + j] = scale * (Kg[g, l, j] + Gg[g, l, j])
                                out[l, s_last, 1, i, j0 + j] = scale * Kg[g, l, j]
                            if s_ps >= 0:
                                scale = sv2 / (d1[1, i] * d2[1, j0 + j])
                                out[l, s_ps, 0, i, j0 + j] = scale * pt[g, l, j]
                                out[l, s_ps, 1, i, j0 + j] = scale * pk[g, l, j]
                    if s_avg < 0:
                        continue
                    si, s_min = s1[i], tile[g, 3]
                    run = (x1, x2, f1, f2, cst, K, G, dr, gl)  # what every chain shares
                    for l in range(L):
                        for j in range(n):
                            sk[l, j] = 0.0
                            st[l, j] = 0.0
                    for k in range(1 - T, T):
                        if k == 0:
                            continue
                        for j in range(n):
                            # the boundary s_h^2 term: chain k where both sequences start
                            # together
                            b = kb if (si - k == s2[j0 + j] and kb_keys == 0.0) else 0.0
                            for l in range(L):
                                K[l, j] = b
                                G[l, j] = 0.0
                        p0 = max(k, si, s_min + k)
                        _chain(i, j0, n, k, *run, sk, st, lo, tab, 1.0, prof, p0, T, s2, live)
                    for l in range(L):
                        for j in range(w):
                            scale = sv2 / (d1[2, i] * d2[2, j0 + j])
                            out[l, s_avg, 0, i, j0 + j] = scale * (st[l, j] + pt[g, l, j])
                            out[l, s_avg, 1, i, j0 + j] = scale * (sk[l, j] + pk[g, l, j])


@njit(inline="always")
def _tile_start(
    i, jt, N2p, T, L, sym, n_out, keys1, keys2, s1, s2, kb, kb_keys, K, G, pk, pt, lo0, tile
):
    """Chain 0 of row i in the tile of columns from jt: its boundary state K, G ``(L, TILE)``,
    zero sums pk, pt, ``lo0`` (1.0 where x_j is x_i), and ``tile`` = (first column j0,
    columns n (0: the row has none here, symmetric), first step p0, earliest column start)."""
    si = s1[i]
    j0 = max(jt, (i // LANES) * LANES if sym else 0)
    tile[0] = j0
    tile[1] = 0
    if j0 >= min(jt + TILE, N2p):
        return
    n = min(jt + TILE, N2p) - j0
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
    tile[1] = n
    tile[2] = max(si, s_min)
    tile[3] = s_min


PAD = 32  # front padding of the per-pair layout: the vector loop may start up to LANES - 1 early


def _half(xa, fa, oa, Ta, xb, fb, ob, Tb, d0, cst, K, G, dr, gl, ak, at, lo, tab, lanes):
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
            _cells(*args, *args2, tab, 1.0, n)


def _avg_pairs(
    pi, pj, x1, f1, s1, x2, f2, s2, keys1, keys2, cst, tab, slots, d1, d2, chunks, lanes, out
):
    """Every slot of the pairs (pi[u], pj[u]) with the ``full`` sum among them and a uniform
    weight profile (every cell weighs 1 before the divisors), one pair at a time
    (each chain runs in unpadded steps: mixed lengths need no mask). For few sequences or
    long ones, where a tile of columns would be mostly padding.

    x1 ``(N1, m, PAD + T)``, f1 ``(N1, 3, L, PAD + T)``: inputs and factors left-padded by
    PAD (step p of the padded batch at PAD + p); s1 ``(N1,)`` starts; the same for x2, f2,
    s2; ``chunks``: pair ranges, one per parallel task; ``cst``, ``slots``, ``d1``, ``d2``,
    ``out`` as in :func:`_bank_rows`. Writes out[..., pi[u], pj[u]] only.
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
                _half(xa, fa, oa, Ta, xb, fb, ob, Tb, half, *work)
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
                    scale = sv2 / (d1[0, i] * d2[0, j])
                    out[l, s_last, 0, i, j] = scale * end_t[l]
                    out[l, s_last, 1, i, j] = scale * end_k[l]
                if s_ps >= 0:
                    scale = sv2 / (d1[1, i] * d2[1, j])
                    out[l, s_ps, 0, i, j] = scale * sum_t[l]
                    out[l, s_ps, 1, i, j] = scale * sum_k[l]
                if s_avg >= 0:
                    scale = sv2 / (d1[2, i] * d2[2, j])
                    out[l, s_avg, 0, i, j] = scale * tot_t[l]
                    out[l, s_avg, 1, i, j] = scale * tot_k[l]


def _diag_variances(xs, starts, L, sw2, su2, sb2, kb, out):
    """out ``(L, N, T)``: S^l(x_i, x_i)(p, p), the pair recursion on (i, i) where the
    correlation is 1 (K = V_phi(S, S, S), the dual's diagonal map: relu S / 2, erf
    (2/pi) arcsin(2S / (1 + 2S)), identity S); 1.0 before the start; xs ``(N, T, m)`` already
    scaled by s_u / sqrt(m)."""
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
                K[l] = _diagonal(S)
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
        out[i] = fast_asin(x[i])


CPU = torch.device("cpu")


def _require() -> None:
    reason = supported("relu", True, CPU)
    if reason is not None:
        raise RuntimeError(f"the compiled kernel bank cannot run: {reason}")


def asin(x: np.ndarray) -> np.ndarray:
    """The compiled arcsin, elementwise in float64 (exposed for testing)."""
    flat = np.ascontiguousarray(x, dtype=np.float64).ravel()
    out = np.empty_like(flat)
    _require()
    _asin_array(flat, out)
    return out.reshape(np.shape(x))


def _quadrature_factors(var: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Factors (r, f, g) of a quadrature dual: r = 1/sqrt(a) (0 if a = 0), f = sqrt(a), g = 1
    (see :class:`~rntk_empirical.nonlinearities.CompiledDual` for what factors are)."""
    pos = var > 0
    r = np.where(pos, 1.0 / np.sqrt(np.where(pos, var, 1.0)), 0.0)
    return r, np.sqrt(np.maximum(var, 0.0)), np.ones_like(var)


QUADRATURE_DUAL = CompiledDual(_quadrature, _quadrature_factors, None)
_TEMPLATES = (_chain, _half, _bank_rows, _avg_pairs, _diag_variances)


class _Kernels:
    """The compiled entry points of one dual: :func:`_bank_rows`, :func:`_avg_pairs` and
    (if the dual has a diagonal map) :func:`_diag_variances`, each a copy of the template
    whose globals bind the dual's cell functions. Each copy gets its own qualified name
    (``_bank_rows__relu_<digest>``), so numba's on-disk cache keeps one entry per dual; the
    digest covers the source files of the dual's functions, since numba only checks this
    file for changes. The cell loops of :func:`_cells_for` get the tag too: their symbols
    in the cached machine code are named by qualified name and a per-process counter, so
    two duals compiled in different processes could otherwise share a symbol, and a process
    loading both from the cache ran the first one's cells for the second (measured: erf and
    gelu, 0.5-1.2 relative error)."""

    def __init__(self, dual: CompiledDual, tag: str):
        cells, masked, step2 = _cells_for(dual.cell)
        for f in (cells, masked, step2):  # a symbol of their own per dual (docstring)
            fn = getattr(f, "py_func", f)  # (f itself without numba: never compiled)
            fn.__qualname__ = f"{fn.__qualname__}__{tag}"
        ns = dict(globals())
        ns.update(_cells=cells, _masked=masked, _step2=step2, _diagonal=dual.diagonal)
        jit = lambda f, **kw: njit(**kw)(self._copy(f, ns, tag))  # noqa: E731
        ns["_chain"] = jit(_chain, fastmath=_FASTMATH)
        ns["_half"] = jit(_half, fastmath=_FASTMATH)
        self.factors = dual.factors
        self.bank_rows = jit(_bank_rows, parallel=True, fastmath=_FASTMATH, cache=True)
        self.avg_pairs = jit(_avg_pairs, parallel=True, fastmath=_FASTMATH, cache=True)
        self.diag_variances = None
        if dual.diagonal is not None:
            self.diag_variances = jit(_diag_variances, parallel=True, cache=True)

    @staticmethod
    def _copy(template, namespace: dict, tag: str):
        fn = types.FunctionType(template.__code__, namespace, template.__name__)
        fn.__qualname__ = f"{template.__qualname__}__{tag}"
        fn.__doc__, fn.__module__ = template.__doc__, template.__module__
        return fn

    def entry_points(self) -> tuple:
        return tuple(e for e in (self.bank_rows, self.avg_pairs, self.diag_variances) if e)


_COMPILED: dict[tuple[str, CompiledDual], _Kernels] = {}


def _source_digest(dual: CompiledDual) -> str:
    """Digest of the files defining the dual's functions and the shared compiled helpers."""
    h = hashlib.sha256()
    for f in (dual.cell, dual.diagonal, fast_asin):
        if f is not None:
            path = inspect.getsourcefile(getattr(f, "py_func", f))
            h.update(Path(path).read_bytes() if path else repr(f).encode())
    return h.hexdigest()[:10]


def _file_digest(*paths: str) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:10]


def _kernels(nonlinearity: str | Nonlinearity) -> _Kernels | None:
    """The compiled entry points of a nonlinearity (built on first use), None if it has a
    closed form without a compiled dual. Every quadrature dual shares one set (phi is in
    the table, not in the code)."""
    nl = get_nonlinearity(nonlinearity) if isinstance(nonlinearity, str) else nonlinearity
    if nl.compiled is None and nl.closed_form:
        return None
    dual = QUADRATURE_DUAL if nl.compiled is None else nl.compiled
    key = ("", dual) if dual is QUADRATURE_DUAL else (nl.name, dual)
    if key not in _COMPILED:
        # the quadrature cell inlines numba_smooth.cell: numba checks only this file
        tag = f"quadrature_{_file_digest(numba_smooth.__file__, compiled_helpers.__file__)}"
        if dual is not QUADRATURE_DUAL:
            tag = f"{re.sub(r'[^0-9A-Za-z]', '_', nl.name)}_{_source_digest(dual)}"
        _COMPILED[key] = _Kernels(dual, tag)
    return _COMPILED[key]


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
    kernels = _kernels(nonlinearity)
    if kernels is None or kernels.diag_variances is None:
        raise ValueError(f"{nonlinearity!r} has no compiled diagonal map (compiled_variances)")
    kernels.diag_variances(x, st, depth, sw2, su2, sb2, kb, out)
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


def _row_group(n_rows: int, most: int, threads: int) -> int:
    """Rows per parallel task of :func:`_bank_rows`: at most ``most``, and a number of tasks
    that is a multiple of the threads (the range is split evenly between them, and the rows
    of a call come in :func:`_balanced_rows` order: equal groups, equal work). Five tasks of
    62 rows on 2 threads left one idle a fifth of each call: tanh ``last`` N=2000 T=50
    9.5-10.7 s, against 6.8-7.6 s for 32 tasks in one call."""
    tasks = threads * max(1, -(-n_rows // (most * threads)))
    return max(1, -(-n_rows // tasks))


def kernel_bank(
    consts: tuple[float, float, float, float, float, bool],
    nonlinearity: str,
    side1,
    side2,
    readouts: tuple[str, ...],
    symmetric: bool,
    progress=None,
    quad_points: int = DEFAULT_QUAD_POINTS,
    series_tol: float | None = None,
    *,
    arch,
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
        readouts: registered readout names (:mod:`rntk_empirical.readouts`); each is read
            from one compiled pass as its kind's slot (final cell, end-aligned sum, sum of
            every cell), one pass per distinct weight profile of the summed readouts.
        symmetric: side2 is side1; only j >= i is computed, the rest mirrored.
        progress: optional callable, called with the number of rows finished after each
            chunk of rows (of the last pass).
        quad_points: Gauss-Hermite points per dimension of a quadrature dual (nonlinearities
            without a closed form: :func:`quadrature_table`).
        series_tol: error tolerance of the smooth-dual series (None: its default 1e-9;
            :mod:`rntk_empirical.smooth_dual`).
        arch: the :class:`~rntk_empirical.architecture.Architecture` the readouts' weights
            read (``ema_decay``).
    """
    _require()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    as_np = lambda t: t.detach().to("cpu", torch.float64).numpy()  # noqa: E731
    x1, var1 = as_np(side1.xs), as_np(side1.var)
    x2, var2 = as_np(side2.xs), as_np(side2.var)
    N1, N2 = x1.shape[0], x2.shape[0]
    N2p = -(-N2 // LANES) * LANES
    kernels = _kernels(nonlinearity)
    if kernels is None:
        why = supported(nonlinearity, True, CPU)
        raise ValueError(f"the compiled kernel bank cannot run: {why}")
    f1 = np.stack(kernels.factors(var1))  # (3, L, N1, T)
    f2 = _pad_columns(np.stack(kernels.factors(var2)).transpose(0, 1, 3, 2), N2p)
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
    L, T = var1.shape[0], var1.shape[2]
    tab = _NO_TABLE
    quadrature = get_nonlinearity(nonlinearity).compiled is None
    smooth = quadrature and quad_points == DEFAULT_QUAD_POINTS  # else the rule asked for
    offsets = None
    if smooth:  # blocks in access order: the columns of a tile step by step, or pair by pair
        full = any(get_readout(r).kind(T, arch) == "full" for r in readouts)
        by_step = not (full and pairwise(N2, T))
        v2 = np.ascontiguousarray(var2.transpose(0, 2, 1)) if by_step else var2
        sides_var = [v2] if symmetric else [var1, v2]
        prepared = numba_smooth.table_or_none(nonlinearity, *sides_var, tol=series_tol)
        if prepared is not None:
            tab, offs = prepared
            o2 = offs[-1].transpose(0, 2, 1) if by_step else offs[-1]  # (L, N2, T)
            offsets = (o2 if symmetric else offs[0], o2)
    if offsets is not None:  # g factors: the sides' block offsets in the series table
        f1[2], f2[2] = offsets[0], numba_smooth.HEAD
        f2[2, :, :, :N2] = offsets[1].transpose(0, 2, 1)
    elif quadrature:  # the tabulated Gauss-Hermite rule
        var_max = max(float(var1.max(initial=0.0)), float(var2.max(initial=0.0)))
        tab = quadrature_table(nonlinearity, var_max, quad_points)
    order = _balanced_rows(N1, symmetric)
    lengths = (torch.from_numpy(T - s1).double(), torch.from_numpy(T - s2[:N2]).double())
    result = {}
    passes = _readout_passes(readouts, T, arch)
    for n_pass, (prof, slot_names) in enumerate(passes):
        wanted = [slot_names[k] for k in _READOUT_SLOTS if k in slot_names]
        slots = np.array(
            [wanted.index(slot_names[k]) if k in slot_names else -1 for k in _READOUT_SLOTS],
            np.int64,
        )
        d1, d2 = np.ones((3, N1)), np.ones((3, N2p))
        for k, name in slot_names.items():
            ro = get_readout(name)
            d1[_READOUT_SLOTS.index(k)] = ro.divisors(lengths[0], arch).numpy()
            d2[_READOUT_SLOTS.index(k), :N2] = ro.divisors(lengths[1], arch).numpy()
        uniform = bool((prof == 1.0).all())
        out = np.zeros((L, len(wanted), 2, N1, N2))
        pairs = "full" in slot_names and uniform and pairwise(N2, T)
        report = progress if n_pass == len(passes) - 1 else None
        # Each call is one parallel region, whose barrier costs milliseconds when the cores
        # are shared (measured: 60-90 ns instead of 9 per cell for ``last`` in 64 calls): one
        # call unless progress is reported (then up to 64 calls, or 8 for final-cell readouts,
        # whose row groups, the rows that reuse a tile's column data from cache, would shrink
        # in small calls), pair lists capped at ~1e6 pairs.
        group, calls = (ROW_GROUP, 64) if "full" in slot_names else (ROW_GROUP_FINAL, 8)
        chunk = max(2 * numba.get_num_threads(), -(-N1 // calls)) if report is not None else N1
        if pairs:
            chunk = min(chunk, max(1, 2**20 // N2))
            f2n = np.stack(kernels.factors(var2)).transpose(2, 0, 1, 3)  # (N2, 3, L, T)
            if offsets is not None:
                f2n[:, 2] = offsets[1].transpose(1, 0, 2)
            px1, pf1 = _pad_front(x1.transpose(0, 2, 1)), _pad_front(f1.transpose(2, 0, 1, 3))
            px2, pf2 = _pad_front(x2.transpose(0, 2, 1)), _pad_front(f2n)
            if offsets is not None:  # the padding's scratch cells read a valid block
                pf1[:, 2, :, :PAD] = pf2[:, 2, :, :PAD] = numba_smooth.HEAD
            len1, len2 = T - s1, var2.shape[2] - s2[:N2]
        for s in range(0, N1, chunk):
            rows = order[s : s + chunk]
            if pairs:
                pi, pj, bounds = _pair_chunks(
                    rows, len1, len2, symmetric, 4 * numba.get_num_threads()
                )
                args = (px1, pf1, s1, px2, pf2, s2, keys1, keys2, packed, tab, slots)
                # the series' cells are scalar (a term count each): no lanes, so no scratch
                # chains (softplus avg N=64 T=150: 1.3x less time, tanh 1.1x)
                lanes = 1 if offsets is not None else PAIR_LANES
                kernels.avg_pairs(pi, pj, *args, d1, d2, bounds, lanes, out)
            else:
                kernels.bank_rows(
                    rows,
                    _row_group(len(rows), group, numba.get_num_threads()),
                    x1,
                    x2t,
                    f1,
                    f2,
                    keys1,
                    keys2,
                    s1,
                    s2,
                    packed,
                    tab,
                    slots,
                    prof,
                    d1,
                    d2,
                    symmetric,
                    N2,
                    offsets is not None,
                    out,
                )
            if report is not None:
                report(len(rows))
        if symmetric:
            _mirror(out)
        t = torch.from_numpy(out)
        for k, name in slot_names.items():
            theta, nngp = t[:, wanted.index(name), 0], t[:, wanted.index(name), 1]
            if k == "final":  # the final weight's profile factor (1 for ``last``)
                w0 = float(get_readout(name).profile_values(1, arch)[0]) ** 2
                if w0 != 1.0:
                    theta, nngp = theta * w0, nngp * w0
            for l in range(L):
                result[(l + 1, name)] = (theta[l], nngp[l])
    return {(l + 1, r): result[(l + 1, r)] for r in readouts for l in range(L)}


def _readout_passes(
    readouts: tuple[str, ...], T: int, arch
) -> list[tuple[np.ndarray, dict[str, str]]]:
    """The compiled passes for these readouts: ``(profile (T,), {kind: readout})`` each, at
    most one readout per kind and one weight profile per pass (``final`` readouts take any)."""
    passes: list[list] = []
    for name in dict.fromkeys(readouts):
        ro = get_readout(name)
        kind = ro.kind(T, arch)
        prof = None if kind == "final" else ro.profile_values(T, arch).numpy()
        for p in passes:
            if kind not in p[1] and (prof is None or p[0] is None or np.array_equal(p[0], prof)):
                p[0] = prof if p[0] is None else p[0]
                p[1][kind] = name
                break
        else:
            passes.append([prof, {kind: name}])
    return [(np.ones(T) if p[0] is None else p[0], p[1]) for p in passes]
