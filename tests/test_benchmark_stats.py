"""Benchmark statistics on small matrices worked out by hand: ranks, P90/P95, PMA, tests."""

import numpy as np
import pytest
from scipy import stats

from experiments.uci.stats import (
    check_accuracies,
    friedman_ranks,
    friedman_test,
    p_within,
    pma,
    rank_matrix,
    summary_table,
)

# rows = data sets, columns = methods A, B, C
RANK_ACC = np.array(
    [
        [0.9, 0.8, 0.8],  # A best -> 1; B, C tie for 2 and 3 -> 2.5 each
        [0.7, 0.9, 0.5],  # B 1, A 2, C 3
        [0.6, 0.6, 0.6],  # all tie for 1, 2, 3 -> 2 each
    ]
)
# A: (1 + 2 + 2) / 3 = 5/3; B: (2.5 + 1 + 2) / 3 = 11/6; C: (2.5 + 3 + 2) / 3 = 5/2
RANK_EXPECTED = np.array([5 / 3, 11 / 6, 5 / 2])

# thresholds: row 0 best 1.0 -> 0.90 / 0.95; row 1 best 0.8 -> 0.72 / 0.76 (met with
# equality, where 0.9 * 0.8 = 0.7200000000000001 in floating point); row 2 best 0 -> all meet
WITHIN_ACC = np.array(
    [
        [1.00, 0.92, 0.88],
        [0.80, 0.76, 0.72],
        [0.00, 0.00, 0.00],
    ]
)
# P90: A 3/3, B 3/3, C 2/3 (0.88 < 0.90); P95: A 3/3, B 2/3 (0.92 < 0.95), C 1/3
P90_EXPECTED = np.array([100.0, 100.0, 200 / 3])
P95_EXPECTED = np.array([100.0, 200 / 3, 100 / 3])
# PMA: A (100 + 100 + 100) / 3; B (92 + 95 + 100) / 3; C (88 + 90 + 100) / 3
PMA_EXPECTED = np.array([100.0, 287 / 3, 278 / 3])


def test_rank_matrix_by_hand():
    expected = np.array([[1, 2.5, 2.5], [2, 1, 3], [2, 2, 2]], dtype=float)
    np.testing.assert_allclose(rank_matrix(RANK_ACC), expected)


def test_friedman_ranks_by_hand():
    ranks = friedman_ranks(RANK_ACC)
    assert ranks.shape == (3,)
    np.testing.assert_allclose(ranks, RANK_EXPECTED)
    assert ranks.sum() == pytest.approx(3 * 4 / 2)


def test_ranks_tie_despite_last_bit_noise():
    a = np.array([[0.1 + 0.2, 0.3, 0.2]])
    assert a[0, 0] != a[0, 1]  # 0.30000000000000004 vs 0.3
    np.testing.assert_allclose(friedman_ranks(a), [1.5, 1.5, 3.0])


def test_p_within_by_hand():
    np.testing.assert_allclose(p_within(WITHIN_ACC, 0.9), P90_EXPECTED)
    np.testing.assert_allclose(p_within(WITHIN_ACC, 0.95), P95_EXPECTED)
    np.testing.assert_allclose(p_within(WITHIN_ACC, 1.0), [100.0, 100 / 3, 100 / 3])
    np.testing.assert_allclose(p_within(WITHIN_ACC, 0.0), [100.0, 100.0, 100.0])


def test_pma_by_hand():
    np.testing.assert_allclose(pma(WITHIN_ACC), PMA_EXPECTED)


def test_single_method_is_best_everywhere():
    a = np.array([[0.3], [0.9]])
    np.testing.assert_allclose(friedman_ranks(a), [1.0])
    np.testing.assert_allclose(p_within(a, 0.95), [100.0])
    np.testing.assert_allclose(pma(a), [100.0])
    assert friedman_test(a) is None


def test_friedman_test_matches_scipy_and_edge_cases():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 1.0, size=(8, 4))
    res = friedman_test(a)
    ref = stats.friedmanchisquare(*a.T)
    assert res.statistic == pytest.approx(ref.statistic)
    assert res.p_value == pytest.approx(ref.pvalue)
    assert (res.n_datasets, res.n_methods) == (8, 4)
    assert friedman_test(a[:, :2]) is None  # fewer than 3 methods
    assert friedman_test(a[:1]) is None  # fewer than 2 data sets
    tied = friedman_test(np.full((4, 3), 0.7))
    assert (tied.statistic, tied.p_value) == (0.0, 1.0)
    # one method always best, one always worst: strong evidence
    ordered = np.tile([0.9, 0.8, 0.7], (10, 1))
    assert friedman_test(ordered).p_value < 1e-3


def test_summary_table_rows():
    rows = summary_table(RANK_ACC, ["A", "B", "C"])
    assert [r["method"] for r in rows] == ["A", "B", "C"]
    a = rows[0]
    assert set(a) == {
        "method",
        "mean_acc",
        "std_acc",
        "friedman_rank",
        "p90",
        "p95",
        "pma",
        "n_datasets",
    }
    # A: accuracies 0.9, 0.7, 0.6 -> mean 73.33 %, population std sqrt(((50/3)^2 + ...)/3)
    assert a["mean_acc"] == pytest.approx(220 / 3)
    assert a["std_acc"] == pytest.approx(100 * np.std([0.9, 0.7, 0.6]))
    assert a["friedman_rank"] == pytest.approx(5 / 3)
    assert a["n_datasets"] == 3
    # columns given in another order: the rows are still sorted by rank
    rows = summary_table(RANK_ACC[:, ::-1], ["C", "B", "A"])
    assert [r["method"] for r in rows] == ["A", "B", "C"]
    within = summary_table(WITHIN_ACC, ["A", "B", "C"])
    np.testing.assert_allclose([r["p90"] for r in within], P90_EXPECTED)
    np.testing.assert_allclose([r["p95"] for r in within], P95_EXPECTED)
    np.testing.assert_allclose([r["pma"] for r in within], PMA_EXPECTED)


def test_summary_table_ties_keep_input_order():
    rows = summary_table([[0.5, 0.5], [0.7, 0.7]], ["second", "first"])
    assert [r["method"] for r in rows] == ["second", "first"]
    assert rows[0]["friedman_rank"] == rows[1]["friedman_rank"] == 1.5


@pytest.mark.parametrize(
    "acc, match",
    [
        ([0.5, 0.6], "2-D"),
        (np.zeros((0, 3)), "at least one data set"),
        (np.zeros((3, 0)), "at least one data set"),
        ([[0.5, np.nan]], "non-finite"),
        ([[0.5, np.inf]], "non-finite"),
        ([[0.5, 95.0]], r"fractions in \[0, 1\]"),
        ([[-0.1, 0.5]], r"fractions in \[0, 1\]"),
    ],
)
def test_invalid_accuracies(acc, match):
    with pytest.raises(ValueError, match=match):
        check_accuracies(acc)
    for fn in (friedman_ranks, pma, friedman_test, lambda a: p_within(a, 0.9)):
        with pytest.raises(ValueError, match=match):
            fn(acc)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="fraction"):
        p_within(RANK_ACC, 1.5)
    with pytest.raises(ValueError, match="2 names for 3 methods"):
        summary_table(RANK_ACC, ["A", "B"])
    with pytest.raises(ValueError, match="distinct"):
        summary_table(RANK_ACC, ["A", "A", "C"])
