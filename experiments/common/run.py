"""The run skeleton every experiment shares: validated settings or a one-line exit 2, the
record envelope, thread settings, and out-of-memory errors turned into exit 3 with a remedy.

Exit codes of every entry point: 0 success (or skipped: already finished), 2 invalid input,
3 out of memory, 130 interrupted (Ctrl-C: one line, no traceback; ``HYDRA_FULL_ERROR=1``
shows it).
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from experiments.common.cli import fail, settings_from
from experiments.common.records import (
    FINISHED,
    SCHEMA_VERSION,
    finished_record,
    library_versions,
    utc_now,
    writable_folder,
)

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency of the experiments
    Callback = object  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
# errors of a path the user chose (hydra.run.dir, out_dir, ...): exit 2 in one line
PATH_ERRNOS = (errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS)
EXIT_OUT_OF_MEMORY = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
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

    ``check`` runs further validation (data that must load, a device that must exist); a
    log line says so first, so a run speaks from its first second."""
    log.info("%s: checking the settings and loading the data", Path(config_file).stem)
    try:
        settings = settings_from(cfg, schema, config_file)
        if check is not None:
            check(settings)
    except ValueError as err:
        discard_if_empty(run_dir())
        fail(str(err), EXIT_BAD_INPUT)
    return settings


def guarded(
    work: Callable[[], R],
    oom_hint: Callable[[BaseException], str],
    bad_input: tuple[type[BaseException], ...] = (FileExistsError,),
) -> R:
    """Run ``work``; ``bad_input`` errors (by default: a finished run of another
    configuration in the folder) exit 2 with their message, running out of memory exits 3
    with ``oom_hint(err)`` (what bounds the memory)."""
    try:
        return work()
    except bad_input as err:
        fail(str(err), EXIT_BAD_INPUT)
    except OutOfMemory as err:
        fail(str(err), EXIT_OUT_OF_MEMORY)
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        fail(oom_hint(err), EXIT_OUT_OF_MEMORY)
    raise AssertionError("unreachable")  # fail() exits


def already_finished(out_dir: Path, config_hash: str, force: bool) -> dict | None:
    """The finished record of this configuration in ``out_dir`` (logged as skipped), or None
    when the run must compute (``force``, or nothing finished there). A finished run of another
    configuration raises FileExistsError (:func:`~experiments.common.records.finished_record`)."""
    if force:
        return None
    done = finished_record(out_dir, config_hash)
    if done is not None:
        log.info("already finished: %s (force=true recomputes); skipping", out_dir)
    return done


def check_writable(path: str | os.PathLike, what: str = "output folder") -> Path:
    """:func:`~experiments.common.records.writable_folder`, or exit 2 with its one line:
    every entry point checks its output, cache and run folders before it computes."""
    try:
        folder = writable_folder(path, what)
    except ValueError as err:
        discard_if_empty(run_dir())
        fail(str(err), EXIT_BAD_INPUT)
        raise AssertionError("unreachable") from err  # fail() exits
    _STATE["folder"] = folder
    return folder


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


# ---------------------------------------------------------------------- provenance
_STATE: dict[str, Any] = {"computed": False, "folder": None}


def run_dir() -> Path | None:
    """The Hydra job's output folder (None outside a Hydra job)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def write_provenance(cfg: DictConfig, out_dir: Path) -> None:
    """What Hydra writes to ``.hydra/`` (the composed config, the overrides), written by
    the run itself once it is going to compute: a run that fails validation or skips a
    finished folder leaves that folder's provenance as it was (``hydra.output_subdir`` is
    null in the experiments' configs)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    _STATE["computed"] = True
    meta = Path(out_dir) / ".hydra"
    meta.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, meta / "config.yaml", resolve=False)
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        OmegaConf.save(OmegaConf.create(list(hc.overrides.task)), meta / "overrides.yaml")


def job_folder(cfg: DictConfig, force: bool) -> Path:
    """The Hydra job's run folder, checked writable (one-line exit 2 if not), with the run's
    provenance written into it (:func:`write_provenance`) unless it holds a finished run
    that ``force`` does not recompute (that run's provenance is kept)."""
    from hydra.core.hydra_config import HydraConfig

    out_dir = check_writable(
        HydraConfig.get().runtime.output_dir, "the run folder (hydra.run.dir)"
    )
    if force or finished_record(out_dir) is None:
        write_provenance(cfg, out_dir)
    return out_dir


def discard_if_empty(out_dir: Path | None) -> None:
    """Remove a job folder this attempt created and left without results (only Hydra's job
    log inside), and its empty parents: bad input leaves no folders behind."""
    if out_dir is None or not out_dir.is_dir():
        return
    if any(p.suffix != ".log" for p in out_dir.iterdir()):
        return
    for p in out_dir.iterdir():
        p.unlink()
    cwd = Path.cwd().resolve()
    d = out_dir.resolve()
    while d != cwd and cwd in d.parents and d.is_dir() and not any(d.iterdir()):
        d.rmdir()
        d = d.parent


