"""``--help`` of every entry point: only that experiment's config groups and options, each
with its default (as composed from ``conf/``) and a one-line description, the default sweep,
and for ``experiments.figures`` the list of figures.

The text is built by the OmegaConf resolver ``${rntk.help:APP}`` that each ``conf/APP.yaml``
puts into ``hydra.help.template``. Every schema field must have a description here
(``tests/test_help.py`` checks it), so a new option is documented where it is described.
"""

from __future__ import annotations

import sys
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.common.cli import CONF_DIR

ARCH = {
    "name": "label for folders and legends (not part of a run's identity)",
    "depth": "recurrent layers L",
    "nonlinearity": "relu | erf | tanh | identity | a registered name",
    "sigma_w": "recurrent weight multiplier s_w",
    "sigma_u": "input weight multiplier s_u",
    "sigma_b": "bias multiplier s_b",
    "sigma_h": "initial-state multiplier s_h",
    "sigma_v": "readout multiplier s_v",
    "readout": "last | avg (mean pooling) | per_step | ema | paper_avg (rntk_empirical.readouts)",
    "ema_decay": "lam of the ema readout (weight lam^(T-1-t) on step t), in [0, 1]",
    "bidirectional": "add a second RNN on the reversed sequence",
    "h0": "initial state: zero | shared | per_input",
    "parameterization": "ntk | standard",
    "init": "recurrent weights: gaussian | orthogonal",
    "cell": "recurrent cell: elman | minimalrnn | gru (rntk_empirical.cells)",
    "gate": "gate function of minimalrnn/gru: sigmoid | erf ((1 + erf(x)) / 2)",
}
EXECUTION = {
    "device": "auto | cpu | cuda (auto: CUDA when available)",
    "dtype": "float64 | float32 arithmetic",
    "force": "recompute a finished run",
    "progress": "show progress bars",
    "num_threads": "torch threads (null: torch's default)",
    "seeds": "independent networks per width",
    "base_seed": "network s uses seed base_seed + s",
    "width": "hidden width n",
}
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "ArchConfig": ARCH,
    "DataConfig": {
        "name": "label of the data in folder names",
        "kind": "random | mixed_lengths | file",
        "n": "number of sequences (file: keep the first n)",
        "T": "sequence length (random)",
        "m": "input features per step",
        "min_len": "shortest length (mixed_lengths)",
        "max_len": "longest length (mixed_lengths)",
        "seed": "seed of the data draw",
        "path": "a .npz/.npy/.pt file of sequences (kind=file)",
    },
    "ConvergenceConfig": {
        **EXECUTION,
        "name": "run folder name (default ARCH-DATA)",
        "arch": "the architecture (group arch=...)",
        "data": "the input sequences (group data=...)",
        "method": "empirical NTK method: structured | jacobian | ntk_vp",
        "chunk_size": "sequences per pass of the empirical NTK (null: from memory)",
        "nngp": "also compare the NNGP",
        "cache": "reuse cached analytic kernels",
        "cache_dir": "where analytic kernels are cached",
    },
    "TaskConfig": {
        "name": "label of the task in folder names",
        "kind": "synthetic | aeon (a bundled UCR data set)",
        "n_train": "training sequences",
        "n_test": "test sequences",
        "m": "input features per step (synthetic)",
        "min_len": "shortest length (synthetic)",
        "max_len": "longest length (synthetic)",
        "rho": "target smoothness (synthetic)",
        "dataset": "UCR data set name (kind=aeon)",
        "seed": "seed of the data draw and subsampling",
    },
    "DriftConfig": {
        **EXECUTION,
        "name": "run folder name (default ARCH-TASK)",
        "arch": "the architecture (group arch=...)",
        "task": "the training task (group task=...)",
        "steps": "training steps",
        "optimizer": "gd | sgd | adam",
        "lr_scale": "learning rate lr_scale * N / lambda_max(Theta)",
        "lr": "absolute learning rate (overrides lr_scale)",
        "batch_size": "minibatch size for sgd/adam (null: full batch)",
        "record_every": "steps between recorded points",
        "checkpoint_every": "steps between checkpoints",
        "n_probe": "probe sequences of the NTK drift",
        "track_linearized": "also train the linearized network",
        "strict_checkpoints": "a stale or damaged checkpoint stops the run (exit 2) instead "
        "of restarting that seed",
    },
    "UCIGridConfig": {
        "sigma_w": "s_w of every recurrent kernel",
        "sigma_us": "grid of s_u",
        "sigma_bs": "grid of s_b",
        "sigma_h": "s_h of every recurrent kernel",
        "depths": "grid of depths",
        "readouts": "last, per_step, avg, paper_avg (the authors' avg)",
        "directions": "forward, reversed, bidirectional",
        "nonlinearity": "nonlinearity of every recurrent kernel",
        "max_avg_length": "skip mean pooling above this length (null: never)",
    },
    "UCIBaselineConfig": {
        "methods": "rbf_svm, poly_svm, mlp_ntk, random_forest",
        "rbf_gammas": "RBF SVM gammas",
        "poly_degrees": "polynomial SVM degrees",
        "poly_gammas": "polynomial SVM gammas",
        "mlp_depths": "ReLU-MLP NTK depths",
        "mlp_sigma_bs": "ReLU-MLP NTK bias multipliers",
        "forest_trees": "random forest size",
        "forest_max_features": "random forest max_features grid",
    },
    "UCIConfig": {
        "dataset": "a data set, a comma-separated list, or all",
        "data_root": "UCI folder (null: $RNTK_UCI_ROOT or ../shared/data/uci)",
        "out_dir": "where results go (one folder per configuration)",
        "Cs": "SVM regularization grid",
        "grid": "the recurrent-kernel grid",
        "baselines": "the baselines",
        "dtype": "float64 | float32 kernel arithmetic",
        "device": "auto | cpu | cuda",
        "backend": "kernel bank: auto | numba | torch",
        "compile": "torch backend: torch.compile the recursion",
        "block_elements": "pairs per row block (null: by device)",
        "seed": "seed of the random forest",
        "force": "recompute finished data sets",
        "progress": "show progress bars",
        "report": "build the table at the end",
        "num_threads": (
            "torch threads, SVM fit threads and forest processes (null: torch's default; "
            "one per CPU core for the SVMs and forests)"
        ),
    },
}
DESCRIPTIONS["FiniteVsInfiniteConfig"] = {
    "name": "run folder name (default ARCH)",
    "arch": "the architecture (group arch=...)",
    "tasks": "aeon UCR/UEA data sets (bundled ones load offline)",
    "val_fraction": "share of the UCR train split held out for validation",
    "max_len": "resample longer series to this length (null: keep)",
    "n_train": "stratified subset of the train split (null: all)",
    "n_test": "subset of the test split (null: all)",
    "data_seed": "seed of the splits and subsets",
    "widths": "widths of the finite networks",
    "seeds": "networks per width (NTK-parameterized arms)",
    "base_seed": "network s uses seed base_seed + s",
    "steps": "full-batch training steps",
    "record_every": "steps between validation checks (early stopping)",
    "checkpoint_every": "steps between checkpoints",
    "arms": "ntk, centered, standard, adam",
    "lr_scale": "NTK arms: lr = lr_scale * N / lambda_max",
    "sp_lr_scales": "standard param.: c in lr = c * N / lambda_max (2: edge of stability)",
    "sp_seeds": "networks per width in the standard parameterization",
    "adam_lr": "Adam's learning rate",
    "ridges": "diagonal regularizers of the kernel predictors (chosen on validation)",
    "n_boot": "bootstrap replicates of the distance exponents",
    "dtype": "float32 | float64 of the networks (kernels: both)",
    "device": "auto | cpu | cuda",
    "quick": "reduced setup (tests, smoke runs)",
    "force": "recompute finished runs",
    "progress": "show progress bars",
    "num_threads": "torch threads (null: torch's default)",
}
FIGURES_OPTIONS = {
    "figure": "a figure name (below) or all",
    "quick": "reduced setup for tests and smoke runs (marked on the image)",
    "redraw": "re-plot from the saved CSV/JSON without recomputing",
    "out_dir": "where figures and their data go",
    "device": "cpu | cuda | auto for the kernel computations",
    "seed": "base seed of every random draw",
    "progress": "show progress bars",
    "params": "overrides of the figure's parameters (+params.FIELD=VALUE)",
}
APPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "convergence": (
        "Empirical vs analytic NTK/NNGP of finite RNNs, one width",
        ("arch", "data", "experiment"),
    ),
    "drift": ("Training: NTK drift and lazy-regime agreement, one width", ("arch", "task")),
    "uci": ("The 90-dataset UCI benchmark of recurrent kernels", ()),
    "figures": ("Regenerate the papers' figures", ()),
    "finite_vs_infinite": (
        "Trained finite RNNs vs RNTK/NNGP predictors on UCR/UEA data",
        ("arch",),
    ),
}


