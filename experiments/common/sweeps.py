"""Find-or-run width sweeps of the registered experiments (convergence, drift, ...).

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

from experiments.common.records import find_records, finished_record, identity_hash, record_hash
from experiments.common.registry import experiment_of

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
    """``cfg`` (a registered experiment's settings) set to run on ``device`` (unchanged if
    its schema has no ``device``)."""
    from experiments.common.schema import DeviceChoice

    if not hasattr(cfg, "device"):
        return cfg
    return replace(cfg, device=DeviceChoice(device))


def records(
    configs: Iterable, outputs: str | Path, index: RecordIndex | None = None
) -> list[dict]:
    """Records of the runs of ``configs`` (settings of registered experiments with a
    ``run``), running the missing ones.

    New runs go to ``<outputs>/<folder(cfg)>`` (the experiment's own folder rule, e.g.
    ``convergence/<name>/width=<w>/seeds=<S>``), where a re-run finds and skips them; if that
    folder holds a finished run of another configuration, to ``<folder>-<hash>`` beside it.
    """
    outputs = Path(outputs)
    index = index or RecordIndex(outputs)
    out = []
    for cfg in configs:
        exp = experiment_of(cfg)
        if exp.run is None or exp.folder is None:
            raise ValueError(f"experiment {exp.name!r} registers no run/folder to find or run")
        cfg = on_device(cfg, index.device)
        chash = identity_hash(cfg.identity())
        rec = index.get(chash)
        if rec is None:
            run_dir = outputs / exp.folder(cfg)
            held = finished_record(run_dir)
            if held is not None and record_hash(held) != chash:
                # the folder holds another configuration (a quick and a full figure, say):
                # this one gets its own, named by its hash, and neither overwrites the other
                run_dir = run_dir.with_name(f"{run_dir.name}-{chash[:8]}")
            log.info("running %s %s -> %s", exp.name, getattr(cfg, "name", ""), run_dir)
            rec = exp.run(cfg, run_dir, outputs)
            index.add(rec)
        out.append(rec)
    return out
