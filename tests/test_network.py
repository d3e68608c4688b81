"""The finite network computes exactly the SPEC's function (checked against an independent
NumPy loop), is invariant to batching/padding, and reproducible from its seed."""

import hashlib
import math

import numpy as np
import pytest
import torch
from conftest import random_sequences

from rntk_empirical import Architecture, network
from rntk_empirical.network import ElmanRNN

PHI = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "identity": lambda z: z}


def _documented_generator(seed: int, name: str) -> torch.Generator:
    """The documented rule (network.py module docstring): every random tensor comes from a
    CPU generator seeded by (seed, tensor name) -- the first 8 bytes of blake2b of
    "{seed}/{name}", little-endian, shifted right by one bit (a non-negative int64)."""
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def content_key(x: np.ndarray) -> int:
    """Sequences.keys: blake2b-8 of the float64 values, then of the int64 shape, >> 1."""
    arr = np.ascontiguousarray(x, dtype=np.float64)
    h = hashlib.blake2b(arr.tobytes(), digest_size=8)
    h.update(np.asarray(arr.shape, dtype=np.int64).tobytes())
    return int.from_bytes(h.digest(), "little") >> 1


def documented_h0(a: Architecture, seed: int, n: int, x: np.ndarray, d: int, l: int):
    """h^{l,0} of direction d for input x (SPEC section 1), drawn here by the rule:
    ``zero`` -> 0; ``shared`` -> s_h * N(0, I_n) named "d{d}_l{l}_h0" (one per network);
    ``per_input`` -> s_h * N(0, I_n) named "h0/{content key of x}/d{d}_l{l}"."""
    if a.h0 == "zero":
        return np.zeros(n)
    name = f"d{d}_l{l}_h0" if a.h0 == "shared" else f"h0/{content_key(x)}/d{d}_l{l}"
    xi = torch.randn(n, generator=_documented_generator(seed, name), dtype=torch.float64)
    return a.sigma_h * xi.numpy()


def numpy_reference(model: ElmanRNN, seqs: list[np.ndarray]) -> np.ndarray:
    """SPEC section 1, literally, one sequence at a time (ntk parameterization)."""
    a, n = model.arch, model.width
    P = {k: v.detach().numpy() for k, v in model.named_parameters()}
    phi = PHI[a.nonlinearity]
    out = []
    for x in seqs:
        f = 0.0
        for d in range(a.directions):
            xd = x if d == 0 else x[::-1]
            layer_in, dim = xd, x.shape[1]
            for l in range(a.depth):
                W, U, b = P[f"d{d}_l{l}_W"], P[f"d{d}_l{l}_U"], P[f"d{d}_l{l}_b"]
                h = documented_h0(a, model.seed, n, x, d, l)
                hs = []
                for t in range(len(xd)):
                    g = (
                        (a.sigma_w / math.sqrt(n)) * W @ h
                        + (a.sigma_u / math.sqrt(dim)) * U @ layer_in[t]
                        + a.sigma_b * b
                    )
                    h = phi(g)
                    hs.append(h)
                layer_in, dim = np.array(hs), n
            T, V = len(x), P[f"d{d}_V"]
            if a.readout == "last":
                f = f + (a.sigma_v / math.sqrt(n)) * V[0] @ layer_in[-1]
            elif a.readout == "avg":
                f = f + (a.sigma_v / math.sqrt(n)) * V[0] @ layer_in.mean(0)
            elif a.readout == "ema":  # lam^(T-1-t) on step t, normalized to sum to 1
                w = a.ema_decay ** (T - 1 - np.arange(T))
                f = f + (a.sigma_v / math.sqrt(n)) * V[0] @ (w @ layer_in) / w.sum()
            elif a.readout == "paper_avg":  # per_step with the final V_0 weighted sqrt(2)
                f = f + a.sigma_v / math.sqrt(n * T) * sum(
                    (math.sqrt(2) if t == T - 1 else 1.0) * V[T - 1 - t, 0] @ layer_in[t]
                    for t in range(T)
                )
            else:
                f = f + a.sigma_v / math.sqrt(n * T) * sum(
                    V[T - 1 - t, 0] @ layer_in[t] for t in range(T)
                )
        out.append(f)
    return np.array(out)


ARCHS = [
    dict(),
    dict(readout="avg", nonlinearity="tanh"),
    dict(readout="per_step", depth=2),
    dict(bidirectional=True, nonlinearity="identity", sigma_w=0.8),
    dict(h0="shared", sigma_h=0.5),
    dict(h0="shared", sigma_h=1.7, depth=2, bidirectional=True, readout="avg"),
    dict(h0="per_input", sigma_h=0.5, depth=2),
    dict(h0="per_input", sigma_h=1.7, bidirectional=True, readout="per_step"),
    dict(readout="ema", ema_decay=0.6, depth=2, h0="shared", sigma_h=0.5),
    dict(readout="paper_avg", bidirectional=True),
]


