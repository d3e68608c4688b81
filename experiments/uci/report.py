r"""Aggregate the UCI benchmark: one table row per method family, ranks, P90/P95/PMA, timing.

    python -m experiments.uci.report PATH [--out DIR] [--families rntk,rbf_svm,...]

PATH is any folder (searched recursively for finished ``record.json`` with ``"kind":
"uci"``, e.g. ``outputs/uci/<hash>``) or one record. Each record holds one data set; if two
records hold the same data set, the most recently finished one wins (with a warning).

Every family (a method tuned on validation folds, e.g. the RNTK over all readouts and
directions, or an RBF SVM) gives one row. The table uses the families present in every data
set (``--families`` restricts them further); the others are reported as dropped, with the
data sets that lack them. With ``acc`` the ``(data sets, families)`` test accuracies,
:mod:`experiments.uci.stats` gives the columns: mean +- std accuracy over data sets,
average Friedman rank (1 = best), P90 / P95 (% of data sets on which a family reaches 90% /
95% of the best family of the table) and PMA (mean % of the best accuracy), plus the
Friedman test over the families.

Writes into DIR (default PATH/report): ``uci_table.{csv,md}`` (the table),
``uci_per_dataset.csv`` (test accuracy of every family on every data set),
``uci_choices.csv`` (the hyper-parameters chosen on each data set), ``uci_timing.csv``,
``uci_summary.json`` and the figure ``uci_table.{png,pdf}`` (Friedman ranks and per-data-set
accuracies). Exit code 2, with one ``error: ...`` line, if PATH is missing or holds no
finished UCI record.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.common.cli import fail
from experiments.common.records import atomic_write_json, utc_now
from experiments.common.reporting import (
    RecordScan,
    report_folder,
    save_figure,
    scan,
    write_csv,
    write_text,
)
from experiments.common.run import record_timings
from experiments.common.style import paper_style
from experiments.uci.stats import friedman_test, summary_table

log = logging.getLogger(__name__)

KIND = "uci"
GROUP_COLORS = {"recurrent": "#1f77b4", "paper-faithful": "#2ca02c", "baseline": "#7f7f7f"}
OTHER_COLOR = "#9467bd"
TIMING_KEYS = ("kernel_s", "svm_s", "baseline_s", "total_s")
N_SLOWEST = 5
STAT_KEYS = ("mean_acc", "std_acc", "friedman_rank", "p90", "p95", "pma")


def _find(root: str | Path, found: RecordScan | None = None) -> list[tuple[Path, dict]]:
    found = found if found is not None else scan(root, KIND)
    latest: dict[str, tuple[Path, dict]] = {}
    for path, rec in found.records:
        name = rec.get("dataset")
        if not isinstance(name, str) or not isinstance(rec.get("families"), dict):
            found.exclude(path, "not a valid UCI record (no dataset or families)")
            continue
        if name in latest:
            old_path, old = latest[name]
            keep_new = str(rec.get("finished", "")) > str(old.get("finished", ""))
            kept, dropped = (path, old_path) if keep_new else (old_path, path)
            log.warning(
                "data set %r has two finished records; keeping the later %s, ignoring %s",
                name,
                kept,
                dropped,
            )
            if not keep_new:
                continue
        latest[name] = (path, rec)
    return [latest[k] for k in sorted(latest)]


def load_uci_records(root: str | Path) -> list[dict]:
    """The finished UCI records under ``root`` (a folder, searched recursively, or one
    ``record.json``), one per data set (the most recently finished), sorted by data set.

    Raises ValueError if ``root`` does not exist; returns ``[]`` if it holds no UCI record.
    """
    return [rec for _, rec in _find(root)]


def _accuracy(value: Any) -> float | None:
    """A recorded accuracy as a float, None if absent or not finite (a failed family)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


