r"""``gated_convergence``: error of the empirical NTK and NNGP vs width for the Elman, minimalRNN
and GRU cells (erf gates, erf phi) on the same sequences, with the n^-1/2 reference.

Per cell and kernel: the per-network relative Frobenius error ||K_hat - K||_F / ||K||_F
(mean over seeds, 95% bootstrap band, fitted exponent with its interval in the legend) and the
error of the seed-averaged kernel (open markers: it falls until the 1/n bias of the mean
shows). The numbers are convergence-experiment records (:mod:`experiments.convergence`),
fitted by that experiment's report (:func:`experiments.convergence.report.fit_series`): a run
already under ``outputs/`` with the same configuration, e.g. from

    python -m experiments.convergence -m arch=gru_erf seeds=8
    python -m experiments.convergence -m arch=minimalrnn_erf seeds=8
    python -m experiments.convergence -m arch=erf_last seeds=8

is reused, missing ones are run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from experiments.common.schema import ArchConfig
from experiments.common.sweeps import RecordIndex, records
from experiments.convergence.schema import ConvergenceConfig, DataConfig
from experiments.figures.common import (
    FigureResult,
    RunOptions,
    Table,
    fmt_list,
    plot_fit,
    register_figure,
    resolve_params,
    select,
)

# conf/arch name -> (legend words, Architecture fields as in that YAML; the figure's runs and
# the command line's are then the same configuration, found by their hash)
CELLS = {
    "erf_last": ("Elman", {"nonlinearity": "erf", "sigma_w": 1.0}),
    "minimalrnn_erf": (
        "minimalRNN",
        {"cell": "minimalrnn", "gate": "erf", "nonlinearity": "erf", "sigma_w": 1.0},
    ),
    "gru_erf": ("GRU", {"cell": "gru", "gate": "erf", "nonlinearity": "erf", "sigma_w": 1.0}),
}
# metric keys of experiments.convergence.report: per kernel, per network and seed-averaged
METRICS = {
    kernel: (f"{kernel}_rel_fro", f"{kernel}_mean_kernel_rel_fro") for kernel in ("ntk", "nngp")
}


@dataclass(frozen=True)
class GatedConvergenceParams:
    """Setup of the ``gated_convergence`` figure.

    Attributes:
        archs: conf/arch names of the cells (keys of :data:`CELLS`), one series each.
        widths, seeds: the width sweep (seeds networks per width).
        n_inputs, lengths, input_dim: N Gaussian sequences in R^m (data seed = seed), one row
            of panels per length T.
        n_boot: bootstrap replicates of the fits.
    """

    archs: tuple[str, ...] = ("erf_last", "minimalrnn_erf", "gru_erf")
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)
    seeds: int = 8
    n_inputs: int = 8
    lengths: tuple[int, ...] = (5,)
    input_dim: int = 4
    n_boot: int = 2000


QUICK = {
    "widths": (16, 64, 256),
    "seeds": 3,
    "n_inputs": 3,
    "lengths": (3,),
    "input_dim": 2,
    "n_boot": 200,
}


def convergence_config(
    arch: str, T: int, width: int, p: GatedConvergenceParams, seed: int, outputs: Path
) -> ConvergenceConfig:
    """The convergence run of one cell, length and width; with the default data it is the
    run of ``python -m experiments.convergence arch=ARCH width=W seeds=S`` (plus
    ``data.T=T data.n=N data.m=M data.seed=SEED`` otherwise)."""
    if arch not in CELLS:
        raise ValueError(f"unknown arch {arch!r} for gated_convergence; known: {', '.join(CELLS)}")
    data = DataConfig(n=p.n_inputs, T=T, m=p.input_dim, seed=seed)
    return ConvergenceConfig(
        name=f"{arch}-{data.name}",
        arch=ArchConfig(name=arch, **CELLS[arch][1]),
        data=data,
        width=width,
        seeds=p.seeds,
        base_seed=seed,
        cache_dir=str(outputs / "cache"),
    )


def _fitted(cfgs: list[ConvergenceConfig], outputs: Path, index: RecordIndex, p, seed: int):
    """The convergence report's series of these runs (found or run), fitted by its
    :func:`~experiments.convergence.report.fit_series`."""
    from experiments.common.records import record_hash
    from experiments.common.reporting import RecordScan, scan
    from experiments.convergence.report import collect, fit_series

    recs = records(cfgs, outputs, index)
    wanted = {record_hash(r) for r in recs}
    found = scan(outputs, "convergence")
    mine = RecordScan(
        outputs, records=[(pth, r) for pth, r in found.records if record_hash(r) in wanted]
    )
    series = collect(outputs, mine)
    if len(series) != 1:
        raise ValueError(f"expected one series of convergence runs, found {len(series)}")
    fit_series(series, n_boot=p.n_boot, seed=seed)
    return series[0]


def draw(tables: dict[str, Table], meta: dict) -> plt.Figure:
    rows = tables["main"]
    lengths = sorted({r["T"] for r in rows})
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    fig, axes = plt.subplots(
        len(lengths), len(kernels), figsize=(3.8 * len(kernels), 4.2 * len(lengths)),
        squeeze=False,
    )  # fmt: skip
    for i, T in enumerate(lengths):
        for j, kernel in enumerate(kernels):
            ax = axes[i, j]
            pr = select(rows, T=T, kernel=kernel)
            for k, arch in enumerate(dict.fromkeys(r["series"] for r in pr)):
                color = f"C{k}"
                sr = select(pr, series=arch)
                words = sr[0]["label"]
                plot_fit(ax, select(sr, statistic="per_network"), color, words)
                sm = sorted(select(sr, statistic="seed_mean"), key=lambda r: r["width"])
                ax.plot([r["width"] for r in sm], [r["value"] for r in sm], "o--", mfc="none",
                        color=color, ms=4, lw=0.8, label=f"{words}, seed mean")  # fmt: skip
            per_net = select(pr, statistic="per_network")
            ws = np.array(sorted({r["width"] for r in per_net}), float)
            ref = max(r["value"] for r in per_net if r["width"] == ws[0])
            ax.plot(ws, ref * (ws / ws[0]) ** -0.5, "k:", lw=1, label=r"$\propto n^{-1/2}$")
            ax.set(xscale="log", yscale="log", title=f"{kernel.upper()}, T = {T}")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("width $n$")
            if j == 0:
                ax.set_ylabel("relative Frobenius error")
            # below the panel: the points fill the diagonal of the log-log axes
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    return fig


@register_figure("gated_convergence", draw=draw, order=7)
def compute(opts: RunOptions) -> FigureResult:
    p = resolve_params(GatedConvergenceParams, opts, QUICK)
    outputs = Path(opts.outputs_root)
    index = RecordIndex(outputs, opts.device)
    rows: Table = []
    headline: dict = {"exponents": {}, "seed_mean_error": {}}
    for T in p.lengths:
        for arch in p.archs:
            cfgs = [convergence_config(arch, T, w, p, opts.seed, outputs) for w in p.widths]
            for c in cfgs:
                c.progress = opts.progress
            ser = _fitted(cfgs, outputs, index, p, opts.seed)
            words = CELLS[arch][0]
            for kernel, (per_net, seed_mean) in METRICS.items():
                fit, fit_mean = ser.fits[per_net], ser.fits[seed_mean]
                for stat, f in (("per_network", fit), ("seed_mean", fit_mean)):
                    for w, v, lo, hi, n in zip(
                        f.widths, f.values, f.value_low, f.value_high, f.n_seeds
                    ):
                        rows.append({
                            "series": arch, "label": words, "T": T, "kernel": kernel,
                            "statistic": stat, "width": w, "value": v, "low": lo, "high": hi,
                            "seeds": n, "exponent": f.exponent, "exp_low": f.ci_low,
                            "exp_high": f.ci_high, "intercept": f.intercept,
                        })  # fmt: skip
                key = f"{arch}_T{T}_{kernel}"
                headline["exponents"][key] = {
                    "exponent": fit.exponent,
                    "ci95": [fit.ci_low, fit.ci_high],
                    "covers_-0.5": bool(fit.covers(-0.5)),
                }
                headline["seed_mean_error"][key] = dict(
                    zip((str(w) for w in fit_mean.widths), fit_mean.values)
                )
    setup = (
        f"- Data: N = {p.n_inputs} Gaussian sequences in R^{p.input_dim} (data seed "
        f"{opts.seed}), T in {fmt_list(p.lengths)}; the same sequences for every cell.\n"
        "- Cells: "
        + ", ".join(f"{CELLS[a][0]} (`arch={a}`)" for a in p.archs)
        + "; erf gate (1 + erf)/2 and erf phi, s_w = s_u = s_v = 1, s_b = 0.1, zero h0, last "
        "readout, ntk parameterization, float64.\n"
        f"- Widths {fmt_list(p.widths)}, {p.seeds} networks each (seeds {opts.seed}.."
        f"{opts.seed + p.seeds - 1}); empirical kernels exact (torch.func Jacobians for the "
        "gated cells, the structured method for Elman) against the analytic kernels.\n"
        "- Filled points: mean over networks of the per-network error; band and exponent "
        f"interval: 95% percentile bootstrap over networks ({p.n_boot} replicates; the "
        "convergence experiment's report fit). Open points: the seed-averaged kernel's error.\n"
        "- Runs are convergence-experiment records under outputs/convergence (reused when "
        "their configuration matches)."
    )
    return FigureResult(
        tables={"main": rows},
        headline=headline,
        setup=setup,
        draw=draw,
        title="Gated RNNs: empirical vs analytic NTK/NNGP against width",
        description=(
            "Per-network relative Frobenius error of the empirical NTK and NNGP of Elman, "
            "minimalRNN and GRU networks against their infinite-width kernels, with fitted "
            "exponents and the n^-1/2 reference; open markers: the seed-averaged kernel."
        ),
        params=p,
    )