class KeepSweepProvenance(Callback):
    """Hydra callback: a sweep that computes nothing (every job failed validation or was
    already finished) leaves the sweep folder's ``multirun.yaml`` as it was.

    (Hydra's sweeper rewrites ``multirun.yaml`` when a sweep starts; this restores the old
    one at exit unless a job of this process computed something. Launchers that run jobs in
    other processes (joblib, submitit) are left alone: the parent cannot tell.)"""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = str(config.hydra.launcher.get("_target_", ""))
        if not launcher.endswith("BasicLauncher"):
            return
        path = Path(str(config.hydra.sweep.dir)) / "multirun.yaml"
        old = path.read_bytes() if path.exists() else None
        _STATE["computed"] = False

        def restore() -> None:
            if _STATE["computed"]:
                return
            if old is not None:
                path.write_bytes(old)
            elif path.exists():
                path.unlink()
                discard_if_empty(path.parent)

        atexit.register(restore)


class ValidateSweep(Callback):
    """Hydra callback: before the first job of a sweep starts, every value of every swept
    key (``-m width=64,-5``, ``arch=relu_last,erf_lst``, the YAML's default sweep) is
    checked against the experiment's schema (and its ``check``); a bad one stops the sweep
    with one line, exit 2, and no job has run."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        from experiments.common.cli import CONF_DIR, nearest_hint
        from experiments.common.registry import registered

        exp = registered().get(str(config.hydra.job.name))
        if exp is None or exp.schema is None:
            return
        texts = list(config.hydra.overrides.task)
        params = config.hydra.sweeper.get("params") or {}
        texts += [f"{k}={v}" for k, v in params.items()]
        base = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        for ov in OverridesParser.create().parse_overrides(texts):
            if not ov.is_sweep_override():
                continue
            key = ov.key_or_group
            for value in ov.sweep_iterator():
                group_dir = Path(CONF_DIR) / key
                if group_dir.is_dir():
                    choices = sorted(p.stem for p in group_dir.glob("*.yaml"))
                    if str(value) not in choices:
                        hint = nearest_hint(str(value), choices, f"{key}=").replace("'", "")
                        fail(
                            f"the sweep's {key}={value} is not an option; choices: "
                            f"{', '.join(choices)}{hint} (no job was started)",
                            EXIT_BAD_INPUT,
                        )
                    continue
                cfg = OmegaConf.merge(OmegaConf.structured(exp.schema), base)
                try:
                    OmegaConf.update(cfg, key, value, merge=True)
                    settings = settings_from(cfg, exp.schema, f"conf/{exp.name}.yaml")
                    if exp.check is not None:
                        exp.check(settings)
                except (ValueError, OmegaConfBaseException) as err:
                    msg = str(err).splitlines()[0]
                    fail(f"the sweep's {key}={value}: {msg} (no job was started)", EXIT_BAD_INPUT)


def hydra_entry(main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function so that Hydra's own errors (a value of the wrong
    type, an unknown key, a ``+key=`` the schema does not have, a missing config group
    option) are one line on stderr with exit 2, like the experiments' own validation."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    user_full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra raise instead of printing and exiting 1
    try:
        main()
    except (HydraException, OmegaConfBaseException) as err:
        if user_full_error == "1":
            raise
        fail(hinted(err, _options_of(main)) or one_line(err), EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        if user_full_error == "1":
            raise
        folder = _STATE["folder"]
        where = f" (last folder: {folder})" if folder is not None else ""
        print(
            f"interrupted: what finished is kept{where}; re-run the same command to resume",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    except OSError as err:
        # a folder Hydra or a run must create is a file, read-only or not permitted
        if user_full_error == "1" or err.errno not in PATH_ERRNOS or not err.filename:
            raise
        fail(f"cannot write {err.filename}: {err.strerror}; choose another path", EXIT_BAD_INPUT)
    finally:
        if user_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = user_full_error


def _options_of(main: Callable[[], Any]) -> list[str]:
    """The options of the registered experiment whose package holds ``main`` (for hints)."""
    from experiments.common.cli import schema_keys
    from experiments.common.registry import registered

    module = getattr(main, "__module__", "") or ""
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else ""
    package = module.rsplit(".", 1)[0]
    for exp in registered().values():
        if exp.schema is not None and exp.schema.__module__.rsplit(".", 1)[0] == package:
            return schema_keys(exp.schema)
        if exp.schema is None and package.rsplit(".", 1)[-1] == exp.name:
            return list(exp.options)
    return []


def hinted(err: BaseException, options: list[str]) -> str | None:
    """Hydra's "could not override KEY" and "could not find GROUP/OPTION" as one line with
    the nearest valid key or option (never Hydra's "+KEY=..." advice, which the schema would
    reject); None for other errors."""
    from experiments.common.cli import nearest_hint

    text = str(err)
    m = re.search(r"Could not override '([^']+)'", text)
    if m and options and m.group(1) not in options:
        key = m.group(1)
        return f"unknown option {key!r}{nearest_hint(key, options)} (--help lists the options)"
    m = re.search(r"Could not find '([^'/]+)/([^']+)'", text)
    if m:
        group, option = m.groups()
        listed = re.search(rf"Available options in '{re.escape(group)}':\n((?:\t[^\n]*\n?)+)", text)
        choices = listed.group(1).split() if listed else []
        if choices:
            hint = nearest_hint(option, choices, f"{group}=").replace("'", "")
            return (
                f"Could not find '{group}/{option}': {group}={option} is not an option; "
                f"choices: {', '.join(choices)}{hint}"
            )
    return None


def one_line(err: BaseException) -> str:
    """The first informative line of a Hydra/OmegaConf error (its cause's if it has one)."""
    parts = [str(err)]
    if err.__cause__ is not None:
        parts.append(str(err.__cause__))
    text = " ".join(line.strip() for p in parts for line in p.splitlines()[:2] if line.strip())
    return text.replace("    ", " ")
