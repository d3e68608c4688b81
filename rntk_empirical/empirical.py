r"""Exact empirical NTK and NNGP kernels of a finite :class:`ElmanRNN`.

The empirical NTK (SPEC section 2) is

    Theta_hat(x, x')_{oo'} = sum_p  df_o(x)/dp  df_o'(x')/dp,

summed over every trainable parameter p. Three exact methods compute it:

``jacobian``
    Explicit per-example Jacobians, one ``(B, k, #params)`` matrix per chunk of sequences,
    contracted as one matrix product per pair of chunks (each symmetric block once). A weight
    used at every step has the Jacobian a sum_t delta_t in_t^T (the factors of ``structured``
    below), formed as one batched matmul over the steps: the torch.func recipe
    (``vmap(jacrev(f))``, :func:`per_example_jacobians`) materializes a ``(B, n, n)`` outer
    product per step and is several times slower. Both give the same Jacobians (tested to
    1e-12). Memory O(B * #params) per chunk.
``ntk_vp``
    NTK-vector products: ``Theta e_j = J_1 (J_2^T e_j)`` with ``vjp`` then ``jvp``, for
    chunks of columns j.
``structured`` (default)
    Uses the weight sharing across time. A weight used at every step contributes

        a^2 sum_{t,t'} <delta_t(x), delta_t'(x')> <in_t(x), in_t'(x')>,

    where delta_t = df/dg^{l,t} is the output's gradient at the step's pre-activation (from a
    single ``vjp`` w.r.t. zero-valued probes added to the pre-activations) and in_t is the
    step's input to that weight (h^{l,t-1} for W, h^{l-1,t} for U, 1 for b). The readout
    contributes a_v^2 <z(x), z(x')>. Cost O(N^2 T^2 n + N T n^2), memory O(N T n).

All three agree to ~1e-12 relative error in float64 (see tests/test_empirical.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jacrev, jvp, vjp, vmap

from rntk_empirical.devices import memory_budget
from rntk_empirical.network import ElmanRNN, ForwardRecord
from rntk_empirical.sequences import Sequences

METHODS = ("structured", "jacobian", "ntk_vp")

# The former fixed budget (bytes) for one block of intermediate results; now only the
# reference point of :func:`structured_plan` ("before"). Budgets come from the free memory
# of the model's device (:func:`rntk_empirical.devices.memory_budget`).
DEFAULT_BLOCK_BYTES = 256 * 2**20


def structured_plan(
    width: int,
    n_seqs: int,
    seq_len: int,
    *,
    depth: int = 1,
    directions: int = 1,
    out_dim: int = 1,
    dtype: torch.dtype = torch.float64,
    budget_bytes: int,
) -> dict[str, int]:
    """How the ``structured`` method splits ``n_seqs`` sequences for a memory budget.

    Returns ``chunk`` (sequences per forward/backward pass), ``passes`` and the modelled
    ``w_traffic_bytes``: each pass reads every W^l (n^2 entries) twice per step (forward
    and backward), so traffic = passes * 2 T * D L n^2 * element size.
    """
    elem = torch.finfo(dtype).bits // 8
    # a forward/backward pass keeps ~ (4 + 3 L D) tensors of N T n alive
    per_seq = (4 + 3 * depth * directions) * seq_len * width * elem * max(1, out_dim)
    chunk = max(1, budget_bytes // per_seq)
    passes = -(-n_seqs // chunk)
    traffic = passes * 2 * seq_len * directions * depth * width * width * elem
    return {"chunk": int(min(chunk, n_seqs)), "passes": passes, "w_traffic_bytes": traffic}


def _check_model(model) -> ElmanRNN:
    if not isinstance(model, ElmanRNN):
        raise TypeError(f"model must be an ElmanRNN, got {type(model).__name__}")
    return model


def _check_chunk(chunk_size: int | None) -> None:
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size={chunk_size!r} is not valid; expected None or an int >= 1")


def _prepare_pair(model: ElmanRNN, x1, x2) -> tuple[Sequences, Sequences | None]:
    s1 = model.prepare(x1, "x1")
    s2 = None if x2 is None else model.prepare(x2, "x2")
    if s2 is not None and s2.max_len != s1.max_len:
        T = max(s1.max_len, s2.max_len)  # a common padded length aligns independent readouts
        s1, s2 = s1.padded_to(T), s2.padded_to(T)
    return s1, s2


def _finish(theta: torch.Tensor, model: ElmanRNN) -> torch.Tensor:
    """``(N1, N2, k, k)`` -> ``(N1, N2)`` when k = 1."""
    return theta[:, :, 0, 0] if model.out_dim == 1 else theta


def empirical_kernels(
    model: ElmanRNN,
    x1,
    x2=None,
    method: str = "structured",
    chunk_size: int | None = None,
    nngp: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The exact empirical NTK and (optionally) NNGP of ``model``: ``(theta, nngp)``.

    With the ``structured`` method both come from one forward/backward pass (the NNGP is the
    readout part, see :func:`empirical_nngp`); the other methods need one more forward pass
    for the NNGP.

    Args:
        model: the finite network.
        x1: ``(N1, T, m)`` tensor or list of ``(T_i, m)`` tensors.
        x2: same forms, or None for x2 = x1 (then the result is exactly symmetric).
        method: ``structured`` (default), ``jacobian`` or ``ntk_vp``. For a cell without a
            structured form (:attr:`rntk_empirical.cells.Cell.structured`) and for an untied
            network, ``structured`` and ``jacobian`` both contract per-example Jacobians
            from torch.func (:func:`per_example_jacobians`).
        chunk_size: sequences (jacobian), columns (ntk_vp) or sequences per forward pass
            (structured) processed at once; None picks one from a memory budget.
        nngp: also return the NNGP (else None).

    Returns:
        theta: ``(N1, N2)`` for one output; ``(N1, N2, k, k)`` for k outputs (entry
            [i, j, o, o'] pairs output o at x1[i] with output o' at x2[j]).
        nngp: ``(N1, N2)`` or None.
    """
    model = _check_model(model)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed values: {', '.join(METHODS)}")
    _check_chunk(chunk_size)
    s1, s2 = _prepare_pair(model, x1, x2)
    k = None
    with torch.no_grad():
        if method in ("structured", "jacobian") and not model.structured:
            theta = _autograd_jacobian_ntk(model, s1, s2, chunk_size)
            if nngp:
                z1 = _readouts(model, s1)
                k = _nngp_from_readouts(model, z1, z1 if s2 is None else _readouts(model, s2))
        elif method == "structured":
            theta, z1, z2 = _structured_ntk(model, s1, s2, chunk_size)
            if nngp:
                k = _nngp_from_readouts(model, z1, z2)
        else:
            theta = (_jacobian_ntk if method == "jacobian" else _ntk_vp)(model, s1, s2, chunk_size)
            if nngp:
                z1 = _readouts(model, s1)
                k = _nngp_from_readouts(model, z1, z1 if s2 is None else _readouts(model, s2))
    if s2 is None:
        theta = 0.5 * (theta + theta.transpose(0, 1).transpose(2, 3))
    T = s1.max_len if s2 is None else max(s1.max_len, s2.max_len)
    check_finite_kernels(model, T, NTK=theta, NNGP=k)
    return _finish(theta, model), k


