"""The last UCI grid is found without typing its hash: ``outputs/uci/latest``."""

from __future__ import annotations

from test_report_uci import record

from experiments.common.records import atomic_write_json
from experiments.uci import report as report_uci
from experiments.uci.run import point_latest


def test_report_without_a_path_uses_the_latest_grid(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grids = tmp_path / "outputs" / "uci"
    for grid, acc in (("0123456789", 0.5), ("abcdef0123", 0.9)):
        for ds in ("iris", "wine"):
            atomic_write_json(grids / grid / ds / "record.json", record(ds, [acc, acc, acc]))
    point_latest(grids / "0123456789")
    point_latest(grids / "abcdef0123")  # replaces the link: the last grid run wins
    assert (grids / "latest").resolve() == (grids / "abcdef0123").resolve()
    assert report_uci.main([]) == 0
    out = capsys.readouterr().out
    assert "report: outputs/uci/latest/report" in out
    assert (grids / "abcdef0123" / "report" / "uci_table.csv").exists()
    assert not (grids / "0123456789" / "report").exists()
