r"""Summary statistics of a classification benchmark over many data sets.

Every function takes an accuracy matrix ``acc`` of shape ``(D, M)``: row d holds the test
accuracies (fractions in [0, 1]) of the M methods on data set d. Methods are compared only
with the other methods of the same matrix (the "best" of a data set is the best column).
With ``best_d = max_m acc[d, m]``:

    friedman_ranks(acc)[m]    = mean_d rank_d(m)      rank 1 = highest accuracy on d,
                                                        tied methods share their mean rank
    p_within(acc, f)[m]       = 100 * #{d : acc[d, m] >= f * best_d} / D
                                (P90: f = 0.9, P95: f = 0.95)
    pma(acc)[m]               = mean_d 100 * acc[d, m] / best_d
                                (percentage of the maximum accuracy; a data set on which
                                 every method scores 0 counts as 100 for all of them)
    friedman_test(acc)        = Friedman chi-square test that all M methods have the same
                                rank distribution (the data sets are the blocks)

These are the statistics of Fernandez-Delgado et al. (2014) used by the RNTK papers for the
90 UCI classification data sets. Accuracies that agree to ``TIE_DECIMALS`` decimals count as
equal (ties in the ranks, "at least" in P90/P95), so that the last-bit noise of a mean over
folds cannot break a tie.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

TIE_DECIMALS = 10


@dataclass(frozen=True)
class FriedmanTest:
    """Result of :func:`friedman_test`: chi-square statistic, p-value and the table size."""

    statistic: float
    p_value: float
    n_datasets: int
    n_methods: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "statistic": self.statistic,
            "p_value": self.p_value,
            "n_datasets": self.n_datasets,
            "n_methods": self.n_methods,
        }


def check_accuracies(acc: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """``acc`` as a float64 ``(D, M)`` array; ValueError unless it is 2-D, non-empty, finite
    and within [0, 1]."""
    a = np.asarray(acc, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"acc must be a 2-D (n_datasets, n_methods) matrix, got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"acc needs at least one data set and one method, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("acc holds non-finite values (NaN or inf)")
    if a.min() < 0.0 or a.max() > 1.0:
        raise ValueError(
            f"accuracies must be fractions in [0, 1], got values in [{a.min():g}, {a.max():g}]"
        )
    return a


def _rounded(acc: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    return np.round(check_accuracies(acc), TIE_DECIMALS)


def rank_matrix(acc: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Per-data-set ranks ``(D, M)``: 1 = best accuracy on that row, ties get their mean rank."""
    return stats.rankdata(-_rounded(acc), method="average", axis=1)


def friedman_ranks(acc: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Average rank ``(M,)`` of each method over the ``D`` data sets (lower is better).

    The ranks of a row sum to M (M + 1) / 2, so the average ranks do too.
    """
    return rank_matrix(acc).mean(axis=0)


def p_within(acc: np.ndarray | Sequence[Sequence[float]], fraction: float) -> np.ndarray:
    """Percentage ``(M,)`` of data sets on which a method reaches ``fraction`` of the best.

    ``100 * mean_d [acc[d, m] >= fraction * max_m' acc[d, m']]``, in [0, 100]; ``fraction``
    in [0, 1] (0.9 gives P90, 0.95 gives P95).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    a = _rounded(acc)
    best = a.max(axis=1, keepdims=True)
    within = a >= np.round(fraction * best, TIE_DECIMALS)
    return 100.0 * within.mean(axis=0)


def pma(acc: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Percentage of the maximum accuracy ``(M,)``: ``mean_d 100 * acc[d, m] / best_d``.

    A data set whose best accuracy is 0 (every method at 0) contributes 100 for every
    method: each of them reaches the maximum there, as in :func:`p_within`.
    """
    a = check_accuracies(acc)
    best = a.max(axis=1, keepdims=True)
    safe = np.where(best > 0.0, best, 1.0)
    ratio = np.where(best > 0.0, a / safe, 1.0)
    return 100.0 * ratio.mean(axis=0)


def friedman_test(acc: np.ndarray | Sequence[Sequence[float]]) -> FriedmanTest | None:
    """Friedman test over the M methods with the D data sets as blocks
    (``scipy.stats.friedmanchisquare``, tie-corrected chi-square with M - 1 degrees of
    freedom).

    Returns None when it does not apply (fewer than 3 methods or fewer than 2 data sets).
    If every data set ties all methods, the statistic is 0 and the p-value 1 (scipy would
    return NaN: the tie correction divides by zero).
    """
    a = _rounded(acc)
    d, m = a.shape
    if m < 3 or d < 2:
        return None
    if np.all(a == a[:, :1]):
        return FriedmanTest(0.0, 1.0, d, m)
    res = stats.friedmanchisquare(*a.T)
    return FriedmanTest(float(res.statistic), float(res.pvalue), d, m)


def summary_table(
    acc: np.ndarray | Sequence[Sequence[float]], names: Sequence[str]
) -> list[dict[str, float | int | str]]:
    """One row per method, sorted by Friedman rank (best first; ties keep the input order).

    Keys: ``method`` (its name), ``mean_acc`` and ``std_acc`` (mean and population standard
    deviation, ddof = 0, of its accuracy over the D data sets, in percent),
    ``friedman_rank``, ``p90``, ``p95``, ``pma`` (percent) and ``n_datasets`` (D).

    Args:
        acc: ``(D, M)`` accuracies, fractions in [0, 1].
        names: ``M`` distinct method names, in the column order of ``acc``.
    """
    a = check_accuracies(acc)
    names = [str(n) for n in names]
    if len(names) != a.shape[1]:
        raise ValueError(f"{len(names)} names for {a.shape[1]} methods (columns of acc)")
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be distinct, got {names}")
    ranks = friedman_ranks(a)
    p90, p95, pm = p_within(a, 0.9), p_within(a, 0.95), pma(a)
    mean, std = 100.0 * a.mean(axis=0), 100.0 * a.std(axis=0, ddof=0)
    order = sorted(range(len(names)), key=lambda j: (ranks[j], j))
    return [
        {
            "method": names[j],
            "mean_acc": float(mean[j]),
            "std_acc": float(std[j]),
            "friedman_rank": float(ranks[j]),
            "p90": float(p90[j]),
            "p95": float(p95[j]),
            "pma": float(pm[j]),
            "n_datasets": int(a.shape[0]),
        }
        for j in order
    ]
