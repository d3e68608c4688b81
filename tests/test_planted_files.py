"""A hostile file planted at every place an experiment reads back runs nothing: the run
restarts that piece with a one-line warning (and the same numbers as a clean run), or stops
with exit 2. The payload is what the reported exploit used: a pickle whose ``__reduce__``
calls ``os.system`` (here: touching a marker file).

Places: the analytic-kernel cache of convergence (and the figures, which share it) and its
``kernels.npz`` (report); drift's checkpoints and per-seed files; finite-vs-infinite's cached
kernels, checkpoints, per-seed JSON and arrays, lambda_max files and residuals (report);
the UCI benchmark's resume state; the tying study's analytic kernels and per-seed kernels;
``record.json`` of a run.
"""

from __future__ import annotations

import os
import pickle
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_module

from rntk_empirical.safe_io import (
    ReadBackWarning,
    UnreadableFile,
    load_json,
    load_npy,
    load_npz,
    load_torch,
    reuse,
)


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def plant(path: Path, marker: Path, form: str = "pickle") -> None:
    """Write a hostile file at ``path``: a raw pickle (``pickle``: what ``torch.load`` without
    ``weights_only`` executes), a torch zip archive (``torch``) or a ``.npz`` / ``.npy`` with
    an object array (``npz`` / ``npy``: what ``allow_pickle=True`` executes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"ntk": _Payload(marker), "nngp": _Payload(marker)}
    if form == "pickle":
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)  # torch.load's own protocol: no warning
    elif form == "torch":
        torch.save(obj, path)
    elif form == "npz":
        with open(path, "wb") as fh:
            np.savez(fh, test_best=np.array([_Payload(marker)], dtype=object))
    else:
        with open(path, "wb") as fh:
            np.save(fh, np.array([_Payload(marker)], dtype=object), allow_pickle=True)


def _read_back_warnings(caught) -> list[str]:
    msgs = [str(w.message) for w in caught if issubclass(w.category, ReadBackWarning)]
    assert all("\n" not in m for m in msgs), msgs
    return msgs


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "a planted file ran code"


def test_the_payload_is_live(tmp_path, marker):
    """What unpickling a planted file calls does run the command (so the tests below can fail);
    called here directly, without unpickling anything."""
    probe = tmp_path / "probe"
    fn, args = _Payload(probe).__reduce__()
    assert fn(*args) == 0 and probe.exists()


@pytest.mark.parametrize(
    "form, load",
    [("pickle", load_torch), ("torch", load_torch), ("npz", load_npz), ("npy", load_npy)],
)
@pytest.mark.parametrize("loader", [load_torch, load_npz, load_npy, load_json])
def test_every_loader_refuses_every_form(tmp_path, marker, form, load, loader):
    path = tmp_path / f"f.{form}"
    plant(path, marker, form)
    with pytest.raises(UnreadableFile) as info:
        loader(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path))
    if loader is load:
        assert "refused to unpickle" in msg or "pickle" in msg.lower(), msg
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert reuse(path, loader) is None
    (msg,) = _read_back_warnings(caught)
    assert msg.endswith("; recomputing it")
    with pytest.raises(UnreadableFile):
        reuse(path, loader, strict=True)
    assert reuse(tmp_path / "missing.pt", loader) is None


# ----------------------------------------------------------------------------- convergence
def test_convergence_cache_kernels_and_record(tmp_path, marker):
    from test_convergence_experiment import TINY, prepared

    from experiments.convergence import report
    from experiments.convergence import run as convergence

    prep = prepared(*TINY, f"cache_dir={tmp_path / 'cache'}")
    out = tmp_path / "run"
    clean = convergence.run_convergence(prep, out)
    (cache,) = (tmp_path / "cache").glob("*.pt")
    plant(cache, marker)
    plant(out / "record.json", marker)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = convergence.run_convergence(prep, out)
    msgs = _read_back_warnings(caught)
    assert any(str(cache) in m for m in msgs) and any("record.json" in m for m in msgs), msgs
    assert not again["analytic"]["cached"]  # recomputed, and the same numbers
    assert again["ntk"]["mean"] == clean["ntk"]["mean"]
    assert load_torch(cache)["ntk"].shape == (3, 3)  # the cache was rewritten
    # the report lists a planted kernels.npz and goes on without it
    plant(out / "kernels.npz", marker, "npz")
    summ = report.make_report(out, n_boot=20)
    assert [e["path"] for e in summ["excluded"]] == [str(out / "kernels.npz")]


# ----------------------------------------------------------------------------------- drift
_DRIFT_CLI = (
    "width=8",
    "seeds=2",
    "steps=6",
    "record_every=2",
    "checkpoint_every=2",
    "n_probe=2",
    "task.n_train=4",
    "task.n_test=2",
    "task.max_len=3",
    "task.min_len=2",
    "progress=false",
    "num_threads=1",
)


def _drift_settings():
    from hydra import compose, initialize_config_dir

    from experiments.drift.run import settings_from_config

    conf = str(Path(__file__).parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(
            config_name="drift",
            overrides=list(_DRIFT_CLI),
        )
    return settings_from_config(cfg)


def test_drift_checkpoints_and_seed_files(tmp_path, marker):
    from experiments.drift.run import run_drift

    s = _drift_settings()
    clean = run_drift(s, tmp_path / "clean")
    out = tmp_path / "run"
    plant(out / "checkpoint_seed0.pt", marker)
    plant(out / "seed1.json", marker)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = run_drift(s, out)
    msgs = _read_back_warnings(caught)
    assert len(msgs) == 2 and "refused to unpickle" in msgs[0] and "seed1.json" in msgs[1], msgs
    for a, b in zip(rec["per_seed"], clean["per_seed"]):
        assert a["history"]["train_loss"] == b["history"]["train_loss"]
    # strict_checkpoints: the planted checkpoint stops the run with exit 2 and one line
    plant(out / "checkpoint_seed0.pt", marker)
    (out / "record.json").unlink()
    (out / "seed0.json").unlink()
    r = run_module(
        "experiments.drift",
        *_DRIFT_CLI,
        "strict_checkpoints=true",
        f"hydra.run.dir={out}",
        timeout=240,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: checkpoint") and "refused to unpickle" in last, last


def test_gated_tying_analytic_and_seed_files(tmp_path, marker):
    from experiments.common.schema import ArchConfig
    from experiments.gated_tying.run import run_tying
    from experiments.gated_tying.schema import GatedTyingConfig

    arch = ArchConfig(name="erf_last", nonlinearity="erf", sigma_w=1.0)
    s = GatedTyingConfig(arch=arch, quick=True, lengths=[2], seeds=2, progress=False)
    clean = run_tying(s, tmp_path / "clean")
    out = tmp_path / "run"
    plant(out / "analytic-T2.pt", marker)
    plant(out / "T2-seed1.json", marker)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = run_tying(s, out)
    msgs = _read_back_warnings(caught)
    assert len(msgs) == 2 and "refused to unpickle" in msgs[0] and "T2-seed1.json" in msgs[1]
    assert rec["rows"] == clean["rows"]


# ---------------------------------------------------------------------- finite vs infinite
def test_finite_vs_infinite_every_file(tmp_path, marker):
    from experiments.common.schema import DeviceChoice, DTypeChoice
    from experiments.finite_vs_infinite.report import main as report_main
    from experiments.finite_vs_infinite.schema import FiniteVsInfiniteConfig
    from experiments.finite_vs_infinite.study import run_study

    cfg = FiniteVsInfiniteConfig(
        name="erf_last",
        quick=True,
        widths=[8, 16],
        seeds=2,
        steps=4,
        record_every=2,
        checkpoint_every=2,
        arms=["ntk"],
        n_train=12,
        n_test=8,
        n_boot=20,
        dtype=DTypeChoice.float64,
        device=DeviceChoice.cpu,
        progress=False,
    )
    clean = run_study(cfg, tmp_path / "clean")
    out = tmp_path / "run"
    run_study(cfg, out)
    task = out / "ItalyPowerDemand"
    planted = {
        task / "kernels.pt": "pickle",
        task / "w8" / "lambda_ntk.json": "pickle",
        task / "w8" / "ntk" / "seed0.json": "pickle",
        task / "w16" / "ntk" / "seed0.npz": "npz",
        task / "w16" / "ntk" / "checkpoint_seed1.pt": "torch",
        out / "record.json": "pickle",
    }
    (task / "w16" / "ntk" / "seed1.json").unlink()  # seed 1 was killed while training
    for path, form in planted.items():
        plant(path, marker, form)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = run_study(cfg, out)
    msgs = _read_back_warnings(caught)
    for path in planted:
        assert sum(str(path) in m for m in msgs) == 1, (path, msgs)
    assert len(msgs) == len(planted), msgs
    got, want = rec["tasks"]["ItalyPowerDemand"], clean["tasks"]["ItalyPowerDemand"]
    assert got["kernels"] == want["kernels"]
    for w in ("8", "16"):
        assert _no_seconds(got["widths"][w]) == _no_seconds(want["widths"][w])
    assert got["distance_exponents"] == want["distance_exponents"]
    # the report stops with exit 2 at a planted residuals file
    plant(task / "residuals.npz", marker, "npz")
    assert report_main([str(out), str(tmp_path / "report")]) == 2


def _no_seconds(d):
    if isinstance(d, dict):
        return {k: _no_seconds(v) for k, v in d.items() if k != "seconds"}
    return d


# ------------------------------------------------------------------------------------- UCI
def test_uci_resume_state(tmp_path, marker, uci_fixture_root):
    from experiments.uci import run as uci_exp
    from experiments.uci.schema import UCIBaselineConfig, UCIConfig, UCIGridConfig

    def settings(out: Path) -> UCIConfig:
        return UCIConfig(
            dataset="iris",
            out_dir=str(out),
            grid=UCIGridConfig(sigma_us=[0.5], sigma_bs=[0.1], depths=[1], readouts=["last"]),
            baselines=UCIBaselineConfig(methods=["rbf_svm"]),
            progress=False,
        )

    ref = uci_exp.run_dataset(settings(tmp_path / "a"), "iris", tmp_path / "a" / "iris")
    out = tmp_path / "b" / "iris"
    plant(out / uci_exp.PARTIAL_NAME, marker)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = uci_exp.run_dataset(settings(tmp_path / "b"), "iris", out)
    (msg,) = _read_back_warnings(caught)
    assert "partial.json" in msg
    assert rec["families"] == ref["families"]
