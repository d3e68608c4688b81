r"""What a nonlinearity is: one object owning every form the library evaluates it in.

A :class:`Nonlinearity` holds

* ``phi``, ``dphi``: phi and phi' as elementwise torch functions (the finite network, the
  quadrature rule);
* ``dual``: the closed-form dual pair ``(a, b, c, same=None) -> (V_phi, V_dphi)`` for the
  covariance [[a, c], [c, b]] (:mod:`rntk_empirical.dual` explains ``same``), or None: then
  the duals are Gauss-Hermite quadrature of phi and phi' (:func:`rntk_empirical.dual.get_dual`);
* ``fused``: the no-grad in-place form ``(a, b, S, Q, K_out, G_out, scratch, same=None)``
  writing K_out = V_phi(a, b, S), G_out = V_dphi(a, b, S) * Q (S, scratch clobbered), or None
  (then the out-of-place dual is evaluated and copied);
* ``diagonal``: the diagonal variance map a -> V_phi(a, a, a) (what the recursion needs on
  identical states: the next variance of a sequence with itself), torch, or None;
* ``compiled``: a :class:`CompiledDual` for the numba kernel bank, or None. A nonlinearity
  with no closed form is compiled through the generic tabulated quadrature whatever this
  holds; one with a closed form and no ``compiled`` has no compiled path (the torch paths
  evaluate its closed form; nothing falls back to quadrature silently);
* ``fast_dual``: a slot for a faster dual evaluator of a smooth nonlinearity (same call as
  ``dual``, with its own documented error contract): when set, :func:`rntk_empirical.dual.
  get_dual` (and so every torch path) uses it instead of the default quadrature; the
  compiled bank keeps its tabulated quadrature. Nothing built in sets it yet.

Built-ins live one per module in this package (``relu``, ``erf``, ``gelu``, ``identity``, ``tanh``);
:mod:`rntk_empirical.nonlinearities.registry` keeps the one registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

Fn = Callable[[torch.Tensor], torch.Tensor]
# (a, b, c[, same]) -> (V_phi, V_dphi); ``same``: optional bool mask of identical states
DualFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
# (a, b, S, Q, K_out, G_out, scratch, same=None) -> None, in place (see the module docstring)
FusedFn = Callable[..., None]


@dataclass(frozen=True)
class CompiledDual:
    r"""The compiled (numba) form of a closed-form dual, read by
    :mod:`rntk_empirical.analytic.numba_backend`.

    The bank splits each dual into per-sequence factors (computed once per sequence and
    step) and a per-pair cell (run for every pair and cell, in registers):

    * ``factors(var) -> (r, f, g)``: numpy, elementwise on the variances ``var`` (any shape);
    * ``cell(S, Q, ri, rj, fi, fj, gi, gj, lo, tab) -> (V_phi, V_dphi * Q)``: an
      ``@njit(inline="always")`` scalar function of one pair with covariance S, tangent
      kernel Q and the factors of its row (i) and column (j); ``lo`` is the lower clamp of
      the correlation (1.0 on identical states, else -1.0), ``tab`` an unused table;
    * ``diagonal(S) -> V_phi(S, S, S)``: an ``@njit`` scalar function (the per-sequence
      variance recursion), or None to compute the variances by the torch dual.

    Example (relu): r = 1/sqrt(a), f = sqrt(a / 2 pi), g = [a > 0] / sqrt(2 pi), and the cell
    rho = S r_i r_j, V_phi = J_1(rho) f_i f_j, V_dphi Q = J_0(rho) Q g_i g_j.
    """

    cell: Callable
    factors: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
    diagonal: Callable | None = None


@dataclass(frozen=True)
class Nonlinearity:
    """One nonlinearity in every form (module docstring). ``closed_form`` is True when
    ``dual`` holds exact formulas."""

    name: str
    phi: Fn
    dphi: Fn
    dual: DualFn | None = None
    fused: FusedFn | None = None
    diagonal: Fn | None = None
    compiled: CompiledDual | None = None
    fast_dual: DualFn | None = field(default=None, compare=False)

    @property
    def closed_form(self) -> bool:
        return self.dual is not None
