"""Width-length laws (rntk_empirical.scaling) on synthetic grids of known law, and the
``length_width`` figure on a small quick grid (ReLU at criticality)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from experiments.common.records import find_records
from experiments.common.reporting import read_csv
from experiments.figures import RunOptions, run_figure
from experiments.figures.common import select
from rntk_empirical.architecture import Architecture
from rntk_empirical.scaling import (
    LAWS,
    FittedLaw,
    bootstrap_law,
    compare_laws,
    fit_law,
    required_width,
)

LENGTHS = np.array([2, 4, 8, 16, 32, 64], dtype=float)
WIDTHS = np.array([64, 128, 256, 512, 1024, 2048], dtype=float)
T_GRID, N_GRID = (g.ravel() for g in np.meshgrid(LENGTHS, WIDTHS, indexing="ij"))


def truth(law: str, T, n):
    """The laws written out directly (not through WidthLengthLaw)."""
    T, n = np.asarray(T, float), np.asarray(n, float)
    return {
        "sqrt_T_over_n": lambda: 0.8 * np.sqrt(T / n),
        "T_power_a": lambda: 0.5 * T**0.8 / np.sqrt(n),
        "T_power_a_n_power_b": lambda: 2.0 * T**0.3 * n**-0.6,
        "saturation": lambda: 1.5 * np.sqrt(5.0 * (1 - np.exp(-T / 5.0)) / n),
        "lognormal": lambda: 0.9 * np.sqrt((np.exp(3.0 * T / n) - 1) / 3.0),
        "lognormal_median": lambda: 1.2 * (np.exp(np.sqrt(5.0 * T / n)) - 1) / np.sqrt(5.0),
        "var_log_T_over_n": lambda: 2.0 * T / n,
        "var_log_T_power_a": lambda: 0.7 * T**1.3 / n,
        "var_log_saturation": lambda: 0.4 * 8.0 * (1 - np.exp(-T / 8.0)) / n,
    }[law]()


TRUE_THETA = {
    "sqrt_T_over_n": [math.log(0.8)],
    "T_power_a": [math.log(0.5), 0.8],
    "T_power_a_n_power_b": [math.log(2.0), 0.3, 0.6],
    "saturation": [math.log(1.5), math.log(5.0)],
    "lognormal": [math.log(0.9), math.log(3.0)],
    "lognormal_median": [math.log(1.2), math.log(5.0)],
    "var_log_T_over_n": [math.log(2.0)],
    "var_log_T_power_a": [math.log(0.7), 1.3],
    "var_log_saturation": [math.log(0.4), math.log(8.0)],
}


@pytest.mark.parametrize("name", sorted(LAWS))
def test_fit_recovers_exact_law_and_inverts(name):
    law = LAWS[name]
    y = truth(name, T_GRID, N_GRID)
    theta = fit_law(law, T_GRID, N_GRID, y)
    np.testing.assert_allclose(theta, TRUE_THETA[name], atol=1e-4)
    # width_for is the inverse in n: the law at that width gives back y
    n = law.width_for(TRUE_THETA[name], 10.0, 0.05)
    np.testing.assert_allclose(truth(name, 10.0, n), 0.05, rtol=1e-9)


def test_held_out_comparison_prefers_the_true_law():
    """Saturating data: fitted on T <= 8, the saturation law predicts T = 16..64, the
    sqrt(T/n) and free-exponent laws overshoot."""
    y = truth("saturation", T_GRID, N_GRID)
    laws = [LAWS[k] for k in ("sqrt_T_over_n", "T_power_a", "saturation")]
    comp = compare_laws(laws, T_GRID, N_GRID, y, T_GRID <= 8)
    assert comp[0].law == "saturation" and comp[0].rms_heldout < 1e-5
    sqrt = next(c for c in comp if c.law == "sqrt_T_over_n")
    # its held-out error at T = 64, n = any: log(sqrt(64 c'^2) / sqrt(5 (1 - e^-12.8)) 1.5)
    assert sqrt.worst_heldout[0] == 64 and sqrt.worst_heldout[2] > 0.5


def test_bootstrap_interval_covers_truth():
    rng = np.random.default_rng(0)
    cells = []
    for T, n in zip(T_GRID, N_GRID):
        med = truth("T_power_a", T, n)
        cells.append((T, n, med * np.exp(0.3 * rng.standard_normal(64))))
    fit = bootstrap_law(LAWS["T_power_a"], cells, np.median, target="median", n_boot=200)
    c, a = fit.constants()["c"], fit.constants()["a"]
    assert c[1] <= 0.5 <= c[2] and a[1] <= 0.8 <= a[2]
    assert a[2] - a[1] < 0.1 and fit.n_boot == 200
    assert fit.lengths == (2.0, 64.0) and fit.widths == (64.0, 2048.0)


def _laws_doc(law: str, theta, ci_high=None, cov=None) -> dict:
    k = len(theta)
    fit = FittedLaw(
        law=law,
        target="median",
        theta=tuple(theta),
        ci_low=tuple(theta),
        ci_high=tuple(ci_high or theta),
        cov=tuple(tuple(r) for r in (cov if cov is not None else np.zeros((k, k)))),
        lengths=(2.0, 64.0),
        widths=(64.0, 2048.0),
        rms=0.0,
        n_boot=100,
    )
    arch = Architecture(sigma_w=1.0).to_dict()
    return {
        "max_width_extrapolation": 2.0,
        "entries": [{"phase": "relu_ordered", "arch": arch, "laws": {"median": fit.to_dict()}}],
    }


def test_required_width_answers_from_the_law():
    # c = 0.8: 0.1 = 0.8 sqrt(10 / n)  <=>  n = 10 * 64 = 640
    doc = _laws_doc("sqrt_T_over_n", [math.log(0.8)], cov=[[0.01]])
    rw = required_width(Architecture(sigma_w=1.0), 10, 0.1, laws=doc)
    assert rw.width == pytest.approx(640.0, rel=1e-9)
    # log n = 2 log c + ...: sd of log n is 2 * 0.1, so the 95% interval is 640 e^(+-0.392)
    assert rw.low == pytest.approx(640 * math.exp(-1.96 * 0.2), rel=0.05)
    assert rw.high == pytest.approx(640 * math.exp(1.96 * 0.2), rel=0.05)
    assert (rw.phase, rw.law, rw.quantile) == ("relu_ordered", "sqrt_T_over_n", "median")


def test_required_width_refuses_outside_the_supported_range():
    doc = _laws_doc("sqrt_T_over_n", [math.log(0.8)])
    arch = Architecture(sigma_w=1.0)
    with pytest.raises(ValueError, match="beyond the measured lengths"):
        required_width(arch, 100, 0.1, laws=doc)
    with pytest.raises(ValueError, match="below the measured lengths"):
        required_width(arch, 1, 0.1, laws=doc)
    with pytest.raises(ValueError, match="beyond 2 x the largest measured width"):
        required_width(arch, 64, 0.09, laws=doc)  # n = 64 * 0.64 / 0.09^2 = 5057 > 4096
    with pytest.raises(ValueError, match="below the smallest measured width"):
        required_width(arch, 2, 0.5, laws=doc)  # n = 2 * 0.64 / 0.25 = 5.1
    with pytest.raises(ValueError, match="no width-length law was measured"):
        required_width(Architecture(), 10, 0.1, laws=doc)
    with pytest.raises(ValueError, match="quantile"):
        required_width(arch, 10, 0.1, quantile="q99", laws=doc)
    with pytest.raises(ValueError, match="tolerance"):
        required_width(arch, 10, 1.5, laws=doc)


def test_required_width_extends_beyond_measured_lengths_after_saturation():
    # xi = 4 (interval up to 6): saturated well inside T <= 64, so T = 1000 is supported and
    # equals the T -> infinity width c^2 xi / tol^2 = 1.5^2 * 4 / 0.1^2 = 900
    doc = _laws_doc(
        "saturation", [math.log(1.5), math.log(4.0)], ci_high=[math.log(1.5), math.log(6.0)]
    )
    rw = required_width(Architecture(sigma_w=1.0), 1000, 0.1, laws=doc)
    assert rw.width == pytest.approx(900.0, rel=1e-9)
    doc = _laws_doc(
        "saturation", [math.log(1.5), math.log(4.0)], ci_high=[math.log(1.5), math.log(30.0)]
    )
    with pytest.raises(ValueError, match="did not saturate"):
        required_width(Architecture(sigma_w=1.0), 1000, 0.1, laws=doc)


# ---------------------------------------------------------------------------- the figure
@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("lw")
    opts = RunOptions(quick=True, progress=False, outputs_root=str(root))
    meta = run_figure("length_width", root / "figures", opts)
    return root, meta


def test_quick_figure_files(quick):
    root, meta = quick
    for ext in ("png", "pdf", "csv", "json"):
        assert (root / "figures" / f"length_width.{ext}").stat().st_size > 0
    for t in ("fits", "laws", "required"):
        assert read_csv(root / "figures" / f"length_width-{t}.csv")
    laws = json.loads((root / "length_width_laws.json").read_text())
    assert [e["phase"] for e in laws["entries"]] == ["relu_critical"]


def test_quick_statistics_match_the_runs(quick):
    """The table's numbers recomputed from the convergence records and kernels.npz."""
    root, _ = quick
    rows = read_csv(root / "figures" / "length_width.csv")
    runs = find_records(root / "convergence")
    assert len(runs) == len(rows) == 9
    for path, rec in runs:
        row = select(rows, T=rec["data"]["lengths"][0], width=rec["width"])[0]
        dev = [e["ntk"]["rel_fro"] for e in rec["per_seed"]]
        assert row["dev_median"] == pytest.approx(float(np.median(dev)), rel=1e-12)
        z = np.load(path.parent / "kernels.npz")
        diag = np.array([np.diag(k) for k in z["ntk"]])  # (S, N)
        ref = np.diag(z["analytic_ntk"])
        S = diag.shape[0]
        var_log = np.mean([np.sum((np.log(d) - np.log(d).mean()) ** 2) / (S - 1) for d in diag.T])
        assert row["var_log_diag"] == pytest.approx(var_log, rel=1e-10)
        rel_var = np.mean([np.var(d, ddof=1) for d in diag.T] / ref**2)
        assert row["rel_var_diag"] == pytest.approx(rel_var, rel=1e-10)


