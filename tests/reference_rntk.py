"""A deliberately naive analytic RNTK / NNGP: SPEC section 3 written out as plain loops.

Not a test module (pytest does not collect it): the independent reference that every
analytic backend is compared against in ``test_reference_rntk.py``. It shares nothing with
the library but the dual activations (``rntk_empirical.dual.dual_activations``, which have
their own Monte-Carlo and quadrature checks) and ``Sequences.keys`` for the ``per_input``
x = x' test. Everything else -- boundary, initial-state modes, end alignment of mixed
lengths, the readouts, both directions -- is one pair (x, x') at a time, one layer at a
time, one row t at a time, on full (T + 1) x (T' + 1) tables whose row / column 0 is the
boundary (the cells of one row depend only on the row before, so they share one dual call;
the rest is scalar loops over t'). Slow on purpose; keep inputs tiny.
"""

from __future__ import annotations

import numpy as np
import torch

from rntk_empirical import Architecture
from rntk_empirical.dual import dual_activations
from rntk_empirical.sequences import as_sequences


def _dual(nonlinearity: str, a, b, c) -> tuple[np.ndarray, np.ndarray]:
    """(V_phi, V_dphi) of the covariances [[a, c], [c, b]] (floats or 1-d arrays)."""
    t = lambda v: torch.as_tensor(np.asarray(v, dtype=np.float64))  # noqa: E731
    v, dv = dual_activations(nonlinearity, t(a), t(b), t(c))
    return v.numpy(), dv.numpy()


def _variances(arch: Architecture, x: np.ndarray) -> list[list[float]]:
    """var[l][t] = S^l(x, x)(t, t) for l = 1..L (index l - 1), t = 1..T (index t; 0 unused).

    The recursion with x' = x on the diagonal: K^l(0, 0) = s_h^2 for ``shared`` and
    ``per_input`` (an input always shares its own initial state), 0 for ``zero``."""
    T, m = x.shape
    k0 = 0.0 if arch.h0 == "zero" else arch.sigma_h**2
    var = []
    k_below = [0.0] + [float(x[t - 1] @ x[t - 1]) / m for t in range(1, T + 1)]  # K^0(t, t)
    for _ in range(arch.depth):
        k_prev, col, k_here = k0, [0.0], [0.0]
        for t in range(1, T + 1):
            s = arch.sigma_w**2 * k_prev + arch.sigma_u**2 * k_below[t] + arch.sigma_b**2
            k_prev = float(_dual(arch.nonlinearity, s, s, s)[0])
            col.append(s)
            k_here.append(k_prev)
        var.append(col)
        k_below = k_here
    return var


_VAR_CACHE: dict = {}


def _variances_of(arch: Architecture, x: np.ndarray) -> list[list[float]]:
    """:func:`_variances`, memoized on (architecture, content): the only shortcut taken."""
    key = (arch, x.shape, x.tobytes())
    if key not in _VAR_CACHE:
        _VAR_CACHE[key] = _variances(arch, x)
    return _VAR_CACHE[key]


def _pair_tables(arch: Architecture, x: np.ndarray, y: np.ndarray, same: bool):
    """Per layer l (index l - 1): tables K, G = Kd Q of shape (T + 1, T' + 1), row 0 and
    column 0 being the boundary (the initial state)."""
    T, m = x.shape
    Tp = y.shape[0]
    vx, vy = _variances_of(arch, x), _variances_of(arch, y)
    shares_h0 = arch.h0 == "shared" or (arch.h0 == "per_input" and same)
    k_low = np.zeros((T + 1, Tp + 1))
    for t in range(1, T + 1):
        for tp in range(1, Tp + 1):
            k_low[t, tp] = float(x[t - 1] @ y[tp - 1]) / m  # K^0
    g_low = np.zeros((T + 1, Tp + 1))  # G^0 = Kd^0 Q^0 = 0
    tables = []
    for l in range(arch.depth):
        K = np.zeros((T + 1, Tp + 1))
        G = np.zeros((T + 1, Tp + 1))
        K[0, 0] = arch.sigma_h**2 if shares_h0 else 0.0
        for t in range(1, T + 1):
            # the cells of row t depend only on row t - 1: one dual call for the row
            S = np.zeros(Tp + 1)
            Q = np.zeros(Tp + 1)
            for tp in range(1, Tp + 1):
                S[tp] = (
                    arch.sigma_w**2 * K[t - 1, tp - 1]
                    + arch.sigma_u**2 * k_low[t, tp]
                    + arch.sigma_b**2
                )
                Q[tp] = S[tp] + arch.sigma_w**2 * G[t - 1, tp - 1] + arch.sigma_u**2 * g_low[t, tp]
            v, dv = _dual(arch.nonlinearity, vx[l][t], np.array(vy[l][1:]), S[1:])
            for tp in range(1, Tp + 1):
                K[t, tp] = v[tp - 1]
                G[t, tp] = dv[tp - 1] * Q[tp]
        tables.append((K, G))
        k_low, g_low = K, G
    return tables


