"""Before any work: output, cache and run folders are checked (a file in their place is one
line naming the path, exit 2, nothing computed), and the first log line says what the run
is doing before its first slow step (loading data sets, building data)."""

from __future__ import annotations

import pytest
from conftest import run_in_one_process

TINY = ["width=8", "seeds=1", "data.n=3", "data.T=3", "progress=false"]
PATH_CALLS = [
    ("experiments.figures", ["figure=spectrum", "quick=true", "out_dir={blocker}"]),
    ("experiments.convergence", [*TINY, "hydra.run.dir={blocker}/run"]),
    ("experiments.convergence", [*TINY, "cache_dir={blocker}", "hydra.run.dir=run"]),
    ("experiments.convergence.report", ["{root}", "--out", "{blocker}"]),
    ("experiments.drift", ["width=8", "seeds=1", "steps=2", "hydra.run.dir={blocker}"]),
]
PROGRESS_CALLS = [
    ("experiments.finite_vs_infinite", ["tasks=[NoSuchDataSet]", "progress=false"]),
    ("experiments.drift", ["width=8", "seeds=1", "steps=1", "task.kind=aeon",
                           "task.dataset=NoSuchDataSet", "progress=false"]),
    ("experiments.convergence", ["width=8", "seeds=1", "data.kind=file",
                                 "data.path=missing.npz", "progress=false"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """Every command of this module in one interpreter (imports are paid once)."""
    root = tmp_path_factory.mktemp("paths")
    blocker = root / "a_file"
    blocker.write_text("not a folder")
    calls = [
        (m, [a.format(blocker=blocker, root=root) for a in args]) for m, args in PATH_CALLS
    ]
    (root / "progress_cwd").mkdir()
    results = run_in_one_process(calls + PROGRESS_CALLS, root / "progress_cwd")
    return root, blocker, results[: len(calls)], results[len(calls) :]


def test_unwritable_outputs_fail_first_in_one_line(ran):
    root, blocker, results, _ = ran
    for (module, args), (code, _, err) in zip(PATH_CALLS, results, strict=True):
        assert code == 2, (module, args, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (module, err)
        assert str(blocker) in err, (module, err)
    assert "out_dir" in results[0][2] and "cache_dir" in results[2][2]
    # nothing was computed or written: no figure data, no run folder, no cache
    assert sorted(p.name for p in root.iterdir()) == ["a_file", "progress_cwd"]
    assert list((root / "progress_cwd").iterdir()) == []  # failed runs leave no folder


def test_the_first_log_line_comes_before_the_data(ran):
    _, _, _, results = ran
    for (module, _), (code, out, err), app in zip(
        PROGRESS_CALLS, results, ("finite_vs_infinite", "drift", "convergence"), strict=True
    ):
        assert code == 2, (module, err)
        log_lines = [ln for ln in (out + err).splitlines() if ln.startswith("[")]
        assert log_lines and f"{app}: checking the settings and " in log_lines[0], (out, err)
        assert err.startswith("error: ") or "\nerror: " in err, err


def test_writable_folder_names_the_file_above_it(tmp_path):
    from experiments.common.records import writable_folder

    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"out_dir .*/f/a/b lies under the file .*/f, not a"):
        writable_folder(tmp_path / "f" / "a" / "b", "out_dir")
    assert writable_folder(tmp_path / "new" / "dir").is_dir()
