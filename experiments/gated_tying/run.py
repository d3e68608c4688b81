r"""Tied versus untied weights: does tying a gated RNN's weights across time change its kernel?

For an Elman RNN it does not: the RNTK is also the limit of the untied network (every step
its own W_t, U_t, b_t), because the backward terms pairing two different steps vanish in the
limit. A gated cell reuses W inside products of gates over a history, so the question is
open (issue 24, item 5). One run, for each T in ``lengths`` (the first T steps of the same N
sequences):

    analytic      Theta (tied), Theta_u (untied), the same for the NNGP K, K_u, and
                  D = ||Theta_u - Theta||_F / ||Theta||_F (the answer, in the limit), with
                  its Monte-Carlo standard error: the limits come from the particle
                  simulation of :mod:`rntk_empirical.gated_limit` (``tied=True/False``,
                  ``particles`` x ``batches``; Elman's tied kernel is its exact RNTK)
    finite        ``seeds`` untied networks (``ElmanRNN(untied=True)``) and ``seeds`` tied
                  ones at one width: the seed mean's relative Frobenius error against both
                  kernels, the per-network error, and the debiased bias estimate
                  ||E Theta_hat - Theta||_F / ||Theta||_F (rntk_empirical.metrics)

If the untied networks' seed mean sits at Theta_u and measurably away from Theta (and the tied
ones the other way round), the finite networks confirm the analytic difference D.

    python -m experiments.gated_tying                         # GRU, erf gate and phi
    python -m experiments.gated_tying arch=minimalrnn_erf width=2048 seeds=16
    python -m experiments.gated_tying quick=true               # seconds (tests, smoke runs)

Writes into its folder (``conf/gated_tying.yaml``): ``tying.csv`` (every number of the
figure), ``tying.png`` / ``tying.pdf``, ``record.json`` (last). Resumable: the analytic
kernels of each T (``analytic-T<T>.pt``) and each seed's finite kernels
(``T<T>-seed<s>.json``) are kept, so a killed run re-run with the same command continues.

Exit codes: 0 success (or skipped), 2 invalid input, 3 out of memory.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm.auto import tqdm

from experiments.common.cli import CONF_DIR
from experiments.common.records import (
    RECORD_NAME,
    atomic_torch_save,
    atomic_write_json,
    identity_hash,
    utc_now,
)
from experiments.common.reporting import save_figure, write_csv
from experiments.common.run import (
    already_finished,
    envelope,
    guarded,
    hydra_entry,
    job_folder,
    set_threads,
    validated,
)
from experiments.common.style import mark_quick, paper_style
from experiments.gated_tying.schema import GatedTyingConfig
from rntk_empirical.architecture import Architecture
from rntk_empirical.cells import get_cell
from rntk_empirical.devices import precision_scope, resolve_device, resolve_dtype
from rntk_empirical.metrics import debiased_bias, mean_kernel_error, relative_frobenius
from rntk_empirical.safe_io import load_json, load_torch, reuse, written_by

log = logging.getLogger(__name__)
CONFIG_FILE = "conf/gated_tying.yaml"
TABLE_NAME = "tying.csv"
FIGURE_STEM = "tying"
KINDS = ("untied", "tied")  # the finite networks, and the analytic kernels they are held to
KERNELS = ("ntk", "nngp")


def check(settings: GatedTyingConfig) -> None:
    """ValueError for settings the schema accepts but the run cannot do (before any work)."""
    arch = settings.arch.to_architecture()
    from rntk_empirical.gated_limit import supported

    why = supported(arch)
    if why is not None:
        raise ValueError(f"arch: {why}")
    resolve_device(settings.device.value)


def analytic_pair(
    arch: Architecture, x: torch.Tensor, particles: int, batches: int
) -> dict[str, Any]:
    """The infinite-width NTK and NNGP ``(N, N)`` (float64, CPU) of the tied and the untied
    network on ``x`` ``(N, T, m)``: ``{"tied": (ntk, nngp), "untied": (ntk, nngp), "se":
    {...}, "seconds": {...}}``.

    Untied: the particle simulation :func:`rntk_empirical.gated_limit.limit_kernels` with
    ``tied=False`` (every cell, Elman included). Tied: the same simulation with the same
    settings for the gated cells (``Cell.analytic == "particles"``); Elman's exact RNTK
    (whose untied limit is the RNTK itself: the simulation's untied Elman kernel tests that
    statement, to its Monte-Carlo error). ``se``: relative Frobenius standard errors of the
    simulated kernels (from the spread of the ``batches`` simulations).
    """
    from rntk_empirical.analytic import analytic_kernels
    from rntk_empirical.gated_limit import limit_kernels

    out: dict[str, Any] = {"se": {}, "seconds": {}}
    for kind in KINDS:
        t0 = time.perf_counter()
        if kind == "tied" and get_cell(arch.cell).analytic != "particles":
            out[kind] = tuple(k.cpu() for k in analytic_kernels(arch, x, dtype=torch.float64))
            out["se"] |= {f"{kind}_ntk": 0.0, f"{kind}_nngp": 0.0}
        else:
            r = limit_kernels(arch, x, particles=particles, batches=batches, tied=kind == "tied")
            out[kind] = (r.ntk.cpu(), r.nngp.cpu())
            for q in KERNELS:
                out["se"][f"{kind}_{q}"] = r.relative_se(q) if batches > 1 else None
        out["seconds"][kind] = time.perf_counter() - t0
    return out


def _analytic(s: GatedTyingConfig, arch, x, T: int, chash: str, out_dir: Path) -> dict:
    """:func:`analytic_pair` for length T, kept in ``analytic-T<T>.pt`` (resumable)."""
    path = out_dir / f"analytic-T{T}.pt"
    n = x.shape[0]

    def ok(obj: Any) -> str | None:
        if not isinstance(obj, dict) or obj.get("config_hash") != chash:
            return "written by another configuration"
        shapes = [tuple(obj.get(f"{k}_{q}", torch.empty(0)).shape) for k in KINDS for q in KERNELS]
        return None if all(sh == (n, n) for sh in shapes) else f"not four ({n}, {n}) kernels"

    obj = None if s.force else reuse(path, load_torch, ok)
    if obj is not None:
        return obj
    pair = analytic_pair(arch, x, s.particles, s.batches)
    obj = {f"{k}_{q}": pair[k][i] for k in KINDS for i, q in enumerate(KERNELS)}
    obj |= {"config_hash": chash, "se": pair["se"], "seconds": pair["seconds"]}
    atomic_torch_save(path, obj)
    log.info(
        "T=%d: analytic tied and untied kernels in %.1f s", T, sum(obj["seconds"].values())
    )
    return obj


def _finite(s: GatedTyingConfig, arch, x, T: int, i: int, chash: str, out_dir: Path) -> dict:
    """The empirical NTK and NNGP of the untied and the tied network of seed ``base_seed + i``
    on ``x``, kept in ``T<T>-seed<i>.json`` (resumable)."""
    from rntk_empirical.empirical import empirical_kernels
    from rntk_empirical.network import ElmanRNN

    path = out_dir / f"T{T}-seed{i}.json"
    prev = None if s.force else reuse(path, load_json, written_by(chash, KINDS))
    if prev is not None:
        return prev
    device, dtype = resolve_device(s.device.value), resolve_dtype(s.dtype.value)
    entry: dict[str, Any] = {"config_hash": chash, "T": T, "seed": i}
    entry["network_seed"] = s.base_seed + i
    xd = x.to(device=device, dtype=dtype)
    for kind in KINDS:
        t0 = time.perf_counter()
        model = ElmanRNN(
            arch,
            x.shape[-1],
            s.width,
            seed=s.base_seed + i,
            dtype=dtype,
            device=device,
            untied=kind == "untied",
            max_len=T if kind == "untied" else None,
        )
        ntk, nngp = empirical_kernels(model, xd, method=s.method.value, chunk_size=s.chunk_size)
        entry[kind] = {
            "ntk": ntk.to("cpu", torch.float64).tolist(),
            "nngp": nngp.to("cpu", torch.float64).tolist(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds": time.perf_counter() - t0,
        }
        del model
    atomic_write_json(path, entry)
    return entry


def _rows(T: int, analytic: dict, entries: list[dict]) -> list[dict[str, Any]]:
    """Long-format rows of length T: per kernel, network kind and reference."""
    rows = []
    se = analytic["se"]
    for q in KERNELS:
        diff = relative_frobenius(analytic[f"untied_{q}"], analytic[f"tied_{q}"])
        # the Monte-Carlo error of that difference (independent simulations)
        parts = [se[f"{k}_{q}"] for k in KINDS]
        diff_se = None if None in parts else sum(p * p for p in parts) ** 0.5
        for net in KINDS:
            stack = torch.tensor([e[net][q] for e in entries], dtype=torch.float64)
            for ref in KINDS:
                A = analytic[f"{ref}_{q}"]
                rows.append(
                    {
                        "T": T,
                        "kernel": q,
                        "network": net,
                        "reference": ref,
                        "analytic_difference": diff,
                        "analytic_difference_se": diff_se,
                        "seed_mean_error": mean_kernel_error(stack, A),
                        "per_network_error": float(
                            sum(relative_frobenius(k, A) for k in stack) / len(stack)
                        ),
                        "debiased_bias": debiased_bias(stack, A) if len(stack) > 1 else None,
                        "seeds": len(stack),
                    }
                )
    return rows


def draw(rows: list[dict[str, Any]], title: str):
    """The figure of ``tying.csv``: per kernel, against T, the analytic difference D and the
    seed-mean error of the untied (blue) and tied (orange) networks against their own limit
    (solid) and the other one (dashed)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.0), sharey=True)
    for ax, q in zip(axes, KERNELS):
        rr = sorted((r for r in rows if r["kernel"] == q), key=lambda r: r["T"])
        Ts = sorted({r["T"] for r in rr})
        diff = [next(r["analytic_difference"] for r in rr if r["T"] == T) for T in Ts]
        err = [next(r["analytic_difference_se"] for r in rr if r["T"] == T) for T in Ts]
        if any(d > 0 for d in diff):
            ax.errorbar(Ts, diff, yerr=None if None in err else err, fmt="k-o", ms=4,
                        capsize=2.5, label="analytic: untied vs tied (±1 s.e.)")  # fmt: skip
        else:  # log axes: say it, rather than leave the line out silently
            ax.text(0.03, 0.03, "analytic untied = tied", transform=ax.transAxes, fontsize=7)
        for c, net in enumerate(KINDS):
            for ref in KINDS:
                ls = "-" if ref == net else "--"  # solid: against its own limit
                sel = [r for r in rr if r["network"] == net and r["reference"] == ref]
                ax.plot(
                    [r["T"] for r in sel],
                    [r["seed_mean_error"] for r in sel],
                    ls,
                    marker="s" if net == "untied" else "^",
                    ms=3.5,
                    color=f"C{c}",
                    label=f"{net} networks vs {ref} kernel",
                )
        ax.set(xlabel="sequence length $T$", title=q.upper(), yscale="log", xticks=Ts)
    axes[0].set_ylabel("relative Frobenius difference\n(seed mean of the finite networks)")
    axes[1].legend(fontsize=6.5, loc="best")
    fig.suptitle(title, fontsize=9)
    return fig