def _readouts(arch: Architecture, K: np.ndarray, G: np.ndarray) -> dict[str, tuple[float, float]]:
    """readout -> (theta, nngp) of one pair and direction from its top-layer tables."""
    T, Tp = K.shape[0] - 1, K.shape[1] - 1
    sv2 = arch.sigma_v**2
    out = {"last": (sv2 * (K[T, Tp] + G[T, Tp]), sv2 * K[T, Tp])}
    th = nn = 0.0
    for t in range(1, T + 1):
        for tp in range(1, Tp + 1):
            th += K[t, tp] + G[t, tp]
            nn += K[t, tp]
    out["avg"] = (sv2 * th / (T * Tp), sv2 * nn / (T * Tp))
    th = nn = 0.0
    for back in range(min(T, Tp)):  # end-aligned: the same V_t multiplies both cells
        th += K[T - back, Tp - back] + G[T - back, Tp - back]
        nn += K[T - back, Tp - back]
    norm = np.sqrt(T * Tp)
    out["per_step"] = (sv2 * th / norm, sv2 * nn / norm)
    # paper_avg: independent V_t, the final one weighted sqrt(2): per_step + last / sqrt(T T')
    out["paper_avg"] = tuple(p + f / norm for p, f in zip(out["per_step"], out["last"]))
    # ema: one V reading sum_t lam^(T-t) h_t / sum_t lam^(T-t) (1-indexed t)
    lam = arch.ema_decay
    w = [lam ** (T - t) for t in range(1, T + 1)]
    wp = [lam ** (Tp - t) for t in range(1, Tp + 1)]
    th = nn = 0.0
    for t in range(1, T + 1):
        for tp in range(1, Tp + 1):
            th += w[t - 1] * wp[tp - 1] * (K[t, tp] + G[t, tp])
            nn += w[t - 1] * wp[tp - 1] * K[t, tp]
    out["ema"] = (sv2 * th / (sum(w) * sum(wp)), sv2 * nn / (sum(w) * sum(wp)))
    return out


def reference_bank(
    arch: Architecture, xs: list[np.ndarray], ys: list[np.ndarray] | None = None
) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]:
    """``{(depth l, readout): (theta, nngp)}`` for l = 1..arch.depth and every readout, each
    ``(N1, N2)``; ``ys=None`` means ys = xs. ``arch.readout`` is ignored (a depth-l network is
    the first l layers of a deeper one: nothing flows down)."""
    ys = xs if ys is None else ys
    kx = as_sequences([torch.from_numpy(x) for x in xs]).keys
    ky = as_sequences([torch.from_numpy(y) for y in ys]).keys
    out = {
        (l + 1, r): (np.zeros((len(xs), len(ys))), np.zeros((len(xs), len(ys))))
        for l in range(arch.depth)
        for r in ("last", "avg", "per_step", "paper_avg", "ema")
    }
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            for d in range(arch.directions):
                xd, yd = (x, y) if d == 0 else (x[::-1], y[::-1])
                tables = _pair_tables(arch, xd, yd, kx[i] == ky[j])
                for l, (K, G) in enumerate(tables):
                    for r, (th, nn) in _readouts(arch, K, G).items():
                        out[(l + 1, r)][0][i, j] += th
                        out[(l + 1, r)][1][i, j] += nn
    return out
