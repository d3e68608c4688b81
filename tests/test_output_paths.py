"""Output, cache and run folders are checked before any work: a file in their place (or a
folder that cannot be written) is one line naming the path, exit 2, and nothing computed."""

from __future__ import annotations

from conftest import run_in_one_process

TINY = ["width=8", "seeds=1", "data.n=3", "data.T=3", "progress=false"]


def test_unwritable_outputs_fail_first_in_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    calls = [
        ("experiments.figures", ["figure=spectrum", "quick=true", f"out_dir={blocker}"]),
        ("experiments.convergence", [*TINY, f"hydra.run.dir={blocker}/run"]),
        ("experiments.convergence", [*TINY, f"cache_dir={blocker}", "hydra.run.dir=run"]),
        ("experiments.convergence.report", [str(tmp_path), "--out", str(blocker)]),
        ("experiments.drift", ["width=8", "seeds=1", "steps=2", f"hydra.run.dir={blocker}"]),
    ]
    results = run_in_one_process(calls, tmp_path)
    for (module, args), (code, _, err) in zip(calls, results, strict=True):
        assert code == 2, (module, args, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (module, err)
        assert str(blocker) in err, (module, err)
    assert "out_dir" in results[0][2] and "cache_dir" in results[2][2]
    # nothing was computed or written: no figure data, no run folder, no cache
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_writable_folder_names_the_file_above_it(tmp_path):
    import pytest

    from experiments.common.records import writable_folder

    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"out_dir .*/f/a/b lies under the file .*/f, not a"):
        writable_folder(tmp_path / "f" / "a" / "b", "out_dir")
    assert writable_folder(tmp_path / "new" / "dir").is_dir()
