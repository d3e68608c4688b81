r"""Aggregate convergence runs: fit the exponents, plot on log-log axes, write tables.

    python -m experiments.convergence.report PATH [--out DIR] [--n-boot 2000] [--level 0.95]

PATH is any folder (searched recursively for finished ``record.json``, e.g. a sweep folder
or runs copied back from a cluster) or one record. Records are grouped by what they measure
(architecture, data, dtype, ...; not width, seeds, device or method), one series per group;
records of one group and width are pooled by network seed (a seed seen twice counts once:
the most recently finished record wins).

For every series and metric, e(n) ~ C n^p is fitted on log-log axes and the exponent p gets
a percentile bootstrap interval over seeds (:mod:`rntk_empirical.scaling`). Metrics:

    ntk_rel_fro             mean over seeds of ||Theta_hat_s - Theta||_F / ||Theta||_F
    ntk_mean_kernel_rel_fro ||mean_s Theta_hat_s - Theta||_F / ||Theta||_F (seed-averaged)
    ntk_debiased_bias       estimate of ||E Theta_hat - Theta||_F / ||Theta||_F (bias part)
    ntk_rel_op, ntk_rel_max operator-norm and max-entry errors (mean over seeds)
    nngp_*                  the same for the NNGP kernel

Writes into DIR (default PATH/report): ``convergence.png`` / ``convergence.pdf``,
``points.csv`` (every plotted number), ``summary.json`` and ``summary.md`` (exponents).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments.common.records import atomic_write_json, config_hash, utc_now, writable_folder
from experiments.common.reporting import (
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
from experiments.common.style import PALETTE, describe_arch, fit_label, paper_style
from rntk_empirical.metrics import debiased_bias, mean_kernel_error
from rntk_empirical.safe_io import UnreadableFile, load_npz
from rntk_empirical.scaling import PowerLawFit, bootstrap_power_law

log = logging.getLogger(__name__)

# identity fields that do not change what is measured: not part of a series' key
NOT_IN_GROUP = (
    "width",
    "seeds",
    "base_seed",
    "device",
    "method",
    "chunk_size",
    "name",
    "arch_name",
    "data_name",
)
REFERENCE_EXPONENT = -0.5


@dataclass(frozen=True)
class Metric:
    """One fitted quantity: per-seed values averaged, or a statistic of the seeds' kernels."""

    key: str
    kernel: str  # "ntk" | "nngp"
    label: str
    per_seed: str | None = None  # name of the per-seed error to average
    of_kernels: Callable[[np.ndarray, np.ndarray], float] | None = None


METRICS: tuple[Metric, ...] = tuple(
    m
    for k, K in (("ntk", "NTK"), ("nngp", "NNGP"))
    for m in (
        Metric(f"{k}_rel_fro", k, f"{K} per network, Frobenius", per_seed="rel_fro"),
        Metric(
            f"{k}_mean_kernel_rel_fro",
            k,
            f"{K} seed-averaged, Frobenius",
            of_kernels=mean_kernel_error,
        ),
        Metric(f"{k}_debiased_bias", k, f"{K} bias (debiased)", of_kernels=debiased_bias),
        Metric(f"{k}_rel_op", k, f"{K} per network, operator norm", per_seed="rel_op"),
        Metric(f"{k}_rel_max", k, f"{K} per network, max entry", per_seed="rel_max"),
    )
)


@dataclass
class Series:
    """All runs of one configuration: per width, per network seed, errors and kernels."""

    key: str
    label: str
    identity: dict[str, Any]
    # width -> network seed -> {"ntk": errors, "nngp": errors}
    errors: dict[int, dict[int, dict]] = field(default_factory=dict)
    # width -> network seed -> {"ntk": (N, N), "nngp": (N, N)}
    kernels: dict[int, dict[int, dict[str, np.ndarray]]] = field(default_factory=dict)
    reference: dict[str, np.ndarray] = field(default_factory=dict)
    records: list[str] = field(default_factory=list)
    fits: dict[str, PowerLawFit] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def widths(self) -> list[int]:
        return sorted(self.errors)

    def samples(self, metric: Metric) -> dict[int, np.ndarray] | None:
        """width -> per-seed items of ``metric`` (errors ``(S,)`` or kernels ``(S, N, N)``)."""
        out = {}
        for w in self.widths:
            if metric.per_seed is not None:
                vals = [
                    e[metric.kernel][metric.per_seed]
                    for e in self.errors[w].values()
                    if metric.kernel in e
                ]
                if len(vals) != len(self.errors[w]):
                    return None
                out[w] = np.asarray(vals, dtype=np.float64)
            else:
                ks = self.kernels.get(w, {})
                if metric.kernel not in self.reference or len(ks) != len(self.errors[w]):
                    return None
                if any(metric.kernel not in k for k in ks.values()):
                    return None
                out[w] = np.stack([ks[s][metric.kernel] for s in sorted(ks)])
        return out

    def statistic(self, metric: Metric) -> Callable[[np.ndarray], float]:
        if metric.per_seed is not None:
            return lambda v: float(np.mean(v))
        ref = self.reference[metric.kernel]
        fn = metric.of_kernels
        return lambda ks: fn(ks, ref)


