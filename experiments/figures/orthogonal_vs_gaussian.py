r"""``orthogonal_vs_gaussian``: the orthogonal-initialization claims, tested on RNNs.

Feed-forward theory (Huang et al. 2020) says orthogonal and Gaussian initializations have
the same NTK at infinite width, so in the kernel regime they should be indistinguishable, and
that orthogonal weights speed up training outside it. For a weight-tied RNN:

(a) deviation of the empirical NTK from the *same* analytic RNTK vs width, both inits;
(b) NTK drift during kernel-regime training (ntk parameterization) vs width, both inits;
(c) training loss outside the kernel regime: standard parameterization, a 2-layer ReLU RNN
    on long sequences, GD with eta = c N / lambda_max(Theta_0) close to the stability edge.

(a) and (b) reuse convergence / drift runs under ``outputs/`` (e.g. the command-line sweeps
``python -m experiments.convergence -m arch=orthogonal``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from experiments.common.schema import ArchConfig
from experiments.common.sweeps import RecordIndex, records
from experiments.convergence.schema import ConvergenceConfig, DataConfig
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
from experiments.figures.kernel_drift import (
    KernelDriftParams,
    drift_configs,
    drift_rows,
    reference_slopes,
)
from rntk_empirical import Architecture, ElmanRNN, empirical_ntk
from rntk_empirical.tasks import synthetic_regression
from rntk_empirical.training import TrainSettings, kernel_learning_rate, train_and_track

INITS = ("gaussian", "orthogonal")


@dataclass(frozen=True)
class OrthogonalParams:
    """Setup of ``orthogonal_vs_gaussian``.

    Attributes:
        widths, seeds: panel (a) (the convergence experiment's default data).
        drift_widths, drift_seeds, drift_steps: panel (b) (the drift experiment's defaults).
        train_*: panel (c): width, seeds, steps, sequence length, depth, s_w, lr factor c.
    """

    widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)
    seeds: int = 8
    drift_widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    drift_seeds: int = 4
    drift_steps: int = 200
    train_width: int = 128
    train_seeds: int = 8
    train_steps: int = 200
    train_len: int = 30
    train_depth: int = 2
    train_sigma_w: float = 1.2
    train_lr_factor: float = 1.9
    n_boot: int = 2000


QUICK = {
    "widths": (32, 128, 512),
    "seeds": 3,
    "drift_widths": (16, 64, 256),
    "drift_seeds": 2,
    "drift_steps": 30,
    "train_width": 32,
    "train_seeds": 2,
    "train_steps": 40,
    "train_len": 24,
    "n_boot": 200,
}


def _deviation(p: OrthogonalParams, seed: int, outputs: Path, index: RecordIndex) -> Table:
    rows: Table = []
    for init in INITS:
        data = DataConfig(seed=seed)
        cfgs = [
            ConvergenceConfig(
                name=f"relu_{init}-{data.name}",
                arch=ArchConfig(name=f"relu_{init}", init=init),
                data=data,
                width=w,
                seeds=p.seeds,
                base_seed=seed,
                progress=False,
                cache_dir=str(outputs / "cache"),
            )
            for w in p.widths
        ]
        recs = records(cfgs, outputs, index)
        samples = {
            int(r["width"]): np.array([e["ntk"]["rel_fro"] for e in r["per_seed"]]) for r in recs
        }
        r, _ = power_law_rows(
            samples, p.n_boot, seed, panel="deviation", series=init, quantity="ntk_deviation"
        )
        rows += r
    return rows


def _drift(p: OrthogonalParams, seed: int, outputs: Path, index: RecordIndex) -> Table:
    dp = KernelDriftParams(
        widths=p.drift_widths, seeds=p.drift_seeds, steps=p.drift_steps, n_boot=p.n_boot
    )
    if p.drift_steps < 100:  # the quick setting: tiny task as in kernel_drift's QUICK
        dp = KernelDriftParams(
            widths=p.drift_widths,
            seeds=p.drift_seeds,
            steps=p.drift_steps,
            n_train=6,
            n_test=4,
            seq_len=5,
            n_boot=p.n_boot,
        )
    rows: Table = []
    for init in INITS:
        recs = records(drift_configs(dp, dp.widths, seed, init=init), outputs, index)
        r, _ = drift_rows(recs, init, p.n_boot, seed)
        rows += [{"panel": "drift", **row} for row in r]
    return rows


def _training(p: OrthogonalParams, seed: int, progress: bool) -> Table:
    task = synthetic_regression(32, 32, 2, p.train_len, p.train_len, rho=0.95, seed=seed)
    rows: Table = []
    jobs = [(init, s) for init in INITS for s in range(p.train_seeds)]
    for init, s in tqdm(jobs, desc="orthogonal_vs_gaussian: training", disable=not progress):
        arch = Architecture(
            depth=p.train_depth, sigma_w=p.train_sigma_w, parameterization="standard", init=init
        )
        m = ElmanRNN(arch, 2, p.train_width, seed=seed + s)
        lr = kernel_learning_rate(empirical_ntk(m, task.x_train), p.train_lr_factor)
        h = train_and_track(
            m,
            (m.prepare(task.x_train), task.y_train),
            (m.prepare(task.x_test), task.y_test),
            m.prepare(task.x_train[:2]),
            TrainSettings(
                steps=p.train_steps,
                lr=lr,
                record_every=max(1, p.train_steps // 40),
                track_linearized=False,
            ),
        )
        rows += [
            {
                "panel": "training",
                "series": init,
                "seed": seed + s,
                "step": st,
                "train_loss": tl,
                "relative_loss": tl / h.train_loss[0],
                "test_loss": te,
                "diverged": h.diverged,
            }
            for st, tl, te in zip(h.step, h.train_loss, h.test_loss)
        ]
    return rows


def _geo_mean_loss(rows: Table, init: str, step: int) -> float:
    """Geometric mean over seeds of loss(step) / loss(0) (training progress)."""
    v = [r["relative_loss"] for r in select(rows, series=init, step=step)]
    return float(np.exp(np.mean(np.log(np.maximum(v, 1e-300))))) if v else math.nan


def draw(tables: dict[str, Table], meta: dict) -> plt.Figure:
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.9))
    colors = {"gaussian": "C0", "orthogonal": "C3"}
    main = tables["main"]
    for ax, panel, title in (
        (axes[0], "deviation", "(a) NTK deviation at initialization"),
        (axes[1], "drift", "(b) NTK drift during training"),
    ):
        for init in INITS:
            plot_fit(ax, select(main, panel=panel, series=init), colors[init], init)
        if panel == "drift":
            reference_slopes(ax, select(main, panel=panel, series="gaussian"))
        ax.set(xlabel="width $n$", title=title, yscale="log")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7, frameon=False)
    axes[0].set_ylabel(r"$\|\hat\Theta-\Theta\|_F/\|\Theta\|_F$")
    axes[1].set_ylabel(r"$\|\Theta_T-\Theta_0\|_F/\|\Theta_0\|_F$")
    tr = tables["training"]
    for init in INITS:
        seeds = sorted({r["seed"] for r in select(tr, series=init)})
        for s in seeds:
            rr = sorted(select(tr, series=init, seed=s), key=lambda r: r["step"])
            axes[2].plot(
                [r["step"] for r in rr],
                [r["relative_loss"] for r in rr],
                color=colors[init],
                alpha=0.35,
                lw=0.8,
            )
        steps = sorted({r["step"] for r in select(tr, series=init)})
        axes[2].plot(
            steps,
            [_geo_mean_loss(tr, init, st) for st in steps],
            color=colors[init],
            lw=2,
            label=f"{init} (geometric mean)",
        )
    axes[2].set(
        yscale="log",
        xlabel="gradient-descent step",
        ylabel="train loss / initial train loss",
        title="(c) outside the kernel regime (standard param.)",
    )
    axes[2].legend(fontsize=7, frameon=False)
    return fig


@register_figure("orthogonal_vs_gaussian", draw=draw, order=25)
def compute(opts: RunOptions) -> FigureResult:
    p = resolve_params(OrthogonalParams, opts, QUICK)
    outputs = Path(opts.outputs_root)
    index = RecordIndex(outputs, opts.device)
    torch.manual_seed(opts.seed)
    main = _deviation(p, opts.seed, outputs, index) + _drift(p, opts.seed, outputs, index)
    training = _training(p, opts.seed, opts.progress)
    headline: dict = {}
    for panel in ("deviation", "drift"):
        for init in INITS:
            r = select(main, panel=panel, series=init)
            headline[f"{panel}_exponent_{init}"] = [
                r[0]["exponent"],
                r[0]["exp_low"],
                r[0]["exp_high"],
            ]
            headline[f"{panel}_at_largest_width_{init}"] = max(r, key=lambda x: x["width"])["value"]
    mid = p.train_steps // 2
    mid = min({r["step"] for r in training}, key=lambda s: abs(s - mid))
    g, o = _geo_mean_loss(training, "gaussian", mid), _geo_mean_loss(training, "orthogonal", mid)
    headline["train_loss_at_step"] = mid
    headline["relative_loss_gaussian"] = g
    headline["relative_loss_orthogonal"] = o
    headline["orthogonal_over_gaussian"] = o / g
    setup = (
        "- (a) Convergence-experiment data (8 Gaussian sequences, T = 5, m = 4), "
        f"Architecture() with init gaussian vs orthogonal, widths {fmt_list(p.widths)}, "
        f"{p.seeds} seeds; both against the same analytic RNTK.\n"
        f"- (b) Drift-experiment defaults (synthetic regression, {p.drift_steps} GD steps, "
        f"ntk parameterization), widths {fmt_list(p.drift_widths)}, {p.drift_seeds} seeds.\n"
        f"- (c) Standard parameterization, {p.train_depth}-layer ReLU RNN, s_w = "
        f"{p.train_sigma_w}, width {p.train_width}, synthetic regression with T = "
        f"{p.train_len} (rho = 0.95), {p.train_seeds} seeds per init; full-batch GD with "
        f"eta = {p.train_lr_factor} N / lambda_max(Theta_0) of each network (the stability "
        "edge is 2). Headline: geometric mean over seeds of loss(t) / loss(0) at the middle "
        "step t (training progress, independent of the initial loss).\n"
        "- Fits: least squares on log-log axes, 95% percentile bootstrap over seeds."
    )
    return FigureResult(
        tables={"main": main, "training": training},
        headline=headline,
        setup=setup,
        draw=draw,
        params=p,
        title="Orthogonal vs Gaussian initialization of RNNs",
        description=(
            "At initialization and in the kernel regime both initializations match "
            "the same RNTK at the same rates; panel (c) measures whether orthogonal "
            "weights train faster outside it (standard parameterization, long "
            "sequences, steps near the stability edge)."
        ),
    )
