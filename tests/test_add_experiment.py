"""docs/extending.md's "Add an experiment" is true: the files it lists, written into a
package outside the repository (so ``experiments/common`` cannot have changed), register
themselves and run through the real command line, ``--help``, one-line errors and the
figures' find-or-run sweeps."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

DOC = REPO / "docs" / "extending.md"


def _package(root: Path) -> Path:
    """The walk-through's files under ``root`` (as package ``kernel_diag``); returns root."""
    text = DOC.read_text().split("## Add an experiment", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"`experiments/kernel_diag/([^`]+)`.*?\n\n```\w+\n(.*?)```", text, re.S)
    names = [n for n, _ in blocks]
    assert names == ["__init__.py", "schema.py", "run.py", "__main__.py", "conf/kernel_diag.yaml"]
    for name, body in blocks:
        path = root / "kernel_diag" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body.replace("experiments.kernel_diag", "kernel_diag"))
    return root


def _run(cwd: Path, pkgs: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{pkgs}", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("add_experiment")
    pkgs = _package(root / "pkgs")
    return root, pkgs


# ``python -m kernel_diag ARGS`` several times in one interpreter (a process each would
# cost seconds of imports): exit code, stdout and stderr of each.
DRIVER = """
import contextlib, io, json, runpy, sys
out = []
for args in json.loads(sys.argv[1]):
    sys.argv = ["kernel_diag", *args]
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            runpy.run_module("kernel_diag", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as ex:
            code = ex.code or 0
    out.append([code, o.getvalue(), e.getvalue()])
from pathlib import Path
from experiments.common.sweeps import RecordIndex, records
from kernel_diag.schema import KernelDiagConfig
root = Path("outputs")
configs = [KernelDiagConfig(n=2, T=4), KernelDiagConfig(n=2, T=3)]
configs.append(KernelDiagConfig(n=2, T=4, seed=1))  # the folder rule ignores the seed
recs = records(configs, root, RecordIndex(root))
out.append([r["finished"] for r in recs])
print(json.dumps(out))
"""


def test_the_walkthrough_runs_through_the_real_command_line(walkthrough):
    root, pkgs = walkthrough
    # the real entry point once, in its own process
    ok = _run(root, pkgs, "-m", "kernel_diag", "n=3", "T=4", "arch=erf_last")
    assert ok.returncode == 0, ok.stderr
    rec = json.loads((root / "outputs/kernel_diag/erf_last/n=3-T=4/record.json").read_text())
    assert rec["experiment"] == "kernel_diag" and rec["status"] == "finished"
    assert len(rec["diag"]) == 3 and min(rec["diag"]) > 0
    assert rec["identity"]["arch"]["nonlinearity"] == "erf"

    calls = [["--help"], ["n=0"], ["n=2", "T=4"]]
    proc = _run(root, pkgs, "-c", DRIVER, json.dumps(calls))
    assert proc.returncode == 0, proc.stderr
    (help_code, page, _), (bad_code, _, bad_err), (run_code, _, run_err), finished = json.loads(
        proc.stdout.strip().splitlines()[-1]
    )
    assert help_code == 0
    assert "(Diagonal of the analytic NTK on random sequences)" in page
    assert re.search(r"  n=4 +number of sequences", page), page
    assert re.search(r"  arch: .*relu_last.*\(now: relu_last\)", page), page
    assert "arch.depth=1" in page
    assert bad_code == 2 and bad_err == "error: n=0 is not valid; expected an integer >= 1\n"
    assert run_code == 0, run_err
    # the figures' find-or-run: the command line's run is found (not rerun), a missing
    # configuration is run into the experiment's own folder rule
    first = json.loads((root / "outputs/kernel_diag/relu_last/n=2-T=4/record.json").read_text())
    assert finished[0] == first["finished"]
    assert (root / "outputs/kernel_diag/relu_last/n=2-T=3/record.json").is_file()
    # another configuration whose folder is taken (seed=1) goes beside it, named by its hash
    (beside,) = (root / "outputs/kernel_diag/relu_last").glob("n=2-T=4-*/record.json")
    assert json.loads(beside.read_text())["identity"]["seed"] == 1
    assert first["identity"]["seed"] == 0  # not overwritten
