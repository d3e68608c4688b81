"""The public functions: :func:`analytic_kernels`, :func:`analytic_ntk`, :func:`analytic_nngp`."""

from __future__ import annotations

import contextlib
import sys

import torch

from rntk_empirical.analytic import numba_backend
from rntk_empirical.analytic.bank import compiled_bank
from rntk_empirical.analytic.common import (
    blocks,
    finish,
    setup,
    sides,
    write_block,
)
from rntk_empirical.analytic.inplace import Workspace, pair_block_fused
from rntk_empirical.analytic.reference import pair_block
from rntk_empirical.architecture import Architecture
from rntk_empirical.cells import get_cell
from rntk_empirical.dual import DEFAULT_QUAD_POINTS, get_fused_dual
from rntk_empirical.nonlinearities import get_nonlinearity
from rntk_empirical.readouts import get_readout

# Cells (pairs x steps x layers) per second of the compiled paths on 2 cores
# (``python -m experiments.bench.rntk --api-only``): closed-form duals, and the smooth-dual
# series of tanh and registered nonlinearities (measured 25-50 M at the default series_tol,
# counting the N (N + 1) / 2 pairs a symmetric call computes, where the benchmarks count N^2:
# softplus mean pooling N=64 T=150 ~25 M, tanh last step N=2000 T=50 ~29 M, tanh mean pooling
# ~48 M). Only for the estimate below.
COMPILED_CELLS_PER_SECOND = {"closed form": 3e8, "series": 2.5e7}
PROGRESS_AFTER_SECONDS = 5.0  # a compiled call estimated longer shows a progress bar


def estimated_seconds(arch: Architecture, n1: int, n2: int, T: int, symmetric: bool) -> float:
    """Rough wall time of a compiled call: its cells (pairs, end-aligned or every step pair
    as the readout needs, layers, directions) over the measured rate of its dual's path."""
    pairs = n1 * (n1 + 1) / 2 if symmetric else n1 * n2
    steps = T * T if get_readout(arch.readout).kind(T, arch) == "full" else T
    cells = pairs * steps * arch.depth * arch.directions
    kind = "series" if get_nonlinearity(arch.nonlinearity).compiled is None else "closed form"
    return cells / COMPILED_CELLS_PER_SECOND[kind]


def _progress_bar(estimate: float, rows: int, unit: str = "row"):
    """A tqdm bar over the rows (or other units) of a call that is estimated to take long,
    else a context with no bar (``None``)."""
    if estimate < PROGRESS_AFTER_SECONDS:
        return contextlib.nullcontext()
    from tqdm.auto import tqdm

    desc = f"analytic kernels (~{estimate:.0f} s estimated)"
    return tqdm(total=rows, desc=desc, unit=unit, file=sys.stderr)


