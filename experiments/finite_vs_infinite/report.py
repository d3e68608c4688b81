r"""Aggregate finished finite-versus-infinite runs into one report.

    python -m experiments.finite_vs_infinite.report outputs/finite_vs_infinite [out_dir]

Records found under the root (a single run or a ``-m`` sweep over tasks, widths, seeds,
architectures) are grouped by (run name, data set); widths of different runs of one group
are merged. Writes ``finite_vs_infinite.{png,pdf}`` and beside it ``accuracy.csv`` (test
accuracy per arm and width, seed spread, divergences), ``kernels.csv``, ``distance.csv``
(RMS distance to the RNTK gradient-descent predictor at the networks' training time, with
fitted exponents and bootstrap intervals), ``ranking.csv`` (accuracy and rank of every arm
at its widest width and of the kernels, per data set, and the mean over data sets) and
``summary.json``.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback

from experiments.common.records import atomic_write_json, find_records
from experiments.common.reporting import report_folder, save_figure, write_csv
from experiments.common.run import record_kind
from experiments.common.style import series_styles
from experiments.finite_vs_infinite.methods import distance_power_laws
from rntk_empirical.safe_io import UnreadableFile, load_npz

log = logging.getLogger(__name__)
Table = list[dict[str, Any]]
ARMS = ("ntk", "centered", "ntk_ensemble", "centered_ensemble", "standard", "adam")
ARM_LABELS = {
    "ntk": "GD, NTK param.",
    "centered": "GD, centered f - f0",
    "ntk_ensemble": "ensemble of GD",
    "centered_ensemble": "ensemble of centered",
    "standard": "GD, standard param. (best lr)",
    "adam": "Adam, standard param.",
}
DISTANCE_SERIES = {
    "plain": ("ntk", "single"),
    "plain_ensemble": ("ntk", "ensemble"),
    "centered": ("centered", "single"),
    "centered_ensemble": ("centered", "ensemble"),
}
# the arm each distance series measures: drawn in that arm's colour, marker and name
DISTANCE_ARM = {
    "plain": "ntk",
    "plain_ensemble": "ntk_ensemble",
    "centered": "centered",
    "centered_ensemble": "centered_ensemble",
}
ARM_STYLES = series_styles(ARMS)


def _arm_row(row: dict, arm: str) -> dict | None:
    """(accuracy, spread, mse, diverged, seeds) of an arm in a width row, or None."""
    base = arm.removesuffix("_ensemble")
    s = row.get(base)
    if s is None:
        return None
    if arm.endswith("_ensemble"):
        if "ensemble_test_accuracy" not in s:
            return None
        return {
            "test_accuracy": s["ensemble_test_accuracy"],
            "test_accuracy_std": 0.0,
            "test_mse": s["ensemble_test_mse"],
            "diverged": s.get("diverged", 0),
            "seeds": s.get("seeds", 0),
        }
    return {
        "test_accuracy": s.get("test_accuracy", math.nan),
        "test_accuracy_std": s.get("test_accuracy_std", math.nan),
        "test_mse": s.get("test_mse", math.nan),
        "diverged": s.get("diverged", 0),
        "seeds": s.get("seeds", 0),
        "lr_scale": s.get("lr_scale", ""),
    }


def collect(
    records: list[tuple[Path, dict]], n_boot: int = 1000, seed: int = 0
) -> tuple[dict[str, Table], dict]:
    """The report's tables and headline from ``(record path, record)`` pairs."""
    acc: Table = []
    kern: Table = []
    dist: Table = []
    groups: dict[tuple[str, str], dict] = {}
    for path, rec in records:
        if record_kind(rec) != "finite_vs_infinite":
            continue
        for ds, t in rec["tasks"].items():
            g = groups.setdefault(
                (rec.get("name", "run"), ds), {"widths": {}, "kernels": t["kernels"], "res": {}}
            )
            g["widths"].update(t["widths"])
            npz = path.parent / ds / "residuals.npz"
            if npz.exists():
                for key, arr in load_npz(npz).items():  # UnreadableFile: the report stops
                    arm, w = key.split("__w")
                    g["res"].setdefault(arm, {})[int(w)] = arr
    headline: dict[str, Any] = {"datasets": {}}
    for (series, ds), g in sorted(groups.items()):
        h: dict[str, Any] = {"kernels": {}, "arms": {}, "exponents": {}}
        for k, label in (("ntk", "RNTK"), ("nngp", "NNGP")):
            kr = g["kernels"][k]
            for variant in ("ridge_float64", "ridge_float32", "t_infinity"):
                kern.append(
                    {
                        "series": series,
                        "dataset": ds,
                        "kernel": label,
                        "variant": variant,
                        "test_accuracy": kr[variant]["test_accuracy"],
                        "test_mse": kr[variant]["test_mse"],
                        "ridge": kr[variant]["choice"],
                    }
                )
            h["kernels"][label] = kr["ridge_float64"]["test_accuracy"]
            h["kernels"][f"{label} float32"] = kr["ridge_float32"]["test_accuracy"]
        for w, row in sorted(g["widths"].items(), key=lambda kv: int(kv[0])):
            for arm in ARMS:
                r = _arm_row(row, arm)
                if r is None:
                    continue
                acc.append({"series": series, "dataset": ds, "arm": arm, "width": int(w), **r})
                h["arms"].setdefault(arm, {})[str(w)] = r["test_accuracy"]
        for name, (arm, stat) in DISTANCE_SERIES.items():
            res = {w: r for w, r in g["res"].get(arm, {}).items() if r.shape[0] >= 1}
            if len(res) < 2:
                continue
            fit = distance_power_laws(res, n_boot=n_boot, seed=seed)[stat]
            h["exponents"][name] = {"exponent": fit.exponent, "ci95": [fit.ci_low, fit.ci_high]}
            for w, v, lo, hi, n in zip(
                fit.widths, fit.values, fit.value_low, fit.value_high, fit.n_seeds
            ):
                dist.append(
                    {
                        "series": series,
                        "dataset": ds,
                        "arm": name,
                        "width": w,
                        "value": v,
                        "low": lo,
                        "high": hi,
                        "seeds": n,
                        "exponent": fit.exponent,
                        "exp_low": fit.ci_low,
                        "exp_high": fit.ci_high,
                        "intercept": fit.intercept,
                    }
                )
        headline["datasets"][f"{series}/{ds}"] = h
    rank = ranking(acc, kern)
    headline["mean_rank"] = {r["method"]: r["rank"] for r in rank if r["dataset"] == "mean"}
    return {"accuracy": acc, "kernels": kern, "distance": dist, "ranking": rank}, headline


