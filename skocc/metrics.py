"""One-class metrics with anomalies as the positive class, and their scorers (all of them).

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
:class:`AnomalyScorer`, which takes ``inlier_label`` as well. Every scorer is
an :class:`AnomalyScorer`, and every metric reads labels with the same rule.
"""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.utils.validation import column_or_1d

from ._sklearn_compat import StrOptions, validate_parameter_constraints

__all__ = [
    "AnomalyScorer",
    "anomaly_recall",
    "anomaly_recall_scorer",
    "anomaly_roc_auc",
    "anomaly_roc_auc_scorer",
    "anomaly_scorers",
    "make_anomaly_scorer",
    "precision_at_n",
    "precision_at_n_score",
    "precision_at_n_scorer",
]


_LABEL_CONSTRAINTS = {
    "inlier_label": [Real, str],
    "anomaly_label": [Real, str, None],
}


def _anomaly_mask(y, *, inlier_label=1, anomaly_label=-1, caller="this function"):
    """Boolean mask of the anomalies in ``y``, checking the label convention.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Labels.
    inlier_label : int, float, str, bool or None, default=1
        Label of normal samples; ``None`` makes every label other than
        ``anomaly_label`` normal, and then ``y`` must hold ``anomaly_label``
        (the rule of this module's metric functions).
    anomaly_label : int, float, str, bool or None, default=-1
        Label of anomalies; ``None`` makes every label other than
        ``inlier_label`` an anomaly.
    caller : str, default="this function"
        Named in error messages.

    Returns
    -------
    is_anomaly : ndarray of shape (n_samples,), dtype bool

    Raises
    ------
    ValueError
        When ``y`` is None, or holds a label that is neither ``inlier_label``
        nor ``anomaly_label``.
    """
    if y is None:
        raise ValueError(
            f"{caller} needs y, the labels that say which samples are normal "
            f"(inlier_label={inlier_label!r}) and which are anomalies; got y=None."
        )
    if inlier_label is None:
        y = np.asarray(y)
        labels = set(np.unique(y).tolist())
        if anomaly_label not in labels:
            raise ValueError(
                f"y contains the labels {sorted(labels)} but not anomaly_label={anomaly_label!r}. "
                "skocc's metrics default to scikit-learn's outlier labels (+1 normal, -1 "
                "anomaly); pass anomaly_label=1 if 1 marks the anomalies in y."
            )
        return y == anomaly_label
    y = column_or_1d(y)
    is_inlier = y == inlier_label
    if anomaly_label is None:
        return ~is_inlier
    is_anomaly = y == anomaly_label
    other = ~(is_inlier | is_anomaly)
    if np.any(other):
        unknown = ", ".join(repr(v) for v in np.unique(y[other])[:5].tolist())
        raise ValueError(
            f"{caller} expects labels inlier_label={inlier_label!r} (normal) and "
            f"anomaly_label={anomaly_label!r} (anomaly); y also holds {unknown}. For "
            "0/1 labels with 1 = anomaly (PyOD's convention) pass inlier_label=0, "
            "anomaly_label=1; to count every other label as an anomaly pass "
            "anomaly_label=None."
        )
    return is_anomaly


def _is_anomaly(y_true, anomaly_label):
    return _anomaly_mask(y_true, inlier_label=None, anomaly_label=anomaly_label)


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
    by :func:`precision_at_n_score`, which shares ties
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
    return _anomaly_recall_score(_is_anomaly(y_true, anomaly_label), y_pred)


