"""Input sequences for experiments: seeded synthetic data and a loader for user files.

Every function returns a validated, left-padded :class:`~rntk_empirical.sequences.Sequences`
in float64 on the CPU (move it with ``.to(device, dtype)``).

Synthetic data: entries i.i.d. N(0, 1), so that K^0(t, t) = <x_t, x_t>/m is about 1.

User files (``.npz``, ``.npy`` or ``.pt``) hold N sequences of m features in one of the forms

* a ``(N, T, m)`` array (``.npy``; ``.npz`` key ``x``; ``.pt`` a tensor or ``{"x": ...}``);
* a packed ragged batch: ``x`` of shape ``(T_1 + ... + T_N, m)`` and ``lengths`` ``(N,)``
  (``.npz`` keys or a ``.pt`` dict), see :func:`save_sequences`;
* ``.npz`` keys ``x_0, x_1, ...`` (one ``(T_i, m)`` array each) or a ``.pt`` list of
  ``(T_i, m)`` tensors.

Files are read through :mod:`rntk_empirical.safe_io` (no pickle: a pickled object is refused,
never run) and checked before
any work starts: the layout and shape, finite values and a sane range (|x| <= ``max_abs``,
1e6 by default). Every problem is one :class:`ValueError` line naming the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from rntk_empirical.safe_io import UnreadableFile, load_npy, load_npz, load_torch
from rntk_empirical.sequences import Sequences, as_sequences

DEFAULT_MAX_ABS = 1e6
FILE_FORMATS = (
    "a (N, T, m) array under key 'x'; a packed (sum T_i, m) array 'x' with 'lengths' (N,); "
    "or keys x_0, x_1, ... with one (T_i, m) array each"
)


def _check_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"data.{name}={value!r} is not valid; expected an integer >= {minimum}")
    return int(value)


def random_sequences(n: int, T: int, m: int, seed: int = 0) -> Sequences:
    """``n`` sequences of length ``T`` with i.i.d. N(0, 1) entries in R^m (seeded)."""
    n, T, m = _check_int("n", n), _check_int("T", T), _check_int("m", m)
    g = torch.Generator().manual_seed(int(seed))
    return as_sequences(torch.randn(n, T, m, generator=g, dtype=torch.float64))


def mixed_length_sequences(n: int, min_len: int, max_len: int, m: int, seed: int = 0) -> Sequences:
    """``n`` sequences of lengths drawn uniformly from ``[min_len, max_len]``, N(0, 1) entries.

    The lengths are drawn first, then the values, from one generator seeded by ``seed``.
    """
    n, m = _check_int("n", n), _check_int("m", m)
    lo, hi = _check_int("min_len", min_len), _check_int("max_len", max_len)
    if hi < lo:
        raise ValueError(f"data.max_len={hi} is smaller than data.min_len={lo}")
    g = torch.Generator().manual_seed(int(seed))
    lengths = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    return as_sequences([torch.randn(L, m, generator=g, dtype=torch.float64) for L in lengths])


def _unpack(x, lengths, where: str) -> list[torch.Tensor]:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    lengths = torch.as_tensor(
        np.asarray(lengths) if not isinstance(lengths, torch.Tensor) else lengths
    )
    if x.dim() != 2 or lengths.dim() != 1:
        raise ValueError(
            f"{where}: a packed batch needs 'x' of shape (sum T_i, m) and 'lengths' of shape "
            f"(N,), got {tuple(x.shape)} and {tuple(lengths.shape)}"
        )
    if lengths.is_floating_point() or (lengths < 1).any() or int(lengths.sum()) != x.shape[0]:
        raise ValueError(
            f"{where}: 'lengths' must be integers >= 1 summing to x.shape[0] = {x.shape[0]}"
        )
    return list(torch.split(x, lengths.tolist()))


def _from_mapping(d, where: str):
    keys = set(d.keys())
    if "x" in keys and "lengths" in keys:
        return _unpack(d["x"], d["lengths"], where)
    if "x" in keys:
        return d["x"]
    numbered = sorted((int(m.group(1)), k) for k in keys if (m := re.fullmatch(r"x_(\d+)", str(k))))
    if numbered:
        if [i for i, _ in numbered] != list(range(len(numbered))):
            raise ValueError(f"{where}: keys x_0, x_1, ... must be numbered without gaps")
        return [d[k] for _, k in numbered]
    raise ValueError(f"{where} has keys {sorted(map(str, keys))}; expected {FILE_FORMATS}")


def _check_values(raw, where: str, max_abs: float) -> None:
    """Finite entries with |x| <= max_abs in every array of ``raw`` (one or a list)."""
    items = raw if isinstance(raw, (list, tuple)) else [raw]
    for item in items:
        if isinstance(item, np.ndarray) and item.dtype == object:
            raise ValueError(f"{where} holds Python objects, not numbers")
        arr = item if isinstance(item, torch.Tensor) else None
        if arr is None:
            try:
                arr = torch.as_tensor(np.asarray(item))
            except (TypeError, ValueError, RuntimeError):
                continue  # as_sequences reports the layout
        if arr.dtype == torch.bool or arr.is_complex() or arr.numel() == 0:
            continue
        arr = arr.detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(arr).all()):
            bad = int((~torch.isfinite(arr)).sum())
            raise ValueError(f"{where} has {bad} entries that are not finite (NaN or Inf)")
        big = float(arr.abs().max())
        if big > max_abs:
            raise ValueError(
                f"{where} has entries out of range (|x| up to {big:.3g} > {max_abs:g}); "
                "rescale the data or pass a larger max_abs"
            )


def load_sequences(
    path: str | os.PathLike, n: int | None = None, max_abs: float = DEFAULT_MAX_ABS
) -> Sequences:
    """Read sequences from a ``.npz``, ``.npy`` or ``.pt`` file (formats: module docstring).

    Args:
        path: the file.
        n: keep only the first ``n`` sequences (None: all).
        max_abs: the largest |x| accepted (larger entries mean a wrong file or a unit error).

    Raises:
        ValueError: the file is missing, unreadable, holds pickled objects, of an unknown type
            or malformed, or has NaN/Inf or out-of-range entries (one line that names the file
            and the problem).
    """
    if path is None or str(path).strip() == "":
        raise ValueError("data.path is not set; pass data.path=/path/to/sequences.npz")
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"data file {str(p)!r} does not exist")
    where = f"data file {str(p)!r}"
    suffix = p.suffix.lower()
    try:
        if suffix == ".npz":
            raw = _from_mapping(load_npz(p), where)
        elif suffix == ".npy":
            raw = load_npy(p)
        elif suffix == ".pt":
            obj = load_torch(p)
            raw = _from_mapping(obj, where) if isinstance(obj, dict) else obj
        else:
            raise ValueError(f"{where} has an unknown type {suffix!r}; use .npz, .npy or .pt")
        _check_values(raw, where, max_abs)
        if isinstance(raw, (list, tuple)):
            raw = [torch.as_tensor(np.asarray(r)) if isinstance(r, np.ndarray) else r for r in raw]
        seqs = as_sequences(raw, dtype=torch.float64, name=where)
    except UnreadableFile as err:
        raise ValueError(f"{where} could not be read: {str(err).removeprefix(f'{p}: ')}") from None
    except ValueError as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(msg if where in msg else f"{where}: {msg}") from None
    except TypeError as err:
        raise ValueError(f"{where} is malformed ({err}); expected {FILE_FORMATS}") from None
    except (OSError, EOFError, RuntimeError, KeyError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"{where} could not be read ({type(err).__name__}: {msg})") from None
    if n is not None:
        n = _check_int("n", n)
        if n > seqs.n:
            raise ValueError(f"data.n={n} but {where} holds only {seqs.n} sequences")
        seqs = seqs.select(slice(0, n))
        T = int(seqs.lengths.max())
        seqs = Sequences(seqs.values[:, seqs.max_len - T :], seqs.lengths)
    return seqs


def save_sequences(path: str | os.PathLike, seqs) -> Path:
    """Write sequences to ``path`` (``.npz``) in the packed form ``x``, ``lengths``.

    ``seqs`` is anything :func:`~rntk_empirical.sequences.as_sequences` accepts.
    """
    from rntk_empirical.atomic import atomic_save_npz

    s = as_sequences(seqs, dtype=torch.float64, device="cpu")
    T = s.max_len
    parts = [s.values[i, T - int(L) :] for i, L in enumerate(s.lengths)]
    return atomic_save_npz(path, x=torch.cat(parts).numpy(), lengths=s.lengths.numpy())
