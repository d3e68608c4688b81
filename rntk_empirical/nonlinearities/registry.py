"""The one registry of nonlinearities: built-ins, checked registration, ``module:attr`` specs.

    register_nonlinearity("softplus", torch.nn.functional.softplus)        # phi' by autograd
    register_nonlinearity("sin", torch.sin, torch.cos, dual=sin_dual)      # a closed form
    resolve_nonlinearity("mypkg.acts:softplus")   # imported and registered under that name

Every registration checks phi' against autograd of phi (a central difference where autograd
cannot differentiate phi) on :data:`CHECK_GRID`, and refuses a mismatch naming the worst
point: a wrong derivative would give an analytic kernel that silently disagrees with the
empirical NTK (which differentiates phi itself). Replacing a registered name needs
``overwrite=True``; the built-ins cannot be replaced.
"""

from __future__ import annotations

import importlib
from dataclasses import replace

import torch

from rntk_empirical.nonlinearities.base import (
    CompiledDual,
    DualFn,
    Fn,
    FusedFn,
    Nonlinearity,
)
from rntk_empirical.nonlinearities.erf import ERF
from rntk_empirical.nonlinearities.gelu import GELU
from rntk_empirical.nonlinearities.identity import IDENTITY
from rntk_empirical.nonlinearities.relu import RELU
from rntk_empirical.nonlinearities.tanh import TANH

BUILT_IN: tuple[Nonlinearity, ...] = (RELU, ERF, GELU, TANH, IDENTITY)
_REGISTRY: dict[str, Nonlinearity] = {nl.name: nl for nl in BUILT_IN}

# Where phi' is checked: |x| <= 20 covers every argument the 64-point Gauss-Hermite rule
# evaluates (|x| <= ~9.5 sqrt(variance), the nodes with weight above 1e-20) for
# pre-activation variances up to ~4, and the bulk of the Gaussian far beyond. An even number
# of points: x = 0 (where a kink's one-sided derivatives may legitimately differ) is not on it.
CHECK_GRID = (-20.0, 20.0, 4000)
# |phi' - reference| / (1 + |reference|) allowed: round-off for autograd, the O(h^2) error of
# the central difference otherwise
CHECK_TOL_AUTOGRAD = 1e-6
CHECK_TOL_DIFFERENCE = 1e-4


def available_nonlinearities() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_nonlinearity(name: str) -> Nonlinearity:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown nonlinearity {name!r}; allowed values: {', '.join(_REGISTRY)} "
            "(or a module:function spec, see resolve_nonlinearity)"
        ) from None