@dataclass
class Benchmark:
    """The records of a report and their accuracy matrix.

    ``families`` are the selected families (in selection or first-seen order), ``columns``
    the ones present in every data set: the columns of ``acc`` ``(D, len(columns))``.
    """

    records: list[dict]
    paths: list[str]
    families: list[str]
    columns: list[str]
    acc: np.ndarray
    missing: dict[str, list[str]]  # data set -> selected families it lacks
    info: dict[str, dict[str, str]]  # family -> {"group", "label"}

    @property
    def datasets(self) -> list[str]:
        return [r["dataset"] for r in self.records]

    @property
    def dropped(self) -> dict[str, list[str]]:
        """Family -> the data sets that lack it, for the families not in the table."""
        return {
            f: [d for d, fams in self.missing.items() if f in fams]
            for f in self.families
            if f not in self.columns
        }


def family_accuracies(rec: dict) -> dict[str, float]:
    """Family -> test accuracy of one record (families with no finite accuracy left out).

    Raises ValueError for an accuracy outside [0, 1] (e.g. a percentage).
    """
    out = {}
    for fam, entry in rec["families"].items():
        x = _accuracy(entry.get("test_acc") if isinstance(entry, dict) else None)
        if x is None:
            continue
        if not 0.0 <= x <= 1.0:
            raise ValueError(
                f"data set {rec['dataset']!r}, family {fam!r}: test accuracy {x:g} is not a "
                "fraction in [0, 1]"
            )
        out[fam] = x
    return out


def collect(
    root: str | Path, families: Sequence[str] | None = None, scanned: RecordScan | None = None
) -> Benchmark:
    """Load the UCI records under ``root`` and build the accuracy matrix of the families
    present in every data set (of ``families`` if given). Raises ValueError if there is no
    record, an unknown family is asked for, or no family is present in every data set."""
    found = _find(root, scanned)
    if not found:
        raise ValueError(f"no finished UCI records (record.json, kind 'uci') under {str(root)!r}")
    records = [rec for _, rec in found]
    accs = {rec["dataset"]: family_accuracies(rec) for rec in records}
    seen: list[str] = []
    for rec in records:
        seen += [f for f in rec["families"] if f not in seen]
    if families is not None:
        unknown = [f for f in families if f not in seen]
        if unknown:
            raise ValueError(f"unknown families {unknown}; the records hold {seen}")
        selected = list(dict.fromkeys(families))
    else:
        selected = seen
    missing = {
        d: [f for f in selected if f not in a] for d, a in accs.items() if set(selected) - set(a)
    }
    columns = [f for f in selected if all(f in a for a in accs.values())]
    if not columns:
        raise ValueError(f"no family is present in every data set (missing: {json.dumps(missing)})")
    acc = np.array([[accs[d][f] for f in columns] for d in accs], dtype=np.float64)
    info: dict[str, dict[str, str]] = {}
    for rec in sorted(records, key=lambda r: str(r.get("finished", ""))):
        fi = rec.get("family_info")
        for f, i in (fi if isinstance(fi, dict) else {}).items():
            if isinstance(i, dict):
                info[f] = {**info.get(f, {}), **{k: str(v) for k, v in i.items()}}
    for f in selected:
        info.setdefault(f, {})
        info[f].setdefault("group", "other")
        info[f].setdefault("label", f)
    _disambiguate(info, columns)
    bench = Benchmark(records, [str(p) for p, _ in found], selected, columns, acc, missing, info)
    for f, ds in bench.dropped.items():
        log.warning("family %r dropped: no accuracy on %d data set(s): %s", f, len(ds), ds)
    return bench


def _disambiguate(info: dict[str, dict[str, str]], families: list[str]) -> None:
    labels = [info[f]["label"] for f in families]
    for f in families:
        if labels.count(info[f]["label"]) > 1:
            info[f]["label"] = f"{info[f]['label']} ({f})"


# ---------------------------------------------------------------------- outputs
def _write_csv(path: Path, header: Sequence[str], rows: list[Sequence[Any]]) -> None:
    write_csv(path, [dict(zip(header, row, strict=True)) for row in rows], columns=header)


def _timing(rec: dict) -> dict[str, float | None]:
    t = record_timings(rec)
    return {k: _accuracy(t.get(k)) for k in TIMING_KEYS}


