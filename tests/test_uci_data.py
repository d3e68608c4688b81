"""Getting and checking the UCI collection: manifest, verification, safe unpacking, no network."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import UCI_FIXTURE_ROOT

from experiments.uci import data as uci_data
from rntk_empirical import uci

FIXTURE = ["fertility", "iris", "wine"]
UNREACHABLE = "http://127.0.0.1:9/data.tar.gz"  # the discard port on this machine: refused


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _fixture_files(prefix: str) -> dict[str, bytes]:
    return {
        prefix + p.relative_to(UCI_FIXTURE_ROOT).as_posix(): p.read_bytes()
        for p in sorted(UCI_FIXTURE_ROOT.glob("*/*"))
    }


def test_manifest_lists_four_files_of_90_datasets() -> None:
    man = uci_data.load_manifest()
    assert len(man.datasets) == 90 == len(set(man.datasets))
    expected = {
        f"{n}/{f}"
        for n in man.datasets
        for f in (f"{n}_R.dat", "conxuntos.dat", "conxuntos_kfold.dat", f"{n}.txt")
    }
    assert set(man.files) == expected
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in man.files.values())
    iris = (UCI_FIXTURE_ROOT / "iris" / "iris_R.dat").read_bytes()
    assert man.files["iris/iris_R.dat"] == hashlib.sha256(iris).hexdigest()


def test_fixture_verifies_and_a_changed_byte_is_named(tmp_path: Path) -> None:
    assert uci_data.verify(UCI_FIXTURE_ROOT, FIXTURE).ok
    root = tmp_path / "uci"
    shutil.copytree(UCI_FIXTURE_ROOT, root)
    data = bytearray((root / "wine" / "wine_R.dat").read_bytes())
    data[100] ^= 1
    (root / "wine" / "wine_R.dat").write_bytes(bytes(data))
    (root / "iris" / "conxuntos.dat").unlink()
    report = uci_data.verify(root, FIXTURE)
    assert report.checked == 12 and not report.ok
    assert report.mismatched == ["wine/wine_R.dat"]
    assert report.missing == ["iris/conxuntos.dat"]
    text = "\n".join(report.lines())
    assert "FAILED" in text and "wine/wine_R.dat" in text and "iris/conxuntos.dat" in text
    with pytest.raises(ValueError, match="not benchmark datasets"):
        uci_data.verify(root, ["no-such-dataset"])


def test_download_without_network_says_so_in_one_line(tmp_path: Path, capsys) -> None:
    root = tmp_path / "nowhere" / "uci"
    argv = ["download", "--root", str(root), "--url", UNREACHABLE, "--timeout", "5"]
    assert uci_data.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert UNREACHABLE in err and str(root) in err and "--archive" in err
    assert not (tmp_path / "nowhere").exists()


def test_verify_of_a_missing_folder_names_the_download_command(tmp_path: Path, capsys) -> None:
    assert uci_data.main(["verify", "--root", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "download --root" in err


@pytest.mark.parametrize("bad", ["../evil.txt", "data/../../evil.txt", "/tmp/evil.txt"])
def test_extraction_refuses_members_outside_the_folder(tmp_path: Path, bad: str) -> None:
    archive = _tar(tmp_path / "data.tar.gz", {**_fixture_files("data/"), bad: b"x"})
    root = tmp_path / "a" / "uci"
    with pytest.raises(ValueError, match="unsafe path"):
        uci_data.extract_benchmark_files(archive, root)
    assert not root.exists() and not (tmp_path / "a" / "evil.txt").exists()


def test_download_from_a_local_archive_unpacks_only_benchmark_files(tmp_path: Path) -> None:
    files = {**_fixture_files("data/"), "data/extra/extra_R.dat": b"1\t2\n"}
    archive = _tar(tmp_path / "data.tar.gz", files)
    root = tmp_path / "uci"
    assert uci_data.extract_benchmark_files(archive, root) == 12
    assert not (root / "extra").exists() and not (root / "datasets.txt").exists()
    assert uci_data.verify(root, FIXTURE).ok
    # the full command also writes the 90-name listing; the 87 absent datasets are reported
    assert uci_data.main(["download", "--root", str(root), "--archive", str(archive)]) == 1
    report = uci_data.verify(root)
    assert report.listing is None and not report.mismatched and len(report.missing) == 87 * 4
    assert uci.list_datasets(root) == list(uci_data.load_manifest().datasets)


def test_whole_collection_matches_the_manifest(uci_full_root: Path) -> None:
    report = uci_data.verify(uci_full_root)
    assert report.ok, report.lines()
    assert report.checked == 360