def precision_at_n_score(y_true, anomaly_score):
    """Precision among the N highest anomaly scores, N the number of anomalies.

    Also called R-precision. A perfect ranking scores 1; a constant score
    scores the proportion of anomalies. Ties at the N-th score are shared out:
    the tied samples count with the proportion of anomalies among them, so the
    result does not depend on the order of the samples.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        1 (or True) for anomalies, 0 (or False) for normal samples.
    anomaly_score : array-like of shape (n_samples,)
        Higher means more anomalous (``-score_samples``).

    Returns
    -------
    precision : float

    Examples
    --------
    >>> from skocc.metrics import precision_at_n_score
    >>> precision_at_n_score([0, 0, 1, 1], [0.1, 0.9, 0.8, 0.3])
    0.5
    """
    y_true = column_or_1d(y_true).astype(bool)
    score = column_or_1d(anomaly_score).astype(np.float64)
    if y_true.shape != score.shape:
        raise ValueError(
            f"y_true and anomaly_score must have the same length; got {y_true.size} "
            f"and {score.size}."
        )
    n = int(y_true.sum())
    if n == 0:
        raise ValueError("precision_at_n_score needs at least one anomaly in y_true; got none.")
    threshold = np.sort(score)[::-1][n - 1]
    above, tied = score > threshold, score == threshold
    share = (n - above.sum()) / tied.sum()
    return float((y_true[above].sum() + share * y_true[tied].sum()) / n)


def _anomaly_recall_score(is_anomaly, y_pred):
    return float(np.mean(np.asarray(y_pred)[is_anomaly] == -1))


# name -> (metric of (is_anomaly, values), whether the values are predict's labels)
_SCORER_METRICS = {
    "roc_auc": (roc_auc_score, False),
    "average_precision": (average_precision_score, False),
    "precision_at_n": (precision_at_n_score, False),
    "recall": (_anomaly_recall_score, True),
}