def run_tying(s: GatedTyingConfig, out_dir: Path, overrides: list[str] | None = None) -> dict:
    """Run (or resume, or skip if finished) the study into ``out_dir``; returns the record."""
    with precision_scope(resolve_dtype(s.dtype.value)):
        return _run_tying(s, Path(out_dir), overrides or [])


def _run_tying(s: GatedTyingConfig, out_dir: Path, overrides: list[str]) -> dict:
    from rntk_empirical.data import random_sequences

    chash = identity_hash(s.identity())
    done = already_finished(out_dir, chash, s.force)
    if done is not None:
        return done
    check(s)
    set_threads(s.num_threads)
    started, t_start = utc_now(), time.perf_counter()
    arch = s.arch.to_architecture()
    out_dir.mkdir(parents=True, exist_ok=True)
    x_all = random_sequences(s.n, max(s.lengths), s.m, s.data_seed).values  # (N, T_max, m)
    rows: list[dict[str, Any]] = []
    per_length: dict[str, Any] = {}
    bar = tqdm(total=len(s.lengths) * s.seeds, desc="tying", unit="seed", disable=not s.progress)
    for T in s.lengths:
        x = x_all[:, :T].contiguous()
        bar.set_postfix(T=T, step="analytic")
        analytic = _analytic(s, arch, x, T, chash, out_dir)
        entries = []
        for i in range(s.seeds):
            bar.set_postfix(T=T, step=f"seed {i}")
            entries.append(_finite(s, arch, x, T, i, chash, out_dir))
            bar.update(1)
        r = _rows(T, analytic, entries)
        rows += r
        per_length[str(T)] = {
            "analytic_seconds": analytic["seconds"],
            "analytic_relative_se": analytic["se"],
            "finite_seconds": {
                k: sum(e[k]["seconds"] for e in entries) / len(entries) for k in KINDS
            },
            "parameters": {k: entries[0][k]["parameters"] for k in KINDS},
        }
        ntk = {(x["network"], x["reference"]): x for x in r if x["kernel"] == "ntk"}
        log.info(
            "T=%d: analytic untied vs tied NTK %.3g, NNGP %.3g; untied networks' seed mean vs "
            "untied/tied NTK %.3g/%.3g",
            T,
            r[0]["analytic_difference"],
            next(x["analytic_difference"] for x in r if x["kernel"] == "nngp"),
            ntk[("untied", "untied")]["seed_mean_error"],
            ntk[("untied", "tied")]["seed_mean_error"],
        )
    bar.close()
    write_csv(out_dir / TABLE_NAME, rows)
    title = (
        f"{s.arch.name}: tied vs untied, width {s.width}, {s.seeds} seeds, N = {s.n}"
        + (" (quick)" if s.quick else "")
    )
    with paper_style():
        fig = draw(rows, title)
        mark_quick(fig, s.quick)
        save_figure(fig, out_dir / FIGURE_STEM)
    record = envelope("gated_tying", chash, s.identity())
    record |= {
        "overrides": overrides,
        "name": s.name,
        "table": TABLE_NAME,
        "figure": f"{FIGURE_STEM}.png",
        "rows": rows,
        "lengths": per_length,
        "timings": {"total_s": time.perf_counter() - t_start},
        "host": platform.node(),
        "started": started,
    }
    atomic_write_json(out_dir / RECORD_NAME, record)  # last: marks the run finished
    log.info("tying study: %.1f s; %s", record["timings"]["total_s"], out_dir / TABLE_NAME)
    return record


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="gated_tying")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (see the module docstring)."""
    hc = HydraConfig.get()
    settings = validated(cfg, GatedTyingConfig, CONFIG_FILE, check)
    out_dir = job_folder(cfg, settings.force)
    guarded(
        lambda: run_tying(settings, out_dir, list(hc.overrides.task)),
        lambda err: (
            f"out of memory ({type(err).__name__}); an untied network holds T times the "
            "parameters: use method=ntk_vp chunk_size=1, a smaller width or shorter lengths"
        ),
    )


if __name__ == "__main__":
    hydra_entry(main)
