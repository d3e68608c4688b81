"""The UCI report on synthetic records: selection of records, numbers, files, CLI."""

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_module

from experiments.common.records import atomic_write_json
from experiments.uci import report as report_uci
from experiments.uci.stats import friedman_test, summary_table

FAMILIES = {
    "rntk": ("recurrent", "RNTK (all readouts, directions)"),
    "rntk_paper": ("paper-faithful", "RNTK (paper)"),
    "rbf_svm": ("baseline", "RBF SVM"),
}
# data set -> test accuracies of rntk, rntk_paper, rbf_svm (the matrix the report must use)
ACC = {
    "glass": [0.70, 0.65, 0.72],
    "iris": [0.96, 0.96, 0.94],
    "wine": [0.98, 0.91, 0.97],
}
TIMES = {"glass": 5.0, "iris": 2.0, "wine": 9.0}


def record(
    dataset,
    accs,
    finished="2026-11-23T12:00:00Z",
    kind="uci",
    status="finished",
    total_s=1.0,
    families=FAMILIES,
):
    return {
        "kind": kind,
        "status": status,
        "finished": finished,
        "dataset": dataset,
        "n": 100 + len(dataset),
        "length": len(dataset),
        "n_classes": 3,
        "families": {
            f: {
                "test_acc": a,
                "test_folds": [a] * 4,
                "val_acc": min(1.0, a + 0.01),
                "choice": {"C": 10.0, "family": f},
            }
            for f, a in zip(families, accs)
        },
        "family_info": {f: {"group": g, "label": lab} for f, (g, lab) in families.items()},
        "timing": {
            "kernel_s": total_s / 2,
            "svm_s": total_s / 4,
            "baseline_s": 0.1,
            "total_s": total_s,
        },
    }


@pytest.fixture
def runs(tmp_path):
    """Three good records, plus a stale duplicate, a non-UCI and an unfinished record."""
    root = tmp_path / "uci"
    for d, accs in ACC.items():
        atomic_write_json(root / "h1" / d / "record.json", record(d, accs, total_s=TIMES[d]))
    # an older record of wine in a folder that sorts after the newer one: must be ignored
    atomic_write_json(
        root / "z_old" / "wine" / "record.json",
        record("wine", [0.10, 0.20, 0.30], finished="2026-11-20T08:00:00Z"),
    )
    atomic_write_json(
        root / "h1" / "other" / "record.json",
        record("heart", [0.5, 0.5, 0.5], kind="convergence"),
    )
    atomic_write_json(
        root / "h1" / "running" / "record.json",
        record("yeast", [0.5, 0.5, 0.5], status="running"),
    )
    return root


def matrix(families=tuple(FAMILIES)) -> np.ndarray:
    cols = [list(FAMILIES).index(f) for f in families]
    return np.array([[ACC[d][j] for j in cols] for d in sorted(ACC)])


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_load_uci_records_selects_latest_finished_uci(runs, caplog):
    with caplog.at_level("WARNING"):
        recs = report_uci.load_uci_records(runs)
    assert [r["dataset"] for r in recs] == ["glass", "iris", "wine"]
    wine = recs[-1]
    assert wine["finished"] == "2026-11-23T12:00:00Z"
    assert wine["families"]["rntk"]["test_acc"] == 0.98
    assert "wine" in caplog.text and "two finished records" in caplog.text
    assert report_uci.load_uci_records(runs / "h1" / "iris" / "record.json")[0]["n"] == 104
    assert report_uci.load_uci_records(runs / "h1" / "other") == []
    with pytest.raises(ValueError, match="does not exist"):
        report_uci.load_uci_records(runs / "nope")


