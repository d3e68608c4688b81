"""Every depth and readout of one architecture from a single recursion (torch or numba)."""

from __future__ import annotations

from dataclasses import replace

import torch

from rntk_empirical.analytic import numba_backend, numba_smooth
from rntk_empirical.analytic.common import (
    KernelConstants,
    blocks,
    boundary_value,
    budget,
    final_scale,
    finish,
    readout_kind,
    setup,
    sides,
    write_block,
)
from rntk_empirical.analytic.inplace import (
    Accumulator,
    Workspace,
    all_shifts_block,
    compiled_step,
    shift_block_fused,
)
from rntk_empirical.architecture import Architecture
from rntk_empirical.dual import DEFAULT_QUAD_POINTS, get_dual, get_fused_dual
from rntk_empirical.readouts import available_readouts
from rntk_empirical.sequences import Sequences
from rntk_empirical.smooth_dual import SmoothDualUnsupported


@torch.no_grad()
def analytic_kernel_bank(
    arch: Architecture,
    x1,
    x2=None,
    *,
    readouts: tuple[str, ...] | None = None,
    dtype: torch.dtype | str = torch.float64,
    device: torch.device | str | None = None,
    block_size: int | None = None,
    quad_points: int = DEFAULT_QUAD_POINTS,
    series_tol: float | None = None,
    compile: bool = False,
    backend: str = "auto",
    progress=None,
) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    """Every depth's and readout's RNTK and NNGP of ``arch`` from one recursion.

    Returns ``{(l, readout): (theta, nngp)}`` for l = 1..``arch.depth`` and each readout
    (default: every registered one, :func:`rntk_empirical.readouts.available_readouts`),
    each ``(N1, N2)``, equal to ``analytic_kernels(replace(arch, depth=l, readout=readout),
    x1, x2)`` (``arch.readout`` is ignored; ``arch.ema_decay`` applies). Why one pass
    suffices: layer l of a depth-L network obeys the depth-l recursion (nothing flows down),
    and the ``final`` / ``diag`` readouts read cells of the end-aligned shift that the
    ``full`` ones also run. So the cost is that of the deepest network with the most
    expensive readout requested: O(N1 N2 T L) without a ``full`` readout (every shift:
    ``avg``, ``ema``), O(N1 N2 T^2 L) with one (the numba backend runs one pass per distinct
    non-uniform weight profile). No autograd (see :func:`analytic_kernels` for that).

    Backends: ``numba`` (:mod:`rntk_empirical.analytic.numba_backend`: CPU, any lengths, every
    nonlinearity (closed forms for relu / erf / gelu / identity, a tabulated quadrature otherwise);
    each pair's chains run in registers, 10x the torch path (measured) with mean pooling),
    ``torch`` (any case, CPU or CUDA), ``auto`` (numba where it applies).
    ``compile=True`` runs the torch path's time steps through ``torch.compile`` (needs a C++
    compiler on CPU, Triton on CUDA; one compilation per nonlinearity and process):
    measured 1.3-2.8x faster on CPU. Steps where some pair is still padding stay eager.
    ``progress``: optional callable, called with the number of rows finished after each
    block of rows (every row once per direction). ``quad_points`` and ``series_tol``: as in
    :func:`analytic_kernels`.
    """
    names = available_readouts()
    readouts = names if readouts is None else tuple(readouts)
    bad = [r for r in readouts if r not in names]
    if bad or not readouts:
        raise ValueError(f"readouts={readouts!r}: expected a non-empty subset of {names}")
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"backend={backend!r} is not valid; use auto, numba or torch")
    c, dual, s1, s2, rows, out_dtype = setup(
        arch, x1, x2, dtype, device, block_size, True, quad_points, series_tol
    )
    symmetric = s2 is None
    N1, N2 = s1.n, (s1.n if symmetric else s2.n)
    T = s1.max_len
    equal = bool((s1.lengths == T).all()) and (s2 is None or bool((s2.lengths == T).all()))
    kinds = {r: readout_kind(c, r, T) for r in readouts}
    weighted = [r for r in readouts if kinds[r] != "final"]
    if backend != "torch":
        why_not = numba_backend.supported(arch.nonlinearity, equal, s1.values.device)
        if why_not is None:
            raw = compiled_bank(c, arch, s1, s2, readouts, progress, quad_points, series_tol)
            return _finish_bank(out_dtype, c, T, raw)
        if backend == "numba":
            raise ValueError(f"backend='numba' cannot compute this bank: {why_not}")
    fused = get_fused_dual(arch.nonlinearity, quad_points, series_tol)
    layers = tuple(range(c.depth))
    out = {
        (l + 1, r): (s1.values.new_zeros(N1, N2), s1.values.new_zeros(N1, N2))
        for l in layers
        for r in readouts
    }
    chains = 2 * T - 1 if "full" in kinds.values() else 1
    batch_rows = (block_size * N2 if block_size else budget(s1)) // (chains * N2)
    if equal and batch_rows >= 1:  # small N: all shifts of a row block at once
        for d in range(arch.directions):
            side1, side2 = sides(c, dual, s1, s2, d, readouts)
            for r0, r1, rs, cs in blocks(side1, side2, batch_rows, symmetric):
                for key, (t_blk, k_blk) in all_shifts_block(c, fused, rs, cs, readouts).items():
                    write_block(out[key][0], t_blk, r0, r1, symmetric, c.sv2, True)
                    write_block(out[key][1], k_blk, r0, r1, symmetric, c.sv2, True)
                if progress is not None:
                    progress(r1 - r0)
        return _finish_bank(out_dtype, c, T, out)
    ws = Workspace(arch.depth, rows * N2, s1.values)
    acc_flat = {
        (r, kind): [s1.values.new_empty(rows * N2) for _ in layers]
        for r in weighted
        for kind in "kt"
    }
    step = None
    if compile:
        ct = replace(c, **{k: s1.values.new_tensor(getattr(c, k)) for k in ("sw2", "su2", "sb2")})
        step = (compiled_step(arch.nonlinearity, quad_points, series_tol), ct)
    for d in range(arch.directions):
        side1, side2 = sides(c, dual, s1, s2, d, readouts)
        for r0, r1, rs, cs in blocks(side1, side2, rows, symmetric):
            B, n2 = r1 - r0, cs.xs.shape[0]
            view = ws.view(B, n2)
            accs = {
                r: Accumulator(
                    r,
                    layers,
                    [b[: B * n2].view(B, n2).zero_() for b in acc_flat[(r, "k")]],
                    [b[: B * n2].view(B, n2).zero_() for b in acc_flat[(r, "t")]],
                )
                for r in weighted
            }
            shift_block_fused(c, fused, rs, cs, 0, True, view, tuple(accs.values()), step)
            for r in (r for r in readouts if kinds[r] == "final"):
                sc = final_scale(r, rs, cs)
                for l in layers:
                    theta = torch.add(view["K"][l], view["G"][l], out=view["scratch"])
                    if sc is None:  # a copy: write_block scales in place
                        k = view["S"].copy_(view["K"][l])
                    else:
                        theta.mul_(sc)
                        k = torch.mul(view["K"][l], sc, out=view["S"])
                    t_out, k_out = out[(l + 1, r)]
                    write_block(t_out, theta, r0, r1, symmetric, c.sv2, True)
                    write_block(k_out, k, r0, r1, symmetric, c.sv2, True)
            full = tuple(acc for r, acc in accs.items() if kinds[r] == "full")
            if full:
                for k in range(1 - T, T):
                    if k != 0:
                        shift_block_fused(c, fused, rs, cs, k, True, view, full, step)
            for r, acc in accs.items():
                for l in layers:
                    write_block(out[(l + 1, r)][0], acc.t[l], r0, r1, symmetric, c.sv2, True)
                    write_block(out[(l + 1, r)][1], acc.k[l], r0, r1, symmetric, c.sv2, True)
            if progress is not None:
                progress(r1 - r0)
    return _finish_bank(out_dtype, c, T, out)


