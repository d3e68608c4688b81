"""The one reporting module: records -> series -> power-law layer every report shares, and
the files reports and figures write (CSV, text, PNG/PDF; atomically).

:func:`scan` reads the finished records of one experiment under a folder and lists every
record it could not use (damaged JSON, a run that did not finish, a truncated kernels file)
with its path and why: reports show them and count them in their summary, and with
``--strict`` stop with exit 2 instead. :func:`report_main` is the command line of every
report, :class:`SweepReport` the Hydra callback that aggregates a sweep when it ends (a
failed report makes the sweep's exit status non-zero).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.common.records import FINISHED, RECORD_NAME, read_json, writable_folder
from experiments.common.run import record_kind

log = logging.getLogger(__name__)


@dataclass
class RecordScan:
    """Finished records of one experiment under ``root``, and the ones that could not be used.

    Attributes:
        records: ``(path, record)`` sorted by path.
        problems: ``(path, reason)`` of every record.json (or file it points to) left out.
    """

    root: Path
    records: list[tuple[Path, dict]] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)

    def exclude(self, path: Path, reason: str) -> None:
        """Leave a file out, visibly (a warning now, a line in the summary later)."""
        log.warning("%s: %s; left out of the report", path, reason)
        self.problems.append((Path(path), reason))

    def check(self, strict: bool) -> None:
        """With ``strict``, any problem is a ValueError naming every file."""
        if strict and self.problems:
            listed = "; ".join(f"{p}: {why}" for p, why in self.problems)
            raise ValueError(f"{len(self.problems)} record(s) could not be used ({listed})")

    def summary(self) -> list[dict[str, str]]:
        return [{"path": str(p), "reason": why} for p, why in self.problems]

    def markdown(self) -> str:
        """A section listing the excluded files ("" if none)."""
        if not self.problems:
            return ""
        lines = ["", f"## Excluded ({len(self.problems)})", ""]
        lines += [f"- `{p}`: {why}" for p, why in self.problems]
        return "\n".join(lines) + "\n"


def scan(root: str | Path, experiment: str) -> RecordScan:
    """Every ``record.json`` under ``root`` (a folder, searched recursively, or one record).

    Records of other experiments are skipped silently; unreadable or unfinished records of
    any experiment are listed in ``problems``. Raises ValueError if ``root`` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise ValueError(f"{str(root)!r} does not exist")
    out = RecordScan(root)
    paths = [root] if root.is_file() else sorted(root.rglob(RECORD_NAME))
    for p in paths:
        rec = read_json(p)
        if rec is None:
            out.exclude(p, "not a readable JSON object (damaged or truncated)")
        elif record_kind(rec) not in (experiment, None):
            continue
        elif rec.get("status") != FINISHED:
            out.exclude(p, f"not finished (status {rec.get('status')!r})")
        elif record_kind(rec) is None:
            out.exclude(p, "names no experiment (not a record of this project)")
        else:
            out.records.append((p, rec))
    return out


def report_folder(root: str | Path, out: str | Path | None) -> Path:
    """The folder a report of ``root`` writes to (``out``, default ``ROOT/report``, or next
    to a single record), created and checked writable before any fitting or drawing: a
    ValueError names the path otherwise (also when ``root`` does not exist)."""
    root = Path(root)
    if not root.exists():
        raise ValueError(f"{str(root)!r} does not exist")
    default = (root if root.is_dir() else root.parent) / "report"
    return writable_folder(Path(out) if out is not None else default, "report folder")


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differing_keys(identities: list[dict], ignore: set[str] = frozenset()) -> list[str]:
    """Flattened identity keys whose values differ between the identities (for labels)."""
    flats = [flatten(i) for i in identities]
    keys = sorted({k for f in flats for k in f} - set(ignore))
    return [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]


# ------------------------------------------------------------------- writing outputs
# The one home of the files every report and figure writes: atomic (a temporary file in the
# same folder, then a rename), so a killed report never leaves half a table or image.
def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if type(v).__module__ == "numpy" and hasattr(v, "item"):  # numpy scalars as Python's
        v = v.item()
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return str(v)


