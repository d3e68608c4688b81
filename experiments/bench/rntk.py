"""Benchmark of the analytic RNTK recursion (issues 3 and 17).

    python -m experiments.bench.rntk [--quick] [--threads K] [--torch] [--repeats R]

First the public API at the sizes of issue 17 (``analytic_ntk`` as users call it, backend
``auto``; cells = N^2 T^2 for ``avg``, N^2 T for ``last``, per second): mean pooling at
(N, T) = (4, 1000) and (64, 150), the latter with equal and mixed lengths (T from 50 to 150),
last step at (2000, 50), float64 and float32 kernels, next to the machine's measured float64
peak (the best dgemm, on every thread) turned into a bound in cells per second by the
~``FLOPS_PER_CELL`` operations of one ReLU cell and layer (the arcsin polynomial, two square
roots, the recursion and the sums) -- the gap to the limit in one run. A bound, not a
promise: the square roots and the selects do not run at the FMA rate. ``--torch`` adds the
torch backend at smaller sizes (10-1000x slower there). ``--api-only`` stops after it.
The smooth-dual series (issue 27): tanh last step (2000, 50), mean pooling (64, 150) and
(2, 2000), and softplus, sigmoid, swish, GELU (F.gelu registered as ``gelu_series``) at
(64, 150), each with the ReLU rate at the same size divided by its own; the built-in GELU's
closed form ("GELU (closed form)") at tanh's three sizes, with time / tanh time for each
beside tanh. Before a series row's timed call, one on 2 of its sequences grows the smooth
dual's coefficient grid to the call's variance range (once per process and nonlinearity,
like the compile; printed as "+... s once"), so the row is the per-call rate. Each row is
the best of ``--repeats`` calls (default 3; its median beside it): one call alone varied by
up to 1.5x from minute to minute on the shared 2-core machine, which the ratios between
rows took in full.
Then the older table:

Prints pair-steps per second (N1 * N2 * T * L / seconds) for the headline case N = 2000, T = 50,
m = 1, ReLU, L = 1, float64, ``last`` readout -- once with x2 = x (every pair computed) and once
with x2 = None (upper triangle only, mirrored; the rate still counts all N^2 pairs) -- and the
peak extra memory of each case relative to the N x N float64 output, then a small table for the
other readouts and a GPU line (N = 10000, T = 100) when CUDA is available. Each case runs in a
fresh process so its ru_maxrss delta is its own. The 1-minute load average is printed because
other processes on a 2-core machine distort the numbers (OpenMP spin-waiting makes contention
much worse than proportional).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time

import numpy as np

from experiments.bench.smooth_dual import REGISTERED, register_smooth


def _case(kw: dict) -> dict:
    import torch

    from rntk_empirical.analytic import analytic_kernels
    from rntk_empirical.architecture import Architecture

    if kw.get("threads"):
        torch.set_num_threads(kw["threads"])
    device = kw.get("device", "cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(kw["N"], kw["T"], kw["m"], generator=gen, dtype=torch.float64).to(device)
    arch = Architecture(readout=kw["readout"], depth=kw["L"])
    x2 = None if kw["symmetric"] else x
    analytic_kernels(arch, x[:8], None if x2 is None else x2[:8], nngp=False)  # warm up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    theta, _ = analytic_kernels(arch, x, x2, nngp=False)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    N, T, L = kw["N"], kw["T"], kw["L"]
    out_mb = N * N * 8 / 2**20
    if device == "cuda":
        extra_mb = torch.cuda.max_memory_allocated() / 2**20 - 2 * N * T * kw["m"] * 8 / 2**20
    else:
        extra_mb = (rss1 - rss0) / 1024
    return {
        **kw,
        "seconds": dt,
        "pair_steps_per_s": N * N * T * L / dt,
        "extra_mb": extra_mb,
        "output_mb": out_mb,
        "finite": bool(torch.isfinite(theta).all()),
    }


def _run(kw: dict) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_case, (kw,))


def _line(r: dict) -> str:
    mode = "x2=None (symmetric)" if r["symmetric"] else "x2=x (all pairs)"
    return (
        f"{r['readout']:>8s} L={r['L']} N={r['N']:>5d} T={r['T']:>3d} {mode:>20s} "
        f"{r['device']:>4s}: {r['seconds']:7.2f} s  "
        f"{r['pair_steps_per_s'] / 1e6:8.1f} M pair-steps/s"
        f"  extra memory {r['extra_mb']:7.1f} MB ({r['extra_mb'] / r['output_mb']:.2f} x output)"
    )


# Floating-point operations of one ReLU cell and layer in the compiled loop (counted in
# numba_backend: S and Q 7, the correlation and its clamp 4, arcsin 30 with its square root,
# V_phi and V_dphi 10 with a square root, the next layer's drive and the two sums 4).
FLOPS_PER_CELL = 55


def peak_flops(n: int = 1536, seconds: float = 1.0) -> float:
    """Measured float64 FLOP/s of this machine on every torch thread: the best of repeated
    ``n x n`` matrix products (BLAS dgemm, the practical peak of the floating-point units)."""
    import torch

    a = torch.randn(n, n, dtype=torch.float64)
    torch.mm(a, a)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        torch.mm(a, a)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def _api_cases(with_torch: bool, quick: bool) -> list[tuple]:
    """(readout, N, T_min, T_max, dtype, backend, nonlinearity) of the public-API table."""
    cases = []
    for dtype in ("float64", "float32"):
        cases += [
            ("avg", 4, 1000, 1000, dtype, "auto", "relu"),
            ("avg", 64, 150, 150, dtype, "auto", "relu"),
            ("avg", 64, 50, 150, dtype, "auto", "relu"),
            ("last", 500 if quick else 2000, 50, 50, dtype, "auto", "relu"),
        ]
    # the smooth-dual series (tanh and registered smooth nonlinearities, issue 27) at the
    # issue's sizes, each next to ReLU at the same size (the ratio printed)
    smooth = [("last", 500 if quick else 2000, 50), ("avg", 64, 150), ("avg", 2, 2000)]
    cases += [("avg", 2, 2000, 2000, "float64", "auto", "relu")]
    cases += [(r, n, t, t, "float64", "auto", "tanh") for r, n, t in smooth]
    cases += [(r, n, t, t, "float64", "auto", "gelu") for r, n, t in smooth]  # closed form
    cases += [("avg", 64, 150, 150, "float64", "auto", nl) for nl in REGISTERED]
    if with_torch:
        cases += [
            ("avg", 4, 100, 100, "float64", "torch", "relu"),
            ("avg", 16, 50, 50, "float64", "torch", "relu"),
            ("avg", 16, 20, 50, "float64", "torch", "relu"),
            ("last", 500, 50, 50, "float64", "torch", "relu"),
            ("last", 64, 50, 50, "float64", "torch", "tanh"),
        ]
    return cases


LABELS = {"gelu": "GELU (closed form)"}  # the built-in, beside the series of gelu_series
CLOSED_FORMS = ("relu", "gelu")


def api_table(with_torch: bool, quick: bool, repeats: int = 3) -> None:
    """Print cells per second of analytic_ntk for the cases of issues 17 and 27 (the best
    of ``repeats`` calls each, the median beside it) and the peak."""
    import torch

    from rntk_empirical.analytic import analytic_ntk
    from rntk_empirical.architecture import Architecture

    register_smooth()
    peak = peak_flops()
    if peak:
        print(
            f"measured peak {peak / 1e9:.1f} GFLOP/s float64 on {torch.get_num_threads()} "
            f"threads -> at most {peak / FLOPS_PER_CELL / 1e6:.0f} M cells/s "
            f"({FLOPS_PER_CELL} flops per ReLU cell and layer)"
        )
    gen = torch.Generator().manual_seed(0)
    warm, relu, tanh = set(), {}, {}
    for readout, N, t_lo, t_hi, dtype, backend, nl in _api_cases(with_torch, quick):
        lengths = torch.randint(t_lo, t_hi + 1, (N,), generator=gen).tolist()
        x = [torch.randn(t, 1, generator=gen, dtype=torch.float64) for t in lengths]
        arch = Architecture(readout=readout, nonlinearity=nl)
        kw = dict(dtype=getattr(torch, dtype), backend=backend)
        if (readout, dtype, t_lo == t_hi, backend, nl) not in warm:  # compile or load cache
            analytic_ntk(arch, [s[:5] for s in x[:3]], **kw)
            warm.add((readout, dtype, t_lo == t_hi, backend, nl))
        once = ""
        if nl not in CLOSED_FORMS:  # the series' grid, grown once per process to this range
            t0 = time.perf_counter()
            analytic_ntk(arch, x[:2], **kw)
            once = f"  (+{time.perf_counter() - t0:.2f} s once: 2 sequences, the grid's range)"
        times = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            analytic_ntk(arch, x, **kw)
            times.append(time.perf_counter() - t0)
        dt, median = min(times), float(np.median(times))
        L = torch.tensor(lengths, dtype=torch.float64)
        cells = float(L.sum() ** 2) if readout == "avg" else float(N * N * t_hi)
        rate = cells / dt
        lens = f"T={t_lo}" if t_lo == t_hi else f"T={t_lo}..{t_hi}"
        closed = nl == "relu" and readout == "avg"
        gap = f"  {rate * FLOPS_PER_CELL / peak:6.1%} of peak" if peak and closed else ""
        key = (readout, N, t_lo, t_hi, dtype, backend)
        if nl == "relu":
            relu[key] = rate
        elif key in relu:
            gap = f"  ReLU / this {relu[key] / rate:6.1f}x"
        if nl == "tanh":
            tanh[key] = rate
        elif key in tanh:
            gap += f"  time / tanh time {tanh[key] / rate:6.3f}"
        label = LABELS.get(nl, nl)
        print(
            f"analytic_ntk {label:>18s} {readout:>4s} N={N:>4d} {lens:>11s} {dtype} {backend:>5s}: "
            f"{dt:8.3f} s (median {median:.3f})  {rate / 1e6:9.3f} M cells/s{gap}{once}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller headline case (N=500)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per case")
    ap.add_argument("--torch", action="store_true", help="also the torch backend (small sizes)")
    ap.add_argument("--api-only", action="store_true", help="only the public-API table")
    ap.add_argument("--repeats", type=int, default=3, help="calls per API row (the best counts)")
    args = ap.parse_args()
    print(f"load average (1 min) {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    api_table(args.torch, args.quick, args.repeats)
    if args.api_only:
        return
    N = 500 if args.quick else 2000
    base = {
        "N": N,
        "T": 50,
        "m": 1,
        "L": 1,
        "readout": "last",
        "device": "cpu",
        "threads": args.threads,
    }
    for sym in (False, True):
        print(_line(_run({**base, "symmetric": sym})), flush=True)
    n_small = 200 if args.quick else 500
    for readout, T, L in (("per_step", 50, 1), ("last", 50, 2), ("avg", 20, 1)):
        r = _run({**base, "N": n_small, "T": T, "L": L, "readout": readout, "symmetric": True})
        print(_line(r), flush=True)
    import torch

    if torch.cuda.is_available():
        r = _run({**base, "N": 10000, "T": 100, "device": "cuda", "symmetric": False})
        print(_line(r), flush=True)
        r = _run({**base, "N": 10000, "T": 100, "device": "cuda", "symmetric": True})
        print(_line(r), flush=True)
    else:
        print("CUDA not available: no GPU line")


if __name__ == "__main__":
    main()
