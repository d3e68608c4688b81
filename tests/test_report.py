"""The report on synthetic records of known exponents: fits, grouping, pooling, files, CLI."""

import csv
import json

import numpy as np
import pytest

from experiments.common.records import atomic_save_npz, atomic_write_json
from experiments.convergence import report
from rntk_empirical.metrics import kernel_errors

WIDTHS = [64, 256, 1024, 4096]
N = 5


def _reference(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((N, 3))
    return a @ a.T + np.eye(N)


def write_run(
    folder,
    width,
    seeds,
    base_seed=0,
    name="relu_last-random",
    sigma_w=1.414,
    finished="2026-01-01T00:00:00+00:00",
    noise=1.0,
):
    """A run folder like experiments.convergence writes: kernels B + noise n^(-1/2) G_s."""
    ref = _reference(0)
    rng = np.random.default_rng(1000 * width + base_seed + int(100 * noise))
    ntk, nngp, per_seed = [], [], []
    for s in range(seeds):
        g = rng.standard_normal((2, N, N))
        k = ref + noise * width**-0.5 * (g[0] + g[0].T)
        kn = 0.5 * ref + noise * width**-0.5 * (g[1] + g[1].T)
        ntk.append(k)
        nngp.append(kn)
        per_seed.append(
            {
                "seed": s,
                "network_seed": base_seed + s,
                "ntk": kernel_errors(k, ref),
                "nngp": kernel_errors(kn, 0.5 * ref),
            }
        )
    atomic_save_npz(
        folder / "kernels.npz",
        ntk=np.stack(ntk),
        nngp=np.stack(nngp),
        analytic_ntk=ref,
        analytic_nngp=0.5 * ref,
        network_seeds=np.arange(base_seed, base_seed + seeds),
    )
    identity = {
        "name": name,
        "arch": {"sigma_w": sigma_w},
        "arch_name": name,
        "data": {"n": N},
        "data_name": "random",
        "width": width,
        "seeds": seeds,
        "base_seed": base_seed,
        "device": "cpu",
        "dtype": "float64",
        "method": "structured",
        "chunk_size": None,
        "nngp": True,
    }
    atomic_write_json(
        folder / "record.json",
        {
            "experiment": "convergence",
            "status": "finished",
            "identity": identity,
            "name": name,
            "width": width,
            "per_seed": per_seed,
            "kernels_file": "kernels.npz",
            "finished": finished,
        },
    )


def make_sweep(root, seeds=12, **kw):
    for w in WIDTHS:
        d = root / f"width={w}"
        d.mkdir(parents=True)
        write_run(d, w, seeds, **kw)


def test_report_fits_known_exponent_and_writes_files(tmp_path):
    make_sweep(tmp_path / "sweep")
    (tmp_path / "sweep" / "width=64" / "junk").mkdir()
    (tmp_path / "sweep" / "width=64" / "junk" / "record.json").write_text("{not json")
    summ = report.make_report(tmp_path / "sweep", n_boot=500)
    out = tmp_path / "sweep" / "report"
    assert len(summ["series"]) == 1 and summ["records"] == len(WIDTHS)
    fits = summ["series"][0]["fits"]
    for key in (
        "ntk_rel_fro",
        "nngp_rel_fro",
        "ntk_rel_op",
        "ntk_rel_max",
        "ntk_mean_kernel_rel_fro",
        "nngp_mean_kernel_rel_fro",
    ):
        f = fits[key]
        # not "the 95% interval covers -0.5" (that fails 1 run in 20 per metric, and this
        # seed sat 0.001 from the edge): the estimate lies within 4 standard errors of the
        # true exponent (SE from the interval width), which a wrong fit (exponent of the
        # mean vs of the seed errors, -1 vs -0.5) misses by many SE
        se = (f["ci_high"] - f["ci_low"]) / (2 * 1.96)
        assert f["ci_low"] < f["exponent"] < f["ci_high"], key
        assert abs(f["exponent"] + 0.5) < 4 * se, key
        assert f["ci_high"] - f["ci_low"] < 0.4, key
    # zero bias: the debiased estimate is 0 at some width and cannot be fitted on log axes
    assert "ntk_debiased_bias" in summ["series"][0]["not_fitted"]
    for name in ("convergence.png", "convergence.pdf", "points.csv", "summary.json", "summary.md"):
        assert (out / name).stat().st_size > 0
    rows = list(csv.DictReader(open(out / "points.csv")))
    assert len(rows) == len(fits) * len(WIDTHS)
    row = next(r for r in rows if r["metric"] == "ntk_rel_fro" and r["width"] == "256")
    # the plotted point is the seed mean of the recorded per-seed errors
    rec = json.load(open(tmp_path / "sweep" / "width=256" / "record.json"))
    assert float(row["value"]) == pytest.approx(
        np.mean([e["ntk"]["rel_fro"] for e in rec["per_seed"]])
    )
    assert float(row["ci_low"]) <= float(row["value"]) <= float(row["ci_high"])
    assert json.load(open(out / "summary.json"))["series"][0]["fits"]["ntk_rel_fro"]
    assert "| NTK per network, Frobenius |" in (out / "summary.md").read_text()


def test_groups_by_config_and_pools_seeds(tmp_path):
    make_sweep(tmp_path / "a", seeds=4)
    make_sweep(tmp_path / "b", seeds=4, sigma_w=1.0, noise=3.0)
    # the first config again, other network seeds (pooled) and a duplicate (counted once)
    (tmp_path / "c").mkdir()
    write_run(tmp_path / "c", 256, 4, base_seed=4, finished="2026-01-02T00:00:00+00:00")
    (tmp_path / "d").mkdir()
    write_run(tmp_path / "d", 256, 4, base_seed=0)
    series = report.collect(tmp_path)
    assert len(series) == 2
    a = next(s for s in series if s.identity["arch"]["sigma_w"] == 1.414)
    b = next(s for s in series if s.identity["arch"]["sigma_w"] == 1.0)
    assert {w: len(a.errors[w]) for w in a.widths} == {64: 4, 256: 8, 1024: 4, 4096: 4}
    assert len(a.kernels[256]) == 8
    # same name, different config: labels name the difference
    assert "arch.sigma_w=1.414" in a.label and "arch.sigma_w=1.0" in b.label
    report.fit_series(series, n_boot=200)
    # three times the noise: same exponent, three times the error
    ratio = b.fits["ntk_rel_fro"].values[0] / a.fits["ntk_rel_fro"].values[0]
    assert 2.0 < ratio < 4.5


def test_single_width_is_reported_but_not_fitted(tmp_path):
    write_run(tmp_path, 256, 3)
    summ = report.make_report(tmp_path / "record.json", out=tmp_path / "out", n_boot=50)
    assert summ["series"][0]["fits"] == {}
    assert summ["series"][0]["not_fitted"]["ntk_rel_fro"] == "needs at least two widths"


def test_cli(tmp_path, capsys):
    make_sweep(tmp_path / "runs", seeds=3)
    assert (
        report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "r"), "--n-boot", "100"]) == 0
    )
    assert "ntk_rel_fro exponent" in capsys.readouterr().out
    assert (tmp_path / "r" / "convergence.png").is_file()
    assert report.main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "no finished convergence records" in err