@pytest.mark.parametrize("kw", ARCHS, ids=str)
def test_matches_numpy_reference_on_mixed_lengths(kw):
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((T, 3)) for T in (5, 2, 7)]
    model = ElmanRNN(Architecture(**kw), 3, 9, seed=3, max_len=7)
    got = model([torch.from_numpy(s) for s in seqs]).detach().numpy()
    np.testing.assert_allclose(got, numpy_reference(model, seqs), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", ARCHS, ids=str)
def test_output_independent_of_batch_and_padding(kw):
    seqs = random_sequences((3, 8, 5), 2, seed=1)
    model = ElmanRNN(Architecture(**kw), 2, 6, seed=0, max_len=8)
    together = model(seqs)
    alone = torch.stack([model([s])[0] for s in seqs])
    reordered = model([seqs[2], seqs[0], seqs[1]])
    torch.testing.assert_close(together, alone, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(reordered, together[[2, 0, 1]], rtol=1e-13, atol=1e-13)


def test_standard_parameterization_is_same_function_at_init():
    """(sigma_b = 2 exactly: the draw's scale-1 shortcut must not swallow other scales)"""
    x = torch.randn(4, 6, 3)
    for kw in (
        dict(sigma_b=2.0, sigma_w=0.7),
        dict(readout="per_step", depth=2, bidirectional=True, sigma_u=2.0 * math.sqrt(3)),
    ):
        f_ntk = ElmanRNN(Architecture(**kw), 3, 16, seed=5, max_len=6)(x)
        f_std = ElmanRNN(Architecture(parameterization="standard", **kw), 3, 16, seed=5, max_len=6)(
            x
        )
        torch.testing.assert_close(f_ntk, f_std, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
def test_seed_reproducible_and_distinct(init):
    x = torch.randn(3, 4, 2)
    a = Architecture(h0="per_input", sigma_h=1.0, init=init)
    f1 = ElmanRNN(a, 2, 32, seed=7)(x)
    torch.testing.assert_close(ElmanRNN(a, 2, 32, seed=7)(x), f1, rtol=0, atol=0)
    assert (ElmanRNN(a, 2, 32, seed=8)(x) - f1).abs().max() > 1e-3
    for name, p in ElmanRNN(a, 2, 32, seed=8).named_parameters():  # every tensor is redrawn
        assert not torch.equal(p, getattr(ElmanRNN(a, 2, 32, seed=7), name)), name


def test_parameters_do_not_depend_on_the_default_dtype_or_the_draw_blocks(monkeypatch):
    """Draws are float64 whatever torch's default dtype, and drawing in row blocks (the
    host-memory bound, forced here with 1 KiB blocks) is bit-identical to one draw, in
    float64 (in place) and float32 (through the float64 buffer)."""
    a = Architecture(h0="shared", sigma_h=0.5, sigma_b=2.0, parameterization="standard")
    ref = ElmanRNN(a, 3, 40, seed=4)
    ref32 = ElmanRNN(a, 3, 40, seed=4, dtype=torch.float32)
    monkeypatch.setattr(network, "DRAW_BLOCK_BYTES", 1024)
    torch.set_default_dtype(torch.float32)
    try:
        blocked = ElmanRNN(a, 3, 40, seed=4, dtype=torch.float64)
        blocked32 = ElmanRNN(a, 3, 40, seed=4, dtype=torch.float32)
    finally:
        torch.set_default_dtype(torch.float64)
    for name, t in [*ref.named_parameters(), *ref.named_buffers()]:
        assert torch.equal(getattr(blocked, name), t), name
        assert torch.equal(getattr(blocked32, name), getattr(ref32, name)), name
        assert torch.equal(getattr(ref32, name), t.float()), name


def test_arch_must_be_an_architecture():
    with pytest.raises(TypeError, match="arch must be an Architecture, got str"):
        ElmanRNN("relu", 2, 4)


def test_per_input_state_depends_on_sequence_not_position():
    a = Architecture(h0="per_input", sigma_h=2.0)
    model = ElmanRNN(a, 2, 8, seed=0)
    x, y = torch.randn(4, 2), torch.randn(4, 2)
    s = model.initial_states(model.prepare([x, y, x]))
    torch.testing.assert_close(s[:, :, 0], s[:, :, 2], rtol=0, atol=0)
    assert (s[:, :, 0] - s[:, :, 1]).abs().max() > 1e-3


def test_content_keys_follow_the_documented_rule():
    seqs = random_sequences((4, 2), 3, seed=5)
    keys = ElmanRNN(Architecture(), 3, 4).prepare(seqs).keys
    assert keys == tuple(content_key(s.numpy()) for s in seqs)


@pytest.mark.parametrize("mode", ["shared", "per_input"])
def test_initial_state_scale_and_sharing(mode):
    """h^{l,0} = s_h xi with xi ~ N(0, I_n): the mean square of the entries is s_h^2 (n = 4000
    per (direction, layer): relative sd sqrt(2/n) = 2.2%, band 10%, while a missing or squared
    s_h = 0.6 is off by 64% or more); independent across layers and directions; the same for
    every input (shared) or the same exactly for equal inputs and uncorrelated otherwise
    (per_input)."""
    n, s_h = 4000, 0.6
    a = Architecture(h0=mode, sigma_h=s_h, depth=2, bidirectional=True)
    model = ElmanRNN(a, 2, n, seed=3)
    x = random_sequences((3, 4, 3), 2, seed=1)
    x[2] = x[0].clone()
    h0 = model.initial_states(model.prepare(x))  # (D, L, N, n)
    assert h0.shape == (2, 2, 3, n)
    ms = h0.pow(2).mean(-1)  # (D, L, N)
    assert ((ms / s_h**2 - 1).abs() < 0.1).all(), ms
    flat = h0.reshape(4, 3, n) / s_h
    corr = torch.einsum("ain,bin->abi", flat, flat) / n  # across (direction, layer)
    off = corr - torch.eye(4)[:, :, None] * corr
    assert off.abs().max() < 5 / n**0.5  # sd 1/sqrt(n); 5 sd
    same_01 = float((flat[:, 0] * flat[:, 1]).sum(-1).abs().max()) / n
    if mode == "shared":
        torch.testing.assert_close(h0[:, :, 0], h0[:, :, 1], rtol=0, atol=0)
    else:
        assert same_01 < 5 / n**0.5
    torch.testing.assert_close(h0[:, :, 0], h0[:, :, 2], rtol=0, atol=0)
    for d in range(2):
        for l in range(2):
            want = documented_h0(a, 3, n, x[1].numpy(), d, l)
            np.testing.assert_array_equal(h0[d, l, 1].numpy(), want)


def test_orthogonal_init_is_scaled_orthogonal():
    model = ElmanRNN(Architecture(init="orthogonal"), 2, 50, seed=0)
    W = model.d0_l0_W.detach() / math.sqrt(50)
    torch.testing.assert_close(W @ W.T, torch.eye(50), rtol=0, atol=1e-12)


def test_float32_matches_float64():
    x = torch.randn(3, 5, 2)
    f64 = ElmanRNN(Architecture(), 2, 64, seed=0)(x)
    f32 = ElmanRNN(Architecture(), 2, 64, seed=0, dtype=torch.float32)(x.float())
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), f64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (lambda m: m(torch.randn(2, 3, 4)), ValueError, "feature size"),
        (lambda m: m(torch.randn(3, 2)), ValueError, r"\(N, T, m\)"),
        (lambda m: m([torch.randn(0, 2)]), ValueError, "empty sequence"),
        (lambda m: m([]), ValueError, "empty batch"),
        (lambda m: m(torch.full((1, 3, 2), float("nan"))), ValueError, "NaN"),
        (lambda m: m([torch.randn(3, 2), torch.randn(3, 5)]), ValueError, "feature sizes"),
        (lambda m: m("abc"), TypeError, "tensor"),
    ],
)
def test_bad_inputs_raise_clear_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make(ElmanRNN(Architecture(), 2, 4))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(width=0), "width"),
        (dict(input_dim=-1), "input_dim"),
        (dict(out_dim=0), "out_dim"),
    ],
)
def test_bad_construction(kwargs, match):
    base = dict(arch=Architecture(), input_dim=2, width=4)
    with pytest.raises(ValueError, match=match):
        ElmanRNN(**{**base, **kwargs})


def test_per_step_needs_max_len_and_respects_it():
    with pytest.raises(ValueError, match="max_len"):
        ElmanRNN(Architecture(readout="per_step"), 2, 4)
    m = ElmanRNN(Architecture(readout="per_step"), 2, 4, max_len=3)
    with pytest.raises(ValueError, match="max_len=3"):
        m(torch.randn(1, 4, 2))


def test_cuda_request_without_cuda_is_clear():
    if torch.cuda.is_available():
        assert ElmanRNN(Architecture(), 2, 4, device="cuda").device.type == "cuda"
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            ElmanRNN(Architecture(), 2, 4, device="cuda")
