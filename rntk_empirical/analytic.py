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

import functools
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from rntk_empirical import analytic_numba
from rntk_empirical.architecture import READOUTS, Architecture
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
        weights: readout -> ``(N, T)`` cell weights (``avg``: mask / T, ``per_step``:
            mask / sqrt(T)); ``last`` has none.
    """

    xs: torch.Tensor
    starts: torch.Tensor
    starts_list: list[int]
    keys: torch.Tensor
    var: torch.Tensor
    weights: dict[str, torch.Tensor]

    def rows(self, sl: slice) -> _Side:
        return _Side(
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
    # plain arithmetic: the constants may be 0-d tensors (see _compiled_step)
    S = c.sw2 * K + drive + c.sb2
    if a is None:
        a = b = S
    v_phi, v_dphi = dual(a, b, S)
    if G is None:
        return S, v_phi, None
    Q = S + c.sw2 * G
    if G_low is not None:
        Q = Q + c.su2 * G_low
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
    c: _Consts,
    dual: DualFn,
    seqs: Sequences,
    readouts: tuple[str, ...],
    var: torch.Tensor | None = None,
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
    weights = {}
    lengths = seqs.lengths.to(device=xs.device, dtype=xs.dtype)
    for readout in readouts:
        if readout != "last":
            norm = lengths if readout == "avg" else lengths.sqrt()
            weights[readout] = seqs.mask.to(xs.dtype) / norm[:, None]
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
    readout: str,
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
        if readout != "last":
            w = r.weights[readout][:, p, None] * s.weights[readout][None, :, q]  # 0 if inactive
            acc_k = acc_k + K[-1] * w
            if want_ntk:
                acc_t = acc_t + (K[-1] + G[-1]) * w
    if readout == "last":
        return (K[-1] + G[-1] if want_ntk else None), K[-1]
    return (acc_t if want_ntk else None), acc_k


@dataclass
class _Accumulator:
    """Weighted cell sums of some layers: ``k[i] += w * K^l``, ``t[i] += w * (K^l + G^l)``
    for ``l = layers[i]``, with ``w = weights[:, p] weights'[:, q]`` (zero on inactive pairs).
    """

    readout: str
    layers: tuple[int, ...]
    k: list[torch.Tensor]
    t: list[torch.Tensor] | None


def _functional_step(
    dual: DualFn,
    c: _Consts,
    K: list[torch.Tensor],
    G: list[torch.Tensor],
    xr: torch.Tensor,
    xs: torch.Tensor,
    a: list[torch.Tensor],
    b: list[torch.Tensor],
    w: torch.Tensor,
    acc_k: list[torch.Tensor],
    acc_t: list[torch.Tensor],
) -> tuple[list, list, list, list]:
    """One cell of every layer for a block with no inactive pair, out of place, adding
    ``w * K^l`` and ``w * (K^l + G^l)`` of every layer to the sums (what
    :func:`_compiled_step` compiles). Returns the new (K, G, acc_k, acc_t)."""
    drive, G_low = xr @ xs.T, None
    K_new, G_new, k_new, t_new = [], [], [], []
    for l in range(len(K)):
        _, k, g = _layer_step(c, dual, K[l], G[l], drive, G_low, a[l], b[l])
        K_new.append(k)
        G_new.append(g)
        k_new.append(acc_k[l] + w * k)
        t_new.append(acc_t[l] + w * (k + g))
        drive, G_low = c.su2 * k, g
    return K_new, G_new, k_new, t_new


_COMPILED: dict = {}


def _compiled_step(nonlinearity: str, quad_points: int):
    """:func:`_functional_step` for one nonlinearity under ``torch.compile`` (fused loops;
    measured 1.3-2.8x the in-place eager step on 2 CPU cores), shape-dynamic so that row blocks
    of any size share one compilation; the sigmas enter as 0-d tensors for the same reason."""
    key = (nonlinearity, quad_points)
    if key not in _COMPILED:
        dual = get_dual(nonlinearity, quad_points)
        _COMPILED[key] = torch.compile(
            functools.partial(_functional_step, dual), dynamic=True, fullgraph=False
        )
    return _COMPILED[key]


def _fused_layer(
    c: _Consts,
    fused,
    l: int,
    K: list[torch.Tensor],
    G: list[torch.Tensor],
    S: torch.Tensor,
    Q: torch.Tensor | None,
    scratch: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
) -> None:
    """Layer ``l`` one cell forward, in place (module doc):

        S = s_w^2 K^l(t-1,t'-1) + s_u^2 K^{l-1}(t,t') + s_b^2,  Q = S + s_w^2 G^l + s_u^2 G^{l-1}

    then ``K[l], G[l]`` = the dual activations. For l = 0 the caller has already put
    s_u^2 K^0 + s_w^2 K^1(t-1, t'-1) in S (a matmul of the inputs); Q None skips the NTK."""
    if l > 0:
        torch.mul(K[l - 1], c.su2, out=S).add_(K[l], alpha=c.sw2)
    S.add_(c.sb2)
    if Q is not None:
        torch.add(S, G[l], alpha=c.sw2, out=Q)
        if l > 0:
            Q.add_(G[l - 1], alpha=c.su2)
    fused(a, b, S, Q, K[l], G[l], scratch)


def _shift_block_fused(
    c: _Consts,
    fused,
    r: _Side,
    s: _Side,
    shift: int,
    want_ntk: bool,
    ws: dict,
    accumulators: tuple[_Accumulator, ...] = (),
    step=None,
) -> None:
    """:func:`_shift_block` without autograd, in place: adds the weighted cells of this shift
    into the ``accumulators`` and leaves the final state in ``ws["K"]``, ``ws["G"]`` (the
    ``last`` readout of every layer when ``shift == 0``).

    ``step``: ``(compiled step, tensor constants)`` to run the steps without inactive pairs
    through :func:`_compiled_step` (NTK only); the lists in ``ws`` and the accumulators then
    point to its new tensors."""
    T = r.xs.shape[1]
    max_r, max_s = max(r.starts_list), max(s.starts_list)
    p_first, p_last = _shift_range(r, s, shift, T)
    kb = _boundary(c, r, s, shift)
    K, G, S, Q, scratch = ws["K"], ws["G"], ws["S"], ws["Q"], ws["scratch"]
    for l in range(c.depth):
        K[l].zero_() if kb is None else K[l].copy_(kb)
        G[l].zero_()
    for p in range(p_first, p_last + 1):
        q = p - shift
        masked = p < max_r or q < max_s
        if masked:
            active = (p >= r.starts)[:, None] & (q >= s.starts)[None, :]
        elif step is not None and len(accumulators) == 1:
            fn, ct = step
            (acc,) = accumulators
            w = torch.mul(r.weights[acc.readout][:, p, None], s.weights[acc.readout][None, :, q])
            a = [r.var[l, :, p, None].clone() for l in range(c.depth)]
            b = [s.var[l, None, :, q].clone() for l in range(c.depth)]
            xr, xq = r.xs[:, p].clone(), s.xs[:, q].clone()
            K[:], G[:], acc.k[:], acc.t[:] = fn(ct, K, G, xr, xq, a, b, w, acc.k, acc.t)
            continue
        for l in range(c.depth):
            if l == 0:  # S = s_u^2 K^0(t, t') + s_w^2 K^1(t-1, t'-1)
                torch.addmm(K[0], r.xs[:, p], s.xs[:, q].T, beta=c.sw2, out=S)
            a, b = r.var[l, :, p, None], s.var[l, None, :, q]
            _fused_layer(c, fused, l, K, G, S, Q if want_ntk else None, scratch, a, b)
            if masked:
                if kb is None:
                    K[l].masked_fill_(~active, 0.0)
                else:
                    torch.where(active, K[l], kb, out=K[l])
                G[l].masked_fill_(~active, 0.0)
        for acc in accumulators:
            w_r, w_s = r.weights[acc.readout], s.weights[acc.readout]
            w = torch.mul(w_r[:, p, None], w_s[None, :, q], out=ws["w"])
            for i, l in enumerate(acc.layers):
                acc.k[i].addcmul_(K[l], w)
                if want_ntk:
                    acc.t[i].addcmul_(K[l], w).addcmul_(G[l], w)


def _shifts(readout: str, T: int) -> range | tuple[int]:
    return range(-(T - 1), T) if readout == "avg" else (0,)


def _pair_block(c: _Consts, dual: DualFn, readout: str, r: _Side, s: _Side, want_ntk: bool):
    """Differentiable (theta, nngp) for rows r against columns s, one direction, with s_v^2."""
    theta = nngp = None
    for k in _shifts(readout, r.xs.shape[1]):
        t_k, n_k = _shift_block(c, dual, readout, r, s, k, want_ntk)
        nngp = n_k if nngp is None else nngp + n_k
        if want_ntk:
            theta = t_k if theta is None else theta + t_k
    return (None if theta is None else c.sv2 * theta), c.sv2 * nngp


def _pair_block_fused(
    c: _Consts, fused, readout: str, r: _Side, s: _Side, want_ntk: bool, ws: dict
):
    """In-place (theta, nngp) / s_v^2 as views into the workspace (valid until its next use)."""
    if readout == "last":
        _shift_block_fused(c, fused, r, s, 0, want_ntk, ws)
        theta = torch.add(ws["K"][-1], ws["G"][-1], out=ws["acc_t"]) if want_ntk else None
        return theta, ws["K"][-1]
    acc = _Accumulator(
        readout, (c.depth - 1,), [ws["acc_k"].zero_()], [ws["acc_t"].zero_()] if want_ntk else None
    )
    for k in _shifts(readout, r.xs.shape[1]):
        _shift_block_fused(c, fused, r, s, k, want_ntk, ws, (acc,))
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


def _setup(
    arch: Architecture, x1, x2, dtype, device, block_size, ntk: bool, quad_points: int
) -> tuple[_Consts, DualFn, Sequences, Sequences | None, int]:
    """Validate the arguments; returns (constants, dual, x1, x2 or None, rows per block)."""
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
    N2 = s1.n if s2 is None else s2.n
    rows = min(s1.n, block_size or max(1, _budget(s1) // N2))
    return c, get_dual(arch.nonlinearity, quad_points), s1, s2, rows


def _budget(seqs: Sequences) -> int:
    """Pairs per row block: cache-sized on CPU, large on GPUs."""
    return CUDA_BLOCK_ELEMENTS if seqs.values.device.type == "cuda" else CPU_BLOCK_ELEMENTS


def _sides(c: _Consts, dual: DualFn, s1: Sequences, s2: Sequences | None, d: int, readouts):
    """(rows side, columns side) of direction ``d`` (1: both reversed)."""
    side1 = _prepare_side(c, dual, s1 if d == 0 else s1.reversed(), readouts)
    if s2 is None:
        return side1, side1
    return side1, _prepare_side(c, dual, s2 if d == 0 else s2.reversed(), readouts)


def _blocks(side1: _Side, side2: _Side, rows: int, symmetric: bool):
    """Row blocks ``(r0, r1, rows side, columns side)``; upper triangle only if symmetric."""
    N1, N2 = side1.xs.shape[0], side2.xs.shape[0]
    for r0 in range(0, N1, rows):
        r1 = min(N1, r0 + rows)
        yield r0, r1, side1.rows(slice(r0, r1)), side2.rows(slice(r0 if symmetric else 0, N2))


def _check_finite(dtype: torch.dtype, **outs: torch.Tensor | None) -> None:
    for name, out in outs.items():
        if out is not None and not torch.isfinite(out).all():
            raise OverflowError(
                f"the analytic {name} overflows {str(dtype).replace('torch.', '')}: it grows "
                "geometrically in time when s_w^2 V_dphi > 1 (exploding gradients) or the "
                "variances explode; use a smaller sigma_w or shorter sequences"
            )


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
    c, dual, s1, s2, rows = _setup(arch, x1, x2, dtype, device, block_size, ntk, quad_points)
    symmetric = s2 is None
    N1, N2 = s1.n, (s1.n if symmetric else s2.n)
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
        side1, side2 = _sides(c, dual, s1, s2, d, (arch.readout,))
        for r0, r1, rs, cs in _blocks(side1, side2, rows, symmetric):
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
    _check_finite(s1.values.dtype, NTK=theta_out, NNGP=nngp_out)
    return theta_out, nngp_out


def _chain_order(T: int) -> torch.Tensor:
    """Shifts 0, 1, -1, 2, -2, ..., T-1, -(T-1): the chains still running at step j (those
    with |k| <= T-1-j) are always a prefix."""
    return torch.tensor([0] + [s for k in range(1, T) for s in (k, -k)], dtype=torch.int64)


def _all_shifts_block(
    c: _Consts, fused, r: _Side, s: _Side, readouts: tuple[str, ...]
) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    """Every readout of every layer for a block of equal-length sequences, all shifts at once.

    Chain k (x at p, x' at p - k) is run as one batch entry: at step j it holds the cell
    (j + max(k, 0), j + max(-k, 0)), so one step of all chains is a handful of large in-place
    tensor operations instead of 2T - 1 small ones (the win for small N). With equal lengths
    the readout weights are constant: ``avg`` = (1/T^2) sum of all cells, ``per_step`` =
    (1/T) sum of chain 0, ``last`` = the final cell of chain 0. Returns (theta, nngp) / s_v^2.
    """
    T, B, N2 = r.xs.shape[1], r.xs.shape[0], s.xs.shape[0]
    order = _chain_order(T if "avg" in readouts else 1).to(r.xs.device)
    kp, km = order.clamp(min=0), (-order).clamp(min=0)
    buf = {k: r.xs.new_zeros(len(order), B, N2) for k in ("S", "Q", "scratch")}
    K = [r.xs.new_zeros(len(order), B, N2) for _ in range(c.depth)]
    G = [r.xs.new_zeros(len(order), B, N2) for _ in range(c.depth)]
    kb = _boundary(c, r, s, 0)
    if kb is not None:
        for l in range(c.depth):
            K[l][0] = kb
    sums = {key: [r.xs.new_zeros(B, N2) for _ in range(c.depth)] for key in ("k", "t", "pk", "pt")}
    for j in range(T):
        n = min(len(order), 2 * (T - 1 - j) + 1)
        p, q = j + kp[:n], j + km[:n]
        S, Q, scratch = buf["S"][:n], buf["Q"][:n], buf["scratch"][:n]
        Kn, Gn = [k[:n] for k in K], [g[:n] for g in G]
        for l in range(c.depth):
            Kl, Gl = Kn[l], Gn[l]
            if l == 0:  # S = s_u^2 K^0(t, t') + s_w^2 K^1(t-1, t'-1), every chain at once
                xr, xq = r.xs[:, p].transpose(0, 1), s.xs[:, q].permute(1, 2, 0)
                torch.baddbmm(Kl, xr, xq, beta=c.sw2, out=S)
            a = r.var[l][:, p].T[:, :, None]
            b = s.var[l][:, q].T[:, None, :]
            _fused_layer(c, fused, l, Kn, Gn, S, Q, scratch, a, b)
            if "avg" in readouts:
                sums["k"][l] += Kl.sum(0)
                sums["t"][l] += Gl.sum(0)
            if "per_step" in readouts:
                sums["pk"][l] += Kl[0]
                sums["pt"][l] += Gl[0]
    out = {}
    for l in range(c.depth):
        if "last" in readouts:
            out[(l + 1, "last")] = (K[l][0] + G[l][0], K[l][0])
        if "per_step" in readouts:
            k = sums["pk"][l]
            out[(l + 1, "per_step")] = ((k + sums["pt"][l]) / T, k / T)
        if "avg" in readouts:
            k = sums["k"][l]
            out[(l + 1, "avg")] = ((k + sums["t"][l]) / T**2, k / T**2)
    return out


@torch.no_grad()
def analytic_kernel_bank(
    arch: Architecture,
    x1,
    x2=None,
    *,
    readouts: tuple[str, ...] = READOUTS,
    dtype: torch.dtype | str = torch.float64,
    device: torch.device | str | None = None,
    block_size: int | None = None,
    quad_points: int = DEFAULT_QUAD_POINTS,
    compile: bool = False,
    backend: str = "auto",
    progress=None,
) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    """Every depth's and readout's RNTK and NNGP of ``arch`` from one recursion.

    Returns ``{(l, readout): (theta, nngp)}`` for l = 1..``arch.depth`` and each readout,
    each ``(N1, N2)``, equal to ``analytic_kernels(replace(arch, depth=l, readout=readout),
    x1, x2)`` (``arch.readout`` is ignored). Why one pass suffices: layer l of a depth-L
    network obeys the depth-l recursion (nothing flows down), and ``last`` / ``per_step``
    read cells of the end-aligned shift that ``avg`` also runs. So the cost is that of the
    deepest network with the most expensive readout requested: O(N1 N2 T L) without
    ``avg``, O(N1 N2 T^2 L) with it. No autograd (see :func:`analytic_kernels` for that).

    Backends: ``numba`` (:mod:`rntk_empirical.analytic_numba`: CPU, equal lengths, relu /
    erf / identity; each pair's chains run in registers, 10x the torch path (measured) with mean
    pooling), ``torch`` (any case, CPU or CUDA), ``auto`` (numba where it applies).
    ``compile=True`` runs the torch path's time steps through ``torch.compile`` (needs a C++
    compiler on CPU, Triton on CUDA; one compilation per nonlinearity and process):
    measured 1.3-2.8x faster on CPU. Steps where some pair is still padding stay eager.
    ``progress``: optional callable, called with the number of rows finished after each
    block of rows (every row once per direction).
    """
    bad = [r for r in readouts if r not in READOUTS]
    if bad or not readouts:
        raise ValueError(f"readouts={readouts!r}: expected a non-empty subset of {READOUTS}")
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"backend={backend!r} is not valid; use auto, numba or torch")
    c, dual, s1, s2, rows = _setup(arch, x1, x2, dtype, device, block_size, True, quad_points)
    symmetric = s2 is None
    N1, N2 = s1.n, (s1.n if symmetric else s2.n)
    T = s1.max_len
    equal = bool((s1.lengths == T).all()) and (s2 is None or bool((s2.lengths == T).all()))
    weighted = [r for r in readouts if r != "last"]
    if backend != "torch":
        why_not = analytic_numba.supported(arch.nonlinearity, equal, s1.values.device)
        if why_not is None:
            return _bank_numba(c, arch, s1, s2, readouts, progress)
        if backend == "numba":
            raise ValueError(f"backend='numba' cannot compute this bank: {why_not}")
    fused = get_fused_dual(arch.nonlinearity, quad_points)
    layers = tuple(range(c.depth))
    out = {
        (l + 1, r): (s1.values.new_zeros(N1, N2), s1.values.new_zeros(N1, N2))
        for l in layers
        for r in readouts
    }
    chains = 2 * T - 1 if "avg" in readouts else 1
    batch_rows = (block_size * N2 if block_size else _budget(s1)) // (chains * N2)
    if equal and batch_rows >= 1:  # small N: all shifts of a row block at once
        for d in range(arch.directions):
            side1, side2 = _sides(c, dual, s1, s2, d, tuple(weighted))
            for r0, r1, rs, cs in _blocks(side1, side2, batch_rows, symmetric):
                for key, (t_blk, k_blk) in _all_shifts_block(c, fused, rs, cs, readouts).items():
                    _write_block(out[key][0], t_blk, r0, r1, symmetric, c.sv2, True)
                    _write_block(out[key][1], k_blk, r0, r1, symmetric, c.sv2, True)
                if progress is not None:
                    progress(r1 - r0)
        _check_bank(s1.values.dtype, out)
        return out
    ws = _Workspace(arch.depth, rows * N2, s1.values)
    acc_flat = {
        (r, kind): [s1.values.new_empty(rows * N2) for _ in layers]
        for r in weighted
        for kind in "kt"
    }
    step = None
    if compile:
        ct = replace(c, **{k: s1.values.new_tensor(getattr(c, k)) for k in ("sw2", "su2", "sb2")})
        step = (_compiled_step(arch.nonlinearity, quad_points), ct)
    for d in range(arch.directions):
        side1, side2 = _sides(c, dual, s1, s2, d, tuple(weighted))
        for r0, r1, rs, cs in _blocks(side1, side2, rows, symmetric):
            B, n2 = r1 - r0, cs.xs.shape[0]
            view = ws.view(B, n2)
            accs = {
                r: _Accumulator(
                    r,
                    layers,
                    [b[: B * n2].view(B, n2).zero_() for b in acc_flat[(r, "k")]],
                    [b[: B * n2].view(B, n2).zero_() for b in acc_flat[(r, "t")]],
                )
                for r in weighted
            }
            _shift_block_fused(c, fused, rs, cs, 0, True, view, tuple(accs.values()), step)
            if "last" in readouts:
                for l in layers:
                    theta = torch.add(view["K"][l], view["G"][l], out=view["scratch"])
                    t_out, k_out = out[(l + 1, "last")]
                    _write_block(t_out, theta, r0, r1, symmetric, c.sv2, True)
                    _write_block(k_out, view["K"][l], r0, r1, symmetric, c.sv2, True)
            if "avg" in accs:
                for k in _shifts("avg", T):
                    if k != 0:
                        _shift_block_fused(c, fused, rs, cs, k, True, view, (accs["avg"],), step)
            for r, acc in accs.items():
                for l in layers:
                    _write_block(out[(l + 1, r)][0], acc.t[l], r0, r1, symmetric, c.sv2, True)
                    _write_block(out[(l + 1, r)][1], acc.k[l], r0, r1, symmetric, c.sv2, True)
            if progress is not None:
                progress(r1 - r0)
    _check_bank(s1.values.dtype, out)
    return out


def _bank_numba(
    c: _Consts, arch: Architecture, s1: Sequences, s2: Sequences | None, readouts, progress
) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    """:func:`analytic_kernel_bank` through :func:`analytic_numba.kernel_bank` (float64
    arithmetic throughout, the variances included: a float32 variance would put the
    correlation of a sequence with itself 1e-7 away from 1, where V_dphi has infinite slope)."""
    dtype = s1.values.dtype
    s1 = Sequences(s1.values.to(torch.float64), s1.lengths)
    s2 = None if s2 is None else Sequences(s2.values.to(torch.float64), s2.lengths)
    dual = get_dual(arch.nonlinearity)
    consts = (c.sw2, c.su2, c.sb2, c.sv2, _boundary_value(c), c.h0 == "per_input")
    out = None
    for d in range(arch.directions):
        side1, side2 = _sides(c, dual, s1, s2, d, ())
        bank = analytic_numba.kernel_bank(
            consts,
            arch.nonlinearity,
            side1,
            side2,
            readouts,
            s2 is None,
            dtype,
            progress,
        )
        if out is None:
            out = bank
        else:
            for key, (theta, nngp) in bank.items():
                out[key][0].add_(theta)
                out[key][1].add_(nngp)
    _check_bank(dtype, out)
    return out


def _check_bank(dtype: torch.dtype, out: dict) -> None:
    for (l, r), (theta, nngp) in out.items():
        _check_finite(dtype, **{f"NTK ({r}, layer {l})": theta, f"NNGP ({r}, layer {l})": nngp})


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
