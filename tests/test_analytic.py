"""The analytic RNTK / NNGP: symmetry, PSD, batching invariances, errors, extreme inputs."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import random_sequences, rel_err

from rntk_empirical.analytic import (
    analytic_kernel_bank,
    analytic_kernels,
    analytic_nngp,
    analytic_ntk,
)
from rntk_empirical.architecture import Architecture

F64 = torch.float64


def _mixed(seed: int = 0, lengths=(3, 5, 5, 2, 4, 1), m: int = 2):
    xs = random_sequences(lengths, m, seed=seed)
    if len(xs) > 2:
        xs[2] = xs[1].clone()  # a duplicate: x = x' for per_input
    return xs


OPTIONS = [
    {},
    {"readout": "avg"},
    {"readout": "per_step"},
    {"bidirectional": True},
    {"h0": "shared", "sigma_h": 1.0},
    {"h0": "per_input", "sigma_h": 1.0},
    {"depth": 2},
    {"depth": 2, "readout": "avg", "h0": "per_input", "sigma_h": 0.7},
    {"nonlinearity": "erf"},
    {"nonlinearity": "gelu", "sigma_w": 1.3},
    {"nonlinearity": "tanh", "sigma_w": 1.2},
    {"nonlinearity": "identity", "sigma_w": 0.9},
    {"sigma_b": 0.0, "depth": 3, "readout": "per_step", "bidirectional": True},
]


def _arch(opt):
    return Architecture(**opt)


@pytest.mark.parametrize(
    "opt", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default"
)
def test_symmetric_psd_and_consistent(opt):
    arch = _arch(opt)
    xs = _mixed()
    theta, nngp = analytic_kernels(arch, xs)
    for K in (theta, nngp):
        assert K.shape == (6, 6) and K.dtype == F64
        assert torch.equal(K, K.T)
        ev = torch.linalg.eigvalsh(K)
        assert ev.min() >= -1e-10 * ev.max()
    # x2 = None equals x2 = x1 (relu's V_dphi is sqrt-sensitive to rho at 1: ~1e-8; the
    # tanh quadrature is not exactly symmetric in (a, b): ~1e-5 at these variances)
    t2, k2 = analytic_kernels(arch, xs, xs)
    tol = 1e-4 if arch.nonlinearity == "tanh" else 1e-6
    assert torch.allclose(t2, theta, rtol=tol, atol=0)
    assert torch.allclose(k2, nngp, rtol=tol, atol=0)
    # NTK >= NNGP in the PSD order (the NTK adds PSD gradient terms to the readout term)
    ev = torch.linalg.eigvalsh(theta - nngp)
    assert ev.min() >= -1e-10 * ev.abs().max()
    # the two wrappers return the same matrices
    assert torch.allclose(analytic_ntk(arch, xs), theta, rtol=1e-12)
    assert torch.allclose(analytic_nngp(arch, xs), nngp, rtol=1e-12)


@pytest.mark.parametrize("opt", OPTIONS[:8], ids=str)
def test_mixed_batch_equals_pairwise(opt):
    """One padded batch gives what each pair gives alone (rows don't depend on the batch)."""
    arch = _arch(opt)
    xs = _mixed()
    theta, nngp = analytic_kernels(arch, xs)
    for i in range(len(xs)):
        for j in range(len(xs)):
            t, k = analytic_kernels(arch, [xs[i]], [xs[j]])
            assert float(t) == pytest.approx(float(theta[i, j]), rel=1e-7)
            assert float(k) == pytest.approx(float(nngp[i, j]), rel=1e-10)
    # a row against a different batch, padded to a different length
    others = _mixed(seed=5, lengths=(7, 2, 6))
    row, _ = analytic_kernels(arch, [xs[3]], others + [xs[0]])
    alone, _ = analytic_kernels(arch, [xs[3]], [xs[0]])
    assert float(row[0, -1]) == pytest.approx(float(alone), rel=1e-7)


def test_equal_length_formulas_by_hand():
    """One layer, T = 2, identity phi: the SPEC recursion written out by hand."""
    sw, su, sb, sv = 0.7, 1.3, 0.4, 1.1
    arch = Architecture(
        nonlinearity="identity", sigma_w=sw, sigma_u=su, sigma_b=sb, sigma_v=sv, readout="last"
    )
    x = torch.tensor([[[1.0, -2.0], [0.5, 0.3]], [[0.2, 0.1], [-1.0, 2.0]]], dtype=F64)
    k0 = lambda p, q: float(x[0, p] @ x[1, q]) / 2  # noqa: E731
    S1 = su**2 * k0(0, 0) + sb**2
    Q1 = S1
    S2 = sw**2 * S1 + su**2 * k0(1, 1) + sb**2
    Q2 = S2 + sw**2 * Q1
    theta, nngp = analytic_kernels(arch, x[:1], x[1:])
    assert float(nngp) == pytest.approx(sv**2 * S2, rel=1e-14)
    assert float(theta) == pytest.approx(sv**2 * (S2 + Q2), rel=1e-14)


def test_per_step_and_avg_weights_identity():
    """Identity phi: per_step sums the end-aligned cells, avg every cell (checked by last)."""
    arch = Architecture(nonlinearity="identity", sigma_w=0.8, sigma_b=0.3)
    xs = [torch.randn(3, 2, dtype=F64), torch.randn(2, 2, dtype=F64)]
    # NNGP(per_step) = (1/sqrt(T T')) sum_s NNGP_last(prefixes ending s steps early)
    k_ps = analytic_nngp(arch.replace(readout="per_step"), [xs[0]], [xs[1]])
    total = sum(float(analytic_nngp(arch, [xs[0][: 3 - s]], [xs[1][: 2 - s]])) for s in range(2))
    assert float(k_ps) == pytest.approx(total / math.sqrt(6), rel=1e-12)
    k_avg = analytic_nngp(arch.replace(readout="avg"), [xs[0]], [xs[1]])
    total = sum(
        float(analytic_nngp(arch, [xs[0][:t]], [xs[1][:u]]))
        for t in range(1, 4)
        for u in range(1, 3)
    )
    assert float(k_avg) == pytest.approx(total / 6, rel=1e-12)


def test_bidirectional_is_sum_of_directions():
    xs = _mixed()
    arch = Architecture(depth=2)
    fwd, _ = analytic_kernels(arch, xs)
    bwd, _ = analytic_kernels(arch, [x.flip(0) for x in xs])
    both, _ = analytic_kernels(arch.replace(bidirectional=True), xs)
    assert torch.allclose(both, fwd + bwd, rtol=1e-12)


def test_h0_modes():
    xs = _mixed()
    zero, _ = analytic_kernels(Architecture(), xs)
    shared, _ = analytic_kernels(Architecture(h0="shared", sigma_h=1.0), xs)
    per, _ = analytic_kernels(Architecture(h0="per_input", sigma_h=1.0), xs)
    # Variances carry s_h^2 in both random modes; the pair boundary K(0,0) = s_h^2 only for
    # pairs that start together (equal lengths) and, for per_input, are the same input.
    lengths = torch.tensor([len(x) for x in xs])
    same_len = lengths[:, None] == lengths[None, :]
    same = torch.eye(6, dtype=torch.bool)
    same[1, 2] = same[2, 1] = True  # the duplicate
    agree = ~same_len | same
    assert torch.allclose(per[agree], shared[agree], rtol=1e-6)
    differ = (per - shared).abs() > 1e-6 * shared.abs()
    assert torch.equal(differ, ~agree)
    assert not torch.allclose(zero, shared)


def test_block_sizes_and_float32():
    xs = _mixed()
    arch = Architecture(readout="per_step", depth=2)
    ref, _ = analytic_kernels(arch, xs)
    for bs in (1, 2, 4, 100):
        t, _ = analytic_kernels(arch, xs, block_size=bs)
        assert torch.allclose(t, ref, rtol=1e-7)
    t32, _ = analytic_kernels(arch, xs, dtype=torch.float32)
    assert t32.dtype == torch.float32
    assert torch.allclose(t32.double(), ref, rtol=1e-3)


def test_gradients_wrt_inputs():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 2, dtype=F64, requires_grad=True)
    y = torch.randn(2, 4, 2, dtype=F64)
    for opt in ({}, {"nonlinearity": "erf", "readout": "avg"}, {"nonlinearity": "tanh"}):
        arch = Architecture(**opt)
        theta = analytic_ntk(arch, x, y)
        assert theta.requires_grad
        (g,) = torch.autograd.grad(theta.sum(), x)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
        # finite-difference check of one coordinate
        eps = 1e-6
        xp, xm = x.detach().clone(), x.detach().clone()
        xp[1, 2, 0] += eps
        xm[1, 2, 0] -= eps
        # differentiable inputs: the same dual as the gradient's (tanh without grad takes the
        # smooth-dual series, whose 1e-9 contract is no basis for a difference at eps = 1e-6)
        xp.requires_grad_(True)
        xm.requires_grad_(True)
        diff = analytic_ntk(arch, xp, y).sum() - analytic_ntk(arch, xm, y).sum()
        fd = diff.detach() / (2 * eps)
        assert float(g[1, 2, 0]) == pytest.approx(fd.item(), rel=1e-5, abs=1e-8)
    # the diagonal of a symmetric relu kernel (rho = 1 exactly) differentiates finitely
    theta = analytic_ntk(Architecture(), x)
    (g,) = torch.autograd.grad(theta.diagonal().sum(), x)
    assert torch.isfinite(g).all()


