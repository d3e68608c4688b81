r"""Finite versus infinite recurrent networks on real sequence data (Lee et al., NeurIPS 2020,
for Elman RNNs): do trained finite RNNs approach the RNTK / NNGP predictor as they widen,
does it depend on how they are trained, and who is more accurate?

    python -m experiments.finite_vs_infinite                       # default: both data sets
    python -m experiments.finite_vs_infinite quick=true            # reduced smoke run
    python -m experiments.finite_vs_infinite 'tasks=[GunPoint]' max_len=64
    python -m experiments.finite_vs_infinite -m 'tasks=[ItalyPowerDemand],[JapaneseVowels]'
    python -m experiments.finite_vs_infinite -m arch=erf_last,relu_last
    python -m experiments.finite_vs_infinite.report outputs/finite_vs_infinite

See :mod:`experiments.finite_vs_infinite.study` for what a run computes and writes; the
schema is :class:`experiments.finite_vs_infinite.schema.FiniteVsInfiniteConfig`. A killed
run re-run with the same command resumes (per-seed files, checkpoints); a finished one is
skipped. After a ``-m`` sweep the report callback aggregates into ``<sweep dir>/report``.

Exit codes: 0 success (or skipped), 2 invalid input, 3 out of memory.
"""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.common.cli import CONF_DIR
from experiments.common.run import (
    guarded,
    hydra_entry,
    job_folder,
    validated,
)
from experiments.finite_vs_infinite.schema import FiniteVsInfiniteConfig
from experiments.finite_vs_infinite.study import load_task, run_study
from rntk_empirical.devices import resolve_device

log = logging.getLogger(__name__)
CONFIG_FILE = "conf/finite_vs_infinite.yaml"


def _check(s: FiniteVsInfiniteConfig) -> None:
    for name in s.tasks:
        load_task(s, name)  # data problems surface before any work
    resolve_device(s.device.value)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="finite_vs_infinite")
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    settings = validated(cfg, FiniteVsInfiniteConfig, CONFIG_FILE, _check)
    out_dir = job_folder(cfg, settings.force)
    record = guarded(
        lambda: run_study(settings, out_dir, list(hc.overrides.task)),
        lambda err: (
            f"out of memory ({type(err).__name__}); use smaller widths, fewer sequences "
            "(n_train, n_test) or a shorter max_len"
        ),
    )
    for name, t in record["tasks"].items():
        k = t["kernels"]
        log.info(
            "%s: RNTK %.3f, NNGP %.3f test accuracy (ridge chosen on validation)",
            name,
            k["ntk"]["ridge_float64"]["test_accuracy"],
            k["nngp"]["ridge_float64"]["test_accuracy"],
        )
        for w, row in t["widths"].items():
            accs = ", ".join(
                f"{arm} {row[arm]['test_accuracy']:.3f}"
                for arm in ("ntk", "centered", "standard", "adam")
                if arm in row and "test_accuracy" in row[arm]
            )
            log.info("  width %s: %s", w, accs)


if __name__ == "__main__":
    hydra_entry(main)
