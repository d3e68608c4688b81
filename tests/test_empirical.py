"""The three exact empirical-NTK methods agree, and agree with finite differences."""

import pytest
import torch
from conftest import DEVICES, random_sequences, rel_err
from torch.func import functional_call, jacrev

from rntk_empirical import Architecture, empirical
from rntk_empirical.empirical import (
    check_finite_kernels,
    empirical_kernels,
    empirical_nngp,
    empirical_ntk,
    per_example_jacobians,
    structured_plan,
)
from rntk_empirical.network import ElmanRNN

OPTIONS = [
    dict(),
    dict(readout="avg"),
    dict(readout="per_step"),
    dict(readout="ema", ema_decay=0.6, h0="per_input", sigma_h=0.7),
    dict(readout="paper_avg", bidirectional=True),
    dict(bidirectional=True),
    dict(h0="shared", sigma_h=0.7),
    dict(h0="per_input", sigma_h=0.7),
    dict(depth=2, nonlinearity="erf"),
    dict(nonlinearity="gelu", readout="avg"),
    dict(nonlinearity="tanh", parameterization="standard"),
    dict(nonlinearity="identity", init="orthogonal", sigma_w=0.9),
]


@pytest.mark.parametrize("kw", OPTIONS, ids=str)
@pytest.mark.parametrize("out_dim", [1, 2])
def test_methods_agree(kw, out_dim, rng):
    x1, x2 = random_sequences((4, 6, 5), 3, seed=0), random_sequences((3, 6), 3, seed=1)
    model = ElmanRNN(Architecture(**kw), 3, 8, seed=1, out_dim=out_dim, max_len=6)
    for other in (None, x2):
        ref = empirical_ntk(model, x1, other, method="structured")
        expected = (3, 3 if other is None else 2) + ((out_dim, out_dim) if out_dim > 1 else ())
        assert ref.shape == expected
        for method in ("jacobian", "ntk_vp"):
            assert rel_err(empirical_ntk(model, x1, other, method=method), ref) < 1e-10


def finite_difference_ntk(model, seqs, eps=1e-6):
    """J by central differences over every parameter entry, then J J^T."""
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    cols = []
    for p in params.values():
        flat = p.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            up = functional_call(model, params, (seqs,))
            flat[i] = old - eps
            down = functional_call(model, params, (seqs,))
            flat[i] = old
            cols.append((up - down) / (2 * eps))
    J = torch.stack(cols, dim=-1)
    return J @ J.T


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(readout="avg", depth=2, bidirectional=True, h0="per_input", sigma_h=0.5)],
    ids=str,
)
def test_agrees_with_finite_differences(kw, rng):
    x = random_sequences((3, 4), 2, seed=2)
    model = ElmanRNN(Architecture(nonlinearity="tanh", **kw), 2, 3, seed=2)
    theta = empirical_ntk(model, x)
    assert rel_err(finite_difference_ntk(model, x), theta) < 1e-7


@pytest.mark.parametrize(
    "kw",
    [dict(h0="per_input", sigma_h=0.6), dict(readout="per_step", bidirectional=True)],
    ids=str,
)
def test_per_example_jacobians_equal_autograd_on_each_sequence_alone(kw):
    """The vmapped, padded Jacobians (mixed lengths, out_dim 2) against plain autograd of
    the module called on one unpadded sequence at a time."""
    x = random_sequences((5, 2, 4), 2, seed=6)
    model = ElmanRNN(Architecture(**kw), 2, 5, seed=3, out_dim=2, max_len=5)
    got = per_example_jacobians(model, model.prepare(x))
    params = dict(model.named_parameters())
    assert list(got) == list(params)
    for i, xi in enumerate(x):
        out = model([xi])[0]
        for k in range(2):
            grads = torch.autograd.grad(out[k], list(params.values()), retain_graph=True)
            for (name, p), g in zip(params.items(), grads):
                assert got[name].shape == (3, 2, p.numel())
                err = (got[name][i, k] - g.reshape(-1)).abs().max()
                assert err < 1e-12 * (1 + g.abs().max()), (i, k, name)