def check_finite_kernels(model: ElmanRNN, T: int, **kernels: torch.Tensor | None) -> None:
    """Raise :class:`OverflowError` (one line naming the kernel, dtype, sigma_w, T and what to
    change) if a kernel of ``model`` has a NaN or Inf entry: the forward states or the
    backpropagated gradients left the dtype's range (they grow geometrically in T when
    sigma_w is large), and a NaN kernel must not reach a solver or a record."""
    for name, kern in kernels.items():
        if kern is None or bool(torch.isfinite(kern).all()):
            continue
        dtype = str(kern.dtype).replace("torch.", "")
        fix = (
            "use a smaller sigma_w or shorter sequences"
            if kern.dtype == torch.float64
            else "use dtype=float64, a smaller sigma_w or shorter sequences"
        )
        raise OverflowError(
            f"the empirical {name} is not finite in {dtype} at T={T} with "
            f"sigma_w={model.arch.sigma_w:g} (the network's states or gradients over- or "
            f"underflowed, {int((~torch.isfinite(kern)).sum())} entries); {fix}"
        )


def empirical_ntk(
    model: ElmanRNN,
    x1,
    x2=None,
    method: str = "structured",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The exact empirical NTK of ``model``: ``(N1, N2)``, or ``(N1, N2, k, k)`` for k outputs.
    Arguments as in :func:`empirical_kernels`."""
    return empirical_kernels(model, x1, x2, method, chunk_size, nngp=False)[0]


def empirical_nngp(model: ElmanRNN, x1, x2=None) -> torch.Tensor:
    """The finite network's NNGP (conjugate) kernel, readout part: ``(N1, N2)``.

    (s_v^2 / n) <z(x), z(x')>, summed over directions, with z the readout features
    (sum_t w(t) h^{L,t} for a shared readout, the weighted end-aligned states for an
    independent one; :mod:`rntk_empirical.readouts`).
    Its mean over initializations is the network's output covariance, whose limit is the
    analytic NNGP. Independent of the parameterization.
    """
    model = _check_model(model)
    s1, s2 = _prepare_pair(model, x1, x2)
    with torch.no_grad():
        z1 = _readouts(model, s1)
        z2 = z1 if s2 is None else _readouts(model, s2)
    return _nngp_from_readouts(model, z1, z2)


def _nngp_from_readouts(
    model: ElmanRNN, z1: list[torch.Tensor], z2: list[torch.Tensor]
) -> torch.Tensor:
    """(s_v^2 / n) sum_d <z_d(x), z_d(x')> from per-direction readout features ``(N, F)``."""
    scale = model.arch.sigma_v**2 / model.width
    return scale * sum(a @ b.T for a, b in zip(z1, z2))


def _readouts(model: ElmanRNN, seqs: Sequences) -> list[torch.Tensor]:
    records: list[ForwardRecord] = []
    model.apply_padded(model.param_dict(), *model.forward_args(seqs), records=records)
    return [r.readout for r in records]


# ---------------------------------------------------------------------- structured
class _Features:
    """Per-sequence factors of the structured NTK for one batch.

    ``deltas[d][l]``: ``(k, N, T, n)`` = df_o/dg^{l,t}; ``inputs[d][l]``: the pair
    (h^{l,t-1} ``(N, T, n)``, h^{l-1,t} ``(N, T, d_l)``), the inputs of W^l and U^l (b^l's is 1);
    ``readout[d]``: ``(N, F)`` = a_v z; ``z[d]``: ``(N, F)`` the readout features z.
    """

    def __init__(self, deltas, inputs, readout, z):
        self.deltas, self.inputs, self.readout, self.z = deltas, inputs, readout, z

    @staticmethod
    def cat(parts: list[_Features]) -> _Features:
        if len(parts) == 1:
            return parts[0]
        D, L = len(parts[0].deltas), len(parts[0].deltas[0])
        return _Features(
            [[torch.cat([p.deltas[d][l] for p in parts], 1) for l in range(L)] for d in range(D)],
            [
                [
                    tuple(torch.cat(z, 0) for z in zip(*(p.inputs[d][l] for p in parts)))
                    for l in range(L)
                ]
                for d in range(D)
            ],
            [torch.cat([p.readout[d] for p in parts], 0) for d in range(D)],
            [torch.cat([p.z[d] for p in parts], 0) for d in range(D)],
        )

    def rows(self, sl: slice) -> _Features:
        return _Features(
            [[x[:, sl] for x in per_d] for per_d in self.deltas],
            [[tuple(z[sl] for z in x) for x in per_d] for per_d in self.inputs],
            [z[sl] for z in self.readout],
            [z[sl] for z in self.z],
        )


def _structured_features(model: ElmanRNN, seqs: Sequences) -> _Features:
    a, mult = model.arch, model.mult
    N, T, n, k = seqs.n, seqs.max_len, model.width, model.out_dim
    params = model.param_dict()
    args = model.forward_args(seqs)
    probes = torch.zeros(a.directions, a.depth, N, T, n, dtype=model.dtype, device=model.device)

    def f(pr: torch.Tensor):
        records: list[ForwardRecord] = []
        out = model.apply_padded(params, *args, probes=pr, records=records)
        return out, [(r.w_inputs, r.u_inputs, r.readout) for r in records]  # pytree aux

    with torch.enable_grad():
        out, vjp_fn, records = vjp(f, probes, has_aux=True)
        cot = torch.zeros_like(out)
        deltas_k = []
        for o in range(k):
            cot.zero_()
            cot[:, o] = 1.0
            (g,) = vjp_fn(cot)
            deltas_k.append(g)
    deltas = torch.stack(deltas_k)  # (k, D, L, N, T, n)
    inputs = [
        [(w_in[l].detach(), u_in[l].detach()) for l in range(a.depth)] for w_in, u_in, _ in records
    ]
    return _Features(
        [[deltas[:, d, l] for l in range(a.depth)] for d in range(a.directions)],
        inputs,
        [mult.v * z.detach() for _, _, z in records],
        [z.detach() for _, _, z in records],
    )


def _features_chunked(model: ElmanRNN, seqs: Sequences, chunk: int) -> _Features:
    parts = [
        _structured_features(model, seqs.select(slice(i, i + chunk)))
        for i in range(0, seqs.n, chunk)
    ]
    return _Features.cat(parts)


def _structured_block(model: ElmanRNN, f1: _Features, f2: _Features) -> torch.Tensor:
    """``(B1, B2, k, k)`` NTK between two blocks of sequences."""
    k, mult = model.out_dim, model.mult
    B1, B2 = f1.readout[0].shape[0], f2.readout[0].shape[0]
    theta = f1.readout[0].new_zeros(B1, B2, k, k)
    eye = torch.eye(k, dtype=theta.dtype, device=theta.device)
    for d in range(len(f1.deltas)):
        theta += (f1.readout[d] @ f2.readout[d].T)[:, :, None, None] * eye
        for l in range(len(f1.deltas[d])):
            (h1, u1), (h2, u2) = f1.inputs[d][l], f2.inputs[d][l]
            T = h1.shape[1]
            # a_w^2 <h_{t-1}, h'_{t'-1}> + a_u^2 <u_t, u'_t'> + a_b^2: the W, U and b blocks
            gc = (u1.reshape(B1 * T, -1) @ u2.reshape(B2 * T, -1).T).mul_(mult.u[l] ** 2)
            gc = torch.addmm(
                gc.add_(mult.b**2),
                h1.reshape(B1 * T, -1),
                h2.reshape(B2 * T, -1).T,
                alpha=mult.w**2,
            ).reshape(B1, T, B2, T)
            d1, d2 = f1.deltas[d][l], f2.deltas[d][l]
            for o in range(k):
                for q in range(k):
                    gd = d1[o].reshape(B1 * T, -1) @ d2[q].reshape(B2 * T, -1).T
                    theta[:, :, o, q] += (gd.reshape(B1, T, B2, T) * gc).sum((1, 3))
    return theta


def _feature_chunk(model: ElmanRNN, s1: Sequences, budget: int) -> int:
    a = model.arch
    return structured_plan(
        model.width,
        s1.n,
        s1.max_len,
        depth=a.depth,
        directions=a.directions,
        out_dim=model.out_dim,
        dtype=model.dtype,
        budget_bytes=budget,
    )["chunk"]


def _structured_ntk(model, s1, s2, chunk_size) -> tuple[torch.Tensor, list, list]:
    """``(N1, N2, k, k)`` NTK and the readout features z of both sides (for the NNGP)."""
    elem = torch.finfo(model.dtype).bits // 8
    T = s1.max_len
    budget = memory_budget(model.device)
    chunk = chunk_size or _feature_chunk(model, s1, budget)
    f1 = _features_chunked(model, s1, chunk)
    f2 = f1 if s2 is None else _features_chunked(model, s2, chunk)
    N1, N2 = s1.n, (s1 if s2 is None else s2).n
    # Gram blocks are (b T) x (b T); choose b so two of them fit the budget.
    b = max(1, int((budget / (2 * elem)) ** 0.5 / T))
    theta = f1.readout[0].new_empty(N1, N2, model.out_dim, model.out_dim)
    for i in range(0, N1, b):
        fi = f1.rows(slice(i, i + b))
        for j in range(0, N2, b):
            if s2 is None and j < i:
                continue  # symmetric: filled from the transposed block
            blk = _structured_block(model, fi, f2.rows(slice(j, j + b)))
            theta[i : i + b, j : j + b] = blk
            if s2 is None and j > i:
                theta[j : j + b, i : i + b] = blk.transpose(0, 1).transpose(2, 3)
    return theta, f1.z, f2.z


# ---------------------------------------------------------------------- jacobian
def _single_fn(model: ElmanRNN) -> Callable:
    """f(params, one sequence's padded tensors) -> (k,), for vmap/jacrev."""

    def f(params, values, dir_values, mask, length, h0):
        h0b = None if h0 is None else h0[:, :, None]
        out = model.apply_padded(
            params,
            values[None],
            dir_values[:, None],
            None if mask is None else mask[None],
            length[None],
            h0b,
        )
        return out[0]

    return f


def per_example_jacobians(
    model: ElmanRNN, seqs: Sequences, params: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Per-parameter Jacobians ``{name: (N, k, numel)}`` at ``params`` (default: the
    model's current parameters)."""
    values, dir_values, mask, lengths, h0 = model.forward_args(seqs)
    in_dims = (None, 0, 1, None if mask is None else 0, 0, None if h0 is None else 2)
    jac = vmap(jacrev(_single_fn(model)), in_dims=in_dims)(
        model.param_dict() if params is None else params, values, dir_values, mask, lengths, h0
    )
    return {name: j.reshape(seqs.n, model.out_dim, -1) for name, j in jac.items()}


def _jacobian_matrix(model: ElmanRNN, f: _Features) -> torch.Tensor:
    """``(B, k, #params)``: the per-example Jacobians of one chunk from its structured factors,
    parameters in ``named_parameters()`` order (each flattened row-major)."""
    a, m, k = model.arch, model.mult, model.out_dim
    B = f.readout[0].shape[0]
    n_params = sum(p.numel() for p in model.parameters())
    J = f.readout[0].new_empty(B, k, n_params)
    pos = 0

    def put(block: torch.Tensor) -> None:  # block: (B, k, ...)
        nonlocal pos
        size = block[0, 0].numel()
        J[:, :, pos : pos + size] = block.reshape(B, k, size)
        pos += size

    eye = torch.eye(k, dtype=J.dtype, device=J.device)
    for d in range(a.directions):
        for l in range(a.depth):
            delta = f.deltas[d][l].permute(1, 0, 3, 2)  # (B, k, n, T)
            h_in, u_in = f.inputs[d][l]  # (B, T, n), (B, T, d_l)
            put(torch.matmul(delta, h_in[:, None]).mul_(m.w))  # sum_t delta_t h_{t-1}^T
            put(torch.matmul(delta, u_in[:, None]).mul_(m.u[l]))  # sum_t delta_t u_t^T
            put(delta.sum(-1).mul_(m.b))
        z = f.readout[d]  # (B, F) = a_v z
        if model.readout.independent:
            T, n = f.inputs[d][0][0].shape[1], model.width
            zt = z.new_zeros(B, model.max_len, n)
            zt[:, :T] = z.reshape(B, T, n).flip(1)  # V_t multiplies the state T-1-t from the end
            put(eye[None, :, None, :, None] * zt[:, None, :, None, :])  # (B, k, T_max, k, n)
        else:
            put(eye[None, :, :, None] * z[:, None, None, :])
    return J


def structured_jacobians(model: ElmanRNN, seqs: Sequences) -> dict[str, torch.Tensor]:
    """Per-parameter Jacobians ``{name: (N, k, numel)}`` at the model's parameters, from the
    structured factors (what the ``jacobian`` method contracts); equal to
    :func:`per_example_jacobians` up to rounding."""
    model = _check_model(model)
    seqs = model.prepare(seqs)
    if not model.structured:
        with torch.no_grad():
            return per_example_jacobians(model, seqs)
    with torch.no_grad():
        J = _jacobian_matrix(model, _structured_features(model, seqs))
    out, pos = {}, 0
    for name, p in model.named_parameters():
        out[name] = J[:, :, pos : pos + p.numel()]
        pos += p.numel()
    return out


def _autograd_jacobian_ntk(model, s1, s2, chunk_size) -> torch.Tensor:
    """``(N1, N2, k, k)`` from per-example Jacobians (vmap of jacrev through
    :meth:`ElmanRNN.apply_padded`): the generic ``jacobian`` method of any cell, in chunks of
    ``chunk_size`` sequences (default: two chunks' Jacobians in the memory budget)."""
    elem = torch.finfo(model.dtype).bits // 8
    k = model.out_dim
    n_params = sum(p.numel() for p in model.parameters())
    chunk = chunk_size or max(1, memory_budget(model.device) // (2 * k * n_params * elem))
    s2_ = s1 if s2 is None else s2

    def jac(seqs: Sequences, i: int) -> torch.Tensor:  # (B, k, #params)
        J = per_example_jacobians(model, seqs.select(slice(i, i + chunk)))
        return torch.cat([j.reshape(j.shape[0], k, -1) for j in J.values()], -1)

    theta = torch.empty(s1.n, s2_.n, k, k, dtype=model.dtype, device=model.device)
    for i in range(0, s1.n, chunk):
        j1 = jac(s1, i)
        for j in range(i if s2 is None else 0, s2_.n, chunk):
            j2 = j1 if (s2 is None and j == i) else jac(s2_, j)
            blk = torch.einsum("iap,jbp->ijab", j1, j2)
            theta[i : i + j1.shape[0], j : j + j2.shape[0]] = blk
            if s2 is None and j > i:
                theta[j : j + j2.shape[0], i : i + j1.shape[0]] = blk.transpose(0, 1).transpose(
                    2, 3
                )
    return theta


def _jacobian_ntk(model, s1, s2, chunk_size) -> torch.Tensor:
    elem = torch.finfo(model.dtype).bits // 8
    k = model.out_dim
    n_params = sum(p.numel() for p in model.parameters())
    budget = memory_budget(model.device)
    # two chunks' Jacobians live at once; the factors of all sequences are kept
    chunk = chunk_size or max(1, budget // (2 * k * n_params * elem))
    fchunk = chunk_size or _feature_chunk(model, s1, budget)
    f1 = _features_chunked(model, s1, fchunk)
    f2 = f1 if s2 is None else _features_chunked(model, s2, fchunk)
    N1, N2 = s1.n, (s1 if s2 is None else s2).n
    theta = f1.readout[0].new_empty(N1, N2, k, k)
    for i in range(0, N1, chunk):
        j1 = _jacobian_matrix(model, f1.rows(slice(i, i + chunk)))
        B1 = j1.shape[0]
        for j in range(i if s2 is None else 0, N2, chunk):
            if s2 is None and j == i:
                j2 = j1
            else:
                j2 = _jacobian_matrix(model, f2.rows(slice(j, j + chunk)))
            B2 = j2.shape[0]
            blk = (j1.reshape(B1 * k, -1) @ j2.reshape(B2 * k, -1).T).reshape(B1, k, B2, k)
            blk = blk.permute(0, 2, 1, 3)
            theta[i : i + B1, j : j + B2] = blk
            if s2 is None and j > i:
                theta[j : j + B2, i : i + B1] = blk.transpose(0, 1).transpose(2, 3)
    return theta


# ---------------------------------------------------------------------- ntk_vp
def _ntk_vp(model, s1, s2, chunk_size) -> torch.Tensor:
    params = model.param_dict()
    s2_ = s1 if s2 is None else s2
    args1, args2 = model.forward_args(s1), model.forward_args(s2_)

    def f1(p):
        return model.apply_padded(p, *args1)

    def f2(p):
        return model.apply_padded(p, *args2)

    elem = torch.finfo(model.dtype).bits // 8
    n_params = sum(p.numel() for p in model.parameters())
    chunk = chunk_size or max(1, memory_budget(model.device) // (3 * n_params * elem))
    k = model.out_dim
    with torch.enable_grad():
        out2, vjp_fn = vjp(f2, params)
    cols = torch.eye(s2_.n * k, dtype=out2.dtype, device=out2.device).reshape(-1, s2_.n, k)
    theta = out2.new_empty(s1.n, k, s2_.n * k)

    def column(tangent):
        return jvp(f1, (params,), (tangent,))[1]

    for c in range(0, cols.shape[0], chunk):
        cot = cols[c : c + chunk]
        with torch.enable_grad():
            (tangents,) = vmap(vjp_fn)(cot)  # J_2^T e_j for each column j
        theta[:, :, c : c + chunk] = vmap(column, out_dims=2)(tangents)
    # columns are ordered (j, q): reshape to (N1, k, N2, k) -> (N1, N2, k, k)
    return theta.reshape(s1.n, k, s2_.n, k).permute(0, 2, 1, 3)
