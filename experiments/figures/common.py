"""Shared machinery of the figure scripts: results, registry, saving, the index page.

A figure is a function ``compute(opts) -> FigureResult`` registered under a name with
:func:`register_figure`, together with a ``draw(tables, meta) -> Figure`` that rebuilds the
plot from the saved CSV alone (so ``redraw=true`` never recomputes). Saving writes, into
``out_dir``::

    NAME.png, NAME.pdf   the figure
    NAME.csv             every plotted number (long format, one row per plotted point)
    NAME-<table>.csv     further tables, if the figure has them
    NAME.json            headline numbers, the exact setup (parameters, library versions)

and regenerates ``out_dir/README.md`` from every ``*.json`` found there, so figures can be
produced independently and in any order.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from experiments.common.records import atomic_write_json, library_versions, read_json, utc_now  # noqa: E402
from experiments.common.reporting import read_csv, save_figure, write_csv  # noqa: E402
from experiments.common.style import mark_quick, paper_style  # noqa: E402

Row = dict[str, Any]
Table = list[Row]
DrawFn = Callable[[dict[str, Table], dict[str, Any]], Figure]
MAIN_TABLE = "main"
INDEX_NAME = "README.md"


@dataclass(frozen=True)
class RunOptions:
    """What the entry point passes to a figure: the common switches of ``conf/figures.yaml``.

    Attributes:
        quick: small, fast version (tests, smoke runs).
        seed: base seed of every random draw (data, networks).
        device: ``cpu | cuda | auto`` for the kernel computations.
        params: overrides of the figure's parameter dataclass (``params.<field>=...``).
        progress: show tqdm bars.
        outputs_root: where experiment runs live (figures reuse finished convergence / drift
            runs found there and run the missing ones into it); the parent of ``out_dir``.
    """

    quick: bool = False
    seed: int = 0
    device: str = "cpu"
    params: Mapping[str, Any] = field(default_factory=dict)
    progress: bool = True
    outputs_root: str = "outputs"


@dataclass
class FigureResult:
    """Everything a figure produced.

    Attributes:
        tables: name -> rows (``"main"`` is ``NAME.csv``; others ``NAME-<name>.csv``).
            Every plotted number must be in a table; ``draw`` reads only these and ``meta``.
        headline: the numbers that make the figure's point (JSON-able).
        setup: the exact setup in Markdown (data, architectures, widths, seeds, choices).
        draw: rebuilds the matplotlib figure from ``(tables, meta)``.
        title, description: one line each, for the index page.
        params: the resolved parameter dataclass (recorded in the JSON).
        markdown: optional extra Markdown for the index page (e.g. a results table).
    """

    tables: dict[str, Table]
    headline: dict[str, Any]
    setup: str
    draw: DrawFn
    title: str
    description: str
    params: Any = None
    markdown: str = ""


@dataclass(frozen=True)
class FigureSpec:
    name: str
    compute: Callable[[RunOptions], FigureResult]
    draw: DrawFn
    order: int


FIGURES: dict[str, FigureSpec] = {}


def register_figure(name: str, draw: DrawFn, order: int | None = None):
    """Decorator: register ``compute(opts) -> FigureResult`` as figure ``name``.

    ``draw`` is registered too, so ``redraw=true`` can rebuild the plot from the CSV.
    ``order`` sets the position on the index page and in ``figure=all`` (default: after
    the figures registered so far, in registration order; the built-in ones use 10, 20, ...).
    """

    def deco(fn: Callable[[RunOptions], FigureResult]):
        if name in FIGURES:
            raise ValueError(f"figure {name!r} is already registered")
        if order is None:
            o = max((s.order for s in FIGURES.values()), default=0) + 10
        else:
            o = order
        FIGURES[name] = FigureSpec(name, fn, draw, o)
        return fn

    return deco


P = TypeVar("P")


def resolve_params(cls: type[P], opts: RunOptions, quick: Mapping[str, Any]) -> P:
    """The figure's parameters: dataclass defaults, then ``quick`` overrides if
    ``opts.quick``, then the user's ``params`` overrides (unknown names are an error)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(opts.params) - names)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for {cls.__name__}; "
            f"known: {', '.join(sorted(names))}"
        )
    values: dict[str, Any] = dict(quick) if opts.quick else {}
    for k, v in opts.params.items():
        values[k] = tuple(v) if isinstance(v, (list, tuple)) else v
    return cls(**values)