def test_bad_inputs():
    arch = Architecture()
    with pytest.raises(ValueError, match="feature size"):
        analytic_ntk(arch, torch.randn(2, 3, 2, dtype=F64), torch.randn(2, 3, 4, dtype=F64))
    with pytest.raises(ValueError):
        analytic_ntk(arch, torch.randn(3, 2, dtype=F64))
    with pytest.raises(ValueError):
        analytic_ntk(arch, [])
    with pytest.raises(ValueError, match="NaN"):
        analytic_ntk(arch, torch.full((1, 2, 1), float("nan"), dtype=F64))
    with pytest.raises(ValueError):
        analytic_ntk(arch, torch.randn(2, 3, 1, dtype=F64), block_size=0)
    with pytest.raises(ValueError, match="standard"):
        analytic_ntk(arch.replace(parameterization="standard"), torch.randn(2, 3, 1))
    with pytest.raises(TypeError):
        analytic_ntk("relu", torch.randn(2, 3, 1))
    x = torch.randn(3, 4, 2, dtype=F64)
    k_std = analytic_nngp(arch.replace(parameterization="standard"), x)
    assert torch.allclose(k_std, analytic_nngp(arch, x))


def test_long_sequences_and_large_sigma_w():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1000, 1, generator=g, dtype=F64)
    for opt in (
        {},
        {"nonlinearity": "erf", "sigma_w": 1.5},
        {"nonlinearity": "identity", "sigma_w": 1.0},
    ):
        theta, nngp = analytic_kernels(Architecture(**opt), x)
        assert torch.isfinite(theta).all() and torch.isfinite(nngp).all()
    # relu with s_w = 3: variances grow like 4.5^t and overflow float64 near t = 470
    with pytest.raises(OverflowError, match="overflow"):
        analytic_kernels(Architecture(sigma_w=3.0), x)
    # erf with s_w = 4: bounded K, but s_w^2 V_dphi > 1 makes the NTK grow geometrically,
    # ~10^0.43 per step, so ~1e425 at T = 1000 (s_w = 3 reaches ~1e301: too close to call)
    with pytest.raises(OverflowError, match=r"NTK overflows.*s_w\^2 V_dphi > 1 \(exploding"):
        analytic_kernels(Architecture(nonlinearity="erf", sigma_w=4.0), x)
    theta, _ = analytic_kernels(Architecture(sigma_w=3.0), x[:, :100])
    assert torch.isfinite(theta).all()


