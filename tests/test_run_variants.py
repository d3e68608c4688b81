"""A run whose configuration differs from its folder's default never changes that folder's
report: the default configuration keeps ``report/``, another gets ``report/<overrides>``."""

from __future__ import annotations

import json

from test_report import write_run

from experiments.convergence import report

WIDTHS = (64, 256, 1024)


def test_another_configuration_gets_its_own_report(tmp_path, capsys):
    root = tmp_path / "relu_last-random"
    for w in WIDTHS:
        d = root / f"width={w}"
        d.mkdir(parents=True)
        write_run(d, w, seeds=3)
    assert report.main([str(root), "--n-boot", "20"]) == 0
    before = {p.name: p.read_bytes() for p in (root / "report").glob("*.csv")}
    # the same sweep with arch.sigma_w=1.0 lands in width=W/arch.sigma_w=1.0 (Hydra's
    # override dirname), e.g. `-m arch.sigma_w=1.0`
    for w in WIDTHS:
        d = root / f"width={w}" / "arch.sigma_w=1.0"
        d.mkdir(parents=True)
        write_run(d, w, seeds=3, sigma_w=1.0, noise=2.0)
    assert report.main([str(root), "--n-boot", "20"]) == 0
    out = capsys.readouterr().out
    after = {p.name: p.read_bytes() for p in (root / "report").glob("*.csv")}
    assert after == before  # the default's numbers and figure data are unchanged
    summ = json.loads((root / "report" / "summary.json").read_text())
    assert [s["identity"]["arch"]["sigma_w"] for s in summ["series"]] == [1.414]
    variant = json.loads((root / "report" / "arch.sigma_w=1.0" / "summary.json").read_text())
    assert [s["identity"]["arch"]["sigma_w"] for s in variant["series"]] == [1.0]
    assert (root / "report" / "arch.sigma_w=1.0" / "convergence.png").is_file()
    assert "[arch.sigma_w=1.0] report: " in out
    # the report interprets the exponent (these runs' error is exactly n^-1/2 noise)
    md = (root / "report" / "summary.md").read_text()
    assert "The NTK error: the 95% interval" in md and "contains -1/2" in md
    # a folder holding only one configuration reports it at the top, whatever its folder
    one = root / "width=64" / "arch.sigma_w=1.0"
    only = report.make_report(one, out=tmp_path / "o", n_boot=10)
    assert len(only["series"]) == 1 and only["variants"] == {}


def test_quick_finite_vs_infinite_runs_are_told_apart(tmp_path):
    from experiments.finite_vs_infinite.report import is_quick

    root = tmp_path / "erf_last"
    assert is_quick(root / "quick=true" / "record.json", root)
    assert is_quick(root / "quick=true,tasks=[GunPoint]" / "record.json", root)
    assert not is_quick(root / "tasks=[GunPoint]" / "record.json", root)
    assert not is_quick(root / "record.json", root)