def _group_identity(identity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in identity.items() if k not in NOT_IN_GROUP}


def _load_kernels(path: Path) -> dict[str, np.ndarray] | None:
    try:
        return load_npz(path)
    except UnreadableFile:  # missing, truncated, pickled
        return None


def collect(root: str | Path, found: RecordScan | None = None) -> list[Series]:
    """Read every finished convergence record under ``root`` into series (one per config);
    unusable files are added to ``found.problems``."""
    found = found if found is not None else scan(root, "convergence")
    records = sorted(found.records, key=lambda pr: (pr[1].get("finished", ""), str(pr[0])))
    series: dict[str, Series] = {}
    for path, rec in records:
        ident = _group_identity(rec["identity"])
        key = config_hash(ident, length=10)
        ser = series.get(key)
        if ser is None:
            arch = ident.get("arch")
            label = describe_arch(arch) if isinstance(arch, dict) else rec.get("name", key)
            ser = series[key] = Series(key, label, ident)
        ser.records.append(str(path))
        w = int(rec["width"])
        errs = ser.errors.setdefault(w, {})
        for e in rec["per_seed"]:
            errs[int(e["network_seed"])] = {k: e[k] for k in ("ntk", "nngp") if k in e}
        kernels_path = path.parent / rec.get("kernels_file", "kernels.npz")
        arrays = _load_kernels(kernels_path)
        if arrays is None:
            found.exclude(
                kernels_path,
                f"unreadable (missing or truncated): no seed-averaged metrics at width {w}",
            )
            ser.kernels.pop(w, None)  # kernels incomplete for this width: no kernel metrics
            continue
        ks = ser.kernels.setdefault(w, {})
        for i, seed in enumerate(arrays["network_seeds"].tolist()):
            ks[int(seed)] = {k: arrays[k][i] for k in ("ntk", "nngp") if k in arrays}
        for k in ("ntk", "nngp"):
            if f"analytic_{k}" in arrays:
                ser.reference.setdefault(k, arrays[f"analytic_{k}"])
    out = list(series.values())
    _disambiguate_labels(out)
    return out


def _disambiguate_labels(series: list[Series]) -> None:
    """Series that share a name get the config entries in which they differ appended."""
    by_label: dict[str, list[Series]] = {}
    for s in series:
        by_label.setdefault(s.label, []).append(s)
    for same in by_label.values():
        if len(same) < 2:
            continue
        differ = differing_keys([s.identity for s in same])
        for s in same:
            f = flatten(s.identity)
            s.label += " (" + ", ".join(f"{k}={f.get(k)}" for k in differ) + ")"


def fit_series(series: list[Series], n_boot: int = 2000, level: float = 0.95, seed: int = 0):
    """Fit every metric of every series (in place); unfittable ones go to ``skipped``."""
    for ser in series:
        for metric in METRICS:
            samples = ser.samples(metric)
            if samples is None:
                ser.skipped[metric.key] = "not recorded"
                continue
            if len(samples) < 2:
                ser.skipped[metric.key] = "needs at least two widths"
                continue
            if metric.of_kernels is debiased_bias and min(len(v) for v in samples.values()) < 2:
                ser.skipped[metric.key] = "needs at least two seeds per width"
                continue
            try:
                ser.fits[metric.key] = bootstrap_power_law(
                    samples, ser.statistic(metric), n_boot=n_boot, level=level, seed=seed
                )
            except ValueError as err:
                reason = str(err)
                if metric.of_kernels is debiased_bias:
                    reason = "the bias estimate is 0 at some width (bias below the fluctuations)"
                ser.skipped[metric.key] = reason


