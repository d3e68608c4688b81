"""The differentiable (out-of-place) recursion: the reference path, used whenever inputs
require grad. One shift of a row block at a time (see :mod:`rntk_empirical.analytic`)."""

from __future__ import annotations

import torch

from rntk_empirical.analytic.common import (
    BatchSide,
    KernelConstants,
    boundary,
    final_scale,
    identical_pairs,
    layer_step,
    readout_kind,
    shift_range,
    shifts,
)
from rntk_empirical.dual import DualFn


def shift_block(
    c: KernelConstants,
    dual: DualFn,
    readout: str,
    r: BatchSide,
    s: BatchSide,
    shift: int,
    want_ntk: bool,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Differentiable (out-of-place) contribution of one shift (x at p, x' at p - shift) for a
    block: (theta, nngp) / s_v^2. A ``final`` readout: the final cell (times its weights);
    otherwise the weighted sum over active cells."""
    T = r.xs.shape[1]
    final = readout_kind(c, readout, T) == "final"
    B, N2 = r.xs.shape[0], s.xs.shape[0]
    max_r, max_s = max(r.starts_list), max(s.starts_list)
    p_first, p_last = shift_range(r, s, shift, T)
    kb = boundary(c, r, s, shift)
    kb = r.xs.new_zeros(B, N2) if kb is None else kb
    same = identical_pairs(r, s, shift)
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
            _, K_new, G_new = layer_step(c, dual, K[l], G[l], drive, G_low, a, b, same)
            if masked:
                K_new = torch.where(active, K_new, K[l])
                G_new = None if G_new is None else torch.where(active, G_new, G[l])
            K[l], G[l] = K_new, G_new
            drive, G_low = c.su2 * K_new, G_new
        if not final:
            w = r.weights[readout][:, p, None] * s.weights[readout][None, :, q]  # 0 if inactive
            acc_k = acc_k + K[-1] * w
            if want_ntk:
                acc_t = acc_t + (K[-1] + G[-1]) * w
    if final:
        theta, nngp = (K[-1] + G[-1] if want_ntk else None), K[-1]
        sc = final_scale(readout, r, s)
        if sc is not None:
            theta, nngp = (None if theta is None else theta * sc), nngp * sc
        return theta, nngp
    return (acc_t if want_ntk else None), acc_k


def pair_block(
    c: KernelConstants, dual: DualFn, readout: str, r: BatchSide, s: BatchSide, want_ntk: bool
):
    """Differentiable (theta, nngp) for rows r against columns s, one direction, with s_v^2."""
    theta = nngp = None
    for k in shifts(c, readout, r.xs.shape[1]):
        t_k, n_k = shift_block(c, dual, readout, r, s, k, want_ntk)
        nngp = n_k if nngp is None else nngp + n_k
        if want_ntk:
            theta = t_k if theta is None else theta + t_k
    return (None if theta is None else c.sv2 * theta), c.sv2 * nngp