def _particle_kernels(
    arch: Architecture, x1, x2, dtype, device, ntk: bool, nngp: bool, options: dict
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The kernels of a cell whose ``analytic`` is ``"particles"``
    (:func:`rntk_empirical.gated_limit.limit_kernels`), with a progress bar when the call is
    estimated to take long."""
    from rntk_empirical import gated_limit
    from rntk_empirical.sequences import as_sequences

    why = gated_limit.supported(arch)
    if why is not None:
        raise ValueError(why)
    s1 = as_sequences(x1, name="x1")
    s2 = None if x2 is None else as_sequences(x2, name="x2")
    n = s1.n + (0 if s2 is None else s2.n)
    T = s1.max_len if s2 is None else max(s1.max_len, s2.max_len)
    particles = options.get("particles") or gated_limit.DEFAULT_PARTICLES
    batches = options.get("batches") or gated_limit.DEFAULT_BATCHES
    estimate = gated_limit.estimated_seconds(arch, n, T, particles, batches)
    steps = batches * T * (2 if ntk else 1)
    with _progress_bar(estimate, steps, "step") as bar:
        progress = None if bar is None else bar.update
        out = gated_limit.limit_kernels(
            arch, s1, s2, ntk=ntk, nngp=nngp, dtype=dtype, device=device, progress=progress,
            **options,
        )  # fmt: skip
    return out.ntk, out.nngp


def analytic_kernels(
    arch: Architecture,
    x1,
    x2=None,
    *,
    dtype: torch.dtype | str = torch.float64,
    device: torch.device | str | None = None,
    block_size: int | None = None,
    ntk: bool = True,
    nngp: bool = True,
    quad_points: int = DEFAULT_QUAD_POINTS,
    series_tol: float | None = None,
    backend: str = "auto",
    **particle_options,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The analytic RNTK and NNGP in one pass: ``(theta, nngp)``, each ``(N1, N2)`` or None.

    Gated cells (``minimalrnn``, ``gru``: ``Cell.analytic == "particles"``) are computed by
    the Tensor-Programs particle simulation :func:`rntk_empirical.gated_limit.limit_kernels`
    (a Monte-Carlo estimate with a stated error, docs/gated.md); its keywords (``particles``,
    ``batches``, ``seed``, ``qmc``, ``tied``) pass through ``particle_options``, and
    ``block_size``, ``quad_points``, ``series_tol`` and ``backend`` do not apply to them.

    Args:
        arch: the :class:`Architecture` (the same object that builds the finite network).
        x1: ``(N1, T, m)`` tensor/array or a list of ``(T_i, m)`` sequences.
        x2: same forms (same m), or None for x2 = x1 (the result is then exactly symmetric
            and only its upper triangle is computed).
        dtype: of the returned kernels, float64 (default) or float32; the recursion runs in
            float64 either way (see :func:`~rntk_empirical.analytic.common.working_dtype`).
        device: cpu / cuda / auto; None uses the inputs' device.
        block_size: rows of the output computed together; None picks it from a memory budget
            (about ``CPU_BLOCK_ELEMENTS`` or ``CUDA_BLOCK_ELEMENTS`` pairs per block).
        ntk, nngp: which kernels to return (the other is None).
        quad_points: Gauss-Hermite points per dimension for nonlinearities without closed form
            (a non-default value asks for that rule instead of the smooth-dual series).
        series_tol: error bound of the smooth-dual series (tanh and registered smooth
            nonlinearities): every dual evaluation is within ``series_tol`` times its
            Cauchy-Schwarz scale sqrt(V(a,a,1) V(b,b,1)) of the exact value. None: 1e-9.
            Tighter costs more terms per cell (``python -m experiments.bench.smooth_dual``
            prints the curve); 1e-12 is the tightest, and a nonlinearity whose grid cannot
            verify the asked tolerance takes the Gauss-Hermite rule with a warning.
        backend: ``numba`` (the compiled CPU recursion of
            :mod:`~rntk_empirical.analytic.numba_backend`: every nonlinearity, any lengths,
            no autograd; ``block_size`` does not apply), ``torch`` (any case, CPU or CUDA,
            differentiable), or ``auto`` (default): numba when numba is installed, the
            inputs are on the CPU and no input requires grad (with grad enabled); torch
            otherwise. Both agree to ~1e-12 relative in float64 for relu / erf / gelu / identity
            and, for quadrature duals (tanh, registered), to the interpolation error of
            numba's table of phi (~1e-11 for tanh; tests/test_analytic_backends.py).

    Raises:
        ValueError: bad inputs (see :func:`rntk_empirical.sequences.as_sequences`), x1 and x2
            of different m, ``series_tol`` outside [1e-12, 1), ``ntk=True`` with
            ``parameterization="standard"``, an unknown backend, or ``backend="numba"``
            where it cannot run (the message says why).
        OverflowError: the kernel overflows the dtype (e.g. large s_w with very long inputs);
            the message names the kernel, dtype, sigma_w, T and what to change.
    """
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"backend={backend!r} is not valid; use auto, numba or torch")
    if isinstance(arch, Architecture) and get_cell(arch.cell).analytic == "particles":
        return _particle_kernels(arch, x1, x2, dtype, device, ntk, nngp, particle_options)
    if particle_options:
        raise ValueError(
            f"unexpected keywords {', '.join(sorted(particle_options))}: they are options of "
            f"the gated cells' particle simulation, and cell {arch.cell!r} has an exact kernel"
        )
    c, dual, s1, s2, rows, out_dtype = setup(
        arch, x1, x2, dtype, device, block_size, ntk, quad_points, series_tol
    )
    symmetric = s2 is None
    N1, N2 = s1.n, (s1.n if symmetric else s2.n)
    differentiable = (
        torch.is_grad_enabled()
        and s1.values.requires_grad
        or (s2 is not None and torch.is_grad_enabled() and s2.values.requires_grad)
    )
    if backend != "torch":
        why_not = compiled_unsupported(arch, s1, differentiable)
        if why_not is None:
            estimate = estimated_seconds(arch, N1, N2, s1.max_len, symmetric)
            with torch.no_grad(), _progress_bar(estimate, N1 * arch.directions) as bar:
                progress = None if bar is None else bar.update
                raw = compiled_bank(
                    c, arch, s1, s2, (arch.readout,), progress, quad_points, series_tol
                )
            theta, k = raw[(arch.depth, arch.readout)]
            done = finish(
                out_dtype, c, s1.max_len, NTK=theta if ntk else None, NNGP=k if nngp else None
            )
            return done["NTK"], done["NNGP"]
        if backend == "numba":
            raise ValueError(f"backend='numba' cannot compute these kernels: {why_not}")
    fused = None if differentiable else get_fused_dual(arch.nonlinearity, quad_points, series_tol)
    ws = None if differentiable else Workspace(arch.depth, rows * N2, s1.values)
    theta_out = s1.values.new_zeros(N1, N2) if ntk else None
    nngp_out = s1.values.new_zeros(N1, N2) if nngp else None
    for d in range(arch.directions):
        side1, side2 = sides(c, dual, s1, s2, d, (arch.readout,))
        for r0, r1, rs, cs in blocks(side1, side2, rows, symmetric):
            if differentiable:
                t_blk, k_blk = pair_block(c, dual, arch.readout, rs, cs, ntk)
                scale = 1.0  # s_v^2 already applied
            else:
                view = ws.view(r1 - r0, cs.xs.shape[0])
                t_blk, k_blk = pair_block_fused(c, fused, arch.readout, rs, cs, ntk, view)
                scale = c.sv2
            if theta_out is not None:
                write_block(theta_out, t_blk, r0, r1, symmetric, scale, not differentiable)
            if nngp_out is not None:
                write_block(nngp_out, k_blk, r0, r1, symmetric, scale, not differentiable)
    done = finish(out_dtype, c, s1.max_len, NTK=theta_out, NNGP=nngp_out)
    return done["NTK"], done["NNGP"]


