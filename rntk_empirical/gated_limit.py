r"""The infinite-width NNGP and NTK of gated recurrent cells by a Tensor-Programs Z simulation
(docs/gated.md, sections 3-4).

Per unit of the infinite network every vector of the program has a limit random variable Z;
the kernels are expectations over the joint law of the Z's of all inputs and steps. This
module samples that law with M weighted-equally particles (one particle = one unit of the
infinite network, all N sequences and T steps jointly) and returns the sample means.

Forward (Netsor rule). A matrix W_f (f a gate or candidate family of the cell) applied to the
states y_f^t(x) gives Z^{W_f y}(x,t), jointly Gaussian over every (x, t) with covariance
s_w^2 E[y_f^t(x) y_f^{t'}(x')], independent of every other matrix's family; the input terms
a_u U_f x_t + a_b b_f are Gaussian with covariance s_u^2 <x_t, x'_t'> / m + s_b^2, one
independent family per matrix. Step by step, the new columns (step t, every x) of a W-family
are sampled conditionally on its earlier columns: the covariance of new with old columns is
known from the particles of y at earlier steps, so the Cholesky factor of the family's
covariance is extended by one block (:class:`_Family`). Untied weights (``tied=False``) make
every step's W- and U-families independent of the other steps'.

Backward (gradient independence, exact here: Tensor Programs II, the readout V is sampled
independently with zero mean and used nowhere else). With dh^t = sqrt(n) df/dh^t,

    dh^{t-1} = s_v w_{t-1} v + (the elementwise path through the cell from step t)
               + sum_f s_w Zbar_f^t,

where Zbar_f^t stands for Z^{W_f^T dpre_f^t}: Gaussian, independent of the forward, with
covariance E[dpre_f^t(x) dpre_f^{t'}(x')] (all steps of a tied W_f), sampled backward in time
by the same incremental scheme. The NTK is then the sum over parameter tensors

    Theta = s_v^2 E[hbar hbar'] + sum_f sum_{t,t'} E[dpre_f^t dpre_f'^t'] Cov(pre_f^t, pre_f'^t')

with Cov(pre_f) = s_w^2 E[y_f y_f'] (W_f) + s_u^2 <x_t, x'_t'> / m (U_f) + s_b^2 (b_f), hbar
the readout's weighted sum of states and the NNGP s_v^2 E[hbar hbar'] (t = t' only when
untied).

Error: the kernel is the mean over ``batches`` independent simulations of ``particles``
particles each; the standard error is their spread / sqrt(batches). Each simulation also
carries an O(1 / particles) bias (its covariances are estimated); docs/gated.md has the
measured numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rntk_empirical.architecture import Architecture
from rntk_empirical.cells import GATE_DERIVATIVES, GATES
from rntk_empirical.devices import resolve_device, resolve_dtype
from rntk_empirical.nonlinearities import get_nonlinearity
from rntk_empirical.readouts import get_readout
from rntk_empirical.sequences import Sequences, as_sequences

DEFAULT_PARTICLES = 2**14
DEFAULT_BATCHES = 4
DEFAULT_SEED = 0
DEFAULT_QMC = True
# Version of the simulation's numerics: part of cache keys (experiments) with the settings.
ENGINE_VERSION = 1
# Relative jitters tried, in order, on a Schur complement that is singular to round-off
# (identical columns: equal prefixes, repeated sequences).
_JITTERS = (1e-13, 1e-11, 1e-9, 1e-7)

# The families of each cell: name -> whether it has a recurrent matrix W_f.
CELL_FAMILIES: dict[str, dict[str, bool]] = {
    "elman": {"w": True},
    "minimalrnn": {"u": True, "a": False},
    "gru": {"z": True, "r": True, "h": True},
}


@dataclass(frozen=True)
class LimitKernels:
    """The simulated kernels ``(N1, N2)`` (None if not asked for) with their standard errors
    (elementwise, from the spread of the batches; None with one batch), and the settings."""

    ntk: torch.Tensor | None
    nngp: torch.Tensor | None
    ntk_se: torch.Tensor | None
    nngp_se: torch.Tensor | None
    particles: int
    batches: int
    seconds: float

    def relative_se(self, which: str = "ntk") -> float:
        """||standard error||_F / ||kernel||_F of ``ntk`` or ``nngp``."""
        k, se = getattr(self, which), getattr(self, f"{which}_se")
        if k is None or se is None:
            raise ValueError(f"no {which} standard error (needs the kernel and batches >= 2)")
        return float(se.norm() / k.norm())


def default_settings() -> dict:
    """The simulation's default settings and numerics version (for cache keys)."""
    return {
        "particles": DEFAULT_PARTICLES,
        "batches": DEFAULT_BATCHES,
        "seed": DEFAULT_SEED,
        "qmc": DEFAULT_QMC,
        "version": ENGINE_VERSION,
    }


