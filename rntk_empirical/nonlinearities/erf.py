r"""erf: phi(x) = erf(x), phi'(x) = (2 / sqrt(pi)) exp(-x^2).

Duals (Williams 1997), with d_a = 1 + 2a, d_b = 1 + 2b:

    V_phi  = (2 / pi) arcsin(2 c / sqrt(d_a d_b))
    V_dphi = (4 / pi) / sqrt(d_a d_b - 4 c^2)

Always well conditioned: d_a d_b - 4 c^2 >= 1 for PSD input (|x| <= 2a / (1 + 2a) < 1 even
for identical states, so ``same`` is not needed). Diagonal: (2/pi) arcsin(2a / (1 + 2a)).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rntk_empirical.dual import one
from rntk_empirical.nonlinearities.base import CompiledDual, Nonlinearity
from rntk_empirical.nonlinearities.compiled import FASTMATH, fast_asin, njit


def dphi(x: torch.Tensor) -> torch.Tensor:
    return (2.0 / math.sqrt(math.pi)) * torch.exp(-x * x)


def dual(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, same=None):
    """(V_phi, V_dphi) of the module docstring (``same`` is not needed, see there)."""
    ra = torch.rsqrt(1.0 + 2.0 * torch.clamp(a, min=0.0))
    rb = torch.rsqrt(1.0 + 2.0 * torch.clamp(b, min=0.0))
    x = torch.clamp(2.0 * c * ra * rb, -1.0, 1.0)  # |x| < 1 strictly for PSD covariances
    v_phi = (2.0 / math.pi) * torch.asin(x)
    # da db - 4c^2 = da db (1 - x^2); the floor only matters for non-PSD round-off
    v_dphi = (4.0 / math.pi) * ra * rb * torch.rsqrt(torch.clamp(1.0 - x * x, min=1e-300))
    return v_phi, v_dphi


def fused(a, b, S, Q, K_out, G_out, scratch, same=None) -> None:
    """In place: K_out = V_phi(a, b, S), G_out = V_dphi(a, b, S) * Q (see dual.py)."""
    ra = torch.rsqrt(1.0 + 2.0 * torch.clamp(a, min=0.0))
    rb = torch.rsqrt(1.0 + 2.0 * torch.clamp(b, min=0.0))
    x = S.mul_(2.0 * ra).mul_(rb).clamp_(-1.0, 1.0)
    if Q is not None:
        g = torch.addcmul(one(x), x, x, value=-1.0, out=scratch).clamp_(min=1e-300).rsqrt_()
        torch.mul(g, Q, out=G_out).mul_((4.0 / math.pi) * ra).mul_(rb)
    torch.asin(x, out=K_out).mul_(2.0 / math.pi)


def diagonal(a: torch.Tensor) -> torch.Tensor:
    """V_phi(a, a, a) = (2/pi) arcsin(2a / (1 + 2a))."""
    a = torch.clamp(a, min=0.0)
    return (2.0 / math.pi) * torch.asin(torch.clamp(2.0 * a / (1.0 + 2.0 * a), max=1.0))


def factors(var: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """r = sqrt(2 / (1 + 2a)), f = 1 (unused), g = sqrt(4 / pi) / sqrt(1 + 2a)."""
    d = 1.0 / np.sqrt(1.0 + 2.0 * np.maximum(var, 0.0))
    return math.sqrt(2.0) * d, np.ones_like(var), math.sqrt(4.0 / math.pi) * d


@njit(inline="always", fastmath=FASTMATH)
def cell(S, Q, ri, rj, fi, fj, gi, gj, lo, tab):
    """x = S r_i r_j; ((2/pi) arcsin(x), Q g_i g_j / sqrt(1 - x^2))."""
    x = min(max(S * ri * rj, -1.0), 1.0)
    return (2.0 / math.pi) * fast_asin(x), Q * gi * gj / math.sqrt(max(1.0 - x * x, 1e-300))


@njit(inline="always")
def diagonal_scalar(S):
    S0 = max(S, 0.0)
    return (2.0 / math.pi) * math.asin(min(2.0 * S0 / (1.0 + 2.0 * S0), 1.0))


ERF = Nonlinearity(
    "erf",
    torch.erf,
    dphi,
    dual=dual,
    fused=fused,
    diagonal=diagonal,
    compiled=CompiledDual(cell, factors, diagonal_scalar),
)
