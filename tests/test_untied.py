"""Untied networks (``ElmanRNN(..., untied=True)``: independent cell parameters at every
step, the readout shared; the tying study of docs/gated.md): the same function as the tied
network when every step holds the tied draws, and the exact empirical NTK/NNGP against an
independent autograd calculation."""

from __future__ import annotations

import pytest
import torch
from conftest import random_sequences, rel_err

from rntk_empirical import Architecture, ElmanRNN
from rntk_empirical.empirical import empirical_kernels, empirical_nngp

CELLS = ("elman", "minimalrnn", "gru")


def independent_ntk(model: ElmanRNN, xs: list[torch.Tensor]) -> torch.Tensor:
    """``(N, N, k, k)`` from per-sequence, per-output autograd gradients (no torch.func); a
    short sequence does not use the first steps' draws of an untied network (gradient 0)."""
    params = list(model.parameters())
    grads = []
    for x in xs:
        out = model([x])[0]
        rows = []
        for j in range(len(out)):
            g = torch.autograd.grad(out[j], params, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat([(torch.zeros_like(p) if d is None else d).reshape(-1)
                           for d, p in zip(g, params)])
            )  # fmt: skip
        grads.append(torch.stack(rows))
    J = torch.stack(grads)  # (N, k, P)
    return torch.einsum("ikp,jlp->ijkl", J, J)


def _arch(cell: str, **kw) -> Architecture:
    return Architecture(cell=cell, gate="erf", nonlinearity="erf", sigma_w=1.1, sigma_b=0.3, **kw)


def _tied_copy(untied: ElmanRNN, tied: ElmanRNN) -> dict[str, torch.Tensor]:
    """The untied network's parameters with every step's draws replaced by the tied ones."""
    P = dict(tied.named_parameters())
    out = {}
    for name in dict(untied.named_parameters()):
        if "_t" in name:  # d{d}_l{l}_t{k}_{param} -> d{d}_l{l}_{param}
            d, l, _, rest = name.split("_", 3)
            out[name] = P[f"{d}_{l}_{rest}"].detach().clone()
        else:
            out[name] = P[name].detach().clone()
    return out


@pytest.mark.parametrize("cell", CELLS)
def test_untied_with_the_tied_draws_is_the_tied_network(cell):
    """At T = 1 (one draw per parameter either way) and, with every step given the tied draws,
    at T = 4 with mixed lengths, depth 2, bidirectional and per-input h0."""
    arch = _arch(cell, depth=2, bidirectional=True, h0="per_input", readout="avg", sigma_h=0.5)
    tied = ElmanRNN(arch, 3, 6, seed=2, out_dim=2)
    for lengths, max_len in (((1, 1, 1), 1), ((4, 2, 3), 5)):
        xs = random_sequences(lengths, 3, seed=4)
        untied = ElmanRNN(arch, 3, 6, seed=2, out_dim=2, untied=True, max_len=max_len)
        assert len(list(untied.parameters())) == 2 * (
            1 + 2 * max_len * len(untied.layer_params[0])
        )
        before = untied(xs)
        with torch.no_grad():
            for name, p in _tied_copy(untied, tied).items():
                getattr(untied, name).copy_(p)
        after = untied(xs)
        assert rel_err(after, tied(xs)) < 1e-14
        assert rel_err(before, after) > 1e-2  # its own draws make it another function


def test_untied_draws_are_independent_and_end_aligned():
    """Every step has its own draw; a sequence gives the same output alone and in a batch
    padded to a longer length (steps counted from the end)."""
    arch = _arch("gru")
    net = ElmanRNN(arch, 2, 5, seed=0, untied=True, max_len=4)
    P = dict(net.named_parameters())
    assert not torch.equal(P["d0_l0_t0_W_z"], P["d0_l0_t1_W_z"])
    xs = random_sequences((2, 4), 2, seed=1)
    assert torch.allclose(net(xs)[0], net([xs[0]])[0], rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="untied=True needs max_len"):
        ElmanRNN(arch, 2, 5, untied=True)
    with pytest.raises(ValueError, match="untied draws for at most max_len=4"):
        net(random_sequences((5,), 2))


@pytest.mark.parametrize("cell", CELLS)
def test_untied_ntk_and_nngp_against_autograd(cell):
    """Every method equals per-sequence, per-output autograd gradients to 1e-10 (the
    structured method must not apply Elman's tied form); the NNGP is the readout's."""
    arch = _arch(cell, depth=2, readout="avg", h0="shared", sigma_h=0.4)
    model = ElmanRNN(arch, 2, 5, seed=1, out_dim=2, untied=True, max_len=4)
    xs = random_sequences((4, 2, 3), 2, seed=7)
    ref = independent_ntk(model, xs)
    x2 = random_sequences((3, 1), 2, seed=8)
    k_ref = empirical_nngp(model, xs, x2)
    for method in ("ntk_vp", "jacobian", "structured"):
        got, _ = empirical_kernels(model, xs, method=method, nngp=False)
        assert rel_err(got, ref) < 1e-10, method
        _, k = empirical_kernels(model, xs, x2, method=method)
        assert rel_err(k, k_ref) < 1e-14
    # tied structured form on an untied network: refused, never silently wrong
    with pytest.raises(ValueError, match="untied weights: no structured form"):
        seqs = model.prepare(xs)
        probes = torch.zeros(1, 2, 3, 3, 5, dtype=torch.float64)
        model.apply_padded(model.param_dict(), *model.forward_args(seqs), probes=probes)
