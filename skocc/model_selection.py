"""Cross-validation for one-class work on labelled validation data.

A one-class detector must be trained on normal samples only, and judged on
held-out normal samples *and* anomalies. scikit-learn's splitters put every
label in the training folds, and its ``"roc_auc"`` scorer takes the larger label
as the positive class, whatever it means. The splitters here keep anomalies out
of every training fold, and the scorers of :mod:`skocc.metrics` (importable
from here too) take the anomalies as the positive class explicitly, so that

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
from sklearn.model_selection import BaseCrossValidator, KFold
from sklearn.utils import check_random_state

from ._sklearn_compat import (
    Interval,
    num_samples,
    validate_parameter_constraints,
)

# The scorers are defined in skocc.metrics; they stay importable from here,
# where the user guide's first search examples found them.
from .metrics import (  # noqa: F401
    _LABEL_CONSTRAINTS,
    AnomalyScorer,
    _anomaly_mask,
    anomaly_scorers,
    precision_at_n_score,
)

__all__ = [
    "OneClassKFold",
    "OneClassShuffleSplit",
]

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
        if X is not None and num_samples(X) != is_anomaly.size:
            raise ValueError(
                f"{name}: X has {num_samples(X)} samples but y has {is_anomaly.size}."
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
