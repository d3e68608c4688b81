"""A fit that fails is reported as skipped with its reason (it used to crash the report)."""

from __future__ import annotations

import numpy as np

from experiments.convergence import report


def test_failing_fit_is_skipped_with_the_reason(monkeypatch):
    ser = report.Series(key="k", label="l", identity={})
    for w in (16, 64):
        err = {k: 0.5 / np.sqrt(w) for k in ("rel_fro", "rel_op", "rel_max")}
        ser.errors[w] = {s: {"ntk": err} for s in (0, 1)}

    def refuse(*args, **kwargs):
        raise ValueError("the statistic is not positive at width 16")

    monkeypatch.setattr(report, "bootstrap_power_law", refuse)
    report.fit_series([ser], n_boot=10)
    assert ser.fits == {}
    assert ser.skipped["ntk_rel_fro"] == "the statistic is not positive at width 16"
    assert ser.skipped["ntk_rel_op"] == "the statistic is not positive at width 16"
    assert ser.skipped["nngp_rel_fro"] == "not recorded"
    assert ser.skipped["ntk_mean_kernel_rel_fro"] == "not recorded"  # no kernels stored
