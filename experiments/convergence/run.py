r"""Convergence of the empirical NTK and NNGP of finite Elman RNNs to the analytic kernels.

One run = one width n: for networks s = 0..seeds-1 (initialized with seed base_seed + s)
compute the empirical NTK Theta_hat_s and NNGP K_hat_s on the data and compare them with the
infinite-width Theta and K (SPEC section 4):

    per-network errors      e_s = ||Theta_hat_s - Theta|| / ||Theta||  (Frobenius, operator,
                            max-entry; and the kernel distance), same for the NNGP
    seed-averaged kernel    ||mean_s Theta_hat_s - Theta||_F / ||Theta||_F (and a debiased
                            estimate of the relative bias ||E Theta_hat - Theta||_F/||Theta||_F)

    python -m experiments.convergence width=1024                   # one width
    python -m experiments.convergence -m                           # default width sweep
    python -m experiments.convergence -m width=128,512,2048 arch=erf_avg seeds=16
    python -m experiments.convergence -m experiment=tp2_rnn        # Tensor Programs II setting

The analytic kernels are computed once per (architecture, data) and cached in ``cache_dir``.
A run writes ``kernels.npz`` (every kernel) and, last, ``record.json`` into its Hydra output
folder; folders are deterministic (``conf/convergence.yaml``), so re-running a command skips
the runs that already finished. After a sweep,
:class:`experiments.convergence.report.ReportCallback`
fits the convergence exponents (``<sweep dir>/report``).

Exit codes: 0 success (or skipped), 2 invalid input (one line ``error: ...`` on stderr, before
any work), 3 out of memory.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from experiments.common.cli import CONF_DIR, fail, settings_from
from experiments.common.records import (
    RECORD_NAME,
    array_hash,
    atomic_save_npz,
    atomic_torch_save,
    atomic_write_json,
    config_hash,
    finished_record,
    identity_hash,
    library_versions,
    utc_now,
)
from experiments.common.run import (
    EXIT_BAD_INPUT,
    OutOfMemory,
    already_finished,
    check_writable,
    discard_if_empty,
    envelope,
    guarded,
    hydra_entry,
    is_out_of_memory,
    run_dir,
    set_threads,
    write_provenance,
)
from experiments.convergence.schema import ConvergenceConfig
from rntk_empirical.architecture import Architecture
from rntk_empirical.cells import get_cell
from rntk_empirical.devices import precision_scope, resolve_dtype
from rntk_empirical.metrics import (
    debiased_bias,
    kernel_errors,
    kernel_summary,
    mean_kernel_error,
)
from rntk_empirical.safe_io import load_torch, reuse
from rntk_empirical.sequences import Sequences

log = logging.getLogger(__name__)

KERNELS_NAME = "kernels.npz"


@dataclass(frozen=True)
class Prepared:
    """A validated run: the settings and what they resolve to on this machine."""

    settings: ConvergenceConfig
    arch: Architecture
    seqs: Sequences
    device: torch.device
    dtype: torch.dtype
    config_hash: str


def prepare(settings: ConvergenceConfig) -> Prepared:
    """Validate everything that can be checked before work starts; ValueError if invalid.

    Builds the architecture, loads/generates the data and resolves the device and dtype.
    """
    settings.validate()
    arch = settings.arch.to_architecture()
    if get_cell(arch.cell).analytic is None:
        raise ValueError(
            f"arch.cell={arch.cell} has no infinite-width kernel, so there is nothing to "
            "converge to; use a cell with one (elman, minimalrnn, gru)"
        )
    if get_cell(arch.cell).analytic == "particles":
        from rntk_empirical.gated_limit import supported

        why = supported(arch)
        if why is not None:
            raise ValueError(f"arch: {why}")
    if arch.parameterization != "ntk":
        raise ValueError(
            "arch.parameterization=standard has no infinite-width NTK to converge to; "
            "use arch.parameterization=ntk"
        )
    if arch.sigma_v == 0:
        raise ValueError(
            "arch.sigma_v=0 makes every kernel identically 0, so the relative error is "
            "undefined; use arch.sigma_v > 0"
        )
    seqs = settings.data.build()
    device = settings.execution_device()
    dtype = resolve_dtype(settings.dtype.value)
    return Prepared(settings, arch, seqs, device, dtype, identity_hash(settings.identity()))


def _inputs(seqs: Sequences) -> torch.Tensor | list[torch.Tensor]:
    """The public input form: ``(N, T, m)`` if all lengths are equal, else a list."""
    if seqs.equal_lengths:
        return seqs.values
    T = seqs.max_len
    return [seqs.values[i, T - int(L) :] for i, L in enumerate(seqs.lengths)]


def _analytic_code_hash(extra: tuple[str, ...] = ()) -> str:
    """Digest of every source file the analytic kernels depend on: the whole ``analytic``
    package and its inputs, and the modules ``extra`` (any change invalidates the cache)."""
    import rntk_empirical

    h = hashlib.sha256()
    root = Path(rntk_empirical.__file__).parent
    files = sorted((root / "analytic").rglob("*.py")) + sorted(
        (root / "nonlinearities").rglob("*.py")
    )
    files += [
        root / n
        for n in (
            "dual.py",
            "smooth_dual.py",
            "readouts.py",
            "cells.py",
            "sequences.py",
            "architecture.py",
            *extra,
        )
    ]
    for p in files:
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def analytic_kernels(
    arch: Architecture, seqs: Sequences, device: torch.device, cache_dir: Path | None
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The analytic NTK and NNGP ``(N, N)`` in float64 on the CPU, cached per (arch, data).

    The reference is always float64 (cheap next to the empirical kernels), whatever dtype
    the finite networks use. Returns ``(theta, nngp, info)``.
    """
    from rntk_empirical.analytic import analytic_kernels as both_kernels  # one recursion

    what = {
        "what": "rntk_empirical analytic ntk+nngp",
        "arch": arch.to_dict(),
        "data": array_hash(seqs.values, seqs.lengths),
        "code": _analytic_code_hash(),
    }
    if get_cell(arch.cell).analytic == "particles":  # a simulation: its settings and code too
        from rntk_empirical import gated_limit

        what["code"] = _analytic_code_hash(("gated_limit.py",))
        what["engine"] = gated_limit.default_settings()
    key = config_hash(what)
    path = None if cache_dir is None else cache_dir / f"{key}.pt"

    def check(obj: Any) -> str | None:
        n = seqs.n
        ok = isinstance(obj, dict) and all(
            isinstance(obj.get(k), torch.Tensor) and tuple(obj[k].shape) == (n, n)
            for k in ("ntk", "nngp")
        )
        return None if ok else f"not a cache of two ({n}, {n}) kernels"

    obj = None if path is None else reuse(path, load_torch, check)  # damaged: recomputed
    if obj is not None:
        log.info("analytic kernels: cached %s", path)
        return obj["ntk"], obj["nngp"], {"cache_file": str(path), "cached": True}
    t0 = time.perf_counter()
    x = _inputs(seqs)
    theta, nngp = (k.cpu() for k in both_kernels(arch, x, dtype=torch.float64, device=device))
    seconds = time.perf_counter() - t0
    if path is not None:
        atomic_torch_save(path, {"ntk": theta, "nngp": nngp, "arch": arch.to_dict()})
    log.info("analytic kernels: computed in %.2fs", seconds)
    return (
        theta,
        nngp,
        {"cache_file": None if path is None else str(path), "cached": False, "seconds": seconds},
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_info(device: torch.device, requested: str) -> dict[str, Any]:
    info: dict[str, Any] = {"requested": requested, "resolved": str(device)}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    else:
        info["name"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    return info


def _kernel_block(stack: torch.Tensor, ref: torch.Tensor, per_seed: list[dict]) -> dict:
    """Aggregates of one kernel type over seeds: means/stds of per-seed errors, the
    seed-averaged kernel's errors and summaries."""
    names = per_seed[0].keys()
    vals = {k: np.array([e[k] for e in per_seed]) for k in names}
    out = {
        "mean": {k: float(v.mean()) for k, v in vals.items()},
        "std": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in vals.items()},
        "mean_kernel": kernel_errors(stack.mean(0), ref),
        "summary": {
            "analytic": kernel_summary(ref),
            "empirical_mean": kernel_summary(stack.mean(0)),
            "empirical_seed0": kernel_summary(stack[0]),
        },
    }
    out["mean_kernel"]["rel_fro"] = mean_kernel_error(stack, ref)
    if stack.shape[0] > 1:
        out["debiased_bias"] = debiased_bias(stack, ref)
    return out


def run_convergence(
    prep: Prepared, out_dir: Path, *, cwd: Path | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Run (or skip, if already finished) one width; returns the record.

    Args:
        prep: from :func:`prepare`.
        out_dir: the run's folder (Hydra's output dir); ``record.json`` and ``kernels.npz``.
        cwd: base of a relative ``cache_dir`` (default: the current directory).
        overrides: the command-line overrides, stored in the record.

    Raises:
        FileExistsError: ``out_dir`` holds a finished run of another configuration.
        OutOfMemory: CPU or GPU memory ran out (the message suggests what bounds it).
    """
    s = prep.settings
    out_dir = Path(out_dir)
    done = already_finished(out_dir, prep.config_hash, s.force)
    if done is not None:
        return done
    set_threads(s.num_threads)
    started, t_start = utc_now(), time.perf_counter()
    cache_dir = cache_folder(s, cwd or Path.cwd()) if s.cache else None
    try:
        with precision_scope(prep.dtype):  # IEEE float32 on CUDA; flags restored after
            return _run(prep, out_dir, cache_dir, overrides or [], started, t_start)
    except (RuntimeError, MemoryError) as err:
        if is_out_of_memory(err):
            raise OutOfMemory(_oom_message(prep, err)) from err
        raise


def cache_folder(s: ConvergenceConfig, cwd: Path) -> Path:
    """``cache_dir``, relative paths taken from ``cwd`` (where the command started)."""
    path = Path(s.cache_dir)
    return path if path.is_absolute() else cwd / path


def _oom_message(prep: Prepared, err: BaseException) -> str:
    s, seqs = prep.settings, prep.seqs
    chunk = s.chunk_size if s.chunk_size is not None else "auto"
    return (
        f"out of memory at width={s.width} on {prep.device} (N={seqs.n}, T={seqs.max_len}, "
        f"method={s.method.value}, chunk_size={chunk}, {type(err).__name__}); bound the "
        "empirical NTK's memory with chunk_size=1 (sequences per pass), use "
        "method=structured (jacobian/ntk_vp hold O(N * #params)), dtype=float32, or smaller "
        "widths / fewer sequences (data.n)"
    )


def _run(
    prep: Prepared,
    out_dir: Path,
    cache_dir: Path | None,
    overrides: list[str],
    started: str,
    t_start: float,
) -> dict[str, Any]:
    from rntk_empirical.empirical import empirical_kernels
    from rntk_empirical.network import ElmanRNN

    s, arch, seqs, device, dtype = prep.settings, prep.arch, prep.seqs, prep.device, prep.dtype
    theta, nngp_ref, analytic_info = analytic_kernels(arch, seqs, device, cache_dir)
    x = _inputs(seqs.to(device=device, dtype=dtype))
    max_len = seqs.max_len if arch.readout == "per_step" else None

    ntk_k, nngp_k, per_seed = [], [], []
    t_emp = time.perf_counter()
    bar = tqdm(range(s.seeds), desc=f"width={s.width}", unit="net", disable=not s.progress)
    for i in bar:
        net_seed = s.base_seed + i
        t0 = time.perf_counter()
        model = ElmanRNN(
            arch, seqs.dim, s.width, seed=net_seed, max_len=max_len, dtype=dtype, device=device
        )
        _sync(device)
        t1 = time.perf_counter()
        k, kn = empirical_kernels(
            model, x, method=s.method.value, chunk_size=s.chunk_size, nngp=s.nngp
        )
        k = k.detach().to("cpu", torch.float64)
        _sync(device)
        t2 = time.perf_counter()
        entry: dict[str, Any] = {
            "seed": i,
            "network_seed": net_seed,
            "seconds_build": t1 - t0,
            "seconds_ntk": t2 - t1,
            "ntk": kernel_errors(k, theta),
        }
        ntk_k.append(k)
        if s.nngp:
            kn = kn.detach().to("cpu", torch.float64)
            entry["nngp"] = kernel_errors(kn, nngp_ref)
            nngp_k.append(kn)
        entry["seconds"] = time.perf_counter() - t0
        per_seed.append(entry)
        bar.set_postfix(ntk_err=f"{entry['ntk']['rel_fro']:.3g}")
        del model
    bar.close()
    t_emp = time.perf_counter() - t_emp

    ntk_stack = torch.stack(ntk_k)
    arrays = {
        "ntk": ntk_stack.numpy(),
        "analytic_ntk": theta.numpy(),
        "network_seeds": np.array([e["network_seed"] for e in per_seed]),
    }
    record = envelope(
        "convergence",
        prep.config_hash,
        s.identity(),
        config=_config_dict(s),
    )
    record |= {
        "overrides": overrides,
        "name": s.name,
        "width": s.width,
        "seeds": s.seeds,
        "base_seed": s.base_seed,
        "method": s.method.value,
        "dtype": s.dtype.value,
        "device": _device_info(device, s.device.value),
        "data": {
            "n": seqs.n,
            "m": seqs.dim,
            "lengths": seqs.lengths.tolist(),
            "hash": array_hash(seqs.values, seqs.lengths),
        },
        "analytic": analytic_info,
        "per_seed": per_seed,
        "ntk": _kernel_block(ntk_stack, theta, [e["ntk"] for e in per_seed]),
    }
    if s.nngp:
        nngp_stack = torch.stack(nngp_k)
        arrays.update(nngp=nngp_stack.numpy(), analytic_nngp=nngp_ref.numpy())
        record["nngp"] = _kernel_block(nngp_stack, nngp_ref, [e["nngp"] for e in per_seed])
    record["timings"] = {
        "analytic_s": analytic_info.get("seconds", 0.0),
        "empirical_s": t_emp,
        "per_network_s": t_emp / s.seeds,
        "total_s": time.perf_counter() - t_start,
    }
    record.update(
        kernels_file=KERNELS_NAME,
        versions=library_versions(),
        host=platform.node(),
        started=started,
        finished=utc_now(),
    )
    atomic_save_npz(out_dir / KERNELS_NAME, **arrays)
    atomic_write_json(out_dir / RECORD_NAME, record)  # last: marks the run finished
    ntk = record["ntk"]
    msg = (
        f"width={s.width}: NTK rel. Frobenius error {ntk['mean']['rel_fro']:.4g} "
        f"(std {ntk['std']['rel_fro']:.2g}, {s.seeds} seeds), seed-averaged kernel "
        f"{ntk['mean_kernel']['rel_fro']:.4g}"
    )
    if s.nngp:
        msg += f"; NNGP {record['nngp']['mean']['rel_fro']:.4g}"
    log.info("%s; %.1fs; record %s", msg, record["timings"]["total_s"], out_dir / RECORD_NAME)
    return record


def _config_dict(s: ConvergenceConfig) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(s), resolve=True, enum_to_str=True)


def settings_from_config(cfg: DictConfig) -> ConvergenceConfig:
    """The validated :class:`ConvergenceConfig` of a composed config (ValueError if invalid)."""
    return settings_from(cfg, ConvergenceConfig, "conf/convergence.yaml")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="convergence")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: validate, then run one width (see the module docstring)."""
    hc = HydraConfig.get()
    log.info("convergence: checking the settings and building the data")
    try:
        prep = prepare(settings_from_config(cfg))
    except ValueError as err:
        discard_if_empty(run_dir())
        fail(str(err), EXIT_BAD_INPUT)
    out_dir = check_writable(hc.runtime.output_dir, "the run folder (hydra.run.dir)")
    if prep.settings.cache:
        check_writable(cache_folder(prep.settings, Path(hc.runtime.cwd)), "cache_dir")
    if prep.settings.force or finished_record(out_dir) is None:
        write_provenance(cfg, out_dir)
    record = guarded(
        lambda: run_convergence(
            prep,
            out_dir,
            cwd=Path(hc.runtime.cwd),
            overrides=list(hc.overrides.task),
        ),
        str,
    )
    return float(record["ntk"]["mean"]["rel_fro"])


if __name__ == "__main__":
    hydra_entry(main)
