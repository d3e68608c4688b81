"""Supervised sequence tasks for the training experiments.

``synthetic_regression``: a target that needs memory of the whole sequence, with a fading
weight on older steps,

    y(x) = tanh( sum_{t=1..T} rho^{T-t} <u, x_t> / c ),

with u a fixed random unit direction and c normalizing the argument to unit variance.
Lengths may vary (drawn uniformly from ``[min_len, max_len]``).

``aeon_dataset``: a UCR/UEA dataset bundled with the optional ``aeon`` package (e.g.
ItalyPowerDemand, GunPoint, JapaneseVowels); binary labels become +-1 regression targets,
multi-class labels become one-hot minus 1/C.

``load_classification_split``: the classification data type, :class:`ClassificationSplit`
(sequences, integer labels and one-hot targets of stratified train / validation / test
parts) of an aeon dataset. Both read the dataset through the one aeon loader
:func:`load_aeon`; :func:`one_hot_targets` and :func:`resample` are shared with the
experiments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Task:
    """Train/test sequences (lists of ``(T_i, m)`` tensors) and targets ``(N,)`` or ``(N, k)``."""

    name: str
    x_train: list[torch.Tensor]
    y_train: torch.Tensor
    x_test: list[torch.Tensor]
    y_test: torch.Tensor

    @property
    def input_dim(self) -> int:
        return int(self.x_train[0].shape[1])

    @property
    def max_len(self) -> int:
        return max(int(s.shape[0]) for s in self.x_train + self.x_test)


def synthetic_regression(
    n_train: int = 32,
    n_test: int = 32,
    input_dim: int = 2,
    min_len: int = 8,
    max_len: int = 8,
    rho: float = 0.8,
    seed: int = 0,
) -> Task:
    """The memory task above; ``min_len < max_len`` gives mixed lengths."""
    if n_train < 1 or n_test < 1 or input_dim < 1:
        raise ValueError("n_train, n_test and input_dim must be >= 1")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(input_dim, generator=g, dtype=torch.float64)
    u = u / u.norm()

    def sample(n: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        lens = torch.randint(min_len, max_len + 1, (n,), generator=g)
        xs = [torch.randn(int(T), input_dim, generator=g, dtype=torch.float64) for T in lens]
        ys = []
        for x in xs:
            T = x.shape[0]
            w = rho ** torch.arange(T - 1, -1, -1, dtype=torch.float64)
            c = math.sqrt(float((w**2).sum()))
            ys.append(torch.tanh((w * (x @ u)).sum() / c))
        return xs, torch.stack(ys)

    xtr, ytr = sample(n_train)
    xte, yte = sample(n_test)
    return Task("synthetic_regression", xtr, ytr, xte, yte)


def one_hot_targets(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(N, C)`` float64: e_label - 1/C (each row sums to 0)."""
    return torch.nn.functional.one_hot(labels.long(), n_classes).double() - 1.0 / n_classes


def resample(x: torch.Tensor, length: int) -> torch.Tensor:
    """``(T, m)`` -> ``(length, m)`` float64 by linear interpolation on [0, 1] (endpoints
    kept)."""
    T = x.shape[0]
    if T == length:
        return x
    src = np.linspace(0.0, 1.0, T)
    dst = np.linspace(0.0, 1.0, length)
    xn = x.detach().cpu().double().numpy()
    out = np.stack([np.interp(dst, src, xn[:, j]) for j in range(xn.shape[1])], axis=1)
    return torch.as_tensor(out, dtype=torch.float64)


def load_aeon(
    name: str,
) -> tuple[tuple[str, ...], list[torch.Tensor], np.ndarray, list[torch.Tensor], np.ndarray]:
    """A UCR/UEA dataset bundled with ``aeon``: ``(classes, x_train, labels_train, x_test,
    labels_test)``, the classes the sorted label strings of the train split, the sequences
    float64 ``(T_i, channels)`` tensors (not normalized), the labels int64 class indices.

    Raises:
        ValueError: (one line) aeon is missing or the name is unknown.
    """
    try:
        from aeon.datasets import load_classification
    except ImportError as err:
        raise ValueError(
            f"dataset {name!r} needs the optional 'aeon' package: pip install -e '.[timeseries]'"
        ) from err
    try:
        X_tr, y_tr = load_classification(name, split="train")
        X_te, y_te = load_classification(name, split="test")
    except Exception as err:  # noqa: BLE001 - aeon raises various errors for unknown names
        raise ValueError(f"aeon could not load dataset {name!r}: {err}") from err
    classes = tuple(sorted({str(c) for c in np.asarray(y_tr).tolist()}))
    index = {c: i for i, c in enumerate(classes)}

    def labels(y) -> np.ndarray:
        return np.array([index[str(c)] for c in np.asarray(y).tolist()], dtype=np.int64)

    def sequences(X) -> list[torch.Tensor]:
        # (n, channels, length) array or list of (channels, length_i) arrays
        return [torch.as_tensor(np.asarray(x, dtype=np.float64)).T.contiguous() for x in X]

    return classes, sequences(X_tr), labels(y_tr), sequences(X_te), labels(y_te)


