"""Every experiment says what it is doing before its first slow step (loading data sets,
building data, analytic kernels): the first log line comes before any of that."""

from __future__ import annotations

from conftest import run_in_one_process


def test_the_first_log_line_comes_before_the_data(tmp_path):
    calls = [
        ("experiments.finite_vs_infinite", ["tasks=[NoSuchDataSet]", "progress=false"]),
        ("experiments.drift", ["width=8", "seeds=1", "steps=1", "task.kind=aeon",
                               "task.dataset=NoSuchDataSet", "progress=false"]),
        ("experiments.convergence", ["width=8", "seeds=1", "data.kind=file",
                                     "data.path=missing.npz", "progress=false"]),
    ]  # fmt: skip
    results = run_in_one_process(calls, tmp_path)
    for (module, _), (code, out, err), app in zip(
        calls, results, ("finite_vs_infinite", "drift", "convergence"), strict=True
    ):
        assert code == 2, (module, err)
        log_lines = [ln for ln in (out + err).splitlines() if ln.startswith("[")]
        assert log_lines and f"{app}: checking the settings and " in log_lines[0], (out, err)
        assert err.startswith("error: ") or "\nerror: " in err, err
