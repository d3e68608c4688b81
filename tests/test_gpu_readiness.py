"""The GPU-readiness paths of issue 19, tested on the CPU: blocked weight drawing, orthogonal
init, memory-based chunk sizes (mocked memory), the jacobian method's Jacobians, the tensor
fast path of Sequences, the TF32 scope and the analytic autograd budget."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from conftest import rel_err
from torch.func import functional_call

import rntk_empirical.analytic.common as common
import rntk_empirical.devices as devices
import rntk_empirical.empirical as empirical
import rntk_empirical.network as network
from experiments.bench import gpu as gpu_bench
from rntk_empirical import Architecture
from rntk_empirical.analytic import analytic_ntk
from rntk_empirical.analytic.common import AUTOGRAD_TENSORS_PER_CELL, CPU_BLOCK_ELEMENTS, setup
from rntk_empirical.devices import available_memory, memory_budget, precision_scope
from rntk_empirical.empirical import (
    empirical_ntk,
    per_example_jacobians,
    structured_jacobians,
    structured_plan,
)
from rntk_empirical.network import ElmanRNN
from rntk_empirical.sequences import as_sequences


def stream(seed: int, name: str) -> torch.Generator:
    """The generator the network documents: blake2b of "seed/name", shifted to 63 bits."""
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


# ---------------------------------------------------------------------- building
@pytest.mark.parametrize("width", [37, 48])
@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_blocked_draw_equals_one_shot_draw(monkeypatch, width, param, dtype):
    """Tiny row blocks (16 rows, last block uneven) give the one-shot float64 draw exactly."""
    monkeypatch.setattr(network, "DRAW_BLOCK_BYTES", 16 * 8)  # forces 16-row blocks
    arch = Architecture(parameterization=param, nonlinearity="tanh", depth=2, sigma_w=1.3)
    net = ElmanRNN(arch, 3, width, seed=5, out_dim=2, dtype=dtype)
    for l, d_in in ((0, 3), (1, width)):
        fw = arch.sigma_w / math.sqrt(width) if param == "standard" else 1.0
        fu = arch.sigma_u / math.sqrt(d_in) if param == "standard" else 1.0
        W = torch.randn(width, width, generator=stream(5, f"d0_l{l}_W"), dtype=torch.float64)
        U = torch.randn(width, d_in, generator=stream(5, f"d0_l{l}_U"), dtype=torch.float64)
        assert torch.equal(getattr(net, f"d0_l{l}_W"), (fw * W).to(dtype))
        assert torch.equal(getattr(net, f"d0_l{l}_U"), (fu * U).to(dtype))
    V = torch.randn(2, width, generator=stream(5, "d0_V"), dtype=torch.float64)
    fv = arch.sigma_v / math.sqrt(width) if param == "standard" else 1.0
    assert torch.equal(net.d0_V, (fv * V).to(dtype))


def test_default_blocks_equal_tiny_blocks(monkeypatch):
    arch = Architecture(readout="per_step", bidirectional=True, h0="shared", sigma_h=0.5)
    ref = ElmanRNN(arch, 2, 300, seed=1, max_len=4).state_dict()
    monkeypatch.setattr(network, "DRAW_BLOCK_BYTES", 1000)
    new = ElmanRNN(arch, 2, 300, seed=1, max_len=4).state_dict()
    assert list(ref) == list(new)
    assert all(torch.equal(ref[k], new[k]) for k in ref)


def test_orthogonal_init_is_the_qr_of_the_drawn_gaussian():
    n = 40
    net = ElmanRNN(Architecture(init="orthogonal", sigma_w=1.0), 2, n, seed=3)
    G = torch.randn(n, n, generator=stream(3, "d0_l0_W"), dtype=torch.float64)
    q, r = np.linalg.qr(G.numpy())
    q = q * np.sign(np.diag(r))[None, :]
    W = net.d0_l0_W.detach().numpy()
    assert np.abs(W - math.sqrt(n) * q).max() < 1e-12
    assert np.abs(W.T @ W - n * np.eye(n)).max() < 1e-11


def test_orthogonal_init_has_haar_moments():
    """Over 1500 seeds at n = 6: E tr Q = 0, E (tr Q)^2 = 1, E Q_ij^4 = 3 / (n (n + 2))
    (Haar O(n); Q_ij^2 ~ Beta(1/2, (n-1)/2)). A QR without the sign fix fails the first two."""
    n, S = 6, 1500
    qs = torch.stack(
        [
            ElmanRNN(Architecture(init="orthogonal", sigma_w=1.0), 1, n, seed=s).d0_l0_W.detach()
            for s in range(S)
        ]
    ) / math.sqrt(n)
    tr = torch.diagonal(qs, dim1=1, dim2=2).sum(-1)
    assert abs(float(tr.mean())) < 5 * math.sqrt(1 / S)
    assert abs(float((tr**2).mean()) - 1.0) < 5 * math.sqrt(2 / S)  # Var (tr Q)^2 = 2
    fourth = float((qs**4).mean())
    assert abs(fourth - 3 / (n * (n + 2))) < 5 * 0.12 / math.sqrt(S)  # sd of Q_ij^4 < 0.12
    assert float((qs @ qs.transpose(1, 2) - torch.eye(n)).abs().max()) < 1e-13


# ---------------------------------------------------------------------- memory and chunks
def test_available_memory_reads_cuda_free_figure(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (40 * 2**30, 141 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda dev=None: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda dev=None: 2 * 2**30)
    assert available_memory("cuda") == 41 * 2**30  # free + reserved-but-unused
    assert memory_budget("cuda") == int(41 * 2**30 * devices.MEMORY_FRACTION)


def test_available_memory_on_cpu_is_meminfo():
    with open("/proc/meminfo") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    assert abs(available_memory("cpu") - kb * 1024) < 256 * 2**20  # other processes move it


def test_structured_plan_width_65536():
    """N = 64, T = 20, float64: a 256 MiB budget gives 3 sequences per pass (22 passes);
    a 100 GB budget one pass. Traffic: passes * 2T * n^2 * 8 bytes."""
    per_seq = 7 * 20 * 65536 * 8
    before = structured_plan(65536, 64, 20, budget_bytes=256 * 2**20)
    assert before["chunk"] == (256 * 2**20) // per_seq == 3
    assert before["passes"] == 22
    assert before["w_traffic_bytes"] == 22 * 40 * 65536**2 * 8
    after = structured_plan(65536, 64, 20, budget_bytes=100 * 10**9)
    assert after == {"chunk": 64, "passes": 1, "w_traffic_bytes": 40 * 65536**2 * 8}


def test_chunks_follow_the_mocked_memory(monkeypatch, rng):
    """A budget of two sequences' passes -> 3 forward passes for 6 sequences; same kernel."""
    model = ElmanRNN(Architecture(readout="avg"), 3, 16, seed=0)
    x = torch.randn(6, 5, 3, generator=rng)
    ref = empirical_ntk(model, x)
    per_seq = 7 * 5 * 16 * 8
    monkeypatch.setattr(empirical, "memory_budget", lambda dev: 2 * per_seq + 1)
    calls = []
    apply = model.apply_padded

    def counting(*args, **kw):
        if kw.get("probes") is not None:
            calls.append(args[1].shape[0])  # values (B, T, m): B sequences
        return apply(*args, **kw)

    monkeypatch.setattr(model, "apply_padded", counting)
    for method in ("structured", "jacobian"):
        calls.clear()
        assert rel_err(empirical_ntk(model, x, method=method), ref) < 1e-12
        assert calls == [2, 2, 2]