def compiled_unsupported(arch: Architecture, s1, differentiable: bool) -> str | None:
    """None if :func:`analytic_kernels` can take the compiled (numba) path, else why not:
    gradients are asked for (``differentiable``), numba is missing, or the inputs ``s1`` (a
    :class:`~rntk_empirical.sequences.Sequences`) are not on the CPU."""
    if differentiable:
        return "an input requires grad (the compiled path has no autograd; use torch)"
    return numba_backend.supported(arch.nonlinearity, True, s1.values.device)


def analytic_ntk(
    arch: Architecture,
    x1,
    x2=None,
    *,
    dtype: torch.dtype | str = torch.float64,
    device: torch.device | str | None = None,
    block_size: int | None = None,
    backend: str = "auto",
    **particle_options,
) -> torch.Tensor:
    """The infinite-width NTK Theta(x1_i, x2_j): ``(N1, N2)``. See :func:`analytic_kernels`."""
    theta, _ = analytic_kernels(
        arch,
        x1,
        x2,
        dtype=dtype,
        device=device,
        block_size=block_size,
        ntk=True,
        nngp=False,
        backend=backend,
        **particle_options,
    )
    return theta


def analytic_nngp(
    arch: Architecture,
    x1,
    x2=None,
    *,
    dtype: torch.dtype | str = torch.float64,
    device: torch.device | str | None = None,
    block_size: int | None = None,
    backend: str = "auto",
    **particle_options,
) -> torch.Tensor:
    """The infinite-width NNGP (output covariance) ``(N1, N2)``; any parameterization."""
    _, k = analytic_kernels(
        arch,
        x1,
        x2,
        dtype=dtype,
        device=device,
        block_size=block_size,
        ntk=False,
        nngp=True,
        backend=backend,
        **particle_options,
    )
    return k
