"""Reports never drop data silently: damaged or partial records are listed, counted, and
stop the report under --strict; a failed sweep report makes the sweep's exit status non-zero."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from test_report import make_sweep

from experiments.convergence import report
from experiments.drift import report as drift_report


@pytest.fixture
def damaged_sweep(tmp_path):
    root = tmp_path / "sweep"
    make_sweep(root, seeds=4)
    bad = root / "width=8192"
    bad.mkdir()
    (bad / "record.json").write_text('{"experiment": "convergence", "status": "fin')  # killed
    kernels = root / "width=4096" / "kernels.npz"
    kernels.write_bytes(kernels.read_bytes()[:100])  # truncated copy
    return root


def test_damaged_files_are_listed_and_counted(damaged_sweep):
    summ = report.make_report(damaged_sweep, n_boot=50)
    excluded = {e["path"]: e["reason"] for e in summ["excluded"]}
    assert set(excluded) == {
        str(damaged_sweep / "width=8192" / "record.json"),
        str(damaged_sweep / "width=4096" / "kernels.npz"),
    }
    assert "damaged or truncated" in excluded[str(damaged_sweep / "width=8192" / "record.json")]
    assert "width 4096" in excluded[str(damaged_sweep / "width=4096" / "kernels.npz")]
    (ser,) = summ["series"]
    assert ser["widths"] == [64, 256, 1024, 4096]  # per-seed errors of 4096 are still used
    assert list(ser["fits"]["ntk_rel_fro"]["widths"]) == [64, 256, 1024, 4096]
    assert "ntk_mean_kernel_rel_fro" in ser["not_fitted"]  # kernels incomplete: not fitted
    md = (damaged_sweep / "report" / "summary.md").read_text()
    assert "## Excluded (2)" in md
    assert json.loads((damaged_sweep / "report" / "summary.json").read_text())["excluded"]


def test_strict_stops_with_exit_2_naming_the_files(damaged_sweep, capsys):
    with pytest.raises(ValueError, match=r"2 record\(s\) could not be used .*width=8192"):
        report.make_report(damaged_sweep, n_boot=50, strict=True)
    assert report.main([str(damaged_sweep), "--strict", "--n-boot", "50"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: 2 record(s) could not be used")  # one line, last
    assert report.main([str(damaged_sweep), "--n-boot", "50"]) == 0
    assert "excluded: " in capsys.readouterr().out


def test_drift_report_of_nothing_usable_exits_2(tmp_path, capsys):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "record.json").write_text("garbage")
    assert drift_report.main([str(tmp_path)]) == 2
    assert "no finished drift records" in capsys.readouterr().err


def test_failed_sweep_report_makes_the_sweep_fail(tmp_path):
    cb = report.ReportCallback(n_boot=10)
    config = SimpleNamespace(hydra=SimpleNamespace(sweep=SimpleNamespace(dir=str(tmp_path))))
    with pytest.raises(SystemExit) as exc:
        cb.on_multirun_end(config)  # an empty folder: no records to report
    assert exc.value.code == 1
