"""One architecture description for the finite RNN, its empirical kernels and the analytic RNTK.

See ``docs/spec.md`` (the project's copy of the contract, with the derivations) for the
function each field selects. The same :class:`Architecture` instance is handed to
:class:`rntk_empirical.ElmanRNN`, :func:`rntk_empirical.empirical_ntk` (through the model)
and :func:`rntk_empirical.analytic_ntk`, so a comparison is always of one network.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from rntk_empirical.cells import GATES, available_cells
from rntk_empirical.readouts import available_readouts

H0_MODES = ("zero", "shared", "per_input")
PARAMETERIZATIONS = ("ntk", "standard")
INITS = ("gaussian", "orthogonal")


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(
            f"Architecture.{field}={value!r} is not valid; allowed values: {', '.join(allowed)}"
        )


def _nonneg(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"Architecture.{field}={value!r} is not valid; expected a finite number >= 0"
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"Architecture.{field}={value!r} is not valid; expected a finite number >= 0"
        )
    return float(value)


@dataclass(frozen=True)
class Architecture:
    """An Elman RNN as in the SPEC (section 1).

    Attributes:
        depth: number of recurrent layers L >= 1.
        nonlinearity: ``relu | erf | tanh | identity``, a name registered with
            :func:`rntk_empirical.register_nonlinearity`, or (command line) ``module:function``,
            imported and registered at start-up.
        sigma_w, sigma_u, sigma_b, sigma_h, sigma_v: the multipliers s_w, s_u, s_b, s_h, s_v.
        readout: ``last`` (h^{L,T}), ``avg`` (mean pooling, one V), ``per_step``
            (an independent V_t per step, scaled by 1/sqrt(T)), ``ema`` (weight
            lam^(T-1-t) on step t, normalized to sum to 1), ``paper_avg`` (per_step with the
            final V weighted sqrt(2)), or a name registered with
            :func:`rntk_empirical.readouts.register_readout` (the per-step weights live there).
        ema_decay: lam of the ``ema`` readout, in [0, 1] (1: avg, 0: last); other readouts
            ignore it.
        bidirectional: f(x) = f_fwd(x) + f_bwd(reverse(x)), two independent RNNs.
        h0: initial hidden state ``zero | shared | per_input``.
        parameterization: ``ntk`` (unit-variance parameters, multipliers outside) or
            ``standard`` (multipliers folded into the parameters).
        init: ``gaussian`` or ``orthogonal`` recurrent weights W.
        cell: the recurrent cell, ``elman`` or a name registered with
            :func:`rntk_empirical.cells.register_cell` (its parameters, finite step,
            structured-eNTK form and analytic kernel live there); ``minimalrnn`` and
            ``gru`` are the gated cells of docs/gated.md.
        gate: the gate function g of the gated cells: ``sigmoid`` (logistic, the default)
            or ``erf`` ((1 + erf(x)) / 2); the Elman cell ignores it.

    ``Architecture()`` is a one-layer ReLU network with last-step readout and zero initial
    state, s_w = sqrt(2), s_u = 1, s_b = 0.1, s_v = 1.
    """

    depth: int = 1
    nonlinearity: str = "relu"
    sigma_w: float = math.sqrt(2.0)
    sigma_u: float = 1.0
    sigma_b: float = 0.1
    sigma_h: float = 0.0
    sigma_v: float = 1.0
    readout: str = "last"
    ema_decay: float = 0.9
    bidirectional: bool = False
    h0: str = "zero"
    parameterization: str = "ntk"
    init: str = "gaussian"
    cell: str = "elman"
    gate: str = "sigmoid"

    def __post_init__(self) -> None:
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(
                f"Architecture.depth={self.depth!r} is not valid; expected an integer >= 1"
            )
        from rntk_empirical.nonlinearities import available_nonlinearities

        _choice("nonlinearity", self.nonlinearity, available_nonlinearities())
        for name in ("sigma_w", "sigma_u", "sigma_b", "sigma_h", "sigma_v"):
            object.__setattr__(self, name, _nonneg(name, getattr(self, name)))
        _choice("readout", self.readout, available_readouts())
        lam = _nonneg("ema_decay", self.ema_decay)
        if lam > 1.0:
            raise ValueError(
                f"Architecture.ema_decay={self.ema_decay!r} is not valid; expected a number "
                "in [0, 1]"
            )
        object.__setattr__(self, "ema_decay", lam)
        if not isinstance(self.bidirectional, bool):
            raise ValueError(
                f"Architecture.bidirectional={self.bidirectional!r} is not valid; "
                "allowed values: True, False"
            )
        _choice("h0", self.h0, H0_MODES)
        _choice("parameterization", self.parameterization, PARAMETERIZATIONS)
        _choice("init", self.init, INITS)
        _choice("cell", self.cell, available_cells())
        _choice("gate", self.gate, tuple(GATES))

    def replace(self, **changes: Any) -> Architecture:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """:meth:`to_dict` without the fields that do not change this network: ``ema_decay``
        unless the readout is ``ema``, ``gate`` for the Elman cell, and ``cell`` when it is
        ``elman``. Run identities hash this, so a field that a configuration does not use
        never separates two runs of it (and runs recorded before those fields existed keep
        their identity)."""
        out = asdict(self)
        if self.readout != "ema":
            del out["ema_decay"]
        if self.cell == "elman":
            del out["gate"], out["cell"]
        return out

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1
