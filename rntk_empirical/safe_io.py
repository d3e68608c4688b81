"""Reading back every file the project wrote or a user gave: tensors, arrays and JSON only.

This is the one module that opens checkpoints, cached kernels, per-seed arrays, residuals,
records and user data files. Nothing here unpickles an arbitrary object:

* ``.pt`` files go through ``torch.load(weights_only=True, map_location="cpu")`` (tensors and
  plain containers; a pickled object is refused, never run; a file written on CUDA loads on
  any machine);
* ``.npz`` / ``.npy`` files through ``np.load(allow_pickle=False)`` (object arrays refused),
  every array read into memory before the archive is closed;
* JSON through :func:`json.load` (which never runs code).

Every failure is one :class:`UnreadableFile` line naming the file and the reason. An
experiment that finds a damaged, hostile or stale file where it resumes calls
:func:`reuse`: the file is ignored with a one-line :class:`ReadBackWarning` and that piece
is recomputed (or, when the caller asks for strictness, the error is raised).
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


class UnreadableFile(ValueError):
    """A file that cannot be read back safely or is not what the reader expects (one line:
    the file and the reason)."""


class ReadBackWarning(UserWarning):
    """A file was ignored and its piece is recomputed; the message says why, in one line."""


def _one_line(text: str) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def unpickle_failure(err: BaseException) -> str:
    """One line saying why a ``torch.load(weights_only=True)`` / ``np.load(allow_pickle=False)``
    of a file failed: a refused pickled object (named) or an unreadable file."""
    msg = str(err)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", msg) or re.search(
        r"unsupported GLOBAL (\S+)", msg
    )
    if found:
        return f"refused to unpickle it (it holds the pickled object {found.group(1)!r})"
    if isinstance(err, ValueError) and "Object arrays" in msg and "allow_pickle" in msg:
        return "refused to unpickle it (it holds pickled Python objects)"
    if isinstance(err, ValueError) and "allow_pickle" in msg:
        return "refused to unpickle it (not an array file: numpy would read it as a pickle)"
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", msg, flags=re.S)
    detail = _one_line(found.group(1) if found else msg)
    return f"unreadable ({type(err).__name__}: {detail})" if detail else "unreadable"


def load_torch(path: str | os.PathLike) -> Any:
    """The tensors / plain containers in a ``.pt`` file, on the CPU.

    Raises:
        UnreadableFile: missing, damaged, or holding a pickled object (never run).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure of a damaged or hostile file
        raise UnreadableFile(f"{path}: {unpickle_failure(err)}") from None


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` archive, read into memory (object arrays refused).

    Raises:
        UnreadableFile: missing, not a zip archive, truncated, or holding pickled objects.
    """
    try:
        if not zipfile.is_zipfile(path):
            raise OSError("not a .npz (zip) archive")
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except Exception as err:  # noqa: BLE001 - any failure of a damaged or hostile file
        raise UnreadableFile(f"{path}: {unpickle_failure(err)}") from None
    bad = [k for k, v in out.items() if not isinstance(v, np.ndarray)]
    if bad:  # a zip member that is not a .npy array comes back as raw bytes
        raise UnreadableFile(f"{path}: not an archive of arrays (member {bad[0]!r})")
    return out


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """The array of a ``.npy`` file (object arrays refused).

    Raises:
        UnreadableFile: missing, damaged, or holding pickled objects.
    """
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any failure of a damaged or hostile file
        raise UnreadableFile(f"{path}: {unpickle_failure(err)}") from None
    if not isinstance(arr, np.ndarray):
        raise UnreadableFile(f"{path}: not a .npy array file")
    return arr


def load_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``.

    Raises:
        UnreadableFile: missing, not UTF-8 or not valid JSON.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as err:
        why = f"unreadable ({type(err).__name__}: {_one_line(err)})"
        raise UnreadableFile(f"{path}: {why}") from None


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object in ``path``, or None if it is missing or not a valid JSON object."""
    try:
        obj = load_json(path)
    except UnreadableFile:
        return None
    return obj if isinstance(obj, dict) else None


def written_by(config_hash: str, keys: tuple[str, ...] = ()) -> Callable[[Any], str | None]:
    """A :func:`reuse` check for a JSON state file: a dict whose ``"config_hash"`` is
    ``config_hash`` and that holds every key of ``keys``."""

    def check(obj: Any) -> str | None:
        if not isinstance(obj, dict) or obj.get("config_hash") != config_hash:
            return "written by another configuration"
        missing = [k for k in keys if k not in obj]
        return f"incomplete (no {missing[0]!r})" if missing else None

    return check


def reuse(
    path: str | os.PathLike,
    load: Callable[[Path], T],
    check: Callable[[T], str | None] | None = None,
    strict: bool = False,
) -> T | None:
    """What an interrupted run left at ``path``, when it can be used; else None.

    Missing: None, silently (the piece was never computed). Present but unreadable, hostile
    (a pickled object) or refused by ``check`` (which returns a one-line reason, e.g. "written
    by another configuration", or None to accept): a one-line :class:`ReadBackWarning`
    ``"<path>: <reason>; recomputing it"`` and None, so the caller recomputes that piece and
    overwrites the file; with ``strict`` an :class:`UnreadableFile` is raised instead.

    Args:
        path: the file.
        load: one of :func:`load_torch`, :func:`load_npz`, :func:`load_npy`, :func:`load_json`.
        check: validates what was read.
        strict: raise instead of warning.
    """
    p = Path(path)
    if not p.exists():
        return None
    try:
        obj = load(p)
        why = None if check is None else check(obj)
    except UnreadableFile as err:
        obj, why = None, str(err).removeprefix(f"{p}: ")
    if why is None:
        return obj
    if strict:
        raise UnreadableFile(f"{p}: {why}")
    warnings.warn(f"{p}: {why}; recomputing it", ReadBackWarning, stacklevel=2)
    return None