def write_csv(
    path: str | Path, rows: list[dict[str, Any]], columns: Sequence[str] | None = None
) -> None:
    """Rows of dicts as CSV, atomically: the columns are ``columns`` or the union of keys (in
    first-seen order), a missing key or None is an empty cell, floats keep every digit."""
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in cols])
    write_text(path, buf.getvalue())


def _parse(s: str) -> Any:
    if s == "":
        return None
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return {"True": True, "False": False}.get(s, s)


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a CSV written by :func:`write_csv`, numbers parsed back."""
    with open(path, newline="") as fh:
        return [{k: _parse(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def save_figure(fig, stem: str | Path, dpi: float | None = None) -> list[Path]:
    """``stem.png`` and ``stem.pdf``, each written atomically; closes the figure.

    ``dpi`` None: the active style's ``savefig.dpi``
    (:data:`experiments.common.style.STYLE` inside ``paper_style()``)."""
    import matplotlib.pyplot as plt

    stem = Path(stem)
    paths = []
    kw = {} if dpi is None else {"dpi": dpi}
    try:
        for ext in ("png", "pdf"):
            p = stem.with_name(f"{stem.name}.{ext}")
            tmp = stem.with_name(f".{stem.name}.tmp.{ext}")
            fig.savefig(tmp, **kw)
            os.replace(tmp, p)
            paths.append(p)
            # the layout is solved: the second format keeps it (constrained layout solves
            # again at every save, about a third of a figure's save time)
            fig.set_layout_engine("none")
    finally:
        plt.close(fig)
    return paths


def report_main(
    argv: list[str] | None,
    prog: str,
    description: str,
    make_report: Callable[..., dict[str, Any]],
    format_summary: Callable[[dict[str, Any]], str],
) -> int:
    """The command line of a fitted report: PATH [--out] [--n-boot] [--level] [--seed]
    [--strict]; one-line errors with exit 2."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("path", help="a folder of runs (searched recursively) or one record")
    parser.add_argument("--out", default=None, help="output folder (default PATH/report)")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument(
        "--strict", action="store_true", help="stop (exit 2) if any record cannot be used"
    )
    args = parser.parse_args(argv)
    if args.n_boot < 0 or not 0 < args.level < 1 or math.isnan(args.level):
        print("error: --n-boot must be >= 0 and --level in (0, 1)", file=sys.stderr)
        return 2
    try:
        summ = make_report(
            args.path,
            args.out,
            n_boot=args.n_boot,
            level=args.level,
            seed=args.seed,
            strict=args.strict,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(
            "interrupted: the runs are untouched (reports only read them); re-run to report",
            file=sys.stderr,
        )
        return 130
    print(format_summary(summ))
    for p in summ.get("excluded", []):
        print(f"excluded: {p['path']}: {p['reason']}")
    print(f"report: {summ['out']}")
    return 0


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency of the experiments
    Callback = object  # type: ignore[misc,assignment]


class SweepReport(Callback):
    """Hydra callback: when a sweep ends, aggregate its folder into ``<sweep dir>/report``.

    The runs are kept whatever happens; a report that fails is logged with the command that
    rebuilds it, and the sweep exits with status 1 (so scripts and schedulers notice)."""

    make_report: Callable[..., dict[str, Any]]
    format_summary: Callable[[dict[str, Any]], str]
    command: str

    def __init__(self, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> None:
        self.n_boot, self.level, self.seed = n_boot, level, seed

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            summ = type(self).make_report(
                sweep_dir, n_boot=self.n_boot, level=self.level, seed=self.seed
            )
        except Exception as err:  # noqa: BLE001 - reported, then the exit status says it
            log.error(
                "report of %s failed: %s (the runs are kept; rebuild it with `python -m %s %s`)",
                sweep_dir,
                err,
                self.command,
                sweep_dir,
            )
            sys.exit(1)
        for line in type(self).format_summary(summ).splitlines():
            log.info(line)
        for p in summ.get("excluded", []):
            log.warning("excluded: %s: %s", p["path"], p["reason"])
        log.info("report: %s", summ["out"])
