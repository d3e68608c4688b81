r"""Kernel machines on (recurrent) NTK / NNGP kernels.

* :func:`kernel_regression`: (ridge) kernel regression, f(X*) = K(X*, X) (K + ridge I)^{-1} y.
* :func:`gradient_descent_mse`: closed-form predictions of a model trained by full-batch
  gradient descent on L = (1/(2N)) sum_i ||f(x_i) - y_i||^2 with its NTK Theta held fixed
  (the linearized / infinite-width dynamics, as ``neural_tangents.predict.gradient_descent_mse``).
  With Theta = V diag(lambda) V^T and x = eta lambda / N,

      train:  f_k = y + V diag((1 - x)^k) V^T (f_0 - y)
      test:   f*_k = f*_0 + Theta(X*, X) V diag((1 - (1 - x)^k) / lambda) V^T (y - f_0)

  (continuous time t: (1 - x)^k -> exp(-x t)). The factor (1 - (1 - x)^k) / lambda tends to
  k eta / N as lambda -> 0 and is evaluated with expm1/log1p, so null directions of Theta are
  handled exactly (they are never learned).
* scikit-learn estimators that take sequences and an :class:`Architecture`
  (:class:`RecurrentKernelSVC`, :class:`RecurrentKernelRidge`) and delegate to
  ``SVC(kernel="precomputed")`` / ``KernelRidge(kernel="precomputed")``;
  :func:`recurrent_kernel` and :func:`precomputed_split` for any precomputed kernel matrix
  (sklearn's own ``GridSearchCV`` / ``cross_val_score`` slice precomputed kernels correctly).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.kernel_ridge import KernelRidge
from sklearn.svm import SVC

from rntk_empirical.analytic import analytic_nngp, analytic_ntk
from rntk_empirical.architecture import Architecture

KERNELS = ("ntk", "nngp")


def _as_tensor(x, name: str, dtype=torch.float64, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.to(dtype=dtype, device=device)
    else:
        t = torch.as_tensor(np.asarray(x), dtype=dtype, device=device)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return t


def _check_square(k: torch.Tensor, name: str) -> int:
    if k.dim() != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) matrix, got shape {tuple(k.shape)}")
    return k.shape[0]


def _check_targets(y: torch.Tensor, n: int) -> torch.Tensor:
    if y.dim() not in (1, 2) or y.shape[0] != n:
        raise ValueError(f"y_train must be (N,) or (N, k) with N = {n}, got {tuple(y.shape)}")
    return y


def _check_cross(k: torch.Tensor | None, n: int, name: str) -> None:
    if k is not None and (k.dim() != 2 or k.shape[1] != n):
        raise ValueError(f"{name} must be (N_test, N_train = {n}), got {tuple(k.shape)}")


def _restore(t: torch.Tensor, like) -> torch.Tensor | np.ndarray:
    """Return numpy if the reference input was not a tensor."""
    return t if isinstance(like, torch.Tensor) else t.cpu().numpy()


def kernel_regression(
    k_train_train,
    y_train,
    k_test_train=None,
    ridge: float = 0.0,
    dtype: torch.dtype = torch.float64,
):
    """Kernel (ridge) regression predictions, solved in ``dtype``.

    Args:
        k_train_train: ``(N, N)`` PSD kernel on the training inputs.
        y_train: ``(N,)`` or ``(N, k)`` targets.
        k_test_train: ``(N*, N)`` kernel between test and training inputs; None predicts on
            the training inputs.
        ridge: lambda >= 0 added to the diagonal. With ridge = 0 a singular kernel is
            pseudo-inverted (eigenvalues <= N eps lambda_max dropped): the minimum-norm
            interpolant, which is also the t -> infinity limit of :func:`gradient_descent_mse`.
        dtype: the precision of the solve (Cholesky, or the eigendecomposition with the
            cutoff N eps(dtype) lambda_max when Cholesky fails or ridge is 0); float64 by
            default, float32 to measure what single precision loses.

    Returns:
        ``(N*, ...)`` (or ``(N, ...)``) predictions in ``dtype``, same container type as
        ``k_train_train``.
    """
    if ridge < 0 or not np.isfinite(ridge):
        raise ValueError(f"ridge={ridge!r} is not valid; expected a finite number >= 0")
    K = _as_tensor(k_train_train, "k_train_train", dtype)
    n = _check_square(K, "k_train_train")
    y = _check_targets(_as_tensor(y_train, "y_train", dtype, K.device), n)
    Kx = None if k_test_train is None else _as_tensor(k_test_train, "k_test_train", dtype, K.device)
    _check_cross(Kx, n, "k_test_train")
    A = 0.5 * (K + K.T) + ridge * torch.eye(n, dtype=K.dtype, device=K.device)
    L, info = torch.linalg.cholesky_ex(A)
    if ridge > 0 and int(info) == 0:
        alpha = torch.cholesky_solve(y.reshape(n, -1), L).reshape(y.shape)
    else:
        lam, V = torch.linalg.eigh(A)
        keep = lam > n * torch.finfo(A.dtype).eps * lam.abs().max()
        inv = torch.where(keep, 1.0 / torch.where(keep, lam, 1.0), 0.0)
        alpha = (V @ (inv[:, None] * (V.T @ y.reshape(n, -1)))).reshape(y.shape)
    pred = (K if Kx is None else Kx) @ alpha
    return _restore(pred, k_train_train)


class GDPredictions(NamedTuple):
    """Predictions of :func:`gradient_descent_mse`: ``train`` and ``test`` (None if no
    ``k_test_train``), each ``(S, N, ...)`` for a 1-D ``steps`` array or ``(N, ...)`` for one."""

    train: torch.Tensor | np.ndarray
    test: torch.Tensor | np.ndarray | None


def gradient_descent_mse(
    k_train_train,
    y_train,
    learning_rate: float,
    steps,
    k_test_train=None,
    fx_train_0=None,
    fx_test_0=None,
    continuous: bool = False,
) -> GDPredictions:
    """Closed-form GD (or gradient-flow) predictions with a fixed NTK (module docstring).

    Args:
        k_train_train: ``(N, N)`` NTK Theta on the training inputs.
        y_train: ``(N,)`` or ``(N, k)`` targets.
        learning_rate: eta > 0 (of the loss (1/(2N)) sum ||f - y||^2).
        steps: an int / float (a time for ``continuous``) or a 1-D array of them.
        k_test_train: ``(N*, N)`` Theta(X*, X), or None.
        fx_train_0, fx_test_0: outputs at initialization (default 0), shaped like the targets.
        continuous: gradient flow, time ``steps`` in units of eta.

    Returns:
        :class:`GDPredictions` (train, test).
    """
    if not np.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(f"learning_rate={learning_rate!r} is not valid; expected > 0")
    K = _as_tensor(k_train_train, "k_train_train")
    n = _check_square(K, "k_train_train")
    dev = K.device
    y = _check_targets(_as_tensor(y_train, "y_train", device=dev), n)
    Kx = None if k_test_train is None else _as_tensor(k_test_train, "k_test_train", device=dev)
    _check_cross(Kx, n, "k_test_train")
    f0 = (
        torch.zeros_like(y)
        if fx_train_0 is None
        else _as_tensor(fx_train_0, "fx_train_0", device=dev)
    )
    if f0.shape != y.shape:
        raise ValueError(f"fx_train_0 has shape {tuple(f0.shape)}, expected {tuple(y.shape)}")
    out_shape = (Kx.shape[0],) + tuple(y.shape[1:]) if Kx is not None else None
    if Kx is not None:
        ft0 = (
            torch.zeros(out_shape, dtype=K.dtype, device=dev)
            if fx_test_0 is None
            else (_as_tensor(fx_test_0, "fx_test_0", device=dev))
        )
        if ft0.shape != out_shape:
            raise ValueError(f"fx_test_0 has shape {tuple(ft0.shape)}, expected {out_shape}")
    scalar = np.ndim(steps) == 0
    s = torch.as_tensor(
        np.atleast_1d(np.asarray(steps, dtype=np.float64)), dtype=K.dtype, device=dev
    )
    if s.dim() != 1 or not torch.isfinite(s).all() or (s < 0).any():
        raise ValueError("steps must be a non-negative number or a 1-D array of them")
    if not continuous and not torch.equal(s, s.round()):
        raise ValueError("discrete gradient descent needs integer step counts")

    lam, V = torch.linalg.eigh(0.5 * (K + K.T))
    x = learning_rate * lam / n  # (N,) per-eigendirection rate
    xs, ss = x[None, :], s[:, None]
    if continuous:
        decay = torch.exp(-xs * ss)
        one_minus = -torch.expm1(-xs * ss)
    else:
        stable = (xs > -1) & (xs < 1)
        logr = torch.log1p(-torch.where(stable, xs, 0.0))
        decay = torch.where(stable, torch.exp(ss * logr), torch.pow(1.0 - xs, ss))
        one_minus = torch.where(stable, -torch.expm1(ss * logr), 1.0 - decay)
    tiny = lam.abs() <= n * torch.finfo(K.dtype).eps * lam.abs().max()
    # (1 - decay) / lambda, with its lambda -> 0 limit s eta / N
    gain = torch.where(tiny, ss * (learning_rate / n), one_minus / torch.where(tiny, 1.0, lam))

    r0 = (f0 - y).reshape(n, -1)
    c0 = V.T @ r0  # (N, k) residual in the eigenbasis
    train = y.reshape(n, -1)[None] + torch.einsum("ij,sj,jk->sik", V, decay, c0)
    train = train.reshape((s.shape[0],) + tuple(y.shape))
    test = None
    if Kx is not None:
        proj = Kx @ V  # (N*, N)
        test = ft0.reshape(Kx.shape[0], -1)[None] - torch.einsum("ij,sj,jk->sik", proj, gain, c0)
        test = test.reshape((s.shape[0],) + out_shape)
    if scalar:
        train = train[0]
        test = None if test is None else test[0]
    return GDPredictions(
        _restore(train, k_train_train), None if test is None else _restore(test, k_train_train)
    )


# ---------------------------------------------------------------------------- sklearn
def recurrent_kernel(arch: Architecture, X1, X2=None, kernel: str = "ntk", **kwargs) -> np.ndarray:
    """The analytic ``ntk`` or ``nngp`` kernel between sequence batches as a numpy array."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is not valid; allowed values: {', '.join(KERNELS)}")
    fn = analytic_ntk if kernel == "ntk" else analytic_nngp
    return (
        fn(arch, _sequence_list(X1), None if X2 is None else _sequence_list(X2), **kwargs)
        .detach()
        .cpu()
        .numpy()
    )


