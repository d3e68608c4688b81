"""Fill numba's on-disk cache for the kernel bank: ``python tests/numba_warmup.py tiles|pairs``.

Every compiled entry point of :mod:`rntk_empirical.analytic.numba_backend` with the
argument types the suite uses (float64 arrays; equal and mixed lengths; symmetric and
cross). ``tiles`` compiles the tiled bank (``_bank_rows``), ``pairs`` the pairwise mean
pooling (``_avg_pairs``) and arcsin: two processes, about equal work (measured 27 s and
17 s cold, against 41 s for both in one process). Run by ``conftest.pytest_configure``.
"""

from __future__ import annotations

import sys

import numpy
import torch

from rntk_empirical.analytic import analytic_kernel_bank, numba_backend
from rntk_empirical.architecture import Architecture

PARTS = ("tiles", "pairs")


def warm(part: str) -> None:
    if part not in PARTS:
        raise SystemExit(f"usage: python tests/numba_warmup.py {'|'.join(PARTS)}")
    if part == "pairs":
        numba_backend.asin(numpy.zeros(1))
        batches = [[torch.ones(3, 1), torch.ones(2, 1)], [torch.ones(3, 1)] * 2]
    else:  # 100 columns of short sequences: tiles of columns, not pairs
        batches = [[torch.ones(2, 1)] * 100, [torch.ones(2, 1), torch.ones(1, 1)] * 50]
    for nl in numba_backend.NONLINEARITIES:
        for x in batches:
            for x2 in (None, x[:3]):
                analytic_kernel_bank(
                    Architecture(nonlinearity=nl), x, x2, dtype=torch.float64, backend="numba"
                )


if __name__ == "__main__":
    warm(sys.argv[1] if len(sys.argv) > 1 else "")
