# ruff: noqa: UP045 - OmegaConf reads typing.Optional (not X | None) on Python 3.10
"""The structured config of the UCI benchmark (``conf/uci.yaml``), registered as
``uci_schema``: :class:`UCIGridConfig`, :class:`UCIBaselineConfig` and :class:`UCIConfig`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from experiments.common.registry import Experiment, register_experiment
from experiments.common.schema import BackendChoice, DeviceChoice, DTypeChoice, opt


@dataclass
class UCIGridConfig:
    """The recurrent-kernel grid (:class:`experiments.uci.benchmark.KernelGrid`)."""

    sigma_w: float = opt(math.sqrt(2.0), "s_w of every recurrent kernel")
    sigma_us: list[float] = opt(factory=lambda: [0.25, 0.5], help="grid of s_u")
    sigma_bs: list[float] = opt(factory=lambda: [0.001, 0.1], help="grid of s_b")
    sigma_h: float = opt(0.0, "s_h of every recurrent kernel")
    depths: list[int] = opt(factory=lambda: [1, 2], help="grid of depths")
    readouts: list[str] = opt(
        factory=lambda: ["last", "per_step", "avg", "paper_avg"],
        help="last, per_step, avg, paper_avg (the authors' avg)",
    )
    directions: list[str] = opt(
        factory=lambda: ["forward", "reversed", "bidirectional"],
        help="forward, reversed, bidirectional",
    )
    nonlinearity: str = opt("relu", "nonlinearity of every recurrent kernel")
    max_avg_length: Optional[int] = opt(64, "skip mean pooling above this length (null: never)")  # noqa: UP045 - avg readout skipped above this T


@dataclass
class UCIBaselineConfig:
    """The baselines (:class:`experiments.uci.benchmark.BaselineGrid`)."""

    methods: list[str] = opt(
        factory=lambda: ["rbf_svm", "poly_svm", "mlp_ntk", "random_forest"],
        help="rbf_svm, poly_svm, mlp_ntk, random_forest",
    )
    rbf_gammas: list[float] = opt(
        factory=lambda: [0.1, 1.0, 10.0, 100.0, 1000.0], help="RBF SVM gammas"
    )
    poly_degrees: list[int] = opt(factory=lambda: [2, 3, 4], help="polynomial SVM degrees")
    poly_gammas: list[float] = opt(factory=lambda: [1.0, 10.0], help="polynomial SVM gammas")
    mlp_depths: list[int] = opt(factory=lambda: [1, 2, 3, 4, 5], help="ReLU-MLP NTK depths")
    mlp_sigma_bs: list[float] = opt(
        factory=lambda: [0.0, 0.1], help="ReLU-MLP NTK bias multipliers"
    )
    forest_trees: int = opt(300, "random forest size")
    forest_max_features: list[str] = opt(
        factory=lambda: ["sqrt", "0.5"], help="random forest max_features grid"
    )


@dataclass
class UCIConfig:
    """One run of the UCI benchmark: one dataset, a comma-separated list, or ``all``."""

    dataset: str = opt("iris", "a data set, a comma-separated list, or all")
    data_root: Optional[str] = opt(None, "UCI folder (null: $RNTK_UCI_ROOT or ../shared/data/uci)")  # noqa: UP045 - None: $RNTK_UCI_ROOT or ../shared/data/uci
    out_dir: str = opt("outputs/uci", "where results go (one folder per configuration)")
    Cs: list[float] = opt(
        factory=lambda: [0.01, 1.0, 100.0, 1e4, 1e6], help="SVM regularization grid"
    )
    grid: UCIGridConfig = opt(factory=UCIGridConfig, help="the recurrent-kernel grid")
    baselines: UCIBaselineConfig = opt(factory=UCIBaselineConfig, help="the baselines")
    # float64 arithmetic on every device unless float32 is asked for by name (the numba
    # backend computes in float64 whatever this is; float32 then only halves the storage)
    dtype: DTypeChoice = opt(DTypeChoice.float64, "float64 | float32 kernel arithmetic")
    device: DeviceChoice = opt(DeviceChoice.auto, "auto | cpu | cuda")
    backend: BackendChoice = opt(BackendChoice.auto, "kernel bank: auto | numba | torch")
    compile: bool = opt(False, "torch backend: torch.compile the recursion")
    block_elements: Optional[int] = opt(None, "pairs per row block (null: by device)")  # noqa: UP045 - pairs per row block; None: by device
    seed: int = opt(0, "seed of the random forest")
    force: bool = opt(False, "recompute finished data sets")
    progress: bool = opt(True, "show progress bars")
    report: bool = opt(True, "build the table at the end")
    num_threads: Optional[int] = opt(
        None,
        "torch threads, SVM fit threads and forest processes (null: torch's default; "
        "one per CPU core for the SVMs and forests)",
    )  # noqa: UP045

    def __post_init__(self) -> None:
        from experiments.uci.benchmark import BaselineGrid, KernelGrid

        if not self.Cs or min(self.Cs) <= 0:
            raise ValueError(f"Cs={list(self.Cs)!r}: expected a non-empty list of C > 0")
        if self.block_elements is not None and self.block_elements < 1:
            raise ValueError(f"block_elements={self.block_elements!r}: expected >= 1")
        if not self.dataset.strip():
            raise ValueError("dataset is empty; give a name, a comma-separated list or 'all'")

        def tuples(cfg) -> dict:  # OmegaConf gives lists; the grids are frozen (tuples)
            return {k: tuple(v) if isinstance(v, list) else v for k, v in vars(cfg).items()}

        self.kernel_grid = KernelGrid(**tuples(self.grid))
        self.baseline_grid = BaselineGrid(**tuples(self.baselines))


register_experiment(
    Experiment(
        name="uci",
        title="The 90-dataset UCI benchmark of recurrent kernels",
        schema=UCIConfig,
    )
)