# ------------------------------------------------------------------ interpretation
@dataclass(frozen=True)
class NextOrder:
    r"""The fit with the next order, e(n) = A n^{-1/2} + B n^{-1}, to a per-network error.

    Finite-width corrections to a kernel are a series in n^{-1/2}; an error whose fitted
    exponent is steeper than -1/2 at the measured widths may be the leading order plus its
    n^{-1} correction, which this two-term fit (weighted least squares on the relative
    residuals) separates.

    Attributes:
        A, B: the coefficients; ``B < 0`` would mean a correction that slows the decay.
        share_small, share_large: B n^{-1} / e(n) at the smallest and largest width.
        rms_two_term, rms_power_law: RMS relative residual of this fit and of the power law.
    """

    A: float
    B: float
    share_small: float
    share_large: float
    rms_two_term: float
    rms_power_law: float

    def predict(self, widths: np.ndarray) -> np.ndarray:
        w = np.asarray(widths, dtype=np.float64)
        return self.A * w**-0.5 + self.B / w

    @classmethod
    def fit(cls, fit: PowerLawFit) -> NextOrder:
        w = np.asarray(fit.widths, dtype=np.float64)
        v = np.asarray(fit.values, dtype=np.float64)
        design = np.stack([w**-0.5, 1.0 / w], axis=1) / v[:, None]
        (a, b), *_ = np.linalg.lstsq(design, np.ones_like(v), rcond=None)
        two = a * w**-0.5 + b / w
        return cls(
            A=float(a),
            B=float(b),
            share_small=float(b / w[0] / two[0]),
            share_large=float(b / w[-1] / two[-1]),
            rms_two_term=float(np.sqrt(np.mean((two / v - 1) ** 2))),
            rms_power_law=float(np.sqrt(np.mean((fit.predict(w) / v - 1) ** 2))),
        )


def interpret(fit: PowerLawFit, what: str = "the error") -> dict[str, Any]:
    """Whether the exponent's interval excludes the leading order -1/2 and, if it does, what
    the fit with the next order says (``text``: one sentence for the report)."""
    nxt = NextOrder.fit(fit) if len(fit.widths) >= 2 else None
    lo, hi = fit.ci_low, fit.ci_high
    out: dict[str, Any] = {"excludes_leading_order": not fit.covers(REFERENCE_EXPONENT)}
    if not out["excludes_leading_order"]:
        out["text"] = (
            f"the {fit.level:.0%} interval [{lo:.3f}, {hi:.3f}] of {what}'s exponent contains "
            "-1/2: consistent with the leading order n^-1/2"
        )
        return out
    side = "steeper" if hi < REFERENCE_EXPONENT else "shallower"
    text = (
        f"the {fit.level:.0%} interval [{lo:.3f}, {hi:.3f}] of {what}'s exponent excludes "
        f"-1/2 ({side} than the leading order at these widths)"
    )
    if nxt is not None and len(fit.widths) >= 3:
        out["next_order"] = asdict(nxt)
        supported = nxt.rms_two_term < nxt.rms_power_law and nxt.A > 0
        text += (
            f"; with the next order, {what} = {nxt.A:.3g} n^-1/2 + {nxt.B:.3g} n^-1 "
            f"(the n^-1 term is {nxt.share_small:.0%} of it at n={fit.widths[0]}, "
            f"{nxt.share_large:.0%} at n={fit.widths[-1]}; RMS residual {nxt.rms_two_term:.1%} "
            f"vs {nxt.rms_power_law:.1%} for the power law): "
            + (
                "the data support n^-1/2 as the leading order with a finite-width correction"
                if supported
                else "the two-term form does not fit better; the leading order is not resolved"
            )
        )
    out["text"] = text
    return out


# ---------------------------------------------------------------------- outputs
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("NTK, per network", ("ntk_rel_fro",)),
    ("NTK, seed-averaged kernel", ("ntk_mean_kernel_rel_fro", "ntk_debiased_bias")),
    ("NTK, other norms", ("ntk_rel_op", "ntk_rel_max")),
    ("NNGP, per network", ("nngp_rel_fro",)),
    ("NNGP, seed-averaged kernel", ("nngp_mean_kernel_rel_fro", "nngp_debiased_bias")),
    ("NNGP, other norms", ("nngp_rel_op", "nngp_rel_max")),
)
_MARKERS = {
    "rel_fro": "o",
    "mean_kernel_rel_fro": "o",
    "debiased_bias": "^",
    "rel_op": "s",
    "rel_max": "D",
}
_SHORT = {
    "rel_fro": "per network",
    "mean_kernel_rel_fro": "error of the seed mean",
    "debiased_bias": "bias (debiased)",
    "rel_op": "operator norm",
    "rel_max": "max entry",
}


