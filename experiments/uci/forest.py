"""One random-forest fit of the UCI baselines, in a module light enough to import in a
worker process (numpy and scikit-learn only: no torch), so that
:func:`experiments.uci.benchmark.forest_candidates` can run its fits in parallel."""

from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``pred`` equal to ``y``."""
    return float(np.mean(pred == y))


def max_features_value(v: str) -> str | float:
    """A ``max_features`` setting of the grid as scikit-learn takes it ("sqrt", "log2", or
    a fraction given as a string)."""
    return v if v in ("sqrt", "log2") else float(v)


def forest_score(
    X: np.ndarray,
    y: np.ndarray,
    trees: int,
    max_features: str,
    seed: int,
    train: np.ndarray,
    test: np.ndarray,
) -> float:
    """Test accuracy of a random forest fitted on ``train`` (one fit, single-threaded)."""
    from sklearn.ensemble import RandomForestClassifier

    clf = RandomForestClassifier(
        n_estimators=trees, max_features=max_features_value(max_features), random_state=seed
    )
    clf.fit(X[train], y[train])
    return accuracy(clf.predict(X[test]), y[test])
