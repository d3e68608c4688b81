"""The infinite-width NNGP of the erf-gated minimalRNN (docs/gated.md, section 3).

Forward Tensor Programs rule: per unit, the gate pre-activations p^t(x) = a_w W_u h^{t-1}(x)
+ a_u U_u x_t + a_b b_u are jointly Gaussian over every (x, t) with covariance

    S_p(x,t; x',t') = s_w^2 Q(x,t-1; x',t'-1) + S_v(x,t; x',t'),
    S_v(x,t; x',t') = s_u^2 <x_t, x'_t'> / m + s_b^2,

and independent of the candidate pre-activations v^t(x) = a_u A x_t + a_b b_a (covariance
S_v). With h^0 = 0, h^t = sum_{a<=t} (1 - u^a) prod_{a<r<=t} u^r c^a, c^a = phi(v^a), so

    Q(x,t; x',t') = sum_{a<=t, b<=t'} E[c^a(x) c^b(x')] P(x,a,t; x',b,t'),
    P = E[(1 - u^a(x)) prod_{a<r<=t} u^r(x) (1 - u^b(x')) prod_{b<r<=t'} u^r(x')].

For the erf gate g(p) = (1 + erf(p)) / 2 = Pr(xi <= p), xi ~ N(0, 1/2) independent per
factor, P is the orthant probability Pr(D y <= 0) of y_k = xi_k - p_k (covariance S_p of the
factors' p plus I/2; D = +1 for a gate u, -1 for 1 - u), of dimension (t - a + 1) +
(t' - b + 1) <= 2T: closed forms up to dimension 3, Genz's separation of variables with a
fixed scrambled Sobol set above (:func:`orthants`, batched over every orthant of a step).

The NNGP of the readout is s_v^2 Q(x,T; x',T') (``last``) or s_v^2 times the mean of Q over
the two sequences' steps (``avg``). Sequences of different lengths are each run over their own
steps (left padding holds the zero state, so it changes nothing).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rntk_empirical.architecture import Architecture
from rntk_empirical.dual import dual_activations
from rntk_empirical.sequences import as_sequences

DEFAULT_POINTS = 2**14


def orthants(
    covs: np.ndarray, signs: np.ndarray, points: int = DEFAULT_POINTS, seed: int = 0
) -> np.ndarray:
    """``(B,)``: Pr(signs_b,k y_k <= 0 for every k), y ~ N(0, covs[b]), for a batch of
    positive definite ``covs (B, k, k)`` and ``signs (B, k)`` of one dimension k.

    Exact for k <= 3 (Sheppard's formula and its three-dimensional form). For k > 3, Genz's
    separation of variables (1992): with the Cholesky factor L of the sign-flipped covariance,
    P = E_w[prod_i e_i(w)], e_1 = 1/2, e_i = Phi(-sum_{j<i} L_ij y_j / L_ii),
    y_j = Phi^-1(w_j e_j), the mean over ``points`` scrambled Sobol points w in [0, 1)^(k-1)
    (fixed ``seed``), the same points for the whole batch. The error is that of the
    quasi-Monte-Carlo mean (docs/gated.md, section 3, has the measurement)."""
    from scipy.special import ndtr, ndtri

    covs = np.asarray(covs, dtype=np.float64)
    signs = np.asarray(signs, dtype=np.float64)
    B, k = signs.shape
    c = covs * signs[:, :, None] * signs[:, None, :]
    d = np.sqrt(np.einsum("bii->bi", c))
    r = c / (d[:, :, None] * d[:, None, :])
    if k == 1:
        return np.full(B, 0.5)
    if k == 2:
        return 0.25 + np.arcsin(r[:, 0, 1]) / (2 * math.pi)
    if k == 3:
        return 0.125 + (
            np.arcsin(r[:, 0, 1]) + np.arcsin(r[:, 0, 2]) + np.arcsin(r[:, 1, 2])
        ) / (4 * math.pi)
    from scipy.stats import qmc

    w = qmc.Sobol(k - 1, scramble=True, rng=np.random.default_rng(seed)).random(points)
    L = np.linalg.cholesky(r)  # (B, k, k)
    out = np.empty(B)
    block = max(1, 2**22 // (points * k))  # bounds the working memory (~32 MiB per array)
    for b0 in range(0, B, block):
        Lb = L[b0 : b0 + block]
        e = np.full((len(Lb), points), 0.5)
        f = e.copy()
        ys = np.empty((k - 1, len(Lb), points))
        for i in range(1, k):
            ys[i - 1] = ndtri(np.clip(w[None, :, i - 1] * e, 1e-300, 1.0))
            shift = np.einsum("bj,jbp->bp", Lb[:, i, :i], ys[:i])
            e = ndtr(-shift / Lb[:, i, i][:, None])
            f *= e
        out[b0 : b0 + block] = f.mean(1)
    return out


def orthant(cov: np.ndarray, signs: np.ndarray, points: int = DEFAULT_POINTS) -> float:
    """One orthant probability (:func:`orthants` with a batch of one)."""
    return float(orthants(np.asarray(cov)[None], np.asarray(signs)[None], points)[0])


def _check(arch: Architecture) -> None:
    wanted = {
        "cell": "minimalrnn",
        "gate": "erf",
        "depth": 1,
        "h0": "zero",
        "bidirectional": False,
    }
    for field, value in wanted.items():
        if getattr(arch, field) != value:
            raise ValueError(
                f"minimalrnn_nngp supports {field}={value!r} only (got {getattr(arch, field)!r})"
            )
    if arch.readout not in ("last", "avg"):
        raise ValueError(f"minimalrnn_nngp supports readout last or avg (got {arch.readout!r})")


def minimalrnn_state_covariance(
    arch: Architecture, x, points: int = DEFAULT_POINTS
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Q over every (sequence i, step t), t = 1..T_i: ``(M, M)`` with M = sum_i T_i, and the
    index list [(i, t)] of its rows (module docstring). Float64 NumPy."""
    _check(arch)
    seqs = as_sequences(x, dtype=torch.float64, device="cpu")
    T_max = seqs.max_len
    xs = [seqs.values[i, T_max - int(L) :].numpy() for i, L in enumerate(seqs.lengths)]
    m = xs[0].shape[1]
    idx = [(i, t) for i, s in enumerate(xs) for t in range(1, s.shape[0] + 1)]
    pos = {it: k for k, it in enumerate(idx)}
    X = np.concatenate(xs)  # rows in idx order
    S_v = arch.sigma_u**2 * (X @ X.T) / m + arch.sigma_b**2
    dv = np.diag(S_v)
    C = dual_activations(
        arch.nonlinearity,
        torch.from_numpy(np.broadcast_to(dv[:, None], S_v.shape).copy()),
        torch.from_numpy(np.broadcast_to(dv[None, :], S_v.shape).copy()),
        torch.from_numpy(S_v),
    )[0].numpy()  # E[c c'] for every pair of (sequence, step)
    M = len(idx)
    Q = np.zeros((M, M))

    def prev(k: int) -> int | None:  # the row of (i, t - 1), None for t = 1 (h^0 = 0)
        i, t = idx[k]
        return pos[(i, t - 1)] if t > 1 else None

    S_p = S_v.copy()  # s_w^2 Q(t-1, t'-1) is added as Q fills
    for step in range(1, max(t for _, t in idx) + 1):
        now = [
            (k, k2)
            for k in range(M)
            for k2 in range(k, M)
            if max(idx[k][1], idx[k2][1]) == step
        ]
        # S_p entries with max(t, t') = step need Q with max(t, t') = step - 1: done
        for k, k2 in now:
            pk, pk2 = prev(k), prev(k2)
            if pk is not None and pk2 is not None:
                S_p[k, k2] = S_p[k2, k] = S_v[k, k2] + arch.sigma_w**2 * Q[pk, pk2]
        # every orthant of this step, grouped by dimension: (target, weight, rows, signs)
        jobs: dict[int, list] = {}
        for k, k2 in now:
            (i, t), (j, s) = idx[k], idx[k2]
            for a in range(1, t + 1):
                for b in range(1, s + 1):
                    rows = [pos[(i, r)] for r in range(a, t + 1)]
                    rows += [pos[(j, r)] for r in range(b, s + 1)]
                    signs = [-1.0] + [1.0] * (t - a) + [-1.0] + [1.0] * (s - b)  # 1 - u, then u
                    jobs.setdefault(len(rows), []).append(
                        (k, k2, C[pos[(i, a)], pos[(j, b)]], rows, signs)
                    )
        for dim, group in jobs.items():
            covs = np.stack([S_p[np.ix_(g[3], g[3])] for g in group]) + 0.5 * np.eye(dim)
            probs = orthants(covs, np.array([g[4] for g in group]), points)
            for (k, k2, weight, _, _), pr in zip(group, probs):
                Q[k, k2] += weight * pr
        for k, k2 in now:
            Q[k2, k] = Q[k, k2]
    return Q, idx


def minimalrnn_nngp(arch: Architecture, x, points: int = DEFAULT_POINTS) -> torch.Tensor:
    """The infinite-width NNGP ``(N, N)`` (float64) of the erf-gated minimalRNN of ``arch``
    (one layer, zero h0, one direction, ``last`` or ``avg`` readout) on the sequences ``x``
    (``(N, T, m)`` or a list of ``(T_i, m)``). Method and error: docs/gated.md, section 3."""
    Q, idx = minimalrnn_state_covariance(arch, x, points)
    N = 1 + max(i for i, _ in idx)
    rows = [[k for k, (i, _) in enumerate(idx) if i == n] for n in range(N)]
    K = np.zeros((N, N))
    for p in range(N):
        for q in range(N):
            if arch.readout == "last":
                K[p, q] = Q[rows[p][-1], rows[q][-1]]
            else:
                K[p, q] = Q[np.ix_(rows[p], rows[q])].mean()
    return torch.from_numpy(arch.sigma_v**2 * K)