def test_report_numbers_and_files(runs, tmp_path):
    out = tmp_path / "rep"
    summ = report_uci.build_report(runs, out)
    assert summ["out"] == str(out)
    for name in (
        "uci_table.csv",
        "uci_table.md",
        "uci_per_dataset.csv",
        "uci_choices.csv",
        "uci_timing.csv",
        "uci_summary.json",
        "uci_table.png",
        "uci_table.pdf",
    ):
        assert (out / name).stat().st_size > 0, name

    expected = summary_table(matrix(), list(FAMILIES))
    table = read_csv(out / "uci_table.csv")
    assert [r["method"] for r in table] == [r["method"] for r in expected]
    for got, exp in zip(table, expected):
        for key in ("mean_acc", "std_acc", "friedman_rank", "p90", "p95", "pma"):
            assert float(got[key]) == pytest.approx(exp[key]), key
        assert int(got["n_datasets"]) == 3
        assert got["group"] == FAMILIES[got["method"]][0]
        assert got["label"] == FAMILIES[got["method"]][1]
    # by hand: ranks rntk (2 + 1.5 + 1) / 3 = 1.5, rbf_svm (1 + 3 + 2) / 3 = 2,
    # rntk_paper (3 + 1.5 + 3) / 3 = 2.5
    assert [(r["method"], float(r["friedman_rank"])) for r in table] == [
        ("rntk", 1.5),
        ("rbf_svm", 2.0),
        ("rntk_paper", 2.5),
    ]

    per_ds = read_csv(out / "uci_per_dataset.csv")
    assert [r["dataset"] for r in per_ds] == ["glass", "iris", "wine"]
    for r in per_ds:
        assert [float(r[f]) for f in FAMILIES] == ACC[r["dataset"]]
        assert (int(r["n"]), int(r["length"]), int(r["n_classes"])) == (
            100 + len(r["dataset"]),
            len(r["dataset"]),
            3,
        )

    choices = read_csv(out / "uci_choices.csv")
    assert len(choices) == 9
    wine_rntk = next(c for c in choices if (c["dataset"], c["family"]) == ("wine", "rntk"))
    assert float(wine_rntk["test_acc"]) == 0.98
    assert float(wine_rntk["val_acc"]) == pytest.approx(0.99)
    assert json.loads(wine_rntk["choice"]) == {"C": 10.0, "family": "rntk"}

    timing = read_csv(out / "uci_timing.csv")
    assert [r["dataset"] for r in timing] == ["wine", "glass", "iris"]
    assert float(timing[0]["total_s"]) == 9.0 and float(timing[0]["kernel_s"]) == 4.5

    saved = json.loads((out / "uci_summary.json").read_text())
    assert saved["n_datasets"] == 3
    assert saved["datasets"] == ["glass", "iris", "wine"]
    assert saved["families"] == ["rntk", "rbf_svm", "rntk_paper"]
    assert saved["dropped_families"] == {} and saved["missing"] == {}
    assert saved["friedman"]["p_value"] == pytest.approx(friedman_test(matrix()).p_value)
    assert saved["timing"]["total_s"] == pytest.approx(16.0)
    assert [s["dataset"] for s in saved["timing"]["slowest"]] == ["wine", "glass", "iris"]
    assert len(saved["records"]) == 3 and not any("z_old" in p for p in saved["records"])

    md = (out / "uci_table.md").read_text()
    assert "3 data sets" in md
    assert "Families dropped for missing data sets: none" in md
    assert f"p = {saved['friedman']['p_value']:.3g}" in md
    # rntk: accuracies 70, 96, 98 % -> mean 88, std sqrt((18^2 + 8^2 + 10^2) / 3) = 12.75
    assert "| RNTK (all readouts, directions) | recurrent | 88.00 ± 12.75 | 1.50 |" in md
    assert "Total over 3 data sets: 16.0 s" in md


def test_missing_family_is_dropped_and_reported(runs, tmp_path):
    fams = {**FAMILIES, "gru": ("recurrent", "GRU")}
    for d, accs in ACC.items():
        rec = record(d, [*accs, 0.5], finished="2026-11-24T00:00:00Z", families=fams)
        if d == "iris":
            del rec["families"]["gru"]
        atomic_write_json(runs / "h2" / d / "record.json", rec)
    summ = report_uci.build_report(runs, tmp_path / "rep")
    assert summ["families"] == ["rntk", "rbf_svm", "rntk_paper"]
    assert summ["dropped_families"] == {"gru": ["iris"]}
    assert summ["missing"] == {"iris": ["gru"]}
    per_ds = {r["dataset"]: r for r in read_csv(tmp_path / "rep" / "uci_per_dataset.csv")}
    assert per_ds["iris"]["gru"] == "" and float(per_ds["wine"]["gru"]) == 0.5
    md = (tmp_path / "rep" / "uci_table.md").read_text()
    assert "gru (missing on 1: iris)" in md and "iris: gru" in md


