"""Find-or-run width sweeps of the convergence and drift experiments.

Figures need the numbers of many runs. A run is identified by the hash of what it measures
(its config identity), so a figure first looks for a finished record with that hash anywhere
under ``outputs/`` (a sweep a user already ran from the command line counts) and runs only
the missing widths, into the same deterministic folders the command line uses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from experiments.common.records import find_records, identity_hash, record_hash

log = logging.getLogger(__name__)


class RecordIndex:
    """Finished records under a root, by config hash (built once, updated as runs finish).

    ``device`` (``cpu | cuda | auto``) is the device the figures' missing runs use; it is
    part of each run's identity, so runs on another device are not reused."""

    def __init__(self, root: str | Path, device: str = "cpu") -> None:
        self.root = Path(root)
        self.device = device
        self._by_hash: dict[str, dict] = {}
        if self.root.exists():
            for _, rec in find_records(self.root):
                chash = record_hash(rec)
                if chash is not None:
                    self._by_hash.setdefault(chash, rec)

    def get(self, chash: str) -> dict | None:
        return self._by_hash.get(chash)

    def add(self, rec: dict) -> None:
        self._by_hash[record_hash(rec)] = rec


def on_device(cfg, device: str):
    """``cfg`` (a convergence or drift config) set to run on ``device``."""
    from experiments.common.schema import DeviceChoice

    return replace(cfg, device=DeviceChoice(device))


def convergence_records(
    configs: Iterable, outputs: str | Path, index: RecordIndex | None = None, progress: bool = False
) -> list[dict]:
    """Records of :class:`~experiments.common.schema.ConvergenceConfig` runs, running missing ones.

    New runs go to ``<outputs>/convergence/<name>/width=<w>/seeds=<S>`` (re-runs skip them).
    """
    from experiments.convergence.run import prepare, run_convergence

    outputs = Path(outputs)
    index = index or RecordIndex(outputs)
    out = []
    for cfg in configs:
        prep = prepare(on_device(cfg, index.device))
        rec = index.get(prep.config_hash)
        if rec is None:
            run_dir = (
                outputs / "convergence" / cfg.name / f"width={cfg.width}" / f"seeds={cfg.seeds}"
            )
            log.info("running %s width=%d (%d seeds)", cfg.name, cfg.width, cfg.seeds)
            rec = run_convergence(prep, run_dir, cwd=outputs.parent)
            index.add(rec)
        out.append(rec)
    return out


def drift_records(
    configs: Iterable, outputs: str | Path, index: RecordIndex | None = None
) -> list[dict]:
    """Records of :class:`experiments.common.schema.DriftConfig` runs, running missing ones."""
    from experiments.drift.run import run_drift

    outputs = Path(outputs)
    index = index or RecordIndex(outputs)
    out = []
    for cfg in configs:
        cfg = on_device(cfg, index.device)
        chash = identity_hash(cfg.identity())
        rec = index.get(chash)
        if rec is None:
            run_dir = outputs / "drift" / cfg.name / f"width={cfg.width}" / f"seeds={cfg.seeds}"
            log.info("training %s width=%d (%d seeds)", cfg.name, cfg.width, cfg.seeds)
            rec = run_drift(cfg, run_dir)
            index.add(rec)
        out.append(rec)
    return out
