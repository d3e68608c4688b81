# ruff: noqa: UP045 - OmegaConf reads typing.Optional (not X | None) on Python 3.10
"""The structured config of the tying study (``conf/gated_tying.yaml``), registered as
``gated_tying_schema``: :class:`GatedTyingConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from experiments.common.registry import Experiment, register_experiment
from experiments.common.schema import (
    ArchConfig,
    DeviceChoice,
    DTypeChoice,
    apply_quick,
    at_least,
    fields_identity,
    opt,
)
from experiments.convergence.schema import MethodChoice

# Fields that change how a run executes, not what it measures.
EXECUTION_FIELDS = ("force", "progress", "num_threads", "chunk_size", "quick")
# ``quick=true``: the reduced setup of the tests and smoke runs (replaces these fields where
# they are left at their defaults).
QUICK: dict[str, Any] = {
    "n": 3, "m": 2, "lengths": [2, 4], "width": 64, "seeds": 3, "particles": 2**11,
}  # fmt: skip


@dataclass
class GatedTyingConfig:
    """One run of the tying study: for each T in ``lengths``, the first T steps of the same
    ``n`` Gaussian sequences in R^``m`` (seed ``data_seed``); the analytic NTK/NNGP of the
    tied and of the untied network, and ``seeds`` finite networks of each kind (network s:
    seed ``base_seed + s``) at one ``width`` against both."""

    name: str = opt("${arch.name}", "run folder name (default ARCH)")
    arch: ArchConfig = opt(
        factory=ArchConfig, help="the architecture (group arch=...; the YAML's: gru_erf)"
    )
    n: int = opt(6, "number of sequences N")
    m: int = opt(4, "input features per step")
    lengths: list[int] = opt(
        factory=lambda: [5, 10, 20], help="sequence lengths T (prefixes of the same sequences)"
    )
    data_seed: int = opt(0, "seed of the data draw")
    particles: int = opt(2**14, "particles per simulation of the untied (and gated) limit")
    batches: int = opt(4, "independent simulations averaged (their spread: the error)")
    width: int = opt(512, "hidden width n of the finite networks")
    seeds: int = opt(8, "finite networks of each kind (tied, untied) per length")
    base_seed: int = opt(0, "network s uses seed base_seed + s")
    method: MethodChoice = opt(
        MethodChoice.jacobian, "empirical NTK method: jacobian | ntk_vp (structured: jacobian)"
    )
    chunk_size: Optional[int] = opt(
        None, "sequences (jacobian) or columns (ntk_vp) per pass (null: from memory)"
    )  # noqa: UP045
    dtype: DTypeChoice = opt(DTypeChoice.float64, "float64 | float32 of the finite networks")
    device: DeviceChoice = opt(DeviceChoice.cpu, "cpu | cuda | auto (finite networks)")
    quick: bool = opt(False, "reduced setup (tests, smoke runs)")
    force: bool = opt(False, "recompute a finished run (per-seed files too)")
    progress: bool = opt(True, "show a progress bar")
    num_threads: Optional[int] = opt(None, "torch threads (null: torch's default)")  # noqa: UP045

    def __post_init__(self) -> None:
        if self.quick:
            apply_quick(self, QUICK)
        self.validate()

    def validate(self) -> None:
        for k in ("n", "m", "width", "seeds", "particles", "batches"):
            at_least(k, getattr(self, k), 1)
        at_least("base_seed", self.base_seed, 0)
        if self.chunk_size is not None:
            at_least("chunk_size", self.chunk_size, 1)
        if self.num_threads is not None:
            at_least("num_threads", self.num_threads, 1)
        if not self.lengths or any(
            isinstance(T, bool) or not isinstance(T, int) or T < 1 for T in self.lengths
        ):
            raise ValueError(f"lengths={list(self.lengths)!r}: expected a list of integers >= 1")
        if len(set(self.lengths)) != len(self.lengths):
            raise ValueError(f"lengths={list(self.lengths)!r} repeats a length")
        arch = self.arch.to_architecture()
        if arch.parameterization != "ntk":
            raise ValueError(
                "arch.parameterization=standard has no infinite-width NTK; use "
                "arch.parameterization=ntk"
            )
        if arch.readout not in ("last", "avg"):
            raise ValueError(
                f"arch.readout={arch.readout} is not studied here; use last or avg (a shared "
                "readout: only the recurrent weights are tied or not)"
            )
        if not self.name or "/" in self.name:
            raise ValueError(f"name={self.name!r} is not valid; expected a non-empty folder name")

    def identity(self) -> dict[str, Any]:
        """What the run measures (JSON-able; its hash names the results)."""
        return fields_identity(self, EXECUTION_FIELDS)


def _run_one(settings: GatedTyingConfig, run_dir: Path, outputs_root: Path) -> dict:
    from experiments.gated_tying.run import run_tying

    return run_tying(settings, run_dir)


def _folder(settings: GatedTyingConfig) -> str:
    quick = "/quick=true" if settings.quick else ""
    return f"gated_tying/{settings.name}/width={settings.width}{quick}"


register_experiment(
    Experiment(
        name="gated_tying",
        title="Tied vs untied weights: the NTK/NNGP of gated RNNs, analytic and finite",
        schema=GatedTyingConfig,
        groups=("arch",),
        run=_run_one,
        folder=_folder,
    )
)
