"""Cross-validation and scoring for one-class work on labelled validation data.

A one-class detector must be trained on normal samples only, and judged on
held-out normal samples *and* anomalies. scikit-learn's splitters put every
label in the training folds, and its ``"roc_auc"`` scorer takes the larger label
as the positive class, whatever it means. The splitters here keep anomalies out
of every training fold, and the scorers take the anomalies as the positive
class explicitly, so that

.. code-block:: python

    GridSearchCV(
        ConvAEOneClass(inlier_label=1),
        {"beta": [0.3, 1, 3], "resolution": [16, 32]},
        cv=OneClassKFold(3),
        scoring=AnomalyScorer("roc_auc"),
    ).fit(X, y)

searches honestly on ``y`` in {+1 normal, -1 anomaly}; ``inlier_label=1``
makes the final refit on all of ``X`` train on the normal samples only.

Labels
------
Every object here takes ``inlier_label`` (default ``1``) and ``anomaly_label``
(default ``-1``) and refuses a ``y`` holding any other label, because a
mislabelled convention fails silently: with PyOD's 0/1 labels (1 = anomaly)
read as +1/-1, the "normal" folds would hold the anomalies and the AUC would be
``1 - AUC``. Pass ``inlier_label=0, anomaly_label=1`` for PyOD's convention, or
``anomaly_label=None`` to treat every label other than ``inlier_label`` as an
anomaly (for example one digit normal, all others anomalous).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import BaseCrossValidator, KFold
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.validation import _num_samples, column_or_1d

__all__ = [
    "AnomalyScorer",
    "OneClassKFold",
    "OneClassShuffleSplit",
    "anomaly_scorers",
    "precision_at_n_score",
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
    inlier_label : int, float, str or bool, default=1
        Label of normal samples.
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


class _OneClassSplitter(BaseCrossValidator):
    """Shared checks of the one-class splitters."""

    _parameter_constraints: dict = dict(_LABEL_CONSTRAINTS)

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits.

        Parameters
        ----------
        X, y, groups : object
            Ignored, present for API compatibility.

        Returns
        -------
        n_splits : int
        """
        return self.n_splits

    def _inliers_and_anomalies(self, X, y):
        validate_parameter_constraints(
            self._parameter_constraints, self.__dict__, caller_name=type(self).__name__
        )
        name = type(self).__name__
        is_anomaly = _anomaly_mask(
            y,
            inlier_label=self.inlier_label,
            anomaly_label=self.anomaly_label,
            caller=name,
        )
        if X is not None and _num_samples(X) != is_anomaly.size:
            raise ValueError(
                f"{name}: X has {_num_samples(X)} samples but y has {is_anomaly.size}."
            )
        inliers, anomalies = np.flatnonzero(~is_anomaly), np.flatnonzero(is_anomaly)
        if anomalies.size == 0:
            raise ValueError(
                f"{name}: y holds no anomaly, so no test fold could measure how "
                "anomalies are ranked. Add labelled anomalies, or use "
                "sklearn.model_selection.KFold to score normal samples only."
            )
        return inliers, anomalies


