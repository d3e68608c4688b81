"""The walk-throughs of docs/extending.md, done as written: each addition works through the
public API on every path."""

from __future__ import annotations

import pytest
import torch
from conftest import random_sequences, rel_err

from rntk_empirical import Architecture, ElmanRNN, analytic_kernels, empirical_ntk
from rntk_empirical.analytic import analytic_kernel_bank
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
