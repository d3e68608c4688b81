r"""``finite_vs_infinite``: trained finite RNNs against the RNTK / NNGP on real sequence data.

Per data set, left: test accuracy against width of the network arms (GD in the NTK
parameterization, the same centered f - f_0, the seed ensembles of both, GD in the standard
parameterization with the learning rate chosen on validation, Adam) with the RNTK and NNGP
ridge regressions as horizontal lines. Right: RMS distance of the test predictions to kernel
gradient descent with the analytic RNTK at the networks' learning rate and step count, with
fitted exponents and bootstrap intervals over seeds.

The numbers come from :mod:`experiments.finite_vs_infinite` runs, reused from ``outputs/``
when the configuration matches (``python -m experiments.finite_vs_infinite`` writes the
default run where this figure looks for it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from experiments.figures.common import (
    FigureResult,
    RunOptions,
    Table,
    fmt_list,
    register_figure,
    resolve_params,
)


@dataclass(frozen=True)
class FiniteVsInfiniteParams:
    """Overrides of the experiment's defaults (``conf/finite_vs_infinite.yaml``); None keeps
    the default (or the ``quick`` value)."""

    tasks: tuple[str, ...] | None = None
    widths: tuple[int, ...] | None = None
    seeds: int | None = None
    steps: int | None = None
    n_boot: int = 1000


QUICK = {"n_boot": 200}


def draw(tables: dict[str, Table], meta: dict):
    from experiments.finite_vs_infinite.report import draw as draw_report

    return draw_report({**tables, "accuracy": tables["main"]}, meta)


def _config(p: FiniteVsInfiniteParams, opts: RunOptions):
    from experiments.common.schema import DeviceChoice
    from experiments.finite_vs_infinite.schema import FiniteVsInfiniteConfig

    cfg = FiniteVsInfiniteConfig(
        name="erf_last",
        quick=opts.quick,
        base_seed=opts.seed,
        device=DeviceChoice(opts.device),
        progress=opts.progress,
    )
    for k in ("tasks", "widths", "seeds", "steps"):
        if getattr(p, k) is not None:
            v = getattr(p, k)
            setattr(cfg, k, list(v) if isinstance(v, tuple) else v)
    cfg.validate()
    return cfg


def _per_task_records(cfg, root: Path) -> list[tuple[Path, dict]] | None:
    """Finished runs of ``cfg`` split by data set (``-m 'tasks=[A],[B]'``), one per task,
    found anywhere under ``root`` whatever device they ran on; None unless every task has
    one."""
    import copy

    from experiments.common.records import find_records, measured

    if len(cfg.tasks) < 2 or not root.exists():
        return None

    def key(identity: dict) -> str:
        return json.dumps(measured({**identity, "device": None}), sort_keys=True, default=str)

    by_key = {key(r["identity"]): (p, r) for p, r in find_records(root) if "identity" in r}
    out = []
    for task in cfg.tasks:
        one = copy.copy(cfg)
        one.tasks = [task]
        hit = by_key.get(key(json.loads(json.dumps(one.identity()))))
        if hit is None:
            return None
        out.append(hit)
    return out


@register_figure("finite_vs_infinite", draw=draw, order=45)
def compute(opts: RunOptions) -> FigureResult:
    from experiments.common.records import identity_hash
    from experiments.finite_vs_infinite.report import collect
    from experiments.finite_vs_infinite.study import run_study

    p = resolve_params(FiniteVsInfiniteParams, opts, QUICK)
    cfg = _config(p, opts)
    root = Path(opts.outputs_root) / "finite_vs_infinite" / cfg.name
    # the folders the command line uses for the default and quick runs (reused when finished)
    default = _config(FiniteVsInfiniteParams(), opts)
    if cfg.identity() == default.identity():
        out = root / ("quick=true" if opts.quick else "")
    else:
        out = root / f"figure-{identity_hash(cfg.identity())}"
    found = _per_task_records(cfg, Path(opts.outputs_root) / "finite_vs_infinite")
    if found is None:
        found = [(out / "record.json", run_study(cfg, out))]
    tables, headline = collect(found, n_boot=p.n_boot, seed=opts.seed)
    setup = (
        f"- Data: aeon {', '.join(cfg.tasks)}; UCR train split stratified into train / "
        f"validation ({cfg.val_fraction:g}); UCR test split; one-hot targets e_c - 1/C.\n"
        f"- Network: one-layer erf RNN, s_w = 1, last readout; widths {fmt_list(cfg.widths)}, "
        f"{cfg.seeds} seeds; {cfg.steps} full-batch steps, early stopping on validation.\n"
        f"- NTK-parameterization GD: eta = {cfg.lr_scale:g} N / lambda_max (largest empirical "
        f"NTK eigenvalue over seeds); standard parameterization: eta = c N / lambda_max, c in "
        f"{fmt_list(cfg.sp_lr_scales)} (2 = edge of stability); Adam lr {cfg.adam_lr:g}.\n"
        "- Kernels: RNTK / NNGP ridge regression, ridge chosen on validation (float64).\n"
        f"- Fits: least squares on log-log axes, 95% bootstrap over seeds ({p.n_boot} draws)."
    )
    return FigureResult(
        tables={
            "main": tables["accuracy"],
            "kernels": tables["kernels"],
            "distance": tables["distance"],
            "ranking": tables["ranking"],
        },
        headline=headline,
        setup=setup,
        draw=draw,
        params=p,
        title="Finite versus infinite RNNs on real sequence data",
        description=(
            "Accuracy of trained finite RNNs (NTK / standard parameterization, centered, "
            "ensembled, Adam) against the RNTK and NNGP, and their distance to the kernel "
            "predictor vs width."
        ),
    )
