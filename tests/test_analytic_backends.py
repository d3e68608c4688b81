"""analytic_kernels / analytic_ntk / analytic_nngp: the compiled (numba) path against the
torch path, and how ``backend="auto"`` chooses between them."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from rntk_empirical.analytic import analytic_kernels, analytic_nngp, analytic_ntk
from rntk_empirical.analytic import numba_backend as analytic_numba
from rntk_empirical.analytic.api import compiled_unsupported
from rntk_empirical.analytic.bank import compiled_bank
from rntk_empirical.analytic.common import setup
from rntk_empirical.architecture import Architecture
from rntk_empirical.smooth_dual import DEFAULT_TOL


def _x(seed: int, n: int, T: int, m: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, T, m, generator=g, dtype=torch.float64) / T**0.5


def _mixed(seed: int, n: int, lo: int, hi: int, m: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    return [torch.randn(t, m, generator=g, dtype=torch.float64) / t**0.5 for t in lengths]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the largest entry of the reference b."""
    return float((a - b).abs().max() / b.abs().max())


def _both(arch: Architecture, x1, x2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    fast = analytic_kernels(arch, x1, x2, backend="numba")
    ref = analytic_kernels(arch, x1, x2, backend="torch")
    return list(zip(fast, ref))


@pytest.mark.parametrize("readout", ["last", "per_step", "avg"])
@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("h0", ["zero", "shared", "per_input"])
def test_numba_equals_torch_relu(readout: str, depth: int, bidirectional: bool, h0: str) -> None:
    """Cross (x2 given, a repeated sequence in it) and symmetric (x2 None, a repeated row)."""
    arch = Architecture(
        readout=readout, depth=depth, bidirectional=bidirectional, h0=h0, sigma_h=0.7
    )
    x1, x2 = _x(0, 6, 5), _x(1, 4, 5)
    x1[4] = x1[1]
    x2[2] = x1[3]
    for other in (x2, None):
        for fast, ref in _both(arch, x1, other):
            assert fast.dtype == ref.dtype == torch.float64
            assert _rel(fast, ref) <= 1e-12
        if other is None:
            assert torch.equal(fast, fast.T)


@pytest.mark.parametrize("nonlinearity", ["erf", "gelu", "identity"])
@pytest.mark.parametrize("readout", ["last", "per_step", "avg"])
def test_numba_equals_torch_other_closed_forms(nonlinearity: str, readout: str) -> None:
    arch = Architecture(
        nonlinearity=nonlinearity, readout=readout, depth=2, sigma_w=0.9, h0="shared"
    )
    x1, x2 = _x(2, 5, 6), _x(3, 3, 6)
    for other in (x2, None):
        for fast, ref in _both(arch, x1, other):
            assert _rel(fast, ref) <= 1e-12


@pytest.mark.parametrize("readout", ["last", "per_step", "avg"])
@pytest.mark.parametrize("h0", ["zero", "shared", "per_input"])
def test_numba_mixed_lengths_equal_torch(readout: str, h0: str) -> None:
    """Left-padded, end-aligned: lengths 2..9, a repeated sequence, cross and symmetric,
    both directions (the reversed batch starts are what mixed lengths make non-trivial)."""
    arch = Architecture(readout=readout, depth=2, bidirectional=True, h0=h0, sigma_h=0.6)
    x1, x2 = _mixed(4, 7, 2, 9), _mixed(5, 4, 2, 9)
    x1[5] = x1[2].clone()
    x2[1] = x1[0].clone()
    assert len({len(s) for s in x1}) > 2
    for other in (x2, None):
        for fast, ref in _both(arch, x1, other):
            assert _rel(fast, ref) <= 1e-12


def test_numba_float32_output_is_the_float64_result_rounded() -> None:
    arch = Architecture(readout="avg", depth=2)
    x = _mixed(6, 5, 3, 8)
    t64 = analytic_ntk(arch, x, backend="torch")
    t32 = analytic_ntk(arch, x, dtype=torch.float32, backend="numba")
    assert t32.dtype == torch.float32
    assert torch.equal(t32, t64.to(torch.float32)) or _rel(t32.double(), t64) <= 1.2e-7


@pytest.fixture
def compiled_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls into the compiled kernel code."""
    calls: list[int] = []
    real = analytic_numba.kernel_bank

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(analytic_numba, "kernel_bank", spy)
    return calls


def test_auto_takes_numba_on_cpu_without_grad(compiled_calls: list[int]) -> None:
    arch = Architecture(readout="avg", nonlinearity="erf", bidirectional=True)
    x = _x(7, 4, 5)
    auto = analytic_ntk(arch, x)
    assert len(compiled_calls) == 2  # one call per direction
    assert torch.equal(auto, analytic_ntk(arch, x, backend="numba"))
    assert len(compiled_calls) == 4
    analytic_nngp(arch, _mixed(8, 4, 2, 6))  # mixed lengths too
    assert len(compiled_calls) == 6
    # an input that requires grad, but with grad disabled: nothing to differentiate
    with torch.no_grad():
        analytic_ntk(arch, x.clone().requires_grad_())
    assert len(compiled_calls) == 8


def test_auto_takes_torch_for_grad(compiled_calls: list[int]) -> None:
    arch = Architecture(readout="per_step", depth=2)
    x = _x(9, 3, 4).requires_grad_()
    theta = analytic_ntk(arch, x)
    assert not compiled_calls
    assert theta.requires_grad
    (g,) = torch.autograd.grad(theta.sum(), x)
    assert torch.isfinite(g).all() and g.abs().max() > 0
    with pytest.raises(ValueError, match="requires grad"):
        analytic_ntk(arch, x, backend="numba")
    y = _x(10, 2, 4)
    theta = analytic_ntk(arch, y, x)  # only x2 requires grad
    assert not compiled_calls and theta.requires_grad


def test_quadrature_duals_run_compiled_and_match_torch(compiled_calls: list[int]) -> None:
    """tanh and a registered nonlinearity (no closed form) take the compiled path under auto:
    the smooth-dual series in both backends (numba: per-cell truncation from its packed
    table; torch: the side tables computed with torch ops, smooth_dual.side_tensors), each
    within 1e-9 of the cell's scale (~2.5e-10 measured: tol / 4 per part), so the kernels
    agree to tol / 4 = 2.5e-10 of the largest entry (measured up to 1.2e-10: the two
    truncate differently, numba at least 16 terms by its level rule, torch the most any cell
    of the call needs), for every readout, depth 2, mixed lengths, both directions, shared
    h0; and the x1 vs x2 form equals the symmetric one to the same level."""
    agree = DEFAULT_TOL / 4
    from rntk_empirical.nonlinearities import register_nonlinearity

    register_nonlinearity("swish_test", lambda x: x * torch.sigmoid(x))  # phi' by autograd
    gen = torch.Generator().manual_seed(5)
    mixed = [torch.randn(T, 2, generator=gen, dtype=torch.float64) / 2 for T in (3, 5, 4)]
    other = [torch.randn(T, 2, generator=gen, dtype=torch.float64) / 2 for T in (4, 2)]
    for name in ("tanh", "swish_test"):
        for readout in ("last", "per_step", "avg"):
            arch = Architecture(
                nonlinearity=name,
                readout=readout,
                depth=2,
                bidirectional=True,
                h0="shared",
                sigma_h=0.5,
                sigma_w=1.3,
            )
            n0 = len(compiled_calls)
            fast = analytic_kernels(arch, mixed)
            assert len(compiled_calls) > n0  # auto chose numba
            ref = analytic_kernels(arch, mixed, backend="torch")
            for a, b in zip(fast, ref):
                err = float((a - b).abs().max() / b.abs().max())
                assert err <= agree, (name, readout, err)
                assert torch.equal(a, a.T)
            cross = analytic_ntk(arch, mixed, other)
            ref_cross = analytic_ntk(arch, mixed, other, backend="torch")
            assert float((cross - ref_cross).abs().max() / ref_cross.abs().max()) <= agree


def test_series_final_cell_rows_step_by_step_equal_row_by_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The series' final-cell readouts run the rows of a parallel task step by step
    (numba_backend._bank_rows with by_step): the same cells in another order, so the kernels
    equal those of one row at a time (groups of one row) bit for bit; 150 mixed-length
    sequences (two tiles, rows of a group with different starts), depth 2 and 1, symmetric
    and against other columns, both final-cell kinds (last, per_step)."""
    from rntk_empirical.analytic import numba_smooth

    tables = []  # the series' tables of the calls (None: the call did not take the series)
    table_or_none = numba_smooth.table_or_none

    def recorded(*args, **kwargs):
        tables.append(table_or_none(*args, **kwargs))
        return tables[-1]

    monkeypatch.setattr(numba_smooth, "table_or_none", recorded)
    x = _mixed(11, 150, 4, 24)
    other = _mixed(12, 70, 3, 20)
    for readout, depth in (("last", 2), ("per_step", 2), ("last", 1)):
        arch = Architecture(nonlinearity="tanh", readout=readout, depth=depth, sigma_w=1.3)
        grouped = analytic_kernels(arch, x, backend="numba")
        cross = analytic_ntk(arch, x, other, backend="numba")
        with monkeypatch.context() as m:
            m.setattr(analytic_numba, "ROW_GROUP_FINAL", 1)
            single = analytic_kernels(arch, x, backend="numba")
            single_cross = analytic_ntk(arch, x, other, backend="numba")
        for a, b in zip(grouped, single):
            assert torch.equal(a, b), readout
        assert torch.equal(cross, single_cross), readout
        assert float(cross.abs().max()) > 0.0
    assert len(tables) == 12 and all(t is not None for t in tables)


def test_auto_takes_torch_off_the_cpu() -> None:
    """The device rule, on a device every machine has (meta); on CUDA when there is one."""
    arch = Architecture()
    meta = type("S", (), {"values": torch.empty(1, device="meta")})()
    assert "CPU" in (compiled_unsupported(arch, meta, False) or "")
    cpu = type("S", (), {"values": torch.empty(1)})()
    assert compiled_unsupported(arch, cpu, False) is None
    if torch.cuda.is_available():
        x = _x(12, 3, 4)
        out = analytic_ntk(arch, x, device="cuda")
        assert out.device.type == "cuda"
        with pytest.raises(ValueError, match="CPU"):
            analytic_ntk(arch, x, device="cuda", backend="numba")


def test_backend_errors_and_missing_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    arch = Architecture(readout="last")
    x = _x(13, 3, 4)
    with pytest.raises(ValueError, match="backend"):
        analytic_ntk(arch, x, backend="cuda")
    monkeypatch.setattr(analytic_numba, "numba", None)
    assert torch.equal(analytic_ntk(arch, x), analytic_ntk(arch, x, backend="torch"))
    with pytest.raises(ValueError, match=r"numba is not installed"):
        analytic_ntk(arch, x, backend="numba")


def test_compiled_code_is_cached_on_disk() -> None:
    """Every compiled entry point has numba's on-disk cache (a new process loads it
    instead of compiling: measured 32 s -> 1.0 s for its first call, contended)."""
    cached = analytic_numba.disk_cached()
    # _mirror, _asin_array; bank_rows, avg_pairs, diag_variances of relu, erf, gelu,
    # identity; the quadrature's bank_rows and avg_pairs (one compiled set per dual)
    assert len(cached) == 16 and all(cached.values()), cached


@pytest.mark.parametrize("mode", ["pairs", "tiles"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_both_mean_pooling_kernels_give_every_readout(
    mode: str, symmetric: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pair-by-pair and the tile kernel (numba_backend.pairwise chooses) each compute
    last, per_step and avg of every layer in one pass, mixed lengths included: against the
    torch path one architecture at a time."""
    monkeypatch.setattr(analytic_numba, "PAIRWISE_BELOW_COLUMNS", 10**9 if mode == "pairs" else 0)
    monkeypatch.setattr(analytic_numba, "PAIRWISE_FROM_T", 0 if mode == "pairs" else 10**9)
    arch = Architecture(depth=2, h0="shared", sigma_h=0.5)
    x1 = _mixed(14, 6, 1, 8)
    x1[3] = x1[0].clone()
    x2 = None if symmetric else _mixed(15, 5, 1, 8)
    c, _, s1, s2, _, _ = setup(arch, x1, x2, torch.float64, None, None, True, 20)
    bank = compiled_bank(c, arch, s1, s2, ("last", "avg", "per_step"))
    for (depth, readout), (theta, nngp) in bank.items():
        one = replace(arch, depth=depth, readout=readout)
        ref_t, ref_k = analytic_kernels(one, x1, x2, backend="torch")
        assert _rel(theta, ref_t) <= 1e-12, (depth, readout)
        assert _rel(nngp, ref_k) <= 1e-12, (depth, readout)
