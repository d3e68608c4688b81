"""The run skeleton every experiment shares: validated settings or a one-line exit 2, the
record envelope, thread settings, and out-of-memory errors turned into exit 3 with a remedy.

Exit codes of every entry point: 0 success (or skipped: already finished), 2 invalid input,
3 out of memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from omegaconf import DictConfig

from experiments.common.cli import fail, settings_from
from experiments.common.records import FINISHED, SCHEMA_VERSION, library_versions, utc_now

EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 3
OOM_ERRORS = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError)
S = TypeVar("S")
R = TypeVar("R")


class OutOfMemory(RuntimeError):
    """Raised (with a suggestion) when a run exhausts CPU or GPU memory."""


def is_out_of_memory(err: BaseException) -> bool:
    """CPU/GPU allocation failures, including cuBLAS/cuDNN ones raised as RuntimeError."""
    if isinstance(err, OOM_ERRORS):
        return True
    msg = str(err).lower()
    return isinstance(err, RuntimeError) and (
        "out of memory" in msg or "alloc_failed" in msg or "cannot allocate memory" in msg
    )


def validated(
    cfg: DictConfig, schema: type[S], config_file: str, check: Callable[[S], Any] | None = None
) -> S:
    """The schema object of a composed config; exits 2 with one line if it is invalid.

    ``check`` runs further validation (data that must load, a device that must exist)."""
    try:
        settings = settings_from(cfg, schema, config_file)
        if check is not None:
            check(settings)
    except ValueError as err:
        fail(str(err), EXIT_BAD_INPUT)
    return settings


def guarded(work: Callable[[], R], oom_hint: Callable[[BaseException], str]) -> R:
    """Run ``work``; a finished run of another configuration exits 2, running out of memory
    exits 3 with ``oom_hint(err)`` (what bounds the memory)."""
    try:
        return work()
    except FileExistsError as err:
        fail(str(err), EXIT_BAD_INPUT)
    except OutOfMemory as err:
        fail(str(err), EXIT_OUT_OF_MEMORY)
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        fail(oom_hint(err), EXIT_OUT_OF_MEMORY)
    raise AssertionError("unreachable")  # fail() exits


def set_threads(num_threads: int | None) -> None:
    """torch's intra-op threads (None: leave torch's default)."""
    if num_threads is not None:
        torch.set_num_threads(num_threads)


def envelope(
    experiment: str, config_hash: str, identity: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    """The keys every finished record starts with (readers rely on them):
    ``schema``, ``experiment``, ``status``, ``config_hash``, ``identity``, ``finished``,
    ``versions``; then ``fields`` (``timings`` holds the seconds of each part)."""
    return {
        "schema": SCHEMA_VERSION,
        "experiment": experiment,
        "status": FINISHED,
        "config_hash": config_hash,
        "identity": identity,
        "finished": utc_now(),
        "versions": library_versions(),
        **fields,
    }


def record_kind(record: dict) -> str | None:
    """The experiment of a record, also for records of the previous format (``kind``)."""
    return record.get("experiment", record.get("kind"))


def record_timings(record: dict) -> dict:
    """A record's timings, also for records of the previous format (``timing``)."""
    t = record.get("timings", record.get("timing"))
    return t if isinstance(t, dict) else {}
