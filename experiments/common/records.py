"""Experiment records: atomic writes, "already finished" detection, config hashes, versions.

A run folder is *finished* when it holds ``record.json`` with ``"status": "finished"``. The
record is always the last file a run writes, and every file is written atomically
(:mod:`rntk_empirical.atomic`), so a run
that dies at any point leaves either no record or a complete one: re-running the same
command recomputes exactly the unfinished runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from rntk_empirical.atomic import (  # noqa: F401 - re-exported for the experiments
    atomic_open,
    atomic_save_npz,
    atomic_torch_save,
    atomic_write_json,
    jsonable,
)
from rntk_empirical.safe_io import load_json, read_json, reuse  # read_json: re-exported

RECORD_NAME = "record.json"
SCHEMA_VERSION = 1
FINISHED = "finished"


def _json_object(obj: Any) -> str | None:
    return None if isinstance(obj, dict) else "not a JSON object"


def finished_record(run_dir: str | os.PathLike, config_hash: str | None = None) -> dict | None:
    """The finished record in ``run_dir``, else None.

    Args:
        config_hash: if given, a finished record of a *different* configuration raises
            ``FileExistsError`` (the folder belongs to another experiment), so that a
            re-run never silently reuses or overwrites results it does not own.
    """
    rec = reuse(Path(run_dir) / RECORD_NAME, load_json, _json_object)  # damaged: warned
    if rec is None or rec.get("status") != FINISHED:
        return None
    if config_hash is not None and config_hash not in (rec.get("config_hash"), record_hash(rec)):
        raise FileExistsError(
            f"{Path(run_dir) / RECORD_NAME} holds a finished run of another configuration "
            f"(config hash {record_hash(rec)} != {config_hash}); choose another output "
            "folder (hydra.run.dir / hydra.sweep.dir) or pass force=true to overwrite it"
        )
    return rec


def find_records(root: str | os.PathLike) -> list[tuple[Path, dict]]:
    """Every finished record under ``root`` (recursively), as ``(path, record)``, sorted."""
    root = Path(root)
    if root.is_file():
        candidates = [root]
    else:
        candidates = sorted(root.rglob(RECORD_NAME))
    out = []
    for p in candidates:
        rec = read_json(p)
        if rec is not None and rec.get("status") == FINISHED:
            out.append((p, rec))
    return out


def writable_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` as a folder this process can write into (created if missing, probed with a
    temporary file), so a run or report fails before its work, not after it.

    Raises ValueError, one line naming ``what`` and the path, if ``path`` (or a folder above
    it) is a file, cannot be created, or cannot be written (permissions, read-only file
    system)."""
    import tempfile

    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == path else f"lies under the file {p}"
                raise ValueError(f"{what} {path} {where}, not a folder; choose another path")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(
            f"{what} {path} cannot be written ({err.strerror or err}); choose another path"
        ) from None
    return path


def config_hash(obj: Any, length: int = 16) -> str:
    """A stable hex digest of a JSON-able object (dict key order does not matter)."""
    text = json.dumps(jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# Keys of a run identity that only label it (folder names, legends): they never enter its hash.
LABEL_KEYS = frozenset({"name", "arch_name", "data_name"})


def measured(identity: Any) -> Any:
    """``identity`` without its labels (:data:`LABEL_KEYS`, at any depth): what a run measures."""
    if isinstance(identity, dict):
        return {k: measured(v) for k, v in identity.items() if k not in LABEL_KEYS}
    return identity


def identity_hash(identity: dict[str, Any], length: int = 16) -> str:
    """The hash that names a run's results: of its configuration, not of its labels, so a
    figure or a re-run finds a finished run whatever the run was called."""
    return config_hash(measured(identity), length)


def record_hash(record: dict) -> str | None:
    """A finished record's :func:`identity_hash` (recomputed from its identity, so records of
    the previous version, whose stored hash included the labels, are found too)."""
    ident = record.get("identity")
    if not isinstance(ident, dict):
        return record.get("config_hash")
    if ident.get("device") == "auto":  # older records: the device 'auto' resolved to
        dev = record.get("device")
        dev = dev.get("resolved") if isinstance(dev, dict) else dev
        ident = {**ident, "device": str(dev).split(":")[0]}
    return identity_hash(ident)


def array_hash(*arrays: Any, length: int = 16) -> str:
    """A digest of arrays' float64 contents and shapes (e.g. a data set's fingerprint)."""
    h = hashlib.sha256()
    for a in arrays:
        arr = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
        h.update(np.asarray(arr.shape, dtype=np.int64).tobytes())
        h.update(arr.tobytes())
    return h.hexdigest()[:length]


def library_versions() -> dict[str, str]:
    """Versions of Python, the platform and the libraries that produce a record."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("rntk_empirical", "torch", "numpy", "scipy", "hydra-core", "omegaconf"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        import torch

        out["cuda"] = str(torch.version.cuda)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return out


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
