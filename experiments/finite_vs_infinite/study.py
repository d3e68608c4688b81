r"""The study of one configuration, without Hydra (the entry point, the figure and the tests
call :func:`run_study`).

For each task: the analytic RNTK and NNGP on (train + validation + test) x train (float64,
cached in ``<task>/kernels.pt``); kernel predictors (ridge chosen on validation in float64
and float32; t = infinity; gradient descent at the networks' learning rate and step count);
then, per width, the network arms of :class:`~.schema.FiniteVsInfiniteConfig`. Every
trained network writes ``<task>/w<n>/<arm>/seed<s>.npz`` (predictions) and then
``seed<s>.json`` (history, scores) atomically, and checkpoints while it trains, so a killed
run re-run with the same command resumes where it stopped. ``record.json`` comes last.

Distances to the kernel predictor (RMS over test sequences and outputs):
``dist_kernel_T``: the network after ``steps`` steps vs kernel GD with the analytic RNTK at
the same learning rate and step count (f_0 = 0: the mean predictor), the quantity whose
width exponent the study fits; ``dist_rntk``: the early-stopped network vs the RNTK ridge
regression chosen on validation.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.common.records import (
    RECORD_NAME,
    atomic_save_npz,
    atomic_torch_save,
    atomic_write_json,
    identity_hash,
    utc_now,
)
from experiments.common.run import already_finished, envelope, set_threads
from experiments.finite_vs_infinite.methods import (
    accuracy,
    distance_power_laws,
    ensemble_distance,
    kernel_gd_path,
    mse_loss,
    ntk_lambda_max,
    rms,
    select_ridge,
    select_step,
    single_distance,
    train_classifier,
)
from experiments.finite_vs_infinite.schema import FiniteVsInfiniteConfig
from rntk_empirical.devices import resolve_device, resolve_dtype
from rntk_empirical.safe_io import load_json, load_npz, load_torch, reuse, written_by
from rntk_empirical.tasks import ClassificationSplit, load_classification_split
from rntk_empirical.training import TrainSettings, learning_rate

log = logging.getLogger(__name__)
KERNELS = ("ntk", "nngp")
# what a reused per-seed entry must hold
ENTRY_KEYS = ("seed", "lr", "diverged", "diverged_at", "best_step", "seconds", "history")


def load_task(cfg: FiniteVsInfiniteConfig, name: str) -> ClassificationSplit:
    return load_classification_split(
        name, cfg.val_fraction, cfg.max_len, cfg.n_train, cfg.n_test, cfg.data_seed
    )


def task_kernels(
    cfg: FiniteVsInfiniteConfig, data: ClassificationSplit, path: Path, chash: str
) -> dict:
    """``{"ntk": K, "nngp": K}``, each ``(N_tr + N_va + N_te, N_tr)`` float64, cached in
    ``path`` (read back without pickle; a damaged, hostile or stale cache is recomputed with
    a one-line warning)."""
    shape = (sum(data.sizes), data.sizes[0])

    def check(obj) -> str | None:
        if not isinstance(obj, dict) or obj.get("config_hash") != chash:
            return "not the kernels of this configuration"
        if any(
            not isinstance(obj.get(k), torch.Tensor) or tuple(obj[k].shape) != shape
            for k in KERNELS
        ):
            return f"its kernels are not {shape} tensors"
        return None

    cached = None if cfg.force else reuse(path, load_torch, check)
    if cached is not None:
        return cached
    from rntk_empirical.analytic import analytic_kernels

    t0 = time.perf_counter()
    ntk, nngp = analytic_kernels(cfg.arch.to_architecture(), data.all_x, data.x_train)
    out = {
        "ntk": ntk.cpu(),
        "nngp": nngp.cpu(),
        "seconds": time.perf_counter() - t0,
        "config_hash": chash,
    }
    atomic_torch_save(path, out)
    return out


def kernel_results(
    cfg: FiniteVsInfiniteConfig, data: ClassificationSplit, kernels: dict
) -> dict[str, Any]:
    """Ridge regression (float64 / float32) and t = infinity scores of each kernel."""
    y_tr, y_va, y_te = (
        data.targets(x) for x in (data.labels_train, data.labels_val, data.labels_test)
    )
    out: dict[str, Any] = {}
    for name in KERNELS:
        K = kernels[name]
        res: dict[str, Any] = {}
        for key, dt in (("ridge_float64", torch.float64), ("ridge_float32", torch.float32)):
            c = select_ridge(K, data.sizes, y_tr, data.labels_val, y_va, cfg.ridges, dt)
            res[key] = c.summary(data.labels_test, y_te)
            res[key]["val_best_accuracy"] = max(c.val_accuracy)
            if dt == torch.float64:
                ridge_test = c.test
        inf = select_ridge(K, data.sizes, y_tr, data.labels_val, y_va, [0.0])
        res["t_infinity"] = inf.summary(data.labels_test, y_te)
        res["float32_vs_float64_rms"] = rms(
            select_ridge(K, data.sizes, y_tr, data.labels_val, y_va, [0.0], torch.float32).test
            - inf.test
        )
        res["_ridge_test"] = ridge_test
        out[name] = res
    return out


def _settings(cfg: FiniteVsInfiniteConfig, lr: float, optimizer: str, seed: int) -> TrainSettings:
    return TrainSettings(
        steps=cfg.steps,
        lr=lr,
        optimizer=optimizer,
        record_every=cfg.record_every,
        checkpoint_every=cfg.checkpoint_every,
        track_linearized=False,
        seed=seed,
    )


def _train_seed(
    cfg: FiniteVsInfiniteConfig,
    data: ClassificationSplit,
    folder: Path,
    seed: int,
    arch,
    width: int,
    lr: float,
    optimizer: str,
    centered: bool,
    chash: str,
) -> dict:
    """Train (or reuse) one network; returns its JSON entry with predictions attached."""
    from rntk_empirical.network import ElmanRNN

    js, npz = folder / f"seed{seed}.json", folder / f"seed{seed}.npz"
    prev = None if cfg.force else reuse(js, load_json, written_by(chash, ENTRY_KEYS))
    if prev is not None:
        shape = (data.sizes[2], data.n_classes)
        want = () if prev["diverged"] is True else ("test_best", "test_final")

        def check(arrays: dict) -> str | None:
            if sorted(arrays) != sorted(want) or any(a.shape != shape for a in arrays.values()):
                return f"not the predictions of {js.name} ({', '.join(want) or 'none'}; {shape})"
            return None

        arrays = reuse(npz, load_npz, check)
        if arrays is not None:
            prev["arrays"] = arrays
            return prev
    folder.mkdir(parents=True, exist_ok=True)
    device, dtype = resolve_device(cfg.device.value), resolve_dtype(cfg.dtype.value)
    model = ElmanRNN(
        arch,
        data.input_dim,
        width,
        seed=cfg.base_seed + seed,
        out_dim=data.n_classes,
        dtype=dtype,
        device=device,
    )
    ckpt = folder / f"checkpoint_seed{seed}.pt"
    run = train_classifier(
        model,
        data,
        _settings(cfg, lr, optimizer, seed),
        centered,
        checkpoint_path=ckpt,
        config_hash=f"{chash}/{folder.parent.name}/{folder.name}/seed{seed}",
    )
    y_te = data.targets(data.labels_test)
    entry: dict[str, Any] = {
        "config_hash": chash,
        "seed": seed,
        "lr": lr,
        "diverged": run.diverged,
        "diverged_at": run.diverged_at,
        "best_step": run.best_step,
        "seconds": run.seconds,
        "history": {k: getattr(run, k) for k in ("step", "train_loss", "val_loss", "val_accuracy")},
    }
    arrays = {}
    if not run.diverged and run.test_best is not None and run.test_final is not None:
        entry["val_accuracy"] = max(run.val_accuracy)
        entry["test_accuracy"] = accuracy(run.test_best, data.labels_test)
        entry["test_mse"] = mse_loss(run.test_best, y_te)
        arrays = {"test_best": run.test_best.numpy(), "test_final": run.test_final.numpy()}
    atomic_save_npz(npz, **arrays)
    atomic_write_json(js, entry)
    ckpt.unlink(missing_ok=True)
    entry["arrays"] = arrays
    if run.diverged:
        log.warning("%s seed %d diverged at step %s (lr %.3g)", folder, seed, run.diverged_at, lr)
    return entry


def _lambdas(path: Path, chash: str, compute) -> dict:
    """The per-seed lambda_max of one width and parameterization (cached in ``path``)."""

    def check(obj: Any) -> str | None:
        if (why := written_by(chash, ("values",))(obj)) is not None:
            return why
        values = obj["values"]
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values)
        ):
            return "not a list of eigenvalues"
        return None

    lams = reuse(path, load_json, check)
    if lams is None:
        lams = {"config_hash": chash, "values": compute()}
        atomic_write_json(path, lams)
    return lams


def _best_val_loss(entry: dict) -> float:
    h = entry["history"]
    return h["val_loss"][h["step"].index(entry["best_step"])]


def _arm_summary(entries: list[dict], labels: torch.Tensor, y_te, ridge_ref, gd_ref) -> dict:
    """Mean and spread over the non-diverged seeds, plus the seed ensemble."""
    ok = [e for e in entries if not e["diverged"]]
    out: dict[str, Any] = {
        "seeds": len(entries),
        "diverged": len(entries) - len(ok),
        "lr": entries[0]["lr"] if entries else math.nan,
        "seconds": float(np.mean([e["seconds"] for e in entries])) if entries else math.nan,
    }
    if not ok:
        return out
    acc = [e["test_accuracy"] for e in ok]
    best = np.stack([e["arrays"]["test_best"] for e in ok])
    final = np.stack([e["arrays"]["test_final"] for e in ok])
    out |= {
        "test_accuracy": float(np.mean(acc)),
        "test_accuracy_std": float(np.std(acc)),
        "test_mse": float(np.mean([e["test_mse"] for e in ok])),
        "val_accuracy": float(np.mean([e["val_accuracy"] for e in ok])),
        "val_loss": float(np.mean([_best_val_loss(e) for e in ok])),
        "dist_rntk": single_distance(best - ridge_ref.numpy()[None]),
        "ensemble_test_accuracy": accuracy(torch.as_tensor(best.mean(0)), labels),
        "ensemble_test_mse": mse_loss(torch.as_tensor(best.mean(0)), y_te),
        "ensemble_dist_rntk": ensemble_distance(best - ridge_ref.numpy()[None]),
    }
    if gd_ref is not None:
        res = final - gd_ref.numpy()[None]
        out |= {
            "dist_kernel_T": single_distance(res),
            "ensemble_dist_kernel_T": ensemble_distance(res),
        }
        out["_residuals"] = res
    return out


def run_task(cfg: FiniteVsInfiniteConfig, name: str, out_dir: Path, chash: str) -> dict:
    """Kernels and every width and arm of one task; returns its part of the record."""
    data = load_task(cfg, name)
    log.info(
        "%s: %d train / %d validation / %d test series; analytic RNTK and NNGP", name, *data.sizes
    )
    tdir = out_dir / name
    tdir.mkdir(parents=True, exist_ok=True)
    kernels = task_kernels(cfg, data, tdir / "kernels.pt", chash)
    kres = kernel_results(cfg, data, kernels)
    y_tr, y_va, y_te = (
        data.targets(x) for x in (data.labels_train, data.labels_val, data.labels_test)
    )
    n_tr, n_va, _ = data.sizes
    arch = cfg.arch.to_architecture()
    sp_arch = arch.replace(parameterization="standard")
    eval_steps = sorted(set(range(0, cfg.steps + 1, cfg.record_every)) | {cfg.steps})
    ridge_ref = kres["ntk"]["_ridge_test"]
    widths: dict[str, Any] = {}
    residuals: dict[str, dict[int, np.ndarray]] = {"ntk": {}, "centered": {}}
    from rntk_empirical.network import ElmanRNN

    for width in sorted(int(w) for w in cfg.widths):
        t0 = time.perf_counter()
        log.info("%s width=%d: training %s", name, width, ", ".join(cfg.arms))
        wdir = tdir / f"w{width}"
        row: dict[str, Any] = {}

        def lam(a, seed: int, width: int = width) -> float:
            return ntk_lambda_max(
                ElmanRNN(
                    a, data.input_dim, width, seed=cfg.base_seed + seed, out_dim=data.n_classes
                ),
                data.x_train,
            )

        if {"ntk", "centered"} & set(cfg.arms):
            lams = _lambdas(
                wdir / "lambda_ntk.json", chash, lambda: [lam(arch, s) for s in range(cfg.seeds)]
            )
            lr = learning_rate(max(lams["values"]), n_tr, cfg.lr_scale)
            # kernel GD with the analytic RNTK at the networks' learning rate and steps
            paths = {
                k: kernel_gd_path(kernels[k], data.sizes, y_tr, lr, eval_steps) for k in KERNELS
            }
            gd_ref = paths["ntk"][-1, n_va:]
            row["kernel_gd"] = {
                k: {
                    "at_T": {
                        "test_accuracy": accuracy(paths[k][-1, n_va:], data.labels_test),
                        "test_mse": mse_loss(paths[k][-1, n_va:], y_te),
                    },
                    "early_stopped": select_step(
                        paths[k], eval_steps, n_va, data.labels_val, y_va
                    ).summary(data.labels_test, y_te),
                }
                for k in KERNELS
            }
            row["lambda_max"] = {
                "empirical_per_seed": lams["values"],
                "analytic": float(torch.linalg.eigvalsh(kernels["ntk"][:n_tr]).max()),
            }
            for arm, centered in (("ntk", False), ("centered", True)):
                if arm not in cfg.arms:
                    continue
                entries = [
                    _train_seed(cfg, data, wdir / arm, s, arch, width, lr, "gd", centered, chash)
                    for s in range(cfg.seeds)
                ]
                summ = _arm_summary(entries, data.labels_test, y_te, ridge_ref, gd_ref)
                res = summ.pop("_residuals", None)
                if res is not None:
                    residuals[arm][width] = res
                row[arm] = summ
        if "standard" in cfg.arms:
            lams = _lambdas(
                wdir / "lambda_standard.json",
                chash,
                lambda: [lam(sp_arch, s) for s in range(cfg.sp_seeds)],
            )
            sweep = {}
            for c in cfg.sp_lr_scales:
                lr = learning_rate(max(lams["values"]), n_tr, c)
                entries = [
                    _train_seed(
                        cfg,
                        data,
                        wdir / f"standard_c{c:g}",
                        s,
                        sp_arch,
                        width,
                        lr,
                        "gd",
                        False,
                        chash,
                    )
                    for s in range(cfg.sp_seeds)
                ]
                sweep[f"{c:g}"] = _arm_summary(entries, data.labels_test, y_te, ridge_ref, None)
            ok = {c: s for c, s in sweep.items() if "val_accuracy" in s}
            if ok:
                # validation accuracy, ties (a small validation set saturates) by validation loss
                c_best = max(ok, key=lambda c: (ok[c]["val_accuracy"], -ok[c]["val_loss"]))
                row["standard"] = ok[c_best] | {"lr_scale": float(c_best)}
            else:
                row["standard"] = {"diverged": sum(s["diverged"] for s in sweep.values())}
            row["standard_sweep"] = sweep
        if "adam" in cfg.arms:
            entries = [
                _train_seed(
                    cfg, data, wdir / "adam", s, sp_arch, width, cfg.adam_lr, "adam", False, chash
                )
                for s in range(cfg.seeds)
            ]
            row["adam"] = _arm_summary(entries, data.labels_test, y_te, ridge_ref, None)
        row["seconds"] = time.perf_counter() - t0
        widths[str(width)] = row
        log.info("%s width=%d done in %.1fs", name, width, row["seconds"])

    fits: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for arm, by_w in residuals.items():
        for w, r in by_w.items():
            arrays[f"{arm}/w{w}"] = r
        usable = {w: r for w, r in by_w.items() if r.shape[0] >= 1}
        if len(usable) >= 2:
            f = distance_power_laws(usable, n_boot=cfg.n_boot, seed=cfg.base_seed)
            label = {
                "ntk": ("plain", "plain_ensemble"),
                "centered": ("centered", "centered_ensemble"),
            }[arm]
            for (kind, fit), lab in zip(f.items(), label):
                fits[lab] = {
                    "exponent": fit.exponent,
                    "ci95": [fit.ci_low, fit.ci_high],
                    "widths": list(fit.widths),
                    "values": list(fit.values),
                    "statistic": kind,
                }
    atomic_save_npz(tdir / "residuals.npz", **{k.replace("/", "__"): v for k, v in arrays.items()})
    for k in KERNELS:
        kres[k].pop("_ridge_test")
    return {
        "dataset": name,
        "sizes": {"train": n_tr, "val": n_va, "test": data.sizes[2]},
        "classes": data.n_classes,
        "input_dim": data.input_dim,
        "lengths": [min(data.lengths), max(data.lengths)],
        "kernel_seconds": float(kernels.get("seconds", math.nan)),
        "kernels": kres,
        "widths": widths,
        "distance_exponents": fits,
    }


def run_study(
    cfg: FiniteVsInfiniteConfig, out_dir: Path, overrides: list[str] | None = None
) -> dict:
    """Run (or resume, or skip when finished) the study; returns the record."""
    chash = identity_hash(cfg.identity())
    done = already_finished(out_dir, chash, cfg.force)
    if done is not None:
        return done
    set_threads(cfg.num_threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    started, t0 = utc_now(), time.perf_counter()
    tasks, timings = {}, {}
    for name in cfg.tasks:
        t = time.perf_counter()
        tasks[name] = run_task(cfg, name, out_dir, chash)
        timings[name] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    record = envelope("finite_vs_infinite", chash, cfg.identity(), timings=timings)
    record |= {
        "name": cfg.name,
        "overrides": overrides or [],
        "tasks": tasks,
        "host": platform.node(),
        "threads": torch.get_num_threads(),
        "started": started,
    }
    atomic_write_json(out_dir / RECORD_NAME, record)
    return record
