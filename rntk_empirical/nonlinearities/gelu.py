r"""GELU (exact): phi(x) = x Phi(x), phi'(x) = Phi(x) + x N(x), with Phi the standard normal
CDF and N its density (``torch.nn.functional.gelu(x, approximate="none")``).

Duals, for (u, v) ~ N(0, [[a, c], [c, b]]), with D = (1 + a)(1 + b) - c^2 and
P2 = E[Phi(u) Phi(v)] = 1/4 + arcsin(c / sqrt((1 + a)(1 + b))) / (2 pi):

    V_phi  = c P2 + (a b + c^2 (1 - a b) / ((1 + a)(1 + b))) / (2 pi sqrt(D))
    V_dphi = P2 + c / (2 pi sqrt(D)) (1 / (1 + a) + 1 / (1 + b)) + c / (2 pi D^{3/2})

Derivation. Stein's lemma for a Gaussian vector X with covariance Sigma,
E[X_i X_j F] = Sigma_ij E[F] + sum_kl Sigma_ik Sigma_jl E[d_k d_l F], with F = Phi(u) Phi(v)
gives V_phi from E[Phi(u) Phi(v)] = P2 (the orthant probability of (u - z1, v - z2)),
E[N(u) N(v)] = 1 / (2 pi sqrt(D)) and E[u N(u) Phi(v)] = c / (2 pi (1 + a) sqrt(D))
(tilting the Gaussian by N(u)); V_dphi needs in addition E[u N(u) v N(v)] = c / (2 pi D^{3/2}).

In the variables the compiled bank uses, r = 1 / sqrt(1 + a), f = a r, g = r^2 = 1 / (1 + a)
per side, x = c r_a r_b (the correlation of the tilted pair, P2 = 1/4 + arcsin(x) / 2 pi) and
s^2 = 1 - x^2 = D g_a g_b:

    V_phi  = c P2 + (f_a f_b s^2 + r_a r_b x^2) / (2 pi s)
    V_dphi = P2 + x (g_a + g_b + g_a g_b / s^2) / (2 pi s)

Always well conditioned: D >= 1 + a + b for PSD input, i.e. s^2 >= g_a + g_b - g_a g_b (the
value on identical states, c^2 = a b), which is also the floor applied to s^2 (so a
covariance off by round-off stays finite; ``same`` is not needed). Diagonal (a = b = c):
V_phi(a, a, a) = a (1/4 + arcsin(a / (1 + a)) / 2 pi) + a^2 / (pi (1 + a) sqrt(1 + 2a)).
At a = 0: V_phi = 0, V_dphi = phi'(0)^2 = 1/4.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rntk_empirical.dual import one
from rntk_empirical.nonlinearities.base import CompiledDual, Nonlinearity
from rntk_empirical.nonlinearities.compiled import FASTMATH, fast_asin, njit

_INV_2PI = 1.0 / (2.0 * math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def phi(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x)


def dphi(x: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtr(x) + x * torch.exp(-0.5 * x * x) * _INV_SQRT_2PI


def _sides(a: torch.Tensor):
    """r = 1 / sqrt(1 + a), f = a r, g = r^2 (a clamped at 0)."""
    a = torch.clamp(a, min=0.0)
    r = torch.rsqrt(1.0 + a)
    return r, a * r, r * r


def dual(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, same=None):
    """(V_phi, V_dphi) of the module docstring (``same`` is not needed, see there)."""
    ra, fa, ga = _sides(a)
    rb, fb, gb = _sides(b)
    x = torch.clamp(c * ra * rb, -1.0, 1.0)
    s2 = 1.0 - x * x
    # at least the PSD bound (docstring), with the gradient of 1 - x^2 (equal to it where
    # the bound is reached in exact arithmetic: identical or antipodal states)
    s2 = s2 + torch.clamp(ga + gb - ga * gb - s2, min=0.0).detach()
    s = torch.sqrt(s2)
    p2 = 0.25 + _INV_2PI * torch.asin(x)
    v_phi = c * p2 + _INV_2PI * (fa * fb * s2 + ra * rb * x * x) / s
    v_dphi = p2 + _INV_2PI * x * (ga + gb + ga * gb / s2) / s
    return v_phi, v_dphi


def fused(a, b, S, Q, K_out, G_out, scratch, same=None) -> None:
    """In place: K_out = V_phi(a, b, S), G_out = V_dphi(a, b, S) * Q (see dual.py); the
    per-side factors are ``(B, 1)`` and ``(1, N)`` vectors, every full-size op writes into
    S, scratch, K_out or G_out."""
    ra, fa, ga = _sides(a)
    rb, fb, gb = _sides(b)
    x = S.mul_(ra).mul_(rb).clamp_(-1.0, 1.0)
    floor = torch.mul(ga, gb, out=K_out).neg_().add_(ga).add_(gb)  # the PSD bound
    s2 = torch.addcmul(one(x), x, x, value=-1.0, out=scratch)
    torch.maximum(s2, floor, out=s2)
    if Q is not None:  # G = (P2 + x (g_a + g_b + g_a g_b / s^2) / (2 pi s)) Q
        t = torch.reciprocal(s2, out=K_out).mul_(ga).mul_(gb).add_(ga).add_(gb)
        torch.rsqrt(s2, out=G_out).mul_(x).mul_(t).mul_(_INV_2PI)
    p2 = torch.asin(x, out=K_out).mul_(_INV_2PI).add_(0.25)
    if Q is not None:
        G_out.add_(p2).mul_(Q)
    # K = c P2 + (f_a f_b s^2 + r_a r_b x^2) / (2 pi s), c = x sqrt(1 + a) sqrt(1 + b)
    p2.mul_(x).div_(ra).div_(rb)
    s = s2.sqrt_()
    x.mul_(x).mul_(ra).mul_(rb).div_(s)
    s.mul_(fa).mul_(fb)
    K_out.add_(x.add_(s), alpha=_INV_2PI)


def diagonal(a: torch.Tensor) -> torch.Tensor:
    """V_phi(a, a, a) = a (1/4 + arcsin(a / (1 + a)) / 2 pi) + a^2 / (pi (1 + a) sqrt(1 + 2a))."""
    a = torch.clamp(a, min=0.0)
    p2 = 0.25 + _INV_2PI * torch.asin(a / (1.0 + a))
    return a * p2 + (a * a / math.pi) / ((1.0 + a) * torch.sqrt(1.0 + 2.0 * a))


def factors(var: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """r = 1 / sqrt(1 + a), f = a r, g = r^2 (a clamped at 0)."""
    a = np.maximum(var, 0.0)
    r = 1.0 / np.sqrt(1.0 + a)
    return r, a * r, r * r


@njit(inline="always", fastmath=FASTMATH)
def cell(S, Q, ri, rj, fi, fj, gi, gj, lo, tab):
    """x = S r_i r_j, s^2 = max(1 - x^2, g_i + g_j - g_i g_j); (V_phi, V_dphi Q) of the
    module docstring (``lo`` is not needed: identical states are well conditioned)."""
    x = min(max(S * ri * rj, -1.0), 1.0)
    # the outer max (never active) lets the compiler prove s2 > 0: without it the square root
    # is a library call and the tile loop does not vectorize (measured 1.7x slower per cell)
    s2 = max(max(1.0 - x * x, gi + gj - gi * gj), 1e-300)
    inv_s = 1.0 / math.sqrt(s2)
    p2 = 0.25 + _INV_2PI * fast_asin(x)
    k = S * p2 + _INV_2PI * (fi * fj * s2 + ri * rj * x * x) * inv_s
    g = p2 + _INV_2PI * x * (gi + gj + gi * gj * inv_s * inv_s) * inv_s
    return k, g * Q


@njit(inline="always")
def diagonal_scalar(S):
    a = max(S, 0.0)
    p2 = 0.25 + _INV_2PI * math.asin(a / (1.0 + a))
    return a * p2 + (a * a / math.pi) / ((1.0 + a) * math.sqrt(1.0 + 2.0 * a))


GELU = Nonlinearity(
    "gelu",
    phi,
    dphi,
    dual=dual,
    fused=fused,
    diagonal=diagonal,
    compiled=CompiledDual(cell, factors, diagonal_scalar),
)
