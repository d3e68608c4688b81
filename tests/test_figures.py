"""The figure scripts regenerate their figures (quick mode) and the numbers make their point.

Each figure is computed once per test session (module-scoped fixtures) into a temporary
``out_dir``; the assertions read the numbers back from the saved CSV / JSON.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import run_module

from experiments.common.reporting import read_csv
from experiments.figures import FIGURES, RunOptions, known_figures, run_figure
from experiments.figures.common import select

MY_FIGURES = ("time_weighting", "different_lengths", "spectrum", "ucr_table")


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_module("experiments.figures", *args, timeout=timeout)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    """Where quick figures go: ``OUT_DIR/quick``, apart from the full ones."""
    return tmp_path_factory.mktemp("figures") / "quick"


@pytest.fixture(scope="module")
def made(out_dir) -> dict[str, dict]:
    """Every figure of this suite in quick mode (spectrum through the CLI, the rest in-process)."""
    opts = RunOptions(quick=True, progress=False)
    metas = {}
    for name in ("time_weighting", "different_lengths", "ucr_table"):
        metas[name] = run_figure(name, out_dir, opts)
    res = _cli("figure=spectrum", "quick=true", f"out_dir={out_dir.parent}", "progress=false")
    assert res.returncode == 0, res.stderr
    # a quick figure never lands where the full figure lives
    assert [p.name for p in out_dir.parent.iterdir()] == ["quick"]
    metas["spectrum"] = json.loads((out_dir / "spectrum.json").read_text())
    return metas


def test_files_written(made, out_dir):
    for name in MY_FIGURES:
        for ext in ("png", "pdf", "csv", "json"):
            path = out_dir / f"{name}.{ext}"
            assert path.exists() and path.stat().st_size > 0, path
        assert read_csv(out_dir / f"{name}.csv"), name


def test_time_weighting(made, out_dir):
    rows = read_csv(out_dir / "time_weighting.csv")
    T = made["time_weighting"]["params"]["seq_len"]

    def analytic(nl, sw):
        rr = select(rows, nonlinearity=nl, series="analytic")
        rr = [r for r in rr if abs(r["sigma_w"] - sw) < 1e-9]
        return {r["lag"]: r["weight"] for r in rr}

    below, above = analytic("relu", 1.0), analytic("relu", 1.8)
    assert len(below) == T
    # below criticality the most recent step outweighs the oldest; above, the reverse
    assert below[0] > 10 * below[T - 1] > 0
    assert above[T - 1] > 10 * above[0] > 0
    # per-pair weights are normalized to sum |w_t| = 1, so their mean has sum |w_t| <= 1
    assert sum(abs(v) for v in below.values()) <= 1.0 + 1e-9
    h = made["time_weighting"]["headline"]
    assert h["analytic_fd_max_deviation"] < 0.02  # the FD step reproduces autograd
    # finite-width weighting approaches the analytic one with the width (ordered phase)
    small, large = (str(w) for w in made["time_weighting"]["params"]["widths"])
    for key in ("relu s_w=1", "erf s_w=1"):
        d = h["l1_to_analytic"][key]
        assert d[large] < d[small], (key, d)
    mean = {w: sum(d[w] for d in h["l1_to_analytic"].values()) for w in (small, large)}
    assert mean[large] < 0.7 * mean[small], mean


def test_different_lengths(made, out_dir):
    rows = read_csv(out_dir / "different_lengths.csv")
    p = made["different_lengths"]["params"]
    chance = 1.0 / len(p["bands"])
    vmax = max(p["variabilities"])
    rntk = select(rows, method="rntk_avg", variability=vmax)[0]["accuracy_mean"]
    assert rntk > chance + 0.2
    fixed = max(
        r["accuracy_mean"]
        for r in rows
        if r["variability"] == vmax and not r["method"].startswith("rntk")
    )
    assert rntk > fixed


def test_spectrum(made, out_dir):
    err = read_csv(out_dir / "spectrum-error.csv")
    top1 = sorted(select(err, statistic="topk"), key=lambda r: r["width"])
    vals = [r["rel_error"] for r in top1]
    assert len(vals) >= 3
    assert vals[-1] < vals[0]
    assert made["spectrum"]["headline"]["topk_exponent"] < -0.2
    main = read_csv(out_dir / "spectrum.csv")
    lam = [r["eigenvalue"] for r in select(main, series="analytic")]
    assert all(a >= b for a, b in zip(lam, lam[1:])) and lam[-1] > 0


def test_ucr_table(made, out_dir):
    rows = read_csv(out_dir / "ucr_table.csv")
    names = made["ucr_table"]["params"]["datasets"]
    assert len(names) == 2
    for n in names:
        r = select(rows, dataset=n, method="rntk")[0]
        assert r["accuracy"] > r["chance"] + 0.15, r
    assert "| ItalyPowerDemand |" in (out_dir / "README.md").read_text()


def test_index_lists_figures(made, out_dir):
    text = (out_dir / "README.md").read_text()
    for name in MY_FIGURES:
        assert f"## {name}" in text
        assert f"python -m experiments.figures figure={name}" in text
        assert f"{name}.png" in text


def test_redraw_from_csv(made, out_dir):
    png = out_dir / "spectrum.png"
    png.unlink()
    (out_dir / "spectrum.pdf").unlink()
    res = _cli("figure=spectrum", "redraw=true", "quick=true", f"out_dir={out_dir.parent}")
    assert res.returncode == 0, res.stderr
    assert png.exists() and png.stat().st_size > 0
    # the in-process redraw of every figure works from the CSVs alone
    from experiments.figures import redraw

    for name in MY_FIGURES:
        assert all(p.exists() for p in redraw(FIGURES[name], out_dir))


def test_unknown_figure_errors():
    res = _cli("figure=no_such_figure", timeout=60)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: unknown figure 'no_such_figure'")
    for name in known_figures():
        assert name in lines[0]
