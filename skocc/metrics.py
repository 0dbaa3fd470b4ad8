"""One-class metrics with anomalies as the positive class, and their scorers.

The metrics of Laakom et al.'s multimodal one-class paper: the recall of
anomalies at the fitted threshold, precision@N (N = number of true anomalies)
and ROC AUC. Labels follow scikit-learn's outlier convention by default (+1
normal, -1 anomaly); ``anomaly_label`` names the label that marks anomalies in
your ``y``. Labels that do not contain ``anomaly_label`` raise an error instead
of silently giving ``1 - AUC``, which is what 0/1 labels (1 = anomaly) do with
the stock ``"roc_auc"`` scorer applied to ``score_samples``.

Each ``*_scorer`` is a callable ``scorer(estimator, X, y)`` for
``GridSearchCV(scoring=...)``, usable with any estimator that has
``score_samples`` (higher = more normal) and ``predict`` (+1/-1). Here every
label other than ``anomaly_label`` is normal; for searches that should also
reject unexpected labels, and for average precision, use
:class:`skocc.model_selection.AnomalyScorer`.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from .model_selection import precision_at_n_score

__all__ = [
    "anomaly_recall",
    "anomaly_recall_scorer",
    "anomaly_roc_auc",
    "anomaly_roc_auc_scorer",
    "make_anomaly_scorer",
    "precision_at_n",
    "precision_at_n_scorer",
]


def _is_anomaly(y_true, anomaly_label):
    y_true = np.asarray(y_true)
    labels = set(np.unique(y_true).tolist())
    if anomaly_label not in labels:
        raise ValueError(
            f"y contains the labels {sorted(labels)} but not anomaly_label={anomaly_label!r}. "
            "skocc's metrics default to scikit-learn's outlier labels (+1 normal, -1 anomaly); "
            "pass anomaly_label=1 if 1 marks the anomalies in y."
        )
    return y_true == anomaly_label


def anomaly_roc_auc(y_true, anomaly_scores, *, anomaly_label=-1):
    """ROC AUC with anomalies as the positive class.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Labels; ``anomaly_label`` marks anomalies, every other value is normal.
    anomaly_scores : array-like of shape (n_samples,)
        Higher = more anomalous (``-score_samples``, ``anomaly_score``).
    anomaly_label : int or str, default=-1

    Returns
    -------
    auc : float
    """
    return float(roc_auc_score(_is_anomaly(y_true, anomaly_label), anomaly_scores))


def precision_at_n(y_true, anomaly_scores, *, anomaly_label=-1):
    """Fraction of true anomalies among the N most anomalous samples.

    N is the number of true anomalies, so a perfect ranking scores 1. Computed
    by :func:`skocc.model_selection.precision_at_n_score`, which shares ties
    at the cut out fairly (a constant score gives the proportion of anomalies).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    anomaly_scores : array-like of shape (n_samples,)
        Higher = more anomalous.
    anomaly_label : int or str, default=-1

    Returns
    -------
    precision : float
    """
    return precision_at_n_score(_is_anomaly(y_true, anomaly_label), anomaly_scores)


def anomaly_recall(y_true, y_pred, *, anomaly_label=-1):
    """Fraction of true anomalies that are predicted anomalous (``y_pred == -1``).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    y_pred : array-like of shape (n_samples,)
        Predictions in scikit-learn's convention, -1 for anomalies.
    anomaly_label : int or str, default=-1
        Label of anomalies in ``y_true`` (``y_pred`` always uses -1).

    Returns
    -------
    recall : float
    """
    is_anomaly = _is_anomaly(y_true, anomaly_label)
    return float(np.mean(np.asarray(y_pred)[is_anomaly] == -1))


class _AnomalyScorer:
    """``scorer(estimator, X, y)`` for one of this module's metrics."""

    def __init__(self, metric, uses_predict, anomaly_label):
        self.metric = metric
        self.uses_predict = uses_predict
        self.anomaly_label = anomaly_label

    def __call__(self, estimator, X, y):
        if self.uses_predict:
            values = estimator.predict(X)
        else:
            values = -np.asarray(estimator.score_samples(X), dtype=float)
            bad = ~np.isfinite(values)
            if bad.any():
                # Ranking NaN is undefined: name the estimator, not sklearn's "Input contains NaN".
                raise ValueError(
                    f"{self!r} needs finite scores, but score_samples of "
                    f"{type(estimator).__name__} returned {int(bad.sum())} NaN or infinite "
                    f"value(s) of {len(values)}; check the estimator and the scale of X."
                )
        return self.metric(y, values, anomaly_label=self.anomaly_label)

    def __repr__(self):
        return f"make_anomaly_scorer({self.metric.__name__!r}, anomaly_label={self.anomaly_label!r})"


_METRICS = {
    "anomaly_roc_auc": (anomaly_roc_auc, False),
    "precision_at_n": (precision_at_n, False),
    "anomaly_recall": (anomaly_recall, True),
}


def make_anomaly_scorer(metric, *, anomaly_label=-1):
    """A scorer for ``GridSearchCV`` from a metric of this module.

    Parameters
    ----------
    metric : {"anomaly_roc_auc", "precision_at_n", "anomaly_recall"}
    anomaly_label : int or str, default=-1
        Label of anomalies in the ``y`` given to the search.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y)``, higher is better.
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {sorted(_METRICS)}; got {metric!r}.")
    function, uses_predict = _METRICS[metric]
    return _AnomalyScorer(function, uses_predict, anomaly_label)


#: ROC AUC of ``-score_samples`` with -1 marking anomalies.
anomaly_roc_auc_scorer = make_anomaly_scorer("anomaly_roc_auc")
#: precision@N of ``-score_samples`` with -1 marking anomalies.
precision_at_n_scorer = make_anomaly_scorer("precision_at_n")
#: Recall of anomalies by ``predict`` (the fitted threshold), -1 marking anomalies.
anomaly_recall_scorer = make_anomaly_scorer("anomaly_recall")