def supported(arch: Architecture) -> str | None:
    """None if :func:`limit_kernels` can compute ``arch``, else a one-line reason."""
    if arch.cell not in CELL_FAMILIES:
        return f"the particle engine has no step for cell {arch.cell!r}"
    if arch.depth != 1:
        return f"the gated infinite-width kernels support depth=1 only (got {arch.depth})"
    if arch.bidirectional:
        return "the gated infinite-width kernels do not support bidirectional=True"
    if arch.h0 != "zero":
        return f"the gated infinite-width kernels support h0='zero' only (got {arch.h0!r})"
    if arch.init != "gaussian":
        return f"the gated infinite-width kernels support init='gaussian' only (got {arch.init!r})"
    return None


class _Normals:
    """The standard normals of one simulation, handed out in blocks of rows ``(n, M)``:
    pseudo-random (``qmc=False``) or the inverse normal CDF of one scrambled Sobol set of
    ``dim`` dimensions (``qmc=True``; rows taken in order, so the first draws, the input and
    readout terms and the early steps, get the best-distributed dimensions)."""

    def __init__(self, M: int, dim: int, seed: int, qmc: bool, like: torch.Tensor):
        self.M, self.like, self.used = M, like, 0
        self.gen = torch.Generator(device=like.device).manual_seed(seed)
        self.table = None
        if qmc:
            engine = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed)
            u = engine.draw(M, dtype=torch.float64).clamp_(1e-16, 1 - 1e-16)
            self.table = torch.special.ndtri(u).T.contiguous().to(like.device)

    def take(self, *shape: int) -> torch.Tensor:
        """``(*shape, M)`` independent standard normals."""
        n = math.prod(shape)
        if self.table is None:
            return torch.randn(
                *shape, self.M, generator=self.gen, dtype=self.like.dtype, device=self.like.device
            )
        if self.used + n > self.table.shape[0]:
            raise RuntimeError("the quasi-random table is exhausted (a counting bug)")
        out = self.table[self.used : self.used + n].reshape(*shape, self.M)
        self.used += n
        return out