def test_families_restricts_rows(runs, tmp_path, capsys):
    out = tmp_path / "rep"
    assert report_uci.main([str(runs), "--out", str(out), "--families", "rbf_svm, rntk"]) == 0
    stdout = capsys.readouterr().out
    assert f"report: {out}" in stdout
    assert "| RBF SVM | baseline |" in stdout and "RNTK (paper)" not in stdout
    table = read_csv(out / "uci_table.csv")
    assert [r["method"] for r in table] == ["rntk", "rbf_svm"]
    expected = summary_table(matrix(("rbf_svm", "rntk")), ["rbf_svm", "rntk"])
    for got, exp in zip(table, expected):
        assert got["method"] == exp["method"]
        assert float(got["p95"]) == pytest.approx(exp["p95"])
        assert float(got["friedman_rank"]) == pytest.approx(exp["friedman_rank"])
    summ = json.loads((out / "uci_summary.json").read_text())
    assert summ["friedman"] is None  # two families: no Friedman test
    assert "not applicable" in (out / "uci_table.md").read_text()


def test_bad_input_errors(runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        report_uci.main([str(runs), "--out", str(tmp_path / "r"), "--families", "lstm"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: unknown families ['lstm']")
    atomic_write_json(runs / "pct" / "record.json", record("zoo", [96.0, 0.9, 0.9]))
    with pytest.raises(ValueError, match="'zoo', family 'rntk'"):
        report_uci.build_report(runs, tmp_path / "r")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_module("experiments.uci.report", *args, timeout=60)


def test_cli_exit_code_2_without_records(tmp_path):
    (tmp_path / "empty").mkdir()
    atomic_write_json(
        tmp_path / "empty" / "a" / "record.json", record("x", [0.5] * 3, status="running")
    )
    res = _cli(str(tmp_path / "empty"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    # the unfinished record is named (never dropped silently), then the one-line error
    assert len(lines) == 2 and "a/record.json: not finished" in lines[0]
    assert lines[1].startswith("error: no finished UCI records")


def test_main_exit_code_2_for_missing_path(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        report_uci.main([str(tmp_path / "missing")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and err.count("\n") == 1


def test_family_missing_on_a_dataset_is_kept_in_the_complete_case_table(tmp_path):
    """Mean pooling skipped on one data set: dropped from the main table, but reported with
    every other family on the data sets where all of them ran."""
    fams = {**FAMILIES, "rntk_avg": ("recurrent", "RNTK, mean pooling")}
    root = tmp_path / "uci"
    accs = {"glass": [0.70, 0.65, 0.72, 0.75], "iris": [0.96, 0.96, 0.94, 0.90]}
    for d, a in accs.items():
        atomic_write_json(root / d / "record.json", record(d, a, families=fams))
    atomic_write_json(root / "wine" / "record.json", record("wine", ACC["wine"], families=FAMILIES))
    summ = report_uci.build_report(root)
    assert "rntk_avg" not in summ["families"] and summ["n_datasets"] == 3
    cc = summ["complete_case"]
    assert cc["n_datasets"] == 2 and cc["datasets"] == ["glass", "iris"]
    by = {r["method"]: r for r in cc["rows"]}
    assert by["rntk_avg"]["mean_acc"] == pytest.approx(82.5)
    # glass: rntk_avg best (rank 1); iris: rntk and rntk_paper tie first (1.5), rntk_avg last
    assert by["rntk_avg"]["friedman_rank"] == pytest.approx((1 + 4) / 2)
    assert by["rntk"]["friedman_rank"] == pytest.approx((3 + 1.5) / 2)
    md = (Path(summ["out"]) / "uci_table.md").read_text()
    assert "on the 2 data sets where all of them ran" in md and "RNTK, mean pooling" in md