def test_bank_compiled_equals_eager() -> None:
    """compile=True (torch.compile of the step, the torch backend) equals the eager path."""
    x = torch.rand(14, 6, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    arch = Architecture(depth=2, sigma_u=0.5, sigma_b=0.1)
    eager = analytic_kernel_bank(arch, x, block_size=5, backend="torch")
    compiled = analytic_kernel_bank(arch, x, block_size=5, compile=True, backend="torch")
    for key, (theta, nngp) in eager.items():
        # ReLU's V_dphi amplifies rounding near correlation 1 (docs/spec.md): 1e-6 relative
        assert torch.allclose(compiled[key][0], theta, rtol=1e-6, atol=0), key
        assert torch.allclose(compiled[key][1], nngp, rtol=1e-6, atol=0), key


def test_explicit_backends_agree_and_identical_states_are_exact():
    """backend="numba" and "torch" by name; the autograd path (inputs requiring grad) and the
    in-place path agree to round-off on every entry, the pairs of identical sequences
    included (correlation exactly 1 there in both, where ReLU's arccos is not smooth)."""
    x = random_sequences((5, 3, 5, 4), 2, seed=21)
    x[2] = x[0].clone()
    arch = Architecture(depth=2, readout="avg", sigma_w=1.1, sigma_b=0.3)
    ref_t, ref_k = analytic_kernels(arch, x, backend="torch")
    for backend in ("numba", "auto"):
        theta, nngp = analytic_kernels(arch, x, backend=backend)
        assert rel_err(theta, ref_t) < 1e-12 and rel_err(nngp, ref_k) < 1e-12, backend
    xg = [s.clone().requires_grad_(True) for s in x]
    grad_t, grad_k = analytic_kernels(arch, xg)
    assert grad_t.requires_grad
    assert (grad_t.detach() - ref_t).abs().max() < 1e-13 * ref_t.abs().max()
    assert (grad_k.detach() - ref_k).abs().max() < 1e-13 * ref_k.abs().max()