# ---------------------------------------------------------------------- jacobian method
@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(readout="per_step", bidirectional=True, h0="per_input", sigma_h=0.5),
        dict(readout="avg", depth=2, nonlinearity="tanh", parameterization="standard"),
    ],
    ids=str,
)
def test_structured_jacobians_equal_torch_func(kw, rng):
    x = [torch.randn(L, 3, generator=rng) for L in (5, 3, 4)]
    model = ElmanRNN(Architecture(**kw), 3, 7, seed=2, out_dim=2, max_len=6)
    seqs = model.prepare(x)
    ref = per_example_jacobians(model, seqs)
    got = structured_jacobians(model, x)
    assert list(got) == list(ref)
    for name in ref:
        assert rel_err(got[name], ref[name]) < 1e-12, name


def test_jacobian_method_chunks_and_symmetry(rng):
    """chunk_size=2 over 5 sequences (uneven last chunk) against finite-width J J^T by
    torch.func, both the symmetric (x2 = None) and the rectangular case."""
    model = ElmanRNN(Architecture(nonlinearity="erf"), 3, 6, seed=4)
    x1, x2 = torch.randn(5, 4, 3, generator=rng), torch.randn(3, 4, 3, generator=rng)
    params = model.param_dict()

    def J(x):
        jac = torch.func.jacrev(lambda p: functional_call(model, p, (x,)))(params)
        return torch.cat([j.reshape(x.shape[0], -1) for j in jac.values()], 1)

    for other in (None, x2):
        want = J(x1) @ J(x1 if other is None else other).T
        got = empirical_ntk(model, x1, other, method="jacobian", chunk_size=2)
        assert rel_err(got, want) < 1e-12


