"""The pieces every experiment's structured config (Hydra / OmegaConf) is built from.

Each experiment declares its own schema (a dataclass) in its package and registers it with
:func:`experiments.common.registry.register_experiment`; this module holds what they share:
the choice enums, :class:`ArchConfig` (generated from the library's
:class:`~rntk_empirical.architecture.Architecture`) and :func:`opt`, which declares a field
together with its one-line description (``--help`` reads it from the field's metadata).

The YAML files under ``conf/`` fill the schemas: an unknown key or a value of the wrong type
(e.g. ``width=abc``, ``device=gpu``) is rejected by Hydra when the config is composed, and
the dataclasses' ``__post_init__`` checks the ranges before any work starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from dataclasses import MISSING, Field, field, fields, make_dataclass
from enum import Enum
from typing import Any, Optional

from rntk_empirical.architecture import Architecture
from rntk_empirical.nonlinearities import resolve_nonlinearity

HELP = "help"  # the metadata key of a field's one-line description


class DeviceChoice(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class BackendChoice(Enum):
    """Kernel-bank backend (:func:`rntk_empirical.analytic.analytic_kernel_bank`)."""

    auto = "auto"
    numba = "numba"
    torch = "torch"


class DTypeChoice(Enum):
    float64 = "float64"
    float32 = "float32"


def opt(default: Any = MISSING, help: str = "", *, factory: Any = MISSING) -> Any:
    """A dataclass field with its ``--help`` description: ``width: int = opt(256, "hidden
    width n")``; ``factory`` for mutable defaults (lists, nested configs)."""
    if factory is not MISSING:
        return field(default_factory=factory, metadata={HELP: help})
    return field(default=default, metadata={HELP: help})


def description(f: Field) -> str:
    """A schema field's one-line description ("" if it has none)."""
    return str(f.metadata.get(HELP, ""))


def _attribute_docs(cls: type) -> dict[str, str]:
    """``name: text`` entries of the ``Attributes:`` section of a class docstring (an entry
    ``a, b: text`` describes both), reST markup removed: the library documents each
    :class:`Architecture` field once, and the command line shows that text."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    if "Attributes:" not in doc:
        return {}
    section = doc.split("Attributes:", 1)[1]
    out: dict[str, str] = {}
    names: list[str] = []
    for line in section.splitlines()[1:]:
        if not line.strip():
            break
        m = re.match(r"    ([\w, ]+):\s*(.*)", line)
        if m and not line.startswith(" " * 5):
            names = [n.strip() for n in m.group(1).split(",")]
            for n in names:
                out[n] = m.group(2).strip()
        else:
            for n in names:
                out[n] += " " + line.strip()
    clean = {
        k: re.sub(r":\w+:`~?([^`]+)`", r"\1", v).replace("``", "").rstrip(".")
        for k, v in out.items()
    }
    return clean


def _cli_type(hint: Any) -> Any:
    """``X | None`` as ``typing.Optional[X]`` (the form OmegaConf reads)."""
    if isinstance(hint, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return Optional[args[0]]  # noqa: UP045 - OmegaConf needs typing.Optional
    return hint


def arch_config_for(arch_cls: type = Architecture) -> type:
    """:class:`ArchConfig` of an architecture dataclass: its fields (types, defaults, and
    descriptions from field metadata ``help`` or the ``Attributes:`` section of its
    docstring, so a new Architecture field reaches the command line and ``--help`` without
    editing this module) plus a ``name`` for folders and legends. Its ``__post_init__``
    builds the Architecture, whose checks raise ValueError naming the field and the allowed
    values."""
    hints = typing.get_type_hints(arch_cls)
    docs = _attribute_docs(arch_cls)
    specs = [
        (
            "name",
            str,
            opt("relu_last", "label for folders and legends (not part of a run's identity)"),
        )
    ]
    names = [f.name for f in fields(arch_cls)]
    for f in fields(arch_cls):
        text = f.metadata.get(HELP) or docs.get(f.name, "")
        if f.default is not MISSING:
            spec = field(default=f.default, metadata={HELP: text})
        else:
            spec = field(default_factory=f.default_factory, metadata={HELP: text})
        specs.append((f.name, _cli_type(hints[f.name]), spec))

    def to_architecture(self) -> Architecture:
        return arch_cls(**{name: getattr(self, name) for name in names})

    def post_init(self) -> None:
        if "nonlinearity" in names:  # module:function specs are imported and registered
            self.nonlinearity = resolve_nonlinearity(self.nonlinearity)
        self.to_architecture()

    cls = make_dataclass(
        "ArchConfig",
        specs,
        namespace={"to_architecture": to_architecture, "__post_init__": post_init},
    )
    cls.__module__ = __name__
    cls.__doc__ = arch_config_for.__doc__
    return cls


ArchConfig = arch_config_for(Architecture)


def resolved_device(choice: DeviceChoice) -> str:
    """The device type ``auto`` (or a name) resolves to on this machine: a run's identity
    holds it, so GPU runs never resume into CPU folders (ValueError if it is unavailable)."""
    from rntk_empirical.devices import resolve_device

    return resolve_device(choice.value).type


def apply_quick(cfg: Any, quick: dict[str, Any]) -> None:
    """``quick=true``: the values of ``quick`` replace the fields of the dataclass ``cfg``
    still at their defaults (what the user set stays)."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for k, v in quick.items():
        f = fields[k]
        default = f.default_factory() if callable(f.default_factory) else f.default
        if getattr(cfg, k) == default:
            setattr(cfg, k, list(v) if isinstance(v, list) else v)


def fields_identity(cfg: Any, execution_fields: tuple[str, ...]) -> dict[str, Any]:
    """What a run of the dataclass ``cfg`` (with an ``arch: ArchConfig`` field) measures,
    JSON-able: the architecture's identity and name, then every other field except
    ``execution_fields`` in declaration order (enums by value, lists as lists). Its hash
    names the results, so the key order is part of the contract."""
    out: dict[str, Any] = {"arch": cfg.arch.to_architecture().identity()}
    out["arch_name"] = cfg.arch.name
    for f in dataclasses.fields(cfg):
        if f.name in execution_fields or f.name == "arch":
            continue
        v = getattr(cfg, f.name)
        out[f.name] = v.value if hasattr(v, "value") else (list(v) if isinstance(v, list) else v)
    return out


def at_least(name: str, value: Any, minimum: int) -> None:
    """ValueError unless ``value`` is an integer >= ``minimum`` (booleans are not)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is not valid; expected an integer >= {minimum}")
