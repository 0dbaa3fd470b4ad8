"""Two-stage one-class classification: self-supervised features, then a classical detector."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, OutlierMixin, clone
from sklearn.svm import OneClassSVM
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._constraints import StrictInterval
from ._feature_maps import MAP_DENSITIES, fit_map_density, mahalanobis_maps
from ._outlier import (
    THRESHOLD_CONSTRAINTS,
    OutlierContractMixin,
    clear_fitted,
    select_inliers,
    standardisation,
)
from ._sklearn_compat import (
    HasMethods,
    StrOptions,
    fit_context,
    num_samples,
    safe_indexing,
)
from .detectors import GaussianDensity, GaussianKDE, check_bandwidth, scaled_gamma
from .images import as_array
from .self_supervised import SelfSupervisedFeatures

__all__ = ["TwoStageOneClass"]

DETECTORS = ("kde", "ocsvm", "gde")


def _combine_scores(scores, mean, std):
    """The sum of the detectors' standardised scores (one detector: its score as is).

    Arithmetic and indexing only, so the same function combines NumPy arrays in
    ``score_samples`` and tensors in the graph of :func:`skocc.export_onnx`.
    """
    if scores.shape[1] == 1:
        return scores[:, 0]
    return ((scores - mean) / std).sum(axis=1)


class TwoStageOneClass(OutlierContractMixin, OutlierMixin, BaseEstimator):
    """Self-supervised features and a classical one-class detector, as one estimator.

    The framework of Sohn et al. (ICLR 2021): a network learns a
    representation of the normal images by self-supervision
    (:class:`skocc.SelfSupervisedFeatures`), then a classical detector is
    fitted on the features of the same images. Follows scikit-learn's outlier
    contract: ``score_samples`` (higher = more normal) is the detector's,
    ``decision_function = score_samples - offset_`` with ``offset_`` the
    ``contamination`` quantile of the training scores, ``predict`` in
    {+1, -1}.

    A ``Pipeline`` builds the same kind of model from any detector::

        Pipeline([("features", SelfSupervisedFeatures()), ("detector", OneClassSVM())])

    It differs in three ways: the detector keeps its own defaults
    (``OneClassSVM``'s ``gamma="scale"`` and ``nu=0.5``, not the ``gamma`` rule
    and ``nu=0.1`` used here), there is no rotation ensemble, and with
    ``inlier_label`` set on the features the pipeline's detector still fits on
    every row, anomalies included (here it fits on the inliers only).

    To compare several detectors without retraining the network, give that
    pipeline a ``memory`` (a :class:`joblib.Memory` or a directory): the fitted
    features step is cached and reused whenever the features' parameters and
    the data are unchanged (see the user guide).

    Parameters
    ----------
    features : SelfSupervisedFeatures or None, default=None
        The first stage; cloned at ``fit``. None: ``SelfSupervisedFeatures()``
        (contrastive learning with distribution augmentation, the small
        encoder).
    detector : {"kde", "ocsvm", "gde"} or estimator, default="gde"
        The second stage, fitted on the training features:

        - ``"kde"``: exact Gaussian kernel density
          (:class:`skocc.detectors.GaussianKDE`, on the features' device)
          with ``gamma`` (``bandwidth = 1 / sqrt(2 gamma)``);
        - ``"ocsvm"``: :class:`sklearn.svm.OneClassSVM` with an RBF kernel of
          ``gamma`` and ``nu=0.1``;
        - ``"gde"``: one full-covariance Gaussian
          (:class:`skocc.detectors.GaussianDensity`), the default: the best
          of the three in every configuration of the digits and MNIST
          benchmarks (:doc:`/benchmarks`);
        - any estimator with ``fit`` and ``score_samples`` (higher = more
          normal, as scikit-learn's outlier detectors), cloned at ``fit``
          (a skocc detector is given ``calibration="train"``: this model
          calibrates the threshold of the whole, not of its detector).
          Its parameters can be searched as ``detector__<name>``.
    gamma : float or "auto", default="auto"
        RBF parameter of ``"kde"`` and ``"ocsvm"``. ``"auto"`` is Sohn et
        al.'s rule ``10 / (Var * d)`` on the (L2-normalised) training
        features (:func:`skocc.detectors.scaled_gamma`). The value used is
        ``gamma_``. Ignored by other detectors.
    rotation_ensemble : bool, default=True
        Also score the images rotated by one, two and three quarter turns:
        one detector per turn, fitted on the same turn of the training
        images; the score is the sum of the four scores, each standardised
        by its mean and standard deviation on the training images. Four
        times the scoring cost, no extra training. Pairs with the pretexts
        ``"contrastive_da"`` and ``"rotation"``, whose features keep rotated
        copies apart; it raised the mean AUROC of both on the digits and
        MNIST benchmarks (:doc:`/benchmarks`).
        Needs :class:`SelfSupervisedFeatures` (set False for other
        features).
    map_density : {"location", "shared"} or None, default="location"
        The Gaussian behind :meth:`score_map`, fitted on the features'
        spatial maps (:meth:`SelfSupervisedFeatures.feature_maps`) of the
        training images: ``"location"``, one mean and Ledoit-Wolf-shrunk
        covariance per location of the map (as PaDiM); ``"shared"``, one for
        all locations (position-invariant, for textures without layout).
        ``"location"`` keeps ``n_locations * n_channels**2`` float64 values
        (33 MB for a 32 x 32 grid of 64 channels). None: no map (``fit``
        skips the extra pass over the training images, and ``score_map``
        raises). Needs :class:`SelfSupervisedFeatures`;
        other features get no map.
    contamination : float, default=0.05
        The share of new normal images that ``predict`` may flag -1, in
        (0, 0.5]; sets ``offset_`` (see ``calibration``).
    calibration : {"holdout", "train"}, default="holdout"
        ``"holdout"``: ``fit`` holds out ``calibration_size`` of the (inlier)
        images, trains the network and the detectors on the rest, and sets
        ``offset_`` to the split-conformal quantile of the held-out images'
        scores, so that a new normal image exchangeable with them is flagged
        with probability at most ``contamination``. ``"train"``: trains on
        every image and takes the ``contamination`` quantile of the training
        scores (scikit-learn's definition), which flags more than
        ``contamination`` of new normal images. With ``features`` already
        fitted (a :class:`~sklearn.frozen.FrozenEstimator`), the network has
        seen the held-out images, and only the detector is calibrated
        honestly: call :meth:`calibrate` with images the network never saw.
    calibration_size : float, default=0.2
        Share of the images held out for ``"holdout"``, in (0, 0.5], at least
        ``ceil(1 / contamination - 1)``; with fewer than twice that many
        images nothing is held out and a
        :class:`~skocc.conformal.CalibrationWarning` is raised.
    random_state : int, RandomState instance or None, default=None
        Draws the held-out images, and seeds the features and the detector
        whose own ``random_state`` is None (as scikit-learn's meta-estimators
        pass theirs on); an explicit seed of theirs is kept.

    Attributes
    ----------
    features_ : SelfSupervisedFeatures
        The fitted first stage.
    detector_ : estimator
        The fitted second stage (for unrotated images).
    detectors_ : list of estimator
        One fitted detector per quarter turn scored: ``[detector_]``, or four
        with ``rotation_ensemble=True``.
    score_mean_ : ndarray of shape (n_detectors,)
        Mean training score of every detector in ``detectors_`` (used to standardise the
        rotation ensemble).
    score_std_ : ndarray of shape (n_detectors,)
        Their standard deviations (1 where constant).
    gamma_ : float or None
        The RBF parameter used for unrotated images (None for detectors that
        have none); with ``gamma="auto"`` and the rotation ensemble, each
        turn's detector applies the rule to its own features.
    offset_ : float
        Threshold on ``score_samples``.
    calibration_scores_ : ndarray of shape (n_calibration,)
        Sorted scores of the images ``offset_`` was set from (held out, given
        to ``calibrate``, or the training images with ``calibration="train"``):
        the reference of ``pvalues``.
    map_mean_ : ndarray of shape (n_locations, n_channels)
        Mean feature vector of every location of the spatial map
        (``n_locations`` is 1 with ``map_density="shared"``); absent with
        ``map_density=None`` or features without spatial maps.
    map_precision_ : ndarray of shape (n_locations, n_channels, n_channels)
        Inverse of the shrunk covariance of every location.
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
    ...     SelfSupervisedFeatures(max_epochs=2, random_state=0), detector="kde",
    ...     rotation_ensemble=False,
    ... ).fit(X[y == 0])
    >>> model.score_samples(X[:4]).shape
    (4,)
    >>> sorted(set(model.predict(X).tolist()))
    [-1, 1]
    """

    _parameter_constraints: dict = {
        "features": [HasMethods(["fit", "transform"]), None],
        "detector": [StrOptions(set(DETECTORS)), HasMethods(["fit", "score_samples"])],
        "gamma": [StrictInterval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "rotation_ensemble": ["boolean"],
        "map_density": [StrOptions(set(MAP_DENSITIES)), None],
        **THRESHOLD_CONSTRAINTS,
        "random_state": ["random_state"],
    }

    # Why skocc.save refuses this class (read by skocc.save).
    _skocc_save_refusal = (
        "its second stage is a scikit-learn detector, which only pickle can store. Save the "
        "network with skocc.save(model.features_, path) and the whole model with joblib "
        "(load such files only if you trust them)."
    )

    def __init__(
        self,
        features=None,
        detector="gde",
        *,
        gamma="auto",
        rotation_ensemble=True,
        map_density="location",
        contamination=0.05,
        calibration="holdout",
        calibration_size=0.2,
        random_state=None,
    ):
        self.features = features
        self.detector = detector
        self.gamma = gamma
        self.rotation_ensemble = rotation_ensemble
        self.map_density = map_density
        self.contamination = contamination
        self.calibration = calibration
        self.calibration_size = calibration_size
        self.random_state = random_state

    @fit_context(prefer_skip_nested_validation=False)
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
        clear_fitted(self)
        if sp.issparse(X):
            # Refused here, before any indexing of X for the held-out split.
            raise TypeError(
                "Sparse data was passed to TwoStageOneClass, but dense data is required: "
                "pass the images as a dense array."
            )
        # Lists and tensors become arrays, so that the held-out split can index
        # them; None, strings and generators get an error naming X.
        X = as_array(X, "X")
        rng = check_random_state(self.random_state)
        features = clone(self.features) if self.features is not None else SelfSupervisedFeatures()
        self._pass_on_random_state(features, rng)
        turns = self._quarter_turns(features)  # before training: a bad setting fails fast
        selected = getattr(features, "inlier_label", None)
        if selected is not None and y is not None:
            # The network and the detector learn from the inliers only, and
            # only inliers may calibrate the threshold.
            inliers = select_inliers(y, selected, num_samples(X), type(features).__name__)
            X, y = safe_indexing(X, inliers), safe_indexing(np.asarray(y).ravel(), inliers)
        split_seed = (
            int(rng.randint(np.iinfo(np.int32).max)) if self.calibration == "holdout" else None
        )
        # Below fit's wrapper: the user's code is 3 frames up.
        train, held_out = self._calibration_split(num_samples(X), split_seed, stacklevel=3)
        if held_out is not None:
            X_held_out = safe_indexing(X, held_out)
            X = safe_indexing(X, train)
            y = None if y is None else safe_indexing(y, train)
        # fit then transform (not fit_transform), so a FrozenEstimator of fitted
        # features works: the network is reused, not retrained.
        features.fit(X, y)
        detectors, gammas, scores = [], [], []
        for train_features in self._features_per_turn(features, X, turns):
            detector, gamma = self._make_detector(train_features, rng)
            detector.fit(train_features)
            detectors.append(detector)
            gammas.append(gamma)
            scores.append(np.asarray(detector.score_samples(train_features), dtype=np.float64))
        scores = np.stack(scores, axis=1)
        self.features_ = features
        self.detectors_ = detectors
        self.detector_ = detectors[0]
        self.gamma_ = gammas[0]
        self.score_mean_, self.score_std_ = standardisation(scores)
        if self.map_density is not None and hasattr(features, "feature_maps"):
            self.map_mean_, self.map_precision_ = fit_map_density(
                features.feature_maps(X), self.map_density
            )
        for attr in ("n_features_in_", "feature_names_in_"):
            if hasattr(features, attr):
                setattr(self, attr, getattr(features, attr))
        if held_out is None:
            self._set_threshold(self._combine(scores), held_out=False)
        else:
            self._set_threshold(self.score_samples(X_held_out), held_out=True)
        return self

    def _pass_on_random_state(self, features, rng):
        """Seed the features whose ``random_state`` is None from ours (when we have one)."""
        if self.random_state is None:
            return
        seed = int(rng.randint(np.iinfo(np.int32).max))
        params = features.get_params(deep=False) if hasattr(features, "get_params") else {}
        if "random_state" in params and params["random_state"] is None:
            features.set_params(random_state=seed)

    def _quarter_turns(self, features):
        if not self.rotation_ensemble:
            return (0,)
        if not hasattr(features, "transform_rotated"):
            raise ValueError(
                "rotation_ensemble=True needs features that can rotate images "
                f"(SelfSupervisedFeatures); got {type(features).__name__}."
            )
        return (0, 1, 2, 3)

    @staticmethod
    def _features_per_turn(features, X, turns):
        """One feature array per quarter turn in ``turns``; one pass over ``X``."""
        if turns == (0,):
            return [features.transform(X)]
        return features.transform_rotated(X, quarter_turns=turns)

    def _combine(self, scores):
        """The score from one column per detector (one detector: its score as is)."""
        return _combine_scores(scores, self.score_mean_, self.score_std_)

    def _make_detector(self, train, rng):
        if not isinstance(self.detector, str):
            detector = clone(self.detector)
            self._pass_on_random_state(detector, rng)
            if "calibration" in detector.get_params(deep=False):
                # A skocc detector's own threshold is never used here: it fits
                # on every training feature vector instead of holding some out.
                detector.set_params(calibration="train")
            return detector, None
        # This model calibrates its own threshold on the combined score; its
        # detectors fit on every training feature vector.
        if self.detector == "gde":
            return GaussianDensity(calibration="train"), None
        gamma = scaled_gamma(train) if self.gamma == "auto" else float(self.gamma)
        if self.detector == "kde":
            bandwidth = 1.0 / math.sqrt(2.0 * gamma)  # 0.0 where 2 * gamma overflows to inf
            check_bandwidth(bandwidth, f"gamma={self.gamma!r} (bandwidth = 1 / sqrt(2 gamma))")
            # "auto": the GPU when there is one at scoring time, so a model
            # trained on a GPU and unpickled on a CPU-only machine still scores.
            return GaussianKDE(bandwidth=bandwidth, calibration="train", device="auto"), gamma
        return OneClassSVM(kernel="rbf", gamma=gamma, nu=0.1), gamma

    def score_samples(self, X):
        """Normality score of every sample: higher means more normal.

        The detector's ``score_samples`` on the features of ``X`` (the
        log-density for ``"kde"`` and ``"gde"``); with
        ``rotation_ensemble=True``, the sum of the four standardised scores.

        Parameters
        ----------
        X : array-like
            Images in a layout accepted by ``fit``.

        Returns
        -------
        scores : ndarray of shape (n_samples,), dtype float64
        """
        check_is_fitted(self)
        turns = tuple(range(len(self.detectors_)))
        features = self._features_per_turn(self.features_, X, turns)
        scores = np.stack(
            [np.asarray(d.score_samples(f), dtype=np.float64) for d, f in zip(self.detectors_, features)],
            axis=1,
        )
        return self._combine(scores)

    def score_map(self, X):
        """Per-pixel anomaly map: where an image looks anomalous.

        At every location of the features' spatial map
        (:meth:`SelfSupervisedFeatures.feature_maps`), the Mahalanobis
        distance of the image's feature vector to the Gaussian of
        ``map_density`` fitted on the training images; resized bilinearly
        from the map's grid to the resolution of ``X``. The same sign and
        shape as :meth:`skocc.ConvAEOneClass.score_map`.

        Parameters
        ----------
        X : array-like
            Images in a layout accepted by ``fit``.

        Returns
        -------
        maps : ndarray of shape (n_samples, H, W), dtype float32
            Higher = more anomalous; ``H, W`` the images' size.

        See Also
        --------
        skocc.plotting.plot_anomaly_maps : The maps over the images.
        """
        check_is_fitted(self)
        if not hasattr(self, "map_mean_"):
            raise ValueError(
                "score_map needs a model fitted with map_density in "
                f"{MAP_DENSITIES} and SelfSupervisedFeatures as features; this one has "
                f"map_density={self.map_density!r} and features "
                f"{type(self.features_).__name__}."
            )
        size = tuple(self.features_.image_shape_[-2:])
        return mahalanobis_maps(
            self.features_.feature_maps(X), self.map_mean_, self.map_precision_, size
        )

    def explain(self, X, *, steps=32, baseline="blur"):
        from ._explain import check_explain_arguments, explain_images
        from ._score_graph import TwoStageGraph, check_two_stage

        check_is_fitted(self)
        check_explain_arguments(steps, baseline)
        check_two_stage(self, caller="explain")
        graph = TwoStageGraph(self, self.features_.net_.module_, "channels_first", caller="explain")
        return explain_images(graph, self.features_, X, steps=steps, baseline=baseline)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.non_deterministic = False
        return tags


def _explain_doc():
    from ._explain import EXPLAIN_DOC

    return EXPLAIN_DOC.replace(
        "Unlike :meth:`score_map`",
        "Unlike a map of where the features look unlike the normal ones",
    )


TwoStageOneClass.explain.__doc__ = _explain_doc()
