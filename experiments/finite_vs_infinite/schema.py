# ruff: noqa: UP045 - OmegaConf reads typing.Optional (not X | None) on Python 3.10
"""The structured config of the finite-versus-infinite study (``conf/finite_vs_infinite.yaml``),
registered (:func:`experiments.common.registry.register_experiment`) as
``finite_vs_infinite_schema``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from experiments.common.registry import Experiment, register_experiment
from experiments.common.schema import (
    ArchConfig,
    DeviceChoice,
    DTypeChoice,
    apply_quick,
    fields_identity,
    opt,
)

ARMS = ("ntk", "centered", "standard", "adam")
# Fields that change how a run executes, not what it measures.
EXECUTION_FIELDS = ("force", "progress", "num_threads", "checkpoint_every", "quick")
# ``quick=true``: the reduced setup of the tests and smoke runs (replaces these fields where
# they are left at their defaults: ``quick=true 'widths=[8,16]'`` keeps those widths).
QUICK: dict[str, Any] = {
    "tasks": ["ItalyPowerDemand"],
    "n_train": 24,
    "n_test": 40,
    "widths": [16, 64, 256],
    "seeds": 3,
    "steps": 40,
    "record_every": 5,
    "sp_lr_scales": [1.0, 64.0],
    "n_boot": 200,
}


def _erf_arch() -> ArchConfig:
    return ArchConfig(name="erf_last", nonlinearity="erf", sigma_w=1.0)


@dataclass
class FiniteVsInfiniteConfig:
    """One run: every task in ``tasks``, every width in ``widths``, every arm in ``arms``.

    Arms (networks ``base_seed + s``, ``s < seeds``; all full batch, early-stopped on
    validation accuracy over ``steps`` steps):
        ``ntk``: GD in the NTK parameterization, eta = lr_scale * N / lambda_max, lambda_max
            the largest over seeds of the networks' empirical NTK eigenvalue at init;
        ``centered``: the same networks trained as f - f_0;
        ``standard``: standard parameterization, eta = c * N / lambda_max(SP network) for c in
            ``sp_lr_scales`` (2 is the edge of stability), ``sp_seeds`` seeds, c chosen on
            validation;
        ``adam``: standard parameterization, Adam with ``adam_lr``.
    The ensembles (seed means of ``ntk`` and ``centered``) need no training.
    """

    name: str = opt("${arch.name}", "run folder name (default ARCH)")
    arch: ArchConfig = opt(factory=_erf_arch, help="the architecture (group arch=...)")
    tasks: list[str] = opt(
        factory=lambda: ["ItalyPowerDemand", "JapaneseVowels"],
        help="aeon UCR/UEA data sets (bundled ones load offline)",
    )
    val_fraction: float = opt(0.25, "share of the UCR train split held out for validation")
    max_len: Optional[int] = opt(None, "resample longer series to this length (null: keep)")  # noqa: UP045 - longer series are resampled to this
    n_train: Optional[int] = opt(None, "stratified subset of the train split (null: all)")  # noqa: UP045 - stratified subset of the UCR train split
    n_test: Optional[int] = opt(None, "subset of the test split (null: all)")  # noqa: UP045
    data_seed: int = opt(0, "seed of the splits and subsets")
    widths: list[int] = opt(
        factory=lambda: [32, 64, 128, 256], help="widths of the finite networks"
    )
    seeds: int = opt(3, "networks per width (NTK-parameterized arms)")
    base_seed: int = opt(0, "network s uses seed base_seed + s")
    steps: int = opt(200, "full-batch training steps")
    record_every: int = opt(10, "steps between validation checks (early stopping)")
    checkpoint_every: int = opt(50, "steps between checkpoints")
    arms: list[str] = opt(factory=lambda: list(ARMS), help="ntk, centered, standard, adam")
    lr_scale: float = opt(1.0, "NTK arms: lr = lr_scale * N / lambda_max")
    sp_lr_scales: list[float] = opt(
        factory=lambda: [0.5, 2.0, 8.0],
        help="standard param.: c in lr = c * N / lambda_max (2: edge of stability)",
    )
    sp_seeds: int = opt(1, "networks per width in the standard parameterization")
    adam_lr: float = opt(0.01, "Adam's learning rate")
    ridges: list[float] = opt(
        factory=lambda: [0.0, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0],
        help="diagonal regularizers of the kernel predictors (chosen on validation)",
    )
    n_boot: int = opt(1000, "bootstrap replicates of the distance exponents")
    dtype: DTypeChoice = opt(
        DTypeChoice.float32, "float32 | float64 of the networks (kernels: both)"
    )
    device: DeviceChoice = opt(DeviceChoice.auto, "auto | cpu | cuda")
    quick: bool = opt(False, "reduced setup (tests, smoke runs)")
    force: bool = opt(False, "recompute finished runs")
    progress: bool = opt(True, "show progress bars")
    num_threads: Optional[int] = opt(None, "torch threads (null: torch's default)")  # noqa: UP045

    def __post_init__(self) -> None:
        if self.quick:
            apply_quick(self, QUICK)
        self.validate()

    def validate(self) -> None:
        for k in ("seeds", "steps", "record_every", "checkpoint_every", "sp_seeds"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k}={v!r} is not valid; expected an integer >= 1")
        if not self.widths or any(int(w) < 1 for w in self.widths):
            raise ValueError(f"widths={list(self.widths)!r}: expected a list of integers >= 1")
        if not self.tasks:
            raise ValueError("tasks is empty; name aeon data sets, e.g. [ItalyPowerDemand]")
        bad = sorted(set(self.arms) - set(ARMS))
        if bad or not self.arms:
            raise ValueError(f"arms={list(self.arms)!r}: allowed values {', '.join(ARMS)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction={self.val_fraction!r} must lie in (0, 1)")
        for k in ("lr_scale", "adam_lr"):
            if not getattr(self, k) > 0:
                raise ValueError(f"{k}={getattr(self, k)!r} must be > 0")
        if not self.sp_lr_scales or min(self.sp_lr_scales) <= 0:
            raise ValueError(f"sp_lr_scales={list(self.sp_lr_scales)!r}: expected values > 0")
        if not self.ridges or min(self.ridges) < 0:
            raise ValueError(f"ridges={list(self.ridges)!r}: expected values >= 0")
        if self.max_len is not None and self.max_len < 2:
            raise ValueError(f"max_len={self.max_len!r} must be >= 2 or null")
        if self.arch.to_architecture().parameterization != "ntk":
            raise ValueError(
                "arch.parameterization must be ntk (the kernels need it; the standard "
                "parameterization is its own arm: arms=[...,standard])"
            )
        if not self.name or "/" in self.name:
            raise ValueError(f"name={self.name!r} is not valid; expected a non-empty folder name")

    def identity(self) -> dict[str, Any]:
        """What the run measures (JSON-able; its hash names the results)."""
        return fields_identity(self, EXECUTION_FIELDS)


register_experiment(
    Experiment(
        name="finite_vs_infinite",
        title="Trained finite RNNs vs RNTK/NNGP predictors on UCR/UEA data",
        schema=FiniteVsInfiniteConfig,
        groups=("arch",),
    )
)
