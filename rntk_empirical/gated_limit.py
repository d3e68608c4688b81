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

The candidate integrated exactly (``candidate="exact"``, the default for the minimalRNN and
the GRU up to ``EXACT_MAX_STEPS`` steps; docs/gated.md section 3.3). The candidate's
pre-activations are one Gaussian family independent of the gates', and h^t(x) =
sum_{a<=t} A^t_a(x) c^a(x) is linear in the
candidates c^a = phi(pre_c^a) with gate-product coefficients (minimalRNN: A^t_a = (1 - u^a)
prod_{a<r<=t} u^r; GRU: z^a prod_{a<r<=t} (1 - z^r)). The particles then carry only the gate
families and the coefficients, and every second moment that involves c's is the coefficients'
particle mean contracted with C(x,a; x',b) = E[c^a(x) c^b(x')], the nonlinearity's dual of the
candidate's covariance (minimalRNN: the input covariance; GRU: s_w^2 E[r h r' h'] + input,
built step by step). The backward's dh depends on v, the gates and the Zbar's only, so
E[dpre_c dpre_c'] = E[(dh gate)(dh' gate')] V_phi' and the gate gradients (linear in the c's)
are contracted with C the same way. ``candidate="particles"`` samples the candidate like the
gates (the estimator of ``ENGINE_VERSION`` 1; the Elman cell always).

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
from rntk_empirical.dual import dual_activations
from rntk_empirical.nonlinearities import Nonlinearity, get_nonlinearity
from rntk_empirical.readouts import get_readout
from rntk_empirical.sequences import Sequences, as_sequences

DEFAULT_PARTICLES = 2**14
DEFAULT_BATCHES = 4
DEFAULT_SEED = 0
DEFAULT_QMC = True
# Version of the simulation's numerics: part of cache keys (experiments) with the settings.
ENGINE_VERSION = 2
# The cells whose candidate can be integrated exactly, and the longest sequences for which
# ``candidate=None`` does so: its cost grows as T^3-T^4 against the sampling's T^2 (3-5x the
# sampled candidate's time at T = 20, ~1.2x at T = 5; docs/gated.md section 3.3).
EXACT_CANDIDATE = frozenset({"minimalrnn", "gru"})
EXACT_MAX_STEPS = 10
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
        if rows.numel() == 0:
            return y.new_zeros(y.shape[0], M)
        ya = y[rows]
        C12 = ya @ self.Y[:k].T / M if k else None  # (n, k)
        Z = self._add(ya @ ya.T / M, C12)
        self.Y[k : k + rows.numel()] = ya
        return self._scatter(Z, rows, y.shape[0])

    def _add(self, S: torch.Tensor, C12: torch.Tensor | None) -> torch.Tensor:
        """Samples ``n`` new rows of covariance ``S (n, n)`` and covariance ``C12 (n, k)``
        with the stored rows (None when k = 0), stores their factor and normals: ``(n, M)``."""
        k, n = self.k, S.shape[0]
        if k:
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
        self.E[k : k + n] = eps
        self.k = k + n
        return Z

    @staticmethod
    def _scatter(Z: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
        if rows.numel() == n:
            return Z
        out = Z.new_zeros(n, Z.shape[1])
        out[rows] = Z
        return out


class _KnownFamily(_Family):
    """A Gaussian family whose covariances are given (computed exactly in the candidate's
    law, section 3.3 of docs/gated.md) instead of estimated from stored particles of y.
    Rows are offered in blocks; rows of zero variance give Z = 0 and are not stored."""

    def __init__(self, M: int, capacity: int, like: torch.Tensor, normals: _Normals):
        self.M, self.k, self.normals = M, 0, normals
        self.E = like.new_empty(capacity, M)
        self.L = like.new_zeros(capacity, capacity)
        self.kept: list[int] = []  # offered-row numbers of the stored rows
        self.offered = 0

    def extend_known(self, S: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """``S (n, n)``: covariance of the new rows; ``C (n, offered)``: their covariance with
        every earlier offered row -> ``Z (n, M)``."""
        n = S.shape[0]
        rows = (S.diagonal() > 0).nonzero().flatten()
        kept = torch.tensor(self.kept, dtype=torch.long, device=S.device)
        new = [self.offered + int(i) for i in rows]
        self.offered += n
        if rows.numel() == 0:
            return S.new_zeros(n, self.M)
        C12 = C[rows][:, kept] if self.k else None
        Z = self._add(S[rows][:, rows], C12)
        self.kept += new
        return self._scatter(Z, rows, n)


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
    nl: Nonlinearity  # the candidate's nonlinearity (its dual, for the exact candidate)
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


def _pair_moments(
    new: torch.Tensor, olds: list[torch.Tensor], Cc: torch.Tensor, M: int
) -> torch.Tensor:
    """``(len(olds), N, N)``: for each ``old`` of ``olds``,

        out[j, x, y] = (1/M) sum_p sum_{s, r} new[x, s, p] Cc[s, x, r, y] old_j[y, r, p],

    i.e. E[a(x) b(y)] of a = sum_s new[x, s] c^s(x), b = sum_r old[y, r] c^r(y) when the c's
    are independent of the coefficients with E[c^s(x) c^r(y)] = Cc[s, x, r, y] (``(T, N, T,
    N)``); ``new (N, S, P)``, ``old_j (N, S_j, P)`` (coefficients of the steps < S, S_j; P
    = channels x particles). Cost O(N^2 S sum_j S_j P), as GEMMs."""
    N, S, P = new.shape
    out = new.new_zeros(len(olds), N, N)
    if S == 0:
        return out
    flat = new.reshape(N * S, P)
    Cx = Cc[:S].permute(1, 0, 3, 2)  # (x, s, y, r)
    for j, old in enumerate(olds):
        R = old.shape[1]
        if R:  # the particle means of the coefficient products (one GEMM), then C
            G = (flat @ old.reshape(N * R, P).T).reshape(N, S, N, R)
            out[j] = (G * Cx[:, :, :, :R]).sum((1, 3))
    return out / M


def _candidate_moments(s: _Setting) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Cc, Cdc)``, each ``(T, N, T, N)``: E[phi(a^t(x)) phi(a^t'(y))] and the same of phi'
    for the minimalRNN's input-only candidate pre-activations a = a_u A x_t + a_b b_a
    (covariance s_u^2 <x_t, y_t'> / m + s_b^2; untied: independent across steps, so the
    cross-step moments are those of covariance 0, the products of the means)."""
    N, T, _ = s.X.shape
    Cin = _input_cov(s)
    if not s.tied:
        step = torch.arange(T, device=Cin.device).repeat_interleave(N)
        Cin = Cin * (step[:, None] == step[None, :])
    d = Cin.diagonal()
    same = torch.eye(T * N, dtype=torch.bool, device=Cin.device)
    Cc, Cdc = dual_activations(s.nl, d[:, None], d[None, :], Cin, same=same)
    return Cc.reshape(T, N, T, N), Cdc.reshape(T, N, T, N)


def _simulate_minimalrnn_exact(s: _Setting, M: int, seed: int, qmc: bool, ntk: bool,
                               progress=None):  # fmt: skip
    """:func:`_simulate` for the minimalRNN with the candidate integrated exactly
    (docs/gated.md, section 3.3): the particles carry the gates and the coefficients
    A^t[x, a] of h^t(x) = sum_{a<=t} A^t[x, a] c^a(x); every second moment is contracted with
    the candidate's exact moments. Returns ``(nngp, theta or None)``, each ``(N, N)``."""
    N, T, m = s.X.shape
    ref = s.X
    walls = N * T
    dim = (m + 1) * (1 if s.tied else T) + walls + (walls + (T if s.independent else 0)) * ntk
    normals = _Normals(M, dim, seed, qmc, ref)
    Cc, Cdc = _candidate_moments(s)
    inp = _input_terms(s, normals)
    fam = _KnownFamily(M, walls, ref, normals) if s.tied else None
    A: list[torch.Tensor] = []  # A[t]: (N, t + 1, M)
    pres: list[torch.Tensor] = []
    Q = ref.new_zeros(T, N, T, N)  # E[h^t(x) h^t'(y)]
    prev = ref.new_zeros(N, 0, M)
    for t in range(T):
        k = s.keep[t]
        pu = inp[t]
        if t > 0:
            pu = pu + _gate_matmul(s, fam, Q, t, M, normals)
        u = s.g(pu)
        At = torch.cat([prev * (k * u + 1 - k)[:, None], (k * (1 - u))[:, None]], 1)
        A.append(At)
        pres.append(pu)
        _fill(Q, t, _pair_moments(At, A, Cc, M), 0)
        prev = At
        if progress is not None:
            progress(1)
    nngp = _readout_nngp(s, Q)
    if not ntk:
        return nngp, None

    # Backward (module docstring; two channels for a shared readout): dpre_u^t(x) =
    # k dh g'(pu) (h^{t-1} - c^t) in coefficients D[t] (N, t + 1, channels x M);
    # dpre_a^t = k dh (1 - u) phi'(a^t): its particle factor e = k dh (1 - u).
    nc = 1 if s.independent else 2
    bfam = _KnownFamily(M, walls, ref, normals) if s.tied else None
    D: list[torch.Tensor | None] = [None] * T
    Ea = ref.new_zeros(T, N, nc * M)
    Gu = ref.new_zeros(T, N, T, N)  # E[dpre_u^t(x) dpre_u^t'(y)]
    dh = ref.new_zeros(nc, N, M)
    for t in reversed(range(T)):
        k = s.keep[t]
        if nc == 2:
            dh[0] += s.sv * s.w[t]
        else:
            dh = dh + s.sv * s.w[t] * normals.take(1)
        pu = pres[t]
        u = s.g(pu)
        a = k * dh * s.dg(pu)  # (nc, N, M)
        a3 = a[:, :, None]  # (nc, N, 1, M)
        Dt = torch.cat([a3 * A[t - 1] if t else a3[:, :, :0], -a3], 2)
        D[t] = Dt.permute(1, 2, 0, 3).reshape(N, t + 1, nc * M)
        Ea[t] = (k * dh * (1 - u)).transpose(0, 1).reshape(N, nc * M)
        if s.tied:
            _fill(Gu, t, _pair_moments(D[t], D[t:], Cc, M), t)  # against steps t..T-1
        else:
            Gu[t, :, t] = _pair_moments(D[t], [D[t]], Cc, M)[0]
        zb = _transposed_matmul(s, bfam, Gu, t, M, normals)
        back = dh * u + (zb if nc == 1 else torch.stack([torch.zeros_like(zb), zb]))
        dh = k * back + (1 - k) * dh
        if progress is not None:
            progress(1)

    Cin = _input_cov(s).reshape(T, N, T, N)
    Qs = torch.zeros_like(Q)  # E[h^{t-1} h^{t'-1}]: the u-family's y
    Qs[1:, :, 1:] = Q[:-1, :, :-1]
    Ga = (Ea.reshape(T * N, -1) @ Ea.reshape(T * N, -1).T / M).reshape(T, N, T, N)
    terms = Gu * (s.sw**2 * Qs + Cin) + Ga * Cdc * Cin
    return nngp, nngp + _ntk_sum(s, terms)


def _gate_matmul(
    s: _Setting, fam: _KnownFamily | None, Q: torch.Tensor, t: int, M: int, normals: _Normals
) -> torch.Tensor:
    """``(N, M)``: s_w Z^{W h^{t-1}} of a gate family at step t >= 1, sampled from the state
    moments ``Q (T, N, T, N)``: the tied family ``fam`` extended by step t's block given its
    earlier steps, or (untied) a fresh family of this step alone."""
    N = Q.shape[1]
    if not s.tied:
        fresh = _KnownFamily(M, N, s.X, normals)
        return s.sw * fresh.extend_known(Q[t - 1, :, t - 1], s.X.new_zeros(N, 0))
    cross = Q[t - 1, :, : t - 1].reshape(N, (t - 1) * N)
    return s.sw * fam.extend_known(Q[t - 1, :, t - 1], cross)


def _transposed_matmul(
    s: _Setting, fam: _KnownFamily | None, G: torch.Tensor, t: int, M: int, normals: _Normals
) -> torch.Tensor:
    """``(N, M)``: s_w Zbar^t = s_w Z^{W^T dpre^t} of a backward family at step t, sampled from
    its moments ``G (T, N, T, N)`` (steps t..T-1 known, offered in backward order): the tied
    family ``fam`` extended, or (untied) a fresh family of this step alone."""
    N = G.shape[1]
    if not s.tied:
        fresh = _KnownFamily(M, N, s.X, normals)
        return s.sw * fresh.extend_known(G[t, :, t], s.X.new_zeros(N, 0))
    cross = G[t, :, t + 1 :].flip(1).reshape(N, -1)
    return s.sw * fam.extend_known(G[t, :, t], cross)


def _fill(G: torch.Tensor, t: int, q: torch.Tensor, first: int) -> None:
    """Writes the moments ``q (n, N, N)`` of step t against steps first..first + n - 1 into
    ``G (T, N, T, N)`` and their transposes (G stays symmetric)."""
    n = q.shape[0]
    G[t, :, first : first + n] = q.permute(1, 0, 2)
    G[first : first + n, :, t] = q.transpose(1, 2)


def _readout_nngp(s: _Setting, Q: torch.Tensor) -> torch.Tensor:
    """``(N, N)``: s_v^2 E[hbar hbar'] from the state moments ``Q (T, N, T, N)``."""
    W = s.w[..., 0]  # (T, N)
    if s.independent:
        return s.sv**2 * torch.einsum("tx,xyt,ty->xy", W, Q.diagonal(dim1=0, dim2=2), W)
    return s.sv**2 * torch.einsum("tx,txry,ry->xy", W, Q, W)


def _ntk_sum(s: _Setting, terms: torch.Tensor) -> torch.Tensor:
    """``(N, N)``: the sum over step pairs of ``terms (T, N, T, N)`` (t = t' only when
    untied)."""
    return terms.sum((0, 2)) if s.tied else terms.diagonal(dim1=0, dim2=2).sum(-1)


def _simulate_gru_exact(s: _Setting, M: int, seed: int, qmc: bool, ntk: bool, progress=None):
    """:func:`_simulate` for the GRU with the candidate integrated exactly (docs/gated.md,
    section 3.3): the particles carry the z and r gates and the coefficients A^t[x, a] of
    h^t(x) = sum_{a<=t} A^t[x, a] c^a(x); the candidate pre-activations pre_h are one Gaussian
    family independent of the gates, whose covariance s_w^2 E[r h r' h'] + S_in is built step
    by step, and E[c c'], E[phi'(pre_h) phi'(pre_h')] are the duals of its 2x2 blocks.
    Returns ``(nngp, theta or None)``, each ``(N, N)``."""
    N, T, m = s.X.shape
    ref = s.X
    walls = N * T
    inputs = 2 * (m + 1) * (1 if s.tied else T)
    dim = inputs + 2 * walls + (3 * walls + (T if s.independent else 0)) * ntk
    normals = _Normals(M, dim, seed, qmc, ref)
    inp = {f: _input_terms(s, normals) for f in ("z", "r")}
    fams = {f: _KnownFamily(M, walls, ref, normals) if s.tied else None for f in ("z", "r")}
    Cin = _input_cov(s).reshape(T, N, T, N)
    Sh = ref.new_zeros(T, N, T, N)  # Cov(pre_h^t(x), pre_h^t'(y))
    Cc, Cdc = torch.zeros_like(Sh), torch.zeros_like(Sh)
    Q = torch.zeros_like(Sh)  # E[h^t(x) h^t'(y)]
    A: list[torch.Tensor] = []  # A[t]: (N, t + 1, M)
    Ry: list[torch.Tensor] = []  # coefficients of y_h^t = r^t h^{t-1}: (N, t, M)
    gates: list[tuple[torch.Tensor, torch.Tensor]] = []
    prev = ref.new_zeros(N, 0, M)
    for t in range(T):
        k = s.keep[t]
        pre = {}
        for f in ("z", "r"):
            pre[f] = inp[f][t]
            if t > 0:
                pre[f] = pre[f] + _gate_matmul(s, fams[f], Q, t, M, normals)
        z, r = s.g(pre["z"]), s.g(pre["r"])
        gates.append((pre["z"], pre["r"]))
        Ry.append(r[:, None] * prev)
        olds = Ry if s.tied else [Ry[t]]
        first = 0 if s.tied else t
        _fill(Sh, t, s.sw**2 * _pair_moments(Ry[t], olds, Cc, M), first)
        Sh[t, :, first : t + 1] += Cin[t, :, first : t + 1]
        Sh[first:t, :, t] = Sh[t, :, first:t].permute(1, 2, 0)
        Sh[t, :, t] = 0.5 * (Sh[t, :, t] + Sh[t, :, t].T)
        # the duals of step t against steps <= t (untied: covariance 0 across steps)
        a = Sh[t, :, t].diagonal()[:, None, None]
        b = torch.stack([Sh[j, :, j].diagonal() for j in range(t + 1)])[None]  # (1, t + 1, N)
        same = torch.zeros(N, t + 1, N, dtype=torch.bool, device=ref.device)
        same[:, t] = torch.eye(N, dtype=torch.bool, device=ref.device)
        v, dv = dual_activations(s.nl, a, b, Sh[t, :, : t + 1], same=same)  # (N, t + 1, N)
        Cc[t, :, : t + 1], Cdc[t, :, : t + 1] = v, dv
        Cc[: t + 1, :, t], Cdc[: t + 1, :, t] = v.permute(1, 2, 0), dv.permute(1, 2, 0)
        At = torch.cat([prev * (k * (1 - z) + 1 - k)[:, None], (k * z)[:, None]], 1)
        A.append(At)
        _fill(Q, t, _pair_moments(At, A, Cc, M), 0)
        prev = At
        if progress is not None:
            progress(1)
    nngp = _readout_nngp(s, Q)
    if not ntk:
        return nngp, None

    # Backward (module docstring; two channels for a shared readout): dpre_h^t = e^t
    # phi'(pre_h^t) with the particle factor e = k dh z; dpre_z^t = k dh g'(pz) (c^t - h^{t-1})
    # and dpre_r^t = k dy h^{t-1} g'(pr) in coefficients (N, t + 1 or t, channels x M).
    nc = 1 if s.independent else 2
    P = nc * M
    bf = {f: _KnownFamily(M, walls, ref, normals) if s.tied else None for f in "hzr"}
    G = {f: ref.new_zeros(T, N, T, N) for f in "hzr"}  # E[dpre_f^t(x) dpre_f^t'(y)]
    Eh = ref.new_zeros(T, N, P)
    D: dict[str, list] = {"z": [None] * T, "r": [None] * T}

    def flat(c: torch.Tensor) -> torch.Tensor:  # (nc, N, S, M) -> (N, S, nc M)
        return c.permute(1, 2, 0, 3).reshape(N, c.shape[2], P)

    def chan1(zb: torch.Tensor) -> torch.Tensor:
        return zb[None] if nc == 1 else torch.stack([torch.zeros_like(zb), zb])

    dh = ref.new_zeros(nc, N, M)
    for t in reversed(range(T)):
        k = s.keep[t]
        if nc == 2:
            dh[0] += s.sv * s.w[t]
        else:
            dh = dh + s.sv * s.w[t] * normals.take(1)
        pz, pr = gates[t]
        z, r = s.g(pz), s.g(pr)
        Eh[t] = (k * dh * z).transpose(0, 1).reshape(N, P)
        span = slice(t, T) if s.tied else slice(t, t + 1)
        q = (Eh[t] @ Eh[span].reshape(-1, P).T / M).reshape(N, -1, N) * Cdc[t, :, span]
        _fill(G["h"], t, q.permute(1, 0, 2), t)
        # the gradient of y_h = r h^{t-1}
        dy = chan1(_transposed_matmul(s, bf["h"], G["h"], t, M, normals))
        Aprev = A[t - 1] if t else prev[:, :0]
        az = (k * dh * s.dg(pz))[:, :, None]  # (nc, N, 1, M)
        D["z"][t] = flat(torch.cat([-az * Aprev, az], 2))
        D["r"][t] = flat((k * dy * s.dg(pr))[:, :, None] * Aprev)
        zsum = 0
        for f in "zr":
            olds = D[f][span]
            _fill(G[f], t, _pair_moments(D[f][t], olds, Cc, M), t)
            zsum = zsum + _transposed_matmul(s, bf[f], G[f], t, M, normals)
        back = dh * (1 - z) + dy * r + chan1(zsum)
        dh = k * back + (1 - k) * dh
        if progress is not None:
            progress(1)

    Qs = torch.zeros_like(Q)  # E[h^{t-1} h^{t'-1}]: the z- and r-families' y
    Qs[1:, :, 1:] = Q[:-1, :, :-1]
    terms = G["h"] * Sh + (G["z"] + G["r"]) * (s.sw**2 * Qs + Cin)
    return nngp, nngp + _ntk_sum(s, terms)


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
    particles: int | None = None,
    batches: int | None = None,
    seed: int | None = None,
    qmc: bool | None = None,
    tied: bool = True,
    candidate: str | None = None,
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
        particles: particles per simulation (M; None: ``DEFAULT_PARTICLES``); the bias is
            O(1 / M).
        batches: independent simulations averaged (None: ``DEFAULT_BATCHES``); their spread
            gives the standard error; the cost is linear in particles * batches.
        seed: of the simulations' normals (simulation b uses seed + b; None:
            ``DEFAULT_SEED``).
        qmc: scrambled Sobol normals (each simulation its own scrambling) instead of
            pseudo-random ones (None: ``DEFAULT_QMC``).
        tied: weights shared across steps (the network of :class:`rntk_empirical.ElmanRNN`);
            False: every step (padded position) has its own independent W_f, U_f, b_f.
        candidate: ``"exact"``: the candidate's pre-activations are integrated exactly (its
            moments from the nonlinearity's dual; the particles carry the gates only;
            minimalRNN and GRU; more precise, dearer at long T); ``"particles"``: sampled like
            every other family. None: ``"exact"`` where the cell has it and the sequences
            have at most ``EXACT_MAX_STEPS`` steps, else ``"particles"``.
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
    particles = DEFAULT_PARTICLES if particles is None else particles
    batches = DEFAULT_BATCHES if batches is None else batches
    seed = DEFAULT_SEED if seed is None else seed
    qmc = DEFAULT_QMC if qmc is None else qmc
    if ntk and arch.parameterization == "standard":
        raise ValueError(
            "the NTK has no infinite-width limit in the 'standard' parameterization; use "
            "parameterization='ntk', or ntk=False for the NNGP"
        )
    if candidate not in (None, "exact", "particles"):
        raise ValueError(f"candidate={candidate!r} is not valid; expected 'exact' or 'particles'")
    if candidate == "exact" and arch.cell not in EXACT_CANDIDATE:
        raise ValueError(f"candidate='exact' is implemented for {sorted(EXACT_CANDIDATE)} only")
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
    exact = candidate == "exact" or (
        candidate is None and arch.cell in EXACT_CANDIDATE and T <= EXACT_MAX_STEPS
    )
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
        nl=nl,
        X=allseq.values,
        keep=allseq.mask.T.to(torch.float64)[:, :, None],
        w=readout.weights(allseq.lengths.to(dev), T, arch).T[:, :, None].contiguous(),
        independent=readout.independent,
        tied=tied,
    )
    ks, ts = [], []
    with torch.no_grad():
        for b in range(batches):
            sim = _simulate
            if exact:
                sim = _simulate_gru_exact if arch.cell == "gru" else _simulate_minimalrnn_exact
            k, th = sim(setting, particles, seed + b, qmc, ntk, progress)
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
    return work / WORK_PER_SECOND


# particles x (families + 1) x (n T)^2 per second, measured on the shared 2-core machine
# (``python -m experiments.bench.gated_limit cost``: 1e8-3e8 for N = 8, T = 10-50); only for
# the estimate.
WORK_PER_SECOND = 1.5e8
