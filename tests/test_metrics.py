"""Kernel error metrics on matrices whose errors are known in closed form."""

import math

import numpy as np
import pytest
import torch

from rntk_empirical.metrics import (
    debiased_bias,
    kernel_distance,
    kernel_errors,
    kernel_summary,
    mean_kernel_error,
    relative_drift,
    relative_frobenius,
    relative_max_entry,
    relative_operator,
)

B = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # ||B||_F = 5, ||B||_2 = 4, max |B_ij| = 4
E = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # ||E||_F = sqrt(2), ||E||_2 = 1, max |E_ij| = 1


def test_relative_errors_known_matrices():
    A = B + E
    assert relative_frobenius(A, B) == pytest.approx(math.sqrt(2) / 5, rel=1e-14)
    assert relative_operator(A, B) == pytest.approx(1 / 4, rel=1e-14)
    assert relative_max_entry(A, B) == pytest.approx(1 / 4, rel=1e-14)
    assert relative_drift(A, B) == relative_frobenius(A, B)
    # the operator norm is not the Frobenius norm: a rank-one error of norm 3 in one entry
    F = torch.tensor([[0.0, 0.0], [0.0, 3.0]])
    assert relative_operator(B + F, B) == pytest.approx(3 / 4, rel=1e-14)
    assert relative_frobenius(B + F, B) == pytest.approx(3 / 5, rel=1e-14)


def test_numpy_and_torch_agree_and_zero_error():
    A = B + 0.1 * E
    assert kernel_errors(A.numpy(), B.numpy()) == kernel_errors(A, B)
    assert relative_frobenius(B, B) == 0.0
    assert math.isnan(relative_frobenius(torch.zeros(2, 2), torch.zeros(2, 2)))  # undefined
    assert relative_frobenius(E, torch.zeros(2, 2)) == math.inf


def test_kernel_distance():
    assert kernel_distance(2.5 * B, B) == pytest.approx(0.0, abs=1e-15)  # scale-free
    assert (
        kernel_distance(torch.diag(torch.tensor([1.0, 0.0])), torch.diag(torch.tensor([0.0, 1.0])))
        == 1.0
    )
    assert kernel_distance(-B, B) == pytest.approx(2.0)
    # cos = <B+E, B>/(|B+E||B|) = 25 / (sqrt(27) * 5)
    assert kernel_distance(B + E, B) == pytest.approx(1 - 25 / (math.sqrt(27) * 5), rel=1e-12)


def test_shape_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        relative_frobenius(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="N1, N2"):
        relative_frobenius(torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="S, N1, N2"):
        mean_kernel_error(torch.zeros(2, 2), B)


def test_mean_kernel_and_debiased_bias_exact():
    # two draws B + D +- E: mean = B + D, sum_s ||K_s - mean||^2 / (S (S-1)) = ||E||^2
    D = torch.tensor([[0.0, 2.0], [2.0, 1.0]])  # ||D||^2 = 9
    ks = torch.stack([B + D + E, B + D - E])
    assert mean_kernel_error(ks, B) == pytest.approx(3 / 5, rel=1e-14)
    assert debiased_bias(ks, B) == pytest.approx(math.sqrt(9 - 2) / 5, rel=1e-14)
    # fluctuations larger than the bias: the squared estimate is negative and clipped
    assert debiased_bias(torch.stack([B + 0.1 * D + E, B + 0.1 * D - E]), B) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        debiased_bias(ks[:1], B)


def test_debiased_bias_recovers_bias_under_noise():
    g = torch.Generator().manual_seed(0)
    n, S = 6, 4000
    ref = torch.eye(n) + 0.3
    bias = 0.05 * torch.randn(n, n, generator=g)
    bias = bias + bias.T
    noise = torch.randn(S, n, n, generator=g)
    ks = ref + bias + 0.5 * (noise + noise.transpose(1, 2))
    truth = float(bias.norm() / ref.norm())
    # the error of the mean still carries the fluctuation part ~ 1/sqrt(S)
    assert mean_kernel_error(ks, ref) > truth
    assert debiased_bias(ks, ref) == pytest.approx(truth, rel=0.1)


def test_kernel_summary():
    k = np.array([[2.0, 1.0], [1.0, 2.0]])  # eigenvalues 1 and 3
    s = kernel_summary(k)
    assert s["shape"] == [2, 2]
    assert s["trace"] == 4.0 and s["mean_diag"] == 2.0 and s["mean_offdiag"] == 1.0
    assert s["eig_min"] == pytest.approx(1.0) and s["eig_max"] == pytest.approx(3.0)
    assert s["condition"] == pytest.approx(3.0)
    assert s["frobenius"] == pytest.approx(math.sqrt(10)) and s["asymmetry"] == 0.0