def precomputed_split(K, train_idx, test_idx=None):
    """Slice a full precomputed kernel matrix for a train/test split.

    Returns ``K[train][:, train]`` and, if ``test_idx`` is given, ``K[test][:, train]`` -- the
    matrices ``fit`` and ``predict`` of an sklearn estimator with ``kernel="precomputed"`` take.
    """
    K = np.asarray(K)
    tr = np.asarray(train_idx)
    k_tt = K[np.ix_(tr, tr)]
    if test_idx is None:
        return k_tt
    return k_tt, K[np.ix_(np.asarray(test_idx), tr)]


def _sequence_list(X):
    """Sequences as accepted by the analytic kernels: keep tensors/arrays/lists as given."""
    if isinstance(X, (torch.Tensor, np.ndarray)):
        return X
    return list(X)


class _RecurrentKernelMixin:
    def _kernel(self, X1, X2=None) -> np.ndarray:
        if not isinstance(self.arch, Architecture):
            raise TypeError(f"arch must be an Architecture, got {type(self.arch).__name__}")
        return recurrent_kernel(self.arch, X1, X2, kernel=self.kernel)

    def _fit_kernel(self, X) -> np.ndarray:
        self.X_fit_ = _sequence_list(X)
        return self._kernel(self.X_fit_)

    def _cross_kernel(self, X) -> np.ndarray:
        if not hasattr(self, "X_fit_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit first")
        return self._kernel(X, self.X_fit_)


