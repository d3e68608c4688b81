"""Nonlinearities as objects: phi, phi', the dual pair, the fused in-place dual, the diagonal
variance map and the compiled kernel of each in one :class:`Nonlinearity`, one module per
built-in (``relu``, ``erf``, ``gelu``, ``identity``, ``tanh``) and one registry
(:mod:`~rntk_empirical.nonlinearities.registry`). docs/extending.md shows how to add one."""

from rntk_empirical.nonlinearities.base import CompiledDual, Nonlinearity
from rntk_empirical.nonlinearities.registry import (
    available_nonlinearities,
    get_nonlinearity,
    register_nonlinearity,
    resolve_nonlinearity,
)

__all__ = [
    "CompiledDual",
    "Nonlinearity",
    "available_nonlinearities",
    "get_nonlinearity",
    "register_nonlinearity",
    "resolve_nonlinearity",
]
