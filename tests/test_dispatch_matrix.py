"""Every code path the dispatch can take, on every readout x h0 x lengths combination,
against the naive reference recursion (``reference_rntk.py``) and, for the empirical NTK,
every method with k = 2 outputs, chunked and unchunked, against per-example autograd
Jacobians.

The analytic dispatch (``backend="auto"`` and the bank) chooses by size and options:

* :func:`analytic_kernels`: autograd (inputs require grad), numba (CPU, no grad), the
  in-place torch recursion (``backend="torch"``);
* the numba bank (both :func:`analytic_kernels` and :func:`analytic_kernel_bank`): mean
  pooling pair by pair (``_avg_pairs``) or by tiles of columns (``_bank_rows``), chosen by
  ``numba_backend.pairwise`` from the thresholds ``PAIRWISE_BELOW_COLUMNS`` (96 columns) and
  ``PAIRWISE_FROM_T`` (T = 128); inside a tile, masked cells where some pair has not started
  (mixed lengths) and the fused two-layer step where every pair has (depth 2);
* the torch bank: every shift of a row block at once (equal lengths, small blocks) or shift
  by shift (mixed lengths, or ``block_size`` below 2T - 1 rows' worth).

Each path is forced here through its threshold or option, at small sizes, and a spy on the
function that implements it asserts that it ran. Each combination has a repeated sequence
(identical states; the ``per_input`` boundary) and a second batch sharing one sequence.
Tolerances as in ``test_reference_rntk``: 1e-10 of the largest entry, 1e-7 on identical
pairs under ReLU.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from conftest import random_sequences, rel_err
from reference_rntk import reference_bank

from rntk_empirical import Architecture, ElmanRNN, empirical_ntk
from rntk_empirical.analytic import analytic_kernel_bank, analytic_kernels, numba_backend
from rntk_empirical.analytic import api as analytic_api
from rntk_empirical.analytic import bank as analytic_bank
from rntk_empirical.empirical import per_example_jacobians
from rntk_empirical.readouts import available_readouts

SIGMAS = dict(sigma_w=0.9, sigma_u=1.3, sigma_b=0.4, sigma_h=0.7, sigma_v=1.6, ema_decay=0.7)
H0 = ("zero", "shared", "per_input")
LENGTHS = {"equal": ((4, 4, 4, 4, 4), (4, 4, 4)), "mixed": ((5, 3, 5, 2, 4), (4, 3, 5))}
DEPTHS = (2, 3)  # 2: the fused two-layer step of the tiles; 3: the general layer loop


def _data(lengths: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    l1, l2 = LENGTHS[lengths]
    x1 = random_sequences(l1, 2, seed=7, scale=0.7)
    x2 = random_sequences(l2, 2, seed=8, scale=0.7)
    x1[2] = x1[0].clone()
    x2[1] = x1[1].clone()
    return x1, x2


@functools.cache
def _reference(h0: str, lengths: str, depth: int, cross: bool):
    x1, x2 = _data(lengths)
    arch = Architecture(depth=depth, h0=h0, **SIGMAS)
    np1 = [x.numpy() for x in x1]
    return reference_bank(arch, np1, [x.numpy() for x in x2] if cross else None)


def _checker(lengths: str, cross: bool):
    x1, x2 = _data(lengths)
    x2 = x2 if cross else x1
    same = np.array([[a.shape == b.shape and bool((a == b).all()) for b in x2] for a in x1])

    def check(got: torch.Tensor, want: np.ndarray, what) -> None:
        got = got.detach().numpy()
        assert got.shape == want.shape, what
        err = np.abs(got - want) / np.abs(want).max()
        assert err[~same].max(initial=0.0) <= 1e-10, (what, err[~same].max())
        assert err[same].max(initial=0.0) <= 1e-7, (what, err[same].max())

    return check


def _spy(monkeypatch, module, name: str) -> list:
    calls = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


class _CompiledEntryPoints:
    """Stands for numba_backend's per-dual compiled entry points (each nonlinearity's copies of
    ``_bank_rows`` / ``_avg_pairs``), so that a spy can wrap one of them."""

    def __init__(self, kernels_of, name: str, calls: list):
        self.kernels_of, self.name, self.calls = kernels_of, name, calls

    def __call__(self, nonlinearity):
        kernels = self.kernels_of(nonlinearity)
        if kernels is None:
            return None
        spied = copy.copy(kernels)
        entry = getattr(kernels, self.name)

        def wrapper(*args, **kwargs):
            self.calls.append(self.name)
            return entry(*args, **kwargs)

        setattr(spied, self.name, wrapper)
        return spied


def _spy_compiled(monkeypatch, name: str) -> list:
    """Spy on the compiled entry point ``name`` (bank_rows or avg_pairs) of every dual."""
    calls: list = []
    lookup = "_kernels"  # numba_backend's per-dual cache of compiled entry points
    spy = _CompiledEntryPoints(getattr(numba_backend, lookup), name, calls)
    monkeypatch.setattr(numba_backend, lookup, spy)
    return calls


# bank paths: (backend, bank options, thresholds of the numba kernel choice, spied function)
BANK_PATHS = {
    "numba-pairs": ("numba", {}, (10**9, 0), (numba_backend, "avg_pairs")),
    "numba-tiles": ("numba", {}, (0, 10**9), (numba_backend, "bank_rows")),
    "torch-all-shifts": ("torch", {}, None, (analytic_bank, "all_shifts_block")),
    "torch-shifts": ("torch", {"block_size": 1}, None, (analytic_bank, "shift_block_fused")),
}
API_PATHS = {  # analytic_kernels, one readout at a time
    "autograd": ("auto", True, (analytic_api, "pair_block")),
    "numba": ("auto", False, (analytic_api, "compiled_bank")),
    "inplace": ("torch", False, (analytic_api, "pair_block_fused")),
}


def _cases():
    return [
        pytest.param(h0, lengths, depth, cross, id=f"{h0}-{lengths}-L{depth}-{c}")
        for h0 in H0
        for lengths in LENGTHS
        for depth in DEPTHS
        for cross, c in ((False, "sym"), (True, "cross"))
    ]


@pytest.mark.parametrize("h0,lengths,depth,cross", _cases())
def test_every_bank_path_equals_reference(monkeypatch, h0, lengths, depth, cross):
    ref = _reference(h0, lengths, depth, cross)
    check = _checker(lengths, cross)
    x1, x2 = _data(lengths)
    arch = Architecture(depth=depth, h0=h0, **SIGMAS)
    for path, (backend, opts, thresholds, (module, name)) in BANK_PATHS.items():
        if path == "torch-all-shifts" and lengths == "mixed":
            continue  # mixed lengths always go shift by shift (asserted by the spy below)
        with monkeypatch.context() as mp:
            if thresholds is not None:
                mp.setattr(numba_backend, "PAIRWISE_BELOW_COLUMNS", thresholds[0])
                mp.setattr(numba_backend, "PAIRWISE_FROM_T", thresholds[1])
            if module is numba_backend:
                calls = _spy_compiled(mp, name)
            else:
                calls = _spy(mp, module, name)
            bank = analytic_kernel_bank(arch, x1, x2 if cross else None, backend=backend, **opts)
            assert calls, (path, "did not run")
        assert (
            set(bank)
            == set(ref)
            == {(d, r) for d in range(1, depth + 1) for r in available_readouts()}
        )
        for key, (theta, nngp) in ref.items():
            check(bank[key][0], theta, (path, key, "ntk"))
            check(bank[key][1], nngp, (path, key, "nngp"))


@pytest.mark.parametrize("h0,lengths,depth,cross", [c for c in _cases() if c.values[2] == 2])
def test_every_api_path_equals_reference(monkeypatch, h0, lengths, depth, cross):
    ref = _reference(h0, lengths, depth, cross)
    check = _checker(lengths, cross)
    x1, x2 = _data(lengths)
    for readout in available_readouts():
        arch = Architecture(depth=depth, h0=h0, readout=readout, **SIGMAS)
        for path, (backend, grad, (module, name)) in API_PATHS.items():
            with monkeypatch.context() as mp:
                # the compiled kernel of mean pooling: tiles here (pairs are the default at
                # this size and run in test_every_bank_path_equals_reference)
                mp.setattr(numba_backend, "PAIRWISE_BELOW_COLUMNS", 0)
                calls = _spy(mp, module, name)
                a = [x.clone().requires_grad_(grad) for x in x1]
                b = [x.clone().requires_grad_(grad) for x in x2] if cross else None
                theta, nngp = analytic_kernels(arch, a, b, backend=backend)
                assert calls, (path, readout, "did not run")
            check(theta, ref[(depth, readout)][0], (path, readout, "ntk"))
            check(nngp, ref[(depth, readout)][1], (path, readout, "nngp"))


# ---------------------------------------------------------------------------- empirical NTK
_ENTK = dict(sigma_w=1.1, sigma_u=1.3, sigma_b=0.4, sigma_v=1.6)


def _autograd_ntk(model, x1, x2) -> torch.Tensor:
    """(N1, N2, k, k) from per-example Jacobians (vmap of jacrev through apply_padded)."""
    j1 = per_example_jacobians(model, model.prepare(x1))
    j2 = j1 if x2 is None else per_example_jacobians(model, model.prepare(x2))
    return sum(torch.einsum("iap,jbp->ijab", j1[k], j2[k]) for k in j1)


@functools.cache
def _entk_case(readout: str):
    """(model, x1, x2, {x2 or None: the autograd NTK})."""
    arch = Architecture(depth=2, readout=readout, h0="per_input", sigma_h=0.6, **_ENTK)
    model = ElmanRNN(arch, 2, 5, seed=3, out_dim=2, max_len=5)
    x1 = random_sequences((4, 5, 3, 5), 2, seed=1)
    x1[3] = x1[1].clone()
    x2 = random_sequences((5, 2, 4), 2, seed=2)
    return model, x1, x2, {k: _autograd_ntk(model, x1, o) for k, o in (("sym", None), ("x2", x2))}


@pytest.mark.parametrize("readout", ["avg", "per_step"])
@pytest.mark.parametrize("method", ["structured", "jacobian", "ntk_vp"])
def test_every_entk_method_with_two_outputs_chunked_or_not(method, readout):
    """k = 2 outputs (the (o, o') blocks are not symmetric, so a mirrored block must swap
    both the sequence and the output axes), symmetric and cross, whole batch and chunks of
    2 (so that blocks below the diagonal come from mirrored ones)."""
    model, x1, x2, wants = _entk_case(readout)
    for other, want in ((None, wants["sym"]), (x2, wants["x2"])):
        off = want[0, 1] - want[0, 1].T
        assert off.abs().max() > 1e-3 * want[0, 1].abs().max()  # not symmetric in (o, o')
        for chunk in (None, 2):
            got = empirical_ntk(model, x1, other, method=method, chunk_size=chunk)
            assert rel_err(got, want) < 1e-12, (method, chunk, other is None)