class RecurrentKernelSVC(_RecurrentKernelMixin, ClassifierMixin, BaseEstimator):
    """SVC on the analytic RNTK / NNGP of ``arch``; X is a list of ``(T_i, m)`` sequences or an
    ``(N, T, m)`` array. Works with sklearn's ``GridSearchCV``, ``cross_val_score``, ``clone``.
    """

    def __init__(self, arch: Architecture | None = None, kernel: str = "ntk", C: float = 1.0):
        self.arch = arch
        self.kernel = kernel
        self.C = C

    def fit(self, X, y):
        self.svc_ = SVC(kernel="precomputed", C=self.C).fit(self._fit_kernel(X), np.asarray(y))
        self.classes_ = self.svc_.classes_
        return self

    def decision_function(self, X):
        return self.svc_.decision_function(self._cross_kernel(X))

    def predict(self, X):
        return self.svc_.predict(self._cross_kernel(X))


class RecurrentKernelRidge(_RecurrentKernelMixin, RegressorMixin, BaseEstimator):
    """Kernel ridge regression on the analytic RNTK / NNGP of ``arch`` (see the SVC)."""

    def __init__(self, arch: Architecture | None = None, kernel: str = "ntk", alpha: float = 1.0):
        self.arch = arch
        self.kernel = kernel
        self.alpha = alpha

    def fit(self, X, y):
        self.krr_ = KernelRidge(kernel="precomputed", alpha=self.alpha)
        self.krr_.fit(self._fit_kernel(X), np.asarray(y))
        return self

    def predict(self, X):
        return self.krr_.predict(self._cross_kernel(X))
