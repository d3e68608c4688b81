"""Recurrent cells: the seam for the step h^{l,t} = cell(h^{l,t-1}, h^{l-1,t}).

A :class:`Cell` owns, for one layer of one direction,

* its parameters (:meth:`Cell.parameters`: names, shapes, the multiplier a each one carries;
  :class:`rntk_empirical.ElmanRNN` draws them by the network's naming rule),
* its finite step, run over the whole sequence (:meth:`Cell.layer`), and
* optionally the structured empirical-NTK form (``structured = True``: the layer accepts
  additive probes on its pre-activations and records the input of each weight, which is what
  the ``structured`` and ``jacobian`` eNTK methods contract; without it those methods fall
  back to per-example Jacobians by torch.func, and ``ntk_vp`` is generic anyway), and
* optionally an analytic infinite-width kernel (``analytic``: the name of the method the
  analytic functions use, ``"elman"`` for the recursion of :mod:`rntk_empirical.analytic`,
  ``"particles"`` for the Tensor-Programs particle simulation of
  :mod:`rntk_empirical.gated_limit` (the gated cells); None: the analytic functions raise a
  one-line ValueError).

The readout, the directions, the initial states and the padding are the network's, not the
cell's. Adding a cell is one :func:`register_cell` call (docs/extending.md, "Add a cell");
``Architecture(cell=name)`` then selects it everywhere.

Registered here: ``elman`` (SPEC section 1), and the gated ``minimalrnn`` (Chen, Pennington
and Schoenholz 2018) and ``gru`` (Cho et al. 2014) with the gate function ``Architecture.gate``
(:data:`GATES`); see :class:`MinimalRNNCell` and :class:`GRUCell` and docs/gated.md.
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
        arch: Architecture | None = None,
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
            arch: the architecture (the network always passes it), for the options a cell
                reads beyond its parameters, e.g. the gate function of a gated cell.
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

    def layer(self, p, a, x, h, keep, phi, probe=None, record=None, arch=None):
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


def erf_gate(x: torch.Tensor) -> torch.Tensor:
    """The erf gate (1 + erf(x)) / 2: a sigmoid in (0, 1) whose Gaussian expectations of
    products are orthant probabilities (docs/gated.md)."""
    return 0.5 * (1.0 + torch.erf(x))


def _sigmoid_derivative(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1.0 - s)


def _erf_gate_derivative(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-x * x) / math.sqrt(math.pi)


# Architecture.gate -> the gate function g of the gated cells, and its derivative g'.
GATES = {"sigmoid": torch.sigmoid, "erf": erf_gate}
GATE_DERIVATIVES = {"sigmoid": _sigmoid_derivative, "erf": _erf_gate_derivative}


def _gate_of(arch: Architecture | None):
    if arch is None:
        raise ValueError("a gated cell's layer needs arch= (the network passes it)")
    return GATES[arch.gate]


def _gated_params(arch: Architecture, width: int, in_dim: int, names: str) -> list[Param]:
    """For each gate/candidate ``c`` in ``names``: W_c (n, n), U_c (n, d), b_c (n,) with the
    Elman multipliers s_w / sqrt(n), s_u / sqrt(d), s_b (shared by every pre-activation)."""
    n = width
    out = []
    for c in names:
        out += [
            Param(f"W_{c}", (n, n), arch.sigma_w / math.sqrt(n), orthogonal=True),
            Param(f"U_{c}", (n, in_dim), arch.sigma_u / math.sqrt(in_dim)),
            Param(f"b_{c}", (n,), arch.sigma_b),
        ]
    return out


def _input_terms(p, a, x: torch.Tensor, c: str) -> torch.Tensor:
    """``(N, T, n)``: a_u U_c x_t + a_b b_c at every step."""
    return a[f"U_{c}"] * (x @ p[f"U_{c}"].T) + a[f"b_{c}"] * p[f"b_{c}"]


class MinimalRNNCell(Cell):
    """minimalRNN (Chen, Pennington and Schoenholz 2018), with g = ``GATES[arch.gate]``:

        u^{l,t} = g(a_w W_u h^{l,t-1} + a_u U_u h^{l-1,t} + a_b b_u)
        h^{l,t} = u^{l,t} * h^{l,t-1} + (1 - u^{l,t}) * phi(a_u A h^{l-1,t} + a_b b_a)

    (a_w, a_u, a_b) = (s_w / sqrt(n), s_u / sqrt(d_l), s_b) as for Elman: the gate and the
    candidate use the architecture's s_w, s_u, s_b. The candidate depends on the layer's input
    only (no recurrent matrix). Parameters W_u (recurrent; orthogonal under
    ``init="orthogonal"``), U_u, b_u, U_a (= A), b_a."""

    name = "minimalrnn"
    analytic = "particles"

    def parameters(self, arch: Architecture, width: int, in_dim: int) -> list[Param]:
        return _gated_params(arch, width, in_dim, "u") + [
            Param("U_a", (width, in_dim), arch.sigma_u / math.sqrt(in_dim)),
            Param("b_a", (width,), arch.sigma_b),
        ]

    def layer(self, p, a, x, h, keep, phi, probe=None, record=None, arch=None):
        g = _gate_of(arch)
        W = a["W_u"] * p["W_u"]
        gate_in = _input_terms(p, a, x, "u").unbind(1)
        cand = phi(_input_terms(p, a, x, "a")).unbind(1)
        states = []
        for t in range(x.shape[1]):
            u = g(gate_in[t] + h @ W.T)
            new = u * h + (1.0 - u) * cand[t]
            h = new if keep is None else torch.where(keep[:, t], new, h)
            states.append(h)
        return torch.stack(states, 1)


class GRUCell(Cell):
    """GRU (Cho et al. 2014), with g = ``GATES[arch.gate]``:

        z^{l,t} = g(a_w W_z h^{l,t-1} + a_u U_z h^{l-1,t} + a_b b_z)      (update gate)
        r^{l,t} = g(a_w W_r h^{l,t-1} + a_u U_r h^{l-1,t} + a_b b_r)      (reset gate)
        c^{l,t} = phi(a_w W_h (r^{l,t} * h^{l,t-1}) + a_u U_h h^{l-1,t} + a_b b_h)
        h^{l,t} = (1 - z^{l,t}) * h^{l,t-1} + z^{l,t} * c^{l,t}

    with the Elman multipliers (a_w, a_u, a_b) = (s_w / sqrt(n), s_u / sqrt(d_l), s_b) for all
    three pre-activations. Parameters W_c, U_c, b_c for c in z, r, h; the three W_c are
    orthogonal under ``init="orthogonal"``."""

    name = "gru"
    analytic = "particles"

    def parameters(self, arch: Architecture, width: int, in_dim: int) -> list[Param]:
        return _gated_params(arch, width, in_dim, "zrh")

    def layer(self, p, a, x, h, keep, phi, probe=None, record=None, arch=None):
        g = _gate_of(arch)
        n = h.shape[-1]
        W_zr = torch.cat([a["W_z"] * p["W_z"], a["W_r"] * p["W_r"]])  # (2n, n): one matmul
        W_h = a["W_h"] * p["W_h"]
        zr_in = torch.cat([_input_terms(p, a, x, "z"), _input_terms(p, a, x, "r")], -1).unbind(1)
        c_in = _input_terms(p, a, x, "h").unbind(1)
        states = []
        for t in range(x.shape[1]):
            zr = g(zr_in[t] + h @ W_zr.T)
            z, r = zr[:, :n], zr[:, n:]
            c = phi(c_in[t] + (r * h) @ W_h.T)
            new = h + z * (c - h)
            h = new if keep is None else torch.where(keep[:, t], new, h)
            states.append(h)
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
register_cell(MinimalRNNCell())
register_cell(GRUCell())
