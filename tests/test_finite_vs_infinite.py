"""The finite-versus-infinite study: kernel predictors against closed forms derived here, the
trainer's centering, divergence and resume, and the mechanics of the ``quick`` study."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from experiments.common.schema import DeviceChoice, DTypeChoice
from experiments.finite_vs_infinite.methods import (
    ensemble_distance,
    kernel_gd_path,
    ntk_lambda_max,
    select_ridge,
    single_distance,
    train_classifier,
)
from experiments.finite_vs_infinite.schema import FiniteVsInfiniteConfig
from experiments.finite_vs_infinite.study import run_study
from rntk_empirical.architecture import Architecture
from rntk_empirical.network import ElmanRNN
from rntk_empirical.tasks import load_classification_split, one_hot_targets, resample
from rntk_empirical.training import TrainSettings
from tests.conftest import run_module

ARCH = Architecture(nonlinearity="erf", sigma_w=1.0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The study's networks are small: one intra-op thread is faster than two (and much
    faster on a loaded machine, where two threads wait on each other at every time step)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _psd(n_rows: int, n_train: int, seed: int = 0) -> torch.Tensor:
    """A kernel block K(all, train) of a random feature map (train rows first)."""
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(n_rows, 3 * n_train, generator=g, dtype=torch.float64)
    return phi @ phi[:n_train].T / phi.shape[1]


def test_ridge_regression_equals_its_closed_form():
    sizes = (12, 5, 7)
    K = _psd(sum(sizes), sizes[0])
    labels = torch.arange(sum(sizes)) % 3
    y = one_hot_targets(labels, 3)
    y_tr, y_va = y[:12], y[12:17]
    Kn = K.numpy()
    for ridge in (0.0, 1e-3, 0.5):
        c = select_ridge(K, sizes, y_tr, labels[12:17], y_va, [ridge])
        lam = ridge * np.trace(Kn[:12]) / 12
        alpha = np.linalg.solve(Kn[:12] + lam * np.eye(12), y_tr.numpy())
        expect = Kn[12:] @ alpha
        np.testing.assert_allclose(c.val.numpy(), expect[:5], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(c.test.numpy(), expect[5:], rtol=1e-8, atol=1e-10)
        c32 = select_ridge(K, sizes, y_tr, labels[12:17], y_va, [ridge], torch.float32)
        np.testing.assert_allclose(c32.test.numpy(), expect[5:], rtol=1e-3, atol=1e-3)
    # the validation choice takes the best accuracy among the candidates
    c = select_ridge(K, sizes, y_tr, labels[12:17], y_va, [0.0, 1e-3, 0.5, 1e3])
    assert max(c.val_accuracy) == c.val_accuracy[c.candidates.index(c.choice)]


def test_kernel_gd_path_is_the_gradient_descent_iteration():
    """f_{k+1} = f_k - (eta/N) K (f_k - y) on train, f*_{k+1} = f*_k - (eta/N) K_x (f_k - y),
    iterated here from f_0 = 0; and t -> infinity is the ridge-0 regression."""
    sizes = (10, 4, 6)
    K = _psd(sum(sizes), sizes[0], seed=1)
    y = one_hot_targets(torch.arange(10) % 2, 2)
    lr = 10 / float(torch.linalg.eigvalsh(K[:10]).max())
    f, fx = torch.zeros(10, 2), torch.zeros(10, 2)
    path = kernel_gd_path(K, sizes, y, lr, [0, 7, 25])
    for k in range(26):
        if k in (0, 7, 25):
            torch.testing.assert_close(path[[0, 7, 25].index(k)], fx, rtol=1e-10, atol=1e-12)
        r = f - y
        f, fx = f - lr / 10 * K[:10] @ r, fx - lr / 10 * K[10:] @ r
    far = kernel_gd_path(K, sizes, y, lr, [10**7])[0]
    ridge0 = select_ridge(K, sizes, y, torch.zeros(4, dtype=torch.long), y[:4], [0.0])
    torch.testing.assert_close(far[4:], ridge0.test, rtol=1e-6, atol=1e-8)


@pytest.fixture(scope="module")
def italy():
    return load_classification_split("ItalyPowerDemand", n_train=20, n_test=12, seed=0)


def test_split_is_stratified_one_hot_and_resampled(italy):
    n_tr, n_va, n_te = italy.sizes
    assert (n_tr, n_va, n_te) == (len(italy.x_train), len(italy.x_val), len(italy.x_test))
    assert n_va >= 2 and set(italy.labels_val.tolist()) == {0, 1}
    y = italy.targets(italy.labels_train)
    assert torch.equal(y.argmax(1), italy.labels_train)
    torch.testing.assert_close(y.sum(1), torch.zeros(n_tr))
    x = torch.stack([torch.linspace(0, 1, 24), torch.linspace(0, 2, 24)], 1)
    r = resample(x, 7)
    torch.testing.assert_close(
        r, torch.stack([torch.linspace(0, 1, 7), torch.linspace(0, 2, 7)], 1)
    )
    short = load_classification_split("ItalyPowerDemand", n_train=20, n_test=12, max_len=10)
    assert short.lengths == [10]


def test_lambda_max_is_that_of_the_empirical_ntk(italy):
    from rntk_empirical.empirical import empirical_ntk

    model = ElmanRNN(ARCH, italy.input_dim, 24, seed=3, out_dim=2)
    E = empirical_ntk(model, italy.x_train)  # (N, N, k, k)
    n = E.shape[0]
    full = E.permute(0, 2, 1, 3).reshape(2 * n, 2 * n)
    lam = float(torch.linalg.eigvalsh(full).max())
    assert ntk_lambda_max(model, italy.x_train, iters=200) == pytest.approx(lam, rel=1e-4)


def test_centering_divergence_and_resume(italy, tmp_path):
    model = ElmanRNN(ARCH, italy.input_dim, 16, seed=0, out_dim=2)
    lam = ntk_lambda_max(model, italy.x_train)
    lr = len(italy.x_train) / lam
    s = TrainSettings(steps=12, lr=lr, record_every=4, checkpoint_every=5)
    # centered: g = f - f_0 is zero at initialization, so the loss starts at 1/(2N) ||y||^2
    run = train_classifier(ElmanRNN(ARCH, italy.input_dim, 16, seed=0, out_dim=2), italy, s, True)
    y = italy.targets(italy.labels_train)
    assert run.train_loss[0] == pytest.approx(float(0.5 * (y**2).sum() / y.shape[0]), rel=1e-12)
    assert run.step == [0, 4, 8, 12] and not run.diverged
    # a killed run resumes from its checkpoint and ends where an uninterrupted one does
    ck = tmp_path / "ck.pt"

    def kill(step: int) -> None:
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_classifier(
            ElmanRNN(ARCH, italy.input_dim, 16, seed=0, out_dim=2), italy, s, True, ck, kill
        )
    assert ck.exists()
    resumed = train_classifier(
        ElmanRNN(ARCH, italy.input_dim, 16, seed=0, out_dim=2), italy, s, True, ck
    )
    torch.testing.assert_close(resumed.test_final, run.test_final, rtol=1e-10, atol=1e-12)
    assert resumed.train_loss == pytest.approx(run.train_loss, rel=1e-10)
    # far beyond the edge of stability (eta = 200 N / lambda_max) the run is recorded as diverged
    big = TrainSettings(steps=50, lr=200 * lr, record_every=5)
    bad = train_classifier(ElmanRNN(ARCH, italy.input_dim, 16, seed=0, out_dim=2), italy, big)
    assert bad.diverged and 0 < bad.diverged_at < 50


def test_distance_statistics():
    r = np.array([[[1.0, -1.0]], [[-1.0, 1.0]]])  # two seeds whose errors cancel
    assert single_distance(r) == pytest.approx(1.0)
    assert ensemble_distance(r) == pytest.approx(0.0)


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("fvi")
    cfg = FiniteVsInfiniteConfig(
        name="erf_last",
        quick=True,
        dtype=DTypeChoice.float64,
        device=DeviceChoice.cpu,
        progress=False,
        arms=["ntk", "centered", "standard"],
    )
    return cfg, out, run_study(cfg, out)


def test_quick_study_mechanics(quick_study):
    cfg, out, rec = quick_study
    t = rec["tasks"]["ItalyPowerDemand"]
    widths = [str(w) for w in cfg.widths]
    for w in widths:
        c = t["widths"][w]["centered"]
        p = t["widths"][w]["ntk"]
        # the ensemble of centered networks is closer to the kernel predictor than one network
        assert c["ensemble_dist_kernel_T"] < 0.8 * c["dist_kernel_T"]
        assert c["ensemble_dist_kernel_T"] < 0.6 * p["dist_kernel_T"]
    fits = t["distance_exponents"]
    # centered networks approach the kernel predictor with width; plain ones (f_0 stays) less
    assert fits["centered"]["exponent"] < -0.15
    assert fits["centered"]["exponent"] < fits["plain"]["exponent"]
    # the float32 solve agrees with float64 on this small, well-conditioned data set
    k = t["kernels"]["ntk"]
    assert k["float32_vs_float64_rms"] < 1e-3
    assert 0.5 < k["ridge_float64"]["test_accuracy"] <= 1.0
    # eta = 64 N / lambda_max (32 times the edge of stability) diverges and is recorded so
    sweep = t["widths"][widths[-1]]["standard_sweep"]
    assert sweep["64"]["diverged"] == cfg.sp_seeds and "test_accuracy" not in sweep["64"]
    entry = json.loads(
        (out / "ItalyPowerDemand" / f"w{widths[-1]}" / "standard_c64" / "seed0.json").read_text()
    )
    assert entry["diverged"] and entry["diverged_at"] is not None
    assert t["widths"][widths[-1]]["standard"]["lr_scale"] == 1.0


def test_quick_study_resumes_and_reports(quick_study, tmp_path):
    from experiments.finite_vs_infinite.report import write_report

    cfg, out, rec = quick_study
    assert run_study(cfg, out)["finished"] == rec["finished"]  # finished: skipped
    seed_file = out / "ItalyPowerDemand" / f"w{cfg.widths[0]}" / "ntk" / "seed0.json"
    before = seed_file.stat().st_mtime_ns
    (out / "record.json").unlink()
    again = run_study(cfg, out)  # per-seed files are reused, not retrained
    assert seed_file.stat().st_mtime_ns == before
    for w, row in rec["tasks"]["ItalyPowerDemand"]["widths"].items():
        row2 = again["tasks"]["ItalyPowerDemand"]["widths"][w]
        for arm in ("ntk", "centered", "standard"):
            assert row2[arm]["test_accuracy"] == row[arm]["test_accuracy"]
            assert row2[arm]["dist_rntk"] == row[arm]["dist_rntk"]
    from experiments.figures import FIGURES
    from experiments.finite_vs_infinite.report import collect

    tables, headline = collect([(out / "record.json", again)], n_boot=50)
    assert set(headline["datasets"]["erf_last/ItalyPowerDemand"]["exponents"]) == {
        "plain",
        "plain_ensemble",
        "centered",
        "centered_ensemble",
    }
    fig = FIGURES["finite_vs_infinite"].draw({**tables, "main": tables["accuracy"]}, {})
    assert len(fig.axes) == 2
    rep = write_report(out, tmp_path / "report", n_boot=50)
    for name in (
        "accuracy.csv",
        "distance.csv",
        "ranking.csv",
        "finite_vs_infinite.png",
        "summary.json",
    ):
        assert (rep / name).exists()


def test_entry_point_rejects_an_unknown_data_set(tmp_path):
    res = run_module(
        "experiments.finite_vs_infinite", "tasks=[NoSuchDataSet]", f"hydra.run.dir={tmp_path}"
    )
    assert res.returncode == 2 and "error:" in res.stderr and "NoSuchDataSet" in res.stderr


def test_figure_reuses_a_default_run_split_by_data_set(tmp_path):
    """``-m 'tasks=[A],[B]'`` leaves one record per data set; the figure takes them (on any
    device) instead of recomputing, and recomputes when one is missing."""
    import copy

    from experiments.common.records import atomic_write_json, identity_hash
    from experiments.common.run import envelope
    from experiments.figures.finite_vs_infinite import _per_task_records

    cfg = FiniteVsInfiniteConfig(name="erf_last", device=DeviceChoice.cpu)
    assert cfg.tasks == ["ItalyPowerDemand", "JapaneseVowels"]
    for task in cfg.tasks:
        one = copy.copy(cfg)
        one.tasks, one.device = [task], DeviceChoice.auto  # run elsewhere, device=auto
        rec = envelope("finite_vs_infinite", identity_hash(one.identity()), one.identity())
        atomic_write_json(tmp_path / f"tasks=[{task}]" / "record.json", rec | {"tasks": {}})
    found = _per_task_records(cfg, tmp_path)
    assert [r["identity"]["tasks"] for _, r in found] == [["ItalyPowerDemand"], ["JapaneseVowels"]]
    other = copy.copy(cfg)
    other.steps = cfg.steps + 1  # another configuration: not reused
    assert _per_task_records(other, tmp_path) is None
    (tmp_path / "tasks=[JapaneseVowels]" / "record.json").unlink()
    assert _per_task_records(cfg, tmp_path) is None


def test_quick_keeps_what_the_user_sets():
    c = FiniteVsInfiniteConfig(name="x", quick=True, widths=[8, 16], steps=10)
    assert (c.widths, c.steps, c.tasks, c.n_train) == ([8, 16], 10, ["ItalyPowerDemand"], 24)
    with pytest.raises(ValueError, match="arms"):
        FiniteVsInfiniteConfig(name="x", arms=["sgd"])
