"""Cost and precision of the gated infinite-width kernels (rntk_empirical.gated_limit).

    python -m experiments.bench.gated_limit cost [--lengths 5 10 20 50] [--cells gru minimalrnn]
    python -m experiments.bench.gated_limit precision [--T 5] [--particles 16384 65536 ...]

``cost``: seconds of one ``limit_kernels`` call (NTK and NNGP, default simulation settings,
the candidate integrated exactly where the cell has it) on N = 8 random sequences (m = 4, erf
gates and candidate, s_w = 1, last readout, float64, CPU) at each length; for a cell with an
exact candidate also the sampled candidate (``candidate="particles"``, the engine before
version 2) in the same run, with the ratio. ``precision``: at one length, the kernels of
simulations with more and more particles (``batches`` fixed) against a reference of
``--reference`` particles per batch (the last row), as relative Frobenius differences, with
each one's own relative standard error; the default setting is marked. ``--candidate
particles`` measures the sampled candidate (reference and rows alike).
"""

from __future__ import annotations

import argparse
import time

import torch

from rntk_empirical import Architecture
from rntk_empirical.gated_limit import (
    DEFAULT_BATCHES,
    DEFAULT_PARTICLES,
    EXACT_CANDIDATE,
    limit_kernels,
)
from rntk_empirical.metrics import relative_frobenius


def _arch(cell: str, readout: str = "last") -> Architecture:
    return Architecture(cell=cell, gate="erf", nonlinearity="erf", sigma_w=1.0, readout=readout)


def _inputs(T: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(T)
    return torch.randn(8, T, 4, dtype=torch.float64, generator=gen)


def cost(lengths: list[int], cells: list[str]) -> None:
    threads = torch.get_num_threads()
    print(f"seconds of the NTK + NNGP, N=8, m=4, default settings ({DEFAULT_BATCHES} x "
          f"{DEFAULT_PARTICLES} particles), float64 CPU, {threads} threads")  # fmt: skip
    for cell in cells:
        prev = None
        for T in lengths:
            x = _inputs(T)
            t0 = time.perf_counter()
            exact = "exact" if cell in EXACT_CANDIDATE else None
            r = limit_kernels(_arch(cell), x, candidate=exact)
            s = time.perf_counter() - t0
            growth = "" if prev is None else f"  x{s / prev[1]:.1f} for T x{T / prev[0]:.1f}"
            print(f"{cell:>11} T={T:>3}: {s:7.1f} s  (relative SE: NTK {r.relative_se('ntk'):.1e}, "
                  f"NNGP {r.relative_se('nngp'):.1e}){growth}", flush=True)  # fmt: skip
            prev = (T, s)
            if cell in EXACT_CANDIDATE:
                t0 = time.perf_counter()
                r = limit_kernels(_arch(cell), x, candidate="particles")
                sp = time.perf_counter() - t0
                print(f"{'':>11}   sampled candidate: {sp:7.1f} s (relative SE: NTK "
                      f"{r.relative_se('ntk'):.1e}, NNGP {r.relative_se('nngp'):.1e}); exact / "
                      f"sampled time {s / sp:.2f}", flush=True)  # fmt: skip


def precision(
    T: int, cell: str, particles: list[int], reference: int, batches: int, candidate: str | None
) -> None:
    x = _inputs(T)
    arch = _arch(cell)
    opts = {"candidate": candidate}
    t0 = time.perf_counter()
    ref = limit_kernels(arch, x, particles=reference, batches=batches, seed=1000, **opts)
    print(f"{cell} (candidate {candidate or 'default'}), N=8, T={T}: reference {batches} x "
          f"{reference} particles "
          f"({time.perf_counter() - t0:.0f} s; its relative SE: NTK "
          f"{ref.relative_se('ntk'):.1e}, NNGP {ref.relative_se('nngp'):.1e})")  # fmt: skip
    for P in particles:
        t0 = time.perf_counter()
        r = limit_kernels(arch, x, particles=P, batches=batches, **opts)
        s = time.perf_counter() - t0
        d_ntk = relative_frobenius(r.ntk, ref.ntk)
        d_nngp = relative_frobenius(r.nngp, ref.nngp)
        mark = "  <- default" if (P, batches) == (DEFAULT_PARTICLES, DEFAULT_BATCHES) else ""
        print(f"  {batches} x {P:>7}: vs reference NTK {d_ntk:.2e} NNGP {d_nngp:.2e}; own SE "
              f"NTK {r.relative_se('ntk'):.2e} NNGP {r.relative_se('nngp'):.2e}; {s:.1f} s"
              f"{mark}", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("cost", "precision"))
    ap.add_argument("--lengths", type=int, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--cells", nargs="+", default=["minimalrnn", "gru"])
    ap.add_argument("--T", type=int, default=5)
    ap.add_argument("--particles", type=int, nargs="+", default=[2**12, 2**14, 2**16])
    ap.add_argument("--reference", type=int, default=2**18)
    ap.add_argument("--batches", type=int, default=DEFAULT_BATCHES)
    ap.add_argument("--candidate", choices=("exact", "particles"), default=None)
    args = ap.parse_args(argv)
    if args.what == "cost":
        cost(args.lengths, args.cells)
    else:
        for cell in args.cells:
            precision(args.T, cell, args.particles, args.reference, args.batches, args.candidate)


if __name__ == "__main__":
    main()
