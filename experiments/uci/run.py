r"""The 90-dataset UCI benchmark of recurrent kernels (the RNTK papers' protocol).

    python -m experiments.uci dataset=iris                  # one dataset
    python -m experiments.uci dataset=all                   # all 90, resumable, then the report
    python -m experiments.uci -m dataset=iris,wine,seeds    # one job per dataset, any launcher
    python -m experiments.uci dataset=all grid.max_avg_length=null device=cuda   # GPU, full grid
    python -m experiments.uci.report outputs/uci/<grid hash>  # the table, again

For each dataset every recurrent kernel of the grid (``conf/uci.yaml``; the schema is
:class:`experiments.uci.schema.UCIConfig`) is computed once on all rows, and an SVM on the
precomputed kernel is fitted for every C on the ``conxuntos.dat`` split; each family of
:data:`experiments.uci.benchmark.FAMILIES` (a row of the table) keeps its best
(kernel, C) on validation and reports the mean test accuracy over the four k-fold pairs.
Baselines (RBF and polynomial SVMs, the ReLU-MLP NTK, a random forest) go through the same
selection. See :mod:`experiments.uci.benchmark` for the protocol.

Records: ``<out_dir>/<grid hash>/<dataset>/record.json`` (the hash names everything that
changes a result: grid, baselines, Cs, dtype, seed), written atomically when a dataset is
done, and ``partial.json`` after every (s_u, s_b) unit of kernels inside a dataset; a
re-run skips finished datasets and units, so a killed sweep resumes where it stopped. The
data folder is ``data_root=`` / ``$RNTK_UCI_ROOT`` / ``../shared/data/uci``.

Exit codes: 0 success, 2 invalid input, 3 out of memory.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm.auto import tqdm

from experiments.common.cli import CONF_DIR, settings_from
from experiments.common.records import (
    RECORD_NAME,
    atomic_write_json,
    config_hash,
    finished_record,
)
from experiments.common.run import (
    check_writable,
    envelope,
    guarded,
    hydra_entry,
    set_threads,
    validated,
    write_provenance,
)
from experiments.uci.benchmark import (
    FamilySelection,
    KernelSVM,
    baseline_kernels,
    forest_candidates,
    offer_kernel,
    unit_kernels,
)
from experiments.uci.schema import UCIConfig
from rntk_empirical import uci
from rntk_empirical.analytic import CUDA_BLOCK_ELEMENTS, numba_backend
from rntk_empirical.devices import resolve_device, resolve_dtype
from rntk_empirical.safe_io import load_json, reuse, written_by

log = logging.getLogger(__name__)

EXIT_BAD_INPUT, EXIT_OUT_OF_MEMORY = 2, 3
PARTIAL_NAME = "partial.json"
PARTIAL_KEYS = ("units_done", "kernels", "selection", "svm", "kernel_s", "elapsed_s")
CPU_UCI_BLOCK_ELEMENTS = 2**18  # measured best of 2^17..2^20 for the kernel bank on 2 cores
PROTOCOL_VERSION = 1


def identity(settings: UCIConfig) -> dict[str, Any]:
    """What changes a dataset's result (hashed into the output folder's name): the grid, the
    baselines and the Cs, and where and how the kernels are computed (the resolved device,
    the backend ``auto`` resolves to, the arithmetic precision), so runs on a GPU never
    resume into a CPU folder."""
    device = resolve_device(settings.device.value)
    return {
        "protocol": PROTOCOL_VERSION,
        "grid": asdict(settings.kernel_grid),
        "baselines": asdict(settings.baseline_grid),
        "Cs": list(settings.Cs),
        "dtype": settings.dtype.value,
        "arithmetic": arithmetic(settings, device),
        "device": device.type,
        "backend": resolved_backend(settings, device),
        "seed": settings.seed,
    }


def resolved_backend(settings: UCIConfig, device: torch.device) -> str:
    """The kernel-bank backend ``settings.backend`` means on ``device`` (equal lengths)."""
    if settings.backend.value != "auto":
        return settings.backend.value
    why_not = numba_backend.supported(settings.kernel_grid.nonlinearity, True, device)
    return "numba" if why_not is None else "torch"


def arithmetic(settings: UCIConfig, device: torch.device) -> str:
    """The precision the kernels are computed in (numba: always float64)."""
    return "float64" if resolved_backend(settings, device) == "numba" else settings.dtype.value


def results_dir(settings: UCIConfig) -> Path:
    """``<out_dir>/<grid hash>``: one folder per benchmark configuration."""
    return Path(settings.out_dir) / config_hash(identity(settings), length=10)


def datasets_of(settings: UCIConfig) -> list[str]:
    """The dataset names a run covers (validated against the data folder)."""
    known = uci.list_datasets(settings.data_root)
    if settings.dataset.strip() == "all":
        return known
    names = [n.strip() for n in settings.dataset.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown UCI dataset(s) {unknown} in {str(uci.data_root(settings.data_root))!r}; "
            f"known: {', '.join(known[:8])}, ... ({len(known)} in all) or 'all'"
        )
    return names


def run_dataset(settings: UCIConfig, name: str, out: Path) -> dict:
    """Run the protocol on one dataset and write its record; returns the record."""
    t_start = time.perf_counter()
    ds = uci.load_dataset(name, settings.data_root)
    dtype = resolve_dtype(settings.dtype.value)
    device = resolve_device(settings.device.value)
    grid = settings.kernel_grid
    svm = KernelSVM(ds, tuple(settings.Cs), workers=settings.num_threads)
    sel = FamilySelection()
    kernels: list[dict] = []
    elements = settings.block_elements or (
        CUDA_BLOCK_ELEMENTS if device.type == "cuda" else CPU_UCI_BLOCK_ELEMENTS
    )
    block = max(1, elements // ds.X.shape[0])
    bar = tqdm(
        total=grid.size(ds.length),
        desc=f"{name} (N={ds.X.shape[0]}, T={ds.length}) kernels",
        disable=not settings.progress,
        leave=False,
    )
    # rows of the kernel banks of the current (s_u, s_b) unit (compiled backend): a long
    # mean-pooling recursion shows that it moves
    bi = "bidirectional" in grid.directions
    directions = sum(bi or d in grid.directions for d in ("forward", "reversed"))
    rows_bar = tqdm(
        total=directions * ds.X.shape[0],
        desc="  rows of the kernel banks",
        disable=not settings.progress or ds.X.shape[0] < 1000,
        leave=False,
        unit="row",
    )
    # checkpoint after every (s_u, s_b) unit: a killed run resumes inside a dataset
    partial = out / PARTIAL_NAME
    chash = results_dir(settings).name
    state = None if settings.force else reuse(partial, load_json, written_by(chash, PARTIAL_KEYS))
    done: list[tuple[float, float]] = []
    t_kernel, elapsed_before = 0.0, 0.0
    if state is not None:
        done = [tuple(u) for u in state["units_done"]]
        kernels = state["kernels"]
        sel.restore(state["selection"])
        svm.fits, svm.unconverged, svm.seconds = state["svm"]
        t_kernel, elapsed_before = state["kernel_s"], state["elapsed_s"]
        bar.update(len(kernels))
        log.info("%s: resuming after %d of %d kernel units", name, len(done), len(grid.units()))
    for su, sb in grid.units():
        if (su, sb) in done:
            continue
        t0 = time.perf_counter()
        rows_bar.reset()
        for spec, K in unit_kernels(
            ds,
            grid,
            su,
            sb,
            dtype=dtype,
            device=device,
            block_size=block,
            compile=settings.compile,
            backend=settings.backend.value,
            progress=rows_bar.update,
        ):
            t_kernel += time.perf_counter() - t0
            kernels.append(offer_kernel(sel, svm, spec.as_dict(), K))
            bar.update()
            t0 = time.perf_counter()
        done.append((su, sb))
        atomic_write_json(
            partial,
            {
                "config_hash": chash,
                "units_done": done,
                "kernels": kernels,
                "selection": sel.state(),
                "svm": [svm.fits, svm.unconverged, svm.seconds],
                "kernel_s": t_kernel,
                "elapsed_s": elapsed_before + time.perf_counter() - t_start,
            },
        )
    bar.close()
    rows_bar.close()
    svm_recurrent = svm.seconds
    t_base = time.perf_counter()
    for spec, K in baseline_kernels(ds, settings.baseline_grid):
        kernels.append(offer_kernel(sel, svm, spec, K))
    if "random_forest" in settings.baseline_grid.methods:
        forests = forest_candidates(
            ds, settings.baseline_grid, settings.seed, workers=settings.num_threads
        )
        for spec, val, test in forests:
            sel.offer(spec, None, val, test)
            kernels.append({"spec": spec, "val_acc": [val], "best_C": None})
    rec = envelope(
        "uci",
        results_dir(settings).name,
        identity(settings),
        dataset=name,
    )
    rec |= {
        "n": int(ds.X.shape[0]),
        "length": ds.length,
        "n_classes": ds.n_classes,
        "readouts_run": list(grid.readouts_for(ds.length)),
        "families": sel.results(),
        "family_info": sel.info(),
        "kernels": kernels,
        "svm": {
            "fits": svm.fits,
            "unconverged": svm.unconverged,
            "test_evaluations": sel.test_evaluations,
        },
        "timings": {
            "kernel_s": t_kernel,
            "svm_s": svm_recurrent,
            "baseline_s": time.perf_counter() - t_base,
            "total_s": elapsed_before + time.perf_counter() - t_start,
        },
        "device": str(device),
    }
    atomic_write_json(out / RECORD_NAME, rec)
    partial.unlink(missing_ok=True)
    return rec


def _cost(settings: UCIConfig, name: str) -> float:
    """Relative cost of a dataset: N^2 T, times T where mean pooling runs."""
    n, d = uci.dataset_shape(name, settings.data_root)
    avg = "avg" in settings.kernel_grid.readouts_for(d)
    return n * n * d * (d if avg else 1)


def run(settings: UCIConfig) -> Path:
    """Run every dataset of ``settings`` not finished yet; returns the results folder."""
    names = datasets_of(settings)
    root = results_dir(settings)
    chash = root.name
    todo = []
    for name in names:
        if settings.force or finished_record(root / name, chash) is None:
            todo.append(name)
    log.info(
        "UCI benchmark: %d dataset(s), %d finished earlier, results in %s",
        len(names),
        len(names) - len(todo),
        root,
    )
    todo.sort(key=lambda n: _cost(settings, n))  # cheapest first: early results come fast
    atomic_write_json(root / "config.json", identity(settings))
    point_latest(root)
    outer = tqdm(todo, desc="UCI datasets", disable=not settings.progress or len(todo) < 2)
    for name in outer:
        outer.set_postfix_str(name)
        rec = run_dataset(settings, name, root / name)
        fam = rec["families"]
        best = max(fam.items(), key=lambda kv: kv[1]["test_acc"]) if fam else ("-", {})
        log.info(
            "%s: rntk %.3f, nngp %.3f, best %s %.3f (%.1f s)",
            name,
            fam.get("rntk", {}).get("test_acc", float("nan")),
            fam.get("nngp", {}).get("test_acc", float("nan")),
            best[0],
            best[1].get("test_acc", float("nan")),
            rec["timings"]["total_s"],
        )
    return root


LATEST = "latest"


def point_latest(root: Path) -> None:
    """``<out_dir>/latest`` -> ``root`` (a relative symlink, replaced atomically), so the last
    grid is found without typing its hash (``python -m experiments.uci.report``)."""
    link = root.parent / LATEST
    tmp = root.parent / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(root.name, target_is_directory=True)
        os.replace(tmp, link)
    except OSError as err:  # a file system without symlinks: say where the results are
        tmp.unlink(missing_ok=True)
        log.warning("could not point %s at %s (%s)", link, root, err)


def _report(root: Path) -> None:
    from experiments.uci.report import build_report

    try:
        summ = build_report(root)
        log.info("UCI report: %s", summ.get("out"))
    except Exception as err:  # noqa: BLE001 - a report problem must not lose the runs
        log.error("UCI report failed: %s (re-run `python -m experiments.uci.report %s`)", err, root)


class UCIReportCallback(Callback):
    """Hydra callback: build the table when a multirun (``-m dataset=...``) ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        user = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:
            cfg = OmegaConf.merge(OmegaConf.structured(UCIConfig), user)
            settings = settings_from(cfg, UCIConfig, "conf/uci.yaml")
        except (ValueError, OmegaConfBaseException) as err:
            log.error("UCI report skipped: %s", err)
            return
        if settings.report:
            _report(results_dir(settings))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="uci")
def main(cfg: DictConfig) -> None:
    def check(s: UCIConfig) -> None:
        datasets_of(s)
        resolve_device(s.device.value)

    settings = validated(cfg, UCIConfig, "conf/uci.yaml", check)
    check_writable(results_dir(settings), "out_dir")
    write_provenance(cfg, Path(HydraConfig.get().runtime.output_dir))
    set_threads(settings.num_threads)
    root = guarded(
        lambda: run(settings),
        lambda err: (
            f"out of memory ({type(err).__name__}); lower block_elements or use dtype=float32"
        ),
    )
    multirun = HydraConfig.get().mode.name == "MULTIRUN"
    if settings.report and not multirun and settings.dataset.strip() != "":
        _report(root)
    print(f"results: {root}")


if __name__ == "__main__":
    hydra_entry(main)
