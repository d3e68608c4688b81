"""Elementwise nonlinearities phi and their derivatives phi', shared by the finite network
(:mod:`rntk_empirical.network`) and the dual activations (:mod:`rntk_empirical.dual`).

Built in: ``relu``, ``erf``, ``tanh``, ``identity``. Any other elementwise function with a
derivative can be registered with :func:`register_nonlinearity`; its dual activations are
then computed by Gauss-Hermite quadrature.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Nonlinearity:
    """phi and phi' as torch functions, elementwise on tensors of any shape."""

    name: str
    phi: Fn
    dphi: Fn
    closed_form: bool  # True when dual.py has exact V_phi / V_dphi formulas


def _relu_d(x: torch.Tensor) -> torch.Tensor:
    return (x > 0).to(x.dtype)


def _erf_d(x: torch.Tensor) -> torch.Tensor:
    return (2.0 / math.sqrt(math.pi)) * torch.exp(-x * x)


def _tanh_d(x: torch.Tensor) -> torch.Tensor:
    return 1.0 - torch.tanh(x) ** 2


_REGISTRY: dict[str, Nonlinearity] = {
    "relu": Nonlinearity("relu", torch.relu, _relu_d, True),
    "erf": Nonlinearity("erf", torch.erf, _erf_d, True),
    "tanh": Nonlinearity("tanh", torch.tanh, _tanh_d, False),
    "identity": Nonlinearity("identity", lambda x: x, torch.ones_like, True),
}


def available_nonlinearities() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_nonlinearity(name: str) -> Nonlinearity:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown nonlinearity {name!r}; allowed values: {', '.join(_REGISTRY)}"
        ) from None


def _autograd_derivative(phi: Fn) -> Fn:
    def dphi(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            y = phi(z)
            if not y.requires_grad:
                raise ValueError("the nonlinearity is not differentiable by autograd")
            (g,) = torch.autograd.grad(y.sum(), z)
        return g

    return dphi


def register_nonlinearity(name: str, phi: Fn, dphi: Fn | None = None) -> Nonlinearity:
    """Register an elementwise nonlinearity under ``name`` (usable in ``Architecture``).

    Args:
        phi: elementwise torch function.
        dphi: its derivative; if omitted, autograd is used. A function autograd cannot
            differentiate (and no ``dphi`` given) is rejected here, not at kernel time.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("nonlinearity name must be a non-empty string")
    if name in ("relu", "erf", "tanh", "identity"):
        raise ValueError(f"{name!r} is built in and cannot be re-registered")
    if not callable(phi):
        raise TypeError(f"phi must be callable, got {type(phi).__name__}")
    probe = torch.linspace(-3.0, 3.0, 7, dtype=torch.float64)
    if dphi is None:
        dphi = _autograd_derivative(phi)
    try:
        y = phi(probe)
        dy = dphi(probe)
    except Exception as err:  # noqa: BLE001 - report any failure as a clear error
        raise ValueError(
            f"nonlinearity {name!r} has no usable derivative: {err}. "
            "Pass dphi= explicitly or use a torch-differentiable phi."
        ) from err
    if not isinstance(y, torch.Tensor) or y.shape != probe.shape or dy.shape != probe.shape:
        raise ValueError(f"nonlinearity {name!r} must be elementwise (same shape out as in)")
    nl = Nonlinearity(name, phi, dphi, False)
    _REGISTRY[name] = nl
    return nl
