"""Property-based tests (Hypothesis) of the kernels' invariants on random small
architectures and inputs: symmetry, positive semi-definiteness to round-off, permutation
equivariance, independence of batch composition and padding, and x2 = x1 equals x2 = None.

Each example is tiny (N <= 4, T <= 4, depth <= 2, float64); the number of examples is
bounded so that the file stays cheap, and the inputs come from a drawn seed (Hypothesis
shrinks the architecture, the lengths and the seed).
"""

from __future__ import annotations

import torch
from conftest import random_sequences
from hypothesis import given, settings
from hypothesis import strategies as st

from rntk_empirical import Architecture
from rntk_empirical.analytic import analytic_kernels
from rntk_empirical.empirical import empirical_kernels
from rntk_empirical.network import ElmanRNN

FAST = settings(max_examples=12, deadline=None, derandomize=True)
sigma = st.floats(0.5, 1.5)
archs = st.builds(
    Architecture,
    depth=st.integers(1, 2),
    # tanh: the Gauss-Hermite dual (symmetrized over both orders of the variances)
    nonlinearity=st.sampled_from(["relu", "erf", "gelu", "identity", "tanh"]),
    sigma_w=sigma,
    sigma_u=sigma,
    sigma_b=st.floats(0.0, 1.0),
    sigma_h=sigma,
    sigma_v=sigma,
    readout=st.sampled_from(["last", "avg", "per_step"]),
    bidirectional=st.booleans(),
    h0=st.sampled_from(["zero", "shared", "per_input"]),
)
lengths = st.lists(st.integers(1, 4), min_size=2, max_size=4)
seeds = st.integers(0, 2**16)
M = 2


def _kernels(arch, x1, x2=None):
    theta, nngp = analytic_kernels(arch, x1, x2)
    return {"ntk": theta, "nngp": nngp}


def _close(a: torch.Tensor, b: torch.Tensor, what, tol: float = 1e-11) -> None:
    scale = max(float(b.abs().max()), 1e-300)
    assert float((a - b).abs().max()) <= tol * scale, what


@FAST
@given(arch=archs, ls=lengths, seed=seeds)
def test_symmetric_psd_and_x2_equal_x1(arch, ls, seed):
    xs = random_sequences(ls, M, seed=seed)
    alone = _kernels(arch, xs)
    given_twice = _kernels(arch, xs, [x.clone() for x in xs])
    for k, K in alone.items():
        assert torch.equal(K, K.T), k  # x2 = None: exactly symmetric by construction
        # 1e-7: on the diagonal rho = 1 - O(eps), where ReLU's arccos has an infinite slope,
        # so the two evaluation orders (x2 = None and x2 a copy) agree only to ~sqrt(eps)
        _close(given_twice[k], K, k, tol=1e-7)
        eig = torch.linalg.eigvalsh(K)
        assert eig.min() >= -1e-10 * eig.abs().max(), (k, eig)


@FAST
@given(arch=archs, ls=lengths, seed=seeds, perm_seed=seeds)
def test_permutation_equivariance(arch, ls, seed, perm_seed):
    xs = random_sequences(ls, M, seed=seed)
    p = torch.randperm(len(xs), generator=torch.Generator().manual_seed(perm_seed))
    base = _kernels(arch, xs)
    permuted = _kernels(arch, [xs[int(i)] for i in p])
    for k in base:
        _close(permuted[k], base[k][p][:, p], k)


@FAST
@given(arch=archs, ls=lengths, extra=lengths, seed=seeds)
def test_independent_of_batch_composition_and_padding(arch, ls, extra, seed):
    """Rows of x1 against x2 do not depend on which other sequences share either batch,
    nor on how long the longest of them is (the padding)."""
    xs = random_sequences(ls, M, seed=seed)
    others = random_sequences([e + 3 for e in extra], M, seed=seed + 1)  # longer: more padding
    small = _kernels(arch, xs[:1], xs[1:])
    big = _kernels(arch, others[:1] + xs[:1], xs[1:] + others)
    n = len(xs) - 1
    for k in small:
        _close(big[k][1:2, :n], small[k], k)


@settings(max_examples=8, deadline=None, derandomize=True)
@given(arch=archs, ls=lengths, seed=seeds)
def test_empirical_kernels_symmetric_psd_and_batch_independent(arch, ls, seed):
    """The same invariants for the finite network's kernels (width 6)."""
    xs = random_sequences(ls, M, seed=seed)
    model = ElmanRNN(arch, M, 6, seed=seed, max_len=8)
    theta, nngp = empirical_kernels(model, xs)
    for k, K in (("ntk", theta), ("nngp", nngp)):
        _close(K, K.T, k)
        eig = torch.linalg.eigvalsh((K + K.T) / 2)
        assert eig.min() >= -1e-10 * eig.abs().max(), (k, eig)
    longer = random_sequences([8], M, seed=seed + 1)
    theta2, nngp2 = empirical_kernels(model, xs + longer)
    n = len(xs)
    _close(theta2[:n, :n], theta, "ntk")
    _close(nngp2[:n, :n], nngp, "nngp")