def autograd_derivative(phi: Fn) -> Fn:
    """phi' by autograd of phi, elementwise (the input's graph is not kept)."""

    def dphi(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            y = phi(z)
            if not y.requires_grad:
                raise ValueError("the nonlinearity is not differentiable by autograd")
            (g,) = torch.autograd.grad(y.sum(), z)
        return g

    return dphi


def _central_difference(phi: Fn, x: torch.Tensor) -> torch.Tensor:
    h = 1e-5 * torch.clamp(x.abs(), min=1.0)
    with torch.no_grad():
        return (phi(x + h) - phi(x - h)) / (2.0 * h)


def check_derivative(name: str, phi: Fn, dphi: Fn) -> None:
    """Raise ValueError unless ``dphi`` is the derivative of ``phi`` on :data:`CHECK_GRID`
    (module docstring); the message names the worst point."""
    lo, hi, n = CHECK_GRID
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    with torch.no_grad():
        given = dphi(x)
    try:
        ref, how, tol = autograd_derivative(phi)(x), "autograd of phi", CHECK_TOL_AUTOGRAD
    except Exception:  # noqa: BLE001 - no graph (numpy inside, ...): a central difference
        ref, how, tol = _central_difference(phi, x), "a central difference", CHECK_TOL_DIFFERENCE
    err = (given - ref).abs() / (1.0 + ref.abs())
    err = torch.where(torch.isnan(err), torch.inf, err)  # NaN anywhere is a mismatch
    worst = int(torch.argmax(err))
    if float(err[worst]) > tol:
        raise ValueError(
            f"nonlinearity {name!r}: dphi is not the derivative of phi: at x = "
            f"{float(x[worst]):.4g} dphi gives {float(given[worst]):.6g} but {how} gives "
            f"{float(ref[worst]):.6g} (checked on {n} points of [{lo:g}, {hi:g}]); fix dphi "
            "or omit it (autograd)"
        )


def register_nonlinearity(
    name: str,
    phi: Fn,
    dphi: Fn | None = None,
    *,
    dual: DualFn | None = None,
    fused: FusedFn | None = None,
    diagonal: Fn | None = None,
    compiled: CompiledDual | None = None,
    overwrite: bool = False,
) -> Nonlinearity:
    """Register an elementwise nonlinearity under ``name`` (usable in ``Architecture``).

    Args:
        phi: elementwise torch function.
        dphi: its derivative; if omitted, autograd of ``phi``. Checked against autograd of
            ``phi`` (a central difference where autograd fails) on :data:`CHECK_GRID`; a
            mismatch is refused naming the worst point.
        dual, fused, diagonal, compiled: the closed forms, if any (see
            :class:`~rntk_empirical.nonlinearities.base.Nonlinearity`); without ``dual`` the
            duals are Gauss-Hermite quadrature of phi and phi' (also compiled).
        overwrite: replace a name registered before (never a built-in).
    """
    if not isinstance(name, str) or not name:
        raise ValueError("nonlinearity name must be a non-empty string")
    if name in {nl.name for nl in BUILT_IN}:
        raise ValueError(f"{name!r} is built in and cannot be re-registered")
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"nonlinearity {name!r} is already registered; pass overwrite=True to replace it"
        )
    if not callable(phi):
        raise TypeError(f"phi must be callable, got {type(phi).__name__}")
    if dphi is not None and not callable(dphi):
        raise TypeError(f"dphi must be callable, got {type(dphi).__name__}")
    if (fused is not None or diagonal is not None or compiled is not None) and dual is None:
        raise ValueError(f"nonlinearity {name!r}: fused, diagonal and compiled need a dual")
    probe = torch.linspace(-3.0, 3.0, 7, dtype=torch.float64)
    derivative = autograd_derivative(phi) if dphi is None else dphi
    try:
        y = phi(probe)
        dy = derivative(probe)
    except Exception as err:  # noqa: BLE001 - report any failure as a clear error
        raise ValueError(
            f"nonlinearity {name!r} has no usable derivative: {err}. "
            "Pass dphi= explicitly or use a torch-differentiable phi."
        ) from err
    if not isinstance(y, torch.Tensor) or y.shape != probe.shape or dy.shape != probe.shape:
        raise ValueError(f"nonlinearity {name!r} must be elementwise (same shape out as in)")
    if dphi is not None:
        check_derivative(name, phi, dphi)
    nl = Nonlinearity(name, phi, derivative, dual, fused, diagonal, compiled)
    _REGISTRY[name] = nl
    return nl


def resolve_nonlinearity(spec: str) -> str:
    """The registered name for ``spec``: a name as is, or ``module:attr`` (for
    example ``mypkg.acts:softplus``) imported and registered under the spec itself. ``attr``
    is an elementwise torch function (phi' by autograd) or a
    :class:`~rntk_empirical.nonlinearities.base.Nonlinearity` (its derivative is checked like
    every registration). Raises ValueError with a one-line message for a missing module or
    attribute, a non-callable, or a failed check."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"nonlinearity={spec!r}: expected a name or module:function")
    if spec in _REGISTRY or ":" not in spec:
        return spec  # a name: validated where it is used (Architecture names the field)
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"nonlinearity={spec!r}: expected module:function (e.g. mypkg.acts:fn)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"nonlinearity={spec!r}: cannot import {module_name!r} ({err})") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"nonlinearity={spec!r}: module {module_name!r} has no {attr!r}") from None
    if isinstance(obj, Nonlinearity):
        fields = dict(dual=obj.dual, fused=obj.fused, diagonal=obj.diagonal)
        nl = register_nonlinearity(spec, obj.phi, obj.dphi, compiled=obj.compiled, **fields)
        if obj.fast_dual is not None:
            _REGISTRY[spec] = replace(nl, fast_dual=obj.fast_dual)
        return spec
    if not callable(obj):
        raise ValueError(
            f"nonlinearity={spec!r}: {attr!r} is a {type(obj).__name__}, not a function"
        )
    register_nonlinearity(spec, obj)
    return spec
