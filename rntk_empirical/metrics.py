r"""Distances between a finite-width kernel and its infinite-width limit.

All functions take two kernel matrices of the same shape ``(N1, N2)`` (torch tensors or
numpy arrays), an estimate ``A`` (e.g. the empirical NTK Theta_hat) and a reference ``B``
(e.g. the analytic Theta), and return a Python float. They compute in float64.

    relative_frobenius(A, B) = ||A - B||_F / ||B||_F
    relative_operator(A, B)  = ||A - B||_2 / ||B||_2             (largest singular value)
    relative_max_entry(A, B) = max_ij |A_ij - B_ij| / max_ij |B_ij|
    kernel_distance(A, B)    = 1 - <A, B>_F / (||A||_F ||B||_F)  (in [0, 2]; scale-free)
    relative_drift(K_t, K_0) = ||K_t - K_0||_F / ||K_0||_F        (kernel motion in training)

For a set of S independent networks with kernels A_1..A_S (``(S, N1, N2)``):

    mean_kernel_error(As, B)  = relative_frobenius(mean_s A_s, B)
    debiased_bias(As, B)      = sqrt(max(0, ||Abar - B||_F^2 - sum_s ||A_s - Abar||_F^2
                                               / (S (S - 1)))) / ||B||_F

The second subtracts the unbiased estimate of the fluctuation part of E||Abar - B||_F^2
(tr Cov(A) / S), leaving an estimate of ||E[A] - B||_F / ||B||_F, the relative bias (SPEC
section 4: of order 1/n, while the fluctuations are of order n^{-1/2}).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray

# The per-network error metrics written into every record and fitted by the report.
ERROR_METRICS: dict[str, Callable[[ArrayLike, ArrayLike], float]] = {}


def _as64(x: ArrayLike) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.is_complex():
        raise TypeError("kernel matrices must be real")
    return t.detach().to("cpu", torch.float64)


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as64(a), _as64(b)
    if a.shape != b.shape:
        raise ValueError(f"kernel shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() != 2:
        raise ValueError(f"expected (N1, N2) kernel matrices, got shape {tuple(a.shape)}")
    return a, b


def _ratio(num: float, den: float) -> float:
    """num / den; a relative error against a zero reference is undefined (NaN) when the
    estimate is zero too, infinite otherwise."""
    if den == 0.0:
        return math.nan if num == 0.0 else math.inf
    return num / den


def relative_frobenius(a: ArrayLike, b: ArrayLike) -> float:
    """||A - B||_F / ||B||_F."""
    a, b = _pair(a, b)
    return _ratio(float(torch.linalg.norm(a - b)), float(torch.linalg.norm(b)))


def relative_operator(a: ArrayLike, b: ArrayLike) -> float:
    """||A - B||_2 / ||B||_2 with ||.||_2 the largest singular value."""
    a, b = _pair(a, b)
    op = torch.linalg.matrix_norm
    return _ratio(float(op(a - b, ord=2)), float(op(b, ord=2)))


def relative_max_entry(a: ArrayLike, b: ArrayLike) -> float:
    """max_ij |A_ij - B_ij| / max_ij |B_ij|."""
    a, b = _pair(a, b)
    return _ratio(float((a - b).abs().max()), float(b.abs().max()))


def kernel_distance(a: ArrayLike, b: ArrayLike) -> float:
    """1 - <A, B>_F / (||A||_F ||B||_F): 0 for proportional kernels, insensitive to scale."""
    a, b = _pair(a, b)
    den = float(torch.linalg.norm(a)) * float(torch.linalg.norm(b))
    if den == 0.0:
        return math.nan
    return 1.0 - float((a * b).sum()) / den


def relative_drift(k_t: ArrayLike, k_0: ArrayLike) -> float:
    """||K_t - K_0||_F / ||K_0||_F: how far a kernel moved from its value at initialization."""
    return relative_frobenius(k_t, k_0)


ERROR_METRICS.update(
    rel_fro=relative_frobenius,
    rel_op=relative_operator,
    rel_max=relative_max_entry,
    distance=kernel_distance,
)


def kernel_errors(a: ArrayLike, b: ArrayLike) -> dict[str, float]:
    """Every metric of :data:`ERROR_METRICS` of estimate ``a`` against reference ``b``."""
    return {name: fn(a, b) for name, fn in ERROR_METRICS.items()}


def _stack(kernels: ArrayLike) -> torch.Tensor:
    k = _as64(kernels)
    if k.dim() != 3 or k.shape[0] < 1:
        raise ValueError(f"expected a (S, N1, N2) stack of kernels, got shape {tuple(k.shape)}")
    return k


def mean_kernel_error(kernels: ArrayLike, b: ArrayLike) -> float:
    """relative_frobenius of the seed-averaged kernel: ``kernels`` is ``(S, N1, N2)``."""
    return relative_frobenius(_stack(kernels).mean(0), b)


def debiased_bias(kernels: ArrayLike, b: ArrayLike) -> float:
    """Estimate of ||E[A] - B||_F / ||B||_F from S >= 2 draws (see the module docstring).

    The squared estimate is unbiased; it is clipped at 0 before the square root, so for a
    bias small against the fluctuations / sqrt(S) the result is 0 or noisy.
    """
    k = _stack(kernels)
    s = k.shape[0]
    if s < 2:
        raise ValueError("debiased_bias needs at least 2 kernels")
    _, b = _pair(k[0], b)
    mean = k.mean(0)
    sq = float(((mean - b) ** 2).sum()) - float(((k - mean) ** 2).sum()) / (s * (s - 1))
    return _ratio(math.sqrt(max(sq, 0.0)), float(torch.linalg.norm(b)))


def kernel_summary(k: ArrayLike) -> dict[str, float | list[int]]:
    """Summary statistics of one kernel matrix (for records).

    Keys: shape, frobenius norm, trace, mean diagonal and off-diagonal entries, max |entry|,
    and for square symmetric matrices the extreme eigenvalues and the condition number.
    """
    k = _as64(k)
    out: dict[str, float | list[int]] = {
        "shape": list(k.shape),
        "frobenius": float(torch.linalg.norm(k)),
        "max_abs": float(k.abs().max()),
        "mean": float(k.mean()),
    }
    if k.dim() == 2 and k.shape[0] == k.shape[1]:
        n = k.shape[0]
        diag = torch.diagonal(k)
        out["trace"] = float(diag.sum())
        out["mean_diag"] = float(diag.mean())
        out["mean_offdiag"] = float((k.sum() - diag.sum()) / (n * n - n)) if n > 1 else math.nan
        sym = 0.5 * (k + k.T)
        out["asymmetry"] = _ratio(float(torch.linalg.norm(k - sym)), float(torch.linalg.norm(k)))
        eig = torch.linalg.eigvalsh(sym)
        out["eig_min"], out["eig_max"] = float(eig[0]), float(eig[-1])
        out["condition"] = _ratio(float(eig[-1].abs()), float(eig[0].abs()))
    return out
