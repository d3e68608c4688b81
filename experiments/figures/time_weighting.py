r"""``time_weighting``: how the RNTK weights the time steps of its inputs.

For a pair of sequences x, x' of length T and a step t, perturb x'_t -> x'_t + eps x_t and let

    w_t = d Theta(x, x') / d eps |_{eps = 0} = < dTheta/dx'_t , x_t >,

the kernel's sensitivity to the input product <x_t, x'_t> at step t (last-step readout).
The analytic w_t is computed by autograd through the infinite-width recursion; the finite
networks' w_t by central finite differences of the empirical NTK,
(Theta_hat(x, x' + eps e_t x_t) - Theta_hat(x, x' - eps e_t x_t)) / (2 eps), averaged over
seeds. Per pair the weights are normalized, w_t / sum_t |w_t|, then averaged over pairs, and
plotted against the distance from the end, T - t (0 = the last step).

The RNTK paper's characterization (ReLU): the weight of step t scales like
(s_w^2 / 2)^{T - t}, so below the critical s_w = sqrt 2 the recent steps dominate, above it
the oldest ones do, and at it the weights are of one order. Why eps is not tiny: the
empirical ReLU NTK contains phi'(g) = 1[g > 0], so as a function of eps it jumps whenever a
pre-activation crosses 0; with eps -> 0 the difference quotient is dominated by a few such
jumps. The infinite-width kernel's derivative counts the *density* of these crossings
(d/dc of the arc-cosine kernel of degree 0), so the finite difference must span many
crossings: eps = 0.1 (inputs have unit scale). The same eps applied to the analytic kernel
reproduces its autograd derivative (the ``analytic_fd`` series; its deviation is reported).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from experiments.figures.common import (
    FigureResult,
    RunOptions,
    Table,
    fmt_list,
    register_figure,
    resolve_params,
    select,
)
from rntk_empirical import Architecture, ElmanRNN, empirical_ntk
from rntk_empirical.analytic import analytic_ntk
from rntk_empirical.sequences import Sequences

SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class TimeWeightingParams:
    """Setup of the ``time_weighting`` figure (full-size defaults).

    Attributes:
        seq_len, input_dim: T and m of the random sequences (entries N(0, 1)).
        n_pairs: random pairs (x, x'), x' = rho x + sqrt(1 - rho^2) z with z independent.
        pair_correlation: rho.
        relu_sigma_w, erf_sigma_w: s_w values per nonlinearity (ReLU critical value sqrt 2).
        sigma_u, sigma_b, sigma_v: the other multipliers (zero h0, one layer, last readout).
        widths, seeds: the finite networks (one per width and seed).
        fd_eps: step of the central finite differences (see the module docstring).
    """

    seq_len: int = 16
    input_dim: int = 2
    n_pairs: int = 6
    pair_correlation: float = 0.5
    relu_sigma_w: tuple[float, ...] = (1.0, SQRT2, 1.8)
    erf_sigma_w: tuple[float, ...] = (0.5, 1.0, 2.0)
    sigma_u: float = 1.0
    sigma_b: float = 0.0
    sigma_v: float = 1.0
    widths: tuple[int, ...] = (256, 2048)
    seeds: int = 4
    fd_eps: float = 0.1


QUICK = {"seq_len": 8, "n_pairs": 4, "widths": (64, 512), "seeds": 2, "erf_sigma_w": (0.5, 1.0)}


def _normalize(w: torch.Tensor) -> torch.Tensor:
    """``(P, T)`` -> per-row w / sum_t |w_t|."""
    return w / w.abs().sum(-1, keepdim=True).clamp_min(1e-300)


def analytic_weights(arch: Architecture, x: torch.Tensor, xp: torch.Tensor) -> torch.Tensor:
    """``(P, T)`` raw w_t of the analytic NTK for the pairs (x_i, xp_i), by autograd.

    Theta[i, i] depends on xp only through xp_i, so one backward pass of sum_i Theta[i, i]
    gives every pair's gradient.
    """
    P, T, _ = x.shape
    a = xp.clone().requires_grad_(True)
    theta = analytic_ntk(arch, x, Sequences(a, torch.full((P,), T, dtype=torch.int64)))
    (g,) = torch.autograd.grad(theta.diagonal().sum(), a)
    return (g * x).sum(-1)


def _perturbed(x: torch.Tensor, xp: torch.Tensor, eps: float) -> torch.Tensor:
    """``(2 T P, T, m)``: xp_i + eps e_t x_i (rows t*P + i), then the same with -eps."""
    P, T, m = x.shape
    d = torch.eye(T, dtype=x.dtype)[:, None, :, None] * x[None]  # (T, P, T, m)
    return torch.cat([(xp[None] + s * eps * d).reshape(T * P, T, m) for s in (1.0, -1.0)])


def _central_difference(k: torch.Tensor, P: int, T: int, eps: float) -> torch.Tensor:
    """Kernel rows ``(P, 2 T P)`` against :func:`_perturbed` -> ``(P, T)`` derivatives."""
    kp, km = k[:, : T * P].reshape(P, T, P), k[:, T * P :].reshape(P, T, P)
    idx = torch.arange(P)
    return (kp - km)[idx, :, idx] / (2.0 * eps)


def finite_weights(
    arch: Architecture,
    x: torch.Tensor,
    xp: torch.Tensor,
    width: int,
    seed: int,
    eps: float,
    device: str = "cpu",
) -> torch.Tensor:
    """``(P, T)`` raw w_t of one network's empirical NTK by central finite differences."""
    P, T, m = x.shape
    model = ElmanRNN(arch, m, width, seed=seed, device=device)
    k = empirical_ntk(model, x, _perturbed(x, xp, eps)).cpu()
    return _central_difference(k, P, T, eps)


def _mean_lag(w: np.ndarray) -> float:
    """Center of mass of |w| over the lag T - t (w indexed by lag)."""
    a = np.abs(w)
    return float((np.arange(len(a)) * a).sum() / a.sum())


def draw(tables: dict[str, Table], meta: dict) -> plt.Figure:
    rows = tables["main"]
    configs = sorted(
        {(r["nonlinearity"], r["sigma_w"]) for r in rows}, key=lambda c: (c[0] != "relu", c[1])
    )
    nls = [n for n in ("relu", "erf") if any(c[0] == n for c in configs)]
    ncol = max(sum(c[0] == n for c in configs) for n in nls)
    fig, axes = plt.subplots(
        len(nls), ncol, figsize=(3.3 * ncol, 2.9 * len(nls)), sharex=True, squeeze=False
    )
    widths = sorted({r["width"] for r in rows if r["series"] == "finite"})
    colors = plt.get_cmap("viridis")(np.linspace(0.15, 0.8, max(1, len(widths))))
    for i, nl in enumerate(nls):
        cs = [c for c in configs if c[0] == nl]
        for j in range(ncol):
            ax = axes[i, j]
            if j >= len(cs):
                ax.axis("off")
                continue
            sw = cs[j][1]
            rr = sorted(
                select(rows, nonlinearity=nl, sigma_w=sw, series="analytic"), key=lambda r: r["lag"]
            )
            ax.plot(
                [r["lag"] for r in rr],
                [r["weight"] for r in rr],
                "k-",
                lw=1.8,
                label=r"analytic ($n\to\infty$)",
            )
            for c, w in zip(colors, widths):
                rr = sorted(
                    select(rows, nonlinearity=nl, sigma_w=sw, series="finite", width=w),
                    key=lambda r: r["lag"],
                )
                ax.errorbar(
                    [r["lag"] for r in rr],
                    [r["weight"] for r in rr],
                    yerr=[r["sem"] for r in rr],
                    fmt="o",
                    ms=3.5,
                    color=c,
                    capsize=2,
                    lw=0.8,
                    label=f"finite, $n$={w}",
                )
            ax.set_yscale("symlog", linthresh=1e-3)
            crit = " (critical)" if nl == "relu" and abs(sw - SQRT2) < 1e-9 else ""
            name = "ReLU" if nl == "relu" else "erf"
            ax.set_title(rf"{name}, $\sigma_w$ = {sw:.3g}{crit}")
            if i == len(nls) - 1:
                ax.set_xlabel(r"distance from the end $T - t$")
            if j == 0:
                ax.set_ylabel(r"$w_t / \sum_s |w_s|$")
    axes[0, 0].legend(frameon=False, loc="best")
    T = meta["params"]["seq_len"]
    fig.suptitle(
        rf"RNTK weighting of time steps: $w_t = \partial\Theta(x, x')/\partial"
        rf"\langle x_t, x'_t\rangle$, T = {T}, last-step readout",
        fontsize=10,
    )
    return fig


@register_figure("time_weighting", draw=draw, order=10)
def compute(opts: RunOptions) -> FigureResult:
    p = resolve_params(TimeWeightingParams, opts, QUICK)
    T, m, P = p.seq_len, p.input_dim, p.n_pairs
    g = torch.Generator().manual_seed(opts.seed)
    x = torch.randn(P, T, m, generator=g, dtype=torch.float64)
    z = torch.randn(P, T, m, generator=g, dtype=torch.float64)
    rho = p.pair_correlation
    xp = rho * x + math.sqrt(1.0 - rho * rho) * z
    configs = [("relu", sw) for sw in p.relu_sigma_w] + [("erf", sw) for sw in p.erf_sigma_w]

    rows: Table = []
    headline: dict = {
        "recent_over_oldest": {},
        "mean_lag": {},
        "l1_to_analytic": {},
        "analytic_fd_max_deviation": 0.0,
    }
    jobs = [(c, w, s) for c in configs for w in p.widths for s in range(p.seeds)]
    bar = tqdm(total=len(jobs), desc="time_weighting: finite networks", disable=not opts.progress)
    for nl, sw in configs:
        arch = Architecture(
            nonlinearity=nl,
            sigma_w=sw,
            sigma_u=p.sigma_u,
            sigma_b=p.sigma_b,
            sigma_v=p.sigma_v,
            readout="last",
        )
        key = f"{nl} s_w={sw:.4g}"
        wa = _normalize(analytic_weights(arch, x, xp))  # (P, T)
        k_fd = analytic_ntk(arch, x, _perturbed(x, xp, p.fd_eps))
        wa_fd = _normalize(_central_difference(k_fd, P, T, p.fd_eps))
        series = {("analytic", ""): wa, ("analytic_fd", ""): wa_fd}
        for w in p.widths:
            raw = []
            for s in range(p.seeds):
                raw.append(finite_weights(arch, x, xp, w, opts.seed + s, p.fd_eps, opts.device))
                bar.update()
            series[("finite", w)] = _normalize(torch.stack(raw).mean(0))
        mean_a = wa.mean(0).flip(0).numpy()  # indexed by lag T - t
        for (name, w), ws in series.items():
            mean = ws.mean(0).flip(0).numpy()
            sem = (ws.std(0).flip(0) / math.sqrt(P)).numpy() if P > 1 else np.zeros(T)
            rows += [
                {
                    "nonlinearity": nl,
                    "sigma_w": sw,
                    "series": name,
                    "width": w,
                    "lag": lag,
                    "weight": float(mean[lag]),
                    "sem": float(sem[lag]),
                }
                for lag in range(T)
            ]
            if name == "finite":
                headline["l1_to_analytic"].setdefault(key, {})[str(w)] = float(
                    np.abs(mean - mean_a).sum()
                )
        headline["analytic_fd_max_deviation"] = max(
            headline["analytic_fd_max_deviation"], float((wa_fd - wa).abs().max())
        )
        headline["recent_over_oldest"][key] = float(mean_a[0] / mean_a[-1])
        headline["mean_lag"][key] = _mean_lag(mean_a)
    bar.close()

    setup = (
        f"- Pairs: {P} pairs of random sequences, T = {T}, m = {m}, x_t ~ N(0, I), "
        f"x' = {rho:g} x + sqrt(1 - {rho:g}^2) z (seed {opts.seed}).\n"
        f"- w_t = dTheta(x, x')/d eps at eps = 0 for x'_t -> x'_t + eps x_t: the sensitivity "
        "to the input product <x_t, x'_t> at step t. Analytic: autograd through the "
        "infinite-width recursion. Finite: central differences of the empirical NTK with "
        f"eps = {p.fd_eps:g}, raw derivatives averaged over {p.seeds} seeds. Then per pair "
        "w_t / sum_t |w_t|, averaged over pairs (error bars: standard error over pairs), "
        "plotted against T - t on a symlog axis.\n"
        f"- Architectures: one layer, last-step readout, zero h0, s_u = {p.sigma_u:g}, "
        f"s_b = {p.sigma_b:g}, s_v = {p.sigma_v:g}; ReLU with s_w in "
        f"{fmt_list(p.relu_sigma_w, '{:.4g}')} (critical sqrt 2), erf with s_w in "
        f"{fmt_list(p.erf_sigma_w, '{:.4g}')}; widths {fmt_list(p.widths)}.\n"
        "- Why eps is not tiny: the empirical ReLU NTK jumps when a pre-activation crosses 0, "
        "so the difference quotient must span many crossings to estimate the derivative the "
        "infinite-width kernel describes; `analytic_fd_max_deviation` is the largest "
        "difference between the analytic weights by autograd and by the same finite difference.\n"
        "- Headlines: `recent_over_oldest` = w at T - t = 0 over w at T - t = T - 1 (analytic); "
        "`mean_lag` = sum (T - t)|w_t| / sum |w_t|; `l1_to_analytic` = sum_t |w_t(finite) - "
        "w_t(analytic)| (normalized weights) per width."
    )
    return FigureResult(
        tables={"main": rows},
        headline=headline,
        setup=setup,
        draw=draw,
        title="How the RNTK weights time steps (ReLU and erf, below/at/above criticality)",
        description=(
            "Sensitivity of the last-readout RNTK to the input product at each step, against the "
            "distance from the end of the sequence, for the analytic kernel and for finite "
            "networks. ReLU below s_w = sqrt 2 weights recent steps most and above it the oldest "
            "ones, as the RNTK paper's (s_w^2/2)^(T-t) factor predicts."
        ),
        params=p,
    )
