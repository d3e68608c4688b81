r"""Kernel drift, lazy-regime agreement and loss convergence of trained finite RNNs vs width.

One run = one width n: ``seeds`` networks are trained on a sequence task by full-batch
gradient descent on L = 1/(2N) sum_i (f(x_i) - y_i)^2 (or SGD / Adam) with learning rate

    eta = lr_scale * N / lambda_max(Theta_analytic(train, train))

(the same relative step at every width; ``lr=`` sets it directly). Every ``record_every``
steps the run records train/test losses, the NTK drift ||Theta_t - Theta_0||_F/||Theta_0||_F
and kernel distance on a fixed probe set, per-parameter weight changes, and the distance of
the outputs from the linearized network, and from the closed-form kernel GD predictions with
the network's own Theta_0 and with the analytic Theta (see :mod:`rntk_empirical.training`).

    python -m experiments.drift width=512
    python -m experiments.drift -m                                  # default width sweep
    python -m experiments.drift -m width=128,512 arch.init=orthogonal
    python -m experiments.drift -m arch.parameterization=standard lr=0.01
    python -m experiments.drift -m task=italy_power                 # aeon dataset (extra)

Each seed checkpoints while it trains and writes ``seed<k>.json`` when done, so a killed
run re-run with the same command resumes; ``record.json`` is written last. A seed whose
loss becomes NaN/Inf or explodes is recorded as diverged (with the step) and the sweep's
report shows it as such. After a sweep, :class:`experiments.drift.report.DriftReportCallback`
aggregates (``<sweep dir>/report``).

Exit codes: 0 success (or skipped), 2 invalid input, 3 out of memory.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import asdict
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm.auto import tqdm

from experiments.common.cli import CONF_DIR, settings_from
from experiments.common.records import (
    RECORD_NAME,
    atomic_write_json,
    identity_hash,
    library_versions,
    utc_now,
)
from experiments.common.run import (
    already_finished,
    envelope,
    guarded,
    hydra_entry,
    job_folder,
    set_threads,
    validated,
)
from experiments.drift.schema import DriftConfig
from experiments.drift.summary import summarize
from rntk_empirical.devices import precision_scope, resolve_device, resolve_dtype
from rntk_empirical.safe_io import load_json, reuse, written_by
from rntk_empirical.tasks import Task
from rntk_empirical.training import (
    CheckpointError,
    KernelPredictions,
    TrainSettings,
    kernel_learning_rate,
    train_and_track,
)

log = logging.getLogger(__name__)


def _probe(task: Task, n_probe: int) -> list[torch.Tensor]:
    k = max(1, n_probe // 2)
    return task.x_train[:k] + task.x_test[: n_probe - k]


def run_drift(cfg: DriftConfig, out_dir: Path, overrides: list[str] | None = None) -> dict:
    """Run (or resume, or skip if finished) one width; returns the record. The precision
    the config states holds for the whole run (IEEE float32 on CUDA, never TF32); the
    process's flags are restored afterwards."""
    with precision_scope(resolve_dtype(cfg.dtype.value)):
        return _run_drift(cfg, out_dir, overrides)


