"""Benchmark of the gated cells (issue 24): empirical-NTK seconds and the analytic NNGP.

    python -m experiments.bench.gated [--width 256] [--lengths 5 10 20 50] [--nngp]

Empirical NTK of N = 8 sequences (m = 4, float64, CPU, erf, s_w = 1, best of 2) for Elman
(structured method and ntk_vp) and the minimalRNN and GRU with erf gates (jacobian: the
torch.func fallback, and ntk_vp), at each length; ``--nngp`` adds the seconds of the analytic
erf-gated minimalRNN NNGP (N = 4, T = 5; rntk_empirical.gated_kernels).
"""

from __future__ import annotations

import argparse
import time

import torch

from rntk_empirical import Architecture, ElmanRNN, empirical_ntk


def _best(fn, *args, repeats: int = 2, **kw) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args, **kw)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--lengths", type=int, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--nngp", action="store_true")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    n, N, m = args.width, 8, 4
    print(f"empirical NTK seconds, N={N}, m={m}, width {n}, float64 CPU (best of 2)")
    print(f"{'T':>4} {'elman struct':>13} {'elman vp':>9} {'minimal jac':>12} "
          f"{'minimal vp':>11} {'gru jac':>8} {'gru vp':>7}")  # fmt: skip
    for T in args.lengths:
        x = torch.randn(N, T, m, dtype=torch.float64)
        row = []
        for cell in ("elman", "minimalrnn", "gru"):
            arch = Architecture(cell=cell, gate="erf", nonlinearity="erf", sigma_w=1.0)
            model = ElmanRNN(arch, m, n, seed=0)
            for method in ("structured", "ntk_vp"):  # structured: jacobian for gated cells
                row.append(_best(empirical_ntk, model, x, method=method))
        print(f"{T:>4} " + " ".join(f"{s:>{w}.3f}" for s, w in zip(row, (13, 9, 12, 11, 8, 7))))
    if args.nngp:
        from rntk_empirical.gated_kernels import minimalrnn_nngp

        arch = Architecture(cell="minimalrnn", gate="erf", nonlinearity="erf", sigma_w=1.0)
        x = torch.randn(4, 5, m, dtype=torch.float64)
        seconds = _best(minimalrnn_nngp, arch, x, repeats=1)
        print(f"analytic minimalRNN NNGP, N=4, T=5: {seconds:.2f} s")


if __name__ == "__main__":
    main()