def test_quick_deviation_grows_with_length_at_criticality(quick):
    root, _ = quick
    rows = read_csv(root / "figures" / "length_width.csv")
    for n in (32, 64, 128):
        dev = [select(rows, T=T, width=n)[0]["dev_median"] for T in (2, 8)]
        assert dev[1] > 1.3 * dev[0], (n, dev)
        var_log = [select(rows, T=T, width=n)[0]["var_log_diag"] for T in (2, 8)]
        assert var_log[1] > var_log[0], (n, var_log)


def test_quick_fitted_law_reproduces_its_points(quick):
    root, _ = quick
    rows = [r for r in read_csv(root / "figures" / "length_width.csv") if r["in_fit"]]
    assert len(rows) >= 8
    for f in read_csv(root / "figures" / "length_width-fits.csv"):
        law = LAWS[f["law"]]
        theta = [f[k] for k in ("theta0", "theta1", "theta2") if f.get(k) is not None]
        col = "var_log_diag" if f["target"] == "var_log" else f"dev_{f['target']}"
        T = np.array([r["T"] for r in rows], float)
        n = np.array([r["width"] for r in rows], float)
        err = law.log_predict(theta, T, n) - np.log([r[col] for r in rows])
        assert np.sqrt(np.mean(err**2)) == pytest.approx(f["rms"], rel=1e-9)
        # 8 networks per cell: a cell's median has a ~25% sampling error and a variance
        # sqrt(2 / 7) = 53%, so the law must be within that on average, and within twice
        # that at every cell
        noise = 0.53 if f["target"] == "var_log" else 0.25
        assert f["rms"] < noise, (f["target"], f["law"], f["rms"])
        assert np.max(np.abs(err)) < 2 * noise, (f["target"], f["law"], err)
