"""Readouts as one declarative definition: the weight a readout puts on each step's state.

A readout is a :class:`Readout`: for a sequence of length T the state h^{L,t} of step
t = 0..T-1 gets the weight

    w(t) = profile(d) / divisor(T),      d = T - 1 - t  (steps from the end; 0 = final step)

and either one V reads the weighted sum (``independent=False``), or an independent V_d reads
each end-aligned state (``independent=True``, one V per distance from the end):

    shared:       f = a_v V sum_t w(t) h^{L,t}
    independent:  f = a_v sum_t w(t) V_{T-1-t} h^{L,t}

so the infinite-width kernels (theta = s_v^2 (K + G), nngp = s_v^2 K per cell) are

    shared:       sum over every cell (t, t') of w(t) w'(t') kernel(t, t')
    independent:  sum over the end-aligned cells (T - t = T' - t') of w(t) w'(t') kernel(t, t')

The finite network (:class:`rntk_empirical.ElmanRNN`), the empirical kernels and every
analytic backend read these definitions; nothing else names a readout. Derived properties
select the cheapest exact computation: a readout whose profile vanishes for d >= 1 needs only
the final cell (:meth:`Readout.kind` ``"final"``), an independent one only the end-aligned
chain (``"diag"``), a shared one every shift (``"full"``, O(T^2) cells per pair).

Adding a readout is one :func:`register_readout` call (docs/extending.md, "Add a readout").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from rntk_empirical.architecture import Architecture


@dataclass(frozen=True)
class Readout:
    """One readout (module docstring for the function it defines).

    Attributes:
        name: the value of ``Architecture.readout`` that selects it.
        profile: ``(d (T,) int64 tensor, arch) -> (T,) float64``: the weight of the state d
            steps before the end, before normalization; may read fields of ``arch``.
        divisor: ``(lengths (N,) float64 tensor, arch) -> (N,)``: the per-sequence divisor;
            None for 1 (no division at all).
        independent: True for one V per distance from the end (the network then needs
            ``max_len``); False for one V reading the weighted sum.
        description: one line for help texts.
    """

    name: str
    profile: Callable[[torch.Tensor, Architecture], torch.Tensor]
    divisor: Callable[[torch.Tensor, Architecture], torch.Tensor] | None
    independent: bool = False
    description: str = ""

    def profile_values(self, T: int, arch: Architecture) -> torch.Tensor:
        """``(T,)`` float64 on the CPU: profile(d) for d = 0..T-1."""
        d = torch.arange(T, dtype=torch.int64)
        return torch.as_tensor(self.profile(d, arch), dtype=torch.float64).expand(T).clone()

    def divisors(self, lengths: torch.Tensor, arch: Architecture) -> torch.Tensor:
        """``(N,)`` divisors of sequences of these lengths, in the lengths' dtype and device."""
        if self.divisor is None:
            return torch.ones_like(lengths)
        out = torch.as_tensor(self.divisor(lengths, arch), dtype=lengths.dtype)
        return out.to(lengths.device).expand(lengths.shape)

    def weights(
        self, lengths: torch.Tensor, T: int, arch: Architecture, dtype=torch.float64
    ) -> torch.Tensor:
        """``(N, T)``: w at the left-padded positions p = 0..T-1 of sequences of these
        lengths (end-aligned: d = T - 1 - p), 0 on padding."""
        lens = lengths.to(dtype)
        prof = self.profile_values(T, arch).flip(0).to(device=lengths.device, dtype=dtype)
        valid = torch.arange(T, device=lengths.device)[None, :] >= (T - lengths)[:, None]
        return valid.to(dtype) * prof[None, :] / self.divisors(lens, arch)[:, None]

    def kind(self, T: int, arch: Architecture) -> str:
        """``final`` (only the last step has weight: the kernel is the final cell times
        w(T-1) w'(T'-1)), ``diag`` (independent: end-aligned cells) or ``full`` (shared: every
        cell)."""
        prof = self.profile_values(T, arch)
        if not bool((prof[1:] == 0).all()):
            return "diag" if self.independent else "full"
        return "final"

    def uniform(self, T: int, arch: Architecture) -> bool:
        """Whether profile(d) = 1 for every d < T (the weights are only the divisors)."""
        return bool((self.profile_values(T, arch) == 1.0).all())

    def shifts(self, T: int, arch: Architecture) -> range | tuple[int]:
        """The chains (x at p, x' at p - k) with weighted cells: every k for ``full``."""
        return range(-(T - 1), T) if self.kind(T, arch) == "full" else (0,)


_REGISTRY: dict[str, Readout] = {}


def register_readout(readout: Readout, *, overwrite: bool = False) -> Readout:
    """Register ``readout`` under ``readout.name``; an existing name needs ``overwrite=True``."""
    if not isinstance(readout, Readout):
        raise TypeError(f"expected a Readout, got {type(readout).__name__}")
    if not isinstance(readout.name, str) or not readout.name.isidentifier():
        raise ValueError(f"readout name {readout.name!r} is not valid; expected an identifier")
    if readout.name in _REGISTRY and not overwrite:
        raise ValueError(f"a readout named {readout.name!r} exists; pass overwrite=True")
    _REGISTRY[readout.name] = readout
    return readout


def unregister_readout(name: str) -> None:
    """Remove a registered readout (for tests of a temporary one)."""
    get_readout(name)
    del _REGISTRY[name]


def get_readout(name: str) -> Readout:
    """The registered readout ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown readout {name!r}; available: {', '.join(available_readouts())}"
        ) from None


def available_readouts() -> tuple[str, ...]:
    """Names of the registered readouts, in registration order."""
    return tuple(_REGISTRY)


def _ones(d: torch.Tensor, arch) -> torch.Tensor:
    return torch.ones(d.shape, dtype=torch.float64)


def _ema_divisor(lengths: torch.Tensor, arch) -> torch.Tensor:
    lam = arch.ema_decay
    if lam == 1.0:
        return lengths
    return (1.0 - lam**lengths) / (1.0 - lam)  # sum_{d < T} lam^d: the weights sum to 1


register_readout(
    Readout(
        "last",
        lambda d, arch: (d == 0).to(torch.float64),
        None,
        description="the final state h^{L,T}",
    )
)
register_readout(
    Readout(
        "avg",
        _ones,
        lambda lengths, arch: lengths,
        description="mean pooling (1/T) sum_t h^{L,t}, one V",
    )
)
register_readout(
    Readout(
        "per_step",
        _ones,
        lambda lengths, arch: lengths.sqrt(),
        independent=True,
        description="an independent V_t per step, scaled by 1/sqrt(T)",
    )
)
register_readout(
    Readout(
        "ema",
        lambda d, arch: arch.ema_decay ** d.to(torch.float64),
        _ema_divisor,
        description=(
            "exponentially weighted pooling: weight lam^(T-1-t) on step t, normalized to sum "
            "to 1 (lam = Architecture.ema_decay; lam = 1 is avg, lam = 0 is last)"
        ),
    )
)
register_readout(
    Readout(
        "paper_avg",
        lambda d, arch: torch.where(d == 0, 2.0**0.5, 1.0).to(torch.float64),
        lambda lengths, arch: lengths.sqrt(),
        independent=True,
        description=(
            "the kernel the RNTK authors' code returns as 'avg': per_step + last / T for equal "
            "lengths (independent V_t, the final one weighted sqrt(2))"
        ),
    )
)
