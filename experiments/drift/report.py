"""Aggregate drift runs: exponents vs width with bootstrap intervals, curves, CSVs.

    python -m experiments.drift.report outputs/drift            # any folder of drift runs

Records are grouped by configuration (everything but the width), so a folder holding, say,
gaussian and orthogonal sweeps gives one series each, drawn side by side. For each group
and quantity q in {NTK drift, kernel distance, relative weight change, output distance to
the linearized network, to the kernel prediction with Theta_0 and with the analytic Theta},
the value at the last recorded step is averaged over the non-diverged seeds at every width
and q(n) ~ C n^p is fitted on log-log axes with a percentile bootstrap over seeds
(:func:`rntk_empirical.scaling.bootstrap_power_law`). Theory: the drift is bounded by
n^(-1/2) and predicted to scale like n^(-1) in the NTK parameterization.

Writes into ``<root>/report`` (or ``--out``): ``drift_vs_width.{png,pdf}``,
``drift_vs_step.{png,pdf}``, ``loss_curves.{png,pdf}``, ``points.csv`` (every plotted point),
``curves.csv`` (every recorded step of every seed), ``summary.json`` and ``summary.md``.
Diverged seeds are counted in the CSVs and marked on the plots; they never fail the report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.common.records import atomic_write_json, config_hash  # noqa: E402
from experiments.common.reporting import (  # noqa: E402
    RecordScan,
    SweepReport,
    differing_keys,
    flatten,
    report_folder,
    report_main,
    save_figure,
    scan,
    write_csv,
    write_text,
)
from experiments.common.style import describe_arch, paper_style  # noqa: E402
from experiments.drift.summary import final_value  # noqa: E402
from rntk_empirical.scaling import bootstrap_power_law  # noqa: E402

log = logging.getLogger(__name__)

QUANTITIES = {
    "ntk_drift": r"NTK drift $\|\Theta_t-\Theta_0\|_F/\|\Theta_0\|_F$",
    "kernel_distance": r"kernel distance $1-\cos(\Theta_t,\Theta_0)$",
    "weight_change_total": r"relative weight change $\|\theta_t-\theta_0\|/\|\theta_0\|$",
    "dist_linearized": r"RMS $|f - f_{\mathrm{lin}}|$",
    "dist_kernel_empirical": r"RMS $|f - f_{\Theta_0}|$ (kernel GD, own $\Theta_0$)",
    "dist_kernel_analytic": r"RMS $|f - f_{\Theta}|$ (kernel GD, analytic $\Theta$)",
}
WIDTH_PLOT = ("ntk_drift", "weight_change_total", "dist_linearized", "dist_kernel_analytic")


def _group_key(rec: dict) -> str:
    ident = dict(rec["identity"])
    ident.pop("width", None)
    return config_hash(ident, 10)


def collect(found: RecordScan) -> dict[str, dict]:
    """Group key -> {"label", "identity", "runs": {width: record}}."""
    groups: dict[str, dict] = {}
    for path, rec in found.records:
        if not isinstance(rec.get("per_seed"), list) or "width" not in rec:
            found.exclude(path, "a drift record without per_seed results or width")
            continue
        g = groups.setdefault(_group_key(rec), {"identity": rec["identity"], "runs": {}})
        g["runs"][int(rec["width"])] = rec
    differing = differing_keys([g["identity"] for g in groups.values()], {"width", "name"})
    for g in groups.values():
        flat = flatten(g["identity"])
        arch = g["identity"].get("arch")
        first = describe_arch(arch) if isinstance(arch, dict) else g["identity"].get("name", "run")
        parts = [str(first)] + [
            f"{k}={flat.get(k)}" for k in differing if not k.startswith("arch.")
        ]
        g["label"] = ", ".join(parts)
    return groups


def _final_samples(group: dict, q: str) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    samples, diverged = {}, {}
    for w, rec in sorted(group["runs"].items()):
        vals = [final_value(e, q) for e in rec["per_seed"]]
        ok = [v for v in vals if v is not None and v > 0]
        diverged[w] = sum(e["history"]["diverged"] for e in rec["per_seed"])
        if ok:
            samples[w] = np.array(ok)
    return samples, diverged


def fit_groups(groups: dict[str, dict], n_boot: int, level: float, seed: int = 0) -> list[dict]:
    """One row per (group, quantity, width) with the fit of that (group, quantity)."""
    rows = []
    for key, g in groups.items():
        for q in QUANTITIES:
            samples, diverged = _final_samples(g, q)
            fit = None
            if len(samples) >= 2:
                fit = bootstrap_power_law(samples, n_boot=n_boot, level=level, seed=seed)
            g.setdefault("fits", {})[q] = None if fit is None else fit.to_dict()
            for j, w in enumerate(sorted(g["runs"])):
                s = samples.get(w)
                row = {
                    "group": key,
                    "label": g["label"],
                    "quantity": q,
                    "width": w,
                    "mean": float(s.mean()) if s is not None else float("nan"),
                    "n_seeds": 0 if s is None else len(s),
                    "n_diverged": diverged[w],
                }
                if fit is not None and s is not None:
                    k = sorted(samples).index(w)
                    row["ci_low"], row["ci_high"] = fit.value_low[k], fit.value_high[k]
                    row["exponent"], row["exp_ci_low"], row["exp_ci_high"] = (
                        fit.exponent,
                        fit.ci_low,
                        fit.ci_high,
                    )
                rows.append(row)
                del j
    return rows


def curve_rows(groups: dict[str, dict]) -> list[dict]:
    rows = []
    for key, g in groups.items():
        for w, rec in sorted(g["runs"].items()):
            for e in rec["per_seed"]:
                h = e["history"]
                for i, step in enumerate(h["step"]):
                    row = {
                        "group": key,
                        "label": g["label"],
                        "width": w,
                        "seed": e["seed"],
                        "step": step,
                        "diverged": h["diverged"],
                    }
                    for q in (
                        "train_loss",
                        "test_loss",
                        "lin_train_loss",
                        "kernel_empirical_train_loss",
                        "kernel_analytic_train_loss",
                        *QUANTITIES,
                    ):
                        row[q] = h[q][i] if i < len(h[q]) else float("nan")
                    rows.append(row)
    return rows


def plot_width(groups: dict[str, dict], stem: Path) -> list[Path]:
    fig, axes = plt.subplots(1, len(WIDTH_PLOT), figsize=(4.2 * len(WIDTH_PLOT), 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, q in zip(axes, WIDTH_PLOT):
        for ci, g in enumerate(groups.values()):
            samples, diverged = _final_samples(g, q)
            fit = g.get("fits", {}).get(q)
            if not samples:
                continue
            ws = np.array(sorted(samples))
            mean = np.array([samples[w].mean() for w in ws])
            c = colors[ci % len(colors)]
            if fit is not None:
                lo, hi = np.array(fit["value_low"]), np.array(fit["value_high"])
                ax.errorbar(
                    ws,
                    mean,
                    yerr=[mean - lo, hi - mean],
                    fmt="o",
                    color=c,
                    capsize=3,
                    label=f"{g['label']}: $p={fit['exponent']:.2f}$ "
                    f"[{fit['ci_low']:.2f}, {fit['ci_high']:.2f}]",
                )
                ax.plot(ws, np.exp(fit["intercept"]) * ws ** fit["exponent"], "-", color=c, lw=1)
            else:
                ax.plot(ws, mean, "o", color=c, label=g["label"])
            bad = [w for w, k in diverged.items() if k]
            if bad:
                ax.plot(
                    bad,
                    [mean.max()] * len(bad),
                    "x",
                    color=c,
                    ms=9,
                    label=f"diverged seeds at n={bad}",
                )
            for slope, ls in ((-0.5, ":"), (-1.0, "--")):
                ax.plot(
                    ws,
                    mean[0] * (ws / ws[0]) ** slope,
                    ls,
                    color="gray",
                    lw=0.8,
                    label=f"$n^{{{slope:g}}}$" if ci == 0 else None,
                )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width $n$")
        ax.set_title(QUANTITIES[q], fontsize=9)
        ax.legend(fontsize=6.5)
    fig.suptitle("Trained Elman RNNs: change during training vs width (final step)")
    return save_figure(fig, stem)


def plot_steps(groups: dict[str, dict], stem: Path) -> list[Path]:
    n = len(groups)
    fig, axes = plt.subplots(2, n, figsize=(5 * n, 7), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for j, g in enumerate(groups.values()):
        widths = sorted(g["runs"])
        for k, w in enumerate(widths):
            c = cmap(k / max(1, len(widths) - 1))
            hs = [e["history"] for e in g["runs"][w]["per_seed"] if not e["history"]["diverged"]]
            if not hs:
                continue
            L = min(len(h["step"]) for h in hs)
            steps = hs[0]["step"][:L]
            drift = np.mean([h["ntk_drift"][:L] for h in hs], axis=0)
            axes[0, j].plot(steps[1:], drift[1:], color=c, label=f"n={w}")
            for key, ls in (
                ("train_loss", "-"),
                ("lin_train_loss", "--"),
                ("kernel_analytic_train_loss", ":"),
            ):
                v = np.nanmean(np.array([h[key][:L] for h in hs], dtype=float), axis=0)
                if np.isfinite(v).any():
                    axes[1, j].plot(
                        steps, v, ls, color=c, label=f"n={w}" if key == "train_loss" else None
                    )
        axes[0, j].set(yscale="log", xlabel="step", ylabel="NTK drift", title=g["label"])
        axes[1, j].set(yscale="log", xlabel="step", ylabel="train loss")
        axes[1, j].plot([], [], "k-", label="network")
        axes[1, j].plot([], [], "k--", label="linearized")
        axes[1, j].plot([], [], "k:", label=r"kernel GD, analytic $\Theta$")
        for ax in axes[:, j]:
            ax.legend(fontsize=7)
    return save_figure(fig, stem)


def make_report(
    root: str | Path,
    out: str | Path | None = None,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    strict: bool = False,
) -> dict[str, Any]:
    """Aggregate every drift record under ``root``; returns the summary (files that could
    not be used are listed in its ``excluded``; with ``strict`` they raise ValueError)."""
    root = Path(root)
    out_dir = report_folder(root, out)
    found = scan(root, "drift")
    groups = collect(found)
    found.check(strict)
    if not groups:
        raise ValueError(f"no finished drift records under {str(root)!r}")
    rows = fit_groups(groups, n_boot, level, seed)
    write_csv(out_dir / "points.csv", rows)
    write_csv(out_dir / "curves.csv", curve_rows(groups))
    with paper_style():
        files = plot_width(groups, out_dir / "drift_vs_width")
        files += plot_steps(groups, out_dir / "drift_vs_step")
    summ = {
        "root": str(root),
        "level": level,
        "n_boot": n_boot,
        "groups": [
            {
                "label": g["label"],
                "identity": g["identity"],
                "widths": sorted(g["runs"]),
                "diverged": {
                    w: sum(e["history"]["diverged"] for e in r["per_seed"])
                    for w, r in sorted(g["runs"].items())
                },
                "fits": g["fits"],
            }
            for g in groups.values()
        ],
        "files": [str(p) for p in files] + [str(out_dir / n) for n in ("points.csv", "curves.csv")],
        "excluded": found.summary(),
        "out": str(out_dir),
    }
    atomic_write_json(out_dir / "summary.json", summ)
    write_text(out_dir / "summary.md", summary_markdown(summ) + found.markdown())
    return summ


def summary_markdown(summ: dict) -> str:
    lines = ["| series | quantity | exponent | CI |", "|---|---|---|---|"]
    for g in summ["groups"]:
        for q, fit in g["fits"].items():
            if fit is not None:
                lines.append(
                    f"| {g['label']} | {q} | {fit['exponent']:.3f} | "
                    f"[{fit['ci_low']:.3f}, {fit['ci_high']:.3f}] |"
                )
    return "\n".join(lines) + "\n"


class DriftReportCallback(SweepReport):
    """Hydra callback: aggregate the sweep when a multirun ends."""

    make_report = staticmethod(make_report)
    format_summary = staticmethod(summary_markdown)
    command = "experiments.drift.report"


def main(argv: list[str] | None = None) -> int:
    return report_main(
        argv,
        "python -m experiments.drift.report",
        __doc__.splitlines()[0],
        make_report,
        summary_markdown,
    )


if __name__ == "__main__":
    raise SystemExit(main())
