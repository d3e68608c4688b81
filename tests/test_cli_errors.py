"""Every CLI mistake is one line on stderr with exit 2, Hydra's own included, and a run that
fails validation or is skipped leaves the provenance of finished runs and no empty folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, run_in_one_process, run_module

TINY = ["width=8", "seeds=1", "data.n=3", "data.T=3", "cache=false", "progress=false"]

# the arch group's options: every YAML file of conf/arch, sorted
ARCH_CHOICES = ", ".join(sorted(p.stem for p in (REPO / "conf" / "arch").glob("*.yaml")))

HYDRA_ERRORS = {
    "width=abc": "could not be converted to Integer",
    "foo=1": "unknown option 'foo' (--help lists the options)",
    "+arch.sigmaw=1.0": "unknown option 'arch.sigmaw'",
    "arch=nope": "Could not find 'arch/nope'",
    # the nearest valid key (never Hydra's "+widht=256", which the schema would reject)
    "widht=256": "unknown option 'widht'; did you mean 'width'?",
    "arch.sigmaw=1.0": "unknown option 'arch.sigmaw'; did you mean 'arch.sigma_w'?",
    "+widht=256": "no such key; did you mean 'width'?",
    # an unknown group option lists the choices and the nearest one
    "arch=relu_lst": f"arch=relu_lst is not an option; choices: {ARCH_CHOICES}; "
    "did you mean arch=relu_last?",
}
# The entry point of ``python -m experiments.convergence``, called once per override in one
# subprocess (cheaper than a process each; Hydra's logging set-up stays out of pytest's).
PROBE = """
import contextlib, io, json, os, sys
from experiments.common.run import hydra_entry
from experiments.convergence.run import main
out = {}
overrides, tiny = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for override in overrides:
    sys.argv = ["convergence", *tiny, override]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            hydra_entry(main)
            code = 0
        except SystemExit as e:
            code = e.code
    out[override] = [code, err.getvalue(), "HYDRA_FULL_ERROR" in os.environ]
print(json.dumps(out))
"""


def test_hydra_errors_are_one_line_exit_2_and_leave_no_folder(tmp_path):
    args = [json.dumps(list(HYDRA_ERRORS)), json.dumps(TINY)]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for override, message in HYDRA_ERRORS.items():
        code, err, leaked = results[override]
        assert code == 2, (override, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (override, err)
        assert message in err, (override, err)
        assert "use +" not in err, (override, err)
        assert not leaked  # HYDRA_FULL_ERROR restored after each call
    assert not (tmp_path / "outputs").exists()


def test_a_hydra_error_from_the_command_line(tmp_path):
    out = run_module("experiments.convergence", *TINY, "+arch.sigmaw=1.0", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: unknown option 'arch.sigmaw'")


def test_failed_or_skipped_runs_keep_the_provenance_of_finished_ones(tmp_path):
    sweep = tmp_path / "outputs" / "convergence" / "relu_last-random"
    first = run_module(
        "experiments.convergence", "-m", *TINY, "hydra.callbacks.report.n_boot=10",
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    (run,) = sweep.glob("width=8/*/.hydra/config.yaml")
    multirun = (sweep / "multirun.yaml").read_bytes()
    config = run.read_bytes()
    stamp = run.stat().st_mtime_ns
    # a sweep into the same folder whose jobs all fail validation (no GPU here)
    failed = run_module(
        "experiments.convergence", "-m", *TINY, "device=cuda",
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1, failed.stderr
    assert (sweep / "multirun.yaml").read_bytes() == multirun
    # the same sweep again: every job is already finished and skipped
    again = run_module(
        "experiments.convergence", "-m", *TINY, "hydra.callbacks.report.n_boot=10",
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert run.read_bytes() == config and run.stat().st_mtime_ns == stamp
    assert (sweep / "multirun.yaml").read_bytes() == multirun
    assert sorted(p.name for p in sweep.iterdir()) == ["multirun.yaml", "report", "width=8"]
    assert len(list((sweep / "width=8").iterdir())) == 1  # the failed job left no folder


def test_inputs_that_would_fail_after_work_started_are_rejected_first():
    from experiments.common.schema import ArchConfig
    from experiments.convergence.run import prepare
    from experiments.convergence.schema import ConvergenceConfig
    from experiments.drift.schema import DriftConfig

    with pytest.raises(ValueError, match="sigma_v=0 makes every kernel identically 0"):
        prepare(ConvergenceConfig(arch=ArchConfig(sigma_v=0.0)))
    with pytest.raises(ValueError, match="batch_size=0 is not valid"):
        DriftConfig(batch_size=0)
    with pytest.raises(ValueError, match="sigma_v=0"):
        DriftConfig(arch=ArchConfig(sigma_v=0.0))


def test_a_sweep_validates_every_value_before_the_first_job(tmp_path):
    calls = [
        ("experiments.convergence", ["-m", *TINY, "width=8,-5"]),
        ("experiments.convergence", ["-m", *TINY, "arch=relu_last,relu_lst"]),
        ("experiments.convergence", ["-m", *TINY, "arch.sigma_v=1.0,0.0"]),
        ("experiments.drift", ["-m", "width=8", "seeds=1", "steps=2,0"]),
    ]
    results = run_in_one_process(calls, tmp_path)
    expected = [
        "error: the sweep's width=-5: width=-5 is not valid; expected an integer >= 1",
        f"error: the sweep's arch=relu_lst is not an option; choices: {ARCH_CHOICES}; "
        "did you mean arch=relu_last?",
        "error: the sweep's arch.sigma_v=0.0: arch.sigma_v=0 makes every kernel identically 0",
        "error: the sweep's steps=0: steps=0 is not valid",
    ]
    for (code, _, err), start in zip(results, expected, strict=True):
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith(start) and err.endswith("(no job was started)\n"), err
    assert not (tmp_path / "outputs").exists()  # the valid first values did not run either