def _schema(app: str) -> type | None:
    from experiments.common import schema
    from experiments.finite_vs_infinite.schema import FiniteVsInfiniteConfig

    return {
        "finite_vs_infinite": FiniteVsInfiniteConfig,
        "convergence": schema.ConvergenceConfig,
        "drift": schema.DriftConfig,
        "uci": schema.UCIConfig,
    }.get(app)


def _value(root: DictConfig, key: str) -> str:
    try:
        v = OmegaConf.select(root, key, throw_on_missing=True)
    except Exception:  # noqa: BLE001 - missing (???) or an interpolation that needs a choice
        return "???"
    if isinstance(v, DictConfig | list) or OmegaConf.is_list(v):
        v = OmegaConf.to_container(v) if not isinstance(v, list) else v
    return "null" if v is None else str(getattr(v, "value", v))


def _options(schema: type, root: DictConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    out = []
    desc = DESCRIPTIONS[schema.__name__]
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if callable(f.default_factory) else f.default
        if is_dataclass(default):
            out.append((key, "", desc[f.name]))
            out += _options(type(default), root, f"{key}.")
        else:
            out.append((key, _value(root, key), desc[f.name]))
    return out


def _group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def help_text(app: str, *, _root_: DictConfig) -> str:
    """The ``--help`` page of ``python -m experiments.APP`` (a Hydra help template)."""
    title, groups = APPS[app]
    lines = [f"python -m experiments.{app} [KEY=VALUE ...]  ({title})", ""]
    if app in ("convergence", "drift"):
        lines[0] = f"python -m experiments.{app} [-m] [KEY=VALUE ...]  ({title})"
    choices = _root_.hydra.runtime.get("choices", {}) if "hydra" in _root_ else {}
    if groups:
        lines.append("Config groups (GROUP=OPTION; options fill the keys below):")
        for g in groups:
            lines.append(f"  {g}: {', '.join(_group_options(g))} (now: {choices.get(g)})")
        lines.append("")
    lines.append("Options (KEY=VALUE; the value shown is the default):")
    if app == "figures":
        rows = [(k, _value(_root_, k), d) for k, d in FIGURES_OPTIONS.items()]
    else:
        rows = _options(_schema(app), _root_)
    width = min(34, max(len(k) + len(v) + 1 for k, v, _ in rows))
    for k, v, d in rows:
        kv = f"{k}={v}" if v else f"{k}:"
        if len(kv) > width:  # long lists: the description on its own line
            lines += [f"  {kv}", f"  {'':<{width}}  {d}"]
        else:
            lines.append(f"  {kv:<{width}}  {d}")
    sweep = OmegaConf.select(_root_, "hydra.sweeper.params") if "hydra" in _root_ else None
    if sweep:
        lines += ["", "Default sweep (-m): " + " ".join(f"{k}={v}" for k, v in sweep.items())]
    if app == "figures":
        from experiments.figures import FIGURES

        lines += ["", "Figures (figure=NAME):"]
        for name in sorted(FIGURES):
            doc = sys.modules[FIGURES[name].compute.__module__].__doc__ or ""
            first = doc.strip().splitlines()[0] if doc.strip() else ""
            lines.append(f"  {name}: {first.replace(f'``{name}``: ', '')}")
    lines += [
        "",
        "Also: --cfg job (print the composed config), -m (sweep; default launcher runs jobs",
        "in turn, hydra/launcher=joblib in parallel), --hydra-help (Hydra's own flags).",
    ]
    return "\n".join(lines).replace("$", "$$")


def register_help_resolver() -> None:
    OmegaConf.register_new_resolver("rntk.help", help_text, replace=True)


def all_descriptions_present() -> list[str]:
    """Schema fields without a description (for the test)."""
    from experiments.common import schema
    from experiments.finite_vs_infinite.schema import FiniteVsInfiniteConfig

    missing = []
    for cls in (
        FiniteVsInfiniteConfig,
        schema.ArchConfig,
        schema.DataConfig,
        schema.ConvergenceConfig,
        schema.TaskConfig,
        schema.DriftConfig,
        schema.UCIGridConfig,
        schema.UCIBaselineConfig,
        schema.UCIConfig,
    ):
        desc: dict[str, Any] = DESCRIPTIONS.get(cls.__name__, {})
        missing += [f"{cls.__name__}.{f.name}" for f in fields(cls) if f.name not in desc]
    return missing