def params_dict(params: Any) -> dict[str, Any]:
    return dataclasses.asdict(params) if dataclasses.is_dataclass(params) else dict(params or {})


def table_paths(out_dir: Path, name: str, table_names: Sequence[str]) -> dict[str, Path]:
    return {
        t: out_dir / (f"{name}.csv" if t == MAIN_TABLE else f"{name}-{t}.csv") for t in table_names
    }


def select(rows: Table, **match: Any) -> Table:
    """Rows whose columns equal ``match``."""
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def column(rows: Table, key: str) -> list[Any]:
    return [r[key] for r in rows]


# ---------------------------------------------------------------------------- saving
def command_for(name: str) -> str:
    return f"python -m experiments.figures figure={name}"


def save_result(
    result: FigureResult, out_dir: Path, name: str, opts: RunOptions, seconds: float
) -> dict[str, Any]:
    """Write PNG, PDF, CSV(s) and JSON of one figure, then regenerate the index page."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for t, path in table_paths(out_dir, name, list(result.tables)).items():
        write_csv(path, result.tables[t])
    meta = {
        "name": name,
        "title": result.title,
        "description": result.description,
        "command": command_for(name) + (" quick=true" if opts.quick else ""),
        "quick": opts.quick,
        "seed": opts.seed,
        "device": opts.device,
        "tables": list(result.tables),
        "headline": result.headline,
        "setup": result.setup,
        "markdown": result.markdown,
        "params": params_dict(result.params),
        "compute_seconds": round(seconds, 1),
        "created": utc_now(),
        "versions": library_versions(),
    }
    with paper_style():  # savefig inside: the style's tight bounding box keeps the banner
        fig = result.draw(result.tables, meta)
        mark_quick(fig, opts.quick)
        save_figure(fig, out_dir / name)
    atomic_write_json(out_dir / f"{name}.json", meta)
    write_index(out_dir)
    return meta


def redraw(spec: FigureSpec, out_dir: Path) -> list[Path]:
    """Rebuild ``NAME.png/pdf`` from ``NAME.csv`` (and ``NAME.json``) without recomputing."""
    meta = read_json(out_dir / f"{spec.name}.json")
    if meta is None:
        raise FileNotFoundError(
            f"{out_dir / (spec.name + '.json')} is missing; run the figure once without redraw"
        )
    tables = {}
    for t, path in table_paths(out_dir, spec.name, meta.get("tables", [MAIN_TABLE])).items():
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; run the figure once without redraw")
        tables[t] = read_csv(path)
    with paper_style():
        fig = spec.draw(tables, meta)
        mark_quick(fig, bool(meta.get("quick")))
        paths = save_figure(fig, out_dir / spec.name)
    write_index(out_dir)
    return paths


# ---------------------------------------------------------------------------- index
def _fmt_value(v: Any) -> str:
    """Compact Markdown text of a headline value (numbers to 4 significant digits)."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {_fmt_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def _headline_md(headline: Mapping[str, Any]) -> str:
    lines = ["| quantity | value |", "|---|---|"]
    for k, v in headline.items():
        if isinstance(v, Mapping) and any(isinstance(x, Mapping) for x in v.values()):
            lines += [f"| {k}: {kk} | {_fmt_value(x)} |" for kk, x in v.items()]
        else:
            lines.append(f"| {k} | {_fmt_value(v)} |")
    return "\n".join(lines)


