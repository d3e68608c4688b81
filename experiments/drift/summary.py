"""Per-seed drift records reduced to one number per quantity (reports and figures)."""

from __future__ import annotations

import math

from rntk_empirical.training import THETA0_QUANTITIES


def final_value(entry: dict, quantity: str) -> float | None:
    """A seed's ``quantity`` at its last recorded step, or None when it is not meaningful:
    the network diverged, or the quantity uses GD with Theta_0 at a step that is unstable
    for Theta_0 (``lin_stable`` false), or the value is not finite."""
    h = entry["history"]
    if h["diverged"] or not h.get(quantity):
        return None
    if quantity in THETA0_QUANTITIES and not entry.get("lin_stable", True):
        return None
    v = float(h[quantity][-1])
    return v if math.isfinite(v) else None


FINAL_KEYS = (
    "ntk_drift",
    "kernel_distance",
    "weight_change_total",
    "dist_linearized",
    "dist_kernel_empirical",
    "dist_kernel_analytic",
    "dist_lin_vs_kernel_empirical",
    "train_loss",
    "test_loss",
)


def summarize(per_seed: list[dict]) -> dict[str, float]:
    """Mean over the seeds where it is meaningful (:func:`final_value`) of each quantity."""
    out: dict[str, float] = {
        "diverged": sum(e["history"]["diverged"] for e in per_seed),
        "lin_unstable": sum(not e.get("lin_stable", True) for e in per_seed),
    }
    for k in FINAL_KEYS:
        vals = [v for e in per_seed if (v := final_value(e, k)) is not None]
        out[k] = sum(vals) / len(vals) if vals else float("nan")
    return out
