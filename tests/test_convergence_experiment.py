"""The convergence experiment: config validation, records, resume, data files, the CLI
(basic, joblib and submitit_local launchers) and the report callback."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_module
from hydra import compose, initialize_config_dir

from experiments.convergence import run as convergence
from rntk_empirical.analytic import analytic_nngp, analytic_ntk
from rntk_empirical.data import load_sequences, mixed_length_sequences, save_sequences
from rntk_empirical.metrics import relative_frobenius

REPO = Path(__file__).resolve().parents[1]
CONF = str(REPO / "conf")
TINY = ["width=16", "seeds=2", "data.n=3", "data.T=3", "progress=false"]


def settings(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="convergence", overrides=list(overrides))
    return convergence.settings_from_config(cfg)


def prepared(*overrides: str):
    return convergence.prepare(settings(*overrides))


def cli(cwd, *args, timeout=240):
    return run_module(
        "experiments.convergence", *args, cwd=cwd, timeout=timeout, HYDRA_FULL_ERROR="0"
    )


# ---------------------------------------------------------------------- configs
def test_named_configs_compose_to_their_architectures():
    assert settings().arch.to_architecture() == convergence.Architecture()
    a = settings("arch=erf_avg").arch.to_architecture()
    assert (a.nonlinearity, a.readout) == ("erf", "avg")
    assert settings("arch=relu_2layer").arch.to_architecture().depth == 2
    assert settings("arch=bidirectional").arch.to_architecture().bidirectional
    assert settings("arch=orthogonal").arch.to_architecture().init == "orthogonal"
    s = settings("experiment=tp2_rnn")
    a = s.arch.to_architecture()
    assert (a.nonlinearity, a.readout, s.seeds, s.name) == ("erf", "avg", 100, "tp2_rnn")
    assert (a.sigma_w**2, a.sigma_u**2, a.sigma_b**2, a.sigma_v**2) == pytest.approx(
        (1.0, 2.0, 0.2, 1.0)
    )
    assert (s.data.n, s.data.T, s.data.m) == (2, 5, 3)
    mixed = prepared("data=mixed_lengths").seqs
    assert mixed.n == 8 and not mixed.equal_lengths
    assert 4 <= int(mixed.lengths.min()) and int(mixed.lengths.max()) <= 12


@pytest.mark.parametrize(
    "override, message",
    [
        ("width=0", "width=0 is not valid"),
        ("seeds=0", "seeds=0 is not valid"),
        ("chunk_size=-1", "chunk_size=-1 is not valid"),
        ("data.n=0", "data.n=0 is not valid"),
        ("arch.nonlinearity=softplus", "Architecture.nonlinearity='softplus'"),
        ("arch.readout=first", "Architecture.readout='first'"),
        ("data=file", "needs data.path"),
        ("arch.parameterization=standard", "no infinite-width NTK"),
    ],
)
def test_invalid_settings_raise_before_work(override, message):
    with pytest.raises(ValueError, match=message):
        prepared(override)


def test_cuda_request():
    if torch.cuda.is_available():
        assert prepared("device=cuda").device.type == "cuda"
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            prepared("device=cuda")


# ---------------------------------------------------------------------- data files
def test_data_files_roundtrip_and_errors(tmp_path):
    seqs = mixed_length_sequences(4, 2, 6, 3, seed=1)
    back = load_sequences(save_sequences(tmp_path / "s.npz", seqs))
    assert torch.equal(back.values, seqs.values) and torch.equal(back.lengths, seqs.lengths)
    x = np.random.default_rng(0).standard_normal((5, 4, 2))
    np.savez(tmp_path / "dense.npz", x=x)
    np.savez(tmp_path / "numbered.npz", x_0=x[0], x_1=x[1, :2])
    torch.save([torch.from_numpy(x[0]), torch.from_numpy(x[1])], tmp_path / "list.pt")
    np.testing.assert_array_equal(load_sequences(tmp_path / "dense.npz", n=3).values, x[:3])
    assert load_sequences(tmp_path / "numbered.npz").lengths.tolist() == [4, 2]
    assert load_sequences(tmp_path / "list.pt").n == 2
    s = prepared("data=file", f"data.path={tmp_path / 'dense.npz'}").seqs
    assert s.n == 5 and s.max_len == 4 and s.dim == 2

    np.savez(tmp_path / "wrong_key.npz", y=x)
    np.save(tmp_path / "rank2.npy", x[0])
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file")
    np.savez(tmp_path / "nan.npz", x=np.full((2, 3, 1), np.nan))
    np.savez(tmp_path / "packed_bad.npz", x=x[0], lengths=np.array([3, 3]))
    for name, message in [
        ("missing.npz", "does not exist"),
        ("wrong_key.npz", "has keys \\['y'\\]"),
        ("rank2.npy", "expected a \\(N, T, m\\) tensor"),
        ("garbage.npz", "could not be read"),
        ("nan.npz", "NaN or Inf"),
        ("packed_bad.npz", "summing to"),
    ]:
        with pytest.raises(ValueError, match=message):
            prepared("data=file", f"data.path={tmp_path / name}")
    with pytest.raises(ValueError, match="holds only 5"):
        load_sequences(tmp_path / "dense.npz", n=9)


# ---------------------------------------------------------------------- one run
def test_run_writes_record_and_resumes(tmp_path, monkeypatch):
    prep = prepared(*TINY, "base_seed=5", f"cache_dir={tmp_path / 'cache'}")
    out = tmp_path / "run"
    rec = convergence.run_convergence(prep, out, overrides=TINY)
    assert rec["status"] == "finished" and rec["width"] == 16
    assert [e["network_seed"] for e in rec["per_seed"]] == [5, 6]
    assert rec["versions"]["torch"] == torch.__version__  # importlib.metadata of the wheel
    assert {"python", "numpy", "hydra-core", "rntk_empirical"} <= set(rec["versions"])
    assert rec["device"]["resolved"] in ("cpu", "cuda:0", "cuda")
    assert set(rec["timings"]) >= {"analytic_s", "empirical_s", "total_s"}
    assert not rec["analytic"]["cached"] and len(list((tmp_path / "cache").glob("*.pt"))) == 1
    # the stored kernels reproduce the recorded errors, and the reference is the analytic kernel
    z = np.load(out / "kernels.npz")
    x = prep.seqs.values
    np.testing.assert_allclose(z["analytic_ntk"], analytic_ntk(prep.arch, x).numpy(), rtol=1e-12)
    np.testing.assert_allclose(z["analytic_nngp"], analytic_nngp(prep.arch, x).numpy(), rtol=1e-12)
    assert z["ntk"].shape == (2, 3, 3) and z["nngp"].shape == (2, 3, 3)
    for i, e in enumerate(rec["per_seed"]):
        assert e["ntk"]["rel_fro"] == pytest.approx(
            relative_frobenius(z["ntk"][i], z["analytic_ntk"])
        )
    assert rec["ntk"]["mean"]["rel_fro"] == pytest.approx(
        np.mean([e["ntk"]["rel_fro"] for e in rec["per_seed"]])
    )
    assert json.loads((out / "record.json").read_text())["config_hash"] == prep.config_hash
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files

    # second run: finished record found, nothing recomputed
    def boom(*a, **k):
        raise AssertionError("recomputed a finished run")

    monkeypatch.setattr("rntk_empirical.empirical.empirical_ntk", boom)
    mtime = (out / "record.json").stat().st_mtime_ns
    assert convergence.run_convergence(prep, out)["finished"] == rec["finished"]
    assert (out / "record.json").stat().st_mtime_ns == mtime
    # another configuration in the same folder is refused, not overwritten
    other = prepared(*TINY, "width=17", f"cache_dir={tmp_path / 'cache'}")
    with pytest.raises(FileExistsError, match="another configuration"):
        convergence.run_convergence(other, out)
    # a half-written run (no record) is recomputed, with the cached analytic kernels
    monkeypatch.undo()
    (out / "record.json").unlink()
    again = convergence.run_convergence(prep, out)
    assert again["analytic"]["cached"]
    assert again["ntk"]["mean"]["rel_fro"] == pytest.approx(
        rec["ntk"]["mean"]["rel_fro"], rel=1e-12
    )


def test_out_of_memory_is_reported_with_a_remedy(tmp_path, monkeypatch):
    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("rntk_empirical.empirical.empirical_kernels", oom)
    prep = prepared(*TINY, "cache=false")
    with pytest.raises(convergence.OutOfMemory, match="out of memory at width=16.*chunk_size"):
        convergence.run_convergence(prep, tmp_path)
    assert not (tmp_path / "record.json").exists()


# ---------------------------------------------------------------------- command line
def test_cli_sweep_report_and_resume(tmp_path):
    args = [
        "-m",
        "width=8,32",
        "seeds=2",
        "data.n=3",
        "data.T=3",
        "progress=false",
        "hydra.callbacks.report.n_boot=200",
    ]
    first = cli(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    sweep = tmp_path / "outputs" / "convergence" / "relu_last-random"
    records = sorted(sweep.glob("width=*/*/record.json"))
    assert [r.parent.parent.name for r in records] == ["width=32", "width=8"]
    assert all(r.parent.name == "data.T=3,data.n=3,seeds=2" for r in records)
    summary = json.loads((sweep / "report" / "summary.json").read_text())
    assert summary["series"][0]["widths"] == [8, 32]
    assert "ntk_rel_fro" in summary["series"][0]["fits"]
    assert (sweep / "report" / "convergence.png").is_file()

    mtimes = [r.stat().st_mtime_ns for r in records]
    second = cli(tmp_path, *args)
    assert second.returncode == 0, second.stderr
    assert (second.stdout + second.stderr).count("already finished") == 2
    assert [r.stat().st_mtime_ns for r in records] == mtimes


def test_cli_bad_input_is_one_line(tmp_path):
    r = cli(tmp_path, "width=0")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: width=0 is not valid; expected an integer >= 1"
    r = cli(tmp_path, "data=file", "data.path=/no/such/file.npz")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: data file '/no/such/file.npz' does not exist"
    ]
    assert not [p for p in tmp_path.rglob("*") if p.name in ("record.json", "kernels.npz")]
    assert not (tmp_path / "outputs").exists()  # bad input leaves no (empty) run folders


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_cli_parallel_launchers(tmp_path, launcher):
    extra = (
        ["hydra.launcher.n_jobs=2"]
        if launcher == "joblib"
        else ["hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1"]
    )
    r = cli(
        tmp_path,
        "-m",
        f"hydra/launcher={launcher}",
        *extra,
        "width=8,16",
        "seeds=2",
        "data.n=2",
        "data.T=3",
        "progress=false",
        "num_threads=1",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = tmp_path / "outputs" / "convergence" / "relu_last-random"
    recs = [json.loads(p.read_text()) for p in sorted(sweep.glob("width=*/*/record.json"))]
    assert sorted(rec["width"] for rec in recs) == [8, 16]
    assert (sweep / "report" / "summary.json").is_file()
