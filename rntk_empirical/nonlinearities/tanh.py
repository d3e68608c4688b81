r"""tanh: phi(x) = tanh(x), phi'(x) = 1 - tanh(x)^2. No closed-form dual: Gauss-Hermite
quadrature of phi and phi' (:func:`rntk_empirical.dual.quadrature_dual`; compiled through
the tabulated rule of :mod:`rntk_empirical.analytic.numba_backend`). A faster smooth dual
plugs into ``fast_dual`` (see :mod:`rntk_empirical.nonlinearities.base`)."""

from __future__ import annotations

import torch

from rntk_empirical.nonlinearities.base import Nonlinearity


def dphi(x: torch.Tensor) -> torch.Tensor:
    return 1.0 - torch.tanh(x) ** 2


TANH = Nonlinearity("tanh", torch.tanh, dphi)