def test_nngp_is_readout_block(rng):
    """empirical_nngp == the NTK contribution of the readout weights V alone."""
    x = random_sequences((4, 6, 5), 3, seed=3)
    for kw in (dict(), dict(readout="avg", bidirectional=True), dict(readout="per_step")):
        model = ElmanRNN(Architecture(sigma_v=1.3, **kw), 3, 10, seed=0, max_len=6)
        params = {k: v.detach() for k, v in model.named_parameters()}
        vnames = [k for k in params if k.endswith("_V")]

        def f(vparams, model=model, params=params):
            return functional_call(model, {**params, **vparams}, (x,))

        J = jacrev(f)({k: params[k] for k in vnames})
        ntk_v = sum(j.reshape(len(x), -1) @ j.reshape(len(x), -1).T for j in J.values())
        assert rel_err(empirical_nngp(model, x), ntk_v) < 1e-12


def test_symmetric_and_psd(rng):
    x = random_sequences((5, 5, 3, 7, 2, 6), 3, seed=4)
    model = ElmanRNN(Architecture(depth=2, readout="avg"), 3, 16, seed=0)
    theta = empirical_ntk(model, x)
    assert torch.equal(theta, theta.T)
    ev = torch.linalg.eigvalsh(theta)
    assert ev.min() >= -1e-10 * ev.max()


def test_kernel_rows_independent_of_batch(rng):
    x = random_sequences((5, 2, 7), 3, seed=5)
    model = ElmanRNN(Architecture(h0="per_input", sigma_h=1.0), 3, 12, seed=0)
    full = empirical_ntk(model, x)
    pair = empirical_ntk(model, [x[2], x[0]])
    torch.testing.assert_close(pair, full[[2, 0]][:, [2, 0]], rtol=1e-12, atol=1e-12)


def test_chunking_does_not_change_result(rng):
    x = random_sequences((4, 4, 4, 4, 4), 3, seed=6)
    model = ElmanRNN(Architecture(), 3, 8, seed=0)
    ref = empirical_ntk(model, x)
    for method in ("structured", "jacobian", "ntk_vp"):
        assert rel_err(empirical_ntk(model, x, method=method, chunk_size=2), ref) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
def test_float32_and_device(device, rng):
    x = torch.randn(4, 5, 3, generator=rng)
    ref = empirical_ntk(ElmanRNN(Architecture(), 3, 32, seed=0), x)
    model = ElmanRNN(Architecture(), 3, 32, seed=0, dtype=torch.float32, device=device)
    theta = empirical_ntk(model, x.float().to(device))
    assert theta.dtype == torch.float32 and theta.device.type == device
    assert rel_err(theta.double().cpu(), ref) < 1e-5


def test_bad_arguments(rng):
    model = ElmanRNN(Architecture(), 3, 4)
    x = torch.randn(2, 3, 3)
    with pytest.raises(ValueError, match="unknown method 'svd'.*structured"):
        empirical_ntk(model, x, method="svd")
    with pytest.raises(ValueError, match="x2 has feature size"):
        empirical_ntk(model, x, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="chunk_size"):
        empirical_ntk(model, x, chunk_size=0)
    with pytest.raises(TypeError, match="ElmanRNN"):
        empirical_ntk(torch.nn.Linear(2, 2), x)
    with pytest.raises(ValueError, match="NaN"):
        empirical_ntk(model, torch.tensor([[[1.0, float("inf"), 0.0]]]))


def test_every_method_returns_the_same_nngp():
    x1, x2 = random_sequences((4, 6, 5), 3, seed=9), random_sequences((3, 6), 3, seed=10)
    model = ElmanRNN(Architecture(readout="avg", h0="shared", sigma_h=0.5), 3, 8, seed=2)
    for other in (None, x2):
        ref = empirical_nngp(model, x1, other)
        for method in ("structured", "jacobian", "ntk_vp"):
            theta, nngp = empirical_kernels(model, x1, other, method=method)
            assert rel_err(nngp, ref) < 1e-12, method
            assert rel_err(theta, empirical_ntk(model, x1, other)) < 1e-10, method


