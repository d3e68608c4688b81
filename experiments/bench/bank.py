"""Benchmark of the kernel bank's backends, and what it means for the UCI benchmark (issue 7).

    python -m experiments.bench.bank [--N 600] [--T 57] [--threads K] [--no-torch] [--project]

Times :func:`rntk_empirical.analytic.analytic_kernel_bank` on one (s_u, s_b) unit of the UCI
grid: depth 2, readouts last, per_step and avg (mean pooling: T^2 cells per pair), ReLU,
float32 kernels, x2 = None, N random sequences of length T with m = 1 (spambase's shape by
default). Prints cell-layer updates per second (N (N + 1) / 2 * T^2 * L / seconds) for the
``numba`` and ``torch`` backends and their ratio (one warm-up call each first: numba compiles
on first use). ``--project`` turns the measured numba rate into the kernel time of the whole
UCI grid (both directions, 4 units; mean pooling where T <= 64) from the datasets' shapes.
The 1-minute load average is printed: other processes on a 2-core machine distort the numbers.
"""

from __future__ import annotations

import argparse
import os
import time


def _time_bank(backend: str, N: int, T: int, threads: int | None) -> float:
    import torch

    from rntk_empirical.analytic import analytic_kernel_bank
    from rntk_empirical.architecture import Architecture

    if threads:
        torch.set_num_threads(threads)
    x = torch.rand(N, T, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x / x.flatten(1).norm(dim=1).max()  # the benchmark's row scaling
    arch = Architecture(depth=2, sigma_u=0.5, sigma_b=0.1, sigma_h=0.0)
    kw = dict(readouts=("last", "per_step", "avg"), dtype=torch.float32, backend=backend)
    analytic_kernel_bank(arch, x[:40], **kw)  # warm-up (numba compiles or loads its cache)
    t0 = time.perf_counter()
    analytic_kernel_bank(arch, x, **kw)
    return time.perf_counter() - t0


def _cells(N: int, T: int, L: int = 2) -> float:
    return N * (N + 1) / 2 * T * T * L


def _project(rate: float) -> None:
    from rntk_empirical import uci

    try:
        names = uci.list_datasets()
    except (FileNotFoundError, OSError) as err:
        print(f"no UCI data to project onto ({err})")
        return
    total, rows = 0.0, []
    for name in names:
        N, T = uci.dataset_shape(name)
        per_pair = T * T if T <= 64 else T  # the grid skips mean pooling above T = 64
        cells = N * (N + 1) / 2 * per_pair * 2 * 2 * 4  # L = 2, two directions, 4 units
        total += cells
        rows.append((cells / rate, name, N, T))
    rows.sort(reverse=True)
    print(f"projected kernel time, all {len(names)} datasets: {total / rate / 60:.1f} min")
    for sec, name, N, T in rows[:5]:
        print(f"  {name:<28s} N={N:>5d} T={T:>3d}: {sec / 60:5.1f} min")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=600, help="sequences (default 600)")
    ap.add_argument("--T", type=int, default=57, help="length (default 57, spambase's)")
    ap.add_argument("--threads", type=int, default=None, help="threads (torch and numba)")
    ap.add_argument("--no-torch", action="store_true", help="skip the (slow) torch backend")
    ap.add_argument("--project", action="store_true", help="project onto the UCI grid")
    args = ap.parse_args()
    print(f"load average (1 min) {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    cells = _cells(args.N, args.T)
    rates = {}
    for backend in ("numba",) if args.no_torch else ("numba", "torch"):
        sec = _time_bank(backend, args.N, args.T, args.threads)
        rates[backend] = cells / sec
        print(
            f"{backend:>6s}: N={args.N} T={args.T} L=2 last+per_step+avg float32: {sec:7.2f} s, "
            f"{rates[backend] / 1e6:7.1f} M cell-layers/s ({1e9 / rates[backend]:.2f} ns each)",
            flush=True,
        )
    if "torch" in rates:
        print(f"numba / torch: {rates['numba'] / rates['torch']:.1f}x")
    if args.project:
        _project(rates["numba"])


if __name__ == "__main__":
    main()
