"""A run's identity: its configuration with the resolved device, backend and precision, never
its labels, so finished runs are found whatever they were called and GPU runs never resume
into CPU folders."""

from __future__ import annotations

import torch

from experiments.common.records import identity_hash, record_hash
from experiments.common.schema import ArchConfig, BackendChoice, DeviceChoice, DTypeChoice
from experiments.convergence.schema import ConvergenceConfig
from experiments.drift.schema import DriftConfig
from experiments.uci.run import identity as uci_identity
from experiments.uci.schema import UCIConfig
from rntk_empirical.analytic import numba_backend


def test_labels_do_not_enter_the_hash_but_the_configuration_does():
    a = ConvergenceConfig(name="mine", arch=ArchConfig(name="anything"))
    b = ConvergenceConfig(name="relu_last-random")
    assert identity_hash(a.identity()) == identity_hash(b.identity())
    c = ConvergenceConfig(arch=ArchConfig(sigma_w=1.0))
    assert identity_hash(c.identity()) != identity_hash(b.identity())
    d = DriftConfig(name="x", arch=ArchConfig(name="y"))
    assert identity_hash(d.identity()) == identity_hash(DriftConfig().identity())


def test_identity_holds_the_resolved_device(monkeypatch):
    cpu = ConvergenceConfig().identity()
    assert cpu["device"] == "cpu"  # device=auto on a machine without CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = ConvergenceConfig(width=4096)
    assert gpu.identity()["device"] == "cuda"
    # too small to amortize GPU launches (N = 8, T = 5): device=auto stays on the CPU
    assert ConvergenceConfig(width=256).identity()["device"] == "cpu"
    assert ConvergenceConfig(width=256, device=DeviceChoice.cuda).identity()["device"] == "cuda"
    assert identity_hash(gpu.identity()) != identity_hash(cpu)
    assert DriftConfig().identity()["device"] == "cuda"


def test_records_of_the_previous_format_are_found():
    """Older records hashed their labels and stored device 'auto'; the index recomputes."""
    ident = {**ConvergenceConfig().identity(), "device": "auto", "name": "old", "arch_name": "o"}
    legacy = {"identity": ident, "config_hash": "0123456789abcdef", "device": {"resolved": "cpu"}}
    assert record_hash(legacy) == identity_hash(ConvergenceConfig().identity())


def test_uci_identity_names_device_backend_and_arithmetic():
    ident = uci_identity(UCIConfig())
    numba_ok = numba_backend.available()
    assert numba_ok  # the fast extra is part of the test set-up (CI installs it)
    assert (ident["device"], ident["backend"], ident["arithmetic"]) == ("cpu", "numba", "float64")
    torch32 = uci_identity(UCIConfig(backend=BackendChoice.torch, dtype=DTypeChoice.float32))
    assert (torch32["backend"], torch32["arithmetic"]) == ("torch", "float32")
    assert UCIConfig().dtype.value == "float64"  # float32 arithmetic only when asked for


def test_fields_a_network_does_not_use_never_separate_runs():
    """ema_decay counts only for the ema readout, gate and cell only for a gated cell: two
    configurations that build the same network share one identity (and runs recorded
    before those fields existed keep theirs); fields that change the network separate."""
    from rntk_empirical import Architecture

    base = Architecture()
    assert base.identity() == Architecture(ema_decay=0.3).identity()
    assert base.identity() == Architecture(gate="erf").identity()
    assert set(base.to_dict()) - set(base.identity()) == {"ema_decay", "gate", "cell"}
    ema = Architecture(readout="ema")
    assert ema.identity() != Architecture(readout="ema", ema_decay=0.3).identity()
    gru = Architecture(cell="gru")
    assert gru.identity()["cell"] == "gru"
    assert gru.identity() != Architecture(cell="gru", gate="erf").identity()
