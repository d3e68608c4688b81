"""What every Hydra entry point shares: turning a composed config into its validated schema
object, and the one-line ``error: ...`` exit for bad input."""

from __future__ import annotations

import dataclasses
import difflib
import sys
from pathlib import Path
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

S = TypeVar("S")

# The Hydra config folder, absolute: the entry points live in packages, where Hydra would
# otherwise resolve a relative config_path as a python package (pkg://).
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def settings_from(cfg: DictConfig, schema: type[S], config_file: str) -> S:
    """The validated ``schema`` instance of a composed config (ValueError if invalid).

    ``OmegaConf.to_object`` runs the dataclass's ``__post_init__`` checks; their ValueError
    (wrapped by OmegaConf) is surfaced with its own message.
    """
    unknown = _unknown_keys(cfg, OmegaConf.structured(schema))
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r}: the schema of {config_file} has no such key"
            f"{nearest_hint(unknown[0], schema_keys(schema))} (--help lists the options)"
        )
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        cause = err.__cause__ if isinstance(err.__cause__, ValueError) else None
        msg = str(cause) if cause is not None else str(err).splitlines()[0]
        raise ValueError(msg) from err
    if not isinstance(obj, schema):
        raise ValueError(f"the config is not a {schema.__name__} ({config_file})")
    return obj


def schema_keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted option of a schema dataclass (nested configs included)."""
    out = []
    for f in dataclasses.fields(schema):
        default = f.default_factory() if callable(f.default_factory) else f.default
        if dataclasses.is_dataclass(default):
            out += schema_keys(type(default), f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def nearest_hint(word: str, choices: list[str], what: str = "") -> str:
    """``"; did you mean 'x'?"`` with the choice closest to ``word`` (difflib), or ""."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close and "." in word:  # the leaf alone: arch.sigmaw -> arch.sigma_w
        head, leaf = word.rsplit(".", 1)
        leaves = [c.rsplit(".", 1)[1] for c in choices if c.startswith(head + ".")]
        close = [f"{head}.{m}" for m in difflib.get_close_matches(leaf, leaves, n=1, cutoff=0.6)]
    return f"; did you mean {what}{close[0]!r}?" if close else ""


def fail(message: str, code: int) -> None:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _unknown_keys(cfg: DictConfig, schema: DictConfig, prefix: str = "") -> list[str]:
    """Dotted keys of ``cfg`` that ``schema`` does not declare (Hydra's ``+key=`` appends
    them even to structured configs, where they would be ignored silently)."""
    out = []
    for key in cfg.keys():
        if not prefix and key == "hydra":
            continue
        if key not in schema:
            out.append(f"{prefix}{key}")
            continue
        sub, ref = cfg._get_node(key), schema._get_node(key)
        if isinstance(sub, DictConfig) and isinstance(ref, DictConfig):
            out += _unknown_keys(sub, ref, f"{prefix}{key}.")
    return out