def timing_summary(records: list[dict]) -> dict[str, Any]:
    """Seconds summed over data sets (per timing field) and the slowest data sets."""
    times = [(r, _timing(r)) for r in records]
    totals = {k: float(sum(t[k] for _, t in times if t[k] is not None)) for k in TIMING_KEYS}
    ranked = sorted((t["total_s"], r["dataset"]) for r, t in times if t["total_s"] is not None)
    return {
        **totals,
        "n_timed": len(ranked),
        "slowest": [{"dataset": d, "total_s": s} for s, d in ranked[::-1][:N_SLOWEST]],
    }


def write_tables(bench: Benchmark, rows: list[dict], out: Path) -> None:
    """``uci_table.csv``, ``uci_per_dataset.csv``, ``uci_choices.csv`` and ``uci_timing.csv``."""
    _write_csv(
        out / "uci_table.csv",
        ["method", "label", "group", *STAT_KEYS, "n_datasets"],
        [
            [r["method"], r["label"], r["group"]] + [r[k] for k in STAT_KEYS] + [r["n_datasets"]]
            for r in rows
        ],
    )
    per_dataset, choices, timing = [], [], []
    for rec in bench.records:
        accs = family_accuracies(rec)
        per_dataset.append(
            [rec["dataset"], rec.get("n"), rec.get("length"), rec.get("n_classes")]
            + [accs.get(f) for f in bench.families]
        )
        for f in bench.families:
            entry = rec["families"].get(f)
            if not isinstance(entry, dict):
                continue
            choice = entry.get("choice")
            choices.append(
                [
                    rec["dataset"],
                    f,
                    accs.get(f),
                    _accuracy(entry.get("val_acc")),
                    json.dumps(choice, sort_keys=True) if choice is not None else None,
                ]
            )
        t = _timing(rec)
        timing.append([rec["dataset"], rec.get("n"), rec.get("length")] + list(t.values()))
    _write_csv(
        out / "uci_per_dataset.csv",
        ["dataset", "n", "length", "n_classes", *bench.families],
        per_dataset,
    )
    _write_csv(
        out / "uci_choices.csv", ["dataset", "family", "test_acc", "val_acc", "choice"], choices
    )
    timing.sort(key=lambda row: (row[-1] is None, -(row[-1] or 0.0), row[0]))
    _write_csv(out / "uci_timing.csv", ["dataset", "n", "length", *TIMING_KEYS], timing)


