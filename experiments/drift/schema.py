# ruff: noqa: UP045 - OmegaConf reads typing.Optional (not X | None) on Python 3.10
"""The structured config of the drift experiment (``conf/drift.yaml``), registered as
``drift_schema``: :class:`TaskConfig` (config group ``task``) and :class:`DriftConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from experiments.common.registry import Experiment, register_experiment
from experiments.common.schema import (
    ArchConfig,
    DeviceChoice,
    DTypeChoice,
    opt,
    resolved_device,
)
from rntk_empirical.training import OPTIMIZERS

# Fields of DriftConfig that change how a run is executed but not what it measures.
DRIFT_EXECUTION_FIELDS = (
    "force",
    "progress",
    "num_threads",
    "checkpoint_every",
    "strict_checkpoints",
)


class TaskKind(Enum):
    synthetic = "synthetic"
    aeon = "aeon"


@dataclass
class TaskConfig:
    """The training task. ``synthetic``: :func:`rntk_empirical.tasks.synthetic_regression`
    (lengths uniform in [min_len, max_len]); ``aeon``: a bundled binary UCR dataset
    (``dataset``), subsampled to ``n_train``/``n_test``."""

    name: str = opt("synthetic", "label of the task in folder names")
    kind: TaskKind = opt(TaskKind.synthetic, "synthetic | aeon (a bundled UCR data set)")
    n_train: int = opt(16, "training sequences")
    n_test: int = opt(16, "test sequences")
    m: int = opt(2, "input features per step (synthetic)")
    min_len: int = opt(8, "shortest length (synthetic)")
    max_len: int = opt(8, "longest length (synthetic)")
    rho: float = opt(0.8, "target smoothness (synthetic)")
    dataset: str = opt("ItalyPowerDemand", "UCR data set name (kind=aeon)")
    seed: int = opt(0, "seed of the data draw and subsampling")

    def __post_init__(self) -> None:
        for k in ("n_train", "n_test", "m", "min_len", "max_len"):
            if getattr(self, k) < 1:
                raise ValueError(f"task.{k}={getattr(self, k)!r} is not valid; expected >= 1")
        if self.min_len > self.max_len:
            raise ValueError(f"task.min_len={self.min_len} exceeds task.max_len={self.max_len}")

    def build(self):
        """The :class:`rntk_empirical.tasks.Task` (ValueError for unusable data)."""
        from rntk_empirical.tasks import aeon_dataset, synthetic_regression

        if self.kind == TaskKind.synthetic:
            return synthetic_regression(
                self.n_train, self.n_test, self.m, self.min_len, self.max_len, self.rho, self.seed
            )
        task = aeon_dataset(self.dataset, self.n_train, self.n_test, self.seed)
        if task.y_train.dim() != 1:
            raise ValueError(
                f"task.dataset={self.dataset!r} has {task.y_train.shape[1]} classes; the drift "
                "experiment trains one output: choose a binary dataset (ItalyPowerDemand, GunPoint)"
            )
        return task


@dataclass
class DriftConfig:
    """One run of the drift experiment: one width, ``seeds`` trained networks."""

    name: str = opt("${arch.name}-${task.name}", "run folder name (default ARCH-TASK)")
    arch: ArchConfig = opt(factory=ArchConfig, help="the architecture (group arch=...)")
    task: TaskConfig = opt(factory=TaskConfig, help="the training task (group task=...)")
    width: int = opt(256, "hidden width n")
    seeds: int = opt(4, "independent networks per width")
    base_seed: int = opt(0, "network s uses seed base_seed + s")
    steps: int = opt(200, "training steps")
    optimizer: str = opt("gd", "gd | sgd | adam")
    lr_scale: float = opt(0.5, "learning rate lr_scale * N / lambda_max(Theta)")
    lr: Optional[float] = opt(None, "absolute learning rate (overrides lr_scale)")  # noqa: UP045 - absolute learning rate; overrides lr_scale
    batch_size: Optional[int] = opt(None, "minibatch size for sgd/adam (null: full batch)")  # noqa: UP045
    record_every: int = opt(10, "steps between recorded points")
    checkpoint_every: int = opt(50, "steps between checkpoints")
    n_probe: int = opt(8, "probe sequences of the NTK drift")
    track_linearized: bool = opt(True, "also train the linearized network")
    strict_checkpoints: bool = opt(
        False,
        "a stale or damaged checkpoint stops the run (exit 2) instead of restarting that seed",
    )
    device: DeviceChoice = opt(DeviceChoice.auto, "auto | cpu | cuda (auto: CUDA when available)")
    dtype: DTypeChoice = opt(DTypeChoice.float64, "float64 | float32 arithmetic")
    force: bool = opt(False, "recompute a finished run")
    progress: bool = opt(True, "show progress bars")
    num_threads: Optional[int] = opt(None, "torch threads (null: torch's default)")  # noqa: UP045

    def __post_init__(self) -> None:
        for k in ("width", "seeds", "steps", "record_every", "checkpoint_every", "n_probe"):
            v = getattr(self, k)
            if v < 1:
                raise ValueError(f"{k}={v!r} is not valid; expected an integer >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer={self.optimizer!r} is not valid; "
                f"allowed values: {', '.join(OPTIMIZERS)}"
            )
        if not self.lr_scale > 0 or (self.lr is not None and not self.lr > 0):
            raise ValueError("lr_scale and lr must be > 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} is not valid; expected >= 1 or null")
        if self.arch.sigma_v == 0:
            raise ValueError(
                "arch.sigma_v=0 makes the network's output 0 and its NTK 0: nothing to train; "
                "use arch.sigma_v > 0"
            )

    def identity(self) -> dict[str, Any]:
        from omegaconf import OmegaConf

        d = OmegaConf.to_container(OmegaConf.structured(self), resolve=True, enum_to_str=True)
        for k in DRIFT_EXECUTION_FIELDS:
            d.pop(k, None)
        d["arch"] = self.arch.to_architecture().identity() | {"name": self.arch.name}
        d["device"] = resolved_device(self.device)
        return d


def _run_one(settings: DriftConfig, run_dir: Path, outputs_root: Path) -> dict:
    from experiments.drift.run import run_drift

    return run_drift(settings, run_dir)


def _folder(settings: DriftConfig) -> str:
    return f"drift/{settings.name}/width={settings.width}/seeds={settings.seeds}"


register_experiment(
    Experiment(
        name="drift",
        title="Training: NTK drift and lazy-regime agreement, one width",
        schema=DriftConfig,
        groups=("arch", "task"),
        sweeps=True,
        run=_run_one,
        folder=_folder,
    )
)
