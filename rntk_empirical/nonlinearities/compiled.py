"""What the compiled (numba) forms of the nonlinearities share: numba itself (optional; a
stand-in decorator without it), the fast-math flags of the kernel bank and a branch-free
arcsin polynomial (the only transcendental of the ReLU, erf and GELU duals, so the bank's cell
loop contains no library call and vectorizes).

numba is an optional dependency (``pip install rntk_empirical[fast]``): without it
``numba`` is None, :func:`njit` returns the function unchanged and nothing here is called.
"""

from __future__ import annotations

import math
from math import comb

import numpy as np

try:  # optional dependency
    import numba
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised by the torch fallback tests
    numba = None
    prange = range

    def njit(*args, **kwargs):  # the functions stay plain Python and are never called
        return lambda f: f

    def intrinsic(f):
        return f


__all__ = ["FASTMATH", "fast_asin", "horner_products4", "njit", "numba", "prange"]

FASTMATH = {"contract", "reassoc", "nsz"}  # not nnan/ninf: overflow is checked


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

# module globals are compile-time constants for numba (and cacheable)
_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11 = _C


@njit(inline="always", fastmath=FASTMATH, cache=True)
def fast_asin(x):
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


@njit(inline="always", fastmath=FASTMATH, cache=True)
def table_lookup(tab, x, base, x0, ih, n):
    """(phi(x), phi'(x)) from a table of (phi, phi', phi'') at x_k = x0 + k / ih, k < n,
    interleaved from ``tab[base]`` on: cubic Hermite interpolation, x clamped to the table.
    Shared by the compiled Gauss-Hermite rule and the smooth-dual series' fallback rule."""
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


@intrinsic
def horner_products4(typingctx, tab, ci, cj, lo, hi, x, x2, a0, a1, a2, a3):
    """Four polynomials in x at once, their coefficients products of two sides' entries:

        acc_p <- acc_p x^(hi - lo) + sum_{lo <= m < hi} A_m[p] B_m[p] x^(m - lo),
        A_m = tab[ci + 4 m : ci + 4 m + 4],  B_m = tab[cj + 4 m : cj + 4 m + 4],

    for p = 0..3 (acc = (a0, a1, a2, a3) on entry; x2 = x^2 given), returned as a 4-tuple:
    Horner from m = hi - 1 down, four powers a step (one multiply-add on the critical path
    per four terms), the four polynomials as the lanes of one <4 x double> vector (the four
    entries of a power m are adjacent: one vector load per side). Written in LLVM IR because
    neither numba nor LLVM's vectorizers put the four independent chains in one register
    (the scalar loop: 16 loads and 16 floating-point operations per two terms; measured
    3.8x slower for 13 and 82 terms). ``tab`` a contiguous float64 array; no bounds checks."""
    sig = types.UniTuple(types.float64, 4)(tab, ci, cj, lo, hi, x, x2, a0, a1, a2, a3)

    def codegen(context, builder, signature, args):
        v4 = ir.VectorType(ir.DoubleType(), 4)
        i64, i32 = ir.IntType(64), ir.IntType(32)
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        ci, cj, lo, hi = (
            context.cast(builder, v, t, types.int64) for v, t in zip(args[1:5], signature.args[1:5])
        )
        fma_fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v4, [v4, v4, v4]), "llvm.fma.v4f64"
        )

        def fma(a, b, c):
            return builder.call(fma_fn, [a, b, c])

        def vector(values):
            v = ir.Constant(v4, ir.Undefined)
            for k, e in enumerate(values):
                v = builder.insert_element(v, e, ir.Constant(i32, k))
            return v

        def product(m):  # the entries of power m of the two sides, multiplied lane by lane
            at = builder.mul(m, ir.Constant(i64, 4))
            pa = builder.bitcast(builder.gep(data, [builder.add(ci, at)]), v4.as_pointer())
            pb = builder.bitcast(builder.gep(data, [builder.add(cj, at)]), v4.as_pointer())
            return builder.fmul(builder.load(pa, align=8), builder.load(pb, align=8))

        vx, vx2 = vector([args[5]] * 4), vector([args[6]] * 4)
        vx4 = builder.fmul(vx2, vx2)
        acc = cgutils.alloca_once(builder, v4)  # promoted to a register by LLVM
        builder.store(vector(args[7:11]), acc)
        n = builder.sub(hi, lo)
        n = builder.select(builder.icmp_signed("<", n, ir.Constant(i64, 0)), ir.Constant(i64, 0), n)
        top = builder.sub(hi, ir.Constant(i64, 1))
        single = builder.and_(n, ir.Constant(i64, 3))
        with cgutils.for_range(builder, single) as loop:  # the n mod 4 highest powers
            m = builder.sub(top, loop.index)
            builder.store(fma(builder.load(acc), vx, product(m)), acc)
        top = builder.sub(top, single)
        with cgutils.for_range(builder, builder.lshr(n, ir.Constant(i64, 2))) as loop:
            m = builder.sub(top, builder.mul(loop.index, ir.Constant(i64, 4)))
            p = [product(builder.sub(m, ir.Constant(i64, k))) for k in range(4)]
            step = fma(fma(p[0], vx, p[1]), vx2, fma(p[2], vx, p[3]))
            builder.store(fma(builder.load(acc), vx4, step), acc)
        out = builder.load(acc)
        lanes = [builder.extract_element(out, ir.Constant(i32, k)) for k in range(4)]
        return context.make_tuple(builder, signature.return_type, lanes)

    return sig, codegen
