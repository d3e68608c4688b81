"""The infinite-width NTK and NNGP of the gated cells by the particle simulation
(rntk_empirical/gated_limit.py, docs/gated.md sections 3-4), against independent calculations:
the exact one-step kernels (rntk_empirical/gated_exact.py), the orthant-probability NNGP of the
erf-gated minimalRNN, the Elman cell through the same engine against the exact RNTK (tied and
untied), and finite networks' seed means. Agreement is asserted within a few of the
simulation's own standard errors, which are themselves bounded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_sequences, rel_err

from rntk_empirical import Architecture, ElmanRNN, analytic_kernels
from rntk_empirical.empirical import empirical_kernels
from rntk_empirical.gated_exact import exact_kernels_t2
from rntk_empirical.gated_kernels import minimalrnn_nngp
from rntk_empirical.gated_limit import limit_kernels


def within_errors(estimate: torch.Tensor, exact: torch.Tensor, se: torch.Tensor) -> float:
    """||estimate - exact||_F in units of the standard errors' Frobenius norm."""
    return float((estimate - exact).norm() / se.norm())


@pytest.mark.parametrize(
    "cell, gate, phi", [("gru", "erf", "erf"), ("minimalrnn", "erf", "erf"),
                        ("gru", "sigmoid", "tanh")],
)  # fmt: skip
def test_one_step_is_exact_against_quadrature(cell, gate, phi):
    arch = Architecture(
        cell=cell, gate=gate, nonlinearity=phi, sigma_w=1.3, sigma_u=1.1, sigma_b=0.4,
        sigma_v=0.9,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(3)
    x1 = torch.randn(4, 1, 3, generator=gen, dtype=torch.float64)
    x2 = torch.cat([x1[1:3], torch.randn(2, 1, 3, generator=gen, dtype=torch.float64)])
    Th, K = exact_kernels_t2(arch, x1, x2)  # deterministic (docs/gated.md section 5)
    r = limit_kernels(arch, x1, x2, particles=2**12, batches=8)
    assert r.relative_se("ntk") < 4e-3 and r.relative_se("nngp") < 4e-3
    assert within_errors(r.ntk, Th, r.ntk_se) < 5
    assert within_errors(r.nngp, K, r.nngp_se) < 5
    # the repeated sequences give equal rows, and tied=False changes nothing at one step
    untied = limit_kernels(arch, x1, x2, particles=2**12, batches=8, tied=False)
    assert rel_err(untied.ntk, r.ntk) < 5 * r.relative_se("ntk")


@pytest.mark.parametrize("readout", ["last", "avg"])
def test_minimalrnn_nngp_against_orthant_probabilities(readout):
    arch = Architecture(
        cell="minimalrnn", gate="erf", nonlinearity="erf", sigma_w=1.3, sigma_u=0.8,
        sigma_b=0.4, sigma_v=1.1, readout=readout,
    )  # fmt: skip
    x = random_sequences((4, 2, 3), 3, seed=5)
    exact = minimalrnn_nngp(arch, x)  # orthant probabilities, ~1e-6
    r = limit_kernels(arch, x, ntk=False, particles=2**13, batches=8)
    assert r.relative_se("nngp") < 4e-3
    assert within_errors(r.nngp, exact, r.nngp_se) < 5


@pytest.mark.parametrize(
    "readout, tied", [("last", True), ("avg", True), ("per_step", True), ("last", False)]
)
def test_elman_through_the_engine_matches_the_rntk(readout, tied):
    """The same engine on the Elman cell against the exact recursion; untied weights give the
    same kernel for the last readout on equal lengths (Tensor Programs II). per_step: an
    independent V_t per step (its v_t sampled, not integrated)."""
    arch = Architecture(nonlinearity="erf", sigma_w=1.2, sigma_b=0.3, readout=readout)
    lengths = (5, 5, 5, 5) if not tied else (5, 3, 5, 4)
    x = random_sequences(lengths, 3, seed=2)
    theta, nngp = analytic_kernels(arch, x, backend="torch")
    r = limit_kernels(arch, x, particles=2**13, batches=8, tied=tied)
    assert r.relative_se("ntk") < 6e-3 and r.relative_se("nngp") < 6e-3
    assert within_errors(r.ntk, theta, r.ntk_se) < 5
    assert within_errors(r.nngp, nngp, r.nngp_se) < 5


def test_untied_gru_is_another_kernel():
    """Tying changes the gated kernel: the untied GRU differs by many standard errors (the
    size of the difference is a measurement of the tying study, not asserted here)."""
    arch = Architecture(cell="gru", gate="erf", nonlinearity="erf", sigma_w=1.5, readout="avg")
    x = random_sequences((4, 4, 4), 3, seed=1)
    tied = limit_kernels(arch, x, particles=2**11, batches=4)
    untied = limit_kernels(arch, x, particles=2**11, batches=4, tied=False)
    assert within_errors(untied.ntk, tied.ntk, tied.ntk_se + untied.ntk_se) > 10


@pytest.mark.parametrize(
    "cell, phi, readout, tied",
    [("minimalrnn", "erf", "avg", True), ("minimalrnn", "relu", "per_step", False),
     ("gru", "erf", "last", True), ("gru", "relu", "per_step", False)],
)  # fmt: skip
def test_exact_candidate_matches_the_sampled_candidate(cell, phi, readout, tied):
    """The candidate integrated exactly (the default, docs/gated.md section 3.3) and sampled
    like the gates (candidate='particles', the estimator before it) estimate the same kernels
    (mixed lengths, shared and independent readouts, tied and untied; relu: a candidate with
    a nonzero mean), the exact one with the smaller standard error at equal particles
    (measured 2.5-10x)."""
    arch = Architecture(
        cell=cell, gate="erf", nonlinearity=phi, sigma_w=1.2, sigma_b=0.3, readout=readout
    )
    x = random_sequences((3, 2, 3), 3, seed=6)
    exact = limit_kernels(arch, x, particles=2**11, batches=8, tied=tied)
    sampled = limit_kernels(arch, x, particles=2**11, batches=8, tied=tied, candidate="particles")
    for which in ("ntk", "nngp"):
        e, s = getattr(exact, which), getattr(sampled, which)
        se_e, se_s = getattr(exact, f"{which}_se"), getattr(sampled, f"{which}_se")
        assert within_errors(e, s, (se_e**2 + se_s**2).sqrt()) < 5
        assert exact.relative_se(which) < sampled.relative_se(which)
    with pytest.raises(ValueError, match="candidate='exact' is implemented for"):
        limit_kernels(arch.replace(cell="elman"), x, candidate="exact")
    with pytest.raises(ValueError, match="candidate='both' is not valid"):
        limit_kernels(arch, x, candidate="both")


@pytest.mark.parametrize("cell", ["gru", "minimalrnn"])
def test_finite_networks_seed_mean(cell):
    """16 networks of width 1024 (erf gates and candidate, lengths 3, 1, 2, mean pooling): the
    seed mean within 2% of the simulated NTK and NNGP (measured: GRU 0.72% and 1.13%,
    minimalRNN 0.84% and 0.92%; a kernel 2% too large is 1.8% and 2.8% away)."""
    arch = Architecture(cell=cell, gate="erf", nonlinearity="erf", sigma_w=1.0, readout="avg")
    x = random_sequences((3, 1, 2), 3, seed=4)
    r = limit_kernels(arch, x, particles=2**13, batches=4)
    ntks, nngps = [], []
    for seed in range(16):
        k, kn = empirical_kernels(ElmanRNN(arch, 3, 1024, seed=seed), x, nngp=True)
        ntks.append(k.detach())
        nngps.append(kn.detach())
    assert rel_err(torch.stack(ntks).mean(0), r.ntk) < 0.02
    assert rel_err(torch.stack(nngps).mean(0), r.nngp) < 0.02


@pytest.mark.parametrize(
    "change, message",
    [
        ({"depth": 2}, "depth=1 only"),
        ({"bidirectional": True}, "bidirectional"),
        ({"h0": "per_input"}, "h0='zero' only"),
        ({"init": "orthogonal"}, "init='gaussian' only"),
        ({"parameterization": "standard"}, "standard"),
    ],
)
def test_unsupported_options_are_refused(change, message):
    arch = Architecture(cell="gru", gate="erf", nonlinearity="erf").replace(**change)
    with pytest.raises(ValueError, match=message):
        limit_kernels(arch, random_sequences((2,), 2))
    with pytest.raises(ValueError, match="particles=0"):
        limit_kernels(Architecture(cell="gru"), random_sequences((2,), 2), particles=0)


def test_analytic_kernels_dispatch_and_show_a_bar_when_long(monkeypatch, capsys):
    from rntk_empirical.analytic import api

    arch = Architecture(cell="minimalrnn", gate="erf", nonlinearity="erf", sigma_w=1.0)
    x = random_sequences((3, 2), 2, seed=1)
    direct = limit_kernels(arch, x, particles=256, batches=2)
    theta, nngp = analytic_kernels(arch, x, particles=256, batches=2)
    assert capsys.readouterr().err == ""
    assert torch.equal(theta, direct.ntk) and torch.equal(nngp, direct.nngp)
    monkeypatch.setattr(api, "PROGRESS_AFTER_SECONDS", 0.0)
    shown = api.analytic_nngp(arch, x, particles=256, batches=2)
    err = capsys.readouterr().err
    assert "analytic kernels (~" in err and "6/6" in err  # 2 batches x 3 forward steps
    assert torch.equal(shown, limit_kernels(arch, x, ntk=False, particles=256, batches=2).nngp)


def test_convergence_experiment_runs_a_gated_arch_and_keys_its_cache(tmp_path, monkeypatch):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from experiments.convergence import run as convergence
    from rntk_empirical import gated_limit

    monkeypatch.setattr(gated_limit, "DEFAULT_PARTICLES", 2**10)  # a quick simulation
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    tiny = ["width=16", "seeds=2", "data.n=3", "data.T=3", "progress=false"]
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(config_name="convergence", overrides=["arch=gru_erf", *tiny])
    prep = convergence.prepare(convergence.settings_from_config(cfg))
    rec = convergence.run_convergence(prep, tmp_path / "run", cwd=tmp_path)
    assert rec["status"] == "finished" and not rec["analytic"]["cached"]
    theta = limit_kernels(prep.arch, prep.seqs.values).ntk  # the reference it converged to
    assert rel_err(torch.from_numpy(np.load(tmp_path / "run" / "kernels.npz")["analytic_ntk"]),
                   theta) < 1e-12  # fmt: skip
    assert 0 < rec["ntk"]["mean"]["rel_fro"] < 1
    # the cache identity follows the simulation's settings; the Elman one does not
    key = convergence.analytic_cache_key(prep.arch, prep.seqs)
    elman = prep.arch.replace(cell="elman")
    elman_key = convergence.analytic_cache_key(elman, prep.seqs)
    monkeypatch.setattr(gated_limit, "DEFAULT_PARTICLES", 2 * gated_limit.DEFAULT_PARTICLES)
    assert convergence.analytic_cache_key(prep.arch, prep.seqs) != key
    assert convergence.analytic_cache_key(elman, prep.seqs) == elman_key
