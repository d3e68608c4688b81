r"""``kernel_drift``: how much the NTK of a finite RNN moves during training, vs width.

Left: the relative drift ||Theta_T - Theta_0||_F / ||Theta_0||_F of the empirical NTK on a
probe set after training (mean over seeds, 95% bootstrap band, fitted exponent), against
the n^(-1/2) bound and the n^(-1) prediction (Neural Tangent Hierarchy). Right: training
loss of the networks (solid) and of closed-form kernel gradient descent with the analytic
RNTK (dotted) per width: the wider the network, the closer it follows the kernel.

The numbers come from drift-experiment runs (:mod:`experiments.drift`), reused from
``outputs/`` when their configuration matches (e.g. after ``python -m experiments.drift -m``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from experiments.common.sweeps import RecordIndex, records
from experiments.drift.summary import final_value
from experiments.figures.common import (
    FigureResult,
    RunOptions,
    Table,
    fmt_list,
    plot_fit,
    power_law_rows,
    register_figure,
    resolve_params,
    select,
)


@dataclass(frozen=True)
class KernelDriftParams:
    """Setup of ``kernel_drift``: the drift experiment's defaults (``conf/drift.yaml``)
    unless changed here. ``arch`` holds Architecture fields (default ``Architecture()``)."""

    widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    seeds: int = 4
    steps: int = 200
    record_every: int = 10
    n_train: int = 16
    n_test: int = 16
    seq_len: int = 8
    arch: dict | None = None
    n_boot: int = 2000


QUICK = {
    "widths": (16, 64, 256),
    "seeds": 2,
    "steps": 30,
    "n_train": 6,
    "n_test": 4,
    "seq_len": 5,
    "n_boot": 200,
}


def drift_configs(p, widths, seed: int, init: str = "gaussian"):
    """The :class:`experiments.drift.schema.DriftConfig` of each width (shared with other figures),
    named as the command line names them (``arch=relu_last`` / ``arch=orthogonal``), so a
    sweep run from the command line with the same settings is reused."""
    from experiments.common.schema import ArchConfig
    from experiments.drift.schema import DriftConfig, TaskConfig

    arch = dict(p.arch or {})
    arch["init"] = init
    name = "relu_last" if init == "gaussian" else "orthogonal"
    task = TaskConfig(
        n_train=p.n_train, n_test=p.n_test, min_len=p.seq_len, max_len=p.seq_len, seed=seed
    )
    return [
        DriftConfig(
            name=f"{name}-synthetic",
            arch=ArchConfig(name=name, **arch),
            task=task,
            width=w,
            seeds=p.seeds,
            base_seed=seed,
            steps=p.steps,
            record_every=p.record_every,
            progress=False,
        )
        for w in widths
    ]


def drift_rows(
    records: list[dict], label: str, n_boot: int, seed: int, quantity: str = "ntk_drift"
) -> tuple[Table, dict]:
    """Final-step ``quantity`` per width (non-diverged seeds) with a bootstrap power-law fit."""
    samples = {}
    for r in records:
        v = [x for e in r["per_seed"] if (x := final_value(e, quantity)) is not None and x > 0]
        if v:
            samples[int(r["width"])] = np.array(v, dtype=float)
    rows, fit = power_law_rows(samples, n_boot, seed, series=label, quantity=quantity)
    return rows, {"exponent": fit.exponent, "ci95": [fit.ci_low, fit.ci_high]}


def loss_rows(records: list[dict], label: str) -> Table:
    rows = []
    for r in records:
        hs = [e["history"] for e in r["per_seed"] if not e["history"]["diverged"]]
        if not hs:
            continue
        L = min(len(h["step"]) for h in hs)
        for i in range(L):
            rows.append(
                {
                    "series": label,
                    "width": int(r["width"]),
                    "step": hs[0]["step"][i],
                    "network": float(np.mean([h["train_loss"][i] for h in hs])),
                    "kernel_analytic": float(
                        np.nanmean([h["kernel_analytic_train_loss"][i] for h in hs])
                    ),
                    "linearized": float(np.nanmean([h["lin_train_loss"][i] for h in hs])),
                }
            )
    return rows


def reference_slopes(ax, rows: Table) -> None:
    rr = sorted(rows, key=lambda r: r["width"])
    w = np.array([r["width"] for r in rr], float)
    v0 = rr[0]["value"]
    ax.plot(w, v0 * (w / w[0]) ** -0.5, "k:", lw=1, label=r"$n^{-1/2}$ bound")
    ax.plot(w, v0 * (w / w[0]) ** -1.0, "k--", lw=1, label=r"$n^{-1}$ prediction")


def draw(tables: dict[str, Table], meta: dict) -> plt.Figure:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.9))
    main = tables["main"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, q in enumerate(dict.fromkeys(r["quantity"] for r in main)):
        plot_fit(ax, select(main, quantity=q), colors[k], q.replace("_", " "))
    reference_slopes(ax, select(main, quantity="ntk_drift"))
    ax.set(xlabel="width $n$", ylabel="after training", title="change during training vs width")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.legend(fontsize=7, frameon=False)
    loss = tables["loss"]
    widths = sorted({r["width"] for r in loss})
    cmap = plt.get_cmap("viridis")
    for j, w in enumerate(widths):
        c = cmap(j / max(1, len(widths) - 1) * 0.9)
        rr = sorted(select(loss, width=w), key=lambda r: r["step"])
        s = [r["step"] for r in rr]
        ax2.plot(s, [r["network"] for r in rr], "-", color=c, label=f"n={w}")
        ax2.plot(s, [r["kernel_analytic"] for r in rr], ":", color=c)
    ax2.plot([], [], "k-", label="network")
    ax2.plot([], [], "k:", label=r"kernel GD, analytic $\Theta$")
    ax2.set(
        yscale="log",
        xlabel="gradient-descent step",
        ylabel="train loss",
        title="network vs infinite-width prediction",
    )
    ax2.legend(fontsize=7, frameon=False, ncol=2)
    return fig


@register_figure("kernel_drift", draw=draw, order=27)
def compute(opts: RunOptions) -> FigureResult:
    p = resolve_params(KernelDriftParams, opts, QUICK)
    outputs = Path(opts.outputs_root)
    recs = records(
        drift_configs(p, p.widths, opts.seed), outputs, RecordIndex(outputs, opts.device)
    )
    main: Table = []
    headline: dict = {"exponents": {}}
    for q in ("ntk_drift", "weight_change_total", "dist_linearized", "dist_kernel_analytic"):
        rows, h = drift_rows(recs, "relu_last", p.n_boot, opts.seed, q)
        main += rows
        headline["exponents"][q] = h
    headline["diverged_seeds"] = sum(e["history"]["diverged"] for r in recs for e in r["per_seed"])
    headline["final_drift_by_width"] = {
        str(r["width"]): r["value"] for r in main if r["quantity"] == "ntk_drift"
    }
    setup = (
        f"- Task: synthetic sequence regression y = tanh(sum_t 0.8^(T-t) <u, x_t> / c), "
        f"{p.n_train} train / {p.n_test} test sequences, T = {p.seq_len}, m = 2.\n"
        f"- Network: {p.arch or 'Architecture()'} (ReLU, s_w = sqrt 2, last readout), ntk "
        f"parameterization, widths {fmt_list(p.widths)}, {p.seeds} seeds each.\n"
        f"- Training: {p.steps} full-batch GD steps on 1/(2N) sum (f - y)^2 with "
        "eta = N / lambda_max(analytic Theta on the training set).\n"
        "- Drift: ||Theta_T - Theta_0||_F / ||Theta_0||_F on 8 probe sequences; weight change "
        "||theta_T - theta_0|| / ||theta_0||; output distances RMS over train + test.\n"
        "- Fits: least squares on log-log axes, 95% percentile bootstrap over seeds.\n"
        "- Runs: drift-experiment records under outputs/drift (reused when the config matches)."
    )
    return FigureResult(
        tables={"main": main, "loss": loss_rows(recs, "relu_last")},
        headline=headline,
        setup=setup,
        draw=draw,
        params=p,
        title="Kernel drift during training vs width",
        description=(
            "The NTK of a trained finite RNN moves less the wider it is; the fitted "
            "exponent is compared with the n^(-1/2) bound and the n^(-1) prediction."
        ),
    )
