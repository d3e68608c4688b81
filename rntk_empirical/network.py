"""The finite Elman RNN of the SPEC (section 1), written as an explicit time loop.

The recurrent step is the architecture's cell (:mod:`rntk_empirical.cells`; ``elman`` below):
the network draws the parameters the cell declares and runs its layer; readouts, directions,
initial states and padding are the network's.

``nn.RNN`` is not used: torch.func cannot batch its fused kernels, and the structured NTK
needs per-step probes on the pre-activations. The function computed, for layer l, step t:

    g^{l,t} = a_w W^l h^{l,t-1} + a_u U^l h^{l-1,t} + a_b b^l,      h^{l,t} = phi(g^{l,t})

with (a_w, a_u, a_b, a_v) = (s_w/sqrt(n), s_u/sqrt(d_l), s_b, s_v/sqrt(n)) in the ``ntk``
parameterization (parameters are N(0, 1)) and all ones in ``standard`` (the multipliers are
folded into the parameters at initialization, so both compute the same function).

Readouts (k outputs = k independent rows of V), with the batch left-padded to T_max and the
per-step weights w(t) of :mod:`rntk_empirical.readouts`:

    shared (last, avg, ema, ...):   f = a_v V sum_t w(t) h^{L,t}
    independent (per_step, ...):    f = a_v sum_t w(t) V_{T-1-t} h^{L,t}  (V indexed from the end)

Everything random is drawn on the CPU from generators seeded by ``(seed, tensor name)``, so
the same seed gives the same network on every device and dtype.

``untied=True`` gives every step its own independent draw of every cell parameter (the
"untied" network of Tensor Programs: W^l_t, U^l_t, b^l_t, ...; the readout V stays shared),
computed by the same cell step (:meth:`rntk_empirical.cells.Cell.layer`, run one step at a
time with that step's parameters), so tied and untied networks differ only in the draws.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from rntk_empirical.architecture import Architecture
from rntk_empirical.cells import get_cell
from rntk_empirical.devices import resolve_device, resolve_dtype
from rntk_empirical.nonlinearities import get_nonlinearity
from rntk_empirical.readouts import get_readout
from rntk_empirical.sequences import Sequences, as_sequences


def _generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


# Host memory per drawn block of rows (float64): bounds the host peak of building a network.
DRAW_BLOCK_BYTES = 64 * 2**20


def _draw_rows(
    shape: tuple[int, ...],
    gen: torch.Generator,
    scale: float,
    dtype: torch.dtype,
    device: torch.device,
    block_bytes: int | None = None,
) -> torch.Tensor:
    """``torch.randn(*shape, generator=gen, dtype=float64) * scale`` as ``dtype`` on ``device``,
    drawn in blocks of rows on the CPU generator and copied into one preallocated tensor.

    Bit-identical to the one-shot draw: CPU ``normal_`` turns consecutive uniforms into normals
    in groups of 16 (and redraws the last 16 entries of a length that is not a multiple of 16),
    so blocks whose sizes are multiples of 16 consume the stream exactly as one call does
    (tested in tests/test_gpu_readiness.py). The host holds one block at a time; a float64 CPU
    target is drawn in place, with no copy at all. ``scale == 1`` skips the multiply.
    """
    block_bytes = DRAW_BLOCK_BYTES if block_bytes is None else block_bytes
    rows_total = shape[0] if shape else 1
    row_numel = math.prod(shape[1:])
    rows = max(16, (block_bytes // 8 // max(1, row_numel)) // 16 * 16)
    if rows_total * row_numel < 16 or rows >= rows_total:
        full = torch.randn(*shape, generator=gen, dtype=torch.float64)
        if scale != 1.0:
            full = full * scale
        return full.to(device=device, dtype=dtype)
    out = torch.empty(*shape, dtype=dtype, device=device)
    in_place = device.type == "cpu" and dtype == torch.float64
    buf = None if in_place else torch.empty(rows + 16, *shape[1:], dtype=torch.float64)
    r0 = 0
    while r0 < rows_total:
        r1 = min(rows_total, r0 + rows)
        if 0 < (rows_total - r1) * row_numel < 16:
            r1 = rows_total  # a last block under 16 entries would take another code path
        blk = out[r0:r1] if in_place else buf[: r1 - r0]
        blk.normal_(generator=gen)
        if scale != 1.0:
            blk.mul_(scale)
        if not in_place:
            out[r0:r1].copy_(blk)
        r0 = r1
    return out


def _haar_orthogonal(
    n: int,
    gen: torch.Generator,
    scales: tuple[float, ...],
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """The product of ``scales`` times a Haar-distributed n x n orthogonal matrix, as
    ``dtype`` on ``device``.

    The Gaussian is drawn in row blocks (as :func:`_draw_rows`) straight into float64 memory
    of the target device, and its QR (Householder ``geqrf`` + ``householder_product``, the
    steps of ``torch.linalg.qr``) runs there: O(n^3) on the GPU instead of the host, host
    memory one block. Q diag(sign(diag(R))) is Haar (Mezzadri 2007). On the CPU the result is
    the one of ``torch.linalg.qr`` on the same draw; on CUDA the draw is the same but the QR
    is cuSOLVER's, so CPU and GPU networks agree only to rounding for ``init=orthogonal``.
    """
    g = _draw_rows((n, n), gen, 1.0, torch.float64, device)
    a, tau = torch.geqrf(g)
    del g
    sign = torch.sign(torch.diagonal(a))
    sign = sign.where(sign != 0, 1.0)
    q = torch.linalg.householder_product(a, tau)
    del a, tau
    q.mul_(sign[None, :])
    for scale in scales:  # one multiply each, in the order of the former one-shot formula
        if scale != 1.0:
            q.mul_(scale)
    return q if dtype == torch.float64 else q.to(dtype)


@dataclass(frozen=True)
class Multipliers:
    """The constants a_w, a_u (one per layer), a_b, a_v outside the parameters."""

    w: float
    u: tuple[float, ...]
    b: float
    v: float


@dataclass
class ForwardRecord:
    """What one direction's forward pass exposes to the structured NTK.

    Attributes:
        w_inputs: per layer, ``(N, T, n)``: h^{l,t-1}, the input of W^l at step t.
        u_inputs: per layer, ``(N, T, d_l)``: h^{l-1,t}, the input of U^l at step t.
        readout: ``(N, F)`` readout features z with f = a_v V z (an independent readout
            such as ``per_step``: the ``(N, T*n)`` weighted states, position-aligned).
    """

    w_inputs: list[torch.Tensor]
    u_inputs: list[torch.Tensor]
    readout: torch.Tensor


class ElmanRNN(nn.Module):
    """A finite Elman RNN; see the module docstring for the function.

    Args:
        arch: the :class:`Architecture`.
        input_dim: feature size m of the inputs.
        width: hidden width n >= 1.
        seed: seeds every random draw (weights, shared and per-input initial states).
        out_dim: number of outputs k (independent rows of V).
        max_len: required for an independent readout (``per_step``, ``paper_avg``): the
            longest sequence (number of V_t); and for ``untied`` (number of per-step draws).
        untied: independent cell parameters at every step (module docstring). Step t of a
            batch left-padded to length T uses the draws of index max_len - T + t, i.e. the
            steps are counted from the end, like the sequences (left padding) and the V_t of
            an independent readout: a sequence's function does not depend on its batch.
        dtype, device: of the parameters (default float64 on CPU; ``device="auto"`` picks CUDA).

    Call it on a ``(N, T, m)`` tensor or a list of ``(T_i, m)`` tensors; it returns ``(N,)``
    for ``out_dim=1``, else ``(N, k)``.

    Random draws (the same on every device and in every process): the tensor named NAME is
    drawn as standard normal float64 from a ``torch.Generator`` seeded with the first 8 bytes
    of blake2b(``f"{seed}/{NAME}"``), little-endian, shifted right by one bit. Names:
    ``d{d}_l{l}_W``, ``d{d}_l{l}_U``, ``d{d}_l{l}_b``, ``d{d}_V`` (direction d, layer l),
    ``d{d}_l{l}_h0`` for the shared initial states, and ``h0/{key}/d{d}_l{l}`` for the
    per-input ones, where ``key`` is the sequence's content key
    (:attr:`rntk_empirical.sequences.Sequences.keys`). Initial states are s_h times the draw.
    """

    def __init__(
        self,
        arch: Architecture,
        input_dim: int,
        width: int,
        seed: int = 0,
        out_dim: int = 1,
        max_len: int | None = None,
        dtype: torch.dtype | str = torch.float64,
        device: torch.device | str = "cpu",
        untied: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(arch, Architecture):
            raise TypeError(f"arch must be an Architecture, got {type(arch).__name__}")
        for name, value in (("input_dim", input_dim), ("width", width), ("out_dim", out_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is not valid; expected an integer >= 1")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed={seed!r} is not valid; expected an integer")
        if not isinstance(untied, bool):
            raise ValueError(f"untied={untied!r} is not valid; expected True or False")
        self.readout = get_readout(arch.readout)
        self.untied = untied
        if self.readout.independent or untied:
            if max_len is None or isinstance(max_len, bool) or not isinstance(max_len, int):
                what = "independent V_t" if self.readout.independent else "untied draw"
                raise ValueError(
                    f"{'untied=True' if untied else f'readout={arch.readout!r}'} needs "
                    f"max_len=<longest sequence length> (one {what} per step)"
                )
            if max_len < 1:
                raise ValueError(f"max_len={max_len!r} is not valid; expected an integer >= 1")
        self.arch = arch
        self.input_dim = input_dim
        self.width = width
        self.seed = seed
        self.out_dim = out_dim
        self.max_len = max_len if self.readout.independent or untied else None
        self.nonlinearity = get_nonlinearity(arch.nonlinearity)
        self.cell = get_cell(arch.cell)
        dtype = resolve_dtype(dtype)
        device = resolve_device(device)

        n, a = width, arch
        dims = [input_dim] + [n] * (a.depth - 1)
        if a.parameterization == "ntk":
            self.mult = Multipliers(
                a.sigma_w / math.sqrt(n),
                tuple(a.sigma_u / math.sqrt(d) for d in dims),
                a.sigma_b,
                a.sigma_v / math.sqrt(n),
            )
            fold = Multipliers(1.0, (1.0,) * a.depth, 1.0, 1.0)
        else:
            self.mult = Multipliers(1.0, (1.0,) * a.depth, 1.0, 1.0)
            fold = Multipliers(
                a.sigma_w / math.sqrt(n),
                tuple(a.sigma_u / math.sqrt(d) for d in dims),
                a.sigma_b,
                a.sigma_v / math.sqrt(n),
            )

        def draw(name: str, *shape: int, scale: float = 1.0) -> torch.Tensor:
            return _draw_rows(shape, _generator(seed, name), scale, dtype, device)

        def host_draw(name: str, *shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=_generator(seed, name), dtype=torch.float64)

        # the cell's parameters of each layer, and the multipliers outside them
        self.layer_params = [self.cell.parameters(a, n, dims[l]) for l in range(a.depth)]
        ntk = a.parameterization == "ntk"
        self.layer_mult = [
            {q.name: q.multiplier if ntk else 1.0 for q in specs} for specs in self.layer_params
        ]
        for d in range(a.directions):
            for l in range(a.depth):
                for pre in self._prefixes(d, l):
                    for q in self.layer_params[l]:
                        fold_q = 1.0 if ntk else q.multiplier
                        name = f"{pre}_{q.name}"
                        if q.orthogonal and a.init == "orthogonal":
                            gen = _generator(seed, name)
                            scales = (math.sqrt(n), fold_q)
                            P = _haar_orthogonal(q.shape[0], gen, scales, dtype, device)
                        else:
                            P = draw(name, *q.shape, scale=fold_q)
                        self.register_parameter(name, nn.Parameter(P))
            vshape = (max_len, out_dim, n) if self.readout.independent else (out_dim, n)
            V = draw(f"d{d}_V", *vshape, scale=fold.v)
            self.register_parameter(f"d{d}_V", nn.Parameter(V))
        if a.h0 == "shared":
            xi = torch.stack(
                [
                    torch.stack([host_draw(f"d{d}_l{l}_h0", n) for l in range(a.depth)])
                    for d in range(a.directions)
                ]
            )
            self.register_buffer("shared_h0", a.sigma_h * xi.to(device=device, dtype=dtype))

    def _prefixes(self, d: int, l: int) -> list[str]:
        """Parameter-name prefixes of layer l, direction d: ``d{d}_l{l}`` (tied), or one per
        step, ``d{d}_l{l}_t{k}`` for k < max_len (untied)."""
        if not self.untied:
            return [f"d{d}_l{l}"]
        return [f"d{d}_l{l}_t{k}" for k in range(self.max_len)]

    @property
    def structured(self) -> bool:
        """The structured eNTK form applies: the cell has one and the weights are tied (it
        sums every weight's contributions over all pairs of steps)."""
        return self.cell.structured and not self.untied

    # ------------------------------------------------------------------ inputs
    @property
    def device(self) -> torch.device:
        return next(iter(self.parameters())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.parameters())).dtype

    def prepare(self, x, name: str = "x") -> Sequences:
        """Validate inputs and move them to the network's device and dtype."""
        seqs = as_sequences(
            x, input_dim=self.input_dim, dtype=self.dtype, device=self.device, name=name
        )
        if self.max_len is not None and seqs.max_len > self.max_len:
            raise ValueError(
                f"{name} has a sequence of length {seqs.max_len} but this network has "
                f"{'untied draws' if self.untied else 'readout V_t'} for at most "
                f"max_len={self.max_len} steps"
            )
        return seqs

    def initial_states(self, seqs: Sequences) -> torch.Tensor | None:
        """``(D, L, N, n)`` initial states, or None for ``h0="zero"``.

        ``per_input`` draws depend only on (seed, sequence content, direction, layer), so a
        sequence gets the same draw wherever it appears.
        """
        a, n = self.arch, self.width
        if a.h0 == "zero":
            return None
        if a.h0 == "shared":
            return self.shared_h0[:, :, None, :].expand(-1, -1, seqs.n, -1)
        out = torch.empty(a.directions, a.depth, seqs.n, n, dtype=torch.float64)
        for i, key in enumerate(seqs.keys):
            for d in range(a.directions):
                for l in range(a.depth):
                    g = _generator(self.seed, f"h0/{key}/d{d}_l{l}")
                    out[d, l, i] = torch.randn(n, generator=g, dtype=torch.float64)
        return a.sigma_h * out.to(device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ forward
    def param_dict(self) -> dict[str, torch.Tensor]:
        """The trainable parameters, detached (for torch.func transforms)."""
        return {k: v.detach() for k, v in self.named_parameters()}

    def forward_args(self, seqs: Sequences) -> tuple:
        """The padded tensors ``(values, dir_values, mask, lengths, h0)`` of a prepared batch.

        With a parameter dict they make :meth:`apply_padded` a pure function,
        ``f(params) = model.apply_padded(params, *model.forward_args(seqs))``: the functional
        seam used by :meth:`forward`, the empirical kernels (torch.func) and training. ``mask``
        is None when no step is padding (the masking is skipped)."""
        return (
            seqs.values,
            self.direction_values(seqs),
            None if seqs.equal_lengths else seqs.mask,
            seqs.lengths.to(self.device),
            self.initial_states(seqs),
        )

    def forward(self, x) -> torch.Tensor:
        seqs = self.prepare(x)
        out = self.apply_padded(dict(self.named_parameters()), *self.forward_args(seqs))
        return out[:, 0] if self.out_dim == 1 else out

    def direction_values(self, seqs: Sequences) -> torch.Tensor:
        """``(D, N, T, m)``: the inputs of each direction (the second one reversed)."""
        if self.arch.bidirectional:
            return torch.stack([seqs.values, seqs.reversed().values])
        return seqs.values[None]

    def apply_padded(
        self,
        params: dict[str, torch.Tensor],
        values: torch.Tensor,
        dir_values: torch.Tensor,
        mask: torch.Tensor | None,
        lengths: torch.Tensor,
        h0: torch.Tensor | None,
        probes: torch.Tensor | None = None,
        records: list[ForwardRecord] | None = None,
    ) -> torch.Tensor:
        """The network as a pure function of ``params`` on a padded batch: ``(N, k)``.

        Args:
            params: name -> tensor, as in ``named_parameters()``.
            values: ``(N, T, m)`` left-padded inputs (unused beyond shape; kept for clarity).
            dir_values: ``(D, N, T, m)`` inputs per direction.
            mask: ``(N, T)`` validity, or None when no step is padding (faster);
                lengths: ``(N,)``.
            h0: ``(D, L, N, n)`` initial states or None (zeros).
            probes: optional ``(D, L, N, T, n)`` added to the pre-activations g^{l,t}; the
                gradient of the output w.r.t. them is delta^{l,t} = df/dg^{l,t}.
            records: if a list is given, one :class:`ForwardRecord` per direction is appended.
        """
        del values
        a, m = self.arch, self.mult
        phi = self.nonlinearity.phi
        N, T = dir_values.shape[1:3]
        keep = None if mask is None else mask[:, :, None]
        if probes is not None and not self.structured:
            why = "untied weights" if self.untied else f"cell {a.cell!r}"
            raise ValueError(f"{why}: no structured form (probes)")
        out = 0.0
        for d in range(a.directions):
            layer_in = dir_values[d]
            recorded: list = []
            for l in range(a.depth):
                h = h0[d, l] if h0 is not None else layer_in.new_zeros(N, self.width)
                if self.untied:
                    layer_in = self._untied_layer(params, d, l, layer_in, h, keep, phi)
                    continue
                p = {q.name: params[f"d{d}_l{l}_{q.name}"] for q in self.layer_params[l]}
                layer_in = self.cell.layer(
                    p,
                    self.layer_mult[l],
                    layer_in,
                    h,
                    keep,
                    phi,
                    probe=None if probes is None else probes[d, l],
                    record=recorded if records is not None and self.structured else None,
                    arch=a,
                )
            w_inputs = [w for w, _ in recorded]
            u_inputs = [u for _, u in recorded]
            z = self._readout_features(layer_in, keep, lengths)
            V = params[f"d{d}_V"]
            if self.readout.independent:
                V = V[:T].flip(0).transpose(0, 1).reshape(self.out_dim, T * self.width)
            out = out + m.v * (z @ V.T)
            if records is not None:
                records.append(ForwardRecord(w_inputs, u_inputs, z))
        return out

    def _untied_layer(
        self,
        params: dict[str, torch.Tensor],
        d: int,
        l: int,
        x: torch.Tensor,
        h: torch.Tensor,
        keep: torch.Tensor | None,
        phi,
    ) -> torch.Tensor:
        """``(N, T, n)`` states of layer l of an untied network: the cell's own layer run one
        step at a time, step t with the draws of index max_len - T + t."""
        T = x.shape[1]
        specs, mult = self.layer_params[l], self.layer_mult[l]
        states = []
        for t in range(T):
            pre = f"d{d}_l{l}_t{self.max_len - T + t}"
            p = {q.name: params[f"{pre}_{q.name}"] for q in specs}
            kt = None if keep is None else keep[:, t : t + 1]
            h = self.cell.layer(p, mult, x[:, t : t + 1], h, kt, phi, arch=self.arch)[:, 0]
            states.append(h)
        return torch.stack(states, 1)

    def _readout_features(
        self, states: torch.Tensor, keep: torch.Tensor | None, lengths: torch.Tensor
    ) -> torch.Tensor:
        """z with f = a_v V z from the readout's weights w(t) = profile(d) / divisor(T):
        ``(N, n)`` (shared V: sum_t w(t) h^{L,t}), or ``(N, T*n)`` (independent V_t: the
        weighted states, position-aligned)."""
        ro, arch = self.readout, self.arch
        T = states.shape[1]
        div = ro.divisors(lengths.to(states.dtype), arch)[:, None]
        kind = ro.kind(T, arch)
        if kind == "final":
            prof0 = float(ro.profile_values(1, arch)[0])
            z = states[:, -1] if prof0 == 1.0 else states[:, -1] * prof0
            return z if ro.divisor is None else z / div
        if keep is not None:
            states = states * keep
        if not ro.uniform(T, arch):
            prof = ro.profile_values(T, arch).flip(0).to(device=states.device, dtype=states.dtype)
            states = states * prof[None, :, None]
        if kind == "full":
            return states.sum(1) / div
        return (states / div[:, :, None]).reshape(states.shape[0], -1)

    def extra_repr(self) -> str:
        untied = f", untied over max_len={self.max_len}" if self.untied else ""
        return (
            f"width={self.width}, input_dim={self.input_dim}, out_dim={self.out_dim}{untied}, "
            f"{self.arch}"
        )
