r"""Power-law fits err(n) ~ C n^p on log-log axes, with a bootstrap interval over seeds.

At each width n_j there are S_j independent networks (seeds) and one item per seed (its
error, or its kernel matrix). A statistic maps the items at one width to a positive number
e_j (the mean per-network error; the error of the seed-averaged kernel; ...). The exponent
is the least-squares slope of

    log e_j = log C + p log n_j ,

and its confidence interval is a percentile bootstrap: resample the seeds with replacement
within every width (widths are independent experiments), recompute every e_j, refit, and
take the (1 - level)/2 and (1 + level)/2 quantiles of the refitted slopes. The same draws
give a percentile interval for each e_j.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

Statistic = Callable[[np.ndarray], float]


def _mean(items: np.ndarray) -> float:
    return float(np.mean(items))


def fit_power_law(widths: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of ``log values = intercept + exponent * log widths``.

    Returns:
        ``(exponent, intercept)`` with ``intercept`` = log C (natural log).

    Raises:
        ValueError: fewer than two distinct widths, or a value that is not finite and > 0.
    """
    x = np.asarray(widths, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("widths and values must be 1-D sequences of the same length")
    if len(np.unique(x)) < 2:
        raise ValueError("a power-law fit needs at least two distinct widths")
    if not (np.all(np.isfinite(y)) and np.all(y > 0) and np.all(x > 0)):
        raise ValueError("a log-log fit needs finite values > 0 at widths > 0")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope), float(intercept)


@dataclass(frozen=True)
class PowerLawFit:
    """A fitted power law e(n) = exp(intercept) n^exponent and its bootstrap intervals.

    Attributes:
        exponent, intercept: the fit to the full-data statistics ``values``.
        ci_low, ci_high: percentile bootstrap interval of the exponent at ``level``.
        widths, n_seeds, values: per width, sorted by width.
        value_low, value_high: per-width percentile intervals of the statistic.
        n_boot: bootstrap replicates drawn; n_valid: replicates in which every statistic
            was > 0 (only those are refitted).
    """

    exponent: float
    intercept: float
    ci_low: float
    ci_high: float
    level: float
    widths: tuple[int, ...]
    n_seeds: tuple[int, ...]
    values: tuple[float, ...]
    value_low: tuple[float, ...]
    value_high: tuple[float, ...]
    n_boot: int
    n_valid: int

    def predict(self, widths: Sequence[float] | np.ndarray) -> np.ndarray:
        """The fitted curve exp(intercept) n^exponent at ``widths``."""
        return np.exp(self.intercept) * np.asarray(widths, dtype=np.float64) ** self.exponent

    def covers(self, exponent: float) -> bool:
        return self.ci_low <= exponent <= self.ci_high

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_power_law(
    samples: Mapping[int, Sequence | np.ndarray],
    statistic: Statistic = _mean,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> PowerLawFit:
    """Fit e(n) ~ C n^p and bootstrap the exponent over seeds (see the module docstring).

    Args:
        samples: width -> per-seed items, an array of shape ``(S_w, ...)`` (S_w >= 1).
        statistic: maps a ``(S, ...)`` array of items (possibly resampled, with repeats) to
            the value e at that width; default the mean (items are per-seed errors).
        n_boot: bootstrap replicates (0: no interval, ci_low = ci_high = nan).
        level: confidence level of the percentile intervals, in (0, 1).
        seed: of the resampling generator (the result is deterministic).

    Raises:
        ValueError: fewer than two widths, an empty width, a bad level, or a full-data
            statistic that is not > 0.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} must lie in (0, 1)")
    if n_boot < 0:
        raise ValueError(f"n_boot={n_boot!r} must be >= 0")
    widths = sorted(int(w) for w in samples)
    items = [np.asarray(samples[w]) for w in widths]
    for w, it in zip(widths, items):
        if it.ndim == 0 or it.shape[0] < 1:
            raise ValueError(f"width {w} has no seeds")
    values = np.array([statistic(it) for it in items], dtype=np.float64)
    exponent, intercept = fit_power_law(widths, values)

    rng = np.random.default_rng(seed)
    boot_vals = np.empty((n_boot, len(widths)))
    for j, it in enumerate(items):
        s = it.shape[0]
        idx = rng.integers(0, s, size=(n_boot, s))
        boot_vals[:, j] = [statistic(it[row]) for row in idx]
    valid = np.all(np.isfinite(boot_vals) & (boot_vals > 0), axis=1)
    x = np.log(np.asarray(widths, dtype=np.float64))
    if valid.any():
        # one least-squares slope per replicate, vectorized
        y = np.log(boot_vals[valid])
        xc = x - x.mean()
        slopes = (y - y.mean(1, keepdims=True)) @ xc / (xc @ xc)
        lo, hi = np.quantile(slopes, [(1 - level) / 2, (1 + level) / 2])
    else:
        lo = hi = np.nan
    if n_boot > 0:
        vlo, vhi = np.quantile(boot_vals, [(1 - level) / 2, (1 + level) / 2], axis=0)
    else:
        vlo = vhi = np.full(len(widths), np.nan)
    return PowerLawFit(
        exponent=exponent,
        intercept=intercept,
        ci_low=float(lo),
        ci_high=float(hi),
        level=level,
        widths=tuple(widths),
        n_seeds=tuple(int(it.shape[0]) for it in items),
        values=tuple(float(v) for v in values),
        value_low=tuple(float(v) for v in vlo),
        value_high=tuple(float(v) for v in vhi),
        n_boot=n_boot,
        n_valid=int(valid.sum()),
    )
