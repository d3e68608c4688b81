"""The convergence report interprets its exponent: an interval that excludes -1/2 is said so,
with the fit of the next order e = A n^-1/2 + B n^-1 that shows whether the data support the
leading order."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from experiments.convergence.report import NextOrder, interpret
from rntk_empirical.scaling import bootstrap_power_law

WIDTHS = (64, 128, 256, 512, 1024, 2048, 4096)


def _fit(A: float, B: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    samples = {
        w: (A * w**-0.5 + B / w) * (1 + 0.02 * rng.standard_normal(6)) for w in WIDTHS
    }
    return bootstrap_power_law(samples, n_boot=400, seed=1)


def test_an_interval_excluding_one_half_gets_the_next_order():
    fit = _fit(A=1.0, B=8.0)  # the n^-1 term is half the error at n = 64
    assert fit.ci_high < -0.5  # steeper than the leading order at these widths
    note = interpret(fit, "the NTK error")
    assert note["excludes_leading_order"]
    nxt = note["next_order"]
    assert abs(nxt["A"] - 1.0) < 0.05 and abs(nxt["B"] - 8.0) < 0.8
    assert 0.45 < nxt["share_small"] < 0.55 and nxt["share_large"] < 0.15
    assert nxt["rms_two_term"] < 0.5 * nxt["rms_power_law"]
    assert "excludes -1/2 (steeper than the leading order" in note["text"]
    assert note["text"].endswith("the data support n^-1/2 as the leading order with a "
                                 "finite-width correction")  # fmt: skip


def test_an_interval_containing_one_half_is_the_leading_order():
    fit = _fit(A=1.0, B=0.0)
    assert fit.covers(-0.5)
    note = interpret(fit, "the NTK error")
    assert not note["excludes_leading_order"] and "next_order" not in note
    assert "contains -1/2: consistent with the leading order n^-1/2" in note["text"]


def test_the_next_order_fit_is_exact_on_its_own_model():
    w = np.asarray(WIDTHS, dtype=float)
    fit = replace(_fit(A=0.7, B=-3.0, seed=2), values=tuple(0.7 * w**-0.5 - 3.0 / w))
    exact = NextOrder.fit(fit)
    assert abs(exact.A - 0.7) < 1e-12 and abs(exact.B + 3.0) < 1e-9
    assert exact.rms_two_term < 1e-12
