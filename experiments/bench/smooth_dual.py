"""Benchmark of the smooth-nonlinearity dual (issue 27): speed, precompute cost, error.

    python -m experiments.bench.smooth_dual [--quick]

Per nonlinearity (tanh and registered softplus, sigmoid, swish and ``gelu_series``: F.gelu
registered under another name, so the series' contract stays measured on GELU, which is
built in with a closed form as ``gelu``), in one run:

1. the variance range the recursion reaches: the diagonal recursion S(t) = s_w^2 V_phi(S(t-1))
   + x_t^2 + s_b^2 on 4 sequences of T = 10^4 standard-normal inputs (m = 1), for s_w = sqrt 2
   (the default) and 3;
2. the largest error of the compiled cells against the high-order reference
   (:func:`rntk_empirical.smooth_dual.reference_dual`) over a grid of (a, b, rho) spanning
   that range, relative to the cell's scale sqrt(V(a,a,1) V(b,b,1)), at tol = 1e-9;
3. the precompute: the grid (first call in a process) and the per-call table for 9,600
   variances (N = 64, T = 150) and 100,000 (N = 2000, T = 50);
4. cells per second of the public API (``analytic_kernels``, NTK only), series vs the
   current Gauss-Hermite rule (asked for by quad_points=63, one point below the default,
   which keeps the rule), last step
   N = 16, T = 20 (both paths) and the series alone on the issue's cases;
5. the cost curve of ``series_tol`` (tanh): the measured error at each tolerance, the mean
   terms a side needs per part and |rho| bin, and cells per second through the public API.

The machine is shared: ratios within one run are what to read, not absolute rates.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

F = torch.nn.functional
REGISTERED = {
    "softplus": F.softplus,
    "sigmoid": torch.sigmoid,
    "swish": lambda x: x * torch.sigmoid(x),
    "gelu_series": F.gelu,  # not "gelu": the built-in closed form (registry refuses it)
}
NAMES = ("tanh", *REGISTERED)
DIVERGED_RANGE = 25.0  # the error grid's largest variance where the recursion diverges (the
# reference needs GiB at 100: 19 GiB measured for softplus)


def register_smooth() -> None:
    """Register the four smooth nonlinearities of the benchmarks (once per process)."""
    from rntk_empirical.nonlinearities import available_nonlinearities, register_nonlinearity

    for name, phi in REGISTERED.items():
        if name not in available_nonlinearities():
            register_nonlinearity(name, phi)


def variance_range(name: str, sw: float, T: int) -> float:
    """The largest S(t) of the diagonal recursion over 4 sequences of T steps."""
    from rntk_empirical import smooth_dual as sd

    x2 = torch.randn(4, T, generator=torch.Generator().manual_seed(0), dtype=torch.float64) ** 2
    sm = sd.prepare_smooth(name, 64.0)
    K, top = np.zeros(4), 0.0
    for t in range(T):
        S = sw * sw * K + x2[:, t].numpy() + 0.01
        top = max(top, float(S.max()))
        if top > sd.MAX_VARIANCE:  # unbounded phi with a large s_w: grows geometrically
            return math.inf
        if top > sm.var_max:
            sm = sd.prepare_smooth(name, min(2 * top, sd.MAX_VARIANCE))
        K = sm.grid.diagonal(np.sqrt(S))[:, 0]
    return top


def max_errors(name: str, var_max: float, tols=(None,)) -> tuple[list[float], int]:
    """Largest |V - V_ref| / scale over a grid of cells (V_phi and V_dphi) at each tol
    (None: the default), and the count of cells (the references computed once)."""
    from rntk_empirical import smooth_dual as sd
    from rntk_empirical.analytic import numba_smooth
    from rntk_empirical.nonlinearities import get_nonlinearity

    nl = get_nonlinearity(name)
    vs = [0.0, 0.01, 0.5, 2.0, var_max / 4, var_max]
    rhos = [-1.0, -0.999, -0.6, 0.0, 0.3, 0.9, 0.99, 0.9999, 1.0]
    cells = [(a, b, r) for i, a in enumerate(vs) for b in vs[i:] for r in rhos]
    a, b, r = (np.array(c) for c in zip(*cells))
    diag = {v: sd.reference_dual(nl, v, v, 1.0) for v in vs}
    ref = np.array([sd.reference_dual(nl, x, y, z) for x, y, z in cells])  # (cells, 2)
    scale = np.array([[math.sqrt(diag[x][q] * diag[y][q]) for q in range(2)] for x, y, _ in cells])
    worst = []
    for tol in tols:
        got = np.stack(numba_smooth.evaluate(name, a, b, r, tol=sd.resolve_tol(tol)), 1)
        err = np.abs(got - ref)
        worst.append(float(np.where(scale > 0, err / np.where(scale > 0, scale, 1.0), err).max()))
    return worst, len(cells)


def api_rate(name: str, readout: str, N: int, T: int, **kw) -> tuple[float, float]:
    from rntk_empirical.analytic import analytic_kernels
    from rntk_empirical.architecture import Architecture

    arch = Architecture(readout=readout, nonlinearity=name)
    x = torch.randn(N, T, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    analytic_kernels(arch, x[:3, :5], nngp=False, **kw)  # compile or load the cache
    t0 = time.perf_counter()
    analytic_kernels(arch, x, nngp=False, **kw)
    dt = time.perf_counter() - t0
    cells = N * N * (T * T if readout == "avg" else T)
    return dt, cells / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T = 1000 for the range, small API cases")
    ap.add_argument("--names", default=",".join(NAMES), help="comma-separated nonlinearities")
    ap.add_argument("--skip-error", action="store_true", help="skip sections 1-2 (slow)")
    ap.add_argument("--skip-table", action="store_true", help="section 3 without 100,000")
    args = ap.parse_args()
    names = args.names.split(",")
    from rntk_empirical import smooth_dual as sd
    from rntk_empirical.analytic import numba_smooth

    register_smooth()
    print(f"load average (1 min) {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    T_range = 1000 if args.quick else 10_000
    print(f"\n1-2. variance range of the diagonal recursion (T = {T_range}) and the error")
    for name in [] if args.skip_error else names:
        t0 = time.perf_counter()
        sd.prepare_smooth(name, 64.0)
        grid_s = time.perf_counter() - t0
        ranges = [variance_range(name, sw, T_range) for sw in (math.sqrt(2.0), 3.0)]
        # where the recursion diverges (unbounded phi) the series refuses past MAX_VARIANCE
        # and the reference cannot resolve cells there: the error is measured up to the
        # finite range, or up to DIVERGED_RANGE where both diverge
        reach = max((r for r in ranges if math.isfinite(r)), default=DIVERGED_RANGE)
        (err,), n = max_errors(name, min(reach, sd.MAX_VARIANCE))
        print(
            f"  {name:8s} max S: {ranges[0]:6.2f} (s_w=sqrt2), {ranges[1]:6.2f} (s_w=3; inf: "
            f"past {sd.MAX_VARIANCE:g}, the recursion diverges)  "
            f"max error {err:.1e} of the scale over {n} cells (a, b <= {reach:.1f}); "
            f"grid {grid_s:.2f} s"
        )
    print("\n3. per-call table (numba_smooth.prepare)")
    sizes = (9_600,) if args.skip_table else (9_600, 100_000)
    rng = np.random.default_rng(0)
    for n in sizes:
        var = 2.0 * rng.random(n) + rng.standard_normal(n) ** 2
        t0 = time.perf_counter()
        tab, _ = numba_smooth.prepare("tanh", [var])
        print(f"  {n:7d} variances: {time.perf_counter() - t0:.2f} s, {tab.nbytes / 2**20:.0f} MiB")
    print("\n4. public API (analytic_ntk), series vs the Gauss-Hermite rule")
    small = ("last", 16, 20)
    cases = [("last", 2000, 50), ("avg", 64, 150), ("avg", 2, 2000)]
    if args.quick:
        cases = [("last", 500, 50), ("avg", 32, 100), ("avg", 2, 1000)]
    for name in names:
        _, quad = api_rate(name, *small, quad_points=63)
        _, series = api_rate(name, *small)
        print(
            f"  {name:8s} last N=16 T=20: rule {quad / 1e6:7.3f} M cells/s, series "
            f"{series / 1e6:7.3f} M cells/s ({series / quad:.0f}x)"
        )
        for readout, N, T in cases if name == "tanh" else cases[1:2]:
            dt, rate = api_rate(name, readout, N, T)
            print(f"  {name:8s} {readout:4s} N={N:4d} T={T:4d}: {dt:7.2f} s {rate / 1e6:7.2f} M/s")
    print("\n5. series_tol (tanh): error, terms per cell and API speed (analytic_ntk)")
    pool = 2.0 * rng.random(2_000) + rng.standard_normal(2_000) ** 2  # 2,000 sides
    tols = (1e-6, 1e-9, 1e-10, 1e-11, 1e-12)
    errors, n = max_errors("tanh", 25.0, tols)
    case = ("avg", 32, 100) if args.quick else ("avg", 64, 150)
    for tol, err in zip(tols, errors):
        sm = sd.prepare_smooth("tanh", 64.0, tol)
        terms = sd.side_table(sm.grid, pool, tol).terms  # (sides, 4 parts, |rho| bins)
        covered = terms[terms >= 0]
        dt, rate = api_rate("tanh", *case, series_tol=tol)
        print(
            f"  tol {tol:.0e}: max error {err:.1e} of the scale ({n} cells, a, b <= 25), "
            f"{covered.mean():5.1f} terms per part and |rho| bin (mean over 2,000 sides), "
            f"{case[0]} N={case[1]} T={case[2]}: {dt:5.2f} s {rate / 1e6:6.2f} M cells/s"
        )


if __name__ == "__main__":
    main()
