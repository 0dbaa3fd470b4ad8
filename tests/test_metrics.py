"""skocc.metrics: anomalies are the positive class, and the signs are right."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import LocalOutlierFactor

from skocc.metrics import (
    anomaly_recall,
    anomaly_recall_scorer,
    anomaly_roc_auc,
    anomaly_roc_auc_scorer,
    make_anomaly_scorer,
    precision_at_n,
    precision_at_n_scorer,
)

Y = np.array([1, 1, 1, 1, -1, -1])
PERFECT = np.array([0.1, 0.2, 0.0, 0.3, 5.0, 4.0])  # anomaly scores: anomalies highest


def test_perfect_and_inverted_rankings():
    assert anomaly_roc_auc(Y, PERFECT) == 1.0
    assert anomaly_roc_auc(Y, -PERFECT) == 0.0
    assert precision_at_n(Y, PERFECT) == 1.0
    assert precision_at_n(Y, -PERFECT) == 0.0
    assert precision_at_n(Y, np.array([0, 0, 0, 9, 8, 0])) == 0.5


def test_recall_at_the_threshold():
    assert anomaly_recall(Y, np.array([1, 1, 1, -1, -1, 1])) == 0.5
    assert anomaly_recall(np.array([0, 0, 1, 1]), np.array([1, -1, -1, -1]), anomaly_label=1) == 1.0


def test_zero_one_labels_are_not_silently_inverted():
    y01 = (Y == -1).astype(int)  # 1 = anomaly
    with pytest.raises(ValueError, match="pass anomaly_label=1"):
        anomaly_roc_auc(y01, PERFECT)
    assert anomaly_roc_auc(y01, PERFECT, anomaly_label=1) == 1.0


def test_scorers_use_the_detectors_signs():
    rng = np.random.RandomState(0)
    normal = rng.randn(60, 2)
    X = np.r_[normal, rng.randn(20, 2) + 6]
    y = np.r_[np.ones(60), -np.ones(20)]
    lof = LocalOutlierFactor(novelty=True).fit(normal)
    assert anomaly_roc_auc_scorer(lof, X, y) > 0.99
    assert precision_at_n_scorer(lof, X, y) > 0.95
    assert anomaly_recall_scorer(lof, X, y) > 0.95
    scorer = make_anomaly_scorer("anomaly_roc_auc", anomaly_label=1)
    assert scorer(lof, X, (y == -1).astype(int)) > 0.99
    search = GridSearchCV(
        LocalOutlierFactor(novelty=True),
        {"n_neighbors": [5, 10]},
        scoring={"auc": anomaly_roc_auc_scorer, "p@n": precision_at_n_scorer},
        refit=False,
        cv=[(np.arange(30), np.arange(30, 80))],
    ).fit(X, y)
    assert np.all(search.cv_results_["mean_test_auc"] > 0.99)
    with pytest.raises(ValueError, match="metric must be one of"):
        make_anomaly_scorer("f1")