class AnomalyScorer:
    """A ``scoring=`` callable with anomalies as the positive class.

    ``scorer(estimator, X, y)`` computes ``metric(y_is_anomaly,
    -estimator.score_samples(X))`` (``-decision_function`` for estimators
    without ``score_samples``), so it works for skocc's and scikit-learn's
    outlier detectors alike, whose scores are higher for normal samples. Pass
    it as ``scoring=`` to :class:`~sklearn.model_selection.GridSearchCV` or
    :func:`~sklearn.model_selection.cross_val_score`.

    Why not ``scoring="roc_auc"``: scikit-learn's scorer takes the larger label
    as the positive class and ranks by ``decision_function``. With +1/-1 labels
    that happens to give the right number, but with PyOD's 0/1 labels
    (1 = anomaly) it silently returns ``1 - AUC``, and its
    ``"average_precision"`` would measure the precision of finding *normal*
    samples. Here the convention is explicit and ``y`` is checked against it.

    Parameters
    ----------
    metric : {"roc_auc", "average_precision", "precision_at_n", "recall"}, default="roc_auc"
        ``"roc_auc"``: :func:`~sklearn.metrics.roc_auc_score`;
        ``"average_precision"``: :func:`~sklearn.metrics.average_precision_score`;
        ``"precision_at_n"``: :func:`precision_at_n_score`;
        ``"recall"``: the fraction of anomalies that ``predict`` labels -1
        (the fitted threshold, not the ranking).
    inlier_label : int, float, str, bool or None, default=1
        Label of normal samples in ``y``; ``None`` makes every label other
        than ``anomaly_label`` normal (``y`` must then hold ``anomaly_label``).
    anomaly_label : int, float, str, bool or None, default=-1
        Label of anomalies in ``y``; ``None`` makes every label other than
        ``inlier_label`` an anomaly.

    See Also
    --------
    anomaly_scorers : The three scorers as a dict, for multi-metric search.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.ensemble import IsolationForest
    >>> from skocc.metrics import AnomalyScorer
    >>> rng = np.random.RandomState(0)
    >>> X = np.r_[rng.normal(size=(50, 2)), rng.normal(6, 1, size=(5, 2))]
    >>> y = np.r_[np.ones(50), -np.ones(5)]
    >>> forest = IsolationForest(random_state=0).fit(X[y == 1])
    >>> float(AnomalyScorer("roc_auc")(forest, X, y))
    1.0
    """

    _parameter_constraints: dict = {
        "metric": [StrOptions(set(_SCORER_METRICS))],
        "inlier_label": [Real, str, None],
        "anomaly_label": [Real, str, None],
    }

    def __init__(self, metric="roc_auc", *, inlier_label=1, anomaly_label=-1):
        self.metric = metric
        self.inlier_label = inlier_label
        self.anomaly_label = anomaly_label

    def __call__(self, estimator, X, y):
        """Score ``estimator`` on ``X`` against the labels ``y``.

        Parameters
        ----------
        estimator : object
            A fitted estimator with ``score_samples`` or ``decision_function``
            (higher = more normal).
        X : array-like
            Samples to score.
        y : array-like of shape (n_samples,)
            Their labels.

        Returns
        -------
        score : float
            Higher is better.
        """
        validate_parameter_constraints(
            self._parameter_constraints, vars(self), caller_name=type(self).__name__
        )
        is_anomaly = _anomaly_mask(
            y,
            inlier_label=self.inlier_label,
            anomaly_label=self.anomaly_label,
            caller=repr(self),
        )
        metric, uses_predict = _SCORER_METRICS[self.metric]
        if uses_predict:
            return float(metric(is_anomaly, estimator.predict(X)))
        if hasattr(estimator, "score_samples"):
            normality, method = estimator.score_samples(X), "score_samples"
        else:
            normality, method = estimator.decision_function(X), "decision_function"
        values = -np.asarray(normality, dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            # Ranking NaN is undefined: name the estimator, not sklearn's "Input contains NaN".
            raise ValueError(
                f"{self!r} needs finite scores, but {method} of {type(estimator).__name__} "
                f"returned {int(bad.sum())} NaN or infinite value(s) of {len(values)}; check "
                "the estimator and the scale of X."
            )
        return float(metric(is_anomaly, values))

    def __repr__(self):
        return (
            f"AnomalyScorer({self.metric!r}, inlier_label={self.inlier_label!r}, "
            f"anomaly_label={self.anomaly_label!r})"
        )


def anomaly_scorers(*, inlier_label=1, anomaly_label=-1):
    """ROC AUC, average precision and precision@N scorers, by name.

    For multi-metric search: ``GridSearchCV(..., scoring=anomaly_scorers(),
    refit="roc_auc")``.

    Parameters
    ----------
    inlier_label : int, float, str or bool, default=1
        Label of normal samples in ``y``.
    anomaly_label : int, float, str, bool or None, default=-1
        Label of anomalies; ``None`` makes every other label an anomaly.

    Returns
    -------
    scorers : dict of str to AnomalyScorer
        Keys ``"roc_auc"``, ``"average_precision"`` and ``"precision_at_n"``.
    """
    return {
        metric: AnomalyScorer(metric, inlier_label=inlier_label, anomaly_label=anomaly_label)
        for metric in ("roc_auc", "average_precision", "precision_at_n")
    }


# make_anomaly_scorer's names -> AnomalyScorer's
_METRICS = {
    "anomaly_roc_auc": "roc_auc",
    "precision_at_n": "precision_at_n",
    "anomaly_recall": "recall",
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
    scorer : AnomalyScorer
        ``scorer(estimator, X, y)``, higher is better; every label other than
        ``anomaly_label`` is normal.
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {sorted(_METRICS)}; got {metric!r}.")
    return AnomalyScorer(_METRICS[metric], inlier_label=None, anomaly_label=anomaly_label)


#: ROC AUC of ``-score_samples`` with -1 marking anomalies.
anomaly_roc_auc_scorer = make_anomaly_scorer("anomaly_roc_auc")
#: precision@N of ``-score_samples`` with -1 marking anomalies.
precision_at_n_scorer = make_anomaly_scorer("precision_at_n")
#: Recall of anomalies by ``predict`` (the fitted threshold), -1 marking anomalies.
anomaly_recall_scorer = make_anomaly_scorer("anomaly_recall")
