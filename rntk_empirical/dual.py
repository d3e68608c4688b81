r"""Dual activations: Gaussian expectations of phi and phi' for a 2x2 covariance.

For a covariance [[a, c], [c, b]] and (u, v) ~ N(0, [[a, c], [c, b]]),

    V_phi(a, b, c)  = E[phi(u) phi(v)],        V_dphi(a, b, c) = E[phi'(u) phi'(v)].

These are the only nonlinearity-dependent pieces of the infinite-width recursion (SPEC
section 3). :func:`dual_activations` returns both at once for tensors ``a, b, c`` of any
broadcastable shapes (the recursion passes ``a`` as a column ``(B, 1)``, ``b`` as a row
``(1, N)`` and ``c`` as ``(B, N)``, so per-variance work stays vector-sized).

Closed forms, with rho = c / sqrt(a b) clamped to [-1, 1] and theta = arccos(rho):

``relu`` (arc-cosine kernels of degree 1 and 0, Cho & Saul 2009)
    V_phi  = sqrt(a b) / (2 pi) * (sqrt(1 - rho^2) + (pi - theta) rho)
    V_dphi = (pi - theta) / (2 pi)
``erf`` (Williams 1997)
    V_phi  = (2 / pi) arcsin(2 c / sqrt((1 + 2a)(1 + 2b)))
    V_dphi = (4 / pi) / sqrt((1 + 2a)(1 + 2b) - 4 c^2)
``gelu`` (exact, x Phi(x); Stein's lemma), with D = (1 + a)(1 + b) - c^2 and
P2 = 1/4 + arcsin(c / sqrt((1 + a)(1 + b))) / (2 pi)
    V_phi  = c P2 + (a b + c^2 (1 - a b) / ((1 + a)(1 + b))) / (2 pi sqrt(D))
    V_dphi = P2 + c / (2 pi sqrt(D)) (1 / (1 + a) + 1 / (1 + b)) + c / (2 pi D^{3/2})
``identity``
    V_phi = c,  V_dphi = 1

Each formula lives with its nonlinearity, one module per nonlinearity in
:mod:`rntk_empirical.nonlinearities` (this module keeps what is generic: the quadrature, the
safe square root and arc-cosine autograd functions, and the lookups by name).

Anything else (``tanh``, registered nonlinearities) uses a tensor-product Gauss-Hermite rule
with u = sqrt(a) z_1, v = sqrt(b) (rho z_1 + sqrt(1 - rho^2) z_2), exact for polynomials of
degree < 2 * points in each of z_1, z_2. Accuracy for tanh with the default 64 points: ~1e-10
at variance 1, ~1e-5 at variance 4, ~1e-3 at variances 25-100 (tanh is then nearly a step and
Gauss-Hermite converges slowly; raise ``quad_points`` if that matters).

Degenerate covariances. If a = 0 (or b = 0) then u = 0 almost surely and the expectations are
evaluated exactly for that degenerate Gaussian: for relu V_phi = 0 and V_dphi = phi'(0)
E[phi'(v)] = 0, with the convention phi'(0) = 0 used by torch and by the finite network (the
limit a -> 0+ of the closed form would be 1/4 instead). Correlations are clamped to [-1, 1],
so covariance matrices that are not PSD by round-off give finite values.

Identical states. rho = c / sqrt(a b) of a state with itself (x = x') is 1 in exact arithmetic
but 1 - O(eps) in floating point (c and a come from different operations), and the arc-cosine
functions have infinite slope there: theta = arccos(1 - eps) = sqrt(2 eps), a relative error of
1e-8 in V_dphi in float64 and 3e-4 in float32, compounding over the steps of a recursion. Every
dual therefore takes an optional boolean ``same`` (broadcastable to the output) marking pairs
whose two states are identical; their correlation is set to exactly 1 (theta = 0), so the
diagonal K(x, x) is exact. The recursion passes it for identical sequences; ``None`` means none.

Gradients. ``d/drho`` of the arc-cosine functions is handled by a custom autograd function:
the degree-1 function J_1(rho) = sqrt(1 - rho^2) + (pi - theta) rho has the finite derivative
pi - theta (the two 1/sqrt(1 - rho^2) terms cancel analytically), and the degree-0 function
J_0 = pi - theta has derivative 1/sqrt(1 - rho^2), which is genuinely infinite at |rho| = 1 (the
relu kernel has a cusp at x = x'); it is set to 0 there, the symmetric (mean of one-sided)
choice, which also makes d/dx of diagonal entries K(x, x) exact. Square roots of variances
use a zero gradient at 0. So autograd through every dual activation gives finite gradients.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from rntk_empirical.nonlinearities.base import DualFn, FusedFn, Nonlinearity

__all__ = [
    "DEFAULT_QUAD_POINTS",
    "TWO_PI",
    "ArcCosine",
    "DualFn",
    "FusedFn",
    "SafeSqrt",
    "correlation",
    "dual_activations",
    "get_dual",
    "get_fused_dual",
    "hermite_rule",
    "one",
    "quadrature_dual",
    "scales",
]

DEFAULT_QUAD_POINTS = 64
# Flattened covariances evaluated at once by the quadrature (bounds its Q^2 temporaries).
_QUAD_CHUNK_NODES = 2**22

TWO_PI = 2.0 * math.pi


class SafeSqrt(torch.autograd.Function):
    """sqrt(max(x, 0)) with gradient 1 / (2 sqrt(x)) for x > 0 and 0 at x <= 0."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = torch.sqrt(torch.clamp(x, min=0.0))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        pos = y > 0
        return torch.where(pos, grad * 0.5 / torch.where(pos, y, 1.0), 0.0)


