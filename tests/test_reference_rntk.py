"""Every analytic code path equals the naive reference recursion (``reference_rntk.py``).

The paths: ``analytic_kernels`` with inputs that require grad (the differentiable path),
without (the in-place path), one row per block (the block bookkeeping), and
``analytic_kernel_bank`` with the torch backend (both its all-shifts-at-once branch and its
shift-by-shift branch, forced with ``block_size=1``) and the numba backend.
Depth 1-3 (the bank and the reference both give every depth of one depth-3 network), every
readout, every h0 mode, both directions, mixed and equal lengths, x2 = None and a second
batch, with s_w, s_u, s_b, s_h, s_v all distinct and != 1 so that a missing or swapped
multiplier shows. Tolerance: 1e-10 of the largest entry in float64; pairs of identical
sequences under ReLU get 1e-7 (there rho = 1 - O(eps) sits where arccos has an infinite
slope, so any two evaluation orders agree only to ~sqrt(eps); see test_analytic_numba).
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import random_sequences
from reference_rntk import reference_bank

from rntk_empirical import Architecture
from rntk_empirical.analytic import analytic_kernel_bank, analytic_kernels, numba_backend

SIGMAS = dict(sigma_w=0.9, sigma_u=1.3, sigma_b=0.4, sigma_h=0.7, sigma_v=1.6)
EMA = 0.7  # the ema readout's lam
# every h0 mode in both directions, three nonlinearities with closed forms (numba has them)
CONFIGS = {
    "relu-zero-uni": Architecture(depth=3, ema_decay=EMA, **SIGMAS),
    "identity-zero-bi": Architecture(
        depth=3, ema_decay=EMA, nonlinearity="identity", bidirectional=True, **SIGMAS
    ),
    "erf-shared-uni": Architecture(
        depth=3, ema_decay=EMA, nonlinearity="erf", h0="shared", **{**SIGMAS, "sigma_w": 1.4}
    ),
    "relu-shared-bi": Architecture(
        depth=3, ema_decay=EMA, h0="shared", bidirectional=True, **SIGMAS
    ),
    "relu-per_input-uni": Architecture(depth=3, ema_decay=EMA, h0="per_input", **SIGMAS),
    "relu-per_input-bi": Architecture(
        depth=3, ema_decay=EMA, h0="per_input", bidirectional=True, **SIGMAS
    ),
}
READOUTS = ("last", "avg", "per_step", "ema", "paper_avg")


def _data(kind: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(x1, x2), m = 2; x1 repeats a sequence and x2 shares one with x1 (per_input keys)."""
    lengths = {"mixed": ((5, 3, 5, 2), (4, 3, 5)), "equal": ((4, 4, 4, 4), (4, 4, 4))}[kind]
    x1 = [s.numpy() for s in random_sequences(lengths[0], 2, seed=7)]
    x2 = [s.numpy() for s in random_sequences(lengths[1], 2, seed=8)]
    x1[2] = x1[0].copy()
    x2[1] = x1[1].copy()
    return x1, x2


@functools.cache
def _reference(config: str, kind: str, cross: bool):
    x1, x2 = _data(kind)
    return reference_bank(CONFIGS[config], x1, x2 if cross else None)


def _identical(x1, x2) -> np.ndarray:
    x2 = x1 if x2 is None else x2
    return np.array([[a.shape == b.shape and np.array_equal(a, b) for b in x2] for a in x1])


def _check(got: torch.Tensor, want: np.ndarray, same: np.ndarray, relu: bool, what) -> None:
    got = got.detach().numpy()
    assert got.shape == want.shape, what
    err = np.abs(got - want) / np.abs(want).max()
    loose = same if relu else np.zeros_like(same)
    assert err[~loose].max(initial=0.0) <= 1e-10, (what, err[~loose].max())
    assert err[loose].max(initial=0.0) <= 1e-7, (what, err[loose].max())


def _cases(kinds=("mixed", "equal")):
    return [
        pytest.param(c, k, cross, id=f"{c}-{k}-{'cross' if cross else 'sym'}")
        for c in CONFIGS
        for k in kinds
        for cross in (False, True)
    ]


def _tensors(xs, grad: bool) -> list[torch.Tensor] | None:
    if xs is None:
        return None
    return [torch.tensor(x, requires_grad=grad) for x in xs]


def _case(config: str, kind: str, cross: bool):
    """(arch, x1, x2 or None, the reference bank, check(got, want, what)): ``check`` is
    :func:`_check` with this case's identical pairs (ReLU: the looser bound there)."""
    arch = CONFIGS[config]
    x1, x2 = _data(kind)
    x2 = x2 if cross else None
    same, relu = _identical(x1, x2), arch.nonlinearity == "relu"
    return (
        arch,
        x1,
        x2,
        _reference(config, kind, cross),
        functools.partial(_check, same=same, relu=relu),
    )


