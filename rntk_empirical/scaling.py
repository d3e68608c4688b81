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

Width-length laws (the second half): a statistic y(T, n) over a grid of sequence lengths T
and widths n (:class:`WidthLengthLaw`, :data:`DEVIATION_LAWS`, :data:`VAR_LOG_LAWS`), fitted
on log y (:func:`fit_law`), compared by held-out prediction (:func:`compare_laws`),
bootstrapped over seeds within cells (:func:`bootstrap_law` -> :class:`FittedLaw`), and
inverted by :func:`required_width`: the width at which a typical network's NTK is within a
tolerance of the RNTK at length T, from the committed fit ``data/length_width_laws.json``
(``docs/length_width.md``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rntk_empirical.architecture import Architecture

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


# ---------------------------------------------------------------------------- width-length laws
# A statistic y(T, n) of the finite-width NTK at sequence length T and width n (a quantile of
# the per-network relative deviation, or Var[log Theta_hat(x, x)]) as a function of both.
# Every law is fitted by least squares on log y over the cells of a grid; its positive
# constants are fitted on the log scale (log_c, log_xi, log_k).


def _log_expm1_ratio(u: np.ndarray) -> np.ndarray:
    """log((exp(u) - 1) / u) for u >= 0: 0 at u = 0, u - log u for large u (no overflow)."""
    u = np.asarray(u, dtype=np.float64)
    small = np.clip(u, 1e-300, 30.0)
    return np.where(u > 30.0, u - np.log(np.maximum(u, 30.0)), np.log(np.expm1(small) / small))


def _saturated_length(log_T: np.ndarray, log_xi: float) -> np.ndarray:
    """log of xi (1 - exp(-T/xi)): ~ log T for T << xi, -> log xi for T >> xi."""
    xi = np.exp(log_xi)
    return log_xi + np.log(-np.expm1(-np.exp(log_T) / xi))


@dataclass(frozen=True)
class WidthLengthLaw:
    """A candidate law log y = f(theta; log T, log n) with an inverse in n.

    Attributes:
        name: short identifier (the key stored in fitted-law files).
        params: names of the parameters theta (``log_*`` ones are logs of positive constants).
        formula: the law in words, for tables and documentation.
    """

    name: str
    params: tuple[str, ...]
    formula: str

    def log_predict(self, theta: Sequence[float], T, n) -> np.ndarray:
        """log y at lengths ``T`` and widths ``n`` (broadcast arrays)."""
        lT = np.log(np.asarray(T, dtype=np.float64))
        ln = np.log(np.asarray(n, dtype=np.float64))
        t = [np.asarray(v, dtype=np.float64) for v in theta]
        if self.name == "sqrt_T_over_n":
            return t[0] + 0.5 * (lT - ln)
        if self.name == "T_power_a":
            return t[0] + t[1] * lT - 0.5 * ln
        if self.name == "T_power_a_n_power_b":
            return t[0] + t[1] * lT - t[2] * ln
        if self.name == "saturation":
            return t[0] + 0.5 * (_saturated_length(lT, t[1]) - ln)
        if self.name == "lognormal":
            u = np.exp(t[1] + lT - ln)  # k T / n
            return t[0] + 0.5 * (lT - ln) + 0.5 * _log_expm1_ratio(u)
        if self.name == "lognormal_median":
            r = np.exp(0.5 * (t[1] + lT - ln))  # sqrt(k T / n)
            return t[0] - 0.5 * t[1] + np.log(np.expm1(np.minimum(r, 700.0)))
        if self.name == "var_log_T_over_n":
            return t[0] + lT - ln
        if self.name == "var_log_T_power_a":
            return t[0] + t[1] * lT - ln
        if self.name == "var_log_saturation":
            return t[0] + _saturated_length(lT, t[1]) - ln
        raise ValueError(f"unknown law {self.name!r}")

    def width_for(self, theta: Sequence[float], T, y) -> np.ndarray:
        """The width n at which the law reaches ``y`` at length ``T`` (its inverse in n)."""
        lT = np.log(np.asarray(T, dtype=np.float64))
        ly = np.log(np.asarray(y, dtype=np.float64))
        t = [float(v) for v in theta]
        if self.name == "sqrt_T_over_n":
            return np.exp(2 * (t[0] - ly) + lT)
        if self.name == "T_power_a":
            return np.exp(2 * (t[0] + t[1] * lT - ly))
        if self.name == "T_power_a_n_power_b":
            return np.exp((t[0] + t[1] * lT - ly) / t[2])
        if self.name == "saturation":
            return np.exp(2 * (t[0] - ly) + _saturated_length(lT, t[1]))
        if self.name == "lognormal":
            # y^2 = c^2 (exp(k T / n) - 1) / k  <=>  n = k T / log(1 + k y^2 / c^2)
            return np.exp(t[1] + lT) / np.log1p(np.exp(t[1] + 2 * (ly - t[0])))
        if self.name == "lognormal_median":
            # sqrt(k T / n) = log(1 + y sqrt(k) / c)
            return np.exp(t[1] + lT) / np.log1p(np.exp(ly + 0.5 * t[1] - t[0])) ** 2
        if self.name == "var_log_T_over_n":
            return np.exp(t[0] + lT - ly)
        if self.name == "var_log_T_power_a":
            return np.exp(t[0] + t[1] * lT - ly)
        if self.name == "var_log_saturation":
            return np.exp(t[0] + _saturated_length(lT, t[1]) - ly)
        raise ValueError(f"unknown law {self.name!r}")


DEVIATION_LAWS: tuple[WidthLengthLaw, ...] = (
    WidthLengthLaw("sqrt_T_over_n", ("log_c",), "y = c sqrt(T / n)"),
    WidthLengthLaw("T_power_a", ("log_c", "a"), "y = c T^a n^(-1/2)"),
    WidthLengthLaw("T_power_a_n_power_b", ("log_c", "a", "b"), "y = c T^a n^(-b)"),
    WidthLengthLaw("saturation", ("log_c", "log_xi"), "y = c sqrt(xi (1 - exp(-T / xi)) / n)"),
    WidthLengthLaw("lognormal", ("log_c", "log_k"), "y = c sqrt((exp(k T / n) - 1) / k)"),
    WidthLengthLaw(
        "lognormal_median", ("log_c", "log_k"), "y = c (exp(sqrt(k T / n)) - 1) / sqrt(k)"
    ),
)
VAR_LOG_LAWS: tuple[WidthLengthLaw, ...] = (
    WidthLengthLaw("var_log_T_over_n", ("log_k",), "Var[log Theta_hat] = k T / n"),
    WidthLengthLaw("var_log_T_power_a", ("log_k", "a"), "Var[log Theta_hat] = k T^a / n"),
    WidthLengthLaw(
        "var_log_saturation",
        ("log_k", "log_xi"),
        "Var[log Theta_hat] = k xi (1 - exp(-T / xi)) / n",
    ),
)
LAWS: dict[str, WidthLengthLaw] = {law.name: law for law in DEVIATION_LAWS + VAR_LOG_LAWS}


# Laws linear in theta: log y = X theta + offset; the columns of X and the offset.
_LINEAR = {
    "sqrt_T_over_n": (lambda lT, ln: [np.ones_like(lT)], lambda lT, ln: 0.5 * (lT - ln)),
    "T_power_a": (lambda lT, ln: [np.ones_like(lT), lT], lambda lT, ln: -0.5 * ln),
    "T_power_a_n_power_b": (lambda lT, ln: [np.ones_like(lT), lT, -ln], lambda lT, ln: 0 * lT),
    "var_log_T_over_n": (lambda lT, ln: [np.ones_like(lT)], lambda lT, ln: lT - ln),
    "var_log_T_power_a": (lambda lT, ln: [np.ones_like(lT), lT], lambda lT, ln: -ln),
}
# Laws (log_c, s) with log y = log_c + g(s; T, n): bounds of s = log xi or log k. At the upper
# bound of log xi (lower of log k) the law is the sqrt(T/n) law within the fit's precision.
PROFILE_BOUNDS = {
    "saturation": (math.log(0.25), math.log(1e6)),
    "var_log_saturation": (math.log(0.25), math.log(1e6)),
    "lognormal": (math.log(1e-6), math.log(1e3)),
    "lognormal_median": (math.log(1e-6), math.log(1e3)),
}


def fit_law(law: WidthLengthLaw, T, n, y) -> np.ndarray:
    """Least-squares fit of ``log y = law(theta; T, n)`` over cells; returns theta.

    Laws linear in theta are solved exactly; the two-parameter nonlinear ones are profiled:
    the scale log_c is linear, the other parameter is minimized over the range
    :data:`PROFILE_BOUNDS` (a grid refined around its best point), so the fit is global.

    Args:
        T, n, y: 1-D arrays over the cells (lengths, widths, statistic values > 0).

    Raises:
        ValueError: shapes differ, values are not finite and > 0, or fewer cells than
            parameters.
    """
    T, n, y = (np.asarray(v, dtype=np.float64).ravel() for v in (T, n, y))
    if not (T.shape == n.shape == y.shape):
        raise ValueError("T, n and y must have the same number of cells")
    if not (np.all(np.isfinite(y)) and np.all(y > 0) and np.all(T > 0) and np.all(n > 0)):
        raise ValueError("a width-length law needs finite values > 0 at T, n > 0")
    if len(y) < len(law.params):
        raise ValueError(f"law {law.name} has {len(law.params)} parameters but only {len(y)} cells")
    lT, ln, ly = np.log(T), np.log(n), np.log(y)
    if law.name in _LINEAR:
        cols, offset = _LINEAR[law.name]
        X = np.stack(cols(lT, ln), axis=1)
        theta, *_ = np.linalg.lstsq(X, ly - offset(lT, ln), rcond=None)
        return theta

    def profile(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sum of squares and best log_c at every candidate ``s`` ``(G,)``."""
        g = law.log_predict((0.0, s[:, None]), T, n)  # (G, cells)
        log_c = np.mean(ly - g, axis=1)
        return np.sum((g + log_c[:, None] - ly) ** 2, axis=1), log_c

    lo, hi = PROFILE_BOUNDS[law.name]
    grid = np.linspace(lo, hi, 61)
    for _ in range(6):  # refine around the best point: resolution (hi - lo) / 60 / 20^5
        sse, log_c = profile(grid)
        k = int(np.argmin(np.where(np.isfinite(sse), sse, np.inf)))
        s_best, c_best = grid[k], log_c[k]
        grid = np.linspace(grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)], 41)
    return np.array([c_best, s_best])


@dataclass(frozen=True)
class LawComparison:
    """Held-out prediction of one law: fitted on the ``train`` cells, scored on the rest.

    Attributes:
        law: the law's name; theta: fitted on the training cells.
        rms_train, rms_heldout: root mean square of log(predicted / measured) over the
            training and the held-out cells (0.1 = about 10% off).
        worst_heldout: the held-out cell (T, n, log error) with the largest |log error|.
    """

    law: str
    theta: tuple[float, ...]
    rms_train: float
    rms_heldout: float
    worst_heldout: tuple[float, float, float]


def compare_laws(laws: Sequence[WidthLengthLaw], T, n, y, train: np.ndarray) -> list[LawComparison]:
    """Fit every law on the cells where ``train`` is True, predict the others.

    Returns the comparisons sorted by held-out RMS log error (best first)."""
    T, n, y = (np.asarray(v, dtype=np.float64).ravel() for v in (T, n, y))
    train = np.asarray(train, dtype=bool).ravel()
    if train.all() or not train.any():
        raise ValueError("the split needs both training and held-out cells")
    out = []
    for law in laws:
        theta = fit_law(law, T[train], n[train], y[train])
        err = law.log_predict(theta, T, n) - np.log(y)
        err = np.where(np.isfinite(err), err, np.inf)
        held = np.flatnonzero(~train)
        k = held[np.argmax(np.abs(err[held]))]
        out.append(
            LawComparison(
                law=law.name,
                theta=tuple(float(v) for v in theta),
                rms_train=float(np.sqrt(np.mean(err[train] ** 2))),
                rms_heldout=float(np.sqrt(np.mean(err[~train] ** 2))),
                worst_heldout=(float(T[k]), float(n[k]), float(err[k])),
            )
        )
    return sorted(out, key=lambda c: c.rms_heldout)


@dataclass(frozen=True)
class FittedLaw:
    """A width-length law fitted to a grid, with bootstrap intervals over seeds.

    Attributes:
        law: the law's name (a key of :data:`LAWS`); target: the statistic it predicts
            (``median``, ``q90``, ``mean`` of the per-network relative deviation, or
            ``var_log``).
        theta: fitted on every cell; ci_low, ci_high: percentile bootstrap intervals.
        cov: bootstrap covariance of theta (used for the intervals of derived quantities).
        lengths, widths: the (min, max) of the measured grid (the supported range).
        rms: RMS log error of the fit over the cells; rms_heldout: of the held-out
            comparison that selected the law (nan if none).
        n_boot, level: bootstrap replicates that converged, and the interval level.
    """

    law: str
    target: str
    theta: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]
    cov: tuple[tuple[float, ...], ...]
    lengths: tuple[float, float]
    widths: tuple[float, float]
    rms: float
    rms_heldout: float = float("nan")
    n_boot: int = 0
    level: float = 0.95

    @property
    def spec(self) -> WidthLengthLaw:
        return LAWS[self.law]

    def predict(self, T, n) -> np.ndarray:
        """The fitted statistic at lengths ``T`` and widths ``n``."""
        return np.exp(self.spec.log_predict(self.theta, T, n))

    def constants(self) -> dict[str, tuple[float, float, float]]:
        """name -> (value, low, high), ``log_*`` parameters exponentiated (``log_c`` -> ``c``)."""
        out = {}
        for name, v, lo, hi in zip(self.spec.params, self.theta, self.ci_low, self.ci_high):
            if name.startswith("log_"):
                out[name[4:]] = (math.exp(v), math.exp(lo), math.exp(hi))
            else:
                out[name] = (v, lo, hi)
        return out

    def width_for(
        self, T: float, y: float, draws: int = 4000, seed: int = 0
    ) -> tuple[float, float, float]:
        """``(n, low, high)``: the width reaching ``y`` at length ``T``, and its interval at
        ``level`` from parameters drawn from N(theta, cov)."""
        n = float(self.spec.width_for(self.theta, T, y))
        cov = np.asarray(self.cov, dtype=np.float64)
        if not np.all(np.isfinite(cov)) or self.n_boot == 0:
            return n, float("nan"), float("nan")
        rng = np.random.default_rng(seed)
        th = rng.multivariate_normal(np.asarray(self.theta), cov, size=draws)
        ns = np.array([self.spec.width_for(t, T, y) for t in th], dtype=np.float64)
        ns = ns[np.isfinite(ns) & (ns > 0)]
        lo, hi = np.quantile(ns, [(1 - self.level) / 2, (1 + self.level) / 2])
        return n, float(lo), float(hi)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> FittedLaw:
        d = dict(d)
        for k in ("theta", "ci_low", "ci_high", "lengths", "widths"):
            d[k] = tuple(d[k])
        d["cov"] = tuple(tuple(r) for r in d["cov"])
        return cls(**d)


def bootstrap_law(
    law: WidthLengthLaw,
    cells: Sequence[tuple[float, float, np.ndarray]],
    statistic: Statistic,
    *,
    target: str,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    rms_heldout: float = float("nan"),
) -> FittedLaw:
    """Fit ``law`` to ``statistic`` of every cell and bootstrap it over seeds.

    Args:
        cells: ``(T, n, items)`` with items the per-seed values ``(S, ...)`` of one cell.
        statistic: ``(S, ...)`` items -> the cell's value (> 0).
        target: the statistic's name, stored with the law.
        n_boot: replicates: seeds are resampled with replacement within every cell (cells
            are independent runs) and the law refitted.

    Raises:
        ValueError: a statistic that is not > 0 on the full data (see :func:`fit_law`).
    """
    T = np.array([c[0] for c in cells], dtype=np.float64)
    n = np.array([c[1] for c in cells], dtype=np.float64)
    items = [np.asarray(c[2]) for c in cells]
    y = np.array([statistic(it) for it in items], dtype=np.float64)
    theta = fit_law(law, T, n, y)
    rms = float(np.sqrt(np.mean((law.log_predict(theta, T, n) - np.log(y)) ** 2)))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        yb = np.array([statistic(it[rng.integers(0, it.shape[0], it.shape[0])]) for it in items])
        if np.all(np.isfinite(yb) & (yb > 0)):
            draws.append(fit_law(law, T, n, yb))
    k = len(theta)
    if len(draws) >= 2:
        d = np.array(draws)
        lo, hi = np.quantile(d, [(1 - level) / 2, (1 + level) / 2], axis=0)
        cov = np.atleast_2d(np.cov(d, rowvar=False))
    else:
        lo = hi = np.full(k, np.nan)
        cov = np.full((k, k), np.nan)
    return FittedLaw(
        law=law.name,
        target=target,
        theta=tuple(float(v) for v in theta),
        ci_low=tuple(float(v) for v in lo),
        ci_high=tuple(float(v) for v in hi),
        cov=tuple(tuple(float(v) for v in r) for r in cov),
        lengths=(float(T.min()), float(T.max())),
        widths=(float(n.min()), float(n.max())),
        rms=rms,
        rms_heldout=rms_heldout,
        n_boot=len(draws),
        level=level,
    )


# ---------------------------------------------------------------------------- required width
LAWS_FILE = Path(__file__).parent / "data" / "length_width_laws.json"
QUANTILES = ("median", "q90", "mean")


@dataclass(frozen=True)
class RequiredWidth:
    """Answer of :func:`required_width`.

    Attributes:
        width: the fitted law's width (not rounded); low, high: its bootstrap interval.
        phase: the measured phase that matched the architecture; law: the law used.
        quantile: which statistic of the per-network deviation was targeted.
    """

    width: float
    low: float
    high: float
    phase: str
    law: str
    quantile: str


def _same_arch(stored: Mapping[str, Any], arch: Mapping[str, Any]) -> bool:
    # a field added to Architecture after the laws were measured is at its default there
    stored = {**Architecture().to_dict(), **stored}
    if set(stored) != set(arch):
        return False
    for k, v in stored.items():
        w = arch[k]
        if isinstance(v, float) or isinstance(w, float):
            if not math.isclose(float(v), float(w), rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif v != w:
            return False
    return True


def load_length_width_laws(path: str | Path | None = None) -> dict:
    """The fitted width-length laws (default: the committed :data:`LAWS_FILE`)."""
    p = Path(path) if path is not None else LAWS_FILE
    if not p.is_file():
        raise FileNotFoundError(f"no fitted width-length laws at {p}")
    return json.loads(p.read_text())


def required_width(
    arch: Any,
    T: float,
    tolerance: float,
    quantile: str = "median",
    laws: Mapping | str | Path | None = None,
) -> RequiredWidth:
    r"""The width at which the ``quantile`` of the per-network relative deviation
    ||Theta_hat - Theta||_F / ||Theta||_F at length ``T`` equals ``tolerance``, from the
    width-length law fitted to the measurements (``docs/length_width.md``).

    Args:
        arch: an :class:`~rntk_empirical.architecture.Architecture` (or its ``to_dict()``);
            it must equal one of the measured phases in every field.
        T: sequence length; tolerance: relative deviation in (0, 1).
        quantile: ``median`` (typical network), ``q90`` (9 networks in 10) or ``mean``.
        laws: the fitted laws (a dict as in the JSON file, or its path; default the
            committed file).

    Raises:
        ValueError: an architecture that was not measured, a bad quantile or tolerance, a
            length outside the measured lengths (unless the law saturated at a memory length
            well inside them), or a width outside the measured widths (below the smallest,
            or above ``max_width_extrapolation`` times the largest).
    """
    if quantile not in QUANTILES:
        raise ValueError(f"quantile={quantile!r}; use one of {', '.join(QUANTILES)}")
    if not (0.0 < tolerance < 1.0):
        raise ValueError(f"tolerance={tolerance!r} must lie in (0, 1)")
    if not (T >= 1):
        raise ValueError(f"T={T!r} must be >= 1")
    data = laws if isinstance(laws, Mapping) else load_length_width_laws(laws)
    a = arch.to_dict() if hasattr(arch, "to_dict") else dict(arch)
    entry = next((e for e in data["entries"] if _same_arch(e["arch"], a)), None)
    if entry is None:
        measured = ", ".join(f"{e['phase']} ({e['arch']['readout']})" for e in data["entries"])
        raise ValueError(
            "no width-length law was measured for this architecture; measured (every other "
            f"field at its default): {measured}"
        )
    fit = FittedLaw.from_dict(entry["laws"][quantile])
    name = f"{entry['phase']} ({a['readout']} readout, {quantile})"
    t_lo, t_hi = fit.lengths
    if T < t_lo:
        raise ValueError(f"T={T:g} is below the measured lengths [{t_lo:g}, {t_hi:g}] of {name}")
    if T > t_hi:
        xi_hi = math.exp(fit.ci_high[1]) if fit.law == "saturation" else math.inf
        if not (3 * xi_hi <= t_hi):
            raise ValueError(
                f"T={T:g} is beyond the measured lengths [{t_lo:g}, {t_hi:g}] of {name} and "
                f"its law ({fit.law}) did not saturate inside them: outside the supported range"
            )
    width, lo, hi = fit.width_for(T, tolerance)
    n_lo, n_hi = fit.widths
    factor = float(data.get("max_width_extrapolation", 1.0))
    if not (width >= n_lo):
        raise ValueError(
            f"{name}: the law puts the width for tolerance {tolerance:g} at T={T:g} below the "
            f"smallest measured width {n_lo:g} ({width:.3g}); outside the supported range"
        )
    if not (width <= factor * n_hi):
        raise ValueError(
            f"{name}: the law puts the width for tolerance {tolerance:g} at T={T:g} at "
            f"{width:.3g}, beyond {factor:g} x the largest measured width {n_hi:g}: outside "
            "the supported range"
        )
    return RequiredWidth(width, lo, hi, entry["phase"], fit.law, quantile)