def _run_drift(cfg: DriftConfig, out_dir: Path, overrides: list[str] | None) -> dict:
    chash = identity_hash(cfg.identity())
    done = already_finished(out_dir, chash, cfg.force)
    if done is not None:
        return done
    set_threads(cfg.num_threads)
    from rntk_empirical.analytic import analytic_ntk
    from rntk_empirical.empirical import empirical_ntk
    from rntk_empirical.kernel_machines import gradient_descent_mse
    from rntk_empirical.network import ElmanRNN

    arch = cfg.arch.to_architecture()
    task = cfg.task.build()
    device, dtype = resolve_device(cfg.device.value), resolve_dtype(cfg.dtype.value)
    started, t0 = utc_now(), time.perf_counter()
    n_tr = len(task.x_train)
    x_all = task.x_train + task.x_test
    theta_inf = None
    if arch.parameterization == "ntk":
        theta_inf = analytic_ntk(arch, x_all, dtype=torch.float64)
    record_steps = list(range(0, cfg.steps + 1, cfg.record_every))
    max_len = task.max_len if arch.readout == "per_step" else None
    out_dir.mkdir(parents=True, exist_ok=True)

    def predictions(theta: torch.Tensor, lr: float, f0: torch.Tensor) -> KernelPredictions:
        p = gradient_descent_mse(
            theta[:n_tr, :n_tr],
            task.y_train,
            lr,
            record_steps,
            k_test_train=theta[n_tr:, :n_tr],
            fx_train_0=f0[:n_tr],
            fx_test_0=f0[n_tr:],
        )
        return KernelPredictions(p.train.to(dtype), p.test.to(dtype))

    per_seed: list[dict] = []
    bar = tqdm(
        total=cfg.seeds * cfg.steps,
        desc=f"width={cfg.width}",
        unit="step",
        disable=not cfg.progress,
    )
    for i in range(cfg.seeds):
        seed_file = out_dir / f"seed{i}.json"
        prev = None if cfg.force else reuse(seed_file, load_json, written_by(chash, ("history",)))
        if prev is not None:
            per_seed.append(prev)
            bar.update(cfg.steps)
            continue
        model = ElmanRNN(
            arch,
            task.input_dim,
            cfg.width,
            seed=cfg.base_seed + i,
            max_len=max_len,
            dtype=dtype,
            device=device,
        )
        xs, xt = model.prepare(task.x_train), model.prepare(task.x_test)
        ys, yt = task.y_train.to(device, dtype), task.y_test.to(device, dtype)
        theta0 = empirical_ntk(model, x_all).to("cpu", torch.float64)
        if cfg.lr is not None:
            lr = cfg.lr
        else:  # the analytic NTK when it exists (ntk parameterization), else the network's
            ref = theta_inf if theta_inf is not None else theta0
            lr = kernel_learning_rate(ref[:n_tr, :n_tr], cfg.lr_scale)
        # GD on the linearization (and kernel GD with Theta_0) is stable iff
        # eta lambda_max(Theta_0) / N < 2; narrow networks can break it at an eta set from
        # the analytic kernel (their lambda_max fluctuates far above it).
        lam0 = float(torch.linalg.eigvalsh(theta0[:n_tr, :n_tr]).max())
        lin_stable = cfg.optimizer != "gd" or lr * lam0 / n_tr < 2.0
        with torch.no_grad():
            f0 = model(x_all).to("cpu", torch.float64)
        kp = {"empirical": predictions(theta0, lr, f0)}
        if theta_inf is not None:
            kp["analytic"] = predictions(theta_inf, lr, f0)
        kp = {k: KernelPredictions(v.train.to(device), v.test.to(device)) for k, v in kp.items()}
        settings = TrainSettings(
            steps=cfg.steps,
            lr=lr,
            optimizer=cfg.optimizer,
            batch_size=cfg.batch_size,
            record_every=cfg.record_every,
            checkpoint_every=cfg.checkpoint_every,
            track_linearized=cfg.track_linearized,
            seed=cfg.base_seed + i,
        )
        done_before = bar.n
        ckpt = out_dir / f"checkpoint_seed{i}.pt"
        hist = train_and_track(
            model,
            (xs, ys),
            (xt, yt),
            model.prepare(_probe(task, cfg.n_probe)),
            settings,
            kp,
            checkpoint_path=str(ckpt),
            progress=lambda k, base=done_before: bar.update(base + k - bar.n),
            config_hash=f"{chash}/seed{i}",
            strict_checkpoint=cfg.strict_checkpoints,
        )
        bar.update(done_before + cfg.steps - bar.n)
        entry = {
            "config_hash": chash,
            "seed": i,
            "network_seed": cfg.base_seed + i,
            "lr": lr,
            "lambda_max_theta0": lam0,
            "lin_stable": lin_stable,
            "history": asdict(hist),
        }
        if hist.diverged:
            log.warning("seed %d diverged at step %s", i, hist.diverged_at)
        atomic_write_json(seed_file, entry)
        ckpt.unlink(missing_ok=True)
        per_seed.append(entry)
    bar.close()
    record = envelope("drift", chash, cfg.identity())
    record |= {
        "overrides": overrides or [],
        "name": cfg.name,
        "width": cfg.width,
        "seeds": cfg.seeds,
        "task": {
            "name": task.name,
            "n_train": n_tr,
            "n_test": len(task.x_test),
            "lengths": sorted({int(x.shape[0]) for x in x_all}),
        },
        "record_steps": record_steps,
        "per_seed": per_seed,
        "summary": summarize(per_seed),
        "device": str(device),
        "seconds": time.perf_counter() - t0,
        "versions": library_versions(),
        "host": platform.node(),
        "started": started,
        "finished": utc_now(),
    }
    atomic_write_json(out_dir / RECORD_NAME, record)
    s = record["summary"]
    log.info(
        "width=%d: final NTK drift %.3g, weight change %.3g, |f - f_lin| %.3g, "
        "|f - f_kernel(analytic)| %.3g (%d/%d diverged); %.1fs",
        cfg.width,
        s["ntk_drift"],
        s["weight_change_total"],
        s["dist_linearized"],
        s["dist_kernel_analytic"],
        s["diverged"],
        cfg.seeds,
        record["seconds"],
    )
    return record


def settings_from_config(cfg: DictConfig) -> DriftConfig:
    """The validated :class:`DriftConfig` of a composed config (ValueError if invalid)."""
    return settings_from(cfg, DriftConfig, "conf/drift.yaml")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="drift")
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()

    def check(s: DriftConfig) -> None:
        s.task.build()  # data problems surface before any work
        resolve_device(s.device.value)

    settings = validated(cfg, DriftConfig, "conf/drift.yaml", check)
    out_dir = job_folder(cfg, settings.force)
    guarded(
        lambda: run_drift(settings, out_dir, list(hc.overrides.task)),
        lambda err: (
            f"out of memory at width={settings.width} ({type(err).__name__}); use smaller "
            "widths, fewer training sequences (task.n_train) or track_linearized=false"
        ),
        bad_input=(FileExistsError, CheckpointError),
    )


if __name__ == "__main__":
    hydra_entry(main)