class _Family:
    """One Gaussian family Z(c), rows c added in blocks, with covariance
    Cov(Z(c), Z(c')) = E[y(c) y(c')] estimated by the particles of y (M columns).

    A new block is sampled given the family's earlier rows: with L the Cholesky factor of the
    old covariance and eps its normals, Z_new = L21 eps + L22 eps_new, L21 = C21 L^-T,
    L22 = chol(C22 - L21 L21^T). All-zero rows of y give Z = 0 and are not stored."""

    def __init__(
        self, M: int, capacity: int, like: torch.Tensor, normals: _Normals, channels: int = 1
    ):
        self.M, self.k, self.normals = M, 0, normals
        self.Y = like.new_empty(capacity, channels * M)
        self.E = like.new_empty(capacity, M)
        self.L = like.new_zeros(capacity, capacity)

    def extend(self, y: torch.Tensor) -> torch.Tensor:
        """``y (n, channels * M)`` -> ``Z (n, M)`` sampled jointly with the earlier rows
        (E[y y'] is the sum over the channels of the particle means)."""
        M, k = self.M, self.k
        rows = (y != 0).any(1).nonzero().flatten()
        n = rows.numel()
        if n == 0:
            return y.new_zeros(y.shape[0], M)
        ya = y[rows]
        S = ya @ ya.T / M
        if k:
            C12 = ya @ self.Y[:k].T / M  # (n, k)
            # L21 L11^T = C12
            L21 = torch.linalg.solve_triangular(self.L[:k, :k].T, C12, upper=True, left=False)
            S = S - L21 @ L21.T
        L22 = _cholesky(S)
        eps = self.normals.take(n)
        Z = L22 @ eps
        if k:
            Z = Z + L21 @ self.E[:k]
            self.L[k : k + n, :k] = L21
        self.L[k : k + n, k : k + n] = L22
        self.Y[k : k + n] = ya
        self.E[k : k + n] = eps
        self.k = k + n
        if n == y.shape[0]:
            return Z
        out = y.new_zeros(y.shape[0], M)
        out[rows] = Z
        return out


