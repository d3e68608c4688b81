"""Long analytic calls say so: a compiled call estimated past PROGRESS_AFTER_SECONDS shows a
tqdm bar with the estimate; short ones print nothing."""

from __future__ import annotations

import torch

from rntk_empirical import Architecture, analytic_ntk
from rntk_empirical.analytic import api


def test_estimate_counts_the_cells_the_readout_needs():
    relu_avg = Architecture(readout="avg")
    # N = 64, T = 150, mean pooling: 64 * 65 / 2 pairs x 150^2 step pairs at 3e8 cells/s
    assert api.estimated_seconds(relu_avg, 64, 64, 150, True) == 64 * 65 / 2 * 150**2 / 3e8
    last = api.estimated_seconds(Architecture(), 10, 20, 50, False)
    assert last == 10 * 20 * 50 / 3e8
    tanh = Architecture(nonlinearity="tanh", depth=2, bidirectional=True)
    series = api.COMPILED_CELLS_PER_SECOND["series"]
    assert api.estimated_seconds(tanh, 10, 20, 50, False) == 4 * 10 * 20 * 50 / series


def test_a_long_call_shows_a_bar_and_a_short_one_nothing(monkeypatch, capsys):
    x = torch.randn(3, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    arch = Architecture(bidirectional=True)
    quiet = analytic_ntk(arch, x)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(api, "PROGRESS_AFTER_SECONDS", 0.0)
    shown = analytic_ntk(arch, x)
    err = capsys.readouterr().err
    assert "analytic kernels (~0 s estimated)" in err and "6/6" in err  # 3 rows, 2 directions
    assert torch.equal(quiet, shown)