def _normalizer(reference: list[torch.Tensor]):
    """x -> (x - mu) / sd per channel, mu and sd over every step of ``reference``."""
    allv = torch.cat(reference)
    mu, sd = allv.mean(0), allv.std(0).clamp_min(1e-12)

    def norm(xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [(x - mu) / sd for x in xs]

    return norm


def aeon_dataset(
    name: str, n_train: int | None = None, n_test: int | None = None, seed: int = 0
) -> Task:
    """A UCR/UEA dataset bundled with ``aeon`` (``pip install -e .[timeseries]``).

    Sequences are z-normalized per channel over the training set; optional subsampling
    (``n_train``/``n_test``, stratification not attempted) keeps kernels small.
    """
    classes, xtr, lab_tr, xte, lab_te = load_aeon(name)
    norm = _normalizer(xtr)
    xtr, xte = norm(xtr), norm(xte)

    def targets(lab: np.ndarray) -> torch.Tensor:
        lab = torch.as_tensor(lab)
        if len(classes) == 2:
            return (2.0 * lab - 1.0).double()
        return one_hot_targets(lab, len(classes))

    ytr, yte = targets(lab_tr), targets(lab_te)
    g = torch.Generator().manual_seed(seed)
    if n_train is not None and n_train < len(xtr):
        sel = torch.randperm(len(xtr), generator=g)[:n_train]
        xtr, ytr = [xtr[int(i)] for i in sel], ytr[sel]
    if n_test is not None and n_test < len(xte):
        sel = torch.randperm(len(xte), generator=g)[:n_test]
        xte, yte = [xte[int(i)] for i in sel], yte[sel]
    return Task(name, xtr, ytr, xte, yte)


@dataclass(frozen=True)
class ClassificationSplit:
    """Sequences (lists of ``(T_i, m)`` float64 tensors), integer labels ``(N,)`` and one-hot
    targets ``(N, C)`` (e_c - 1/C) of the train / validation / test parts."""

    name: str
    classes: tuple[str, ...]
    x_train: list[torch.Tensor]
    x_val: list[torch.Tensor]
    x_test: list[torch.Tensor]
    labels_train: torch.Tensor
    labels_val: torch.Tensor
    labels_test: torch.Tensor

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def input_dim(self) -> int:
        return int(self.x_train[0].shape[1])

    @property
    def sizes(self) -> tuple[int, int, int]:
        return len(self.x_train), len(self.x_val), len(self.x_test)

    @property
    def lengths(self) -> list[int]:
        return sorted({int(x.shape[0]) for x in self.x_train + self.x_val + self.x_test})

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` one-hot targets minus 1/C."""
        return one_hot_targets(labels, self.n_classes)

    @property
    def all_x(self) -> list[torch.Tensor]:
        """Train, validation and test sequences, in that order."""
        return self.x_train + self.x_val + self.x_test


def load_classification_split(
    name: str,
    val_fraction: float = 0.25,
    max_len: int | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
) -> ClassificationSplit:
    """A bundled aeon data set split into train / validation / test.

    The UCR/UEA test split is the test part; the UCR train split is divided, stratified by
    class with generator ``seed``, into validation (``val_fraction`` of each class, at least
    one sequence when a class has two or more) and train. ``n_train`` / ``n_test`` (if set)
    keep a stratified subset of the UCR train split (before the validation split) / of the
    test split. Sequences longer than ``max_len`` are resampled to ``max_len`` steps.
    Channels are z-normalized with the mean and deviation over the train part.

    Raises:
        ValueError: aeon is missing, the data set cannot be loaded, or bad arguments.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} must lie in (0, 1)")
    if max_len is not None and max_len < 2:
        raise ValueError(f"max_len={max_len!r} must be >= 2 or None")
    classes, x_all_tr, lab_tr, x_all_te, lab_te = load_aeon(name)
    if max_len is not None:
        x_all_tr = [resample(x, max_len) if x.shape[0] > max_len else x for x in x_all_tr]
        x_all_te = [resample(x, max_len) if x.shape[0] > max_len else x for x in x_all_te]
    rng = np.random.default_rng(seed)
    tr_idx = np.arange(len(lab_tr))
    if n_train is not None and n_train < len(tr_idx):
        tr_idx = _stratified_subset(lab_tr, n_train, rng)
    te_idx = np.arange(len(lab_te))
    if n_test is not None and n_test < len(te_idx):
        te_idx = _stratified_subset(lab_te, n_test, rng)
    val_idx, fit_idx = [], []
    for c in range(len(classes)):
        members = rng.permutation(tr_idx[lab_tr[tr_idx] == c])
        k = int(round(val_fraction * len(members)))
        k = min(max(k, 1 if len(members) >= 2 else 0), len(members) - 1) if len(members) else 0
        val_idx += members[:k].tolist()
        fit_idx += members[k:].tolist()
    if not val_idx or not fit_idx:
        raise ValueError(f"dataset {name!r} is too small for a validation split")
    fit_idx, val_idx = sorted(fit_idx), sorted(val_idx)
    x_fit = [x_all_tr[i] for i in fit_idx]
    norm = _normalizer(x_fit)
    return ClassificationSplit(
        name=name,
        classes=classes,
        x_train=norm(x_fit),
        x_val=norm([x_all_tr[i] for i in val_idx]),
        x_test=norm([x_all_te[i] for i in te_idx]),
        labels_train=torch.as_tensor(lab_tr[fit_idx]),
        labels_val=torch.as_tensor(lab_tr[val_idx]),
        labels_test=torch.as_tensor(lab_te[te_idx]),
    )


def _stratified_subset(lab: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """About ``n`` indices with the class proportions of ``lab`` (at least one per class)."""
    keep = []
    for c in np.unique(lab):
        members = rng.permutation(np.flatnonzero(lab == c))
        k = max(1, int(round(n * len(members) / len(lab))))
        keep += members[:k].tolist()
    return np.array(sorted(keep), dtype=np.int64)