POINT_COLUMNS = (
    "series", "label", "metric", "description", "width", "n_seeds", "value", "ci_low",
    "ci_high", "fit", "exponent", "exponent_ci_low", "exponent_ci_high",
)  # fmt: skip


def write_points_csv(series: list[Series], path: Path) -> None:
    """Every plotted number: points with intervals and the fitted line at each width."""
    metric_by_key = {m.key: m for m in METRICS}
    rows = []
    for ser in series:
        for key, fit in ser.fits.items():
            pred = fit.predict(fit.widths)
            for j, width in enumerate(fit.widths):
                rows.append(
                    {
                        "series": ser.key,
                        "label": ser.label,
                        "metric": key,
                        "description": metric_by_key[key].label,
                        "width": width,
                        "n_seeds": fit.n_seeds[j],
                        "value": fit.values[j],
                        "ci_low": fit.value_low[j],
                        "ci_high": fit.value_high[j],
                        "fit": pred[j],
                        "exponent": fit.exponent,
                        "exponent_ci_low": fit.ci_low,
                        "exponent_ci_high": fit.ci_high,
                    }
                )
    write_csv(path, rows, columns=POINT_COLUMNS)


def summary(series: list[Series], root: Path, n_records: int) -> dict[str, Any]:
    return {
        "generated": utc_now(),
        "root": str(root),
        "records": n_records,
        "reference_exponent": REFERENCE_EXPONENT,
        "series": [
            {
                "key": s.key,
                "label": s.label,
                "identity": s.identity,
                "widths": s.widths,
                "seeds_per_width": {str(w): len(s.errors[w]) for w in s.widths},
                "fits": {k: f.to_dict() for k, f in s.fits.items()},
                "interpretation": {
                    k: interpret(s.fits[k], w) for k, w in INTERPRETED.items() if k in s.fits
                },
                "not_fitted": s.skipped,
            }
            for s in series
        ],
    }


def summary_markdown(series: list[Series]) -> str:
    lines = ["# Convergence exponents", ""]
    for s in series:
        seeds = sorted({len(s.errors[w]) for w in s.widths})
        lines += [
            f"## {s.label}",
            "",
            f"widths {', '.join(map(str, s.widths))}; seeds per width "
            f"{'/'.join(map(str, seeds))}; config `{s.key}`",
            "",
            "| metric | exponent | CI | error at smallest width | at largest width |",
            "|---|---|---|---|---|",
        ]
        for m in METRICS:
            f = s.fits.get(m.key)
            if f is None:
                continue
            lines.append(
                f"| {m.label} | {f.exponent:.3f} | [{f.ci_low:.3f}, {f.ci_high:.3f}] "
                f"({f.level:.0%}, {f.n_boot} boot.) | {f.values[0]:.3g} | {f.values[-1]:.3g} |"
            )
        for k, why in s.skipped.items():
            if why != "not recorded":
                lines.append(f"| {k} | not fitted: {why} | | | |")
        lines.append("")
        for k, what in INTERPRETED.items():
            if k in s.fits:
                note = interpret(s.fits[k], what)["text"]
                lines += [f"{what[0].upper() + what[1:]}: {note}.", ""]
    return "\n".join(lines)


HEADLINE = "ntk_rel_fro"
# per-network errors whose exponent the report interprets against the leading order
INTERPRETED = {"ntk_rel_fro": "the NTK error", "nngp_rel_fro": "the NNGP error"}


def _errorbar(ax, fit: PowerLawFit, color: str, marker: str, filled: bool, label: str) -> None:
    w = np.asarray(fit.widths, dtype=float)
    v = np.asarray(fit.values)
    yerr = np.vstack([v - np.asarray(fit.value_low), np.asarray(fit.value_high) - v])
    ax.errorbar(
        w,
        v,
        yerr=np.clip(yerr, 0, None),
        fmt=marker,
        color=color,
        capsize=2.5,
        mfc=color if filled else "none",
        label=label,
    )


def _reference(ax, fit: PowerLawFit, exponent: float, style: str, label: str) -> None:
    """A reference slope through the first point of ``fit``."""
    w = np.array([fit.widths[0], fit.widths[-1]], dtype=float)
    ax.plot(w, fit.values[0] * (w / w[0]) ** exponent, style, color="0.3", lw=1, label=label)


