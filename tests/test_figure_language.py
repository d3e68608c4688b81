"""Figures speak one language: an arm keeps one colour, marker and name in every panel, and
legends show words, never internal tags (``plain_ensemble``, ``ntk_rel_fro``)."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

from experiments.common.style import describe_arch, paper_style  # noqa: E402
from experiments.finite_vs_infinite import report as fvi  # noqa: E402

# internal names: the underscored tags, and lower-case keys that are not words ("ntk", "adam")
TAGS = {t for t in (*fvi.ARMS, *fvi.DISTANCE_SERIES) if "_" in t} | {"ntk", "adam"}


def legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]


def assert_words(texts: list[str]) -> None:
    assert texts
    for text in texts:
        words = re.sub(r"\$[^$]*\$", "", text)  # mathtext may use _ for subscripts
        assert "_" not in words, text
        assert not TAGS & set(re.findall(r"[A-Za-z_]+", words)), text


def _tables():
    acc, dist = [], []
    for arm in fvi.ARMS:
        for w in (16, 64):
            acc.append({"series": "erf_last", "dataset": "GunPoint", "arm": arm, "width": w,
                        "test_accuracy": 0.8, "test_accuracy_std": 0.01})  # fmt: skip
    for name in fvi.DISTANCE_SERIES:
        for w in (16, 64):
            dist.append({"series": "erf_last", "dataset": "GunPoint", "arm": name, "width": w,
                         "value": w**-0.3, "low": 0.9 * w**-0.3, "high": 1.1 * w**-0.3,
                         "exponent": -0.3, "exp_low": -0.4, "exp_high": -0.2,
                         "intercept": 0.0})  # fmt: skip
    kern = [{"series": "erf_last", "dataset": "GunPoint", "kernel": k, "variant": "ridge_float64",
             "test_accuracy": 0.85} for k in ("RNTK", "NNGP")]  # fmt: skip
    return {"accuracy": acc, "distance": dist, "kernels": kern}


def test_finite_vs_infinite_arms_keep_one_colour_and_name_across_panels():
    with paper_style():
        fig = fvi.draw(_tables(), {})
    left, right = fig.axes[0], fig.axes[1]
    assert_words(legend_texts(fig))
    right_points = [ln for ln in right.get_lines() if not ln.get_label().startswith("_")]
    assert len(right_points) == len(fvi.DISTANCE_SERIES)
    for ln in right_points:
        name = ln.get_label().split(":")[0]
        assert name in fvi.ARM_LABELS.values(), name
        # the same arm, the same colour and marker as in the accuracy panel
        arm = next(a for a, lab in fvi.ARM_LABELS.items() if lab == name)
        assert ln.get_color() == fvi.ARM_STYLES[arm]["color"]
        assert ln.get_marker() == fvi.ARM_STYLES[arm]["marker"]
    # the accuracy panel's error bars carry the arm colours as well
    containers = {c.get_label(): c for c in left.containers}
    for arm, label in fvi.ARM_LABELS.items():
        assert containers[label].lines[0].get_color() == fvi.ARM_STYLES[arm]["color"]


def test_the_convergence_figure_has_no_tags(tmp_path, monkeypatch):
    from test_report import write_run

    from experiments.convergence import report

    for w in (64, 256, 1024):
        d = tmp_path / f"width={w}"
        d.mkdir()
        write_run(d, w, seeds=3)
    series = report.collect(tmp_path)
    report.fit_series(series, n_boot=10)
    figs = []
    monkeypatch.setattr(report, "save_figure", lambda fig, stem: figs.append(fig) or [])
    report.plot(series, tmp_path / "c")
    assert len(figs) == 2
    for fig in figs:
        assert_words(legend_texts(fig))


def test_a_gated_run_is_named_by_its_cell_not_as_an_rnn():
    # the convergence report called a GRU with erf gates an "erf RNN"
    gru = {"cell": "gru", "gate": "erf", "nonlinearity": "erf", "readout": "last"}
    assert describe_arch(gru) == "GRU (erf gates, erf candidate), last-step readout"
    mini = {"cell": "minimalrnn", "gate": "sigmoid", "nonlinearity": "tanh", "readout": "avg"}
    assert describe_arch(mini) == "minimalRNN (sigmoid gates, tanh candidate), mean pooling"
    assert describe_arch({"cell": "elman", "nonlinearity": "relu"}) == "ReLU RNN, last-step readout"
