"""Get and check the UCI collection: download, unpack safely, verify against SHA-256 sums.

The benchmark reads four files of each of its 90 datasets (``NAME/NAME_R.dat``,
``NAME/conxuntos.dat``, ``NAME/conxuntos_kfold.dat``, ``NAME/NAME.txt``) from the preprocessed
121-dataset archive ``data.tar.gz`` of Fernandez-Delgado et al., "Do we need hundreds of
classifiers to solve real world classification problems?", JMLR 15 (2014), published on the
first author's page (``DATA_URL``). The committed manifest ``uci_manifest.json`` holds the
90 names and the SHA-256 of those 360 files; ``datasets.txt`` (the list the loader reads) is
written from it.

Command line: ``python -m experiments.uci.data download|verify [--root DIR]`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import posixpath
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rntk_empirical.safe_io import load_json
from rntk_empirical.uci import default_root

DATA_URL = "http://persoal.citius.usc.es/manuel.fernandez.delgado/papers/jmlr/data.tar.gz"
MANIFEST_PATH = Path(__file__).resolve().parent / "uci_manifest.json"
LISTING = "datasets.txt"
PROG = "python -m experiments.uci.data"


@dataclass(frozen=True)
class Manifest:
    """The 90 benchmark datasets and ``{relative path: sha256 hex}`` of the files read."""

    datasets: tuple[str, ...]
    files: dict[str, str]

    def files_of(self, datasets: Iterable[str]) -> dict[str, str]:
        """The entries of the given datasets, in manifest order."""
        wanted = set(datasets)
        unknown = wanted - set(self.datasets)
        if unknown:
            raise ValueError(f"not benchmark datasets: {sorted(unknown)}")
        return {k: v for k, v in self.files.items() if k.split("/", 1)[0] in wanted}


def load_manifest(path: str | os.PathLike = MANIFEST_PATH) -> Manifest:
    """Read the committed manifest."""
    raw = load_json(path)
    return Manifest(tuple(raw["datasets"]), dict(raw["files"]))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class VerifyReport:
    """Outcome of ``verify``: files checked, and the relative paths missing or differing.

    ``listing`` is a problem with ``datasets.txt`` (checked only for the whole collection).
    """

    root: Path
    checked: int
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    listing: str | None = None

    @property
    def files_ok(self) -> bool:
        return not self.missing and not self.mismatched

    @property
    def ok(self) -> bool:
        return self.files_ok and self.listing is None

    def lines(self, limit: int = 10) -> list[str]:
        """A human summary: one line when all is well, else one line per kind of problem."""
        if self.ok:
            return [f"verify: {self.checked} files in {self.root}: all SHA-256 sums match"]
        out = [f"verify: {self.checked} files in {self.root}: FAILED"]
        for what, paths in (("missing", self.missing), ("checksum differs", self.mismatched)):
            if paths:
                more = f" (+{len(paths) - limit} more)" if len(paths) > limit else ""
                out.append(f"  {what} ({len(paths)}): {', '.join(paths[:limit])}{more}")
        if self.listing:
            out.append(f"  {LISTING}: {self.listing}")
        return out


def verify(
    root: str | os.PathLike,
    datasets: Iterable[str] | None = None,
    manifest: Manifest | None = None,
) -> VerifyReport:
    """Check the files of ``datasets`` (default: all 90, plus ``datasets.txt``) in ``root``
    against the manifest's SHA-256 sums."""
    man = manifest or load_manifest()
    root = Path(root)
    files = man.files if datasets is None else man.files_of(datasets)
    report = VerifyReport(root, len(files))
    for rel, expected in files.items():
        path = root / rel
        if not path.is_file():
            report.missing.append(rel)
        elif sha256_file(path) != expected:
            report.mismatched.append(rel)
    if datasets is None:
        listing = root / LISTING
        if not listing.is_file():
            report.listing = "missing"
        elif [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()] != list(
            man.datasets
        ):
            report.listing = "does not list exactly the 90 benchmark datasets"
    return report


def write_listing(root: str | os.PathLike, manifest: Manifest | None = None) -> Path:
    """Write ``root/datasets.txt``: the 90 names, one a line."""
    man = manifest or load_manifest()
    path = Path(root) / LISTING
    path.write_text("".join(f"{n}\n" for n in man.datasets))
    return path


def _checked_name(member: tarfile.TarInfo) -> str:
    """The member's normalized relative name; ValueError if it could land outside the folder."""
    name = member.name.replace("\\", "/")
    if name.startswith("/") or ".." in name.split("/") or posixpath.isabs(name):
        raise ValueError(f"unsafe path in archive: {member.name!r}; nothing was extracted")
    return posixpath.normpath(name)


