"""The gated cells (minimalRNN, GRU; rntk_empirical/cells.py, docs/gated.md): the finite
network against an independent per-sequence implementation of the formulas, parameterizations,
initializations, determinism, the exact empirical NTK/NNGP on every method, and what the
analytic (particle-simulated) kernels refuse."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import random_sequences, rel_err
from hydra import compose, initialize_config_dir

from rntk_empirical import Architecture, ElmanRNN, analytic_kernels, empirical_ntk
from rntk_empirical.empirical import empirical_kernels, empirical_nngp
from rntk_empirical.readouts import get_readout

CELLS = ("minimalrnn", "gru")
GATE_FN = {
    "sigmoid": lambda v: 1.0 / (1.0 + torch.exp(-v)),
    "erf": lambda v: 0.5 * (1.0 + torch.erf(v)),
}


def reference_output(model: ElmanRNN, x: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """f(x) ``(k,)`` for one unpadded sequence ``(T, m)``, written from the formulas of
    docs/gated.md with the raw parameters (ntk parameterization), not through the cell."""
    a, n, P = model.arch, model.width, dict(model.named_parameters())
    g, phi = GATE_FN[a.gate], model.nonlinearity.phi
    T, out = x.shape[0], 0.0
    for d in range(a.directions):
        inp = x if d == 0 else x.flip(0)
        for l in range(a.depth):
            dim = inp.shape[1]
            aw, au, ab = a.sigma_w / math.sqrt(n), a.sigma_u / math.sqrt(dim), a.sigma_b
            q = f"d{d}_l{l}_"

            def pre(c, h, t, q=q, inp=inp, aw=aw, au=au, ab=ab):
                w, u, b = P[q + "W_" + c], P[q + "U_" + c], P[q + "b_" + c]
                return aw * w @ h + au * u @ inp[t] + ab * b

            h = h0[d, l] if h0 is not None else torch.zeros(n, dtype=x.dtype)
            states = []
            for t in range(T):
                if a.cell == "minimalrnn":
                    u = g(pre("u", h, t))
                    cand = phi(au * P[q + "U_a"] @ inp[t] + ab * P[q + "b_a"])
                    h = u * h + (1 - u) * cand
                else:
                    z, r = g(pre("z", h, t)), g(pre("r", h, t))
                    cand = phi(
                        aw * P[q + "W_h"] @ (r * h) + au * P[q + "U_h"] @ inp[t] + ab * P[q + "b_h"]
                    )
                    h = (1 - z) * h + z * cand
                states.append(h)
            inp = torch.stack(states)
        w = get_readout(a.readout).profile_values(T, a).flip(0).to(x.dtype)
        div = float(get_readout(a.readout).divisors(torch.tensor([float(T)]), a)[0])
        feat = (w[:, None] * inp).sum(0) / div
        out = out + a.sigma_v / math.sqrt(n) * P[f"d{d}_V"] @ feat
    return out


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("gate", ("sigmoid", "erf"))
def test_finite_network_matches_the_formulas(cell, gate):
    """Depth 2, bidirectional, per-input h0, mixed lengths (left padding holds the state),
    two outputs, last and avg readouts: every row equals the per-sequence formula."""
    xs = random_sequences((4, 2, 5), 3, seed=1)
    for readout in ("last", "avg"):
        arch = Architecture(
            cell=cell, gate=gate, nonlinearity="tanh", sigma_w=1.2, sigma_b=0.3, depth=2,
            bidirectional=True, readout=readout, h0="per_input", sigma_h=0.7,
        )  # fmt: skip
        model = ElmanRNN(arch, 3, 7, seed=3, out_dim=2)
        got = model(xs)
        h0 = model.initial_states(model.prepare(xs))
        for i, x in enumerate(xs):
            ref = reference_output(model, x, h0[:, :, i])
            assert rel_err(got[i], ref) < 1e-13, (readout, i)


@pytest.mark.parametrize("cell", CELLS)
def test_parameterizations_inits_and_determinism(cell):
    arch = Architecture(cell=cell, gate="erf", nonlinearity="erf", sigma_w=0.9, h0="shared",
                        sigma_h=0.5)  # fmt: skip
    xs = random_sequences((3, 3), 2, seed=2)
    ntk = ElmanRNN(arch, 2, 9, seed=5)
    std = ElmanRNN(arch.replace(parameterization="standard"), 2, 9, seed=5)
    assert rel_err(std(xs), ntk(xs)) < 1e-13  # the same function, multipliers folded
    again = ElmanRNN(arch, 2, 9, seed=5)
    other = ElmanRNN(arch, 2, 9, seed=6)
    P, Q, R = (dict(m.named_parameters()) for m in (ntk, again, other))
    assert P.keys() == Q.keys() and all(torch.equal(P[k], Q[k]) for k in P)
    assert all(not torch.equal(P[k], R[k]) for k in P)
    recurrent = [k for k in P if "_W_" in k]
    assert len(recurrent) == (1 if cell == "minimalrnn" else 3)
    # each tensor has its own generator: the gate matrices are different draws
    assert all(not torch.equal(P[recurrent[0]], P[k]) for k in recurrent[1:])
    orth = dict(ElmanRNN(arch.replace(init="orthogonal"), 2, 9, seed=5).named_parameters())
    for k in recurrent:  # (s_w / sqrt(n)) W = s_w Q, Q orthogonal
        assert rel_err(orth[k].T @ orth[k], 9 * torch.eye(9, dtype=torch.float64)) < 1e-13
    for k in P:  # the rest is the gaussian network's
        if k not in recurrent:
            assert torch.equal(orth[k], P[k])


def independent_ntk(model: ElmanRNN, xs: list[torch.Tensor]) -> torch.Tensor:
    """``(N, N, k, k)`` from per-sequence, per-output autograd gradients (no torch.func)."""
    params = list(model.parameters())
    grads = []
    for x in xs:
        out = model([x])[0]
        rows = [torch.autograd.grad(out[j], params, retain_graph=True) for j in range(len(out))]
        grads.append(torch.stack([torch.cat([g.reshape(-1) for g in row]) for row in rows]))
    J = torch.stack(grads)  # (N, k, P)
    return torch.einsum("ikp,jlp->ijkl", J, J)


@pytest.mark.parametrize("cell", CELLS)
def test_empirical_ntk_and_nngp_on_every_method(cell):
    arch = Architecture(
        cell=cell, gate="sigmoid", nonlinearity="relu", sigma_w=1.0, depth=2, bidirectional=True,
        readout="avg", h0="per_input", sigma_h=0.4, init="orthogonal",
    )  # fmt: skip
    model = ElmanRNN(arch, 2, 6, seed=1, out_dim=2)
    xs = random_sequences((4, 2, 5), 2, seed=7)
    ref = independent_ntk(model, xs)
    x2 = random_sequences((3, 1), 2, seed=8)
    for other in (None, x2):
        vp, k_vp = empirical_kernels(model, xs, other, method="ntk_vp", nngp=True)
        if other is None:
            assert rel_err(vp, ref) < 1e-10
        assert rel_err(k_vp, empirical_nngp(model, xs, other)) < 1e-14
        for method, chunk in (("jacobian", None), ("jacobian", 1), ("structured", 2)):
            got, k = empirical_kernels(model, xs, other, method=method, chunk_size=chunk, nngp=True)
            assert rel_err(got, vp) < 1e-10, (method, chunk)
            assert rel_err(k, k_vp) < 1e-14
    # the NNGP is (s_v^2 / n) <z, z'> of the readout features: by hand for one output
    single = ElmanRNN(arch.replace(bidirectional=False), 2, 6, seed=1)
    feats = []
    for x in xs:  # f = a_v V z: z is the gradient of f with respect to V, over a_v
        (gv,) = torch.autograd.grad(single([x])[0], single.d0_V)
        feats.append(gv[0] / (arch.sigma_v / math.sqrt(6)))
    F = torch.stack(feats)
    by_hand = arch.sigma_v**2 / 6 * F @ F.T
    assert rel_err(empirical_nngp(single, xs), by_hand) < 1e-13


@pytest.mark.parametrize("cell", CELLS)
def test_analytic_kernels_refuse_what_the_simulation_lacks(cell):
    arch = Architecture(cell=cell, gate="erf", nonlinearity="erf")
    with pytest.raises(ValueError, match="depth=1 only"):
        analytic_kernels(arch.replace(depth=2), random_sequences((3,), 2))
    with pytest.raises(ValueError, match="particle simulation"):
        analytic_kernels(arch.replace(cell="elman"), random_sequences((3,), 2), particles=64)
    with pytest.raises(ValueError, match="gated"):
        ElmanRNN(arch, 2, 4).cell.layer({}, {}, torch.zeros(1, 1, 2), torch.zeros(1, 4), None, None)


def test_configs_compose_and_the_convergence_experiment_takes_them():
    from pathlib import Path

    from experiments.convergence import run as convergence

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    expected = {
        "gru_erf": ("gru", "erf", "erf"),
        "minimalrnn_erf": ("minimalrnn", "erf", "erf"),
        "gru_sigmoid": ("gru", "sigmoid", "tanh"),
    }
    for name, fields in expected.items():
        with initialize_config_dir(config_dir=conf, version_base="1.3"):
            cfg = compose(config_name="convergence", overrides=[f"arch={name}"])
        s = convergence.settings_from_config(cfg)
        a = s.arch.to_architecture()
        assert (a.cell, a.gate, a.nonlinearity) == fields
        assert empirical_ntk(ElmanRNN(a, 2, 4), random_sequences((3, 2), 2)).shape == (2, 2)
        assert convergence.prepare(s).arch == a
        with initialize_config_dir(config_dir=conf, version_base="1.3"):
            cfg = compose(config_name="convergence", overrides=[f"arch={name}", "arch.h0=shared"])
        with pytest.raises(ValueError, match="h0='zero' only"):
            convergence.prepare(convergence.settings_from_config(cfg))