def ranking(acc: Table, kern: Table) -> Table:
    """Accuracy and rank (1 = best, ties share the lower rank) of every arm at its widest
    width and of each kernel (ridge chosen on validation, float64), per data set; then the
    mean accuracy and mean rank over data sets."""
    rows: Table = []
    by_ds: dict[tuple[str, str], dict[str, float]] = {}
    for r in kern:
        if r["variant"] == "ridge_float64":
            by_ds.setdefault((r["series"], r["dataset"]), {})[r["kernel"]] = r["test_accuracy"]
    for key in by_ds:
        for arm in ARMS:
            rr = [r for r in acc if (r["series"], r["dataset"]) == key and r["arm"] == arm]
            rr = [r for r in rr if not math.isnan(r["test_accuracy"])]
            if rr:
                widest = max(rr, key=lambda r: r["width"])
                by_ds[key][f"{arm} (n={widest['width']})"] = widest["test_accuracy"]
    methods: dict[str, list[tuple[float, float]]] = {}
    for (series, ds), scores in sorted(by_ds.items()):
        vals = sorted(scores.values(), reverse=True)
        for m, a in scores.items():
            rk = 1 + vals.index(a)
            rows.append({"dataset": f"{series}/{ds}", "method": m, "accuracy": a, "rank": rk})
            methods.setdefault(m.split(" (n=")[0], []).append((a, rk))
    for m, v in methods.items():
        rows.append(
            {
                "dataset": "mean",
                "method": m,
                "accuracy": float(np.mean([a for a, _ in v])),
                "rank": float(np.mean([r for _, r in v])),
            }
        )
    return rows


