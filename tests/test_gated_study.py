"""The gated study's entry points in quick mode: the tying study (experiments.gated_tying:
files, numbers against a direct computation, resume, one-line bad input) and the
``gated_convergence`` figure (drawn from convergence-experiment runs the command line would
make, fitted by the convergence report, redrawn from its CSV)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_module
from hydra import compose, initialize_config_dir

from experiments.common.reporting import read_csv
from experiments.common.schema import ArchConfig
from experiments.figures import FIGURES, RunOptions, redraw, run_figure
from experiments.figures.common import select
from experiments.figures.gated_convergence import CELLS, GatedConvergenceParams
from experiments.figures.gated_convergence import convergence_config as figure_config
from experiments.gated_tying.run import analytic_pair, run_tying
from experiments.gated_tying.schema import GatedTyingConfig
from rntk_empirical import ElmanRNN
from rntk_empirical.data import random_sequences
from rntk_empirical.empirical import empirical_kernels

GRU = ArchConfig(name="gru_erf", cell="gru", gate="erf", nonlinearity="erf", sigma_w=1.0)
FIGURE_ARCHS = tuple(CELLS)


@pytest.fixture(scope="module")
def tying(tmp_path_factory):
    out = tmp_path_factory.mktemp("tying")
    cfg = GatedTyingConfig(arch=GRU, name="gru_erf", quick=True, progress=False)
    return cfg, out, run_tying(cfg, out)


def test_tying_study_numbers(tying):
    cfg, out, rec = tying
    rows = read_csv(out / "tying.csv")
    assert len(rows) == len(cfg.lengths) * 2 * 2 * 2  # T x kernel x network x reference
    assert rows == rec["rows"]
    for name in ("tying.png", "tying.pdf", "record.json"):
        assert (out / name).stat().st_size > 0
    T = cfg.lengths[-1]
    for kernel in ("ntk", "nngp"):
        r = {(x["network"], x["reference"]): x for x in select(rows, T=T, kernel=kernel)}
        some = r[("tied", "tied")]
        # GRU: the untied limit differs from the tied one far beyond the simulation's error
        assert some["analytic_difference"] > 20 * some["analytic_difference_se"] > 0
        # and each kind of finite network sits nearer its own limit
        for net, other in (("untied", "tied"), ("tied", "untied")):
            assert r[(net, net)]["seed_mean_error"] < r[(net, other)]["seed_mean_error"]
    # the stored kernels are those of the untied (and tied) network of that seed, exactly
    x = random_sequences(cfg.n, max(cfg.lengths), cfg.m, cfg.data_seed).values[:, :T]
    entry = json.loads((out / f"T{T}-seed1.json").read_text())
    arch = GRU.to_architecture()
    for kind in ("untied", "tied"):
        net = ElmanRNN(arch, cfg.m, cfg.width, seed=1, untied=kind == "untied", max_len=T)
        ntk, nngp = empirical_kernels(net, x, method="ntk_vp")
        assert torch.allclose(torch.tensor(entry[kind]["ntk"]), ntk, rtol=1e-10, atol=0)
        assert torch.allclose(torch.tensor(entry[kind]["nngp"]), nngp, rtol=1e-12, atol=0)
    assert entry["untied"]["ntk"] != entry["tied"]["ntk"]
    assert entry["untied"]["parameters"] > entry["tied"]["parameters"]


def test_elman_untied_limit_is_the_rntk():
    """The simulated untied Elman kernel equals the exact RNTK to its Monte-Carlo error."""
    arch = ArchConfig(name="erf_last", nonlinearity="erf", sigma_w=1.0).to_architecture()
    x = random_sequences(4, 4, 2, 0).values
    pair = analytic_pair(arch, x, particles=2**12, batches=4)
    for i, q in enumerate(("ntk", "nngp")):
        diff = float((pair["untied"][i] - pair["tied"][i]).norm() / pair["tied"][i].norm())
        se = pair["se"][f"untied_{q}"]
        assert pair["se"][f"tied_{q}"] == 0.0 and 0 < se < 0.02
        assert diff < 4 * se, (q, diff, se)


def test_tying_study_resumes(tying):
    cfg, out, rec = tying
    assert run_tying(cfg, out)["finished"] == rec["finished"]  # finished: skipped
    seed_file = out / f"T{cfg.lengths[0]}-seed0.json"
    before = seed_file.stat().st_mtime_ns
    (out / "record.json").unlink()
    again = run_tying(cfg, out)  # per-seed files and analytic kernels are reused
    assert seed_file.stat().st_mtime_ns == before
    assert again["rows"] == rec["rows"]


def test_tying_entry_point_bad_input(tmp_path):
    res = run_module("experiments.gated_tying", "lengths=[3,0]", f"hydra.run.dir={tmp_path}")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: lengths=[3, 0]")


def test_figure_runs_are_the_command_lines():
    """The figure's convergence configurations are those of
    ``python -m experiments.convergence arch=A width=W seeds=S``: its runs are reused."""
    from experiments.convergence.run import settings_from_config

    p = GatedConvergenceParams()
    for arch in CELLS:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose(config_name="convergence", overrides=[f"arch={arch}", "seeds=8"])
        cli = settings_from_config(cfg)
        mine = figure_config(arch, 5, cli.width, p, 0, Path("outputs"))
        assert mine.identity() == cli.identity(), arch


@pytest.fixture(scope="module")
def figure(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    opts = RunOptions(
        quick=True, progress=False, params={"archs": FIGURE_ARCHS}, outputs_root=str(root)
    )
    return root, run_figure("gated_convergence", root / "figures" / "quick", opts)


def test_gated_convergence_figure(figure):
    root, meta = figure
    out = root / "figures" / "quick"
    rows = read_csv(out / "gated_convergence.csv")
    widths = (16, 64, 256)
    for arch in FIGURE_ARCHS:
        for kernel in ("ntk", "nngp"):
            per_net = sorted(
                select(rows, series=arch, kernel=kernel, statistic="per_network"),
                key=lambda r: r["width"],
            )
            assert [r["width"] for r in per_net] == list(widths)
            vals = [r["value"] for r in per_net]
            assert vals[0] > vals[-1]  # the error falls with width
            e = meta["headline"]["exponents"][f"{arch}_T3_{kernel}"]
            assert e["ci95"][0] < e["exponent"] < e["ci95"][1] < 0
            assert per_net[0]["exponent"] == e["exponent"]
            # the per-network mean is the convergence record's, unchanged
            rec = json.loads(
                next((root / "convergence" / f"{arch}-random").glob("width=256/*/record.json"))
                .read_text()
            )  # fmt: skip
            assert per_net[-1]["value"] == pytest.approx(rec[kernel]["mean"]["rel_fro"], 1e-12)
            seed_mean = select(rows, series=arch, kernel=kernel, statistic="seed_mean")
            assert len(seed_mean) == len(widths)
    assert tuple(meta["params"]["archs"]) == FIGURE_ARCHS
    # redrawn from the CSV alone
    png = out / "gated_convergence.png"
    before = png.stat().st_mtime_ns
    redraw(FIGURES["gated_convergence"], out)
    assert png.stat().st_mtime_ns > before
