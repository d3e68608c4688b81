r"""The infinite-width kernels of the Elman RNN: the analytic RNTK and NNGP (SPEC section 3).

For inputs x, x' and time indices t, t' >= 1, layer by layer (l = 1..L):

    S^l(t,t') = s_w^2 K^l(t-1,t'-1) + s_u^2 K^{l-1}(t,t') + s_b^2
    Q^l(t,t') = S^l(t,t') + s_w^2 G^l(t-1,t'-1) + s_u^2 G^{l-1}(t,t')
    K^l = V_phi(a, b, S^l),   G^l = V_dphi(a, b, S^l) * Q^l     (G = Kd Q of the SPEC)

with K^0(t,t') = <x_t, x'_t'> / m, G^0 = 0, the variances a = S^l(x,x)(t,t),
b = S^l(x',x')(t',t') from the same recursion on the pair (x, x), and the boundary
K^l(t-1,t'-1) = s_h^2 [t-1 = t'-1 = 0] * (1 for ``shared``; [x = x'] for ``per_input``;
0 for ``zero``), G^l = 0 there. Outputs, with theta = s_v^2 (K^L + G^L) and nngp = s_v^2 K^L:

    last:      the cell (T, T')
    avg:       (1 / (T T')) sum over all cells t <= T, t' <= T'
    per_step:  (1 / sqrt(T T')) sum over end-aligned cells, T - t = T' - t'
    bidirectional: kernel(x, x') + kernel(reverse(x), reverse(x'))

Implementation. Both batches are left-padded to one length T_max, so sequence i occupies
padded positions p >= s_i = T_max - T_i and the ends are aligned. A *shift* k pairs position
p of x with position q = p - k of x'. Shift 0 is the end-aligned diagonal (``last`` and
``per_step``); ``avg`` runs every shift. Along a shift the recursion is a forward loop over p
whose state is only (K^l, G^l) of the previous step, for a block of rows x all columns: memory
O(block * N2) per layer, independent of T. A pair is *active* once both sequences have started;
before that its state holds the boundary value (K = s_h^2 term or 0, G = 0) -- exactly what the
finite network does when it holds h^{l,0} through padded steps. Per-sequence variances
a_i^l(p) are computed once per call by the same step code on the pairs (i, i).

Everything is differentiable with autograd (inputs may require grad), runs on CPU or CUDA
and defaults to float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rntk_empirical.architecture import Architecture
from rntk_empirical.devices import resolve_device, resolve_dtype, validation_precision
from rntk_empirical.dual import DEFAULT_QUAD_POINTS, DualFn, get_dual, get_fused_dual
from rntk_empirical.sequences import Sequences, as_sequences

# Elements (pairs) of one row block: cache-sized on CPU (~1 MiB per float64 buffer),
# large on GPUs. Peak extra memory is ~ (8 + 6 L) buffers of this size.
CPU_BLOCK_ELEMENTS = 2**17
CUDA_BLOCK_ELEMENTS = 2**24


@dataclass(frozen=True)
class _Consts:
    sw2: float
    su2: float
    sb2: float
    sh2: float
    sv2: float
    depth: int
    h0: str


@dataclass
class _Side:
    """One batch, one direction, ready for the recursion.

    Attributes:
        xs: ``(N, T, m)`` inputs scaled by s_u / sqrt(m), so xs_p xs'_q^T = s_u^2 K^0.
        starts: ``(N,)`` first valid padded position s_i.
        keys: ``(N,)`` int64 content keys (``per_input`` x = x' test).
        var: ``(L, N, T)`` variances S^l(x_i, x_i)(p, p); 1.0 at padded positions.
        weights: ``(N, T)`` readout weights (mask / T or mask / sqrt(T)), None for ``last``.
    """

    xs: torch.Tensor
    starts: torch.Tensor
    starts_list: list[int]
    keys: torch.Tensor
    var: torch.Tensor
    weights: torch.Tensor | None

    def rows(self, sl: slice) -> _Side:
        return _Side(
            self.xs[sl],
            self.starts[sl],
            self.starts_list[sl],
            self.keys[sl],
            self.var[:, sl],
            None if self.weights is None else self.weights[sl],
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
def _layer_step(
    c: _Consts,
    dual: DualFn,
    K: torch.Tensor,
    G: torch.Tensor | None,
    drive: torch.Tensor,
    G_low: torch.Tensor | None,
    a: torch.Tensor | None,
    b: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One layer at one cell (t, t') for a block of pairs.

    Args:
        K, G: the layer's state K^l(t-1, t'-1), G^l(t-1, t'-1); G None skips the NTK part.
        drive: s_u^2 K^{l-1}(t, t') (the input term).
        G_low: G^{l-1}(t, t') (None for layer 1, where G^0 = 0).
        a, b: variances broadcastable against K (a column and a row); None means the
            diagonal run, where a = b = S (pairs (i, i)).

    Returns:
        (S^l, K^l, G^l) at (t, t').
    """
    S = torch.add(drive, K, alpha=c.sw2).add_(c.sb2)
    if a is None:
        a = b = S
    v_phi, v_dphi = dual(a, b, S)
    if G is None:
        return S, v_phi, None
    Q = torch.add(S, G, alpha=c.sw2)
    if G_low is not None:
        Q = Q.add_(G_low, alpha=c.su2)
    return S, v_phi, v_dphi * Q


def _boundary_value(c: _Consts) -> float:
    """K^l(0, 0) for a pair that starts together and may share its initial state."""
    return 0.0 if c.h0 == "zero" else c.sh2


def _variances(c: _Consts, dual: DualFn, xs: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """``(L, N, T)``: S^l(x_i, x_i)(p, p) by the pair recursion on (i, i); 1.0 before s_i."""
    N, T, _ = xs.shape
    K = [xs.new_full((N,), _boundary_value(c)) for _ in range(c.depth)]
    out = []
    for p in range(T):
        active = p >= starts
        drive = (xs[:, p] * xs[:, p]).sum(-1)
        G_low = None
        S_p = []
        for l in range(c.depth):
            S, K_new, _ = _layer_step(c, dual, K[l], None, drive, G_low, None, None)
            K[l] = torch.where(active, K_new, K[l])
            S_p.append(torch.where(active, S, 1.0))
            drive = c.su2 * K[l]
        out.append(torch.stack(S_p))
    return torch.stack(out, dim=2)


def _prepare_side(
    c: _Consts, dual: DualFn, seqs: Sequences, readout: str, var: torch.Tensor | None = None
) -> _Side:
    T, m = seqs.max_len, seqs.dim
    starts = (T - seqs.lengths).to(seqs.values.device)
    xs = seqs.values * math.sqrt(c.su2 / m)
    if var is None:
        var = _variances(c, dual, xs, starts)
    if not torch.isfinite(var).all():
        raise OverflowError(
            "the pre-activation variances overflow "
            f"{str(seqs.values.dtype).replace('torch.', '')} (they grow like s_w^2^t for "
            "unbounded nonlinearities); use a smaller sigma_w, shorter sequences or float64"
        )
    weights = None
    if readout != "last":
        lengths = seqs.lengths.to(device=xs.device, dtype=xs.dtype)
        norm = lengths if readout == "avg" else lengths.sqrt()
        weights = seqs.mask.to(xs.dtype) / norm[:, None]
    keys = torch.tensor(seqs.keys, dtype=torch.int64, device=xs.device)
    return _Side(xs, starts, [int(s) for s in starts.tolist()], keys, var, weights)


class _Workspace:
    """Preallocated buffers for the fused (no-grad, in-place) recursion of one row block.

    Flat storage sized for the largest block, viewed as ``(B, N2)`` per block, so nothing is
    allocated inside the time loop.
    """

    NAMES = ("S", "Q", "scratch", "w", "acc_t", "acc_k")

    def __init__(self, depth: int, numel: int, like: torch.Tensor) -> None:
        self.depth = depth
        self.flat = {k: like.new_empty(numel) for k in self.NAMES}
        self.K = [like.new_empty(numel) for _ in range(depth)]
        self.G = [like.new_empty(numel) for _ in range(depth)]

    def view(self, B: int, N2: int) -> dict:
        n = B * N2
        v = {k: t[:n].view(B, N2) for k, t in self.flat.items()}
        v["K"] = [t[:n].view(B, N2) for t in self.K]
        v["G"] = [t[:n].view(B, N2) for t in self.G]
        return v


def _boundary(c: _Consts, r: _Side, s: _Side, shift: int) -> torch.Tensor | None:
    """``(B, N2)`` boundary K^l(t-1, t'-1) of the pairs at this shift (None if all zero):
    s_h^2 for pairs that start together (t = t' = 1) and share h^{l,0}."""
    if c.h0 == "zero" or c.sh2 == 0.0:
        return None
    together = (r.starts[:, None] - shift) == s.starts[None, :]
    if c.h0 == "per_input":
        together = together & (r.keys[:, None] == s.keys[None, :])
    return together.to(r.xs.dtype) * c.sh2


def _shift_range(r: _Side, s: _Side, shift: int, T: int) -> tuple[int, int]:
    p_first = max(0, shift, min(r.starts_list), min(s.starts_list) + shift)
    p_last = min(T - 1, T - 1 + shift)
    return p_first, p_last


def _shift_block(
    c: _Consts,
    dual: DualFn,
    r: _Side,
    s: _Side,
    shift: int,
    want_ntk: bool,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Differentiable (out-of-place) contribution of one shift (x at p, x' at p - shift) for a
    block: (theta, nngp) / s_v^2. ``last``: the final cell; otherwise the weighted sum over
    active cells."""
    T = r.xs.shape[1]
    B, N2 = r.xs.shape[0], s.xs.shape[0]
    max_r, max_s = max(r.starts_list), max(s.starts_list)
    p_first, p_last = _shift_range(r, s, shift, T)
    kb = _boundary(c, r, s, shift)
    kb = r.xs.new_zeros(B, N2) if kb is None else kb
    K = [kb] * c.depth
    G = [r.xs.new_zeros(B, N2) if want_ntk else None] * c.depth
    zeros = r.xs.new_zeros(B, N2)
    acc_t, acc_k = zeros, zeros
    for p in range(p_first, p_last + 1):
        q = p - shift
        masked = p < max_r or q < max_s
        if masked:
            active = (p >= r.starts)[:, None] & (q >= s.starts)[None, :]
        drive = r.xs[:, p] @ s.xs[:, q].T
        G_low = None
        for l in range(c.depth):
            a, b = r.var[l, :, p, None], s.var[l, None, :, q]
            _, K_new, G_new = _layer_step(c, dual, K[l], G[l], drive, G_low, a, b)
            if masked:
                K_new = torch.where(active, K_new, K[l])
                G_new = None if G_new is None else torch.where(active, G_new, G[l])
            K[l], G[l] = K_new, G_new
            drive, G_low = c.su2 * K_new, G_new
        if r.weights is not None:
            w = r.weights[:, p, None] * s.weights[None, :, q]  # zero on inactive pairs
            acc_k = acc_k + K[-1] * w
            if want_ntk:
                acc_t = acc_t + (K[-1] + G[-1]) * w
    if r.weights is None:
        return (K[-1] + G[-1] if want_ntk else None), K[-1]
    return (acc_t if want_ntk else None), acc_k


def _shift_block_fused(
    c: _Consts,
    fused,
    r: _Side,
    s: _Side,
    shift: int,
    want_ntk: bool,
    ws: dict,
    first: bool,
) -> None:
    """:func:`_shift_block` without autograd, in place: accumulates into ``ws["acc_t"]``,
    ``ws["acc_k"]`` (weighted readouts; zeroed when ``first``) or leaves the final state in
    ``ws["K"][-1]``, ``ws["G"][-1]`` (``last``)."""
    T = r.xs.shape[1]
    max_r, max_s = max(r.starts_list), max(s.starts_list)
    p_first, p_last = _shift_range(r, s, shift, T)
    kb = _boundary(c, r, s, shift)
    K, G, S, Q, scratch = ws["K"], ws["G"], ws["S"], ws["Q"], ws["scratch"]
    for l in range(c.depth):
        K[l].zero_() if kb is None else K[l].copy_(kb)
        G[l].zero_()
    if first and r.weights is not None:
        ws["acc_k"].zero_()
        ws["acc_t"].zero_()
    for p in range(p_first, p_last + 1):
        q = p - shift
        masked = p < max_r or q < max_s
        if masked:
            active = (p >= r.starts)[:, None] & (q >= s.starts)[None, :]
        for l in range(c.depth):
            # S = s_w^2 K^l(t-1,t'-1) + s_u^2 K^{l-1}(t,t') + s_b^2, Q likewise (module doc)
            if l == 0:
                torch.addmm(K[0], r.xs[:, p], s.xs[:, q].T, beta=c.sw2, out=S)
            else:
                torch.mul(K[l - 1], c.su2, out=S).add_(K[l], alpha=c.sw2)
            S.add_(c.sb2)
            if want_ntk:
                torch.add(S, G[l], alpha=c.sw2, out=Q)
                if l > 0:
                    Q.add_(G[l - 1], alpha=c.su2)
            a, b = r.var[l, :, p, None], s.var[l, None, :, q]
            fused(a, b, S, Q if want_ntk else None, K[l], G[l], scratch)
            if masked:
                if kb is None:
                    K[l].masked_fill_(~active, 0.0)
                else:
                    torch.where(active, K[l], kb, out=K[l])
                G[l].masked_fill_(~active, 0.0)
        if r.weights is not None:
            w = torch.mul(r.weights[:, p, None], s.weights[None, :, q], out=ws["w"])
            ws["acc_k"].addcmul_(K[-1], w)
            if want_ntk:
                ws["acc_t"].addcmul_(K[-1], w).addcmul_(G[-1], w)


def _shifts(readout: str, T: int) -> range | tuple[int]:
    return range(-(T - 1), T) if readout == "avg" else (0,)


def _pair_block(c: _Consts, dual: DualFn, readout: str, r: _Side, s: _Side, want_ntk: bool):
    """Differentiable (theta, nngp) for rows r against columns s, one direction, with s_v^2."""
    theta = nngp = None
    for k in _shifts(readout, r.xs.shape[1]):
        t_k, n_k = _shift_block(c, dual, r, s, k, want_ntk)
        nngp = n_k if nngp is None else nngp + n_k
        if want_ntk:
            theta = t_k if theta is None else theta + t_k
    return (None if theta is None else c.sv2 * theta), c.sv2 * nngp


def _pair_block_fused(
    c: _Consts, fused, readout: str, r: _Side, s: _Side, want_ntk: bool, ws: dict
):
    """In-place (theta, nngp) / s_v^2 as views into the workspace (valid until its next use)."""
    for i, k in enumerate(_shifts(readout, r.xs.shape[1])):
        _shift_block_fused(c, fused, r, s, k, want_ntk, ws, first=i == 0)
    if readout == "last":
        theta = torch.add(ws["K"][-1], ws["G"][-1], out=ws["acc_t"]) if want_ntk else None
        return theta, ws["K"][-1]
    return (ws["acc_t"] if want_ntk else None), ws["acc_k"]


def _write_block(
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
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The analytic RNTK and NNGP in one pass: ``(theta, nngp)``, each ``(N1, N2)`` or None.

    Args:
        arch: the :class:`Architecture` (the same object that builds the finite network).
        x1: ``(N1, T, m)`` tensor/array or a list of ``(T_i, m)`` sequences.
        x2: same forms (same m), or None for x2 = x1 (the result is then exactly symmetric
            and only its upper triangle is computed).
        dtype: float64 (default) or float32.
        device: cpu / cuda / auto; None uses the inputs' device.
        block_size: rows of the output computed together; None picks it from a memory budget
            (about ``CPU_BLOCK_ELEMENTS`` or ``CUDA_BLOCK_ELEMENTS`` pairs per block).
        ntk, nngp: which kernels to return (the other is None).
        quad_points: Gauss-Hermite points per dimension for nonlinearities without closed form.

    Raises:
        ValueError: bad inputs (see :func:`rntk_empirical.sequences.as_sequences`), x1 and x2
            of different m, ``ntk=True`` with ``parameterization="standard"``.
        OverflowError: the kernel overflows the dtype (e.g. large s_w with very long inputs).
    """
    if not isinstance(arch, Architecture):
        raise TypeError(f"arch must be an Architecture, got {type(arch).__name__}")
    if ntk and arch.parameterization == "standard":
        raise ValueError(
            "the NTK has no finite infinite-width limit in the 'standard' parameterization "
            "(the weight gradients are not scaled by 1/sqrt(n), so the NTK grows linearly "
            "with the width); use parameterization='ntk', or analytic_nngp (identical in both)"
        )
    _check_block_size(block_size)
    dtype = resolve_dtype(dtype)
    dev = resolve_device(device) if device is not None else _input_device(x1)
    validation_precision(dtype)
    s1 = _as_sequences_keep_graph(x1, "x1", dtype, dev)
    s2 = None if x2 is None else _as_sequences_keep_graph(x2, "x2", dtype, dev, s1.dim)
    if s2 is not None and s2.max_len != s1.max_len:
        T = max(s1.max_len, s2.max_len)
        s1, s2 = s1.padded_to(T), s2.padded_to(T)

    c = _Consts(
        arch.sigma_w**2,
        arch.sigma_u**2,
        arch.sigma_b**2,
        arch.sigma_h**2,
        arch.sigma_v**2,
        arch.depth,
        arch.h0,
    )
    dual = get_dual(arch.nonlinearity, quad_points)
    symmetric = s2 is None
    N1 = s1.n
    N2 = N1 if symmetric else s2.n
    device_ = s1.values.device
    budget = CUDA_BLOCK_ELEMENTS if device_.type == "cuda" else CPU_BLOCK_ELEMENTS
    rows = min(N1, block_size or max(1, budget // N2))

    differentiable = (
        torch.is_grad_enabled()
        and s1.values.requires_grad
        or (s2 is not None and torch.is_grad_enabled() and s2.values.requires_grad)
    )
    fused = None if differentiable else get_fused_dual(arch.nonlinearity, quad_points)
    ws = None if differentiable else _Workspace(arch.depth, rows * N2, s1.values)
    theta_out = s1.values.new_zeros(N1, N2) if ntk else None
    nngp_out = s1.values.new_zeros(N1, N2) if nngp else None
    for d in range(arch.directions):
        side1 = _prepare_side(c, dual, s1 if d == 0 else s1.reversed(), arch.readout)
        if symmetric:
            side2 = side1
        else:
            side2 = _prepare_side(c, dual, s2 if d == 0 else s2.reversed(), arch.readout)
        for r0 in range(0, N1, rows):
            r1 = min(N1, r0 + rows)
            rs = side1.rows(slice(r0, r1))
            cs = side2.rows(slice(r0 if symmetric else 0, N2))  # upper triangle only
            if differentiable:
                t_blk, k_blk = _pair_block(c, dual, arch.readout, rs, cs, ntk)
                scale = 1.0  # s_v^2 already applied
            else:
                view = ws.view(r1 - r0, cs.xs.shape[0])
                t_blk, k_blk = _pair_block_fused(c, fused, arch.readout, rs, cs, ntk, view)
                scale = c.sv2
            if theta_out is not None:
                _write_block(theta_out, t_blk, r0, r1, symmetric, scale, not differentiable)
            if nngp_out is not None:
                _write_block(nngp_out, k_blk, r0, r1, symmetric, scale, not differentiable)
    for name, out in (("NTK", theta_out), ("NNGP", nngp_out)):
        if out is not None and not torch.isfinite(out).all():
            raise OverflowError(
                f"the analytic {name} overflows {str(dtype).replace('torch.', '')}: it grows "
                "geometrically in time when s_w^2 V_dphi > 1 (exploding gradients) or the "
                "variances explode; use a smaller sigma_w or shorter sequences"
            )
    return theta_out, nngp_out


def analytic_ntk(
    arch: Architecture,
    x1,
    x2=None,
    *,
    dtype: torch.dtype | str = torch.float64,
    device: torch.device | str | None = None,
    block_size: int | None = None,
) -> torch.Tensor:
    """The infinite-width NTK Theta(x1_i, x2_j): ``(N1, N2)``. See :func:`analytic_kernels`."""
    theta, _ = analytic_kernels(
        arch, x1, x2, dtype=dtype, device=device, block_size=block_size, ntk=True, nngp=False
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
) -> torch.Tensor:
    """The infinite-width NNGP (output covariance) ``(N1, N2)``; any parameterization."""
    _, k = analytic_kernels(
        arch, x1, x2, dtype=dtype, device=device, block_size=block_size, ntk=False, nngp=True
    )
    return k
