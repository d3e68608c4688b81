"""The compiled (numba) kernel bank against the torch one, and how the backend is chosen."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_sequences

from rntk_empirical.analytic import analytic_kernel_bank
from rntk_empirical.analytic import numba_backend as analytic_numba
from rntk_empirical.architecture import Architecture
from rntk_empirical.nonlinearities.registry import BUILT_IN
from rntk_empirical.readouts import available_readouts


@pytest.fixture(autouse=True)
def needs_numba() -> None:
    """Fail, not skip, without numba: CI installs the ``fast`` extra (a skip would hide it)."""
    assert analytic_numba.available(), "numba is missing: pip install -e '.[fast]'"


def _inputs(seed: int, n: int, T: int, m: int) -> torch.Tensor:
    return torch.stack(random_sequences([T] * n, m, seed=seed, scale=T**-0.5))


def _assert_close(a: torch.Tensor, b: torch.Tensor, same: torch.Tensor, what) -> None:
    """1e-12 of the largest entry, except pairs of identical sequences: there ReLU's
    V_dphi = (pi - arccos rho) / 2 pi is evaluated at rho = 1 - O(eps), where arccos has
    infinite slope, so each evaluation order is only good to ~sqrt(eps) (docs/spec.md)."""
    scale = b.abs().max()
    err = (a - b).abs() / scale
    assert err[~same].max() <= 1e-12, (what, err[~same].max().item())
    if same.any():
        assert err[same].max() <= 1e-7, (what, err[same].max().item())


def test_asin_polynomial_matches_numpy_to_one_ulp() -> None:
    x = np.concatenate([np.linspace(-1.0, 1.0, 200_001), [0.5, -0.5, 1e-300, -1e-17, 1.0 - 1e-16]])
    err = np.abs(analytic_numba.asin(x) - np.arcsin(x))
    assert err.max() <= 4.5e-16
    assert analytic_numba.asin(np.array([1.0]))[0] == pytest.approx(np.pi / 2, abs=1e-16)


CASES = {
    "relu-2layer-sym": (Architecture(depth=2, sigma_u=0.7, sigma_b=0.3), True, 1),
    "relu-3layer-bi-shared-cross-m3": (
        Architecture(depth=3, h0="shared", sigma_h=0.5, bidirectional=True),
        False,
        3,
    ),
    "relu-per_input-sym": (Architecture(depth=2, h0="per_input", sigma_h=0.8), True, 1),
    "erf-2layer-per_input-cross": (
        Architecture(depth=2, nonlinearity="erf", sigma_w=1.3, h0="per_input", sigma_h=0.4),
        False,
        2,
    ),
    "gelu-2layer-shared-sym": (
        Architecture(depth=2, nonlinearity="gelu", sigma_w=1.2, h0="shared", sigma_h=0.5),
        True,
        1,
    ),
    "identity-bi-sym": (
        Architecture(nonlinearity="identity", sigma_w=0.9, bidirectional=True),
        True,
        1,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_numba_bank_equals_torch_bank(case: str) -> None:
    """Every depth, readout, NTK and NNGP; 150 columns span two tiles and a padded tail."""
    arch, symmetric, m = CASES[case]
    x1 = _inputs(0, 150 if symmetric else 37, 6, m)
    x1[5] = x1[2]  # repeated rows: the per_input boundary depends on content keys
    x2 = None if symmetric else _inputs(1, 150, 6, m)
    if x2 is not None:
        x2[3] = x1[4]
    fast = analytic_kernel_bank(arch, x1, x2, backend="numba")
    ref = analytic_kernel_bank(arch, x1, x2, backend="torch")
    assert (
        set(fast)
        == set(ref)
        == {(d, r) for d in range(1, arch.depth + 1) for r in available_readouts()}
    )
    other = x1 if x2 is None else x2
    same = (x1.flatten(1)[:, None, :] == other.flatten(1)[None, :, :]).all(-1)
    for key in ref:
        for i, kind in enumerate(("ntk", "nngp")):
            _assert_close(fast[key][i], ref[key][i], same, (key, kind))
    if symmetric:
        theta = fast[(arch.depth, "avg")][0]
        assert torch.equal(theta, theta.T)


@pytest.mark.parametrize("readouts", [("last",), ("per_step",), ("avg",), ("avg", "last")])
def test_numba_bank_readout_subsets_and_float32(readouts: tuple[str, ...]) -> None:
    arch = Architecture(depth=2, sigma_u=0.5, sigma_b=0.1)
    x = _inputs(2, 40, 7, 1)
    fast = analytic_kernel_bank(arch, x, readouts=readouts, dtype=torch.float32, backend="numba")
    ref = analytic_kernel_bank(arch, x, readouts=readouts, backend="torch")
    assert set(fast) == set(ref)
    for key, (theta, nngp) in ref.items():
        assert fast[key][0].dtype == torch.float32
        # float64 arithmetic rounded once to float32
        assert torch.allclose(fast[key][0].double(), theta, rtol=3e-7, atol=0), key
        assert torch.allclose(fast[key][1].double(), nngp, rtol=3e-7, atol=0), key


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("readouts", [("last",), ("avg", "last")])
def test_bank_reports_progress_in_rows(backend: str, readouts: tuple[str, ...]) -> None:
    seen: list[int] = []
    arch = Architecture(bidirectional=True)
    x = _inputs(3, 70, 4, 1)
    kw = dict(readouts=readouts, backend=backend, block_size=20, progress=seen.append)
    analytic_kernel_bank(arch, x, **kw)
    assert sum(seen) == 2 * 70  # every row once per direction
    assert len(seen) > 2
    if backend == "torch" or readouts == ("last",):  # mixed lengths (torch: shift by shift)
        seen.clear()
        analytic_kernel_bank(arch, [s[: 2 + i % 3] for i, s in enumerate(x)], **kw)
        assert sum(seen) == 2 * 70


def test_numba_bank_detects_overflow() -> None:
    with pytest.raises(OverflowError):
        analytic_kernel_bank(
            Architecture(sigma_w=4.0), torch.ones(3, 300, 1), dtype=torch.float32, backend="numba"
        )


def test_backend_choice_and_its_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    arch = Architecture(depth=2)
    x = _inputs(4, 6, 5, 1)
    mixed = [torch.randn(3, 1, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)]
    with pytest.raises(ValueError, match="backend"):
        analytic_kernel_bank(arch, x, backend="cuda")
    # mixed lengths run compiled: auto is numba, and it equals torch to round-off
    auto = analytic_kernel_bank(arch, mixed)
    fast = analytic_kernel_bank(arch, mixed, backend="numba")
    ref = analytic_kernel_bank(arch, mixed, backend="torch")
    for key in ref:
        assert torch.equal(auto[key][0], fast[key][0])
        assert torch.allclose(fast[key][0], ref[key][0], rtol=1e-12, atol=0)
    # quadrature duals run compiled too (phi tabulated): auto is numba, torch within 1e-10
    tanh = Architecture(nonlinearity="tanh")
    auto = analytic_kernel_bank(tanh, x[:5, :6])[(1, "avg")][0]
    assert torch.equal(auto, analytic_kernel_bank(tanh, x[:5, :6], backend="numba")[(1, "avg")][0])
    ref = analytic_kernel_bank(tanh, x[:5, :6], backend="torch")[(1, "avg")][0]
    assert float((auto - ref).abs().max() / ref.abs().max()) <= 1e-10
    # without numba: auto still works, an explicit request says what to install
    monkeypatch.setattr(analytic_numba, "numba", None)
    auto = analytic_kernel_bank(arch, x)
    ref = analytic_kernel_bank(arch, x, backend="torch")
    for key in ref:
        assert torch.equal(auto[key][1], ref[key][1])
    with pytest.raises(ValueError, match=r"numba is not installed.*\[fast\]"):
        analytic_kernel_bank(arch, x, backend="numba")


def test_warmup_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m rntk_empirical.analytic.warmup [part]``: a bad part is a usage error; a
    part compiles (here: loads from the cache the suite filled) and leaves every entry
    point disk-cached. The built-in nonlinearities only: collection imported the test
    modules that register others (sin), whose kernels the suite does not precompile;
    compiling them here cost ~20 s and raced the worker running their own tests on numba's
    cache files."""
    from rntk_empirical.analytic import warmup

    assert warmup.main(["bogus"]) == 2 and "usage" in capsys.readouterr().out
    warmup.warm("pairs", tuple(nl.name for nl in BUILT_IN))
    assert all(analytic_numba.disk_cached().values())
    with pytest.raises(ValueError, match="part="):
        warmup.warm("all")