def write_index(out_dir: Path) -> Path:
    """Regenerate ``out_dir/README.md`` from every figure JSON present in ``out_dir``."""
    metas = []
    for p in sorted(out_dir.glob("*.json")):
        m = read_json(p)
        if m is not None and "headline" in m and "name" in m:
            metas.append(m)
    order = {n: s.order for n, s in FIGURES.items()}
    metas.sort(key=lambda m: (order.get(m["name"], 10**6), m["name"]))
    parts = [
        "# Figures",
        "",
        "Generated by `python -m experiments.figures figure=NAME` (`figure=all` for every "
        "figure; `redraw=true` re-plots from the saved CSV). Each figure has `NAME.png`, "
        "`NAME.pdf`, `NAME.csv` (every plotted number) and `NAME.json` (headline numbers, "
        "parameters, library versions). This page is rebuilt from the JSON files present.",
        "",
    ]
    parts += [f"- [{m['name']}](#{m['name'].replace('_', '-')}): {m['title']}" for m in metas]
    for m in metas:
        quick = " **(quick mode: a reduced smoke-test setup, not the paper figure)**"
        parts += [
            "",
            f"## {m['name']}",
            "",
            f"**{m['title']}**{quick if m.get('quick') else ''}",
            "",
            m["description"],
            "",
            f"![{m['name']}]({m['name']}.png)",
            "",
            f"Command: `{m['command']}` (seed {m.get('seed', 0)}, device {m.get('device')}, "
            f"{m.get('compute_seconds', '?')} s, {m.get('created', '')}).",
            "",
            "### Setup",
            "",
            m["setup"],
            "",
            "### Headline numbers",
            "",
            _headline_md(m["headline"]),
        ]
        if m.get("markdown"):
            parts += ["", m["markdown"]]
    text = "\n".join(parts) + "\n"
    path = out_dir / INDEX_NAME
    tmp = out_dir / f".{INDEX_NAME}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def run_figure(name: str, out_dir: str | os.PathLike, opts: RunOptions) -> dict[str, Any]:
    """Compute figure ``name`` and save it into ``out_dir``; returns its JSON record."""
    spec = get_figure(name)
    t0 = time.perf_counter()
    result = spec.compute(opts)
    return save_result(result, Path(out_dir), name, opts, time.perf_counter() - t0)


def get_figure(name: str) -> FigureSpec:
    if name not in FIGURES:
        raise KeyError(
            f"unknown figure {name!r}; known figures: {', '.join(known_figures())} (or all)"
        )
    return FIGURES[name]


def known_figures() -> list[str]:
    return sorted(FIGURES, key=lambda n: (FIGURES[n].order, n))


def fmt_list(values: Sequence[Any], fmt: str = "{:g}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def power_law_rows(samples, n_boot: int, seed: int, value_key: str = "value", **fields):
    """Fit ``samples`` (width -> per-seed values) with :func:`bootstrap_power_law`; return
    ``(rows, fit)`` with one row per width: the statistic (under ``value_key``), its
    interval (low, high), the seed count and the fitted exponent with its interval, plus
    ``fields`` on every row."""
    from rntk_empirical.scaling import bootstrap_power_law

    fit = bootstrap_power_law(samples, n_boot=n_boot, seed=seed)
    rows = [
        {
            **fields,
            "width": w,
            value_key: v,
            "low": lo,
            "high": hi,
            "seeds": n,
            "exponent": fit.exponent,
            "exp_low": fit.ci_low,
            "exp_high": fit.ci_high,
            "intercept": fit.intercept,
        }
        for w, v, lo, hi, n in zip(
            fit.widths, fit.values, fit.value_low, fit.value_high, fit.n_seeds
        )
    ]
    return rows, fit


# Legend words for the series tags of the sweep-based figures.
SERIES_WORDS = {
    "relu_last": "ReLU, last step",
    "relu_avg": "ReLU, mean pooling",
    "erf_last": "erf, last step",
    "erf_avg": "erf, mean pooling",
    "gaussian": "Gaussian init",
    "orthogonal": "orthogonal init",
}


def plot_fit(ax, rows: Table, color, label: str, value_key: str = "value") -> None:
    """Draw rows of :func:`power_law_rows` (one series): points, bootstrap band, fitted line,
    and the exponent with its interval in the legend."""
    import numpy as np

    rr = sorted(rows, key=lambda r: r["width"])
    w = np.array([r["width"] for r in rr], float)
    v = np.array([r[value_key] for r in rr])
    ax.fill_between(
        w, [r["low"] for r in rr], [r["high"] for r in rr], color=color, alpha=0.2, lw=0
    )
    r0 = rr[0]
    ax.plot(
        w,
        v,
        "o",
        color=color,
        ms=4,
        label=f"{SERIES_WORDS.get(label, label)}, fit: $n^{{{r0['exponent']:.2f}}}$ "
        f"[{r0['exp_low']:.2f}, {r0['exp_high']:.2f}]",
    )
    ax.plot(w, math.exp(r0["intercept"]) * w ** r0["exponent"], "-", color=color, lw=1)
