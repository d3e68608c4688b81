"""The UCI benchmark: the kernel bank, the grid's composite kernels, model selection, and the
experiment end to end on real datasets: the committed fixture ``tests/data/uci`` (every test
here runs with ``$RNTK_UCI_ROOT`` pointing to it), the whole collection where it is present."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_module

from experiments.uci import benchmark
from experiments.uci import report as report_uci
from experiments.uci.benchmark import (
    DEFAULT_CS,
    FAMILIES,
    BaselineGrid,
    FamilySelection,
    KernelGrid,
    KernelSVM,
    forest_candidates,
    offer_kernel,
    recurrent_kernels,
)
from experiments.uci.schema import UCIConfig
from rntk_empirical import uci
from rntk_empirical.analytic import analytic_kernel_bank, analytic_kernels
from rntk_empirical.architecture import Architecture
from rntk_empirical.feedforward import relu_mlp_ntk
from rntk_empirical.readouts import available_readouts

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("uci_fixture_root")


def _mixed(seed: int, lengths: list[int], m: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(T, m, generator=g, dtype=torch.float64) / T**0.5 for T in lengths]


@pytest.mark.parametrize(
    "arch",
    [
        Architecture(depth=3, h0="shared", sigma_h=0.5, bidirectional=True),
        Architecture(depth=2, nonlinearity="erf", sigma_u=0.5),
    ],
    ids=["relu-3layer-bi-shared", "erf-2layer"],
)
@pytest.mark.parametrize("cross", [False, True], ids=["x2=None", "x2"])
@pytest.mark.parametrize("equal", [False, True], ids=["mixed-lengths", "equal-lengths"])
def test_bank_equals_each_single_kernel(arch: Architecture, cross: bool, equal: bool) -> None:
    """The torch backend: mixed lengths take the shift-by-shift path, equal lengths the
    all-shifts-at-once one (the numba backend: tests/test_analytic_numba.py)."""
    x1 = _mixed(0, [5] * 5 if equal else [3, 5, 4, 5, 2])
    x2 = (_mixed(1, [5] * 3 if equal else [4, 5, 1])) if cross else None
    bank = analytic_kernel_bank(arch, x1, x2, block_size=2, backend="torch")
    assert set(bank) == {(d, r) for d in range(1, arch.depth + 1) for r in available_readouts()}
    for (depth, readout), (theta, nngp) in bank.items():
        single = dataclasses.replace(arch, depth=depth, readout=readout)
        t0, k0 = analytic_kernels(single, x1, x2)
        scale = t0.abs().max()
        assert torch.allclose(theta, t0, rtol=0, atol=1e-10 * scale), (depth, readout)
        assert torch.allclose(nngp, k0, rtol=0, atol=1e-10 * scale), (depth, readout)


def test_bank_rejects_bad_readouts() -> None:
    with pytest.raises(ValueError, match="readouts"):
        analytic_kernel_bank(Architecture(), torch.zeros(2, 3, 1), readouts=("mean",))
    with pytest.raises(ValueError, match="standard"):
        analytic_kernel_bank(Architecture(parameterization="standard"), torch.zeros(2, 3, 1))


def _toy_dataset(n: int = 24, d: int = 5, seed: int = 0) -> uci.UCIDataset:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(size=(n, d)) + 1.5 * y[:, None]
    X = X / np.linalg.norm(X, axis=1).max()
    idx = rng.permutation(n)
    half = n // 2
    folds = tuple((idx[:half], idx[half:]) for _ in range(4))
    return uci.UCIDataset("toy", X, y, (idx[:half], idx[half:]), folds)


def test_grid_kernels_compose_as_documented() -> None:
    ds = _toy_dataset()
    grid = KernelGrid(sigma_us=(0.5,), sigma_bs=(0.1,), depths=(1, 2))
    got = {
        (s.kernel, s.readout, s.direction, s.depth): K
        for s, K in recurrent_kernels(ds, grid, dtype=torch.float64)
    }
    assert len(got) == grid.size(ds.length) == 2 * 2 * 3 * 4
    x = ds.sequences()
    arch = Architecture(depth=2, sigma_u=0.5, sigma_b=0.1)
    fwd = analytic_kernel_bank(arch, x)
    rev = analytic_kernel_bank(arch, x.flip(1))
    T = ds.length
    for depth in (1, 2):
        for k_i, kernel in enumerate(("ntk", "nngp")):
            f_last, r_last = fwd[(depth, "last")][k_i].numpy(), rev[(depth, "last")][k_i].numpy()
            np.testing.assert_allclose(got[(kernel, "last", "forward", depth)], f_last, rtol=1e-12)
            np.testing.assert_allclose(got[(kernel, "last", "reversed", depth)], r_last, rtol=1e-12)
            np.testing.assert_allclose(
                got[(kernel, "last", "bidirectional", depth)], f_last + r_last, rtol=1e-12
            )
            paper = fwd[(depth, "per_step")][k_i].numpy() + f_last / T
            np.testing.assert_allclose(
                got[(kernel, "paper_avg", "forward", depth)], paper, rtol=1e-12
            )
    # the bidirectional kernel is the Architecture's own bidirectional kernel
    bi = analytic_kernels(dataclasses.replace(arch, bidirectional=True, readout="avg"), x)[0]
    # different summation order: ReLU's V_dphi turns rounding into ~1e-9 near correlation 1
    np.testing.assert_allclose(got[("ntk", "avg", "bidirectional", 2)], bi.numpy(), rtol=1e-8)


def test_grid_skips_mean_pooling_on_long_inputs() -> None:
    grid = KernelGrid(max_avg_length=4)
    assert grid.readouts_for(4) == ("last", "per_step", "avg", "paper_avg")
    assert grid.readouts_for(5) == ("last", "per_step", "paper_avg")
    assert grid.size(5) * 4 == grid.size(4) * 3 == 2 * 8 * 3 * 4 * 3 // 1
    with pytest.raises(ValueError, match="readouts"):
        KernelGrid(readouts=("mean",))
    with pytest.raises(ValueError, match="max_avg_length"):
        KernelGrid(max_avg_length=0)
    with pytest.raises(ValueError, match="Cs"):
        UCIConfig(Cs=[1.0, -1.0])


def test_family_selection_first_best_wins_and_tests_only_leaders() -> None:
    sel = FamilySelection()
    calls: list[str] = []

    def offer(name: str, kernel: str, val: float, folds: list[float]) -> None:
        spec = {
            "method": "recurrent",
            "kernel": kernel,
            "readout": "last",
            "direction": "forward",
            "depth": 1,
            "sigma_u": 0.5,
            "sigma_b": 0.1,
            "name": name,
        }
        sel.offer(spec, 1.0, val, lambda: calls.append(name) or folds)

    offer("a", "ntk", 0.80, [0.7, 0.7, 0.7, 0.7])
    offer("b", "ntk", 0.80, [0.9, 0.9, 0.9, 0.9])  # tie: the first keeps the lead
    offer("c", "nngp", 0.70, [0.6, 0.6, 0.6, 0.6])
    offer("d", "ntk", 0.60, [1.0, 1.0, 1.0, 1.0])  # leads nothing: never tested
    offer("e", "nngp", 0.75, [0.5, 0.5, 0.6, 0.6])
    assert calls == ["a", "c", "e"]
    res = sel.results()
    assert res["rntk"]["choice"]["name"] == "a" and res["rntk"]["test_acc"] == pytest.approx(0.7)
    assert res["nngp"]["choice"]["name"] == "e" and res["nngp"]["test_acc"] == pytest.approx(0.55)
    assert res["recurrent"]["choice"]["name"] == "a"  # 0.80 > 0.75
    assert res["rntk_last_fwd"]["choice"]["C"] == 1.0
    assert "paper_nngp" in res and "rbf_svm" not in res  # baselines were never offered
    assert set(sel.info()) == {f.name for f in FAMILIES}


def test_kernel_svm_scores_a_separable_problem() -> None:
    ds = _toy_dataset(n=40, d=3, seed=1)
    y = ds.y
    K = np.outer(2 * y - 1, 2 * y - 1).astype(float) + np.eye(len(y))  # class-revealing kernel
    svm = KernelSVM(ds, (0.01, 1.0))
    sel = FamilySelection()
    row = offer_kernel(sel, svm, {"method": "rbf_svm", "gamma": 1.0}, K)
    assert row["val_acc"] == [1.0, 1.0] and row["best_C"] == 0.01
    assert sel.results()["rbf_svm"]["test_folds"] == [1.0] * 4
    bad = offer_kernel(sel, svm, {"method": "rbf_svm", "gamma": 2.0}, K * np.nan)
    assert bad["val_acc"] is None and svm.fits == 2 + 4


def test_load_dataset_and_errors(tmp_path: Path) -> None:
    ds = uci.load_dataset("iris")
    assert ds.X.shape == (150, 4) and ds.n_classes == 3
    assert np.linalg.norm(ds.X, axis=1).max() == pytest.approx(1.0)
    assert uci.dataset_shape("iris") == (150, 4)
    assert uci.list_datasets() == ["fertility", "iris", "wine"]
    with pytest.raises(ValueError, match="unknown UCI dataset"):
        uci.load_dataset("no-such-dataset")
    with pytest.raises(ValueError, match="does not exist"):
        uci.data_root(tmp_path / "missing")


def test_whole_collection_lists_90_datasets(uci_full_root: Path) -> None:
    assert len(uci.list_datasets(uci_full_root)) == 90
    ds = uci.load_dataset("iris", uci_full_root)
    assert ds.X.shape == (150, 4) and ds.n_classes == 3


def _run_uci(*overrides: str) -> subprocess.CompletedProcess:
    return run_module("experiments.uci", *overrides, timeout=600)


SMALL = (
    "grid.sigma_us=[0.5]",
    "grid.sigma_bs=[0.1]",
    "baselines.forest_trees=50",
    "baselines.mlp_depths=[1,2]",
    "progress=false",
)


def test_experiment_end_to_end_on_two_datasets(tmp_path: Path) -> None:
    out = tmp_path / "uci"
    proc = _run_uci("dataset='iris,wine'", f"out_dir={out}", *SMALL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = sorted(out.rglob("record.json"))  # rglob does not follow the latest link
    assert [p.parent.name for p in records] == ["iris", "wine"]
    assert (out / "latest").resolve() == records[0].parents[1].resolve()
    assert report_uci.main([str(out / "latest")]) == 0  # the last grid, without its hash
    for p in records:
        rec = json.loads(p.read_text())
        fam = rec["families"]
        assert set(fam) == {f.name for f in FAMILIES}
        # chance is 1/3 on both (3 classes); the published RNTK accuracies are ~0.97
        for name in ("rntk", "nngp", "rntk_avg", "paper_nngp", "rbf_svm", "random_forest"):
            assert fam[name]["test_acc"] > 0.85, (rec["dataset"], name, fam[name])
            assert len(fam[name]["test_folds"]) == 4
        assert len(rec["kernels"]) == 2 * 2 * 3 * 4 + 5 + 6 + 4 + 2
        assert rec["timings"]["total_s"] > 0 and rec["svm"]["fits"] > 0
    table = (records[0].parents[1] / "report" / "uci_table.csv").read_text()
    assert "rntk" in table and "random_forest" in table
    again = _run_uci("dataset='iris,wine'", f"out_dir={out}", *SMALL)
    assert again.returncode == 0 and "2 finished earlier" in again.stderr + again.stdout
    assert sorted(out.rglob("record.json")) == records


def test_experiment_rejects_bad_input(tmp_path: Path) -> None:
    proc = _run_uci("dataset=nope", f"out_dir={tmp_path}")
    assert proc.returncode == 2 and "unknown UCI dataset" in proc.stderr
    proc = _run_uci("dataset=iris", "grid.readouts=[mean]", f"out_dir={tmp_path}")
    assert proc.returncode == 2 and "readouts" in proc.stderr


def test_a_killed_dataset_resumes_after_its_last_finished_unit(tmp_path: Path, monkeypatch) -> None:
    from experiments.uci import run as uci_exp
    from experiments.uci.schema import UCIBaselineConfig, UCIGridConfig

    def settings(out: Path) -> UCIConfig:
        return UCIConfig(
            dataset="iris",
            out_dir=str(out),
            grid=UCIGridConfig(sigma_us=[0.25, 0.5], sigma_bs=[0.1], depths=[1]),
            baselines=UCIBaselineConfig(methods=["rbf_svm"]),
            progress=False,
        )

    ref = uci_exp.run_dataset(settings(tmp_path / "a"), "iris", tmp_path / "a" / "iris")
    real = uci_exp.unit_kernels
    calls = []

    def dies_on_second_unit(ds, grid, su, sb, **kw):
        calls.append(su)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the job is killed while computing unit 2
        yield from real(ds, grid, su, sb, **kw)

    out = tmp_path / "b" / "iris"
    monkeypatch.setattr(uci_exp, "unit_kernels", dies_on_second_unit)
    with pytest.raises(KeyboardInterrupt):
        uci_exp.run_dataset(settings(tmp_path / "b"), "iris", out)
    state = json.loads((out / "partial.json").read_text())
    assert state["units_done"] == [[0.25, 0.1]] and len(state["kernels"]) == 2 * 3 * 4
    monkeypatch.setattr(uci_exp, "unit_kernels", real)
    calls.clear()
    rec = uci_exp.run_dataset(settings(tmp_path / "b"), "iris", out)
    assert not (out / "partial.json").exists()
    assert rec["families"] == ref["families"]  # same selection, same test accuracies
    assert [k["val_acc"] for k in rec["kernels"]] == [k["val_acc"] for k in ref["kernels"]]
    assert rec["svm"]["fits"] == ref["svm"]["fits"]


def test_multirun_builds_the_table_at_the_end(tmp_path: Path) -> None:
    out = tmp_path / "uci"
    proc = _run_uci(
        "-m",
        "dataset=iris,fertility",
        f"out_dir={out}",
        "grid.sigma_us=[0.5]",
        "grid.sigma_bs=[0.1]",
        "grid.depths=[1]",
        "grid.readouts=[last]",
        "baselines.methods=[rbf_svm]",
        "progress=false",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (root,) = [p for p in out.iterdir() if p.name not in ("hydra", "latest")]
    assert (out / "latest").resolve() == root.resolve()
    rows = (root / "report" / "uci_per_dataset.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].startswith("fertility") and rows[2].startswith("iris")


def test_kernel_svm_threads_change_nothing_but_the_time() -> None:
    """The fits of one call run on threads; accuracies and the unconverged count are those
    of one thread (libsvm is deterministic), iteration cap included."""
    ds = _toy_dataset(n=60, d=4, seed=5)
    K = ds.X @ ds.X.T + 0.5 * np.exp(-((ds.X[:, None] - ds.X[None]) ** 2).sum(-1))
    one, two = KernelSVM(ds, DEFAULT_CS, workers=1), KernelSVM(ds, DEFAULT_CS, workers=2)
    assert one.validation(K) == two.validation(K)
    assert one.test(K, 1e6) == two.test(K, 1e6)
    assert (one.fits, one.unconverged) == (two.fits, two.unconverged) == (9, 0)


def test_mlp_baselines_come_from_one_recursion_in_the_grid_order() -> None:
    """The ReLU-MLP NTK baselines, computed by one recursion per sigma_b, are those of
    relu_mlp_ntk at each depth (bitwise), in the grid's order (depth, then sigma_b); a grid
    whose depths go down restarts the recursion."""
    ds = _toy_dataset(n=30, d=4, seed=2)
    for depths in ((1, 2, 3), (3, 1, 2)):
        grid = BaselineGrid(methods=("mlp_ntk",), mlp_depths=depths, mlp_sigma_bs=(0.0, 0.1))
        got = list(benchmark.baseline_kernels(ds, grid))
        order = [(d, sb) for d in depths for sb in (0.0, 0.1)]
        assert [(s["depth"], s["sigma_b"]) for s, _ in got] == order
        for (d, sb), (_, K) in zip(order, got):
            assert np.array_equal(K, relu_mlp_ntk(ds.X, depth=d, sigma_b=sb).numpy())


def test_forest_processes_change_nothing_but_the_time() -> None:
    """The forests' independent fits run in worker processes; every validation and test
    accuracy is that of one process, and each is the accuracy of a plain sklearn forest
    with the same seed (checked for one fold)."""
    from sklearn.ensemble import RandomForestClassifier

    base = _toy_dataset(n=80, d=5, seed=7)
    rng = np.random.default_rng(0)
    y = np.where(rng.random(80) < 0.25, 0, base.y)  # label noise: accuracies below 1
    folds = tuple((p[:40], p[40:]) for p in (rng.permutation(80) for _ in range(4)))
    ds = uci.UCIDataset("toy", base.X, y, base.select, folds)
    grid = BaselineGrid(forest_trees=20)
    one = [(s, v, t()) for s, v, t in forest_candidates(ds, grid, seed=3, workers=1)]
    two = [(s, v, t()) for s, v, t in forest_candidates(ds, grid, seed=3, workers=2)]
    assert one == two
    assert [s["max_features"] for s, _, _ in one] == list(grid.forest_max_features)
    tr, te = ds.folds[1]
    clf = RandomForestClassifier(n_estimators=20, max_features="sqrt", random_state=3)
    expected = float(np.mean(clf.fit(ds.X[tr], ds.y[tr]).predict(ds.X[te]) == ds.y[te]))
    assert one[0][2][1] == expected
    assert len({a for _, _, folds in one for a in folds}) > 1


def test_kernel_svm_counts_fits_stopped_at_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _toy_dataset(n=60, d=4, seed=5)
    monkeypatch.setattr(benchmark, "SVM_MAX_ITER", 2)  # every fit stops at the cap
    svm = KernelSVM(ds, (1e6, 1e4), workers=2)
    svm.validation(ds.X @ ds.X.T + 1.0)
    assert (svm.fits, svm.unconverged) == (2, 2)