def format_table(summ: dict[str, Any]) -> str:
    """The Markdown table of a summary (one row per family, best Friedman rank first)."""
    lines = [
        "| Method | Group | Accuracy (%) | Friedman rank | P90 (%) | P95 (%) | PMA (%) "
        "| Datasets |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summ["rows"]:
        lines.append(
            f"| {r['label']} | {r['group']} | {r['mean_acc']:.2f} ± {r['std_acc']:.2f} "
            f"| {r['friedman_rank']:.2f} | {r['p90']:.1f} | {r['p95']:.1f} | {r['pma']:.2f} "
            f"| {r['n_datasets']} |"
        )
    return "\n".join(lines)


def _friedman_line(summ: dict[str, Any]) -> str:
    fr = summ["friedman"]
    if fr is None:
        return "Friedman test: not applicable (needs at least 3 families and 2 data sets)."
    return (
        f"Friedman test over the {fr['n_methods']} families: chi2 = {fr['statistic']:.3f}, "
        f"p = {fr['p_value']:.3g}."
    )


def report_markdown(summ: dict[str, Any]) -> str:
    """``uci_table.md``: header (data sets, dropped families, Friedman test), table, timing."""
    dropped = summ["dropped_families"]
    dropped_txt = (
        "; ".join(f"{f} (missing on {len(ds)}: {', '.join(ds)})" for f, ds in dropped.items())
        if dropped
        else "none"
    )
    missing = summ["missing"]
    missing_txt = (
        "; ".join(f"{d}: {', '.join(fs)}" for d, fs in missing.items()) if missing else "none"
    )
    lines = [
        f"# UCI benchmark: {summ['n_datasets']} data sets, {len(summ['rows'])} families",
        "",
        f"{summ['n_datasets']} data sets. Families dropped for missing data sets: "
        f"{dropped_txt}. {_friedman_line(summ)} Data sets missing a family: {missing_txt}.",
        "",
        format_table(summ),
        "",
        "Accuracy: mean ± standard deviation (ddof 0) over data sets of the test accuracy. "
        "Friedman rank: average rank over data sets (1 = best, ties share their mean rank). "
        "P90 / P95: % of data sets on which the family reaches 90% / 95% of the best "
        "accuracy in this table. PMA: mean % of the best accuracy in this table.",
        "",
    ]
    cc = summ.get("complete_case")
    if cc and cc["rows"]:
        lines += [
            f"## Every family, on the {cc['n_datasets']} data sets where all of them ran",
            "",
            format_table(cc),
            "",
        ]
    lines += ["## Timing", ""]
    t = summ["timing"]
    lines.append(
        f"Total over {t['n_timed']} data sets: {t['total_s']:.1f} s (kernels "
        f"{t['kernel_s']:.1f} s, SVMs {t['svm_s']:.1f} s, baselines {t['baseline_s']:.1f} s)."
    )
    if t["slowest"]:
        lines += ["", "| Slowest data sets | total (s) |", "|---|---|"]
        lines += [f"| {s['dataset']} | {s['total_s']:.1f} |" for s in t["slowest"]]
    return "\n".join(lines) + "\n"


def plot(bench: Benchmark, rows: list[dict], stem: Path) -> list[Path]:
    """Friedman rank bars (left) and per-data-set accuracies (right), best family at top;
    saved as ``stem.png`` and ``stem.pdf``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fams = [r["method"] for r in rows]
    m = len(fams)
    colors = [GROUP_COLORS.get(r["group"], OTHER_COLOR) for r in rows]
    ypos = np.arange(m)
    fig, (ax_rank, ax_acc) = plt.subplots(
        1,
        2,
        figsize=(12, max(3.2, 0.42 * m + 2.2)),
        sharey=True,
        gridspec_kw={"width_ratios": [1, 1.4]},
    )
    ranks = [r["friedman_rank"] for r in rows]
    ax_rank.barh(ypos, ranks, color=colors, height=0.65)
    for y, r in zip(ypos, ranks):
        ax_rank.text(r, y, f" {r:.2f}", va="center", fontsize=8)
    ax_rank.set_xlim(0, max(ranks) * 1.18)
    ax_rank.set_xlabel("average Friedman rank (lower is better)")
    ax_rank.set_title("Friedman rank")
    ax_rank.grid(True, axis="x", alpha=0.3)

    col = {f: j for j, f in enumerate(bench.columns)}
    data = [100.0 * bench.acc[:, col[f]] for f in fams]
    orient = (
        {"orientation": "horizontal"}
        if "orientation" in inspect.signature(ax_acc.boxplot).parameters
        else {"vert": False}
    )
    box = ax_acc.boxplot(
        data, positions=ypos, widths=0.55, patch_artist=True, whis=(0, 100), **orient
    )
    for patch, c in zip(box["boxes"], colors):
        patch.set_facecolor(c)
        patch.set_alpha(0.35)
    for med in box["medians"]:
        med.set_color("black")
    jitter = np.random.default_rng(0)
    for y, vals, c in zip(ypos, data, colors):
        ax_acc.scatter(
            vals, y + jitter.uniform(-0.18, 0.18, len(vals)), s=8, color=c, alpha=0.7, lw=0
        )
    ax_acc.scatter(
        [r["mean_acc"] for r in rows], ypos, marker="D", s=22, color="black", zorder=3, label="mean"
    )
    ax_acc.set_xlabel("test accuracy (%)")
    ax_acc.set_title(f"Accuracy on each of the {len(bench.records)} data sets")
    ax_acc.grid(True, axis="x", alpha=0.3)
    ax_rank.set_yticks(ypos)
    ax_rank.set_yticklabels([r["label"] for r in rows])
    ax_rank.set_ylim(m - 0.5, -0.5)
    ax_acc.tick_params(axis="y", labelleft=False)

    present = {r["group"] for r in rows}
    groups = [g for g in GROUP_COLORS if g in present] + sorted(present - set(GROUP_COLORS))
    handles = [
        Patch(color=GROUP_COLORS.get(g, OTHER_COLOR), label=g) for g in groups
    ] + ax_acc.get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.set_layout_engine("tight", rect=(0, 0.07, 1, 1))
    return save_figure(fig, stem, dpi=150)


def _table(bench: Benchmark, acc: np.ndarray, families: list[str]) -> list[dict]:
    """:func:`summary_table` rows with each family's label and group."""
    rows = summary_table(acc, families)
    for r in rows:
        r["label"] = bench.info[r["method"]]["label"]
        r["group"] = bench.info[r["method"]]["group"]
    return rows


def complete_case(bench: Benchmark) -> dict[str, Any]:
    """Every family (dropped ones included) on the data sets where all of them ran.

    A family absent on a few data sets (e.g. mean pooling, skipped on long inputs on a CPU)
    is dropped from the main table; this table keeps it and drops those data sets instead.
    """
    accs = {rec["dataset"]: family_accuracies(rec) for rec in bench.records}
    keep = [d for d, a in accs.items() if all(f in a for f in bench.families)]
    if not keep:
        return {"n_datasets": 0, "rows": [], "datasets": []}
    acc = np.array([[accs[d][f] for f in bench.families] for d in keep], dtype=np.float64)
    return {"n_datasets": len(keep), "rows": _table(bench, acc, bench.families), "datasets": keep}


def build_report(
    root: str | Path, out: str | Path | None = None, families: Sequence[str] | None = None
) -> dict[str, Any]:
    """Aggregate the UCI records under ``root`` into ``out`` (default ``root/report``).

    Args:
        families: restrict the table to these family keys (None: all recorded families).

    Returns the summary (also written to ``uci_summary.json``), with ``out`` added. Raises
    ValueError if ``root`` does not exist, holds no finished UCI record, or no (selected)
    family is present in every data set.
    """
    root = Path(root)
    out = report_folder(root, out)
    scanned = scan(root, KIND)
    bench = collect(root, families, scanned)
    rows = _table(bench, bench.acc, bench.columns)
    test = friedman_test(bench.acc)
    summ: dict[str, Any] = {
        "generated": utc_now(),
        "root": str(root),
        "n_datasets": len(bench.records),
        "datasets": bench.datasets,
        "families": [r["method"] for r in rows],
        "selected_families": bench.families,
        "family_info": {f: bench.info[f] for f in bench.families},
        "dropped_families": bench.dropped,
        "missing": bench.missing,
        "friedman": None if test is None else test.to_dict(),
        "rows": rows,
        "timing": timing_summary(bench.records),
        "excluded": scanned.summary(),
        "records": bench.paths,
    }
    if bench.dropped:
        summ["complete_case"] = complete_case(bench)
    write_tables(bench, rows, out)
    write_text(out / "uci_table.md", report_markdown(summ))
    with paper_style():
        plot(bench, rows, out / "uci_table")
    atomic_write_json(out / "uci_summary.json", summ)
    summ["out"] = str(out)
    return summ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.uci.report",
        description="Tabulate the UCI benchmark records under PATH (searched recursively).",
    )
    parser.add_argument(
        "path",
        nargs="?",
        default="outputs/uci/latest",
        help="a folder of UCI runs or one record.json (default: outputs/uci/latest, the last grid)",
    )
    parser.add_argument("--out", default=None, help="output folder (default PATH/report)")
    parser.add_argument(
        "--families", default=None, help="comma-separated family keys to tabulate (default all)"
    )
    args = parser.parse_args(argv)
    families = None
    if args.families is not None:
        families = [f.strip() for f in args.families.split(",") if f.strip()]
        if not families:
            fail("--families names no family", 2)
    try:
        summ = build_report(args.path, args.out, families)
    except ValueError as err:
        fail(str(err), 2)
    print(report_markdown(summ), end="")
    print(f"report: {summ['out']}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    sys.exit(main())
