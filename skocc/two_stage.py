"""Two-stage one-class classification: self-supervised features, then a classical detector."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context, clone
from sklearn.svm import OneClassSVM
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .detectors import GaussianDensity, GaussianKDE, scaled_gamma
from .self_supervised import SelfSupervisedFeatures

__all__ = ["TwoStageOneClass"]

DETECTORS = ("kde", "ocsvm", "gde")


class TwoStageOneClass(OutlierMixin, BaseEstimator):
    """Self-supervised features and a classical one-class detector, as one estimator.

    The framework of Sohn et al. (ICLR 2021): a network learns a
    representation of the normal images by self-supervision
    (:class:`skocc.SelfSupervisedFeatures`), then a classical detector is
    fitted on the features of the same images. Follows scikit-learn's outlier
    contract: ``score_samples`` (higher = more normal) is the detector's,
    ``decision_function = score_samples - offset_`` with ``offset_`` the
    ``contamination`` quantile of the training scores, ``predict`` in
    {+1, -1}.

    The same model as a ``Pipeline``, with the detector's own ``offset_``::

        Pipeline([("features", SelfSupervisedFeatures()), ("detector", OneClassSVM())])

    To compare several detectors without retraining the network, give that
    pipeline a ``memory`` (a :class:`joblib.Memory` or a directory): the fitted
    features step is cached and reused whenever the features' parameters and
    the data are unchanged (see the user guide).

    Parameters
    ----------
    features : SelfSupervisedFeatures or None, default=None
        The first stage; cloned at ``fit``. None: ``SelfSupervisedFeatures()``
        (rotation prediction with an MLP head, the small encoder).
    detector : {"kde", "ocsvm", "gde"} or estimator, default="kde"
        The second stage, fitted on the training features:

        - ``"kde"``: exact Gaussian kernel density
          (:class:`skocc.detectors.GaussianKDE`, on the features' device)
          with ``gamma`` (``bandwidth = 1 / sqrt(2 gamma)``);
        - ``"ocsvm"``: :class:`sklearn.svm.OneClassSVM` with an RBF kernel of
          ``gamma`` and ``nu=0.1``;
        - ``"gde"``: one full-covariance Gaussian
          (:class:`skocc.detectors.GaussianDensity`);
        - any estimator with ``fit`` and ``score_samples`` (higher = more
          normal, as scikit-learn's outlier detectors), cloned at ``fit``.
          Its parameters can be searched as ``detector__<name>``.
    gamma : float or "auto", default="auto"
        RBF parameter of ``"kde"`` and ``"ocsvm"``. ``"auto"`` is Sohn et
        al.'s rule ``10 / (Var * d)`` on the (L2-normalised) training
        features (:func:`skocc.detectors.scaled_gamma`). The value used is
        ``gamma_``. Ignored by other detectors.
    contamination : float, default=0.05
        Proportion of training samples predicted -1; sets ``offset_``.

    Attributes
    ----------
    features_ : SelfSupervisedFeatures
        The fitted first stage.
    detector_ : estimator
        The fitted second stage.
    gamma_ : float or None
        The RBF parameter used (None for detectors that have none).
    offset_ : float
        Threshold on ``score_samples``.
    n_features_in_ : int
        Number of values per sample seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names, when ``fit`` was given a DataFrame with string column
        names.

    See Also
    --------
    skocc.SelfSupervisedFeatures : The first stage on its own, a transformer.
    skocc.ConvAEOneClass : The end-to-end autoencoder detector.

    References
    ----------
    .. [1] K. Sohn, C.-L. Li, J. Yoon, M. Jin and T. Pfister, "Learning and
       Evaluating Representations for Deep One-class Classification", ICLR
       2021.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skocc import SelfSupervisedFeatures, TwoStageOneClass
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X.reshape(-1, 8, 8) / 16.0
    >>> model = TwoStageOneClass(
    ...     SelfSupervisedFeatures(max_epochs=2, random_state=0), detector="kde"
    ... ).fit(X[y == 0])
    >>> model.score_samples(X[:4]).shape
    (4,)
    >>> sorted(set(model.predict(X).tolist()))
    [-1, 1]
    """

    _parameter_constraints: dict = {
        "features": [HasMethods(["fit", "transform"]), None],
        "detector": [StrOptions(set(DETECTORS)), HasMethods(["fit", "score_samples"])],
        "gamma": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "contamination": [Interval(Real, 0, 0.5, closed="right")],
    }

    def __init__(self, features=None, detector="kde", *, gamma="auto", contamination=0.05):
        self.features = features
        self.detector = detector
        self.gamma = gamma
        self.contamination = contamination

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Learn the features of the images, then fit the detector on them.

        Parameters
        ----------
        X : array-like
            Training images, in any layout :class:`SelfSupervisedFeatures`
            accepts.
        y : array-like of shape (n_samples,) or None, default=None
            Passed to the features' ``fit``: ignored unless their
            ``inlier_label`` is set, in which case the network and the detector
            learn only from the samples labelled ``inlier_label``.

        Returns
        -------
        self : object
        """
        for name in [a for a in vars(self) if a.endswith("_") and not a.startswith("__")]:
            delattr(self, name)
        features = clone(self.features) if self.features is not None else SelfSupervisedFeatures()
        train = features.fit_transform(X, y)
        selected = getattr(features, "inlier_label", None)
        if selected is not None and y is not None:
            # The detector sees the features of the images the network learnt from.
            train = train[np.asarray(y).ravel() == selected]
        detector, gamma = self._make_detector(train, features)
        detector.fit(train)
        self.features_ = features
        self.detector_ = detector
        self.gamma_ = gamma
        for attr in ("n_features_in_", "feature_names_in_"):
            if hasattr(features, attr):
                setattr(self, attr, getattr(features, attr))
        scores = np.asarray(detector.score_samples(train), dtype=np.float64)
        self.offset_ = float(np.percentile(scores, 100.0 * self.contamination))
        return self

    def _make_detector(self, train, features):
        if not isinstance(self.detector, str):
            return clone(self.detector), None
        if self.detector == "gde":
            return GaussianDensity(), None
        gamma = scaled_gamma(train) if self.gamma == "auto" else float(self.gamma)
        if self.detector == "kde":
            device = getattr(features, "device_", "cpu")
            return GaussianKDE(bandwidth=1.0 / math.sqrt(2.0 * gamma), device=device), gamma
        return OneClassSVM(kernel="rbf", gamma=gamma, nu=0.1), gamma

    def score_samples(self, X):
        """Normality score of every sample: higher means more normal.

        The detector's ``score_samples`` on the features of ``X`` (the
        log-density for ``"kde"`` and ``"gde"``).

        Parameters
        ----------
        X : array-like
            Images in a layout accepted by ``fit``.

        Returns
        -------
        scores : ndarray of shape (n_samples,), dtype float64
        """
        check_is_fitted(self)
        return np.asarray(
            self.detector_.score_samples(self.features_.transform(X)), dtype=np.float64
        )

    def anomaly_score(self, X):
        """``-score_samples(X)``: higher means more anomalous (PyOD's convention).

        Parameters
        ----------
        X : array-like
            Images in a layout accepted by ``fit``.

        Returns
        -------
        scores : ndarray of shape (n_samples,), dtype float64
        """
        return -self.score_samples(X)

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative for predicted anomalies.

        Parameters
        ----------
        X : array-like
            Images in a layout accepted by ``fit``.

        Returns
        -------
        decision : ndarray of shape (n_samples,), dtype float64
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """+1 for predicted inliers, -1 for predicted anomalies.

        Parameters
        ----------
        X : array-like
            Images in a layout accepted by ``fit``.

        Returns
        -------
        labels : ndarray of shape (n_samples,), dtype int
        """
        decision = self.decision_function(X)
        labels = np.ones(decision.shape[0], dtype=int)
        labels[~(decision >= 0)] = -1
        return labels

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.non_deterministic = False
        return tags