def test_structured_gram_blocks_mirror_with_output_pairs_swapped(monkeypatch):
    """A memory budget so small that every Gram block holds one sequence: the symmetric
    kernel's lower blocks come from the upper ones with both the sequence and the output
    axes transposed (k = 2 outputs, whose (o, o') blocks are not symmetric)."""
    x = random_sequences((4, 6, 5), 3, seed=11)
    model = ElmanRNN(Architecture(depth=2), 3, 6, seed=5, out_dim=2)
    ref = empirical_ntk(model, x, method="jacobian")
    assert (ref[0, 1] - ref[0, 1].T).abs().max() > 1e-3 * ref[0, 1].abs().max()
    monkeypatch.setattr(empirical, "memory_budget", lambda device: 1000)
    small = empirical_ntk(model, x)
    assert rel_err(small, ref) < 1e-12
    assert torch.equal(small, small.transpose(0, 1).transpose(2, 3))


def test_structured_plan_counts_passes_and_traffic():
    """n = 100, T = 10, depth 2, 2 directions, float32: 4 + 3 * 2 * 2 = 16 tensors of T n
    per sequence = 64 000 bytes; a 200 000-byte budget holds 3 sequences, so 7 of them take
    3 passes, each reading every W (2 x 2 of 100 x 100) twice per step."""
    plan = structured_plan(
        100, 7, 10, depth=2, directions=2, dtype=torch.float32, budget_bytes=200_000
    )
    assert plan == {"chunk": 3, "passes": 3, "w_traffic_bytes": 3 * 2 * 10 * 4 * 10_000 * 4}
    assert structured_plan(100, 2, 10, budget_bytes=10**9)["chunk"] == 2


@pytest.mark.parametrize("dtype,advice", [(torch.float32, True), (torch.float64, False)])
def test_overflow_message_names_the_kernel_and_the_fix(dtype, advice):
    model = ElmanRNN(Architecture(sigma_w=3.0), 1, 4, seed=0)
    bad = torch.tensor([[1.0, float("nan")], [0.0, 1.0]], dtype=dtype)
    with pytest.raises(OverflowError) as err:
        check_finite_kernels(model, 40, NTK=bad, NNGP=None)
    msg = str(err.value)
    assert "empirical NTK" in msg and "T=40" in msg and "sigma_w=3" in msg and "1 entries" in msg
    fix = "a smaller sigma_w or shorter sequences"
    assert msg.endswith(f"entries); use dtype=float64, {fix}" if advice else f"entries); use {fix}")
    check_finite_kernels(model, 40, NTK=torch.eye(2, dtype=dtype), NNGP=None)  # finite: silent


@pytest.mark.parametrize("readout", ["per_step", "last"])
def test_cross_kernel_with_shorter_second_batch_is_a_block_of_the_joint_kernel(readout):
    """x2's longest sequence is shorter than x1's: both sides are padded to a common length
    (per_step readouts are end-aligned), so K(x1, x2) is the x1-x2 block of K(x1 + x2)."""
    x1, x2 = random_sequences((6, 3, 5), 2, seed=12), random_sequences((4, 2), 2, seed=13)
    model = ElmanRNN(Architecture(readout=readout), 2, 7, seed=1, max_len=6)
    joint_t, joint_k = empirical_kernels(model, x1 + x2)
    first, second = slice(0, 3), slice(3, 5)
    for a, b, rows, cols in ((x1, x2, first, second), (x2, x1, second, first)):
        theta, nngp = empirical_kernels(model, a, b)
        assert rel_err(theta, joint_t[rows, cols]) < 1e-12
        assert rel_err(nngp, joint_k[rows, cols]) < 1e-12