def extract_benchmark_files(
    archive: str | os.PathLike, root: str | os.PathLike, manifest: Manifest | None = None
) -> int:
    """Unpack the manifest's files from ``archive`` into ``root`` (created); returns how many.

    Every member name is checked first (no absolute paths, no ``..``), so a hostile archive is
    refused before anything is written; only regular files named in the manifest are written,
    wherever the dataset folders sit in the archive (e.g. under a top folder ``data/``).
    """
    man = manifest or load_manifest()
    root = Path(root)
    with tarfile.open(archive, "r:*") as tar:
        members = [(m, _checked_name(m)) for m in tar.getmembers()]
        # the folder holding the datasets: where the first member named "DATASET/FILE" is
        prefix = next(
            (n[: -len(k)] for _, n in members if (k := "/".join(n.split("/")[-2:])) in man.files),
            None,
        )
        if prefix is None:
            raise ValueError(f"{str(archive)!r} holds no benchmark file: not the UCI data.tar.gz?")
        written = 0
        for member, name in members:
            rel = name[len(prefix) :] if name.startswith(prefix) else None
            if rel not in man.files or not member.isfile():
                continue
            src = tar.extractfile(member)
            if src is None:
                continue
            dest = root / rel  # a manifest key, never a name taken from the archive
            dest.parent.mkdir(parents=True, exist_ok=True)
            with src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
            written += 1
    return written


class DownloadError(RuntimeError):
    """The archive could not be fetched; the message is one line naming URL and folder."""


def fetch(url: str, dest: Path, timeout: float = 60.0, note: str = "") -> None:
    """Stream ``url`` to ``dest``, printing ``note`` once connected and progress every 20 MB
    to stderr."""
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
        if note:
            print(note, file=sys.stderr)
        total = int(resp.headers.get("Content-Length") or 0)
        done, step = 0, 20 << 20
        for block in iter(lambda: resp.read(1 << 20), b""):
            out.write(block)
            done += len(block)
            if done // step != (done - len(block)) // step:
                of = f" of {total / 1e6:.0f}" if total else ""
                print(f"download: {done / 1e6:.0f}{of} MB", file=sys.stderr)


def download(
    root: str | os.PathLike | None = None,
    url: str = DATA_URL,
    archive: str | os.PathLike | None = None,
    timeout: float = 60.0,
) -> VerifyReport:
    """Fetch ``data.tar.gz`` (or use a local ``archive``), unpack the benchmark's files into
    ``root`` (default ``rntk_empirical.uci.default_root()``), write ``datasets.txt`` and verify.

    Does nothing but verify when the folder already checks out. The archive (about 200 MB) goes
    to a temporary folder, deleted afterwards. Raises DownloadError (one line) when the URL
    cannot be reached.
    """
    root = Path(root).expanduser() if root else default_root()
    man = load_manifest()
    if root.is_dir() and (present := verify(root, manifest=man)).ok:
        return present
    with tempfile.TemporaryDirectory(prefix="uci-download-") as tmp:
        if archive is None:
            archive = Path(tmp) / "data.tar.gz"
            try:
                fetch(url, archive, timeout, note=f"download: {url} -> {root}")
            except (urllib.error.URLError, OSError, ValueError) as err:
                reason = " ".join(str(getattr(err, "reason", err)).split())
                raise DownloadError(
                    f"cannot download {url} ({reason}); fetch data.tar.gz by hand and run "
                    f"'{PROG} download --archive data.tar.gz --root {root}', or put the 90 "
                    f"dataset folders in {root} and run '{PROG} verify --root {root}'"
                ) from err
        extract_benchmark_files(archive, root, man)
    write_listing(root, man)
    return verify(root, manifest=man)


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """``download`` / ``verify`` from the command line: 0 verified, 1 files wrong, 2 no data."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Get or check the UCI collection (90 datasets of Fernandez-Delgado et al. "
        "2014) that the UCI benchmark reads.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    root_help = (
        "data folder (default: $RNTK_UCI_ROOT, else ../shared/data/uci beside the repository "
        "if present, else data/uci inside it)"
    )
    dl = sub.add_parser("download", help=f"fetch {DATA_URL}, unpack, verify (~200 MB)")
    dl.add_argument("--root", help=root_help)
    dl.add_argument("--url", default=DATA_URL, help="archive URL (default: %(default)s)")
    dl.add_argument("--archive", help="use this data.tar.gz, already downloaded (no network)")
    dl.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    vf = sub.add_parser(
        "verify",
        help="check the 360 files against the SHA-256 manifest (writes a missing "
        "datasets.txt when every file matches)",
    )
    vf.add_argument("--root", help=root_help)
    args = parser.parse_args(argv)
    root = Path(args.root).expanduser() if args.root else default_root()

    if args.command == "download":
        try:
            report = download(root, args.url, args.archive, args.timeout)
        except DownloadError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except (ValueError, OSError, tarfile.TarError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    else:
        if not root.is_dir():
            print(
                f"error: UCI data folder {str(root)!r} does not exist; get it with "
                f"'{prog} download --root {root}'",
                file=sys.stderr,
            )
            return 2
        report = verify(root)
        if report.files_ok and report.listing == "missing":
            write_listing(root)
            print(f"verify: wrote {root / LISTING}", file=sys.stderr)
            report = verify(root)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
