r"""ReLU: phi(x) = max(x, 0), phi'(x) = [x > 0] (phi'(0) = 0, as torch and the network use).

Duals: the arc-cosine kernels of degree 1 and 0 (Cho & Saul 2009). With
rho = c / sqrt(a b) clamped to [-1, 1], theta = arccos(rho),

    V_phi  = sqrt(a b) / (2 pi) * (sqrt(1 - rho^2) + (pi - theta) rho) = sqrt(a b) J_1(rho) / 2 pi
    V_dphi = (pi - theta) / (2 pi) = J_0(rho) / 2 pi

and V_phi(a, a, a) = a / 2 on the diagonal. a = 0 gives 0 for both (the degenerate Gaussian
with phi'(0) = 0; see :mod:`rntk_empirical.dual`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rntk_empirical.dual import TWO_PI, ArcCosine, correlation, one, scales
from rntk_empirical.nonlinearities.base import CompiledDual, Nonlinearity
from rntk_empirical.nonlinearities.compiled import FASTMATH, fast_asin, njit

_HALF_PI = 0.5 * math.pi
_INV_2PI_SQRT = 1.0 / math.sqrt(2.0 * math.pi)


def dphi(x: torch.Tensor) -> torch.Tensor:
    return (x > 0).to(x.dtype)


def dual(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, same=None):
    """(V_phi, V_dphi) of the module docstring; ``same``: optional bool mask of identical
    states (rho = 1 exactly there)."""
    rho, sa, sb, ia, ib = correlation(a, b, c, same)
    j0, j1 = ArcCosine.apply(rho)
    v_phi = j1 * (sa / TWO_PI) * sb
    v_dphi = j0 * (ia / TWO_PI) * ib
    return v_phi, v_dphi


def fused(a, b, S, Q, K_out, G_out, scratch, same=None) -> None:
    """In place: K_out = V_phi(a, b, S), G_out = V_dphi(a, b, S) * Q (see dual.py)."""
    sa, ra, ia = scales(a)
    sb, rb, ib = scales(b)
    rho = S.mul_(ra).mul_(rb).clamp_(-1.0, 1.0)
    if same is not None:
        rho.masked_fill_(same, 1.0)
    j0 = torch.asin(rho, out=scratch).add_(0.5 * math.pi)
    if Q is not None:
        torch.mul(j0, Q, out=G_out).mul_(ia / TWO_PI).mul_(ib)
    k = torch.addcmul(one(rho), rho, rho, value=-1.0, out=K_out).sqrt_()
    k.addcmul_(j0, rho).mul_(sa / TWO_PI).mul_(sb)


def diagonal(a: torch.Tensor) -> torch.Tensor:
    """V_phi(a, a, a) = a / 2."""
    return 0.5 * a


def factors(var: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """r = 1/sqrt(a), f = sqrt(a / 2 pi), g = [a > 0] / sqrt(2 pi) (r = 0 at a = 0)."""
    pos = var > 0
    r = np.where(pos, 1.0 / np.sqrt(np.where(pos, var, 1.0)), 0.0)
    return r, np.sqrt(np.maximum(var, 0.0)) * _INV_2PI_SQRT, pos * _INV_2PI_SQRT


@njit(inline="always", fastmath=FASTMATH)
def cell(S, Q, ri, rj, fi, fj, gi, gj, lo, tab):
    """rho = S r_i r_j; (J_1(rho) f_i f_j, J_0(rho) Q g_i g_j)."""
    rho = min(max(S * ri * rj, lo), 1.0)
    j0 = _HALF_PI + fast_asin(rho)  # pi - arccos(rho)
    return (math.sqrt(max(1.0 - rho * rho, 0.0)) + j0 * rho) * fi * fj, j0 * Q * gi * gj


@njit(inline="always")
def diagonal_scalar(S):
    return 0.5 * max(S, 0.0)


RELU = Nonlinearity(
    "relu",
    torch.relu,
    dphi,
    dual=dual,
    fused=fused,
    diagonal=diagonal,
    compiled=CompiledDual(cell, factors, diagonal_scalar),
)