class OneClassKFold(_OneClassSplitter):
    """K-fold splitter whose training folds hold only normal samples.

    The normal samples are split into ``n_splits`` folds, and so are the
    anomalies. Split ``k`` trains on the normal samples outside fold ``k`` and
    tests on fold ``k`` of both: held-out normal samples and anomalies. Every
    sample is tested exactly once, so the test folds partition the data (as
    :func:`~sklearn.model_selection.cross_val_predict` requires), and
    anomalies are never trained on.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds, at least 2. There must be at least as many normal
        samples and as many anomalies as folds.
    inlier_label : int, float, str or bool, default=1
        Label of normal samples in ``y``.
    anomaly_label : int, float, str, bool or None, default=-1
        Label of anomalies in ``y``. ``None`` makes every label other than
        ``inlier_label`` an anomaly. Any other label in ``y`` is an error, so
        that PyOD's 0/1 labels are not silently read as +1/-1.
    shuffle : bool, default=False
        Shuffle the normal samples and the anomalies before splitting.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffling when ``shuffle=True``.

    See Also
    --------
    OneClassShuffleSplit : Random splits; every anomaly in every test set.
    AnomalyScorer : Scores with anomalies as the positive class.

    Notes
    -----
    The splitter keeps anomalies out of the training folds only. After a
    search, ``GridSearchCV`` refits on all the data it was given: set the
    estimator's ``inlier_label`` (``ConvAEOneClass(inlier_label=1)``) so that
    the refit trains on the normal samples only.

    Examples
    --------
    >>> import numpy as np
    >>> from skocc.model_selection import OneClassKFold
    >>> y = np.array([1, 1, 1, 1, -1, -1])
    >>> for train, test in OneClassKFold(2).split(np.zeros((6, 1)), y):
    ...     print(train.tolist(), test.tolist())
    [2, 3] [0, 1, 4]
    [0, 1] [2, 3, 5]
    """

    _parameter_constraints: dict = {
        **_OneClassSplitter._parameter_constraints,
        "n_splits": [Interval(Integral, 2, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(
        self, n_splits=5, *, inlier_label=1, anomaly_label=-1, shuffle=False, random_state=None
    ):
        self.n_splits = n_splits
        self.inlier_label = inlier_label
        self.anomaly_label = anomaly_label
        self.shuffle = shuffle
        self.random_state = random_state

    def split(self, X, y=None, groups=None):
        """Indices of the training (normal only) and test samples of each split.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            The data; only its length is used.
        y : array-like of shape (n_samples,)
            Labels saying which samples are normal. Required.
        groups : object
            Ignored, present for API compatibility.

        Yields
        ------
        train : ndarray
            Indices of normal samples to train on.
        test : ndarray
            Indices of held-out normal samples and anomalies, sorted.
        """
        inliers, anomalies = self._inliers_and_anomalies(X, y)
        for kind, idx in (("normal samples", inliers), ("anomalies", anomalies)):
            if idx.size < self.n_splits:
                raise ValueError(
                    f"OneClassKFold(n_splits={self.n_splits}) needs at least {self.n_splits} "
                    f"{kind}; y has {idx.size}. Lower n_splits, or use OneClassShuffleSplit, "
                    "which tests every anomaly in every split."
                )
        # One seed for both KFolds so that an int random_state gives the same
        # folds every time, and a RandomState instance is drawn from once.
        seed = (
            check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
            if self.shuffle
            else None
        )
        folds = [
            KFold(self.n_splits, shuffle=self.shuffle, random_state=seed).split(idx)
            for idx in (inliers, anomalies)
        ]
        for (in_train, in_test), (_, an_test) in zip(*folds):
            yield inliers[in_train], np.sort(np.r_[inliers[in_test], anomalies[an_test]])


class OneClassShuffleSplit(_OneClassSplitter):
    """Random splits whose training sets hold only normal samples.

    Each split draws ``test_size`` of the normal samples to hold out, trains on
    the other normal samples, and tests on the held-out normal samples plus
    *every* anomaly. Anomalies are never trained on, so testing them all in
    every split wastes none; this suits the common case of few labelled
    anomalies, where :class:`OneClassKFold` would leave one or two per fold.

    Parameters
    ----------
    n_splits : int, default=5
        Number of random splits.
    test_size : float or int, default=0.2
        Fraction (float in (0, 1)) or number (int) of the *normal* samples held
        out for testing in each split. At least one normal sample is held out
        and at least one trained on.
    inlier_label : int, float, str or bool, default=1
        Label of normal samples in ``y``.
    anomaly_label : int, float, str, bool or None, default=-1
        Label of anomalies in ``y``; ``None`` makes every label other than
        ``inlier_label`` an anomaly.
    random_state : int, RandomState instance or None, default=None
        Seeds the draws.

    See Also
    --------
    OneClassKFold : Test folds that partition the data.

    Notes
    -----
    As with :class:`OneClassKFold`, set the estimator's ``inlier_label`` so
    that ``GridSearchCV``'s final refit trains on normal samples only.

    Examples
    --------
    >>> import numpy as np
    >>> from skocc.model_selection import OneClassShuffleSplit
    >>> y = np.array([1, 1, 1, 1, 1, -1])
    >>> cv = OneClassShuffleSplit(2, test_size=2, random_state=0)
    >>> [(len(train), len(test)) for train, test in cv.split(np.zeros((6, 1)), y)]
    [(3, 3), (3, 3)]
    """

    _parameter_constraints: dict = {
        **_OneClassSplitter._parameter_constraints,
        "n_splits": [Interval(Integral, 1, None, closed="left")],
        "test_size": [
            Interval(Real, 0, 1, closed="neither"),
            Interval(Integral, 1, None, closed="left"),
        ],
        "random_state": ["random_state"],
    }

    def __init__(
        self, n_splits=5, *, test_size=0.2, inlier_label=1, anomaly_label=-1, random_state=None
    ):
        self.n_splits = n_splits
        self.test_size = test_size
        self.inlier_label = inlier_label
        self.anomaly_label = anomaly_label
        self.random_state = random_state

    def split(self, X, y=None, groups=None):
        """Indices of the training (normal only) and test samples of each split.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            The data; only its length is used.
        y : array-like of shape (n_samples,)
            Labels saying which samples are normal. Required.
        groups : object
            Ignored, present for API compatibility.

        Yields
        ------
        train : ndarray
            Indices of normal samples to train on.
        test : ndarray
            Indices of the held-out normal samples and of every anomaly, sorted.
        """
        inliers, anomalies = self._inliers_and_anomalies(X, y)
        n = inliers.size
        if isinstance(self.test_size, Integral):
            n_test = int(self.test_size)
        else:
            n_test = int(np.ceil(self.test_size * n))
        if not 1 <= n_test <= n - 1:
            raise ValueError(
                f"OneClassShuffleSplit(test_size={self.test_size!r}) holds out {n_test} of "
                f"the {n} normal samples; at least one must be held out and one trained on."
            )
        rng = check_random_state(self.random_state)
        for _ in range(self.n_splits):
            order = rng.permutation(n)
            train, held_out = inliers[order[n_test:]], inliers[order[:n_test]]
            yield np.sort(train), np.sort(np.r_[held_out, anomalies])


# ----------------------------------------------------------------- scoring
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
    >>> from skocc.model_selection import precision_at_n_score
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


_METRICS = {
    "roc_auc": roc_auc_score,
    "average_precision": average_precision_score,
    "precision_at_n": precision_at_n_score,
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
    metric : {"roc_auc", "average_precision", "precision_at_n"}, default="roc_auc"
        ``"roc_auc"``: :func:`~sklearn.metrics.roc_auc_score`;
        ``"average_precision"``: :func:`~sklearn.metrics.average_precision_score`;
        ``"precision_at_n"``: :func:`precision_at_n_score`.
    inlier_label : int, float, str or bool, default=1
        Label of normal samples in ``y``.
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
    >>> from skocc.model_selection import AnomalyScorer
    >>> rng = np.random.RandomState(0)
    >>> X = np.r_[rng.normal(size=(50, 2)), rng.normal(6, 1, size=(5, 2))]
    >>> y = np.r_[np.ones(50), -np.ones(5)]
    >>> forest = IsolationForest(random_state=0).fit(X[y == 1])
    >>> float(AnomalyScorer("roc_auc")(forest, X, y))
    1.0
    """

    _parameter_constraints: dict = {
        "metric": [StrOptions(set(_METRICS))],
        **_LABEL_CONSTRAINTS,
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
        if hasattr(estimator, "score_samples"):
            normality = estimator.score_samples(X)
        else:
            normality = estimator.decision_function(X)
        return float(_METRICS[self.metric](is_anomaly, -np.asarray(normality, dtype=np.float64)))

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
        for metric in _METRICS
    }
