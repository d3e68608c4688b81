"""The shared parts of every analytic code path: the constants of an architecture, one
prepared batch side (:class:`BatchSide`), the one-cell layer update (:func:`layer_step`),
per-sequence variances, boundary values, row blocks and the output checks.

The mathematics is stated in :mod:`rntk_empirical.analytic`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rntk_empirical.architecture import Architecture
from rntk_empirical.cells import get_cell
from rntk_empirical.devices import (
    memory_budget,
    resolve_device,
    resolve_dtype,
)
from rntk_empirical.dual import DualFn, get_dual
from rntk_empirical.readouts import get_readout
from rntk_empirical.sequences import Sequences, as_sequences
from rntk_empirical.smooth_dual import resolve_tol

# Elements (pairs) of one row block: cache-sized on CPU (~1 MiB per float64 buffer),
# large on GPUs. Peak extra memory is ~ (8 + 6 L) buffers of this size.
CPU_BLOCK_ELEMENTS = 2**17


CUDA_BLOCK_ELEMENTS = 2**24


@dataclass(frozen=True)
class KernelConstants:
    sw2: float
    su2: float
    sb2: float
    sh2: float
    sv2: float
    depth: int
    h0: str
    arch: Architecture  # for the readouts' weights (:mod:`rntk_empirical.readouts`)


@dataclass
class BatchSide:
    """One batch, one direction, ready for the recursion.

    Attributes:
        xs: ``(N, T, m)`` inputs scaled by s_u / sqrt(m), so xs_p xs'_q^T = s_u^2 K^0.
        starts: ``(N,)`` first valid padded position s_i.
        keys: ``(N,)`` int64 content keys (``per_input`` x = x' test).
        var: ``(L, N, T)`` variances S^l(x_i, x_i)(p, p); 1.0 at padded positions.
        weights: readout name -> ``(N, T)`` per-step weights w (0 on padding) of
            :meth:`rntk_empirical.readouts.Readout.weights`.
    """

    xs: torch.Tensor
    starts: torch.Tensor
    starts_list: list[int]
    keys: torch.Tensor
    var: torch.Tensor
    weights: dict[str, torch.Tensor]

    def rows(self, sl: slice) -> BatchSide:
        return BatchSide(
            self.xs[sl],
            self.starts[sl],
            self.starts_list[sl],
            self.keys[sl],
            self.var[:, sl],
            {k: w[sl] for k, w in self.weights.items()},
        )


# ---------------------------------------------------------------------------- inputs
def _as_sequences_keep_graph(x, name: str, dtype, device, input_dim=None) -> Sequences:
    """:func:`as_sequences`, but keeping the autograd graph of inputs that require grad.

    (``as_sequences`` validates on detached CPU copies; the analytic kernel is
    differentiated w.r.t. its inputs, so the padded values are rebuilt from the originals.)
    """
    seqs = as_sequences(x, input_dim=input_dim, dtype=dtype, device=device, name=name)
    if isinstance(x, Sequences):
        return seqs
    items = list(x.unbind(0)) if isinstance(x, torch.Tensor) else list(x)
    if not any(isinstance(s, torch.Tensor) and s.requires_grad for s in items):
        return seqs
    T = seqs.max_len
    dev = seqs.values.device
    vals = torch.stack(
        [
            F.pad(torch.as_tensor(s).to(device=dev, dtype=dtype), (0, 0, T - s.shape[0], 0))
            for s in items
        ]
    )
    return Sequences(vals, seqs.lengths)


def _check_block_size(block_size) -> None:
    if block_size is not None and (
        isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1
    ):
        raise ValueError(f"block_size={block_size!r} is not valid; expected None or an int >= 1")


def _input_device(x) -> torch.device | None:
    if isinstance(x, Sequences):
        return x.values.device
    if isinstance(x, torch.Tensor):
        return x.device
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
        return x[0].device
    return None


# ---------------------------------------------------------------------------- recursion
def layer_step(
    c: KernelConstants,
    dual: DualFn,
    K: torch.Tensor,
    G: torch.Tensor | None,
    drive: torch.Tensor,
    G_low: torch.Tensor | None,
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    same: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One layer at one cell (t, t') for a block of pairs.

    Args:
        K, G: the layer's state K^l(t-1, t'-1), G^l(t-1, t'-1); G None skips the NTK part.
        drive: s_u^2 K^{l-1}(t, t') (the input term).
        G_low: G^{l-1}(t, t') (None for layer 1, where G^0 = 0).
        a, b: variances broadcastable against K (a column and a row); None means the
            diagonal run, where a = b = S (pairs (i, i), identical states).
        same: optional bool mask of pairs with identical states (:func:`identical_pairs`).

    Returns:
        (S^l, K^l, G^l) at (t, t').
    """
    # plain arithmetic: the constants may be 0-d tensors (see compiled_step)
    S = c.sw2 * K + drive + c.sb2
    if a is None:
        a = b = S
        same = torch.ones((), dtype=torch.bool, device=S.device)
    v_phi, v_dphi = dual(a, b, S, same)
    if G is None:
        return S, v_phi, None
    Q = S + c.sw2 * G
    if G_low is not None:
        Q = Q + c.su2 * G_low
    return S, v_phi, v_dphi * Q


def identical_pairs(r: BatchSide, s: BatchSide, shift: int) -> torch.Tensor | None:
    """``(B, N2)`` bool: the pairs whose states are identical at every cell of this shift
    (None if there is none), i.e. the same sequence at shift 0: equal lengths and values.

    Their correlation is then exactly 1 (see :mod:`rntk_empirical.dual`, identical states).
    Sharing the initial state needs nothing more: equal content has equal ``per_input`` keys.
    """
    if shift != 0:
        return None
    cand = (r.keys[:, None] == s.keys[None, :]) & (r.starts[:, None] == s.starts[None, :])
    if not bool(cand.any()):
        return None
    ii, jj = cand.nonzero(as_tuple=True)
    equal = (r.xs[ii] == s.xs[jj]).flatten(1).all(1)  # keys are hashes: confirm
    same = torch.zeros_like(cand)
    same[ii[equal], jj[equal]] = True
    return same if bool(equal.any()) else None


def boundary_value(c: KernelConstants) -> float:
    """K^l(0, 0) for a pair that starts together and may share its initial state."""
    return 0.0 if c.h0 == "zero" else c.sh2


def _variances(
    c: KernelConstants, dual: DualFn, xs: torch.Tensor, starts: torch.Tensor
) -> torch.Tensor:
    """``(L, N, T)``: S^l(x_i, x_i)(p, p) by the pair recursion on (i, i); 1.0 before s_i."""
    N, T, _ = xs.shape
    K = [xs.new_full((N,), boundary_value(c)) for _ in range(c.depth)]
    out = []
    for p in range(T):
        active = p >= starts
        drive = (xs[:, p] * xs[:, p]).sum(-1)
        G_low = None
        S_p = []
        for l in range(c.depth):
            S, K_new, _ = layer_step(c, dual, K[l], None, drive, G_low, None, None)
            K[l] = torch.where(active, K_new, K[l])
            S_p.append(torch.where(active, S, 1.0))
            drive = c.su2 * K[l]
        out.append(torch.stack(S_p))
    return torch.stack(out, dim=2)


def _prepare_side(
    c: KernelConstants,
    dual: DualFn,
    seqs: Sequences,
    readouts: tuple[str, ...],
    variances=None,
) -> BatchSide:
    T, m = seqs.max_len, seqs.dim
    starts = (T - seqs.lengths).to(seqs.values.device)
    xs = seqs.values * math.sqrt(c.su2 / m)
    if variances is None:
        var = _variances(c, dual, xs, starts)
    else:
        var = variances(xs, starts).to(device=xs.device, dtype=xs.dtype)
    if not torch.isfinite(var).all():
        raise OverflowError(
            f"the pre-activation variances overflow {dtype_name(seqs.values.dtype)} at "
            f"T={T} (they grow like (s_w^2 / 2)^t for relu, s_w^(2t) for identity, with "
            f"s_w^2={c.sw2:g}); use a smaller sigma_w or shorter sequences"
        )
    lengths = seqs.lengths.to(xs.device)
    weights = {r: get_readout(r).weights(lengths, T, c.arch, xs.dtype) for r in readouts}
    keys = torch.tensor(seqs.keys, dtype=torch.int64, device=xs.device)
    return BatchSide(xs, starts, [int(s) for s in starts.tolist()], keys, var, weights)


def boundary(c: KernelConstants, r: BatchSide, s: BatchSide, shift: int) -> torch.Tensor | None:
    """``(B, N2)`` boundary K^l(t-1, t'-1) of the pairs at this shift (None if all zero):
    s_h^2 for pairs that start together (t = t' = 1) and share h^{l,0}."""
    if c.h0 == "zero" or c.sh2 == 0.0:
        return None
    together = (r.starts[:, None] - shift) == s.starts[None, :]
    if c.h0 == "per_input":
        together = together & (r.keys[:, None] == s.keys[None, :])
    return together.to(r.xs.dtype) * c.sh2


def shift_range(r: BatchSide, s: BatchSide, shift: int, T: int) -> tuple[int, int]:
    p_first = max(0, shift, min(r.starts_list), min(s.starts_list) + shift)
    p_last = min(T - 1, T - 1 + shift)
    return p_first, p_last


def readout_kind(c: KernelConstants, readout: str, T: int) -> str:
    """``final``, ``diag`` or ``full``: :meth:`rntk_empirical.readouts.Readout.kind`."""
    return get_readout(readout).kind(T, c.arch)


def shifts(c: KernelConstants, readout: str, T: int) -> range | tuple[int]:
    """The shifts whose cells a readout weighs: every one for ``full``, else only 0."""
    return get_readout(readout).shifts(T, c.arch)


def final_scale(readout: str, r: BatchSide, s: BatchSide) -> torch.Tensor | None:
    """``(B, N2)`` w(T-1) w'(T'-1) of a ``final`` readout, None where it is 1 for every pair
    (``last``): its kernel is the final cell times this."""
    w_r, w_s = r.weights[readout][:, -1], s.weights[readout][:, -1]
    if bool((w_r == 1.0).all()) and bool((w_s == 1.0).all()):
        return None
    return w_r[:, None] * w_s[None, :]


def write_block(
    out: torch.Tensor,
    blk: torch.Tensor,
    r0: int,
    r1: int,
    symmetric: bool,
    scale: float,
    inplace: bool,
) -> None:
    """Add ``scale * blk`` (rows r0:r1; columns r0: if symmetric, else all) into ``out``."""
    blk = blk * scale if not inplace else blk.mul_(scale)
    if not symmetric:
        if inplace:
            out[r0:r1].add_(blk)
        else:
            out[r0:r1] = out[r0:r1] + blk
        return
    diag = blk[:, : r1 - r0]
    diag = torch.triu(diag) + torch.triu(diag, 1).T  # exactly symmetric
    rest = blk[:, r1 - r0 :]
    if inplace:
        out[r0:r1, r0:r1].add_(diag)
        out[r0:r1, r1:].add_(rest)
        out[r1:, r0:r1].add_(rest.T)
    else:
        out[r0:r1, r0:r1] = out[r0:r1, r0:r1] + diag
        out[r0:r1, r1:] = out[r0:r1, r1:] + rest
        out[r1:, r0:r1] = out[r1:, r0:r1] + rest.T


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the recursion for kernels returned in ``dtype``: always float64.

    A float32 recursion loses the accuracy float32 can hold (measured 1.7e-2 relative at
    T = 1000 before this choice): the errors of the states compound over T steps. The numba
    backend has always worked in float64; the torch path now does the same, and float32 only
    sets the returned dtype (float32 output, half the memory for the N1 x N2 results)."""
    return torch.float64


def setup(
    arch: Architecture,
    x1,
    x2,
    dtype,
    device,
    block_size,
    ntk: bool,
    quad_points: int,
    series_tol: float | None = None,
) -> tuple[KernelConstants, DualFn, Sequences, Sequences | None, int, torch.dtype]:
    """Validate the arguments; returns (constants, dual, x1, x2 or None, rows per block, the
    dtype of the returned kernels). x1 and x2 come in :func:`working_dtype`."""
    resolve_tol(series_tol)  # a bad value fails here, whatever the nonlinearity
    if not isinstance(arch, Architecture):
        raise TypeError(f"arch must be an Architecture, got {type(arch).__name__}")
    if get_cell(arch.cell).analytic != "elman":
        raise ValueError(
            f"cell {arch.cell!r} has no analytic kernel (the analytic backends implement the "
            "Elman recursion); use the empirical kernels for it"
        )
    if ntk and arch.parameterization == "standard":
        raise ValueError(
            "the NTK has no finite infinite-width limit in the 'standard' parameterization "
            "(the weight gradients are not scaled by 1/sqrt(n), so the NTK grows linearly "
            "with the width); use parameterization='ntk', or analytic_nngp (identical in both)"
        )
    _check_block_size(block_size)
    dtype = resolve_dtype(dtype)
    dev = resolve_device(device) if device is not None else _input_device(x1)
    # no TF32 policy needed: the recursion runs in float64 (working_dtype), where TF32 never
    # applies; library code leaves the process-wide flags alone
    work = working_dtype(dtype)
    s1 = _as_sequences_keep_graph(x1, "x1", work, dev)
    s2 = None if x2 is None else _as_sequences_keep_graph(x2, "x2", work, dev, s1.dim)
    if s2 is not None and s2.max_len != s1.max_len:
        T = max(s1.max_len, s2.max_len)
        s1, s2 = s1.padded_to(T), s2.padded_to(T)
    c = KernelConstants(
        arch.sigma_w**2,
        arch.sigma_u**2,
        arch.sigma_b**2,
        arch.sigma_h**2,
        arch.sigma_v**2,
        arch.depth,
        arch.h0,
        arch,
    )
    N2 = s1.n if s2 is None else s2.n
    full = get_readout(arch.readout).kind(s1.max_len, arch) == "full"
    pairs = budget(s1, s2, depth=arch.depth, all_shifts=full)
    rows = min(s1.n, block_size or max(1, pairs // N2))
    return c, get_dual(arch.nonlinearity, quad_points, series_tol), s1, s2, rows, dtype


# Block-sized tensors autograd keeps per layer and cell of the differentiable recursion
# (layer_step's S, K, G, Q, the dual's outputs and inputs, the padding masks' where).
AUTOGRAD_TENSORS_PER_CELL = 9


def budget(
    seqs: Sequences, other: Sequences | None = None, *, depth: int = 1, all_shifts: bool = False
) -> int:
    """Pairs per row block: cache-sized on CPU, large on GPUs.

    When an input requires grad (the differentiable path), a block's graph keeps about
    ``AUTOGRAD_TENSORS_PER_CELL`` block-sized tensors per layer and cell (T cells, T^2 for
    a readout of every shift, ``all_shifts``) until backward, so the block is also capped at
    ``memory_budget(device) / (9 L cells * element size)`` pairs. (The graphs of all blocks
    stay alive until backward: the total is that of N1 * N2 pairs whatever the block.)
    """
    fixed = CUDA_BLOCK_ELEMENTS if seqs.values.device.type == "cuda" else CPU_BLOCK_ELEMENTS
    grads = torch.is_grad_enabled() and any(
        s is not None and s.values.requires_grad for s in (seqs, other)
    )
    if not grads:
        return fixed
    T = seqs.max_len
    cells = depth * (T * T if all_shifts else T)
    per_pair = AUTOGRAD_TENSORS_PER_CELL * cells * seqs.values.element_size()
    return max(1, min(fixed, memory_budget(seqs.values.device) // per_pair))


def sides(
    c: KernelConstants,
    dual: DualFn,
    s1: Sequences,
    s2: Sequences | None,
    d: int,
    readouts,
    variances=None,
):
    """(rows side, columns side) of direction ``d`` (1: both reversed). ``variances``:
    optional ``(xs (N, T, m) scaled, starts (N,)) -> (L, N, T)`` replacing the torch loop
    for the per-sequence variances (the compiled one of the numba path)."""
    side1 = _prepare_side(c, dual, s1 if d == 0 else s1.reversed(), readouts, variances)
    if s2 is None:
        return side1, side1
    return side1, _prepare_side(c, dual, s2 if d == 0 else s2.reversed(), readouts, variances)


def blocks(side1: BatchSide, side2: BatchSide, rows: int, symmetric: bool):
    """Row blocks ``(r0, r1, rows side, columns side)``; upper triangle only if symmetric."""
    N1, N2 = side1.xs.shape[0], side2.xs.shape[0]
    for r0 in range(0, N1, rows):
        r1 = min(N1, r0 + rows)
        yield r0, r1, side1.rows(slice(r0, r1)), side2.rows(slice(r0 if symmetric else 0, N2))


def finish(
    dtype: torch.dtype, c: KernelConstants, T: int, **outs: torch.Tensor | None
) -> dict[str, torch.Tensor | None]:
    """The kernels ``outs`` in the returned ``dtype``, each checked to be finite there;
    :class:`OverflowError` naming the kernel, dtype, s_w, T and what to change if not."""
    done = {}
    for name, out in outs.items():
        cast = None if out is None else out.to(dtype)
        done[name] = cast
        if cast is None or bool(torch.isfinite(cast).all()):
            continue
        where = f"at T={T} with sigma_w={c.sw2**0.5:g}"
        why = (
            "it grows geometrically in time when s_w^2 V_dphi > 1 (exploding gradients) "
            "or the variances explode"
        )
        if dtype == torch.float64 or (
            out.dtype == torch.float64 and not bool(torch.isfinite(out).all())
        ):
            raise OverflowError(
                f"the analytic {name} overflows float64 {where} ({why}); "
                "use a smaller sigma_w or shorter sequences"
            )
        raise OverflowError(
            f"the analytic {name} (largest entry {float(out.abs().max()):.3g}) overflows "
            f"{dtype_name(dtype)} {where} ({why}); use dtype=float64, a smaller sigma_w or "
            "shorter sequences"
        )
    return done
