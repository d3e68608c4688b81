r"""``length_width``: how wide must an RNN be for the RNTK to hold at sequence length T?

Over a grid of lengths T and widths n, per phase (nonlinearity and s_w) and readout, the
convergence experiment (:mod:`experiments.convergence`) measures S networks per cell; from
its records and ``kernels.npz`` this figure computes, per cell,

- the per-network relative Frobenius deviation ||Theta_hat - Theta||_F / ||Theta||_F:
  mean, median, 90% quantile over seeds;
- the relative variance Var[Theta_hat(x, x)] / Theta(x, x)^2 and Var[log Theta_hat(x, x)] of
  the diagonal entries (averaged over the N inputs x);
- the error of the seed mean (debiased ||E Theta_hat - Theta||_F / ||Theta||_F, the 1/n
  bias);

and compares candidate width-length laws by held-out prediction
(:func:`rntk_empirical.scaling.compare_laws`): fit on the shorter half of the lengths,
predict the longer half. The winning law per phase is refitted on the whole grid with a
bootstrap over seeds; its constants are what :func:`rntk_empirical.scaling.required_width`
reads (``rntk_empirical/data/length_width_laws.json``, written by ``+params.save_laws=PATH``).

Runs already under ``outputs/`` with the same configuration are reused; missing ones are run
(cheapest first). ``+params.max_cell_cost=C`` skips cells with T n^2 > C (a reduced grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from experiments.common.records import atomic_write_json, find_records, record_hash, utc_now
from experiments.common.schema import ArchConfig
from experiments.common.sweeps import RecordIndex, records
from experiments.convergence.schema import ConvergenceConfig, DataConfig
from experiments.figures.common import (
    FigureResult,
    RunOptions,
    Table,
    fmt_list,
    register_figure,
    resolve_params,
    select,
)
from rntk_empirical.safe_io import load_npz
from rntk_empirical.scaling import (
    DEVIATION_LAWS,
    LAWS,
    VAR_LOG_LAWS,
    bootstrap_law,
    compare_laws,
    required_width,
)

# phase name -> Architecture fields (s_u = 1, s_b = 0.1, s_v = 1, zero h0 as the defaults)
PHASES: dict[str, dict] = {
    "relu_ordered": {"nonlinearity": "relu", "sigma_w": 1.0},
    "relu_critical": {"nonlinearity": "relu", "sigma_w": math.sqrt(2.0)},
    "erf_sw1": {"nonlinearity": "erf", "sigma_w": 1.0},
    "erf_chaotic": {"nonlinearity": "erf", "sigma_w": 2.5},
    "tanh_sw1": {"nonlinearity": "tanh", "sigma_w": 1.0},
}


PHASE_WORDS = {
    "relu_ordered": "ReLU, $s_w$ = 1 (ordered)",
    "relu_critical": r"ReLU, $s_w = \sqrt{2}$ (critical)",
    "erf_sw1": "erf, $s_w$ = 1",
    "erf_chaotic": "erf, $s_w$ = 2.5 (chaotic)",
    "tanh_sw1": "tanh, $s_w$ = 1",
}
READOUT_WORDS = {"last": "last step", "avg": "mean pooling"}


@dataclass(frozen=True)
class LengthWidthParams:
    """Setup of the ``length_width`` figure.

    Attributes:
        phases: keys of :data:`PHASES`; readouts: ``last`` and/or ``avg``.
        lengths, widths: the grid (every cell is one convergence run).
        seeds: networks per cell; small_width_seeds at widths <= small_width (heavy tails).
        n_inputs, input_dim: N Gaussian sequences (T, m) per length (data seed = seed).
        max_cell_cost: skip cells with T n^2 above it (None: the whole grid).
        num_threads: torch threads of the runs (execution only, not part of a run's identity).
        n_boot: bootstrap replicates of the fitted laws.
        tolerance: the deviation level of the headline required widths.
        fit_max_deviation: cells whose median deviation exceeds it are left out of every
            law fit (far outside the kernel regime the per-network kernel is heavy-tailed and
            no law of the near-kernel regime applies; required widths are for small
            tolerances).
        save_laws: if set, write the fitted laws (the JSON required_width reads) there.
    """

    phases: tuple[str, ...] = tuple(PHASES)
    readouts: tuple[str, ...] = ("last", "avg")
    lengths: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    seeds: int = 16
    small_width_seeds: int = 32
    small_width: int = 256
    n_inputs: int = 4
    input_dim: int = 4
    max_cell_cost: float | None = None
    num_threads: int | None = None
    n_boot: int = 400
    tolerance: float = 0.1
    fit_max_deviation: float = 1.0
    save_laws: str | None = None


QUICK = {
    "phases": ("relu_critical",),
    "readouts": ("last",),
    "lengths": (2, 4, 8),
    "widths": (32, 64, 128),
    "seeds": 8,
    "small_width_seeds": 8,
    "n_inputs": 2,
    "n_boot": 50,
    "tolerance": 0.3,
}


def cell_seeds(p: LengthWidthParams, width: int) -> int:
    return p.small_width_seeds if width <= p.small_width else p.seeds


def grid_cells(p: LengthWidthParams) -> list[tuple[str, str, int, int]]:
    """``(phase, readout, T, n)`` of every cell to measure, cheapest (S T n^2) first."""
    for ph in p.phases:
        if ph not in PHASES:
            raise ValueError(f"unknown phase {ph!r}; known: {', '.join(PHASES)}")
    cells = [
        (ph, ro, T, n)
        for ph in p.phases
        for ro in p.readouts
        for T in p.lengths
        for n in p.widths
        if p.max_cell_cost is None or T * n * n <= p.max_cell_cost
    ]
    return sorted(cells, key=lambda c: (cell_seeds(p, c[3]) * c[2] * c[3] ** 2, c))


def cell_config(
    p: LengthWidthParams, phase: str, readout: str, T: int, width: int, seed: int, outputs: Path
) -> ConvergenceConfig:
    """The convergence run of one cell (names only label folders; runs are found by hash)."""
    name = f"lw_{phase}_{readout}"
    data = DataConfig(
        name=f"random_N{p.n_inputs}_T{T}_m{p.input_dim}",
        n=p.n_inputs,
        T=T,
        m=p.input_dim,
        seed=seed,
    )
    return ConvergenceConfig(
        name=f"{name}-{data.name}",
        arch=ArchConfig(name=name, readout=readout, **PHASES[phase]),
        data=data,
        width=width,
        seeds=cell_seeds(p, width),
        base_seed=seed,
        nngp=False,
        progress=False,
        num_threads=p.num_threads,
        cache_dir=str(outputs / "cache"),
    )


# ---------------------------------------------------------------------------- statistics
TARGETS = ("median", "q90", "mean", "var_log")
STATISTICS = {
    "median": lambda e: float(np.median(e)),
    "q90": lambda e: float(np.quantile(e, 0.9)),
    "mean": lambda e: float(np.mean(e)),
    # items (S, N): log diagonal entries; the variance over seeds, averaged over inputs
    "var_log": lambda d: float(np.mean(np.var(d, axis=0, ddof=1))),
}
REPORT_LENGTHS = (10, 100, 1000)
MAX_WIDTH_EXTRAPOLATION = 2.0


def cell_stats(rec: dict, kernels: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """One cell's row (every statistic) and its per-seed items: the relative Frobenius
    deviations ``(S,)`` and the log diagonal entries ``(S, N)``."""
    ntk = np.asarray(kernels["ntk"], dtype=np.float64)  # (S, N, N)
    ref = np.asarray(kernels["analytic_ntk"], dtype=np.float64)  # (N, N)
    dev = np.array([e["ntk"]["rel_fro"] for e in rec["per_seed"]], dtype=np.float64)
    diag = np.diagonal(ntk, axis1=1, axis2=2)  # (S, N)
    ref_diag = np.diag(ref)
    log_diag = np.log(diag)
    row = {
        "seeds": int(len(dev)),
        "dev_mean": float(dev.mean()),
        "dev_median": float(np.median(dev)),
        "dev_q90": float(np.quantile(dev, 0.9)),
        "rel_var_diag": float(np.mean(np.var(diag, axis=0, ddof=1) / ref_diag**2)),
        "var_log_diag": STATISTICS["var_log"](log_diag),
        "diag_dev_median": float(np.median(np.abs(diag / ref_diag - 1.0))),
        "seed_mean_error": float(rec["ntk"]["mean_kernel"]["rel_fro"]),
        "bias": float(rec["ntk"].get("debiased_bias", float("nan"))),
    }
    return row, dev, log_diag


def extrapolation_split(T: np.ndarray, lengths) -> np.ndarray:
    """Training cells: the shorter half of the lengths (rounded up); the rest is held out."""
    ls = sorted(set(int(t) for t in lengths))
    cut = ls[math.ceil(len(ls) / 2) - 1]
    return np.asarray(T) <= cut


def checkerboard_split(T: np.ndarray, n: np.ndarray, lengths, widths) -> np.ndarray:
    """Training cells: alternate cells of the (T, n) grid (interpolation test)."""
    ti = {t: k for k, t in enumerate(sorted(set(lengths)))}
    ni = {w: k for k, w in enumerate(sorted(set(widths)))}
    return np.array([(ti[int(t)] + ni[int(w)]) % 2 == 0 for t, w in zip(T, n)])


def scaling_variable(law: str, theta, T, n) -> tuple[np.ndarray, str]:
    """The law's collapse variable s (y is a function of s alone) and its label."""
    T, n = np.asarray(T, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if law in ("sqrt_T_over_n", "lognormal", "lognormal_median", "var_log_T_over_n"):
        return T / n, "$T/n$"
    if law == "T_power_a":
        return T ** (2 * theta[1]) / n, f"$T^{{{2 * theta[1]:.2f}}}/n$"
    if law == "var_log_T_power_a":
        return T ** theta[1] / n, f"$T^{{{theta[1]:.2f}}}/n$"
    if law == "T_power_a_n_power_b":
        return T ** (theta[1] / theta[2]) / n, f"$T^{{{theta[1] / theta[2]:.2f}}}/n$"
    if law in ("saturation", "var_log_saturation"):
        xi = math.exp(theta[1])
        return xi * -np.expm1(-T / xi) / n, rf"$\xi(1-e^{{-T/\xi}})/n$, $\xi$={xi:.3g}"
    raise ValueError(f"unknown law {law!r}")


def _laws_for(target: str):
    return VAR_LOG_LAWS if target == "var_log" else DEVIATION_LAWS


def _series_laws(cells: list[tuple[int, int, np.ndarray, np.ndarray]], p, seed: int):
    """Compare the laws of every target by held-out prediction and bootstrap the winners.

    Returns ``(comparison rows, fit rows, {target: FittedLaw})``."""
    T = np.array([c[0] for c in cells], dtype=np.float64)
    n = np.array([c[1] for c in cells], dtype=np.float64)
    comp_rows, fit_rows, fitted = [], [], {}
    lengths, widths = sorted(set(T.astype(int))), sorted(set(n.astype(int)))
    splits = {
        "extrapolate_T": extrapolation_split(T, lengths),
        "checkerboard": checkerboard_split(T, n, lengths, widths),
    }
    for target in TARGETS:
        k = 3 if target == "var_log" else 2
        y = np.array([STATISTICS[target](c[k]) for c in cells])
        best = None
        for split, train in splits.items():
            for rank, c in enumerate(compare_laws(_laws_for(target), T, n, y, train)):
                comp_rows.append(
                    {
                        "target": target,
                        "split": split,
                        "law": c.law,
                        "rank": rank + 1,
                        "rms_train": c.rms_train,
                        "rms_heldout": c.rms_heldout,
                        "worst_T": c.worst_heldout[0],
                        "worst_n": c.worst_heldout[1],
                        "worst_log_error": c.worst_heldout[2],
                        **{f"theta{j}": v for j, v in enumerate(c.theta)},
                    }
                )
                if split == "extrapolate_T" and rank == 0:
                    best = c
        fit = bootstrap_law(
            LAWS[best.law],
            [(t, w, c[k]) for t, w, c in zip(T, n, cells)],
            STATISTICS[target],
            target=target,
            n_boot=p.n_boot,
            seed=seed,
            rms_heldout=best.rms_heldout,
        )
        fitted[target] = fit
        fit_rows.append(
            {
                "target": target,
                "law": fit.law,
                "formula": LAWS[fit.law].formula,
                "rms": fit.rms,
                "rms_heldout": fit.rms_heldout,
                "n_boot": fit.n_boot,
                **{f"theta{j}": v for j, v in enumerate(fit.theta)},
                **{
                    f"{name}{suffix}": v
                    for name, (val, lo, hi) in fit.constants().items()
                    for suffix, v in (("", val), ("_low", lo), ("_high", hi))
                },
            }
        )
    return comp_rows, fit_rows, fitted


def laws_document(entries: list[dict], p: LengthWidthParams, seed: int) -> dict:
    """The JSON :func:`rntk_empirical.scaling.required_width` reads."""
    return {
        "description": (
            "Width-length laws of the per-network relative deviation of the empirical NTK "
            "of Elman RNNs from the RNTK (experiments/figures/length_width.py)"
        ),
        "created": utc_now(),
        "command": "python -m experiments.figures figure=length_width",
        "setup": {
            "lengths": list(p.lengths),
            "widths": list(p.widths),
            "seeds": p.seeds,
            "small_width_seeds": p.small_width_seeds,
            "small_width": p.small_width,
            "n_inputs": p.n_inputs,
            "input_dim": p.input_dim,
            "data_seed": seed,
            "max_cell_cost": p.max_cell_cost,
            "n_boot": p.n_boot,
        },
        "max_width_extrapolation": MAX_WIDTH_EXTRAPOLATION,
        "entries": entries,
    }


def _fmt_width(rw) -> str:
    if isinstance(rw, str):
        return rw
    return f"{rw.width:.0f} [{rw.low:.0f}, {rw.high:.0f}]"


# ---------------------------------------------------------------------------- drawing
def draw(tables: dict[str, Table], meta: dict) -> plt.Figure:
    rows, fits = tables["main"], tables["fits"]
    series = list(dict.fromkeys((r["phase"], r["readout"]) for r in rows))
    fig, axes = plt.subplots(len(series), 4, figsize=(15, 3.0 * len(series)), squeeze=False)
    lengths = sorted({r["T"] for r in rows})
    cmap = plt.get_cmap("viridis")
    color = {T: cmap(k / max(1, len(lengths) - 1) * 0.9) for k, T in enumerate(lengths)}
    for ax_row, (phase, readout) in zip(axes, series):
        sr = select(rows, phase=phase, readout=readout)
        label = f"{PHASE_WORDS.get(phase, phase)}, {READOUT_WORDS.get(readout, readout)}"
        fr = {f["target"]: f for f in select(fits, phase=phase, readout=readout)}
        for T in lengths:
            tr = sorted(select(sr, T=T), key=lambda r: r["width"])
            if not tr:
                continue
            w = [r["width"] for r in tr]
            ax_row[0].plot(
                w, [r["dev_median"] for r in tr], "o-", color=color[T], ms=3, label=f"T={T}"
            )
            ax_row[0].plot(w, [r["dev_q90"] for r in tr], ":", color=color[T], lw=1)
            ratio = [r["T"] / r["width"] for r in tr]
            ax_row[1].plot(ratio, [r["var_log_diag"] for r in tr], "o-", color=color[T], ms=3)
            ax_row[1].plot(ratio, [r["rel_var_diag"] for r in tr], "x:", color=color[T], ms=3)
            ax_row[2].plot(
                w, [max(r["seed_mean_error"], 1e-6) for r in tr], "o-", color=color[T], ms=3
            )
        ax_row[0].set(
            xscale="log",
            yscale="log",
            xlabel="width $n$",
            ylabel="rel. deviation: median (o), q90 (:)",
            title=label,
        )
        ax_row[0].legend(fontsize=6, frameon=False, ncol=2)
        ax_row[1].set(
            xscale="log",
            yscale="log",
            xlabel="$T/n$",
            ylabel=r"Var log $\hat\Theta(x,x)$ (o), rel. var (x)",
            title=label,
        )
        ax_row[2].set(
            xscale="log",
            yscale="log",
            xlabel="width $n$",
            ylabel="error of the seed mean",
            title=label,
        )
        ws = np.array(sorted({r["width"] for r in sr}), float)
        ref = max(r["seed_mean_error"] for r in sr if r["width"] == ws[0])
        ax_row[2].plot(ws, ref * ws[0] / ws, "k:", lw=1, label=r"$\propto 1/n$")
        ax_row[2].legend(fontsize=6, frameon=False)
        f = fr.get("median")
        if f is not None:
            theta = [f[k] for k in ("theta0", "theta1", "theta2") if f.get(k) is not None]
            T = np.array([r["T"] for r in sr], float)
            n = np.array([r["width"] for r in sr], float)
            s, xl = scaling_variable(f["law"], theta, T, n)
            fitted = np.array([r.get("in_fit", True) in (True, None) for r in sr])
            dev = np.array([r["dev_median"] for r in sr])
            for T0 in lengths:
                for inside, mfc in ((True, color[T0]), (False, "none")):
                    m = (T == T0) & (fitted == inside)
                    ax_row[3].plot(s[m], dev[m], "o", color=color[T0], mfc=mfc, ms=3)
            order = np.argsort(s)
            pred = np.exp(LAWS[f["law"]].log_predict(theta, T, n))
            ax_row[3].plot(
                s[order],
                pred[order],
                "k-",
                lw=1,
                label=f"{f['law']}: held-out rms {f['rms_heldout']:.2f}",
            )
            ax_row[3].set(
                xscale="log",
                yscale="log",
                xlabel=xl,
                ylabel="median rel. deviation",
                title=f"collapse: {label}",
            )
            ax_row[3].legend(fontsize=6, frameon=False)
    for ax in axes.flat:  # minor-tick labels of short log ranges overlap (T/n, widths)
        ax.xaxis.set_minor_formatter(NullFormatter())
    return fig


# ---------------------------------------------------------------------------- compute
@register_figure("length_width", draw=draw, order=7)
def compute(opts: RunOptions) -> FigureResult:
    p = resolve_params(LengthWidthParams, opts, QUICK)
    outputs = Path(opts.outputs_root)
    index = RecordIndex(outputs)
    cells = grid_cells(p)
    recs = {
        c: records([cell_config(p, *c, opts.seed, outputs)], outputs, index)[0]
        for c in cells
    }
    where = {record_hash(r): path.parent for path, r in find_records(outputs / "convergence")}
    rows: Table = []
    items: dict[tuple[str, str], list] = {}
    for (ph, ro, T, n), rec in sorted(recs.items(), key=lambda kv: kv[0]):
        kernels = load_npz(where[record_hash(rec)] / rec["kernels_file"])
        row, dev, log_diag = cell_stats(rec, kernels)
        in_fit = row["dev_median"] <= p.fit_max_deviation
        rows.append({"phase": ph, "readout": ro, "T": T, "width": n, **row, "in_fit": in_fit})
        if in_fit:
            items.setdefault((ph, ro), []).append((T, n, dev, log_diag))
    comp_rows: Table = []
    fit_rows: Table = []
    entries = []
    headline: dict = {"winner": {}, "required_width": {}}
    for (ph, ro), cs in items.items():
        c_rows, f_rows, fitted = _series_laws(cs, p, opts.seed)
        comp_rows += [{"phase": ph, "readout": ro, **r} for r in c_rows]
        fit_rows += [{"phase": ph, "readout": ro, **r} for r in f_rows]
        arch = cell_config(p, ph, ro, 1, 1, 0, outputs).arch.to_architecture()
        entries.append(
            {
                "phase": ph,
                "arch": arch.to_dict(),
                "laws": {t: fitted[t].to_dict() for t in TARGETS},
            }
        )
        med = fitted["median"]
        headline["winner"][f"{ph}_{ro}"] = {
            "law": med.law,
            "constants": {k: [round(x, 4) for x in v] for k, v in med.constants().items()},
            "rms_heldout": round(med.rms_heldout, 4),
            "var_log_law": fitted["var_log"].law,
            "var_log_constants": {
                k: [round(x, 4) for x in v] for k, v in fitted["var_log"].constants().items()
            },
        }
    doc = laws_document(entries, p, opts.seed)
    laws_path = Path(p.save_laws) if p.save_laws else outputs / "length_width_laws.json"
    laws_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(laws_path, doc)
    headline["laws_file"] = str(laws_path)
    req_rows: Table = []
    for e in entries:
        arch = e["arch"]
        key = f"{e['phase']}_{arch['readout']}"
        headline["required_width"][key] = {}
        for q in ("median", "q90"):
            for T in REPORT_LENGTHS:
                try:
                    rw = required_width(arch, T, p.tolerance, q, laws=doc)
                    row = {"width": rw.width, "low": rw.low, "high": rw.high, "law": rw.law}
                    text = _fmt_width(rw)
                except ValueError as err:
                    row, text = {"refused": str(err)}, "outside the supported range"
                req_rows.append(
                    {
                        "phase": e["phase"],
                        "readout": arch["readout"],
                        "quantile": q,
                        "T": T,
                        "tolerance": p.tolerance,
                        **row,
                    }
                )
                if q == "median":
                    headline["required_width"][key][f"T={T}"] = text
    setup = (
        f"- Data: N = {p.n_inputs} Gaussian sequences in R^{p.input_dim} per length "
        f"(data seed {opts.seed}), lengths T in {fmt_list(p.lengths)}.\n"
        f"- Phases: {', '.join(f'{k} ({v})' for k, v in PHASES.items() if k in p.phases)}; "
        "s_u = 1, s_b = 0.1, s_v = 1, zero h0, ntk parameterization, 1 layer; readouts "
        f"{', '.join(p.readouts)}.\n"
        f"- Widths {fmt_list(p.widths)}; {p.seeds} networks per cell ({p.small_width_seeds} "
        f"at widths <= {p.small_width})"
        + (f"; cells with T n^2 > {p.max_cell_cost:g} skipped" if p.max_cell_cost else "")
        + "; structured empirical NTK in float64 against the analytic RNTK.\n"
        "- Per cell: mean / median / 90% quantile over networks of ||Theta_hat - "
        "Theta||_F/||Theta||_F; relative variance and variance of log of the diagonal "
        "entries Theta_hat(x, x) (averaged over x); error of the seed-averaged kernel.\n"
        f"- Laws: fitted on the cells with median deviation <= {p.fit_max_deviation:g} "
        "(in_fit), by least squares on log y; held-out score = RMS log error on the "
        "longer half of the lengths when fitted on the shorter half (extrapolate_T), and on "
        "alternate cells (checkerboard). Winner (best extrapolate_T) refitted on all cells "
        f"with a {p.n_boot}-replicate bootstrap over networks within cells.\n"
        f"- Required widths: tolerance {p.tolerance} at T = {fmt_list(REPORT_LENGTHS)} from "
        "rntk_empirical.scaling.required_width (refuses outside the measured range)."
    )
    return FigureResult(
        tables={"main": rows, "fits": fit_rows, "laws": comp_rows, "required": req_rows},
        headline=headline,
        setup=setup,
        draw=draw,
        title="How wide must an RNN be for the RNTK to hold at length T? (width-length law)",
        description=(
            "Per-network deviation of the empirical NTK from the RNTK over a grid of lengths "
            "and widths per phase; candidate laws compared by held-out prediction, data "
            "collapse against the winner's scaling variable, required widths."
        ),
        params=p,
    )