# ---------------------------------------------------------------------- Sequences
def test_tensor_fast_path_keeps_device_tensor_and_lazy_keys():
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    seqs = as_sequences(x)
    assert seqs.values.data_ptr() == x.data_ptr()  # no copy, no host round trip
    assert seqs.lengths.tolist() == [6] * 4 and seqs.equal_lengths
    assert "_keys" not in seqs.__dict__
    model = ElmanRNN(Architecture(), 3, 5)
    model.forward_args(seqs)
    assert "_keys" not in seqs.__dict__  # h0 = zero needs no keys
    listed = as_sequences(list(x.unbind(0)))
    assert seqs.keys == listed.keys and torch.equal(seqs.values, listed.values)


def test_tensor_fast_path_conversions_and_errors():
    ints = torch.arange(12).reshape(2, 2, 3)
    assert as_sequences(ints).values.dtype == torch.float64
    assert as_sequences(torch.ones(2, 2, 3, dtype=torch.float32)).values.dtype == torch.float32
    huge = torch.full((2, 3, 2), torch.finfo(torch.float64).max)
    assert as_sequences(huge).n == 2  # finite, however large (no overflowing reduction)
    for value in (float("nan"), float("inf"), -float("inf")):
        bad = torch.zeros(3, 2, 2)
        bad[2, 1, 0] = value
        with pytest.raises(ValueError, match=r"x\[2\] contains NaN or Inf"):
            as_sequences(bad)
    with pytest.raises(ValueError, match="meta tensor"):
        as_sequences(torch.empty(2, 3, 4, device="meta"))
    with pytest.raises(ValueError, match="meta tensor"):
        as_sequences([torch.empty(3, 4, device="meta")])
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((2, 3)), np.zeros((4, 3))
    with pytest.raises(ValueError, match="dtype object"):
        as_sequences(ragged)
    with pytest.raises(ValueError, match="empty sequence"):
        as_sequences(torch.zeros(2, 0, 3))


# ---------------------------------------------------------------------- TF32
def test_precision_scope_sets_and_restores_flags():
    flags = devices.tf32_flags()
    assert flags and all(hasattr(obj, attr) for _, obj, attr in flags)
    before = [getattr(obj, attr) for _, obj, attr in flags]
    is_new_api = flags[0][2] == "fp32_precision"
    on, off = ("tf32", "ieee") if is_new_api else (True, False)
    cuda_mm = flags[0]
    with precision_scope(torch.float32, tf32=True):
        assert getattr(cuda_mm[1], cuda_mm[2]) == on
    with precision_scope(torch.float64, tf32=True):  # never TF32 for float64
        assert all(getattr(obj, attr) == off for _, obj, attr in flags)
    with pytest.raises(RuntimeError), precision_scope("float32"):
        assert all(getattr(obj, attr) == off for _, obj, attr in flags)
        raise RuntimeError("restored on errors too")
    assert [getattr(obj, attr) for _, obj, attr in flags] == before


