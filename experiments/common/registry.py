"""The experiment registry: each experiment package registers itself here, and what every
experiment shares (``--help``, find-or-run sweeps) reads the registry, so ``common`` never
imports the experiments built on it.

An experiment's ``schema.py`` ends with::

    register_experiment(Experiment(
        name="convergence",                       # conf/convergence.yaml, <name>_schema
        title="Empirical vs analytic NTK/NNGP of finite RNNs, one width",
        schema=ConvergenceConfig,                 # fields declared with schema.opt(...)
        groups=("arch", "data", "experiment"),
        run=run_one, folder=folder,               # optional: figures find or run it
    ))

Registering stores the schema in Hydra's ConfigStore as ``<name>_schema`` (the first entry
of the YAML's defaults list) and the resolvers the YAML files use (``${rntk.help:NAME}``,
``${rntk.stem:PATH}``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_REGISTRY: dict[str, Experiment] = {}


@dataclass(frozen=True)
class Experiment:
    """One experiment, as the shared machinery sees it.

    Attributes:
        name: its config name (``conf/<name>.yaml``) and schema node ``<name>_schema``.
        title: one line for ``--help``.
        schema: the structured config (None for an app without one, e.g. the figures).
        groups: the config groups its YAML composes (listed by ``--help``).
        command: how it is started (default ``python -m experiments.<name>``).
        sweeps: it has a default ``-m`` width sweep (shown in the usage line).
        options: ``{key: description}`` of an app without a schema.
        appendix: extra ``--help`` lines (e.g. the list of figures).
        run: ``run(settings, run_dir, outputs_root) -> record`` runs one configuration into a
            folder (or returns its finished record): figures find or run it through
            :mod:`experiments.common.sweeps`.
        folder: ``folder(settings) -> relative path`` of that configuration's run folder
            under the outputs root (the folder the command line uses).
        check: ``check(settings)`` raises ValueError for settings the schema accepts but the
            run would reject (checked for every value of a sweep before its first job).
    """

    name: str
    title: str
    schema: type | None = None
    groups: tuple[str, ...] = ()
    command: str = ""
    sweeps: bool = False
    options: dict[str, str] = field(default_factory=dict)
    appendix: Callable[[], list[str]] | None = None
    run: Callable[[Any, Path, Path], dict] | None = None
    folder: Callable[[Any], str] | None = None
    check: Callable[[Any], Any] | None = None

    @property
    def usage(self) -> str:
        return self.command or f"python -m experiments.{self.name}"


def register_experiment(exp: Experiment) -> Experiment:
    """Add (or replace, when a module is imported again) an experiment; store its schema
    in Hydra's ConfigStore and the resolvers its YAML uses. Returns ``exp``."""
    from hydra.core.config_store import ConfigStore

    from experiments.common.help import register_resolvers

    register_resolvers()
    if exp.schema is not None:
        ConfigStore.instance().store(name=f"{exp.name}_schema", node=exp.schema)
    _REGISTRY[exp.name] = exp
    return exp


def experiment(name: str) -> Experiment:
    """The registered experiment ``name`` (KeyError naming the registered ones)."""
    if name not in _REGISTRY:
        raise KeyError(
            f"no experiment {name!r} is registered (registered: {', '.join(sorted(_REGISTRY))}); "
            "import its package first"
        )
    return _REGISTRY[name]


def experiment_of(settings: Any) -> Experiment:
    """The registered experiment whose schema ``settings`` is an instance of."""
    for exp in _REGISTRY.values():
        if exp.schema is not None and isinstance(settings, exp.schema):
            return exp
    raise KeyError(f"no registered experiment has the schema {type(settings).__name__}")


def registered() -> dict[str, Experiment]:
    """Every registered experiment, by name."""
    return dict(_REGISTRY)
