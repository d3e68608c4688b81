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
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised by the torch fallback tests
    numba = None
    prange = range

    def njit(*args, **kwargs):  # the functions stay plain Python and are never called
        return lambda f: f


__all__ = ["FASTMATH", "fast_asin", "njit", "numba", "prange"]

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