def _cholesky(S: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor of a covariance that may be singular to round-off (relative
    jitter, smallest that works)."""
    S = 0.5 * (S + S.T)
    scale = float(S.diagonal().abs().max())
    eye = torch.eye(S.shape[0], dtype=S.dtype, device=S.device)
    for j in _JITTERS:
        L, info = torch.linalg.cholesky_ex(S + (j * scale + 1e-300) * eye)
        if int(info) == 0:
            return L
    raise FloatingPointError("a covariance of the particle simulation is not positive definite")


@dataclass
class _Setting:
    """Everything a simulation reads: the architecture's constants and the padded inputs."""

    cell: str
    sw: float
    su: float
    sb: float
    sv: float
    g: Callable
    dg: Callable
    phi: Callable
    dphi: Callable
    X: torch.Tensor  # (N, T, m)
    keep: torch.Tensor  # (T, N, 1) float: 1 at valid steps
    w: torch.Tensor  # (T, N, 1) readout weights
    independent: bool
    tied: bool


def _input_terms(s: _Setting, normals: _Normals) -> torch.Tensor:
    """``(T, N, M)``: a_u U_f x_t + a_b b_f of one family, sampled exactly (m + 1 normals per
    particle, per step when untied)."""
    N, T, m = s.X.shape
    if s.tied:
        u, b = normals.take(m), normals.take(1)
        return s.su / math.sqrt(m) * torch.einsum("ntm,mk->tnk", s.X, u) + s.sb * b
    u, b = normals.take(T, m), normals.take(T, 1)
    return s.su / math.sqrt(m) * torch.einsum("ntm,tmk->tnk", s.X, u) + s.sb * b[:, None, 0]


def normals_needed(s: _Setting, ntk: bool) -> int:
    """An upper bound of the normals one particle uses (the quasi-random dimension)."""
    N, T, m = s.X.shape
    fams = CELL_FAMILIES[s.cell]
    walls = sum(fams.values()) * N * T
    inputs = len(fams) * (m + 1) * (1 if s.tied else T)
    return inputs + walls + (walls + (T if s.independent else 0) if ntk else 0)


def _simulate(s: _Setting, M: int, seed: int, qmc: bool, ntk: bool, progress=None):
    """One simulation of M particles: ``(nngp, theta or None)``, each ``(N, N)``. Arrays are
    ``(N, M)`` per step: one row per sequence, one column per particle."""
    N, T, _ = s.X.shape
    fams = CELL_FAMILIES[s.cell]
    ref = s.X
    normals = _Normals(M, normals_needed(s, ntk), seed, qmc, ref)

    def family() -> _Family:
        return _Family(M, N * (T if s.tied else 1), ref, normals)

    inputs = {f: _input_terms(s, normals) for f in fams}
    fwd = {f: family() for f, has_w in fams.items() if has_w}
    h = ref.new_zeros(N, M)
    rec: dict[str, list[torch.Tensor]] = {"h_prev": [], "h": []}
    for f in fams:
        rec[f"pre_{f}"] = []
        if fams[f]:
            rec[f"y_{f}"] = []

    def W(f: str, y: torch.Tensor) -> torch.Tensor:
        if not s.tied:
            fwd[f] = family()
        rec[f"y_{f}"].append(y)
        return s.sw * fwd[f].extend(y)

    for t in range(T):
        k = s.keep[t]
        if s.cell == "elman":
            pre = W("w", h) + inputs["w"][t]
            new = s.phi(pre)
            rec["pre_w"].append(pre)
        elif s.cell == "minimalrnn":
            pu = W("u", h) + inputs["u"][t]
            pa = inputs["a"][t]
            u = s.g(pu)
            new = u * h + (1 - u) * s.phi(pa)
            rec["pre_u"].append(pu)
            rec["pre_a"].append(pa)
        else:  # gru
            pz = W("z", h) + inputs["z"][t]
            pr = W("r", h) + inputs["r"][t]
            ph = W("h", s.g(pr) * h) + inputs["h"][t]
            new = h + s.g(pz) * (s.phi(ph) - h)
            rec["pre_z"].append(pz)
            rec["pre_r"].append(pr)
            rec["pre_h"].append(ph)
        rec["h_prev"].append(h)
        h = k * new + (1 - k) * h
        rec["h"].append(h)
        if progress is not None:
            progress(1)
    H = torch.stack(rec["h"]) * s.w  # (T, N, M), weighted
    if s.independent:
        nngp = torch.einsum("tnk,tok->no", H, H) / M
    else:
        hbar = H.sum(0)
        nngp = hbar @ hbar.T / M
    nngp = s.sv**2 * nngp
    del H
    if not ntk:
        return nngp, None

    # The backward pass is linear in the readout's v and the Zbar's. For a shared readout it
    # runs on two channels, the coefficient of v (channel 0) and the rest (channel 1), and
    # E[dpre dpre'] sums the channels: the expectation over v is exact (no chi-square noise).
    # An independent readout samples its v_t into channel 1.
    nc = 1 if s.independent else 2
    bwd = {
        f: _Family(M, N * (T if s.tied else 1), ref, normals, nc)
        for f, has_w in fams.items()
        if has_w
    }
    dpre: dict[str, list] = {f: [None] * T for f in fams}

    def Wt(f: str, d: torch.Tensor) -> torch.Tensor:
        if not s.tied:
            bwd[f] = _Family(M, N, ref, normals, nc)
        z = s.sw * bwd[f].extend(d.transpose(0, 1).reshape(N, nc * M))
        return z if nc == 1 else torch.stack([torch.zeros_like(z), z])

    dh = ref.new_zeros(nc, N, M)
    for t in reversed(range(T)):
        k = s.keep[t]
        if nc == 2:
            dh[0] += s.sv * s.w[t]
        else:
            dh = dh + s.sv * s.w[t] * normals.take(1)
        hp = rec["h_prev"][t]
        if s.cell == "elman":
            d = k * dh * s.dphi(rec["pre_w"][t])
            dpre["w"][t] = d
            back = Wt("w", d)
        elif s.cell == "minimalrnn":
            pu, pa = rec["pre_u"][t], rec["pre_a"][t]
            u = s.g(pu)
            du = k * dh * s.dg(pu) * (hp - s.phi(pa))
            dpre["u"][t] = du
            dpre["a"][t] = k * dh * (1 - u) * s.dphi(pa)
            back = dh * u + Wt("u", du)
        else:  # gru
            pz, pr, ph = rec["pre_z"][t], rec["pre_r"][t], rec["pre_h"][t]
            z, r = s.g(pz), s.g(pr)
            dph = k * dh * z * s.dphi(ph)
            dy = Wt("h", dph)  # the gradient of y_h = r * h_prev
            dpz = k * dh * (s.phi(ph) - hp) * s.dg(pz)
            dpr = k * dy * hp * s.dg(pr)
            dpre["h"][t], dpre["z"][t], dpre["r"][t] = dph, dpz, dpr
            back = dh * (1 - z) + dy * r + Wt("z", dpz) + Wt("r", dpr)
        dh = k * back + (1 - k) * dh
        if progress is not None:
            progress(1)

    theta = nngp.clone()
    for f, has_w in fams.items():
        D = torch.stack(dpre[f]).transpose(1, 2).reshape(T, N, nc * M)  # channels x particles
        if s.tied:
            Df = D.reshape(T * N, nc * M)
            C = _input_cov(s)
            if has_w:
                Y = torch.stack(rec[f"y_{f}"]).reshape(T * N, M)
                C = C + s.sw**2 * (Y @ Y.T) / M
            G = (Df @ Df.T) / M * C
            theta += G.reshape(T, N, T, N).sum((0, 2))
        else:
            Cin = _input_cov(s).reshape(T, N, T, N)
            for t in range(T):
                C = Cin[t, :, t]
                if has_w:
                    y = rec[f"y_{f}"][t]
                    C = C + s.sw**2 * (y @ y.T) / M
                theta += (D[t] @ D[t].T) / M * C
    return nngp, theta


def _input_cov(s: _Setting) -> torch.Tensor:
    """``(T N, T N)``: s_u^2 <x_t, x'_t'> / m + s_b^2 over the rows (t, x) (row t N + x)."""
    N, T, m = s.X.shape
    Xc = s.X.transpose(0, 1).reshape(T * N, m)
    return s.su**2 * (Xc @ Xc.T) / m + s.sb**2


def limit_kernels(
    arch: Architecture,
    x1,
    x2=None,
    *,
    particles: int = DEFAULT_PARTICLES,
    batches: int = DEFAULT_BATCHES,
    seed: int = DEFAULT_SEED,
    qmc: bool = DEFAULT_QMC,
    tied: bool = True,
    ntk: bool = True,
    nngp: bool = True,
    dtype: torch.dtype | str = torch.float64,
    device: torch.device | str | None = None,
    progress: Callable[[int], None] | None = None,
) -> LimitKernels:
    """The infinite-width NTK and NNGP of ``arch`` (cells ``elman``, ``minimalrnn``, ``gru``;
    depth 1, h0 zero, one direction, Gaussian init, any readout, any lengths) by the particle
    simulation of the module docstring.

    Args:
        arch: the architecture (``parameterization="ntk"`` for the NTK).
        x1, x2: ``(N, T, m)`` or lists of ``(T_i, m)``; x2 None for x2 = x1.
        particles: particles per simulation (M); the bias is O(1 / M).
        batches: independent simulations averaged (their spread gives the standard error;
            the total cost is particles * batches).
        seed: of the simulations' normals (simulation b uses seed + b).
        qmc: scrambled Sobol normals (each simulation its own scrambling) instead of
            pseudo-random ones.
        tied: weights shared across steps (the network of :class:`rntk_empirical.ElmanRNN`);
            False: every step (padded position) has its own independent W_f, U_f, b_f.
        ntk, nngp: which kernels to compute.
        dtype: of the returned kernels (the simulation runs in float64).
        device: where the simulation runs; None: the inputs' device.
        progress: called with 1 after every step of every simulation (2 T per simulation with
            the NTK, T without), e.g. a tqdm bar's ``update``.

    Returns:
        :class:`LimitKernels` with ``(N1, N2)`` kernels and standard errors.

    Raises:
        ValueError: an unsupported option (:func:`supported`), ``ntk=True`` with the
            standard parameterization, bad inputs, or particles / batches < 1.
    """
    why = supported(arch)
    if why is not None:
        raise ValueError(why)
    if ntk and arch.parameterization == "standard":
        raise ValueError(
            "the NTK has no infinite-width limit in the 'standard' parameterization; use "
            "parameterization='ntk', or ntk=False for the NNGP"
        )
    for name, value in (("particles", particles), ("batches", batches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is not valid; expected an integer >= 1")
    t0 = time.perf_counter()
    out_dtype = resolve_dtype(dtype)
    s1 = as_sequences(x1, name="x1")
    dev = resolve_device(device) if device is not None else s1.values.device
    s1 = s1.to(device=dev, dtype=torch.float64)
    s2 = None
    if x2 is not None:
        s2 = as_sequences(x2, name="x2", input_dim=s1.dim, dtype=torch.float64, device=dev)
    allseq, i1, i2 = _unique(s1, s2)
    readout = get_readout(arch.readout)
    T = allseq.max_len
    nl = get_nonlinearity(arch.nonlinearity)
    setting = _Setting(
        cell=arch.cell,
        sw=arch.sigma_w,
        su=arch.sigma_u,
        sb=arch.sigma_b,
        sv=arch.sigma_v,
        g=GATES[arch.gate],
        dg=GATE_DERIVATIVES[arch.gate],
        phi=nl.phi,
        dphi=nl.dphi,
        X=allseq.values,
        keep=allseq.mask.T.to(torch.float64)[:, :, None],
        w=readout.weights(allseq.lengths.to(dev), T, arch).T[:, :, None].contiguous(),
        independent=readout.independent,
        tied=tied,
    )
    ks, ts = [], []
    with torch.no_grad():
        for b in range(batches):
            k, th = _simulate(setting, particles, seed + b, qmc, ntk, progress)
            ks.append(k)
            ts.append(th)

    def reduce(stack: list) -> tuple[torch.Tensor, torch.Tensor | None]:
        st = torch.stack(stack)[:, i1][:, :, i2]
        se = st.std(0) / math.sqrt(batches) if batches > 1 else None
        mean = st.mean(0)
        if s2 is None:  # exactly symmetric
            mean = 0.5 * (mean + mean.T)
            se = None if se is None else 0.5 * (se + se.T)
        cast = None if se is None else se.to(out_dtype)
        return mean.to(out_dtype), cast

    K, K_se = reduce(ks) if nngp else (None, None)
    Th, Th_se = reduce(ts) if ntk else (None, None)
    return LimitKernels(Th, K, Th_se, K_se, particles, batches, time.perf_counter() - t0)


def _unique(s1: Sequences, s2: Sequences | None) -> tuple[Sequences, torch.Tensor, torch.Tensor]:
    """The distinct sequences of x1 and x2 padded to one length, and the rows of x1 and x2
    in them (a repeated sequence is one column of the simulation, not two)."""
    if s2 is not None and s2.max_len != s1.max_len:
        T = max(s1.max_len, s2.max_len)
        s1, s2 = s1.padded_to(T), s2.padded_to(T)
    both = s1 if s2 is None else Sequences(
        torch.cat([s1.values, s2.values]), torch.cat([s1.lengths, s2.lengths])
    )
    first: dict[int, int] = {}
    rows, index = [], []
    for j, key in enumerate(both.keys):
        if key not in first:
            first[key] = len(rows)
            rows.append(j)
        index.append(first[key])
    uniq = both.select(torch.tensor(rows, device=both.values.device))
    idx = torch.tensor(index)
    n1 = s1.n
    return uniq, idx[:n1], (idx[:n1] if s2 is None else idx[n1:])


def estimated_seconds(arch: Architecture, n: int, T: int, particles: int, batches: int) -> float:
    """Rough wall time of :func:`limit_kernels` on ``n`` distinct sequences of length ``T``:
    the O(M (n T)^2) products of the sampling and the NTK sums over the measured rate."""
    fams = sum(CELL_FAMILIES.get(arch.cell, {"w": True}).values()) + 1
    work = particles * batches * fams * (n * T) ** 2
    return work / FLOPS_PER_SECOND


# Measured rate of the products above on the 2-core machine (only for the estimate).
FLOPS_PER_SECOND = 1e9
