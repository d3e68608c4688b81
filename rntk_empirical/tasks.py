"""Supervised sequence tasks for the training experiments.

``synthetic_regression``: a target that needs memory of the whole sequence, with a fading
weight on older steps,

    y(x) = tanh( sum_{t=1..T} rho^{T-t} <u, x_t> / c ),

with u a fixed random unit direction and c normalizing the argument to unit variance.
Lengths may vary (drawn uniformly from ``[min_len, max_len]``).

``aeon_dataset``: a UCR/UEA dataset bundled with the optional ``aeon`` package (e.g.
ItalyPowerDemand, GunPoint, JapaneseVowels); binary labels become +-1 regression targets,
multi-class labels become one-hot minus 1/C.
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


def load_aeon(name: str) -> tuple:
    """``(X_train, y_train, X_test, y_test)`` of a UCR/UEA dataset bundled with ``aeon``, as
    aeon returns them; ValueError (one line) when aeon is missing or the name is unknown."""
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
    return X_tr, y_tr, X_te, y_te


def aeon_sequences(X) -> list[torch.Tensor]:
    """aeon's ``(n, channels, length)`` array or list of ``(channels, length_i)`` arrays as
    float64 ``(length_i, channels)`` tensors."""
    return [torch.as_tensor(np.asarray(x, dtype=np.float64)).T.contiguous() for x in X]


def aeon_dataset(
    name: str, n_train: int | None = None, n_test: int | None = None, seed: int = 0
) -> Task:
    """A UCR/UEA dataset bundled with ``aeon`` (``pip install -e .[timeseries]``).

    Sequences are z-normalized per channel over the training set; optional subsampling
    (``n_train``/``n_test``, stratification not attempted) keeps kernels small.
    """
    X_tr, y_tr, X_te, y_te = load_aeon(name)
    xtr, xte = aeon_sequences(X_tr), aeon_sequences(X_te)
    allv = torch.cat(xtr)
    mu, sd = allv.mean(0), allv.std(0).clamp_min(1e-12)
    xtr = [(x - mu) / sd for x in xtr]
    xte = [(x - mu) / sd for x in xte]
    classes = sorted(set(np.asarray(y_tr).tolist()))
    idx = {c: i for i, c in enumerate(classes)}

    def targets(y) -> torch.Tensor:
        lab = torch.tensor([idx[c] for c in np.asarray(y).tolist()])
        if len(classes) == 2:
            return (2.0 * lab - 1.0).double()
        return torch.nn.functional.one_hot(lab, len(classes)).double() - 1.0 / len(classes)

    ytr, yte = targets(y_tr), targets(y_te)
    g = torch.Generator().manual_seed(seed)
    if n_train is not None and n_train < len(xtr):
        sel = torch.randperm(len(xtr), generator=g)[:n_train]
        xtr, ytr = [xtr[int(i)] for i in sel], ytr[sel]
    if n_test is not None and n_test < len(xte):
        sel = torch.randperm(len(xte), generator=g)[:n_test]
        xte, yte = [xte[int(i)] for i in sel], yte[sel]
    return Task(name, xtr, ytr, xte, yte)
