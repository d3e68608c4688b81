r"""The infinite-width NNGP and NTK of the gated cells (and Elman) at T <= 2 by deterministic
integration, independent of the particle simulation (docs/gated.md, section 5).

Setting: one layer, h^0 = 0, one direction, Gaussian init, tied weights, the NTK
parameterization, any readout, sequences of lengths 1 or 2 (left padding). Per unit of the
infinite network each pre-activation pre_f^s(x) (family f of the cell, step s of sequence x)
is Gaussian; families of different matrices are independent, and within a family

    Cov(pre_f^s(x), pre_f^s'(x')) = s_u^2 <x_s, x'_s'> / m + s_b^2 + s_w^2 E[y_f^s(x) y_f^s'(x')]

(the last term only for a family with a recurrent matrix; y_f^1 = 0 as h^0 = 0). The
backward pass (gradient independence) adds the readout's v (one N(0, 1) per readout vector)
and Zbar_f^s(x) = Z^{W_f^T dpre_f^s(x)}, zero-mean Gaussians independent of the forward and of
each other across families, with Cov(Zbar_f^s(x), Zbar_f^s'(x')) = E[dpre_f^s(x) dpre_f^s'(x')].
Then

    NNGP(x, x') = E[hbar(x) hbar(x')],    hbar(x) = s_v sum_s w_s(x) v_{d(x,s)} h^s(x),
    NTK(x, x')  = NNGP(x, x') + sum_f sum_{s,s'} E[dpre_f^s(x) dpre_f^s'(x')]
                                              Cov(pre_f^s(x), pre_f^s'(x'))

(w the readout weights, d = steps from the end: one v for a shared readout, one per d for an
independent one).

Method. Every state and backward quantity is written symbolically as a sum of terms
coefficient x (at most one noise: a v or a Zbar) x (a product of functions g, 1 - g, g' of gate
pre-activations and phi, phi' of candidate pre-activations); the expectation of a product of
two such sums factors over the noise and over the families. At T <= 2 a family's factor is an
expectation over at most 4 jointly Gaussian variables (the update gate's pre_z^1, pre_z^2 of x
and x'), computed as follows:

* candidate families (phi, phi'): always one factor per side, E[phi(a) phi(b)] or
  E[phi'(a) phi'(b)]: the nonlinearity's dual (:func:`rntk_empirical.dual.dual_activations`;
  closed forms for relu, erf, gelu, identity; Gauss-Hermite with ``quad_points`` points per
  dimension otherwise);
* erf gates g(p) = (1 + erf(p)) / 2 = Pr(xi <= p), xi ~ N(0, 1/2): with one independent xi_k
  per factor, g(+-p) factors are orthant indicators and g'(p) = density of xi_k - p at 0, so
  the expectation is a Gaussian density at 0 times a centered orthant probability of the
  conditional law (dimension <= 4): closed forms up to 3 (:func:`rntk_empirical.gated_kernels.
  orthants`), Plackett's reduction to a one-dimensional integral (Gauss-Legendre) at 4:
  exact to round-off;
* sigmoid gates: tensor Gauss-Hermite quadrature over the (eigen-)factor of the variables'
  covariance, ``points`` per dimension in 4 dimensions, 2 ``points`` in 3, 4 ``points`` in 1
  and 2, g evaluated once per variable and node and reused by every product (docs/gated.md
  section 5 has the measured error: about 1e-9 relative at the default 48, 1e-8 at 40).

Cost: O(N^2) pairs, each a few dozen small integrals: erf gates well under a second for a few
sequences; sigmoid gates a few seconds per pair of length-2 sequences at the default (the
4-dimensional rules, ``points^4`` nodes, about 42 MB per kept array at 48).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import erf, expit

from rntk_empirical.architecture import Architecture
from rntk_empirical.dual import dual_activations, hermite_rule
from rntk_empirical.gated_kernels import orthants
from rntk_empirical.readouts import get_readout
from rntk_empirical.sequences import Sequences, as_sequences

DEFAULT_POINTS = 48
DEFAULT_QUAD_POINTS = 256
_LEGENDRE = 64  # nodes of the one-dimensional Plackett integral (analytic integrand)

# family name -> (kind, has a recurrent matrix); kind "gate" (g, 1 - g, g') or "phi".
FAMILIES: dict[str, dict[str, tuple[str, bool]]] = {
    "elman": {"w": ("phi", True)},
    "minimalrnn": {"u": ("gate", True), "a": ("phi", False)},
    "gru": {"z": ("gate", True), "r": ("gate", True), "h": ("phi", True)},
}

# A variable is (family, sequence, step); a factor (variable, function) with the function one
# of "g", "h" (= 1 - g), "dg" (= g'), "phi", "dphi". A term's key is (noise, factors): noise
# None (forward), ("v", d) or ("Z", family, sequence, step). An expression: key -> coefficient.
Expr = dict


def _var(family: str, i: int, s: int, func: str) -> Expr:
    return {(None, (((family, i, s), func),)): 1.0}


def _noise(key: tuple, coef: float) -> Expr:
    return {(key, ()): coef} if coef != 0.0 else {}


def _add(*terms: tuple[float, Expr]) -> Expr:
    out: Expr = {}
    for c, e in terms:
        for k, v in e.items():
            out[k] = out.get(k, 0.0) + c * v
    return {k: v for k, v in out.items() if v != 0.0}


def _mul(*exprs: Expr) -> Expr:
    out: Expr = {(None, ()): 1.0}
    for e in exprs:
        nxt: Expr = {}
        for (n1, f1), c1 in out.items():
            for (n2, f2), c2 in e.items():
                if n1 is not None and n2 is not None:
                    raise RuntimeError("a product of two noises (the backward pass is linear)")
                key = (n1 if n1 is not None else n2, tuple(sorted(f1 + f2)))
                nxt[key] = nxt.get(key, 0.0) + c1 * c2
        out = nxt
    return out


def _programs(cell: str, L: int, i: int, sv: float, sw: float, w: list[float]):
    """The symbolic forward and backward pass of sequence ``i`` (length L, readout weights
    ``w[s-1]``): ``(h, y, dpre)`` with h[s] the state, y[f][s] the input of W_f and
    dpre[f][s] the backward pre-activation gradient at step s = 1..L (index 0 unused)."""
    fams = FAMILIES[cell]
    h: list[Expr] = [{}]
    y = {f: [{}] for f in fams}
    for s in range(1, L + 1):
        prev = h[-1]
        if cell == "elman":
            y["w"].append(prev)
            h.append(_var("w", i, s, "phi"))
        elif cell == "minimalrnn":
            y["u"].append(prev)
            u, one_u = _var("u", i, s, "g"), _var("u", i, s, "h")
            h.append(_add((1.0, _mul(u, prev)), (1.0, _mul(one_u, _var("a", i, s, "phi")))))
        else:
            y["z"].append(prev)
            y["r"].append(prev)
            y["h"].append(_mul(_var("r", i, s, "g"), prev))
            z, one_z = _var("z", i, s, "g"), _var("z", i, s, "h")
            h.append(_add((1.0, _mul(one_z, prev)), (1.0, _mul(z, _var("h", i, s, "phi")))))
    dpre = {f: [{}] * (L + 1) for f in fams}
    dh: Expr = {}
    for s in range(L, 0, -1):
        dh = _add((1.0, dh), (1.0, _noise(("v", L - s), sv * w[s - 1])))
        prev = h[s - 1]
        if cell == "elman":
            dpre["w"][s] = _mul(dh, _var("w", i, s, "dphi"))
            back = _noise(("Z", "w", i, s), sw)
        elif cell == "minimalrnn":
            c = _var("a", i, s, "phi")
            dpre["u"][s] = _mul(dh, _add((1.0, prev), (-1.0, c)), _var("u", i, s, "dg"))
            dpre["a"][s] = _mul(dh, _var("u", i, s, "h"), _var("a", i, s, "dphi"))
            back = _add((1.0, _mul(dh, _var("u", i, s, "g"))), (1.0, _noise(("Z", "u", i, s), sw)))
        else:
            c = _var("h", i, s, "phi")
            dy = _noise(("Z", "h", i, s), sw)  # the gradient of y_h = r * h^{s-1}
            dpre["h"][s] = _mul(dh, _var("z", i, s, "g"), _var("h", i, s, "dphi"))
            dpre["z"][s] = _mul(dh, _add((1.0, c), (-1.0, prev)), _var("z", i, s, "dg"))
            dpre["r"][s] = _mul(dy, prev, _var("r", i, s, "dg"))
            back = _add(
                (1.0, _mul(dh, _var("z", i, s, "h"))),
                (1.0, _mul(dy, _var("r", i, s, "g"))),
                (1.0, _noise(("Z", "z", i, s), sw)),
                (1.0, _noise(("Z", "r", i, s), sw)),
            )
        dh = back
    return h, y, dpre


class _Engine:
    """The expectations of the module docstring for one architecture and one set of distinct
    sequences (every number memoized: covariances, family factors, noise covariances)."""

    def __init__(self, arch: Architecture, seqs: Sequences, points: int, quad_points: int,
                 gate_rule: str):  # fmt: skip
        self.arch, self.points, self.quad_points = arch, points, quad_points
        self.fams = FAMILIES[arch.cell]
        self.exact_gate = gate_rule == "exact" or (gate_rule == "auto" and arch.gate == "erf")
        if self.exact_gate and arch.gate != "erf":
            raise ValueError("gate_rule='exact' needs the erf gate; use 'quadrature'")
        # name -> (the base function computed at the nodes, its name, a cheap transform)
        if arch.gate == "erf":
            g = (lambda p: 0.5 * (1.0 + erf(p)), "g")
            dg = (lambda p: np.exp(-p * p) / math.sqrt(math.pi), "dg")
            self.gfun = {"g": (*g, None), "h": (*g, lambda v: 1.0 - v), "dg": (*dg, None)}
        else:
            g = (expit, "g")
            self.gfun = {"g": (*g, None), "h": (*g, lambda v: 1.0 - v),
                         "dg": (*g, lambda v: v * (1.0 - v))}  # fmt: skip
        T = seqs.max_len
        vals = seqs.values.detach().to("cpu", torch.float64).numpy()
        self.L = [int(n) for n in seqs.lengths]
        # inputs[i][s - 1] = x_s of sequence i
        self.inputs = [vals[i, T - L :] for i, L in enumerate(self.L)]
        readout = get_readout(arch.readout)
        W = readout.weights(seqs.lengths.cpu(), T, arch).numpy()
        self.w = [list(W[i, T - L :]) for i, L in enumerate(self.L)]
        self.independent = readout.independent
        self.h, self.y, self.dpre = [], [], []
        for i, L in enumerate(self.L):
            h, y, d = _programs(arch.cell, L, i, arch.sigma_v, arch.sigma_w, self.w[i])
            self.h.append(h)
            self.y.append(y)
            self.dpre.append(d)
        self._cov: dict = {}
        self._fam: dict = {}
        self._zcov: dict = {}
        self._dual: dict = {}
        self._grids: dict = {}

    # ------------------------------------------------------------------ covariances
    def cov(self, a: tuple, b: tuple) -> float:
        """Cov of two pre-activations (family, sequence, step) of one family."""
        key = (a, b) if a <= b else (b, a)
        if key not in self._cov:
            f, i, s = a
            _, j, t = b
            m = self.inputs[i].shape[1]
            xs, xt = self.inputs[i][s - 1], self.inputs[j][t - 1]
            c = self.arch.sigma_u**2 * float(xs @ xt) / m + self.arch.sigma_b**2
            if self.fams[f][1]:
                c += self.arch.sigma_w**2 * self.expect(self.y[i][f][s], self.y[j][f][t])
            self._cov[key] = c
        return self._cov[key]

    def noise(self, n1, n2) -> float:
        if n1 is None and n2 is None:
            return 1.0
        if n1 is None or n2 is None or n1[0] != n2[0]:
            return 0.0
        if n1[0] == "v":
            return 1.0 if (not self.independent or n1[1] == n2[1]) else 0.0
        if n1[1] != n2[1]:
            return 0.0
        key = (n1, n2) if n1 <= n2 else (n2, n1)
        if key not in self._zcov:
            _, f, i, s = n1
            _, _, j, t = n2
            self._zcov[key] = self.expect(self.dpre[i][f][s], self.dpre[j][f][t])
        return self._zcov[key]

    # ------------------------------------------------------------------ expectations
    def expect(self, e1: Expr, e2: Expr) -> float:
        """E[e1 e2] of two expressions."""
        total = 0.0
        for (n1, f1), c1 in e1.items():
            for (n2, f2), c2 in e2.items():
                nz = self.noise(n1, n2)
                if nz == 0.0:
                    continue
                by_family: dict[str, list] = {}
                for var, func in f1 + f2:
                    by_family.setdefault(var[0], []).append((var, func))
                val = c1 * c2 * nz
                for fam, factors in by_family.items():
                    val *= self.family(fam, tuple(sorted(factors)))
                    if val == 0.0:
                        break
                total += val
        return total

    def family(self, fam: str, factors: tuple) -> float:
        key = (fam, factors)
        if key not in self._fam:
            if self.fams[fam][0] == "phi":
                self._fam[key] = self._phi_pair(factors)
            else:
                self._fam[key] = self._gates(factors)
        return self._fam[key]

    def _phi_pair(self, factors: tuple) -> float:
        (v1, f1), (v2, f2) = factors  # always one candidate factor per side (module docstring)
        if f1 != f2:
            raise RuntimeError(f"unexpected candidate factors {factors}")
        if (v1, v2) not in self._dual:
            self._duals([(v1, v2)])
        return self._dual[(v1, v2)][0 if f1 == "phi" else 1]

    def _duals(self, pairs: list[tuple]) -> None:
        """(E[phi phi'], E[phi' phi']) of these variable pairs, in one call of the dual."""
        a, b, c = (
            torch.tensor([self.cov(*p) for p in q], dtype=torch.float64)
            for q in ([(v, v) for v, _ in pairs], [(v, v) for _, v in pairs], pairs)
        )
        same = torch.tensor([v1 == v2 for v1, v2 in pairs])
        k, g = dual_activations(
            self.arch.nonlinearity, a, b, c, quad_points=self.quad_points, same=same
        )
        for p, kk, gg in zip(pairs, k.tolist(), g.tolist()):
            self._dual[p] = (kk, gg)

    def _prefetch_duals(self) -> None:
        """Every candidate pair, batched by the later step of the pair (a step-2 covariance
        needs the step-1 duals): the dual is called a few times, not once per pair."""
        for f, (kind, _) in self.fams.items():
            if kind != "phi":
                continue
            vs = sorted((f, i, s) for i, L in enumerate(self.L) for s in range(1, L + 1))
            for step in (1, 2):
                pairs = [(a, b) for a in vs for b in vs if a <= b and max(a[2], b[2]) == step]
                if pairs:
                    self._duals(pairs)

    def _gates(self, factors: tuple) -> float:
        """E[prod of g, 1 - g, g' of one gate family's variables]."""
        vars_ = sorted({v for v, _ in factors})
        if self.exact_gate:
            C = np.array([[self.cov(a, b) for b in vars_] for a in vars_])
            return erf_gate_expectation(C, [vars_.index(v) for v, _ in factors],
                                        [f for _, f in factors])  # fmt: skip
        # a kept grid over a superset of these variables serves (its marginal is exact)
        key = next((k for k in reversed(self._grids) if set(vars_) <= set(k)), None)
        if key is None:
            key = tuple(vars_)
            C = np.array([[self.cov(a, b) for b in key] for a in key])
            self._grids[key] = GaussianGrid(C, self.points)
            while len(self._grids) > 2:  # bounded memory (4-d grids are points^4 nodes)
                del self._grids[next(iter(self._grids))]
        grid = self._grids[key]
        return grid.mean([(key.index(v), *self.gfun[f]) for v, f in factors])

    def kernels(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ntk, nngp)``, each ``(N, N)`` over the distinct sequences."""
        self._prefetch_duals()
        N = len(self.L)
        sv = self.arch.sigma_v
        hbar = [
            _add(*[(sv * self.w[i][s - 1], _mul(_noise(("v", L - s), 1.0), self.h[i][s]))
                   for s in range(1, L + 1)])
            for i, L in enumerate(self.L)
        ]  # fmt: skip
        K, Th = np.zeros((N, N)), np.zeros((N, N))
        for i in range(N):
            for j in range(i, N):
                k = self.expect(hbar[i], hbar[j])
                th = k
                for f in self.fams:
                    for s in range(1, self.L[i] + 1):
                        for t in range(1, self.L[j] + 1):
                            b = self.expect(self.dpre[i][f][s], self.dpre[j][f][t])
                            if b != 0.0:
                                th += b * self.cov((f, i, s), (f, j, t))
                K[i, j] = K[j, i] = k
                Th[i, j] = Th[j, i] = th
        return Th, K


class GaussianGrid:
    """A tensor Gauss-Hermite rule for Y ~ N(0, C), C ``(k, k)`` positive semi-definite with
    k <= 4: Y = F e over the r nonzero eigen-directions of C (e ~ N(0, I_r)), n^r nodes with
    n = ``points`` for r = 4, 2 ``points`` for r = 3, 4 ``points`` for r <= 2. The values of
    each function of each variable at the nodes are computed once and kept, so many products
    of the same variables cost a few multiplications each."""

    def __init__(self, C: np.ndarray, points: int = DEFAULT_POINTS):
        lam, V = np.linalg.eigh(C)
        keep = lam > 1e-13 * max(lam.max(), 1e-300)
        self.F = V[:, keep] * np.sqrt(lam[keep])
        r = self.F.shape[1]
        if r > 4:
            raise ValueError(f"a {r}-dimensional Gaussian expectation (at most 4 are supported)")
        n = {0: 1, 1: 4 * points, 2: 4 * points, 3: 2 * points, 4: points}[r]
        z, w = hermite_rule(n) if r else (np.zeros(1), np.ones(1))
        shape = [1] * max(r, 1)
        self.z = []
        W = np.ones(1)
        for d in range(max(r, 1)):
            sh = list(shape)
            sh[d] = n
            self.z.append(z.reshape(sh))
            W = W * w.reshape(sh)
        self.shape = W.shape
        self.W = W.reshape(-1)
        self._vals: dict = {}

    def values(self, k: int, name: str, fn) -> np.ndarray:
        """fn(Y_k) at the nodes (flattened), computed once per ``(k, name)``."""
        if (k, name) not in self._vals:
            y = np.zeros(self.shape)
            for d in range(self.F.shape[1]):
                y = y + self.F[k, d] * self.z[d]
            self._vals[(k, name)] = fn(y.reshape(-1))
        return self._vals[(k, name)]

    def mean(self, factors: list[tuple]) -> float:
        """E[prod fn(Y_k)] over factors ``(k, fn, name)`` or ``(k, fn, name, transform)``:
        the factor is ``transform(fn(Y_k))`` (e.g. 1 - g from g's kept values)."""
        prod = self.W
        for k, fn, name, *rest in factors:
            v = self.values(k, name, fn)
            prod = prod * (v if not rest or rest[0] is None else rest[0](v))
        return float(prod.sum())


def gaussian_product_expectation(
    C: np.ndarray, idx: list[int], funcs: list, points: int = DEFAULT_POINTS
) -> float:
    """E[prod_k funcs[k](Y[idx[k]])], Y ~ N(0, C), by a :class:`GaussianGrid`."""
    grid = GaussianGrid(np.asarray(C, dtype=np.float64), points)
    return grid.mean([(k, f, str(i)) for i, (k, f) in enumerate(zip(idx, funcs))])


def erf_gate_expectation(C: np.ndarray, idx: list[int], funcs: list[str]) -> float:
    """E[prod_k f_k(Y[idx[k]])] for the erf gate g(p) = (1 + erf(p)) / 2, f_k one of "g",
    "h" (1 - g) and "dg" (g'), Y ~ N(0, C): exact (module docstring). With eta_k = xi_k -
    sign_k Y[idx[k]], xi_k ~ N(0, 1/2) independent (sign -1 for "h"), g factors are
    1{eta_k <= 0} and g' factors the density of eta_k at 0, so the expectation is
    p_{eta_D}(0) Pr(eta_P <= 0 | eta_D = 0) (D the g' factors, P the others)."""
    sign = np.array([-1.0 if f == "h" else 1.0 for f in funcs])
    ix = np.array(idx)
    S = C[np.ix_(ix, ix)] * sign[:, None] * sign[None, :] + 0.5 * np.eye(len(ix))
    D = [k for k, f in enumerate(funcs) if f == "dg"]
    P = [k for k, f in enumerate(funcs) if f != "dg"]
    dens = 1.0
    M = S[np.ix_(P, P)]
    if D:
        SDD = S[np.ix_(D, D)]
        dens = (2 * math.pi) ** (-len(D) / 2) / math.sqrt(np.linalg.det(SDD))
        if P:
            SPD = S[np.ix_(P, D)]
            M = M - SPD @ np.linalg.solve(SDD, SPD.T)
    return dens * centered_orthant(M)


def centered_orthant(M: np.ndarray) -> float:
    """Pr(Y <= 0), Y ~ N(0, M), M positive definite of size k <= 4: closed forms for k <= 3
    (:func:`rntk_empirical.gated_kernels.orthants`); for k = 4 Plackett's reduction: with the
    correlations rho_i4 (i < 4) scaled by t in [0, 1], dP/drho_ij = phi_2(0, 0; rho_ij) times
    the (closed-form) bivariate orthant of the other two given Y_i = Y_j = 0, so

        P(R) = P_3(R_123) / 2 + int_0^1 sum_{i<4} rho_i4 dP/drho_i4(R(t)) dt

    by Gauss-Legendre quadrature (the integrand is analytic on [0, 1] for positive definite
    R: R(t) is a convex combination of R and blockdiag(R_123, 1))."""
    k = M.shape[0]
    if k == 0:
        return 1.0
    if k <= 3:
        return float(orthants(M[None], np.ones((1, k)))[0])
    if k > 4:
        raise ValueError(f"a {k}-dimensional orthant (at most 4 are supported)")
    d = np.sqrt(np.diag(M))
    R = M / np.outer(d, d)
    base = 0.5 * float(orthants(R[None, :3, :3], np.ones((1, 3)))[0])
    x, wl = np.polynomial.legendre.leggauss(_LEGENDRE)
    t, wl = 0.5 * (x + 1.0), 0.5 * wl
    Rt = np.repeat(R[None], len(t), 0)
    Rt[:, :3, 3] *= t[:, None]
    Rt[:, 3, :3] *= t[:, None]
    total = np.zeros(len(t))
    for i in range(3):
        rho = Rt[:, i, 3]
        rest = [j for j in range(3) if j != i]
        A = Rt[:, rest][:, :, rest]  # (Q, 2, 2)
        B = Rt[:, rest][:, :, [i, 3]]  # (Q, 2, 2)
        G = Rt[:, [i, 3]][:, :, [i, 3]]
        cond = A - B @ np.linalg.solve(G, np.swapaxes(B, 1, 2))
        rc = cond[:, 0, 1] / np.sqrt(cond[:, 0, 0] * cond[:, 1, 1])
        p2 = 0.25 + np.arcsin(np.clip(rc, -1.0, 1.0)) / (2 * math.pi)
        dens = 1.0 / (2 * math.pi * np.sqrt(1.0 - rho * rho))
        total += R[i, 3] * dens * p2
    return base + float(wl @ total)


def supported(arch: Architecture, lengths) -> str | None:
    """None if :func:`exact_kernels_t2` computes ``arch`` on sequences of these lengths,
    else a one-line reason."""
    if arch.cell not in FAMILIES:
        return f"the exact T <= 2 kernels have no step for cell {arch.cell!r}"
    for field, value in (("depth", 1), ("bidirectional", False), ("h0", "zero"),
                         ("init", "gaussian")):  # fmt: skip
        if getattr(arch, field) != value:
            return (f"the exact T <= 2 kernels support {field}={value!r} only "
                    f"(got {getattr(arch, field)!r})")  # fmt: skip
    if arch.parameterization != "ntk":
        return "the exact T <= 2 kernels need parameterization='ntk' (the NTK's limit)"
    T = max(int(n) for n in lengths)
    if T > 2:
        return f"the exact kernels are for sequences of length <= 2 (got {T})"
    return None


def exact_kernels_t2(
    arch: Architecture,
    x1,
    x2=None,
    *,
    points: int = DEFAULT_POINTS,
    quad_points: int = DEFAULT_QUAD_POINTS,
    gate_rule: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The infinite-width ``(ntk, nngp)``, each ``(N1, N2)`` float64 on the CPU, of ``arch``
    (cell ``gru``, ``minimalrnn`` or ``elman``; depth 1, h0 zero, one direction, Gaussian init,
    tied weights, any gate, nonlinearity and readout) on sequences of length 1 or 2, by the
    deterministic integration of the module docstring.

    Args:
        arch: the architecture (``parameterization="ntk"``).
        x1, x2: ``(N, T, m)`` or lists of ``(T_i, m)`` with T, T_i <= 2; x2 None for x1.
        points: Gauss-Hermite nodes per dimension of the 4-dimensional gate integrals
            (sigmoid gates, or ``gate_rule="quadrature"``); lower dimensions use more.
        quad_points: Gauss-Hermite nodes per dimension of the candidate's dual where the
            nonlinearity has no closed form (e.g. tanh).
        gate_rule: ``auto`` (exact orthant forms for the erf gate, quadrature for the sigmoid),
            ``exact`` (erf gate only) or ``quadrature``.

    Raises:
        ValueError: an unsupported option or length (:func:`supported`), bad inputs.
    """
    if gate_rule not in ("auto", "exact", "quadrature"):
        raise ValueError(f"gate_rule={gate_rule!r}; expected 'auto', 'exact' or 'quadrature'")
    for name, value in (("points", points), ("quad_points", quad_points)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"{name}={value!r} is not valid; expected an integer >= 2")
    s1 = as_sequences(x1, name="x1", dtype=torch.float64, device="cpu")
    s2 = None
    if x2 is not None:
        s2 = as_sequences(x2, name="x2", input_dim=s1.dim, dtype=torch.float64, device="cpu")
    lengths = list(s1.lengths) + ([] if s2 is None else list(s2.lengths))
    why = supported(arch, lengths)
    if why is not None:
        raise ValueError(why)
    # the distinct sequences (a repeated sequence is one row: its variables are identical)
    both = [(s1, i) for i in range(s1.n)] + ([] if s2 is None else [(s2, i) for i in range(s2.n)])
    first: dict[int, int] = {}
    rows, index = [], []
    for s, i in both:
        key = s.keys[i]
        if key not in first:
            first[key] = len(rows)
            rows.append(s.values[i, s.max_len - int(s.lengths[i]) :])
        index.append(first[key])
    uniq = as_sequences(rows, name="x")
    Th, K = _Engine(arch, uniq, points, quad_points, gate_rule).kernels()
    i1 = index[: s1.n]
    i2 = i1 if s2 is None else index[s1.n :]
    return torch.from_numpy(Th[np.ix_(i1, i2)]), torch.from_numpy(K[np.ix_(i1, i2)])


__all__ = [
    "DEFAULT_POINTS",
    "GaussianGrid",
    "DEFAULT_QUAD_POINTS",
    "centered_orthant",
    "erf_gate_expectation",
    "exact_kernels_t2",
    "gaussian_product_expectation",
    "supported",
]
