"""Files from output folders and user data are loaded without running code from them:
training checkpoints (weights_only, configuration hash, damaged files) and data files."""

import warnings

import numpy as np
import pytest
import torch

from rntk_empirical import Architecture, ElmanRNN
from rntk_empirical.data import load_sequences
from rntk_empirical.empirical import empirical_ntk
from rntk_empirical.tasks import synthetic_regression
from rntk_empirical.training import (
    CheckpointError,
    CheckpointWarning,
    TrainSettings,
    kernel_learning_rate,
    load_checkpoint,
    train_and_track,
)

TASK = synthetic_regression(n_train=6, n_test=4, input_dim=2, min_len=3, max_len=5, seed=1)


def _train(ckpt, steps=20, lr_scale=1.0, config_hash=None, strict=False, progress=None):
    model = ElmanRNN(Architecture(), 2, 16, seed=0)
    theta0 = empirical_ntk(model, TASK.x_train)
    lr = kernel_learning_rate(theta0, lr_scale)
    return train_and_track(
        model,
        (model.prepare(TASK.x_train), TASK.y_train),
        (model.prepare(TASK.x_test), TASK.y_test),
        model.prepare(TASK.x_train[:3]),
        TrainSettings(steps=steps, lr=lr, record_every=5, checkpoint_every=5),
        checkpoint_path=str(ckpt),
        config_hash=config_hash,
        strict_checkpoint=strict,
        progress=progress,
    )


class _Planted:
    """Unpickling this would create the marker file (what a planted checkpoint does)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _interrupted(ckpt, **kw):
    def die(step):
        if step == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(ckpt, progress=die, **kw)


def test_planted_pickle_checkpoint_runs_nothing_and_restarts(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "checkpoint_seed0.pt"
    torch.save({"step": 5, "params": _Planted(str(marker))}, ckpt)
    assert not marker.exists()
    clean = _train(tmp_path / "clean.pt")
    with pytest.warns(CheckpointWarning, match="refused to unpickle"):
        hist = _train(ckpt)
    assert not marker.exists()
    assert hist.train_loss == clean.train_loss  # started afresh, same run as a clean one
    ck, why = load_checkpoint(ckpt)  # the file was overwritten by a real checkpoint
    assert why is None and ck["step"] == 20
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        torch.save({"step": 5, "params": _Planted(str(marker))}, ckpt)
        _train(ckpt, strict=True)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"garbage \x00\x01 not a checkpoint", b"PK\x03\x04xx"])
def test_garbage_checkpoint_restarts_with_one_line_warning(tmp_path, content):
    ckpt = tmp_path / "ck.pt"
    ckpt.write_bytes(content)
    clean = _train(tmp_path / "clean.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hist = _train(ckpt)
    msgs = [str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)]
    assert len(msgs) == 1 and "\n" not in msgs[0] and "unreadable" in msgs[0], msgs
    assert hist.train_loss == clean.train_loss
    with pytest.raises(CheckpointError, match="unreadable"):
        ckpt.write_bytes(content)
        _train(ckpt, strict=True)


def test_config_mismatch_restarts_and_match_resumes(tmp_path):
    ckpt = tmp_path / "ck.pt"
    clean = _train(tmp_path / "clean.pt", lr_scale=0.5, config_hash="b")
    _interrupted(ckpt, lr_scale=1.0, config_hash="a")
    with pytest.warns(CheckpointWarning, match="another configuration"):
        hist = _train(ckpt, lr_scale=0.5, config_hash="b")
    assert hist.train_loss == clean.train_loss  # not the old run's weights
    # the same configuration resumes (and reproduces an uninterrupted run)
    ckpt2 = tmp_path / "ck2.pt"
    _interrupted(ckpt2, config_hash="b", lr_scale=0.5)
    assert load_checkpoint(ckpt2, "b")[0]["step"] == 10
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        resumed = _train(ckpt2, lr_scale=0.5, config_hash="b")
    torch.testing.assert_close(
        torch.tensor(resumed.train_loss), torch.tensor(clean.train_loss), rtol=1e-12, atol=1e-14
    )
    with pytest.raises(CheckpointError, match="another configuration"):
        _train(ckpt2, lr_scale=1.0, config_hash="c", strict=True)


def test_checkpoint_loads_to_cpu_whatever_device_wrote_it(tmp_path, monkeypatch):
    ckpt = tmp_path / "ck.pt"
    _interrupted(ckpt)
    seen = {}
    real = torch.load

    def spy(*args, **kw):
        seen.update(kw)
        return real(*args, **kw)

    monkeypatch.setattr(torch, "load", spy)
    ck, why = load_checkpoint(ckpt)
    assert why is None and seen["weights_only"] is True and seen["map_location"] == "cpu"
    assert ck["ntk0"].device.type == "cpu"


# ---------------------------------------------------------------------------- data files
def _err(path) -> str:
    with pytest.raises(ValueError) as info:
        load_sequences(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def test_data_pickled_objects_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    pt = tmp_path / "x.pt"
    torch.save({"x": _Planted(str(marker))}, pt)
    assert "pickle" in _err(pt).lower()
    npy = tmp_path / "x.npy"
    np.save(npy, np.array([_Planted(str(marker))], dtype=object), allow_pickle=True)
    assert "pickle" in _err(npy).lower() or "object" in _err(npy).lower()
    assert not marker.exists()


def test_data_malformed_files(tmp_path):
    for name, content in (("x.pt", b"\x80\x02garbage"), ("x.npy", b"not numpy"), ("x.npz", b"zz")):
        p = tmp_path / name
        p.write_bytes(content)
        _err(p)
    p = tmp_path / "s.pt"
    torch.save({"x": "a string"}, p)
    _err(p)


@pytest.mark.parametrize(
    "value, word", [(1e200, "range"), (float("nan"), "finite"), (float("inf"), "finite")]
)
def test_data_values_are_finite_and_in_range(tmp_path, value, word):
    x = np.random.default_rng(0).normal(size=(3, 4, 2))
    x[1, 2, 0] = value
    for suffix in ("npy", "npz", "pt"):
        p = tmp_path / f"x.{suffix}"
        if suffix == "npy":
            np.save(p, x)
        elif suffix == "npz":
            np.savez(p, x=x)
        else:
            torch.save({"x": torch.from_numpy(x)}, p)
        assert word in _err(p)


def test_data_range_limit_is_configurable(tmp_path):
    x = np.full((2, 3, 1), 5e6)
    p = tmp_path / "x.npy"
    np.save(p, x)
    assert "range" in _err(p)
    assert load_sequences(p, max_abs=1e7).n == 2


def test_data_shape_is_checked(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.zeros((3, 4, 2, 1)))
    _err(p)
    np.save(p, np.zeros((0, 4, 2)))
    _err(p)
