"""Compile the numba kernel bank into its on-disk cache ahead of use.

    python -m rntk_empirical.analytic.warmup          # both parts, in two processes
    python -m rntk_empirical.analytic.warmup tiles    # one part (pairs: the other)

Calls every compiled entry point of :mod:`rntk_empirical.analytic.numba_backend` once, on
tiny inputs, with the argument types the library passes (float64 arrays; equal and mixed
lengths; symmetric and cross; every nonlinearity). numba keeps the machine code on disk
(:func:`numba_backend.disk_cached`), so after this no process compiles: the first call of a
job takes under a second instead of ~40 s. ``scripts/setup.sh`` runs it after installing
the ``fast`` extra; the test suite runs it before its workers start. ``tiles`` compiles the
tiled bank, ``pairs`` the pairwise mean pooling and arcsin: about equal halves (measured
27 s and 17 s cold on 2 cores, 41 s for both in one process). Without numba it does nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch

from rntk_empirical.analytic import numba_backend
from rntk_empirical.analytic.bank import analytic_kernel_bank
from rntk_empirical.architecture import Architecture

PARTS = ("tiles", "pairs")


def warm(part: str, nonlinearities: tuple[str, ...] | None = None) -> None:
    """Compile one part (``tiles`` or ``pairs``) in this process, for ``nonlinearities``
    (None: every one the compiled bank can run, registered ones included)."""
    if part not in PARTS:
        raise ValueError(f"part={part!r}: expected one of {PARTS}")
    if part == "pairs":
        numba_backend.asin(np.zeros(1))
        batches = [[torch.ones(3, 1), torch.ones(2, 1)], [torch.ones(3, 1)] * 2]
    else:  # 100 columns of short sequences: tiles of columns, not pairs
        batches = [[torch.ones(2, 1)] * 100, [torch.ones(2, 1), torch.ones(1, 1)] * 50]
    if nonlinearities is None:
        nonlinearities = numba_backend.compiled_nonlinearities()
    for nl in nonlinearities:
        for x in batches:
            for x2 in (None, x[:3]):
                analytic_kernel_bank(
                    Architecture(nonlinearity=nl), x, x2, dtype=torch.float64, backend="numba"
                )


def warm_all() -> bool:
    """Both parts in two child processes (they compile in parallel). Returns False if numba
    is not installed (nothing to do); raises RuntimeError if a part fails."""
    if not numba_backend.available():
        return False
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rntk_empirical.analytic.warmup"]
    procs = [subprocess.Popen([*cmd, part], env=env) for part in PARTS]
    failed = [part for part, p in zip(PARTS, procs) if p.wait() != 0]
    if failed:
        raise RuntimeError(f"compiling the numba kernel bank failed ({', '.join(failed)})")
    return True


def main(argv: list[str]) -> int:
    if argv:
        if argv[0] not in PARTS:
            print(f"usage: python -m rntk_empirical.analytic.warmup [{'|'.join(PARTS)}]")
            return 2
        warm(argv[0])
        return 0
    if not warm_all():
        print("warmup: numba is not installed; nothing to compile")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