def draw(tables: dict[str, Table], meta: dict):
    """Per data set: accuracy vs width (kernels as horizontal lines) and distance to the
    kernel predictor vs width with fitted exponents."""
    import matplotlib.pyplot as plt

    keys = sorted({(r["series"], r["dataset"]) for r in tables["kernels"]})
    fig, axes = plt.subplots(len(keys), 2, figsize=(11, 3.6 * len(keys)), squeeze=False)
    for i, key in enumerate(keys):
        ax, ax2 = axes[i]
        for arm in ARMS:
            rr = sorted(
                (
                    r
                    for r in tables["accuracy"]
                    if (r["series"], r["dataset"]) == key and r["arm"] == arm
                ),
                key=lambda r: r["width"],
            )
            if not rr:
                continue
            w = [r["width"] for r in rr]
            a = [r["test_accuracy"] for r in rr]
            s = [r["test_accuracy_std"] for r in rr]
            ls = "--" if arm.endswith("_ensemble") else "-"
            st = ARM_STYLES[arm]
            ax.errorbar(
                w, a, yerr=s, fmt=st["marker"] + ls, ms=3, lw=1, color=st["color"],
                label=ARM_LABELS[arm],
            )  # fmt: skip
        for label, style in (("RNTK", "k-"), ("NNGP", "k:")):
            for r in tables["kernels"]:
                if (
                    (r["series"], r["dataset"]) == key
                    and r["kernel"] == label
                    and r["variant"] == "ridge_float64"
                ):
                    ax.axhline(
                        r["test_accuracy"],
                        color="k",
                        ls=style[1:],
                        lw=1.2,
                        label=f"{label} regression",
                    )
        ax.set(
            xscale="log", xlabel="width $n$", ylabel="test accuracy", title=f"{key[1]} ({key[0]})"
        )
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=6, frameon=False)
        for name in DISTANCE_SERIES:
            arm = DISTANCE_ARM[name]
            st = ARM_STYLES[arm]
            rr = sorted(
                (
                    r
                    for r in tables["distance"]
                    if (r["series"], r["dataset"]) == key and r["arm"] == name
                ),
                key=lambda r: r["width"],
            )
            if not rr:
                continue
            w = np.array([r["width"] for r in rr], float)
            v = np.array([r["value"] for r in rr])
            ax2.fill_between(
                w, [r["low"] for r in rr], [r["high"] for r in rr], color=st["color"], alpha=0.2,
                lw=0,
            )  # fmt: skip
            r0 = rr[0]
            ax2.plot(
                w,
                v,
                st["marker"],
                color=st["color"],
                ms=4,
                label=(
                    f"{ARM_LABELS[arm]}: $p$={r0['exponent']:.2f} "
                    f"[{r0['exp_low']:.2f}, {r0['exp_high']:.2f}]"
                ),
            )
            ls = "--" if arm.endswith("_ensemble") else "-"
            ax2.plot(
                w, math.exp(r0["intercept"]) * w ** r0["exponent"], ls, color=st["color"], lw=1
            )
        ax2.set(
            xlabel="width $n$",
            ylabel="RMS distance to RNTK GD",
            title="distance to the kernel predictor",
        )
        ax2.set_xscale("log", base=2)
        ax2.set_yscale("log")
        ax2.legend(fontsize=6, frameon=False)
    if not plt.rcParams["figure.constrained_layout.use"]:
        fig.tight_layout()
    return fig


def write_report(root: str | Path, out_dir: str | Path | None = None, n_boot: int = 1000) -> Path:
    """Collect every finished record under ``root`` and write the report; returns its folder.

    Quick runs (``quick=true`` in their folder) live apart: with full runs present they are
    reported in ``OUT/quick`` and never enter the full report."""

    root = Path(root)
    try:
        out = report_folder(root, out_dir)
    except ValueError as err:
        raise FileNotFoundError(str(err)) from None
    records = [(p, r) for p, r in find_records(root) if record_kind(r) == "finite_vs_infinite"]
    if not records:
        raise FileNotFoundError(f"no finished finite_vs_infinite record under {root}")
    quick = [(p, r) for p, r in records if is_quick(p, root)]
    if quick and len(quick) < len(records):  # quick runs apart: they never enter the full report
        _write(quick, out / "quick", n_boot)
        records = [(p, r) for p, r in records if not is_quick(p, root)]
    _write(records, out, n_boot)
    return out


def is_quick(record: Path, root: Path) -> bool:
    """A record of a ``quick=true`` run (its folder names the override)."""
    parts = record.parent.relative_to(root).parts if record.is_relative_to(root) else ()
    return any("quick=true" in part.split(",") for part in parts)


def _write(records: list[tuple[Path, dict]], out: Path, n_boot: int) -> None:
    tables, headline = collect(records, n_boot=n_boot)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        write_csv(out / f"{name}.csv", rows)
    atomic_write_json(out / "summary.json", {"records": [str(p) for p, _ in records], **headline})
    save_figure(draw(tables, headline), out / "finite_vs_infinite", dpi=130)


class ReportCallback(Callback):
    """Hydra callback: after a ``-m`` sweep, write the report to ``<sweep dir>/report``
    (a report problem is logged, never fails the sweep)."""

    def __init__(self, n_boot: int = 1000) -> None:
        self.n_boot = n_boot

    def on_multirun_end(self, config, **kwargs) -> None:
        try:
            out = write_report(config.hydra.sweep.dir, n_boot=self.n_boot)
        except Exception as err:  # noqa: BLE001 - a report problem must not lose the runs
            log.error("finite_vs_infinite report failed: %s (runs are kept)", err)
            return
        log.info("report: %s", out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or len(argv) > 2:
        print(
            "usage: python -m experiments.finite_vs_infinite.report ROOT [OUT_DIR]", file=sys.stderr
        )
        return 2
    try:
        out = write_report(argv[0], argv[1] if len(argv) > 1 else None)
    except (FileNotFoundError, UnreadableFile) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