def _log_axes(ax, ylabel: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("hidden width n")
    ax.set_ylabel(ylabel)


def plot(series: list[Series], stem: Path) -> list[Path]:
    """The headline figure ``stem`` (NTK error of each network vs width, fitted power law,
    the n^-1/2 reference) and the supplementary ``stem_supplement`` (every metric: seed
    average, debiased bias, other norms, the NNGP). PNG and PDF each."""
    import matplotlib.pyplot as plt

    paths = []
    with paper_style():
        fig, ax = plt.subplots(figsize=(4.6, 3.4))
        ref = None
        for i, ser in enumerate(series):
            fit = ser.fits.get(HEADLINE)
            if fit is None:
                continue
            color = PALETTE[i % len(PALETTE)]
            _errorbar(ax, fit, color, "o", True, ser.label)
            w = np.asarray(fit.widths, dtype=float)
            ax.plot(w, fit.predict(w), "-", color=color, label=fit_label(*_exp(fit), fit.level))
            if not fit.covers(REFERENCE_EXPONENT) and len(w) >= 3:
                nxt = NextOrder.fit(fit)
                dense = np.geomspace(w[0], w[-1], 50)
                terms = rf"${nxt.A:.2g}\,n^{{-1/2}} {nxt.B:+.2g}\,n^{{-1}}$"
                ax.plot(dense, nxt.predict(dense), ":", color=color, lw=1.6,
                        label=f"next order: {terms}")  # fmt: skip
            ref = ref or fit
        if ref is not None:
            _reference(ax, ref, REFERENCE_EXPONENT, "--", "$n^{-1/2}$ reference (theory)")
        _log_axes(ax, "relative error of the NTK")
        ax.set_title("Empirical NTK vs the analytic RNTK, per network")
        if ref is not None:
            ax.legend(loc="lower left")
        paths += save_figure(fig, stem)

        fig, axes = plt.subplots(2, 3, figsize=(12, 7.2), squeeze=False)
        for ax, (title, keys) in zip(axes.flat, PANELS):
            ref = None
            for i, ser in enumerate(series):
                color = PALETTE[i % len(PALETTE)]
                for j, key in enumerate(keys):
                    fit = ser.fits.get(key)
                    if fit is None:
                        continue
                    suffix = key.split("_", 1)[1]
                    _errorbar(
                        ax, fit, color, _MARKERS[suffix], j == 0, f"{ser.label}: {_SHORT[suffix]}"
                    )
                    w = np.asarray(fit.widths, dtype=float)
                    ax.plot(w, fit.predict(w), "-" if j == 0 else "--", color=color, lw=1,
                            label=fit_label(*_exp(fit), what=_SHORT[suffix]))  # fmt: skip
                    ref = ref or fit
            if ref is not None:
                _reference(ax, ref, REFERENCE_EXPONENT, ":", "$n^{-1/2}$ reference")
                if "seed-averaged" in title:
                    _reference(ax, ref, -1.0, "-.", "$n^{-1}$ reference (bias of the mean)")
                ax.legend(loc="lower left", fontsize=6.5)
            _log_axes(ax, "relative error")
            ax.set_title(title)
        fig.suptitle(
            f"All metrics (points: statistic over seeds; bars: {_level(series)} bootstrap "
            "interval; lines: fitted power laws)"
        )
        paths += save_figure(fig, stem.with_name(stem.name + "_supplement"))
    return paths


def _exp(fit: PowerLawFit) -> tuple[float, float, float]:
    return fit.exponent, fit.ci_low, fit.ci_high


def _level(series: list[Series]) -> str:
    for s in series:
        for f in s.fits.values():
            return f"{f.level:.0%}"
    return ""


def make_report(
    root: str | Path,
    out: str | Path | None = None,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    strict: bool = False,
) -> dict[str, Any]:
    """Aggregate the records under ``root`` into ``out`` (default ``root/report``).

    ``out`` holds the folder's default configuration only (the runs directly in its
    ``width=W`` folders, e.g. the README's ``relu_last-random/report/convergence.png``); runs
    of another configuration (``width=W/<overrides>``, e.g. ``arch.nonlinearity=softplus``)
    get their own report in ``out/<overrides>`` and never change the default's.

    Returns the summary (also written to ``summary.json``; the variants' under
    ``variants``); files that could not be used are listed in its ``excluded``. Raises
    ValueError if ``root`` does not exist, holds no finished convergence record, or
    (``strict``) holds a record that cannot be used.
    """
    root = Path(root)
    out = report_folder(root, out)
    found = scan(root, "convergence")
    by_variant: dict[str, list[tuple[Path, dict]]] = {}
    for path, rec in found.records:
        by_variant.setdefault(variant_of(path, root), []).append((path, rec))
    if "" not in by_variant and len(by_variant) == 1:  # one configuration, whatever its folder
        by_variant = {"": next(iter(by_variant.values()))}
    # each configuration is collected and fitted on its own: other runs in the folder never
    # change its labels, numbers or bootstrap draws
    groups = {
        v: collect(root, RecordScan(root, recs, found.problems))
        for v, recs in sorted(by_variant.items())
    }
    found.check(strict)
    if not any(groups.values()):
        raise ValueError(f"no finished convergence records (record.json) under {str(root)!r}")
    for series in groups.values():
        fit_series(series, n_boot=n_boot, level=level, seed=seed)
    variants = {
        v: _write_report(ss, root, writable_folder(out / v, "report folder"), found)
        for v, ss in groups.items()
        if v
    }
    summ = _write_report(groups.get("", []), root, out, found, variants)
    summ["variants"] = variants
    return summ


def variant_of(record: Path, root: Path) -> str:
    """The configuration a record's folder names relative to its sweep: the folders between
    its ``width=W`` folder and the record (Hydra's override dirname, e.g.
    ``arch.nonlinearity=softplus``); "" for the folder's default configuration."""
    try:
        parts = record.parent.relative_to(root).parts
    except ValueError:
        return ""
    for i, p in enumerate(parts):
        if p.startswith("width="):
            return "/".join(parts[i + 1 :])
    return ""


def _write_report(
    series: list[Series],
    root: Path,
    out: Path,
    found: RecordScan,
    variants: dict[str, dict] | None = None,
) -> dict[str, Any]:
    """One report folder: points.csv, convergence.png/pdf, summary.md and summary.json."""
    n_records = sum(len(s.records) for s in series)
    summ = summary(series, root, n_records)
    summ["excluded"] = found.summary()
    md = summary_markdown(series)
    if series:
        write_points_csv(series, out / "points.csv")
        plot(series, out / "convergence")
    if variants:
        md += "\n## Other configurations (own reports)\n\n" + "".join(
            f"- `{v}`: {r['out']}\n" for v, r in variants.items()
        )
    write_text(out / "summary.md", md + found.markdown())
    atomic_write_json(out / "summary.json", summ)
    summ["out"] = str(out)
    return summ


def format_summary(summ: dict[str, Any]) -> str:
    """A few lines for the console: the per-network and bias exponents of each series (and
    of each other configuration's report)."""
    lines = []
    for s in summ["series"]:
        for key in ("ntk_rel_fro", "ntk_mean_kernel_rel_fro", "nngp_rel_fro"):
            f = s["fits"].get(key)
            if f is None:
                continue
            lines.append(
                f"{s['label']}: {key} exponent {f['exponent']:.3f} "
                f"[{f['ci_low']:.3f}, {f['ci_high']:.3f}] over widths "
                f"{f['widths'][0]}..{f['widths'][-1]}"
            )
            note = s.get("interpretation", {}).get(key)
            if note is not None and note["excludes_leading_order"]:
                lines.append(f"  note: {note['text']}")
        if not s["fits"]:
            lines.append(
                f"{s['label']}: nothing fitted ({', '.join(sorted(set(s['not_fitted'].values())))})"
            )
    for v, vsumm in summ.get("variants", {}).items():
        lines += [f"[{v}] {line}" for line in format_summary(vsumm).splitlines()]
        lines.append(f"[{v}] report: {vsumm['out']}")
    return "\n".join(lines)


class ReportCallback(SweepReport):
    """Hydra callback: when a sweep ends, aggregate its folder into ``<sweep dir>/report``."""

    make_report = staticmethod(make_report)
    format_summary = staticmethod(format_summary)
    command = "experiments.convergence.report"


def main(argv: list[str] | None = None) -> int:
    return report_main(
        argv,
        "python -m experiments.convergence.report",
        "Fit convergence exponents of the runs under PATH (searched recursively).",
        make_report,
        format_summary,
    )


if __name__ == "__main__":
    sys.exit(main())
