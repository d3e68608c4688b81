r"""A closed-form nonlinearity that is not built in, added as docs/extending.md says: this one
module (the forms) and one registration (at the bottom). tests/test_nonlinearity_sin.py checks
it against quadrature, every analytic backend and finite networks.

phi = sin, phi' = cos. For (u, v) ~ N(0, [[a, c], [c, b]]),
E[sin u sin v] = (E cos(u - v) - E cos(u + v)) / 2 and E cos w = exp(-Var w / 2), so

    V_phi  = exp(-(a + b) / 2) sinh(c),      V_dphi = exp(-(a + b) / 2) cosh(c),

and V_phi(a, a, a) = (1 - exp(-2a)) / 2 on the diagonal. Compiled: per-sequence factors
f = g = exp(-a / 2) (r unused), per-pair cell (sinh(S) f_i f_j, cosh(S) Q g_i g_j).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rntk_empirical.nonlinearities import CompiledDual, register_nonlinearity
from rntk_empirical.nonlinearities.compiled import njit


def dual(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, same=None):
    """(V_phi, V_dphi) for the covariance [[a, c], [c, b]] (any broadcastable shapes)."""
    e = torch.exp(-0.5 * (a + b))
    return e * torch.sinh(c), e * torch.cosh(c)


def fused(a, b, S, Q, K_out, G_out, scratch, same=None) -> None:
    """In place: K_out = V_phi(a, b, S), G_out = V_dphi(a, b, S) * Q; a column, b a row."""
    ea, eb = torch.exp(-0.5 * a), torch.exp(-0.5 * b)
    if Q is not None:
        torch.cosh(S, out=scratch).mul_(ea).mul_(eb)
        torch.mul(scratch, Q, out=G_out)
    torch.sinh(S, out=K_out).mul_(ea).mul_(eb)


def diagonal(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 - torch.exp(-2.0 * a))


def factors(var: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e = np.exp(-0.5 * var)
    return np.ones_like(var), e, e


@njit(inline="always")
def cell(S, Q, ri, rj, fi, fj, gi, gj, lo, tab):
    return math.sinh(S) * fi * fj, math.cosh(S) * Q * gi * gj


@njit(inline="always")
def diagonal_scalar(S):
    return 0.5 * (1.0 - math.exp(-2.0 * S))


SIN = register_nonlinearity(
    "sin",
    torch.sin,
    torch.cos,
    dual=dual,
    fused=fused,
    diagonal=diagonal,
    compiled=CompiledDual(cell, factors, diagonal_scalar),
)
