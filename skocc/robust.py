"""Training on a dirty normal set: fit, drop the least normal images, fit again."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, OutlierMixin, clone
from sklearn.utils import check_random_state, get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ._constraints import StrictInterval
from ._outlier import clear_fitted
from ._sklearn_compat import HasMethods, fit_context, num_samples, safe_indexing
from .images import as_array

__all__ = ["TrimmedOneClass"]


def _estimator_has(name):
    """True when the fitted inner estimator (else the unfitted one) has ``name``."""

    def check(self):
        inner = getattr(self, "estimator_", self.estimator)
        return hasattr(inner, name)

    return check


class TrimmedOneClass(MetaEstimatorMixin, OutlierMixin, BaseEstimator):
    """A one-class detector refitted without its least normal training images.

    For a "normal" training set that holds a few undetected anomalies (the
    unsupervised setting of Sohn et al., ICLR 2021). ``fit`` fits a clone of
    ``estimator`` on every image, scores the training images with it, drops
    the ``ceil(trim * n_samples)`` images with the lowest ``score_samples``
    (the least normal; NaN scores count as the lowest), and fits a fresh
    clone on the others: that second model, ``estimator_``, scores and
    predicts. With ``trim=0`` nothing is screened: ``estimator_`` is the
    estimator fitted on every image.

    Trimming helps when the anomalies in the training set are among the
    images the first model finds least normal. On a clean training set it
    removes real normal images from the edge of the normal class, so the
    second model draws a tighter boundary and flags more new normal images;
    on a heavily contaminated one, anomalies the first model learned as
    normal stay in. :doc:`/benchmarks` measures both.

    **The threshold.** ``offset_`` is the inner estimator's: a skocc
    estimator with ``calibration="holdout"`` holds out its calibration images
    from the images kept, after trimming. The calibration set then lacks the
    images the first model found least normal, the anomalies if trimming
    worked, but on a clean set also the low tail of the normal scores: the
    threshold sits higher, and more than ``contamination`` of new normal
    images are flagged. Call :meth:`calibrate` with images known to be
    normal for a threshold that keeps its promise.

    Parameters
    ----------
    estimator : estimator
        The one-class detector, with ``fit`` and ``score_samples`` (higher =
        more normal): a skocc estimator, or one of scikit-learn's
        (:class:`~sklearn.ensemble.IsolationForest`,
        :class:`~sklearn.neighbors.LocalOutlierFactor` with
        ``novelty=True``, ...). Cloned twice at ``fit``; its parameters can be
        searched as ``estimator__<name>``. The first clone, used only to
        rank the training images, is given ``calibration="train"`` when it
        has that parameter, so that it learns from every image.
    trim : float, default=0.05
        Share of the training images dropped, in [0, 0.5): the number
        dropped is ``ceil(trim * n_samples)``. Set it at or a little above
        the share of anomalies expected in the training set.
    random_state : int, RandomState instance or None, default=None
        Seeds both clones of ``estimator`` with the same seed when its own
        ``random_state`` is None (as scikit-learn's meta-estimators pass
        theirs on); an explicit seed of its own is kept. None: the clones
        keep None, and may differ from each other as the estimator does
        between fits.

    Attributes
    ----------
    estimator_ : estimator
        The estimator fitted on the images kept.
    n_trimmed_ : int
        Number of training images dropped, ``ceil(trim * n_samples)``.
    trimmed_indices_ : ndarray of shape (`n_trimmed_`,), dtype int
        Their positions in the ``X`` given to ``fit``, least normal first.
    offset_ : float
        ``estimator_.offset_`` (read-only; absent when the estimator has
        none): ``decision_function = score_samples - offset_``.
    n_features_in_ : int
        ``estimator_.n_features_in_``, when it has one.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        ``estimator_.feature_names_in_``, when it has one.

    See Also
    --------
    skocc.TwoStageOneClass : Features and a detector, a common ``estimator``.
    skocc.ConvAEOneClass : The autoencoder detector.

    References
    ----------
    .. [1] K. Sohn, C.-L. Li, J. Yoon, M. Jin and T. Pfister, "Learning and
       Evaluating Representations for Deep One-class Classification", ICLR
       2021 (the unsupervised setting).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.neighbors import LocalOutlierFactor
    >>> from skocc import TrimmedOneClass
    >>> rng = np.random.RandomState(0)
    >>> X = np.r_[rng.normal(size=(95, 2)), rng.normal(6.0, 0.5, size=(5, 2))]
    >>> model = TrimmedOneClass(LocalOutlierFactor(novelty=True), trim=0.05).fit(X)
    >>> model.n_trimmed_
    5
    >>> sorted(model.trimmed_indices_.tolist())
    [95, 96, 97, 98, 99]
    >>> model.predict([[0.0, 0.0], [6.0, 6.0]]).tolist()
    [1, -1]
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "score_samples"])],
        "trim": [StrictInterval(Real, 0, 0.5, closed="left")],
        "random_state": ["random_state"],
    }

    # Why skocc.save refuses this class (read by skocc.save).
    _skocc_save_refusal = (
        "its inner estimator may be any scikit-learn detector, which only pickle can store. "
        "Save it with joblib (load such files only if you trust them); a skocc inner "
        "estimator alone can be saved with skocc.save(model.estimator_, path)."
    )

    def __init__(self, estimator, *, trim=0.05, random_state=None):
        self.estimator = estimator
        self.trim = trim
        self.random_state = random_state

    @fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit the estimator, drop the least normal images, fit it again on the rest.

        Parameters
        ----------
        X : array-like
            Training images (or feature vectors), in any form ``estimator``
            accepts; not modified.
        y : array-like of shape (n_samples,) or None, default=None
            Passed to the estimator's ``fit`` (the rows kept, for the second
            fit): ignored by most detectors.

        Returns
        -------
        self : object
        """
        clear_fitted(self)
        # Lists, tensors and other array-likes become arrays, so that the kept
        # rows can be indexed; arrays, DataFrames and sparse matrices pass as is.
        X = as_array(X, "X")
        n_samples = num_samples(X)
        n_trimmed = int(math.ceil(self.trim * n_samples))
        if n_trimmed >= n_samples:
            raise ValueError(
                f"TrimmedOneClass(trim={self.trim}) would drop ceil(trim * n_samples) = "
                f"{n_trimmed} of the {n_samples} training samples (got {n_samples} sample"
                f"{'s' if n_samples != 1 else ''}), leaving none to fit on. Pass more "
                "samples or a smaller trim."
            )
        seed = self._seed()
        trimmed = np.empty(0, dtype=np.intp)
        if n_trimmed > 0:
            screen = self._clone(seed)
            if "calibration" in screen.get_params(deep=False):
                # Its threshold is never used: it ranks every image it learns from.
                screen.set_params(calibration="train")
            screen.fit(X, y)
            scores = np.asarray(screen.score_samples(X), dtype=np.float64)
            scores = np.where(np.isnan(scores), -np.inf, scores)
            trimmed = np.argsort(scores, kind="stable")[:n_trimmed].astype(np.intp)
            kept = np.setdiff1d(np.arange(n_samples), trimmed)
            X = safe_indexing(X, kept)
            y = None if y is None else safe_indexing(np.asarray(y).ravel(), kept)
        estimator = self._clone(seed)
        estimator.fit(X, y)
        self.estimator_ = estimator
        self.n_trimmed_ = n_trimmed
        self.trimmed_indices_ = trimmed
        for attr in ("n_features_in_", "feature_names_in_"):
            if hasattr(estimator, attr):
                setattr(self, attr, getattr(estimator, attr))
        return self

    def _seed(self):
        """The seed for an unseeded inner estimator, or None to leave it alone."""
        if self.random_state is None:
            return None
        params = self.estimator.get_params(deep=False)
        if "random_state" not in params or params["random_state"] is not None:
            return None
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _clone(self, seed):
        estimator = clone(self.estimator)
        if seed is not None:
            estimator.set_params(random_state=seed)
        return estimator

    @property
    def offset_(self):
        """``estimator_.offset_``: the threshold on ``score_samples``."""
        if "estimator_" not in vars(self):
            raise AttributeError("offset_ is set by fit: this TrimmedOneClass is not fitted.")
        return self.estimator_.offset_

    # ------------------------------------------------------------ delegation
    @available_if(_estimator_has("score_samples"))
    def score_samples(self, X):
        """``estimator_.score_samples(X)``: higher means more normal.

        Parameters
        ----------
        X : array-like
            Samples in a form ``fit`` accepts.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.estimator_.score_samples(X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X):
        """``estimator_.decision_function(X)``: negative for predicted anomalies.

        Parameters
        ----------
        X : array-like
            Samples in a form ``fit`` accepts.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.estimator_.decision_function(X)

    @available_if(_estimator_has("predict"))
    def predict(self, X):
        """``estimator_.predict(X)``: +1 for inliers, -1 for anomalies.

        Parameters
        ----------
        X : array-like
            Samples in a form ``fit`` accepts.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.estimator_.predict(X)

    @available_if(_estimator_has("anomaly_score"))
    def anomaly_score(self, X):
        """``estimator_.anomaly_score(X)``: higher means more anomalous.

        Parameters
        ----------
        X : array-like
            Samples in a form ``fit`` accepts.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.estimator_.anomaly_score(X)

    @available_if(_estimator_has("pvalues"))
    def pvalues(self, X):
        """``estimator_.pvalues(X)``: conformal p-values, small means anomalous.

        Their reference is the estimator's calibration scores: images held
        out of the kept ones (see the class description), or those given to
        :meth:`calibrate`.

        Parameters
        ----------
        X : array-like
            Samples in a form ``fit`` accepts.

        Returns
        -------
        pvalues : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.estimator_.pvalues(X)

    @available_if(_estimator_has("calibrate"))
    def calibrate(self, X):
        """Set the threshold of ``estimator_`` from new normal images, without retraining.

        Nothing is trimmed: every image of ``X`` is taken as normal.

        Parameters
        ----------
        X : array-like
            Normal samples the model was not trained on.

        Returns
        -------
        self : object
        """
        check_is_fitted(self)
        self.estimator_.calibrate(X)
        return self

    @available_if(_estimator_has("score_map"))
    def score_map(self, X):
        """``estimator_.score_map(X)``: where each image looks anomalous.

        Parameters
        ----------
        X : array-like
            Images in a form ``fit`` accepts.

        Returns
        -------
        maps : ndarray
            As the estimator's ``score_map`` returns them.
        """
        check_is_fitted(self)
        return self.estimator_.score_map(X)

    @available_if(_estimator_has("explain"))
    def explain(self, X, **kwargs):
        """``estimator_.explain(X, **kwargs)``: attributions of the anomaly score.

        Parameters
        ----------
        X : array-like
            Images in a form ``fit`` accepts.
        **kwargs : dict
            The estimator's ``explain`` arguments (``steps``, ``baseline``).

        Returns
        -------
        attributions : ndarray
            As the estimator's ``explain`` returns them.
        """
        check_is_fitted(self)
        return self.estimator_.explain(X, **kwargs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.input_tags = inner.input_tags
        tags.non_deterministic = inner.non_deterministic
        return tags
