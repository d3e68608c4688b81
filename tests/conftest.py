import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rntk_empirical.uci import default_root

REPO = Path(__file__).resolve().parents[1]
# Three of the smallest datasets of the collection, in its own format (tests/data/uci/README.md).
UCI_FIXTURE_ROOT = REPO / "tests" / "data" / "uci"
# Read before any test sets $RNTK_UCI_ROOT: the whole collection where it is (CI: ../shared).
UCI_FULL_ROOT = default_root()

torch.set_default_dtype(torch.float64)
# Under pytest-xdist every core runs a worker: one torch thread each (oversubscribed threads
# make small kernels far slower), also in the subprocesses the tests start.
XDIST_WORKER = "PYTEST_XDIST_WORKER" in os.environ
if XDIST_WORKER:
    torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, the controller makes sure numba's on-disk cache is filled before
    the workers start (:mod:`rntk_empirical.analytic.warmup`, which ``scripts/setup.sh``
    already ran: under a second then), so no worker compiles: on a cold cache each worker
    otherwise spent 20-40 s compiling the same code."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        return
    from rntk_empirical.analytic import numba_backend, warmup

    if numba_backend.available():  # in-process: about a second with the cache filled
        for part in warmup.PARTS:
            warmup.warm(part)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def uci_fixture_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The committed UCI fixture as ``$RNTK_UCI_ROOT`` (inherited by ``run_module``)."""
    monkeypatch.setenv("RNTK_UCI_ROOT", str(UCI_FIXTURE_ROOT))
    return UCI_FIXTURE_ROOT


@pytest.fixture
def uci_full_root(request: pytest.FixtureRequest) -> Path:
    """The whole UCI collection; the one allowed skip, by test name, where it is absent."""
    if not UCI_FULL_ROOT.is_dir():
        pytest.skip(
            f"{request.node.name} not run: the whole UCI collection is absent at "
            f"{UCI_FULL_ROOT} (get it: python -m experiments.uci.data download)"
        )
    return UCI_FULL_ROOT


def random_sequences(
    lengths, m: int, seed: int = 0, scale: float = 1.0, dtype: torch.dtype = torch.float64
) -> list[torch.Tensor]:
    """The one random-sequence builder of the suite: ``[(T_i, m)]`` standard normal entries
    times ``scale``, one generator seeded by ``seed`` drawing the sequences in order."""
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(T, m, generator=g, dtype=dtype) for T in lengths]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b||_F / ||b||_F."""
    return float((a - b).detach().norm() / b.detach().norm())


def assert_finite_networks_match(arch, seeds: int, detects: float = 0.05) -> None:
    """Seed means of the empirical NTK and NNGP of ``seeds`` Elman networks of width 256 (on
    lengths 3, 4, 2, m = 2) are within 2.5 sigma of the analytic kernels (D: relative error
    of the seed mean, sigma: its noise, as in tests/test_analytic_vs_empirical.py), and the
    same check fails for a kernel off by ``detects``."""
    from rntk_empirical import analytic_kernels
    from rntk_empirical.empirical import empirical_kernels
    from rntk_empirical.network import ElmanRNN

    xs = random_sequences((3, 4, 2), 2, seed=5)
    theta, nngp = analytic_kernels(arch, xs)
    ets, eks = [], []
    for seed in range(seeds):
        et, ek = empirical_kernels(ElmanRNN(arch, 2, 256, seed=seed, max_len=4), xs)
        ets.append(et.detach())
        eks.append(ek.detach())

    def deviation(samples: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
        norm = target.norm()
        d = (samples.mean(0) - target).norm() / norm
        sigma = (samples.var(0).sum() / samples.shape[0]).sqrt() / norm
        return float(d), float(sigma)

    for samples, target in ((torch.stack(ets), theta), (torch.stack(eks), nngp)):
        d, sigma = deviation(samples, target)
        assert d <= 2.5 * sigma, (d, sigma)
        for sign in (1, -1):
            d, sigma = deviation(samples, target * (1 + sign * detects))
            assert d > 2.5 * sigma, (sign, d, sigma)


def kernels_by_path(arch, xs, numba: bool = True) -> tuple[list, dict[str, tuple]]:
    """(reference, {path: kernels}): the (NTK, NNGP) of ``arch`` on ``xs`` by the reference
    recursion (autograd) and by the in-place torch path and the one-pass bank in torch, plus
    the compiled numba path and bank where ``numba`` (``arch.depth`` layers, its readout)."""
    from rntk_empirical import analytic_kernels
    from rntk_empirical.analytic.bank import analytic_kernel_bank

    key = (arch.depth, arch.readout)
    ref = [t.detach() for t in analytic_kernels(arch, [x.clone().requires_grad_() for x in xs])]
    paths = {
        "inplace": analytic_kernels(arch, xs, backend="torch"),
        "bank-torch": analytic_kernel_bank(arch, xs, readouts=(arch.readout,), backend="torch")[
            key
        ],
    }
    if numba:
        paths["numba"] = analytic_kernels(arch, xs, backend="numba")
        bank = analytic_kernel_bank(arch, xs, readouts=(arch.readout,), backend="numba")
        paths["bank-numba"] = bank[key]
    return ref, paths


def run_module(
    module: str, *args: str, cwd: Path = REPO, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess:
    """``python -m module args`` in a subprocess with the repository on PYTHONPATH (plus
    ``env``); stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            **({"OMP_NUM_THREADS": "1"} if XDIST_WORKER else {}),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ``python -m MODULE ARGS`` for several commands in one interpreter (a process each costs
# seconds of imports): each call's exit code, stdout and stderr, as the command line sees them.
_IN_ONE_PROCESS = """
import contextlib, io, json, logging, runpy, sys, warnings
warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
out = []
for module, args in json.loads(sys.argv[1]):
    sys.argv = [module, *args]
    o, e = io.StringIO(), io.StringIO()
    for h in list(logging.root.handlers):  # each Hydra job configures logging afresh
        logging.root.removeHandler(h)
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as ex:
            code = ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
    out.append([code, o.getvalue(), e.getvalue()])
print(json.dumps(out))
"""


def run_in_one_process(
    calls: list[tuple[str, list[str]]], cwd: Path, timeout: float = 300, **env: str
) -> list[tuple[int, str, str]]:
    """``[(module, args), ...]`` run in turn in one subprocess (cwd ``cwd``); returns
    ``[(exit code, stdout, stderr), ...]``."""
    import json

    proc = subprocess.run(
        [sys.executable, "-c", _IN_ONE_PROCESS, json.dumps([[m, list(a)] for m, a in calls])],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [tuple(r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]
