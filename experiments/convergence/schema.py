# ruff: noqa: UP045 - OmegaConf reads typing.Optional (not X | None) on Python 3.10
"""The structured config of the convergence experiment (``conf/convergence.yaml``), registered
as ``convergence_schema``: :class:`DataConfig` (config group ``data``) and
:class:`ConvergenceConfig`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from experiments.common.registry import Experiment, register_experiment
from experiments.common.schema import ArchConfig, DeviceChoice, DTypeChoice, at_least, opt
from rntk_empirical.sequences import Sequences

# Fields of ConvergenceConfig that change how a run is executed but not what it measures.
EXECUTION_FIELDS = ("force", "progress", "num_threads", "cache", "cache_dir")


class MethodChoice(Enum):
    structured = "structured"
    jacobian = "jacobian"
    ntk_vp = "ntk_vp"


class DataKind(Enum):
    random = "random"
    mixed_lengths = "mixed_lengths"
    file = "file"


@dataclass
class DataConfig:
    """Input sequences.

    ``kind``:
        ``random``: ``n`` sequences of length ``T`` in R^``m``, N(0, 1) entries, seed ``seed``.
        ``mixed_lengths``: lengths uniform in ``[min_len, max_len]``.
        ``file``: read ``path`` (``.npz``/``.npy``/``.pt``, see :mod:`rntk_empirical.data`);
        ``n`` (if set) keeps the first n sequences.
    """

    name: str = opt("random", "label of the data in folder names")
    kind: DataKind = opt(DataKind.random, "random | mixed_lengths | file")
    n: Optional[int] = opt(8, "number of sequences (file: keep the first n)")  # noqa: UP045 - OmegaConf needs typing.Optional on Python 3.10
    T: int = opt(5, "sequence length (random)")
    m: int = opt(4, "input features per step")
    min_len: int = opt(4, "shortest length (mixed_lengths)")
    max_len: int = opt(12, "longest length (mixed_lengths)")
    seed: int = opt(0, "seed of the data draw")
    path: Optional[str] = opt(None, "a .npz/.npy/.pt file of sequences (kind=file)")  # noqa: UP045

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("T", "m", "min_len", "max_len"):
            at_least(f"data.{name}", getattr(self, name), 1)
        if self.n is not None:
            at_least("data.n", self.n, 1)
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

    name: str = opt("${arch.name}-${data.name}", "run folder name (default ARCH-DATA)")
    arch: ArchConfig = opt(factory=ArchConfig, help="the architecture (group arch=...)")
    data: DataConfig = opt(factory=DataConfig, help="the input sequences (group data=...)")
    width: int = opt(256, "hidden width n")
    seeds: int = opt(8, "independent networks per width")
    base_seed: int = opt(0, "network s uses seed base_seed + s")
    device: DeviceChoice = opt(DeviceChoice.auto, "auto | cpu | cuda (auto: CUDA when available)")
    dtype: DTypeChoice = opt(DTypeChoice.float64, "float64 | float32 arithmetic")
    method: MethodChoice = opt(
        MethodChoice.structured, "empirical NTK method: structured | jacobian | ntk_vp"
    )
    chunk_size: Optional[int] = opt(
        None, "sequences per pass of the empirical NTK (null: from memory)"
    )  # noqa: UP045
    nngp: bool = opt(True, "also compare the NNGP")
    force: bool = opt(False, "recompute a finished run")
    progress: bool = opt(True, "show progress bars")
    num_threads: Optional[int] = opt(None, "torch threads (null: torch's default)")  # noqa: UP045
    cache: bool = opt(True, "reuse cached analytic kernels")
    cache_dir: str = opt("outputs/cache", "where analytic kernels are cached")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        at_least("width", self.width, 1)
        at_least("seeds", self.seeds, 1)
        at_least("base_seed", self.base_seed, 0)
        if self.chunk_size is not None:
            at_least("chunk_size", self.chunk_size, 1)
        if self.num_threads is not None:
            at_least("num_threads", self.num_threads, 1)
        if not self.name or "/" in self.name:
            raise ValueError(f"name={self.name!r} is not valid; expected a non-empty folder name")

    def identity(self) -> dict[str, Any]:
        """What the run measures (everything but :data:`EXECUTION_FIELDS`), JSON-able.

        Two runs with equal identities compute the same numbers (up to the device's
        floating-point differences); its hash names a run's results.
        """
        out: dict[str, Any] = {
            "name": self.name,
            "arch": self.arch.to_architecture().identity(),
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


def _run_one(settings: ConvergenceConfig, run_dir: Path, outputs_root: Path) -> dict:
    from experiments.convergence.run import prepare, run_convergence

    return run_convergence(prepare(settings), run_dir, cwd=outputs_root.parent)


def _check(settings: ConvergenceConfig) -> None:
    from experiments.convergence.run import prepare

    prepare(settings)


def _folder(settings: ConvergenceConfig) -> str:
    return f"convergence/{settings.name}/width={settings.width}/seeds={settings.seeds}"


register_experiment(
    Experiment(
        name="convergence",
        title="Empirical vs analytic NTK/NNGP of finite RNNs, one width",
        schema=ConvergenceConfig,
        groups=("arch", "data", "experiment"),
        sweeps=True,
        run=_run_one,
        folder=_folder,
        check=_check,
    )
)
