"""Benchmark of the analytic RNTK recursion (issue 3).

    python -m experiments.bench_rntk [--quick] [--threads K]

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller headline case (N=500)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per case")
    args = ap.parse_args()
    print(f"load average (1 min) {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
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
