"""The UCI classification benchmark in the format of Fernandez-Delgado et al. (2014).

Each dataset folder ``NAME/`` holds ``NAME_R.dat`` (tab-separated: row index, d standardized
features, integer class), ``conxuntos.dat`` (train / validation indices for hyperparameter
selection) and ``conxuntos_kfold.dat`` (four train / test index pairs). The RNTK papers'
protocol reads every feature as one time step of a 1-dimensional sequence, after dividing
every row by the largest row norm of its dataset.

The data root is configurable (``data_root`` argument / the ``RNTK_UCI_ROOT`` environment
variable); the default is ``../shared/data/uci`` beside the repository where it exists (the CI
layout), else ``data/uci`` inside it, where ``experiments.uci.data.download`` puts the
collection (``python -m experiments.uci.data download``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci"
LOCAL_ROOT = Path(__file__).resolve().parents[1] / "data" / "uci"


def default_root() -> Path:
    """Where the collection is looked for (and downloaded to) when no folder is given:
    ``$RNTK_UCI_ROOT``, else ``DEFAULT_ROOT`` if it exists, else ``LOCAL_ROOT``."""
    env = os.environ.get("RNTK_UCI_ROOT")
    if env:
        return Path(env).expanduser()
    return DEFAULT_ROOT if DEFAULT_ROOT.is_dir() else LOCAL_ROOT


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the UCI folder: argument, then ``default_root()``; it must exist."""
    path = Path(root).expanduser() if root else default_root()
    if not path.is_dir():
        raise ValueError(
            f"UCI data folder {str(path)!r} does not exist; pass data_root=... or set "
            f"RNTK_UCI_ROOT, or fetch the collection with "
            f"'python -m experiments.uci.data download --root {path}'"
        )
    return path


def list_datasets(root: str | os.PathLike | None = None) -> list[str]:
    """The dataset names in ``datasets.txt`` (the 90 of the benchmark)."""
    r = data_root(root)
    listing = r / "datasets.txt"
    if listing.exists():
        return [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
    return sorted(p.name for p in r.iterdir() if (p / f"{p.name}_R.dat").exists())


def dataset_shape(name: str, root: str | os.PathLike | None = None) -> tuple[int, int]:
    """``(N, d)`` from the dataset's metadata file ``NAME.txt`` (no data read)."""
    meta = data_root(root) / name / f"{name}.txt"
    fields = dict(re.findall(r"(\w+)\s*=\s*(\d+)", meta.read_text())) if meta.exists() else {}
    if "n_patrons1" not in fields or "n_entradas" not in fields:
        raise ValueError(f"missing or malformed metadata file {str(meta)!r}")
    return int(fields["n_patrons1"]), int(fields["n_entradas"])


@dataclass(frozen=True)
class UCIDataset:
    """One dataset: ``X`` ``(N, d)`` rows scaled by the largest row norm, ``y`` ``(N,)`` ints.

    ``select`` = (train, validation) indices; ``folds`` = four (train, test) index pairs.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    select: tuple[np.ndarray, np.ndarray]
    folds: tuple[tuple[np.ndarray, np.ndarray], ...]

    @property
    def n_classes(self) -> int:
        return int(self.y.max()) + 1

    @property
    def length(self) -> int:
        """T: one time step per feature."""
        return self.X.shape[1]

    def sequences(self, idx: np.ndarray | None = None) -> torch.Tensor:
        """``(n, d, 1)`` float64: every feature is one time step of a 1-D sequence."""
        X = self.X if idx is None else self.X[idx]
        return torch.from_numpy(np.ascontiguousarray(X))[:, :, None]


def _read_indices(path: Path) -> list[np.ndarray]:
    if not path.exists():
        raise ValueError(f"missing split file {str(path)!r}")
    return [
        np.array(ln.split(), dtype=np.int64) for ln in path.read_text().splitlines() if ln.strip()
    ]


def load_dataset(name: str, root: str | os.PathLike | None = None) -> UCIDataset:
    """Load one dataset, validating the files; raises ValueError naming what is wrong."""
    folder = data_root(root) / name
    data_file = folder / f"{name}_R.dat"
    if not data_file.exists():
        raise ValueError(f"unknown UCI dataset {name!r}: {str(data_file)!r} not found")
    try:
        raw = np.loadtxt(data_file, skiprows=1, ndmin=2)
    except ValueError as err:
        raise ValueError(f"malformed data file {str(data_file)!r}: {err}") from err
    X = raw[:, 1:-1].astype(np.float64)
    y = raw[:, -1].astype(np.int64)
    if X.shape[1] < 1 or not np.isfinite(X).all():
        raise ValueError(f"malformed data file {str(data_file)!r}: no or non-finite features")
    X = X / np.linalg.norm(X, axis=1).max()
    sel = _read_indices(folder / "conxuntos.dat")
    kf = _read_indices(folder / "conxuntos_kfold.dat")
    if len(sel) != 2 or len(kf) != 8:
        raise ValueError(f"malformed split files in {str(folder)!r}")
    for idx in sel + kf:
        if idx.size and (idx.min() < 0 or idx.max() >= len(y)):
            raise ValueError(f"split indices out of range in {str(folder)!r}")
    folds = tuple((kf[2 * i], kf[2 * i + 1]) for i in range(4))
    return UCIDataset(name, X, y, (sel[0], sel[1]), folds)
