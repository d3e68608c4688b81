"""The walk-throughs of docs/extending.md, done as written: each addition works through the
public API on every path."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import random_sequences, rel_err

from rntk_empirical import Architecture, ElmanRNN, analytic_kernels, empirical_ntk
from rntk_empirical.analytic import analytic_kernel_bank
from rntk_empirical.cells import Cell, Param, register_cell, unregister_cell
from rntk_empirical.readouts import Readout, register_readout, unregister_readout


@pytest.fixture
def tail2():
    """The readout of docs/extending.md, "Add a readout": the mean of the last two states."""
    register_readout(
        Readout(
            "tail2",
            profile=lambda d, arch: (d < 2).to(torch.float64),
            divisor=lambda lengths, arch: lengths.clamp(max=2.0),
            independent=False,
        )
    )
    yield "tail2"
    unregister_readout("tail2")


def test_add_a_readout(tail2):
    # shared h0: a prefix of a sequence starts from the same state (per_input would not)
    arch = Architecture(depth=2, readout=tail2, h0="shared", sigma_h=0.6, sigma_b=0.3)
    xs = random_sequences((4, 1, 6, 3), 2, seed=3)
    # the finite network: f = a_v V (h^{L,T-1} + h^{L,T}) / 2 (a length-1 sequence: h^{L,1})
    model = ElmanRNN(arch, 2, 7, seed=1, out_dim=2)
    last = ElmanRNN(arch.replace(readout="last"), 2, 7, seed=1, out_dim=2)
    for i, x in enumerate(xs):
        states = [last([x[:t]])[0] for t in range(1, x.shape[0] + 1)]  # a_v V h^{L,t}
        want = sum(states[-2:]) / len(states[-2:])
        assert rel_err(model(xs)[i], want) < 1e-12
    # the empirical NTK: every method, k = 2 outputs
    ref = empirical_ntk(model, xs, method="structured")
    for method in ("jacobian", "ntk_vp"):
        assert rel_err(empirical_ntk(model, xs, method=method), ref) < 1e-10
    # the analytic kernels: every path equal; = avg on length 2, = last on length 1
    leaf = [x.clone().requires_grad_() for x in xs]
    autograd = analytic_kernels(arch, leaf)[0].detach()
    for backend in ("torch", "numba"):
        assert rel_err(analytic_kernels(arch, xs, backend=backend)[0], autograd) < 1e-12
        bank = analytic_kernel_bank(arch, xs, readouts=("last", tail2), backend=backend)
        assert rel_err(bank[(2, tail2)][0], autograd) < 1e-12
    pair = random_sequences((2, 2), 2, seed=4)
    for short, other in ((pair, "avg"), ([s[:1] for s in pair], "last")):
        got = analytic_kernels(arch, short)[0]
        assert rel_err(got, analytic_kernels(arch.replace(readout=other), short)[0]) < 1e-14
    with pytest.raises(ValueError, match="exists"):
        register_readout(Readout(tail2, lambda d, a: d, lambda n, a: n))


class ToyGatedCell(Cell):
    """The cell of docs/extending.md, "Add a cell": a gated Elman step with an input gate,

    z = sigmoid(a_z Z x_t + c),  h_t = (1 - z) h_{t-1} + z phi(a_w W h_{t-1} + a_u U x_t + a_b b)
    """

    name = "toygate"

    def parameters(self, arch, width, in_dim):
        n = width
        return [
            Param("W", (n, n), arch.sigma_w / math.sqrt(n), orthogonal=True),
            Param("U", (n, in_dim), arch.sigma_u / math.sqrt(in_dim)),
            Param("b", (n,), arch.sigma_b),
            Param("Z", (n, in_dim), 1.0 / math.sqrt(in_dim)),
            Param("c", (n,), 1.0),
        ]

    def layer(self, p, a, x, h, keep, phi, probe=None, record=None, arch=None):
        drive = a["U"] * (x @ p["U"].T) + a["b"] * p["b"]
        gate = torch.sigmoid(a["Z"] * (x @ p["Z"].T) + a["c"] * p["c"])
        states = []
        for t in range(x.shape[1]):
            new = (1 - gate[:, t]) * h + gate[:, t] * phi(drive[:, t] + a["W"] * (h @ p["W"].T))
            h = new if keep is None else torch.where(keep[:, t], new, h)
            states.append(h)
        return torch.stack(states, 1)


@pytest.fixture
def toygate():
    register_cell(ToyGatedCell())
    yield "toygate"
    unregister_cell("toygate")


def test_add_a_cell(toygate):
    arch = Architecture(cell=toygate, depth=2, readout="avg", h0="per_input", sigma_h=0.5)
    model = ElmanRNN(arch, 2, 6, seed=2, out_dim=2)
    assert {"d0_l1_Z", "d0_l1_c", "d0_l0_W"} <= set(dict(model.named_parameters()))
    xs = random_sequences((4, 2, 5, 3), 2, seed=5)
    # the finite network: each sequence alone (no padding) gives its row of the batch
    out = model(xs)
    for i, x in enumerate(xs):
        assert rel_err(model([x])[0], out[i]) < 1e-13
    # one step of the first layer by hand (h0 = s_h xi of per_input, a = multipliers)
    P = dict(model.named_parameters())
    h0 = model.initial_states(model.prepare([xs[0]]))[0, 0, 0]
    x0, n = xs[0][0], 6
    z = torch.sigmoid(P["d0_l0_Z"] @ x0 / math.sqrt(2) + P["d0_l0_c"])
    g = (
        arch.sigma_w / math.sqrt(n) * P["d0_l0_W"] @ h0
        + arch.sigma_u / math.sqrt(2) * P["d0_l0_U"] @ x0
        + arch.sigma_b * P["d0_l0_b"]
    )
    first = model.cell.layer(
        {k: P[f"d0_l0_{k}"] for k in "WUbZc"},
        model.layer_mult[0],
        xs[0][None, :1],
        h0[None],
        None,
        torch.relu,
    )
    assert rel_err(first[0, 0], (1 - z) * h0 + z * torch.relu(g)) < 1e-13
    # the empirical NTK through the generic fallback: jacobian (torch.func Jacobians) and
    # ntk_vp agree, chunked or not, symmetric or not; structured falls back to jacobian
    x2 = random_sequences((5, 1), 2, seed=6)
    for other in (None, x2):
        ref = empirical_ntk(model, xs, other, method="ntk_vp")
        for method, chunk in (("jacobian", None), ("jacobian", 1), ("structured", 3)):
            got = empirical_ntk(model, xs, other, method=method, chunk_size=chunk)
            assert rel_err(got, ref) < 1e-10, (method, chunk)
    # no analytic kernel: a one-line error
    with pytest.raises(ValueError, match="cell 'toygate' has no analytic kernel"):
        analytic_kernels(arch, xs)
    with pytest.raises(ValueError, match="Architecture.cell='lstm'"):
        Architecture(cell="lstm")
