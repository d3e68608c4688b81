"""Checked registration (issue 25 item 1) and ``module:function`` nonlinearities from the
command line (item 2): a wrong derivative is refused naming the worst point, the derivative
defaults to autograd, a name is replaced only with overwrite=True, and
``arch.nonlinearity=tests.fixtures_acts:softplus`` runs through the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, run_module
from test_cli_errors import PROBE

from rntk_empirical import Architecture, analytic_ntk, empirical_ntk
from rntk_empirical.analytic import numba_backend
from rntk_empirical.network import ElmanRNN
from rntk_empirical.nonlinearities import (
    get_nonlinearity,
    register_nonlinearity,
    resolve_nonlinearity,
)
from rntk_empirical.nonlinearities.registry import BUILT_IN


def test_wrong_derivative_is_refused_naming_the_worst_point():
    """The issue's reproduction: softplus with tanh as its derivative (the analytic diagonal
    read 3.23 against the empirical 2.07) is refused; tanh' = 1 - tanh^2 is far from sigmoid
    at large |x|, where the message points."""
    with pytest.raises(ValueError) as err:
        register_nonlinearity("badsp", F.softplus, torch.tanh)
    msg = str(err.value)
    assert "\n" not in msg and "dphi is not the derivative of phi" in msg and "autograd" in msg
    x = float(msg.split("at x = ")[1].split(" ")[0])
    gap = abs(float(torch.tanh(torch.tensor(x)) - torch.sigmoid(torch.tensor(x))))
    grid = torch.linspace(-20, 20, 4000, dtype=torch.float64)
    worst = (torch.tanh(grid) - torch.sigmoid(grid)).abs() / (1 + torch.sigmoid(grid))
    assert gap / (1 + float(torch.sigmoid(torch.tensor(x)))) == pytest.approx(float(worst.max()))
    with pytest.raises(ValueError, match="unknown nonlinearity 'badsp'"):
        get_nonlinearity("badsp")


def test_derivative_checked_by_central_difference_without_autograd():
    """phi through numpy (no autograd graph): the given phi' is checked by a central
    difference, right accepted, wrong refused."""
    phi = lambda x: torch.from_numpy(np.arctan(x.numpy()))  # noqa: E731
    good = register_nonlinearity("np_atan", phi, lambda x: 1.0 / (1.0 + x * x))
    assert float(good.dphi(torch.tensor([2.0], dtype=torch.float64))) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="central difference"):
        register_nonlinearity("np_atan_bad", phi, lambda x: 1.0 / (1.0 + x * x) + 1e-2)


def test_derivative_defaults_to_autograd_and_the_kernels_agree():
    """Without phi' autograd is used: the analytic diagonal of softplus equals the mean
    empirical NTK diagonal of wide networks (the quantity the issue saw wrong)."""
    nl = register_nonlinearity("softplus_auto", F.softplus)
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)
    assert torch.allclose(nl.dphi(x), torch.sigmoid(x), rtol=1e-14, atol=0)
    arch = Architecture(nonlinearity="softplus_auto")
    xs = [torch.tensor([[0.5], [-1.0], [1.5]], dtype=torch.float64)]
    analytic = float(analytic_ntk(arch, xs, backend="torch")[0, 0])
    emp = torch.stack([empirical_ntk(ElmanRNN(arch, 1, 256, seed=s), xs) for s in range(30)])
    mean, sd = float(emp.mean()), float(emp.std() / 30**0.5)
    assert abs(mean - analytic) <= 3 * sd + 0.01 * analytic, (mean, sd, analytic)


def test_replacing_a_name_needs_overwrite_and_builtins_are_protected():
    register_nonlinearity("twice", torch.sin)
    with pytest.raises(ValueError, match="already registered; pass overwrite=True"):
        register_nonlinearity("twice", torch.cos)
    assert get_nonlinearity("twice").phi is torch.sin
    register_nonlinearity("twice", torch.cos, overwrite=True)
    assert get_nonlinearity("twice").phi is torch.cos
    for name in (nl.name for nl in BUILT_IN):
        with pytest.raises(ValueError, match="built in"):
            register_nonlinearity(name, torch.sin, overwrite=True)


def test_a_closed_form_without_compiled_kernel_does_not_fall_to_quadrature():
    """A closed form registered without its compiled dual: the compiled bank says why it
    cannot run (no silent quadrature), auto takes the torch path, which uses the closed form
    (here deliberately 2x V_phi, so quadrature would show)."""

    def twice(a, b, c, same=None):
        return tuple(2 * v for v in get_nonlinearity("erf").dual(a, b, c))

    register_nonlinearity("erf_twice", torch.erf, dual=twice)
    reason = numba_backend.supported("erf_twice", True, torch.device("cpu"))
    assert reason is not None and "no compiled" in reason
    xs = [torch.randn(3, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))]
    arch = Architecture(nonlinearity="erf_twice")
    assert torch.equal(analytic_ntk(arch, xs), analytic_ntk(arch, xs, backend="torch"))
    with pytest.raises(ValueError, match="no compiled"):
        analytic_ntk(arch, xs, backend="numba")


def test_resolve_module_attr_specs():
    name = resolve_nonlinearity("fixtures_acts:softplus")
    assert name == "fixtures_acts:softplus"
    assert get_nonlinearity(name).phi is F.softplus
    assert resolve_nonlinearity(name) == name  # idempotent
    assert resolve_nonlinearity("relu") == "relu"
    assert resolve_nonlinearity("softsign") == "softsign"  # a name: Architecture checks it
    bad = {
        "no_such_module_xyz:f": "cannot import 'no_such_module_xyz'",
        "fixtures_acts:nope": "module 'fixtures_acts' has no 'nope'",
        "fixtures_acts:not_a_function": "'not_a_function' is a float, not a function",
        "fixtures_acts:": "expected module:function",
    }
    for spec, message in bad.items():
        with pytest.raises(ValueError, match=message) as err:
            resolve_nonlinearity(spec)
        assert "\n" not in str(err.value)


TINY = ["width=8", "seeds=1", "data.n=3", "data.T=3", "cache=false", "progress=false"]


def test_command_line_uses_a_users_module(tmp_path):
    """``arch.nonlinearity=module:function`` through the real command line: it runs and the
    record names it; a bad spec is one line on stderr with exit 2 and leaves no folder."""
    spec = "tests.fixtures_acts:softplus"
    ok = run_module("experiments.convergence", *TINY, f"arch.nonlinearity={spec}", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    records = list((tmp_path / "outputs").rglob("record.json"))
    assert len(records) == 1 and spec in records[0].read_text()
    bad = {
        "tests.fixtures_acts:nope": "module 'tests.fixtures_acts' has no 'nope'",
        "tests.fixtures_acts:not_a_function": "is a float, not a function",
        "no_such_pkg.acts:softplus": "cannot import 'no_such_pkg.acts'",
    }
    # the bad specs in one process (the entry point called once per override, as in
    # tests/test_cli_errors.py); one of them also through its own command line
    args = [json.dumps([f"arch.nonlinearity={spec}" for spec in bad]), json.dumps(TINY)]
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=tmp_path / "outputs",
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr
    results = json.loads(probe.stdout.strip().splitlines()[-1])
    for spec, message in bad.items():
        code, err, _ = results[f"arch.nonlinearity={spec}"]
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (spec, err)
        assert message in err, (spec, err)
    r = run_module("experiments.convergence", *TINY, "arch.nonlinearity=nope:f", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: nonlinearity='nope:f': cannot import 'nope'"), r.stderr
    assert len(list(tmp_path.rglob("record.json"))) == 1  # no run folder for a bad spec
