"""``--help`` of every entry point: only that experiment's config groups and options, each
with its default (as composed from ``conf/``) and a one-line description, the default sweep,
and for ``experiments.figures`` the list of figures.

The text is built by the OmegaConf resolver ``${rntk.help:APP}`` that each ``conf/APP.yaml``
puts into ``hydra.help.template``, from the registered experiment
(:mod:`experiments.common.registry`): each option's description is its schema field's
metadata (:func:`experiments.common.schema.opt`), so an option is described where it is
declared; ``tests/test_help.py`` checks that every field has one.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.common.cli import CONF_DIR
from experiments.common.registry import experiment
from experiments.common.schema import description


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
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if callable(f.default_factory) else f.default
        if is_dataclass(default):
            out.append((key, "", description(f)))
            out += _options(type(default), root, f"{key}.")
        else:
            out.append((key, _value(root, key), description(f)))
    return out


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def help_text(app: str, *, _root_: DictConfig) -> str:
    """The ``--help`` page of a registered experiment (a Hydra help template)."""
    exp = experiment(app)
    sweep_flag = " [-m]" if exp.sweeps else ""
    lines = [f"{exp.usage}{sweep_flag} [KEY=VALUE ...]  ({exp.title})", ""]
    choices = _root_.hydra.runtime.get("choices", {}) if "hydra" in _root_ else {}
    if exp.groups:
        lines.append("Config groups (GROUP=OPTION; options fill the keys below):")
        for g in exp.groups:
            lines.append(f"  {g}: {', '.join(group_options(g))} (now: {choices.get(g)})")
        lines.append("")
    lines.append("Options (KEY=VALUE; the value shown is the default):")
    if exp.schema is None:
        rows = [(k, _value(_root_, k), d) for k, d in exp.options.items()]
    else:
        rows = _options(exp.schema, _root_)
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
    if exp.appendix is not None:
        lines += ["", *exp.appendix()]
    lines += [
        "",
        "Also: --cfg job (print the composed config), -m (sweep; default launcher runs jobs",
        "in turn, hydra/launcher=joblib in parallel), --hydra-help (Hydra's own flags).",
    ]
    return "\n".join(lines).replace("$", "$$")


def register_resolvers() -> None:
    """The resolvers of the YAML files: ``${rntk.help:APP}`` (the ``--help`` page),
    ``${rntk.stem:PATH}`` (a file's name without folder and suffix; names data=file runs) and
    ``${rntk.shared_conf:}`` (the shared config groups, ``arch=...``, as a Hydra search path
    entry for an experiment that keeps its YAML in its own package)."""
    OmegaConf.register_new_resolver("rntk.help", help_text, replace=True)
    OmegaConf.register_new_resolver(
        "rntk.shared_conf", lambda: f"file://{CONF_DIR}", replace=True
    )
    OmegaConf.register_new_resolver(
        "rntk.stem", lambda p: Path(str(p)).stem if p else "file", replace=True
    )


def missing_descriptions(schema: type) -> list[str]:
    """Fields of ``schema`` (and of the configs nested in it) without a description."""
    out = []
    for f in fields(schema):
        if not description(f):
            out.append(f"{schema.__name__}.{f.name}")
        default = f.default_factory() if callable(f.default_factory) else f.default
        if is_dataclass(default):
            out += missing_descriptions(type(default))
    return out
