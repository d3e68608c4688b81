"""Elementwise nonlinearities phi and their derivatives phi', shared by the finite network
(:mod:`rntk_empirical.network`) and the dual activations (:mod:`rntk_empirical.dual`).

Each nonlinearity is one object of :mod:`rntk_empirical.nonlinearities` (phi, phi', duals,
fused and compiled forms); this module is the name-based access the rest of the library
uses. Built in: ``relu``, ``erf``, ``tanh``, ``identity``; any other elementwise function is
added with :func:`register_nonlinearity` (derivative checked) or as a ``module:function``
spec through :func:`resolve_nonlinearity`.
"""

from rntk_empirical.nonlinearities.base import Fn, Nonlinearity
from rntk_empirical.nonlinearities.registry import (
    available_nonlinearities,
    get_nonlinearity,
    register_nonlinearity,
    resolve_nonlinearity,
)

__all__ = [
    "Fn",
    "Nonlinearity",
    "available_nonlinearities",
    "get_nonlinearity",
    "register_nonlinearity",
    "resolve_nonlinearity",
]