@pytest.mark.parametrize("config,kind,cross", _cases(kinds=("mixed",)))
def test_analytic_kernels_paths_equal_reference(config, kind, cross):
    arch, x1, x2, ref, check = _case(config, kind, cross)
    for readout in READOUTS:  # depth 3 runs layers 1-3; the bank checks each depth's output
        theta_ref, nngp_ref = ref[(arch.depth, readout)]
        a = replace(arch, readout=readout)
        paths = [("autograd", True, None), ("inplace", False, None)]
        if readout == "avg":
            paths.append(("inplace-rows2", False, 2))  # blocks (and the triangle if sym)
        for path, grad, block in paths:
            theta, nngp = analytic_kernels(
                a, _tensors(x1, grad), _tensors(x2, grad), block_size=block
            )
            assert theta.requires_grad == grad
            check(theta, theta_ref, what=(path, readout, "ntk"))
            check(nngp, nngp_ref, what=(path, readout, "nngp"))


@pytest.mark.parametrize("config,kind,cross", _cases())
def test_torch_bank_equals_reference(config, kind, cross):
    arch, x1, x2, ref, check = _case(config, kind, cross)
    # equal lengths: all shifts at once, or (block_size=1) the shift-by-shift branch that
    # mixed lengths always take
    for block in (None, 1) if kind == "equal" else (None,):
        bank = analytic_kernel_bank(
            arch,
            _tensors(x1, False),
            _tensors(x2, False),
            backend="torch",
            block_size=block,
            compile=False,
        )
        assert set(bank) == set(ref)
        for key, (theta_ref, nngp_ref) in ref.items():
            check(bank[key][0], theta_ref, what=("bank", block, key, "ntk"))
            check(bank[key][1], nngp_ref, what=("bank", block, key, "nngp"))


@pytest.mark.parametrize("config,kind,cross", _cases())
def test_numba_bank_equals_reference(config, kind, cross):
    """Fails (does not skip) without numba: CI installs the ``fast`` extra."""
    assert numba_backend.available(), "numba is missing: pip install -e '.[fast]'"
    arch, x1, x2, ref, check = _case(config, kind, cross)
    bank = analytic_kernel_bank(arch, _tensors(x1, False), _tensors(x2, False), backend="numba")
    assert set(bank) == set(ref)
    for key, (theta_ref, nngp_ref) in ref.items():
        check(bank[key][0], theta_ref, what=("numba", key, "ntk"))
        check(bank[key][1], nngp_ref, what=("numba", key, "nngp"))


def test_reference_is_sensitive_to_each_multiplier():
    """The reference itself: every sigma changes the kernel (so the grid above can see a
    dropped or swapped multiplier), and the h0 term appears only where the SPEC puts it."""
    x1 = _data("mixed")[0][:3]
    arch0 = replace(CONFIGS["relu-shared-bi"], depth=2, bidirectional=False)
    base = reference_bank(arch0, x1)
    for name in SIGMAS:
        arch = replace(arch0, **{name: SIGMAS[name] * 1.1})
        other = reference_bank(arch, x1)
        for key in base:
            if name == "sigma_h" and key[1] == "last":
                continue  # h0 is forgotten after T >= 2 steps only through the recursion
            assert np.abs(other[key][0] - base[key][0]).max() > 1e-6, (name, key)


@pytest.mark.parametrize("readout", ["avg", "per_step"])
def test_autograd_gradients_depth2_mixed_lengths(readout):
    """Gradients of the differentiable path w.r.t. both inputs, depth 2, mixed lengths,
    per_input h0, bidirectional: the directional derivative along a random direction against
    a central difference of the in-place path (which equals the reference above). x2 shares
    no sequence with x1 (ReLU's dual is smooth there)."""
    arch = replace(CONFIGS["relu-per_input-bi"], depth=2, readout=readout)
    x1, _ = _data("mixed")
    x1 = x1[:2] + x1[3:]
    x2 = [s.numpy() for s in random_sequences((5, 2), 2, seed=9)]
    g = torch.Generator().manual_seed(0)
    w = torch.randn(len(x1), len(x2), generator=g)
    t1, t2 = _tensors(x1, True), _tensors(x2, True)
    theta, _ = analytic_kernels(arch, t1, t2, nngp=False)
    (theta * w).sum().backward()
    v1 = [torch.randn(t.shape, generator=g) for t in t1]
    v2 = [torch.randn(t.shape, generator=g) for t in t2]
    slope = sum(float((t.grad * v).sum()) for t, v in zip(t1 + t2, v1 + v2))

    def value(step: float) -> float:
        a = [t.detach() + step * v for t, v in zip(t1, v1)]
        b = [t.detach() + step * v for t, v in zip(t2, v2)]
        return float((analytic_kernels(arch, a, b, nngp=False)[0] * w).sum())

    eps = 1e-5
    fd = (value(eps) - value(-eps)) / (2 * eps)
    assert abs(slope) > 1e-3
    assert slope == pytest.approx(fd, rel=1e-7)
