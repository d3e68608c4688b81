"""Structured configs (Hydra / OmegaConf) of the experiments, registered in Hydra's ConfigStore.

The YAML files under ``conf/`` fill these schemas: an unknown key or a value of the wrong
type (e.g. ``width=abc``, ``device=gpu``) is rejected by Hydra when the config is composed,
and :meth:`ConvergenceConfig.validate` (called by ``OmegaConf.to_object`` through
``__post_init__``) checks the ranges (widths >= 1, seeds >= 1, an Architecture that exists,
a consistent data description) before any work starts.

Config groups: ``arch`` (:class:`ArchConfig`), ``data`` (:class:`DataConfig`); primary
schema ``convergence_schema`` (:class:`ConvergenceConfig`).
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field, fields, make_dataclass
from enum import Enum
from typing import Any, Optional

from rntk_empirical.architecture import Architecture
from rntk_empirical.nonlinearities import resolve_nonlinearity
from rntk_empirical.sequences import Sequences
from rntk_empirical.training import OPTIMIZERS

# Fields of ConvergenceConfig that change how a run is executed but not what it measures.
EXECUTION_FIELDS = ("force", "progress", "num_threads", "cache", "cache_dir")
# The same for DriftConfig.
DRIFT_EXECUTION_FIELDS = (
    "force",
    "progress",
    "num_threads",
    "checkpoint_every",
    "strict_checkpoints",
)


class DeviceChoice(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class BackendChoice(Enum):
    """Kernel-bank backend (:func:`rntk_empirical.analytic.analytic_kernel_bank`)."""

    auto = "auto"
    numba = "numba"
    torch = "torch"


class DTypeChoice(Enum):
    float64 = "float64"
    float32 = "float32"


class MethodChoice(Enum):
    structured = "structured"
    jacobian = "jacobian"
    ntk_vp = "ntk_vp"


class DataKind(Enum):
    random = "random"
    mixed_lengths = "mixed_lengths"
    file = "file"


def _arch_config() -> type:
    """:class:`ArchConfig`: ``Architecture``'s fields (types and defaults read from the
    library's dataclass, so each option is declared once, in
    :class:`~rntk_empirical.architecture.Architecture`) plus a ``name`` for folders and
    legends. Its ``__post_init__`` builds the Architecture, whose checks raise ValueError
    naming the field and the allowed values."""
    hints = typing.get_type_hints(Architecture)
    specs = [("name", str, field(default="relu_last"))] + [
        (f.name, hints[f.name], field(default=f.default)) for f in fields(Architecture)
    ]

    def to_architecture(self) -> Architecture:
        return Architecture(**{f.name: getattr(self, f.name) for f in fields(Architecture)})

    def post_init(self) -> None:
        self.nonlinearity = resolve_nonlinearity(self.nonlinearity)  # module:attr registered
        self.to_architecture()

    cls = make_dataclass(
        "ArchConfig",
        specs,
        namespace={"to_architecture": to_architecture, "__post_init__": post_init},
    )
    cls.__module__ = __name__
    cls.__doc__ = _arch_config.__doc__
    return cls


ArchConfig = _arch_config()


@dataclass
class DataConfig:
    """Input sequences.

    ``kind``:
        ``random``: ``n`` sequences of length ``T`` in R^``m``, N(0, 1) entries, seed ``seed``.
        ``mixed_lengths``: lengths uniform in ``[min_len, max_len]``.
        ``file``: read ``path`` (``.npz``/``.npy``/``.pt``, see :mod:`rntk_empirical.data`);
        ``n`` (if set) keeps the first n sequences.
    """

    name: str = "random"
    kind: DataKind = DataKind.random
    n: Optional[int] = 8  # noqa: UP045 - OmegaConf needs typing.Optional on Python 3.10
    T: int = 5
    m: int = 4
    min_len: int = 4
    max_len: int = 12
    seed: int = 0
    path: Optional[str] = None  # noqa: UP045

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("T", "m", "min_len", "max_len"):
            _at_least(f"data.{name}", getattr(self, name), 1)
        if self.n is not None:
            _at_least("data.n", self.n, 1)
        if self.kind in (DataKind.random, DataKind.mixed_lengths) and self.n is None:
            raise ValueError(f"data.n must be set for data.kind={self.kind.value}")
        if self.kind == DataKind.mixed_lengths and self.max_len < self.min_len:
            raise ValueError(
                f"data.max_len={self.max_len} is smaller than data.min_len={self.min_len}"
            )
        if self.kind == DataKind.file and not self.path:
            raise ValueError("data.kind=file needs data.path=/path/to/sequences.npz")

    def build(self) -> Sequences:
        """The sequences, float64 on the CPU (file errors are ValueErrors naming the file)."""
        from rntk_empirical import data

        if self.kind == DataKind.random:
            return data.random_sequences(self.n, self.T, self.m, self.seed)
        if self.kind == DataKind.mixed_lengths:
            return data.mixed_length_sequences(
                self.n, self.min_len, self.max_len, self.m, self.seed
            )
        return data.load_sequences(self.path, self.n)

    def description(self) -> dict[str, Any]:
        """The fields that define the data (those the chosen ``kind`` reads)."""
        used = {
            DataKind.random: ("n", "T", "m", "seed"),
            DataKind.mixed_lengths: ("n", "min_len", "max_len", "m", "seed"),
            DataKind.file: ("path", "n"),
        }[self.kind]
        return {"kind": self.kind.value, **{k: getattr(self, k) for k in used}}


@dataclass
class ConvergenceConfig:
    """One run of the convergence experiment: one width, ``seeds`` independent networks.

    Network ``s`` (``0 <= s < seeds``) is initialized with seed ``base_seed + s``.
    ``chunk_size`` bounds the memory of the empirical NTK (see
    :func:`rntk_empirical.empirical.empirical_ntk`). ``force`` recomputes a finished run;
    ``cache`` reuses the analytic kernels stored in ``cache_dir`` (relative paths are
    relative to the directory the command was started from).
    """

    name: str = "${arch.name}-${data.name}"
    arch: ArchConfig = field(default_factory=ArchConfig)
    data: DataConfig = field(default_factory=DataConfig)
    width: int = 256
    seeds: int = 8
    base_seed: int = 0
    device: DeviceChoice = DeviceChoice.auto
    dtype: DTypeChoice = DTypeChoice.float64
    method: MethodChoice = MethodChoice.structured
    chunk_size: Optional[int] = None  # noqa: UP045
    nngp: bool = True
    force: bool = False
    progress: bool = True
    num_threads: Optional[int] = None  # noqa: UP045
    cache: bool = True
    cache_dir: str = "outputs/cache"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _at_least("width", self.width, 1)
        _at_least("seeds", self.seeds, 1)
        _at_least("base_seed", self.base_seed, 0)
        if self.chunk_size is not None:
            _at_least("chunk_size", self.chunk_size, 1)
        if self.num_threads is not None:
            _at_least("num_threads", self.num_threads, 1)
        if not self.name or "/" in self.name:
            raise ValueError(f"name={self.name!r} is not valid; expected a non-empty folder name")

    def identity(self) -> dict[str, Any]:
        """What the run measures (everything but :data:`EXECUTION_FIELDS`), JSON-able.

        Two runs with equal identities compute the same numbers (up to the device's
        floating-point differences); its hash names a run's results.
        """
        out: dict[str, Any] = {
            "name": self.name,
            "arch": self.arch.to_architecture().to_dict(),
            "arch_name": self.arch.name,
            "data": self.data.description(),
            "data_name": self.data.name,
        }
        for f in fields(self):
            if f.name in out or f.name in ("arch", "data") or f.name in EXECUTION_FIELDS:
                continue
            v = getattr(self, f.name)
            out[f.name] = v.value if isinstance(v, Enum) else v
        out["device"] = self.execution_device().type
        return out

    def execution_device(self):
        """The device this run uses: ``auto`` keeps problems too small for a GPU on the CPU
        (:func:`rntk_empirical.devices.auto_device`, from the networks' matmul work)."""
        from rntk_empirical.devices import auto_device, resolve_device

        if self.device != DeviceChoice.auto or self.data.kind == DataKind.file:
            return resolve_device(self.device.value)
        a = self.arch
        T = self.data.T if self.data.kind == DataKind.random else self.data.max_len
        layers = a.depth * (2 if a.bidirectional else 1)
        n, N = self.width, self.data.n
        flops = self.seeds * layers * (6 * N * T * n * n + 2 * (N * T) ** 2 * n)
        launches = self.seeds * layers * 40 * T
        return auto_device(flops, launches)


def resolved_device(choice: DeviceChoice) -> str:
    """The device type ``auto`` (or a name) resolves to on this machine: a run's identity
    holds it, so GPU runs never resume into CPU folders (ValueError if it is unavailable)."""
    from rntk_empirical.devices import resolve_device

    return resolve_device(choice.value).type


def _at_least(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is not valid; expected an integer >= {minimum}")


class TaskKind(Enum):
    synthetic = "synthetic"
    aeon = "aeon"


@dataclass
class TaskConfig:
    """The training task. ``synthetic``: :func:`rntk_empirical.tasks.synthetic_regression`
    (lengths uniform in [min_len, max_len]); ``aeon``: a bundled binary UCR dataset
    (``dataset``), subsampled to ``n_train``/``n_test``."""

    name: str = "synthetic"
    kind: TaskKind = TaskKind.synthetic
    n_train: int = 16
    n_test: int = 16
    m: int = 2
    min_len: int = 8
    max_len: int = 8
    rho: float = 0.8
    dataset: str = "ItalyPowerDemand"
    seed: int = 0

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

    name: str = "${arch.name}-${task.name}"
    arch: ArchConfig = field(default_factory=ArchConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    width: int = 256
    seeds: int = 4
    base_seed: int = 0
    steps: int = 200
    optimizer: str = "gd"
    lr_scale: float = 0.5
    lr: Optional[float] = None  # noqa: UP045 - absolute learning rate; overrides lr_scale
    batch_size: Optional[int] = None  # noqa: UP045
    record_every: int = 10
    checkpoint_every: int = 50
    n_probe: int = 8
    track_linearized: bool = True
    strict_checkpoints: bool = False
    device: DeviceChoice = DeviceChoice.auto
    dtype: DTypeChoice = DTypeChoice.float64
    force: bool = False
    progress: bool = True
    num_threads: Optional[int] = None  # noqa: UP045

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
        d["arch"] = self.arch.to_architecture().to_dict() | {"name": self.arch.name}
        d["device"] = resolved_device(self.device)
        return d


@dataclass
class UCIGridConfig:
    """The recurrent-kernel grid (:class:`experiments.uci.benchmark.KernelGrid`)."""

    sigma_w: float = math.sqrt(2.0)
    sigma_us: list[float] = field(default_factory=lambda: [0.25, 0.5])
    sigma_bs: list[float] = field(default_factory=lambda: [0.001, 0.1])
    sigma_h: float = 0.0
    depths: list[int] = field(default_factory=lambda: [1, 2])
    readouts: list[str] = field(default_factory=lambda: ["last", "per_step", "avg", "paper_avg"])
    directions: list[str] = field(default_factory=lambda: ["forward", "reversed", "bidirectional"])
    nonlinearity: str = "relu"
    max_avg_length: Optional[int] = 64  # noqa: UP045 - avg readout skipped above this T


@dataclass
class UCIBaselineConfig:
    """The baselines (:class:`experiments.uci.benchmark.BaselineGrid`)."""

    methods: list[str] = field(
        default_factory=lambda: ["rbf_svm", "poly_svm", "mlp_ntk", "random_forest"]
    )
    rbf_gammas: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0, 100.0, 1000.0])
    poly_degrees: list[int] = field(default_factory=lambda: [2, 3, 4])
    poly_gammas: list[float] = field(default_factory=lambda: [1.0, 10.0])
    mlp_depths: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    mlp_sigma_bs: list[float] = field(default_factory=lambda: [0.0, 0.1])
    forest_trees: int = 300
    forest_max_features: list[str] = field(default_factory=lambda: ["sqrt", "0.5"])


@dataclass
class UCIConfig:
    """One run of the UCI benchmark: one dataset, a comma-separated list, or ``all``."""

    dataset: str = "iris"
    data_root: Optional[str] = None  # noqa: UP045 - None: $RNTK_UCI_ROOT or ../shared/data/uci
    out_dir: str = "outputs/uci"
    Cs: list[float] = field(default_factory=lambda: [0.01, 1.0, 100.0, 1e4, 1e6])
    grid: UCIGridConfig = field(default_factory=UCIGridConfig)
    baselines: UCIBaselineConfig = field(default_factory=UCIBaselineConfig)
    # float64 arithmetic on every device unless float32 is asked for by name (the numba
    # backend computes in float64 whatever this is; float32 then only halves the storage)
    dtype: DTypeChoice = DTypeChoice.float64
    device: DeviceChoice = DeviceChoice.auto
    backend: BackendChoice = BackendChoice.auto
    compile: bool = False
    block_elements: Optional[int] = None  # noqa: UP045 - pairs per row block; None: by device
    seed: int = 0
    force: bool = False
    progress: bool = True
    report: bool = True
    num_threads: Optional[int] = None  # noqa: UP045

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


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    from pathlib import Path

    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    # ${rntk.stem:path}: a file's name without folder and suffix (names data=file runs)
    OmegaConf.register_new_resolver(
        "rntk.stem", lambda p: Path(str(p)).stem if p else "file", replace=True
    )
    from experiments.common.help import register_help_resolver

    register_help_resolver()
    cs = ConfigStore.instance()
    cs.store(name="convergence_schema", node=ConvergenceConfig)
    cs.store(name="drift_schema", node=DriftConfig)
    cs.store(name="uci_schema", node=UCIConfig)