# ---------------------------------------------------------------------- analytic budget
def test_analytic_autograd_block_from_mocked_budget(monkeypatch, rng):
    """avg, depth 2, T = 30, float64: 9 * 2 * 30^2 * 8 bytes per pair; a budget of 600
    pairs gives 600 // 50 = 12 rows for N = 50 inputs that require grad."""
    per_pair = AUTOGRAD_TENSORS_PER_CELL * 2 * 30**2 * 8
    assert AUTOGRAD_TENSORS_PER_CELL == 9
    monkeypatch.setattr(
        devices, "available_memory", lambda dev: int(600.5 * per_pair / devices.MEMORY_FRACTION)
    )
    arch = Architecture(readout="avg", depth=2)
    x = torch.randn(50, 30, 2, generator=rng)
    assert setup(arch, x, None, "float64", "cpu", None, True, 20)[4] == 50
    assert setup(arch, x.requires_grad_(), None, "float64", "cpu", None, True, 20)[4] == 12
    with torch.no_grad():
        assert setup(arch, x, None, "float64", "cpu", None, True, 20)[4] == 50
    small = torch.randn(4, 3, 2, generator=rng)
    assert setup(Architecture(), small, None, "float64", "cpu", None, True, 20)[4] == 4
    assert CPU_BLOCK_ELEMENTS // 4 >= 4


def test_analytic_gradient_same_with_small_blocks(monkeypatch, rng):
    """Blocks of 1 row (mocked budget) give the same kernel and input gradient (erf: the
    relu dual's derivative is singular at x = x', which amplifies rounding)."""
    arch = Architecture(readout="avg", nonlinearity="erf")
    x = torch.randn(4, 3, 2, generator=rng, requires_grad=True)
    theta = analytic_ntk(arch, x)
    (g_ref,) = torch.autograd.grad(theta.sum(), x)
    per_pair = AUTOGRAD_TENSORS_PER_CELL * 3**2 * 8
    monkeypatch.setattr(common, "memory_budget", lambda dev: int(4.5 * per_pair))
    assert setup(arch, x, None, "float64", "cpu", None, True, 20)[4] == 1
    theta_small = analytic_ntk(arch, x)
    (g_small,) = torch.autograd.grad(theta_small.sum(), x)
    assert rel_err(theta_small, theta) < 1e-14 and rel_err(g_small, g_ref) < 1e-13


# ---------------------------------------------------------------------- acceptance
def test_gpu_acceptance_quick_on_cpu(tmp_path, capsys):
    """The acceptance command (``python -m experiments.bench.gpu``) at tiny sizes on the CPU."""
    assert gpu_bench.main(["--device", "cpu", "--quick", "--out", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    assert "ALL CHECKS PASSED" in printed and "structured eNTK n=64 N=8 T=5" in printed
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["ok"], [r for r in out["agreement"] if not r["ok"]]
    methods = {(r["kind"], r["method"], r["dtype"]) for r in out["agreement"]}
    for m in ("structured", "jacobian", "ntk_vp"):
        assert {("empirical", m, "float64"), ("empirical", m, "float32")} <= methods
    assert ("analytic", "kernel_bank[torch]", "float64") in methods
    assert max(r["rel_err"] for r in out["agreement"] if r["dtype"] == "float64") < 1e-10
    assert out["tf32"]["before"] == out["tf32"]["after"]
    assert out["timing"]["entk"][0]["structured_ntk"]["seconds"] > 0
