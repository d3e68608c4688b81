"""Kernel regression, closed-form GD predictions and the sklearn estimators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.svm import SVC

from rntk_empirical.analytic import analytic_ntk
from rntk_empirical.architecture import Architecture
from rntk_empirical.kernel_machines import (
    RecurrentKernelRidge,
    RecurrentKernelSVC,
    gradient_descent_mse,
    kernel_regression,
    precomputed_split,
    recurrent_kernel,
)

F64 = torch.float64


def _psd(n: int, rank: int | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, rank or n, generator=g, dtype=F64)
    return A @ A.T / (rank or n)


def test_kernel_regression_interpolates_and_ridge():
    K = _psd(8)
    y = torch.randn(8, 2, dtype=F64)
    assert torch.allclose(kernel_regression(K, y), y, atol=1e-8)
    pred = kernel_regression(K, y, ridge=0.5)
    assert torch.allclose(pred, K @ torch.linalg.solve(K + 0.5 * torch.eye(8, dtype=F64), y))
    Kx = torch.randn(3, 8, dtype=F64)
    assert kernel_regression(K, y[:, 0], Kx).shape == (3,)
    out = kernel_regression(K.numpy(), y.numpy())
    assert isinstance(out, np.ndarray)
    with pytest.raises(ValueError):
        kernel_regression(K, y[:5])
    with pytest.raises(ValueError):
        kernel_regression(K, y, ridge=-1.0)


def test_kernel_regression_solves_in_the_dtype_asked():
    """float32: the same solve in single precision (Cholesky with a ridge, the eigenvalue
    cutoff at ridge 0): its result is the float32 solve, and within float32 error of float64.
    Two float32 solves of one system differ by up to ~cond(A) eps32 (relative), so that is the
    tolerance; the inputs are seeded (the global generator's state depends on test order)."""
    g = torch.Generator().manual_seed(4)
    K = _psd(10, seed=3)
    Kx = torch.randn(4, 10, generator=g, dtype=F64)
    y = torch.randn(10, 3, generator=g, dtype=F64)
    eps32 = torch.finfo(torch.float32).eps
    for ridge in (0.0, 1e-2):
        p64 = kernel_regression(K, y, Kx, ridge)
        p32 = kernel_regression(K, y, Kx, ridge, dtype=torch.float32)
        assert p64.dtype == F64 and p32.dtype == torch.float32
        A = K.float() + ridge * torch.eye(10, dtype=torch.float32)
        ref = Kx.float() @ torch.linalg.solve(A, y.float())
        cond = float(torch.linalg.cond(A.double()))
        assert float((p32 - ref).norm() / ref.norm()) <= 10 * cond * eps32
        err32 = float((p32.double() - p64).norm() / p64.norm())
        assert 1e-12 < err32 < 1e-3  # single precision, not float64 relabelled


def test_gd_matches_explicit_iteration():
    n, eta = 10, 0.7
    K = _psd(n, seed=1)
    Kx = torch.randn(4, n, dtype=F64)
    y = torch.randn(n, dtype=F64)
    f0, ft0 = torch.randn(n, dtype=F64), torch.randn(4, dtype=F64)
    steps = np.array([0, 1, 5, 37])
    pred = gradient_descent_mse(K, y, eta, steps, Kx, f0, ft0)
    # linearized model: f = f0 + J w, f* = f*0 + J* w with Theta = J J^T, Theta* = J* J^T
    J = torch.linalg.cholesky(K + 1e-12 * torch.eye(n, dtype=F64))
    Jx = torch.linalg.solve_triangular(J, Kx.T, upper=False).T
    w = torch.zeros(n, dtype=F64)
    got_train, got_test = [], []
    for k in range(steps.max() + 1):
        if k in steps:
            got_train.append(f0 + J @ w)
            got_test.append(ft0 + Jx @ w)
        w = w - eta * J.T @ (f0 + J @ w - y) / n
    assert torch.allclose(pred.train, torch.stack(got_train), atol=1e-9)
    assert torch.allclose(pred.test, torch.stack(got_test), atol=1e-9)
    single = gradient_descent_mse(K, y, eta, 5, Kx, f0, ft0)
    assert torch.allclose(single.train, got_train[2], atol=1e-9)


def test_gd_limits_and_null_space():
    n = 6
    K = _psd(n, rank=3, seed=2)  # singular: 3 null directions
    y = torch.randn(n, 2, dtype=F64)
    Kx = torch.randn(2, n, dtype=F64) @ K  # test rows in the row space of K
    pred = gradient_descent_mse(K, y, 1.0, [10**7], Kx, continuous=True)
    assert torch.isfinite(pred.train).all() and torch.isfinite(pred.test).all()
    # t -> infinity: kernel regression (minimum-norm interpolant) on test points
    assert torch.allclose(pred.test[0], kernel_regression(K, y, Kx), atol=1e-6)
    # gradient flow = the small-step limit of discrete GD
    flow = gradient_descent_mse(K, y, 1.0, 3.0, Kx, continuous=True)
    disc = gradient_descent_mse(K, y, 1e-3, 3000, Kx)
    assert torch.allclose(flow.train, disc.train, atol=1e-3)
    assert torch.allclose(flow.test, disc.test, atol=1e-3)
    with pytest.raises(ValueError):
        gradient_descent_mse(K, y, 1.0, 2.5)  # non-integer discrete steps
    with pytest.raises(ValueError):
        gradient_descent_mse(K, y, -1.0, 2)


def _toy_sequences(n: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    X, y = [], []
    for i in range(n):
        T = int(rng.integers(3, 7))
        label = i % 2
        t = np.linspace(0, 1, T)[:, None]
        X.append(np.sin(2 * np.pi * t * (1 + label)) + 0.3 * rng.standard_normal((T, 1)))
        y.append(label)
    return X, np.array(y)


def test_sklearn_estimators_and_precomputed_grid_search():
    X, y = _toy_sequences()
    arch = Architecture(readout="avg")
    clf = RecurrentKernelSVC(arch, kernel="ntk", C=10.0).fit(X[:20], y[:20])
    acc = (clf.predict(X[20:]) == y[20:]).mean()
    assert acc >= 0.8
    scores = cross_val_score(RecurrentKernelSVC(arch, kernel="nngp"), X, y, cv=3)
    assert scores.mean() >= 0.7
    reg = RecurrentKernelRidge(arch, alpha=0.1).fit(X[:20], y[:20].astype(float))
    assert reg.predict(X[20:]).shape == (10,)
    # any precomputed kernel with sklearn: one RNTK for all data, then slicing / grid search
    K = recurrent_kernel(arch, X)
    assert np.allclose(K, analytic_ntk(arch, X).numpy())
    gs = GridSearchCV(SVC(kernel="precomputed"), {"C": [0.1, 1.0, 10.0]}, cv=3).fit(K, y)
    assert gs.best_score_ >= 0.7
    k_tr, k_te = precomputed_split(K, np.arange(20), np.arange(20, 30))
    acc2 = (SVC(kernel="precomputed", C=10.0).fit(k_tr, y[:20]).predict(k_te) == y[20:]).mean()
    assert acc2 == pytest.approx(acc)
    with pytest.raises(ValueError):
        RecurrentKernelSVC(arch, kernel="rbf").fit(X, y)
