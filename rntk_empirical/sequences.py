"""Batches of sequences of possibly different lengths, validated and left-padded.

Every public function that takes inputs accepts either a ``(N, T, m)`` tensor (all of length
T) or a list of ``(T_i, m)`` tensors / arrays. :func:`as_sequences` turns both into a
:class:`Sequences`: a left-padded ``(N, T_max, m)`` tensor with a validity mask. Left
padding aligns the sequences at their *ends*, which is exactly the alignment the
last-step RNTK recursion needs (SPEC section 3), and the finite network holds its initial
state through the padded steps, so a sequence's output never depends on its padding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Sequences:
    """A validated batch of sequences.

    Attributes:
        values: ``(N, T_max, m)``; sequence i occupies the last ``lengths[i]`` steps, zeros
            before (left padding).
        lengths: ``(N,)`` int64 lengths T_i >= 1.
    Property ``keys``: one 63-bit content hash per sequence (its valid values as float64 and
    its shape), computed on first use; equal sequences have equal keys. Used to derive
    ``per_input`` initial states and the x = x' test of the analytic kernel.
    """

    values: torch.Tensor
    lengths: torch.Tensor

    @property
    def keys(self) -> tuple[int, ...]:
        """Content keys, one per sequence: the first 8 bytes of blake2b over the sequence's
        float64 values (its ``(T_i, m)`` rows, C order) then its shape as int64, little-endian,
        shifted right by one bit. Equal sequences get equal keys wherever they appear; computed
        on first use (only ``h0="per_input"`` needs them)."""
        cached = self.__dict__.get("_keys")
        if cached is None:
            vals = self.values.detach().to("cpu", torch.float64)
            T = self.max_len
            cached = tuple(
                _content_key(vals[i, T - int(L) :].numpy()) for i, L in enumerate(self.lengths)
            )
            object.__setattr__(self, "_keys", cached)
        return cached

    @property
    def n(self) -> int:
        return self.values.shape[0]

    @property
    def max_len(self) -> int:
        return self.values.shape[1]

    @property
    def dim(self) -> int:
        return self.values.shape[2]

    @property
    def mask(self) -> torch.Tensor:
        """``(N, T_max)`` bool, True at valid (non-padding) steps."""
        T = self.max_len
        pos = torch.arange(T, device=self.values.device)
        return pos[None, :] >= (T - self.lengths.to(self.values.device))[:, None]

    @property
    def equal_lengths(self) -> bool:
        return bool((self.lengths == self.max_len).all())

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        return Sequences(self.values.to(device=device, dtype=dtype), self.lengths)

    def padded_to(self, T: int) -> Sequences:
        """Left-pad to a larger common length ``T`` (no-op if already ``T``)."""
        if T < self.max_len:
            raise ValueError(f"cannot pad sequences of length {self.max_len} down to {T}")
        if T == self.max_len:
            return self
        pad = self.values.new_zeros(self.n, T - self.max_len, self.dim)
        return Sequences(torch.cat([pad, self.values], dim=1), self.lengths)

    def reversed(self) -> Sequences:
        """Each sequence reversed in time (its valid part), still left-padded."""
        T = self.max_len
        dev = self.values.device
        p = torch.arange(T, device=dev)[None, :]
        start = (T - self.lengths.to(dev))[:, None]
        src = torch.where(p >= start, start + (T - 1 - p), p)  # mirror the valid part
        vals = torch.gather(self.values, 1, src[:, :, None].expand(-1, -1, self.dim))
        vals = vals * self.mask[:, :, None].to(vals.dtype)
        return Sequences(vals, self.lengths)

    def select(self, idx: slice | torch.Tensor) -> Sequences:
        """A sub-batch (rows ``idx``), keeping the common padded length."""
        return Sequences(self.values[idx], self.lengths[idx])


def _content_key(seq: np.ndarray) -> int:
    arr = np.ascontiguousarray(seq, dtype=np.float64)
    h = hashlib.blake2b(arr.tobytes(), digest_size=8)
    h.update(np.asarray(arr.shape, dtype=np.int64).tobytes())
    return int.from_bytes(h.digest(), "little") >> 1


def _to_tensor(x, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.is_meta:
            raise ValueError(
                f"{what} is a meta tensor (a shape without data); pass real values on cpu or cuda"
            )
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise ValueError(
                f"{what} is a numpy array of dtype object (ragged sequences?); pass a list of "
                "(T_i, m) arrays or a numeric (N, T, m) array"
            )
        return torch.from_numpy(x)
    raise TypeError(
        f"{what} must be a torch.Tensor or numpy array, got {type(x).__name__}; inputs are a "
        "(N, T, m) tensor or a list of (T_i, m) tensors"
    )


def as_sequences(
    x,
    *,
    input_dim: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    name: str = "x",
) -> Sequences:
    """Validate ``x`` and return it as a left-padded :class:`Sequences`.

    Args:
        x: ``(N, T, m)`` tensor/array, a list of ``(T_i, m)`` tensors/arrays, or a
            :class:`Sequences` (converted to ``dtype``/``device`` only).
        input_dim: the feature size m that is required (e.g. the network's), if known.
        dtype, device: of the returned values (default: the input's / float64 for ints).
        name: how to call the argument in error messages.

    Raises:
        TypeError: for the wrong container type.
        ValueError: wrong rank, empty batch or empty sequence, mismatched feature sizes,
            NaN or Inf values.
    """
    if isinstance(x, Sequences):
        seqs = x
    elif isinstance(x, (torch.Tensor, np.ndarray)):
        t = _to_tensor(x, name)
        if t.dim() != 3:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)}; expected a (N, T, m) tensor "
                "(or a list of (T_i, m) tensors)"
            )
        seqs = _from_tensor(t, name)
    elif isinstance(x, SequenceABC) and not isinstance(x, (str, bytes)):
        seqs = _from_list([_to_tensor(s, f"{name}[{i}]") for i, s in enumerate(x)], name)
    else:
        raise TypeError(
            f"{name} must be a (N, T, m) tensor or a list of (T_i, m) tensors, "
            f"got {type(x).__name__}"
        )
    if input_dim is not None and seqs.dim != input_dim:
        raise ValueError(
            f"{name} has feature size m = {seqs.dim}, but {input_dim} is required "
            "(the network's / other argument's input dimension)"
        )
    if dtype is not None or device is not None:
        seqs = seqs.to(device=device, dtype=dtype)
    return seqs


def _from_tensor(t: torch.Tensor, name: str) -> Sequences:
    """A ``(N, T, m)`` tensor as sequences of equal length, on its own device: no split into
    rows, no host copy, one on-device finiteness check (one sync)."""
    N, T, m = t.shape
    if N == 0:
        raise ValueError(f"{name} is an empty batch (N = 0); pass at least one sequence")
    if T == 0:
        raise ValueError(f"{name}[0] is an empty sequence (T = 0); lengths must be >= 1")
    if m == 0:
        raise ValueError(f"{name}[0] has feature size m = 0; m must be >= 1")
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name}[0] has dtype {t.dtype}; expected real numbers")
    vals = t.detach().contiguous()
    if not vals.is_floating_point():
        vals = vals.to(torch.float64)
    # 0 * x is 0 for finite x and NaN for NaN/Inf, and a sum of zeros cannot overflow: one
    # exact pass (twice as fast as isfinite().all() on the CPU), one sync
    if not bool(torch.isfinite(vals.mul(0).sum())):
        i = int((~torch.isfinite(vals).all(dim=(1, 2))).nonzero()[0, 0])
        raise ValueError(f"{name}[{i}] contains NaN or Inf; inputs must be finite")
    return Sequences(vals, torch.full((N,), T, dtype=torch.int64))


def _from_list(items: list[torch.Tensor], name: str) -> Sequences:
    if len(items) == 0:
        raise ValueError(f"{name} is an empty batch (N = 0); pass at least one sequence")
    dims = set()
    for i, s in enumerate(items):
        if s.dim() != 2:
            raise ValueError(
                f"{name}[{i}] has shape {tuple(s.shape)}; each sequence must be (T_i, m)"
            )
        if s.shape[0] == 0:
            raise ValueError(f"{name}[{i}] is an empty sequence (T = 0); lengths must be >= 1")
        if s.shape[1] == 0:
            raise ValueError(f"{name}[{i}] has feature size m = 0; m must be >= 1")
        if s.is_complex() or s.dtype == torch.bool:
            raise TypeError(f"{name}[{i}] has dtype {s.dtype}; expected real numbers")
        dims.add(int(s.shape[1]))
    if len(dims) > 1:
        raise ValueError(f"{name} mixes feature sizes {sorted(dims)}; all sequences need one m")
    dtype = items[0].dtype if items[0].is_floating_point() else torch.float64
    device = items[0].device
    cpu = [s.detach().to("cpu", torch.float64) for s in items]
    for i, s in enumerate(cpu):
        if not torch.isfinite(s).all():
            raise ValueError(f"{name}[{i}] contains NaN or Inf; inputs must be finite")
    lengths = torch.tensor([s.shape[0] for s in cpu], dtype=torch.int64)
    T, m = int(lengths.max()), dims.pop()
    vals = torch.zeros(len(cpu), T, m, dtype=torch.float64)
    for i, s in enumerate(cpu):
        vals[i, T - s.shape[0] :] = s
    return Sequences(vals.to(device=device, dtype=dtype), lengths)