def compiled_bank(
    c: KernelConstants,
    arch: Architecture,
    s1: Sequences,
    s2: Sequences | None,
    readouts: tuple[str, ...],
    progress=None,
    quad_points: int = DEFAULT_QUAD_POINTS,
    series_tol: float | None = None,
) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    """``{(l, readout): (theta, nngp)}``, each ``(N1, N2)`` float64 on the CPU, both
    directions summed, through :func:`numba_backend.kernel_bank` (float64 arithmetic
    throughout, the variances included; identical sequences get correlation exactly 1, as
    in the torch path); any lengths. Not yet checked finite (see :func:`finish`).

    ``s1``, ``s2`` as returned by :func:`setup` (``s2`` None: symmetric)."""
    dual = get_dual(arch.nonlinearity, quad_points, series_tol)
    consts = (c.sw2, c.su2, c.sb2, c.sv2, boundary_value(c), c.h0 == "per_input")
    out = None

    closed = numba_backend.compiled_variances(arch.nonlinearity)
    # the smooth-dual series: the diagonal from its grid, compiled; other quadrature duals
    # through the torch dual (O(N T L) cells, same rule)
    smooth = (
        not closed
        and quad_points == DEFAULT_QUAD_POINTS
        and numba_smooth.qualifies(arch.nonlinearity)
    )
    diagonal = numba_smooth.variances if smooth else numba_backend.variances

    def variances(xs: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        return diagonal(arch.nonlinearity, consts, c.depth, xs, starts)

    for d in range(arch.directions):
        try:
            side1, side2 = sides(c, dual, s1, s2, d, (), variances if closed or smooth else None)
        except SmoothDualUnsupported:  # variances past the series' verified range
            side1, side2 = sides(c, dual, s1, s2, d, (), None)
        bank = numba_backend.kernel_bank(
            consts,
            arch.nonlinearity,
            side1,
            side2,
            readouts,
            s2 is None,
            progress,
            quad_points,
            series_tol,
            arch=arch,
        )
        if out is None:
            out = bank
        else:
            for key, (theta, nngp) in bank.items():
                out[key][0].add_(theta)
                out[key][1].add_(nngp)
    return out


def _finish_bank(dtype: torch.dtype, c: KernelConstants, T: int, out: dict) -> dict:
    """Every kernel of the bank in ``dtype``, checked finite (:func:`finish`)."""
    done = {}
    for (l, r), (theta, nngp) in out.items():
        names = (f"NTK ({r}, layer {l})", f"NNGP ({r}, layer {l})")
        cast = finish(dtype, c, T, **{names[0]: theta, names[1]: nngp})
        done[(l, r)] = (cast[names[0]], cast[names[1]])
    return done
