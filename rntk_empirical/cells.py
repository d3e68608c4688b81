"""Recurrent cells: the seam for the step h^{l,t} = cell(h^{l,t-1}, h^{l-1,t}).

A :class:`Cell` owns, for one layer of one direction,

* its parameters (:meth:`Cell.parameters`: names, shapes, the multiplier a each one carries;
  :class:`rntk_empirical.ElmanRNN` draws them by the network's naming rule),
* its finite step, run over the whole sequence (:meth:`Cell.layer`), and
* optionally the structured empirical-NTK form (``structured = True``: the layer accepts
  additive probes on its pre-activations and records the input of each weight, which is what
  the ``structured`` and ``jacobian`` eNTK methods contract; without it those methods fall
  back to per-example Jacobians by torch.func, and ``ntk_vp`` is generic anyway), and
* optionally an analytic infinite-width kernel (``analytic``: the name of the recursion the
  analytic backends implement, ``"elman"`` for :mod:`rntk_empirical.analytic`; None: the
  analytic functions raise a one-line ValueError).

The readout, the directions, the initial states and the padding are the network's, not the
cell's. Adding a cell is one :func:`register_cell` call (docs/extending.md, "Add a cell");
``Architecture(cell=name)`` then selects it everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from rntk_empirical.architecture import Architecture


@dataclass(frozen=True)
class Param:
    """One parameter of a layer: ``d{direction}_l{layer}_{name}`` in the network.

    Attributes:
        name: suffix of the parameter name.
        shape: its shape.
        multiplier: the constant a it is multiplied by (``ntk``: outside the N(0, 1)
            parameter; ``standard``: folded into the draw, a = 1 outside).
        orthogonal: drawn Haar-orthogonal (times sqrt(n)) under ``init="orthogonal"`` (square
            recurrent matrices only).
    """

    name: str
    shape: tuple[int, ...]
    multiplier: float
    orthogonal: bool = False


class Cell:
    """Base class of a recurrent cell (module docstring). Subclasses set ``name`` and
    implement :meth:`parameters` and :meth:`layer`."""

    name: str = ""
    structured: bool = False
    analytic: str | None = None

    def parameters(self, arch: Architecture, width: int, in_dim: int) -> list[Param]:
        """The parameters of one layer with inputs of size ``in_dim`` and ``width`` units,
        in drawing order."""
        raise NotImplementedError

    def layer(
        self,
        p: dict[str, torch.Tensor],
        a: dict[str, float],
        x: torch.Tensor,
        h: torch.Tensor,
        keep: torch.Tensor | None,
        phi,
        probe: torch.Tensor | None = None,
        record: list | None = None,
    ) -> torch.Tensor:
        """The states ``(N, T, n)`` of one layer.

        Args:
            p: name -> parameter tensor; a: name -> multiplier (``Param.multiplier`` in the
                ``ntk`` parameterization, 1 in ``standard``).
            x: ``(N, T, d)`` the layer's inputs; h: ``(N, n)`` the initial state.
            keep: ``(N, T, 1)`` bool validity (left padding), or None when nothing is
                padding; at a padded step the state is held.
            phi: the nonlinearity of the architecture.
            probe, record: only for ``structured`` cells (see :class:`ElmanCell`).
        """
        raise NotImplementedError


class ElmanCell(Cell):
    """h^{l,t} = phi(a_w W h^{l,t-1} + a_u U h^{l-1,t} + a_b b), with a_w = s_w / sqrt(n),
    a_u = s_u / sqrt(d_l), a_b = s_b (SPEC section 1).

    Structured form: ``probe`` ``(N, T, n)`` is added to the pre-activations g^{l,t} (the
    gradient of the output w.r.t. it is delta^{l,t}); ``record`` gets ``(h^{l,t-1} (N, T, n),
    h^{l-1,t} (N, T, d))``, the inputs of W and U at every step."""

    name = "elman"
    structured = True
    analytic = "elman"

    def parameters(self, arch: Architecture, width: int, in_dim: int) -> list[Param]:
        n = width
        return [
            Param("W", (n, n), arch.sigma_w / math.sqrt(n), orthogonal=True),
            Param("U", (n, in_dim), arch.sigma_u / math.sqrt(in_dim)),
            Param("b", (n,), arch.sigma_b),
        ]

    def layer(self, p, a, x, h, keep, phi, probe=None, record=None):
        W, U, b = p["W"], p["U"], p["b"]
        N, T = x.shape[:2]
        drive = a["U"] * (x @ U.T) + a["b"] * b  # (N, T, n): input terms, all t
        # unbind (not indexing) so the backward pass is one stack, not T scatters
        probes = probe.unbind(1) if probe is not None else None
        steps = drive.unbind(1)
        states, prev = [], []
        for t in range(T):
            g = torch.add(steps[t], h @ W.T, alpha=a["W"])
            if probes is not None:
                g = g + probes[t]
            prev.append(h)
            h = phi(g) if keep is None else torch.where(keep[:, t], phi(g), h)
            states.append(h)
        if record is not None:
            record.append((torch.stack(prev, 1), x))
        return torch.stack(states, 1)


_REGISTRY: dict[str, Cell] = {}


def register_cell(cell: Cell, *, overwrite: bool = False) -> Cell:
    """Register ``cell`` under ``cell.name``; an existing name needs ``overwrite=True``."""
    if not isinstance(cell, Cell):
        raise TypeError(f"expected a Cell instance, got {type(cell).__name__}")
    if not isinstance(cell.name, str) or not cell.name.isidentifier():
        raise ValueError(f"cell name {cell.name!r} is not valid; expected an identifier")
    if cell.name in _REGISTRY and not overwrite:
        raise ValueError(f"a cell named {cell.name!r} exists; pass overwrite=True")
    _REGISTRY[cell.name] = cell
    return cell


def unregister_cell(name: str) -> None:
    """Remove a registered cell (for tests of a temporary one)."""
    get_cell(name)
    del _REGISTRY[name]


def get_cell(name: str) -> Cell:
    """The registered cell ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown cell {name!r}; available: {', '.join(available_cells())}"
        ) from None


def available_cells() -> tuple[str, ...]:
    """Names of the registered cells, in registration order."""
    return tuple(_REGISTRY)


register_cell(ElmanCell())