class ArcCosine(torch.autograd.Function):
    """(J_0(rho), J_1(rho)) = (pi - arccos r, sqrt(1 - r^2) + (pi - arccos r) r), r = clamp(rho).

    The clamp is straight-through in the backward pass (derivatives at the clamped value).
    """

    @staticmethod
    def forward(ctx, rho: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = torch.clamp(rho, -1.0, 1.0)
        j0 = torch.asin(r).add_(0.5 * math.pi)  # pi - arccos(r)
        one_minus = torch.addcmul(torch.ones((), dtype=r.dtype, device=r.device), r, r, value=-1)
        j1 = torch.clamp_(one_minus, min=0.0).sqrt_().addcmul_(j0, r)
        ctx.save_for_backward(r, j0)
        return j0, j1

    @staticmethod
    def backward(ctx, g0: torch.Tensor, g1: torch.Tensor) -> torch.Tensor:
        r, j0 = ctx.saved_tensors
        s = 1.0 - r * r
        interior = s > 0
        dj0 = torch.where(interior, torch.rsqrt(torch.where(interior, s, 1.0)), 0.0)
        return g0 * dj0 + g1 * j0


def scales(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sqrt(a), 1/sqrt(a) (0 where a <= 0) and the indicator a > 0, all in a's shape."""
    pos = a > 0
    sa = SafeSqrt.apply(a)
    ra = torch.where(pos, 1.0 / torch.where(pos, sa, 1.0), 0.0)
    return sa, ra, pos.to(a.dtype)


def correlation(a, b, c, same=None):
    """rho = c / sqrt(a b) (0 where a or b is 0), exactly 1 where ``same``; and the scales.

    Where ``same``, rho is 1 in value with the gradient of c / sqrt(a b) (which is 0 in exact
    arithmetic there: c, a and b are the same function of the inputs)."""
    sa, ra, ia = scales(a)
    sb, rb, ib = scales(b)
    rho = c * ra * rb
    if same is not None:
        rho = torch.where(same, (rho - rho.detach()) + 1.0, rho)
    return rho, sa, sb, ia, ib


@lru_cache(maxsize=16)
def hermite_rule(points: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes and weights normalized to sum to 1 (E over N(0,1))."""
    from scipy.special import roots_hermitenorm

    z, w = roots_hermitenorm(points)
    return z, w / w.sum()


def quadrature_dual(
    nonlinearity: Nonlinearity,
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    points: int = DEFAULT_QUAD_POINTS,
    same: torch.Tensor | None = None,
):
    """Tensor-product Gauss-Hermite estimate of (V_phi, V_dphi) for any phi (``same``: as
    for the closed forms, rho = 1 exactly on identical states).

    The rule factors the covariance as (u, v) = (s_a z_1, s_b (rho z_1 + tau z_2)), whose
    error is not symmetric in (a, b); the estimate is the mean of both orders, so that
    K(x, x') = K(x', x) exactly (the kernel of x1 against x2 is the transpose of x2 against
    x1, as for the closed forms). Works on the flattened broadcast covariances in chunks so
    the ``(E, Q, Q)`` temporaries stay below ~``_QUAD_CHUNK_NODES`` nodes.
    """
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"quad_points={points!r} is not valid; expected an integer >= 2")
    shape = torch.broadcast_shapes(a.shape, b.shape, c.shape)
    dtype, device = c.dtype, c.device
    z_np, w_np = hermite_rule(points)
    z = torch.as_tensor(z_np, dtype=dtype, device=device)
    w = torch.as_tensor(w_np, dtype=dtype, device=device)
    rho, sa, sb, _, _ = correlation(a, b, c, same)
    rho = torch.clamp(rho, -1.0, 1.0)
    tau = SafeSqrt.apply(1.0 - rho * rho)
    sa, sb, rho, tau = (t.expand(shape).reshape(-1) for t in (sa, sb, rho, tau))
    chunk = max(1, _QUAD_CHUNK_NODES // (points * points))
    phis, dphis = [], []
    for s in range(0, sa.shape[0], chunk):
        e = slice(s, s + chunk)
        phi_e, dphi_e = 0.0, 0.0
        for s1, s2 in ((sa[e], sb[e]), (sb[e], sa[e])):  # both orders: exactly symmetric
            u = s1[:, None] * z  # (E, Q): u at node i
            v = s2[:, None, None] * (rho[e, None, None] * z[:, None] + tau[e, None, None] * z)
            pu, du = nonlinearity.phi(u), nonlinearity.dphi(u)
            pv, dv = nonlinearity.phi(v), nonlinearity.dphi(v)  # (E, Q, Q): v at node (i, j)
            phi_e = phi_e + 0.5 * (((pv @ w) * pu) @ w)
            dphi_e = dphi_e + 0.5 * (((dv @ w) * du) @ w)
        phis.append(phi_e)
        dphis.append(dphi_e)
    return torch.cat(phis).reshape(shape), torch.cat(dphis).reshape(shape)


# ---------------------------------------------------------------------------- fused, in place
# No-grad, in-place forms of the duals for the hot loop of the recursion (each
# nonlinearity's ``fused``): they take the pre-activation covariance S and tangent kernel Q of
# a block and write K = V_phi(a, b, S) and G = V_dphi(a, b, S) * Q into preallocated buffers,
# with no temporary allocations (fresh allocations of cache-sized tensors cost page faults on
# every op). ``a`` is a column ``(B, 1)``, ``b`` a row ``(1, N)``; ``S`` is overwritten;
# ``same`` (optional, bool, S's shape) marks identical states. tests/test_dual.py checks them
# against the out-of-place duals.
_ONE: dict[tuple, torch.Tensor] = {}


def one(like: torch.Tensor) -> torch.Tensor:
    """A cached 0-dim 1.0 of ``like``'s dtype and device (an ``addcmul`` operand)."""
    key = (like.dtype, like.device)
    if key not in _ONE:
        _ONE[key] = torch.ones((), dtype=like.dtype, device=like.device)
    return _ONE[key]


def get_fused_dual(
    nonlinearity: str | Nonlinearity,
    quad_points: int = DEFAULT_QUAD_POINTS,
    series_tol: float | None = None,
) -> FusedFn:
    """In-place ``fn(a, b, S, Q, K_out, G_out, scratch, same=None)``: K_out = V_phi(a, b, S),
    G_out = V_dphi(a, b, S) * Q (skipped if Q is None); S and scratch are clobbered.
    Nonlinearities without a closed form evaluate :func:`get_dual`'s function and copy."""
    nl = _lookup(nonlinearity)
    if nl.fused is not None:
        return nl.fused
    ref = get_dual(nl, quad_points, series_tol)

    def fn(a, b, S, Q, K_out, G_out, scratch, same=None) -> None:
        v_phi, v_dphi = ref(a, b, S, same)
        K_out.copy_(v_phi)
        if Q is not None:
            torch.mul(v_dphi, Q, out=G_out)

    return fn


def _lookup(nonlinearity: str | Nonlinearity) -> Nonlinearity:
    """The object of a name (the registry imports this module: looked up at call time)."""
    if isinstance(nonlinearity, Nonlinearity):
        return nonlinearity
    from rntk_empirical.nonlinearities.registry import get_nonlinearity

    return get_nonlinearity(nonlinearity)


def get_dual(
    nonlinearity: str | Nonlinearity,
    quad_points: int = DEFAULT_QUAD_POINTS,
    series_tol: float | None = None,
) -> DualFn:
    """The function ``(a, b, c, same=None) -> (V_phi, V_dphi)`` for a nonlinearity (name or
    object); ``same``: optional bool mask of identical states (module docstring). The
    closed form where the nonlinearity has one, else its ``fast_dual`` if set, else (no grad
    asked, default ``quad_points``) the smooth-dual series of :mod:`rntk_empirical.smooth_dual`
    where the nonlinearity qualifies for its error contract at ``series_tol`` (None: its
    default 1e-9), else Gauss-Hermite quadrature with ``quad_points`` points per dimension."""
    nl = _lookup(nonlinearity)
    if nl.dual is not None:
        return nl.dual
    if nl.fast_dual is not None:
        return nl.fast_dual

    def fn(a, b, c, same=None):
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (a, b, c))
        if not grad and quad_points == DEFAULT_QUAD_POINTS:  # else the rule asked for
            from rntk_empirical import smooth_dual  # imports the registry, which imports this

            tol = smooth_dual.resolve_tol(series_tol)
            smooth = smooth_dual.prepared_or_none(nl, a, b, tol)
            if smooth is not None:  # the Mehler series (no grad through its coefficients)
                return smooth_dual.torch_dual(smooth, a, b, c, same)
        return quadrature_dual(nl, a, b, c, quad_points, same)

    return fn


def dual_activations(
    nonlinearity: str | Nonlinearity,
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    *,
    quad_points: int = DEFAULT_QUAD_POINTS,
    series_tol: float | None = None,
    same: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(V_phi(a, b, c), V_dphi(a, b, c)) for the covariance [[a, c], [c, b]].

    Args:
        nonlinearity: a name known to :func:`rntk_empirical.nonlinearities.get_nonlinearity`
            (or the object itself).
        a, b: variances (>= 0); c: covariance. Any broadcastable shapes, one float dtype.
        quad_points: Gauss-Hermite points per dimension for nonlinearities without a
            closed form.
        series_tol: error tolerance of the smooth-dual series (tanh and registered smooth
            nonlinearities; None: 1e-9, see :mod:`rntk_empirical.smooth_dual`).
        same: optional bool tensor (broadcastable) marking identical states, whose
            correlation is then exactly 1 (see the module docstring).

    Returns:
        Two tensors of the broadcast shape; finite for every finite input.
    """
    a, b, c = (torch.as_tensor(t) for t in (a, b, c))
    if not (a.is_floating_point() and b.is_floating_point() and c.is_floating_point()):
        raise TypeError("dual_activations needs floating-point a, b, c")
    return get_dual(nonlinearity, quad_points, series_tol)(a, b, c, same)
