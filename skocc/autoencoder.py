"""Convolutional autoencoder one-class classifiers."""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import TransformerTags
from sklearn.utils.validation import check_is_fitted

from ._docstrings import fill_doc, with_defaults
from ._engine import OneClassNet
from ._explain import EXPLAIN_DOC, check_explain_arguments, explain_images
from ._outlier import leave_one_out_standardisation, standardisation
from ._score_graph import AutoencoderGraph
from ._sklearn_compat import StrOptions
from .base import BaseDeepOneClass, StrictInterval
from .detectors import ridged_cholesky, shrunk_gaussian, whitening
from .nn import ConvAutoencoder, ImagePreprocess
from .nn.losses import DIVERSITIES, NORMS
from .nn.objectives import (
    SCORE_TYPES,
    AutoencoderObjective,
    LatentGaussian,
    combine_score_terms,
)

__all__ = ["ConvAEOneClass"]



def _check_channels(channels):
    if len(channels) == 0 or not all(
        isinstance(c, Integral) and not isinstance(c, bool) and c >= 1 for c in channels
    ):
        raise ValueError(
            "channels must be a non-empty tuple of positive ints (one width per "
            f"encoder level); got {channels!r}."
        )
    return tuple(int(c) for c in channels)


@with_defaults(batch_size=16)
@fill_doc
class ConvAEOneClass(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseDeepOneClass):
    """Convolutional autoencoder one-class classifier with targeted collapse.

    A convolutional encoder maps every image to a latent vector ``z`` of size
    ``latent_dim``; a decoder reconstructs the image from ``z``. Trained on
    normal images only, with the per-sample loss

    .. math::

        L(x) = \\lVert x - \\hat{x} \\rVert + \\beta \\, \\lVert z \\rVert

    (``norm="l2"``, the default: plain Euclidean norms, as in the published code
    of the targeted-collapse autoencoder of Ghafourian et al.) or with both norms
    squared (``norm="squared_l2"``, the form of Laakom et al.'s multimodal
    convolutional autoencoder). The penalty pulls the codes of normal images
    towards the origin ("targeted collapse"), so that a large ``||z||`` can
    signal an anomaly.

    The decoder is spectrally normalised (``lipschitz_decoder=True``): it cannot
    rescale the code for free, so shrinking ``z`` costs reconstruction quality
    (see :class:`skocc.nn.ConvDecoder`).

    After training, ``fit`` models the codes of the training images with one
    Gaussian (their mean and Ledoit-Wolf covariance, ``latent_location_`` and
    ``latent_covariance_``), and the default score combines two standardised
    terms: how badly the image is reconstructed, and how far its code lies
    from the normal codes in the Mahalanobis distance of that Gaussian
    (``score_type="reconstruction+mahalanobis"``). The reconstruction error
    was the better term on small, clean data sets and the Mahalanobis
    distance on larger, more varied ones; either alone lost to
    LocalOutlierFactor on the pixels somewhere, and their combination did
    not on the four data sets measured (:doc:`/benchmarks`).

    The latent norm ``||z||`` alone (``score_type="latent"``, the score of
    the targeted-collapse papers) is unreliable: it measures how strongly
    the encoder responds to an image, which follows the image's brightness
    and is *lower* for unfamiliar images. With the defaults it ranked
    anomalies as more normal than normal images on the digits and on COIL-20
    photographs, and worked on MNIST. The distance of a code from the normal
    codes, with their covariance, did not invert on any of them.

    Parameters
    ----------
    beta : float, default=0.0
        Weight of the latent-norm penalty. 0 trains a plain autoencoder. From
        about 0.3 on, with ``norm="l2"``, the decoder's output stays close to a
        template of the normal class and the information moves into ``||z||``;
        on the 8 x 8 digits, ``beta=1`` with ``score_type="combined"`` scored
        well, but not on photographs (COIL-20).
    latent_dim : int, default=64
        Size of the latent code ``z``.
    channels : tuple of int, default=(32, 64, 128)
        Width of each convolutional level of the encoder (the decoder mirrors
        it). Each level halves every side that is at least 4 pixels long.
    norm : {"l2", "squared_l2"}, default="l2"
        Whether both loss terms (and the scores) are Euclidean norms or their
        squares.
    score_type : {"reconstruction+mahalanobis", "reconstruction", "mahalanobis", \
"latent", "combined"}, default="reconstruction+mahalanobis"
        Anomaly score: ``"reconstruction"`` is ``||x - x_hat||``;
        ``"mahalanobis"`` is the Mahalanobis distance of ``z`` under the
        Gaussian of the training codes; ``"latent"`` is ``||z||``.
        ``"reconstruction+mahalanobis"`` and ``"combined"`` (reconstruction
        and ``||z||``, the targeted-collapse papers' combination) standardise
        each of their two terms, ``z = (term - mean) / std``, and add up
        ``softplus(z) ** 2``: near 0 for a term inside the normal range and
        near ``z ** 2`` above it, so that neither term dominates through its
        scale and an unusually low term does not cancel an unusually high one
        (:func:`skocc.nn.objectives.combine_score_terms`). The means and
        standard deviations are those of the held-out images with
        ``calibration="holdout"`` (the training images' understate the
        reconstruction error of new images), of the training images
        otherwise or when fewer than three are held out. (Not named ``score``: that name is
        scikit-learn's method for ``estimator.score(X, y)``.) Changing it
        after ``fit`` changes the scores and moves ``offset_`` with them
        (from the score terms of the calibration images, which are kept).
    lipschitz_decoder : bool, default=True
        Spectrally normalise every decoder layer. Turn off only to reproduce
        unconstrained autoencoders; the latent score then carries little
        information when ``beta > 0``.
    {{diversity_params}}
    {{threshold_params}}
    {{data_params}}
    {{training_params}}

    Attributes
    ----------
    {{fitted_attributes}}
    score_mean_ : ndarray of shape (3,)
        Mean of the reconstruction error, the latent norm and the Mahalanobis
        distance of the code on the held-out images, or on the training
        images when fewer than three are held out (used by the score types of
        two terms).
    score_std_ : ndarray of shape (3,)
        Their standard deviations (1 where a term is constant).
    latent_location_ : ndarray of shape (`latent_dim`,)
        Mean code of the training images.
    latent_covariance_ : ndarray of shape (`latent_dim`, `latent_dim`)
        Ledoit-Wolf covariance of their codes. ``fit`` refuses a
        ``latent_dim`` whose covariance would not fit in host memory.

    See Also
    --------
    sklearn.svm.OneClassSVM : Same outlier-detector contract.
    sklearn.ensemble.IsolationForest : Same outlier-detector contract.

    References
    ----------
    .. [1] A. Ghafourian et al., "Targeted collapse regularized autoencoder for
       anomaly detection: black hole at the center", arXiv:2306.12627.
    .. [2] F. Laakom et al., "Convolutional autoencoder-based multimodal
       one-class classification", arXiv:2309.14090.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skocc import ConvAEOneClass
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X.reshape(-1, 8, 8) / 16.0
    >>> model = ConvAEOneClass(random_state=0).fit(X[y == 0])
    >>> model.score_samples(X[:4]).shape
    (4,)
    >>> bool(model.score_samples(X[y == 0]).mean() > model.score_samples(X[y != 0]).mean())
    True
    >>> sorted(set(model.predict(X).tolist()))
    [-1, 1]
    """

    _parameter_constraints: dict = {
        **BaseDeepOneClass._parameter_constraints,
        "beta": [StrictInterval(Real, 0, None, closed="left")],
        "latent_dim": [StrictInterval(Integral, 1, None, closed="left")],
        "channels": [tuple, list],
        "norm": [StrOptions(set(NORMS))],
        "score_type": [StrOptions(set(SCORE_TYPES))],
        "lipschitz_decoder": ["boolean"],
        "diversity": [StrOptions(set(DIVERSITIES)), None],
        "diversity_weight": [StrictInterval(Real, 0, None, closed="left")],
        "diversity_gamma": [StrictInterval(Real, 0, None, closed="neither")],
    }

    _persisted_attributes = BaseDeepOneClass._persisted_attributes + (
        "score_mean_",
        "score_std_",
        "latent_location_",
        "latent_covariance_",
    )

    def __init__(
        self,
        *,
        beta=0.0,
        latent_dim=64,
        channels=(32, 64, 128),
        norm="l2",
        score_type="reconstruction+mahalanobis",
        lipschitz_decoder=True,
        diversity=None,
        diversity_weight=0.1,
        diversity_gamma=1.0,
        contamination=0.05,
        calibration="holdout",
        calibration_size=0.2,
        inlier_label=None,
        resolution=None,
        normalize=None,
        data_format="auto",
        image_shape=None,
        max_epochs=50,
        batch_size=16,
        lr=1e-3,
        weight_decay=0.0,
        device="auto",
        precision="float32",
        random_state=None,
        verbose=0,
        callbacks=None,
        net_params=None,
    ):
        self.beta = beta
        self.latent_dim = latent_dim
        self.channels = channels
        self.norm = norm
        self.score_type = score_type
        self.lipschitz_decoder = lipschitz_decoder
        self.diversity = diversity
        self.diversity_weight = diversity_weight
        self.diversity_gamma = diversity_gamma
        self.contamination = contamination
        self.calibration = calibration
        self.calibration_size = calibration_size
        self.inlier_label = inlier_label
        self.resolution = resolution
        self.normalize = normalize
        self.data_format = data_format
        self.image_shape = image_shape
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
        self.net_params = net_params

    # The training loss, score terms and pixel map of the network (skocc.nn.objectives).
    _objective = AutoencoderObjective

    def _module_params(self):
        """The network class and its shape-determining arguments."""
        size = None if self.resolution is None else (self.resolution, self.resolution)
        return ConvAutoencoder, dict(
            input_shape=self.input_shape_,
            channels=_check_channels(self.channels),
            latent_dim=self.latent_dim,
            preprocess=ImagePreprocess(size=size, normalize=self.normalize),
            lipschitz_decoder=self.lipschitz_decoder,
        )

    def _build_net_params(self):
        module, module_kwargs = self._module_params()
        return dict(
            net_class=OneClassNet,
            module=module,
            **{f"module__{key}": value for key, value in module_kwargs.items()},
            criterion=self._objective,
            criterion__beta=self.beta,
            criterion__norm=self.norm,
            criterion__diversity=self.diversity,
            criterion__diversity_weight=self.diversity_weight,
            criterion__diversity_gamma=self.diversity_gamma,
        )

    def _after_fit(self, images, held_out):
        # The Gaussian of the training codes first: the score terms include
        # the codes' Mahalanobis distances under it.
        codes = self._map_batches(images, lambda module, xb: module.encode(xb))
        self.latent_location_, covariance, _ = shrunk_gaussian(
            codes.reshape(len(codes), -1),
            name="the latent codes of the training images",
            advice="The network diverged: lower lr, or train with precision='float32'.",
        )
        # Exactly symmetric, so that a saved model's covariance can be checked for it.
        self.latent_covariance_ = (covariance + covariance.T) / 2
        super()._after_fit(images, held_out)

    def _code_size(self):
        """Entries of the code the latent Gaussian models."""
        return int(self.latent_dim)

    def _host_fit_memory(self):
        # The covariance of the codes, Ledoit-Wolf's empirical one, the
        # Cholesky factor and the whitening matrix: four d x d float64 arrays.
        d = self._code_size()
        what = f"the Gaussian of its latent codes (four {d} x {d} float64 matrices)"
        return 4 * 8 * d * d, what, f"latent_dim={self.latent_dim!r}"

    def _gaussian_blocks(self):
        """``(code indices, location, covariance)`` of every Gaussian in the score terms."""
        indices = np.arange(len(self.latent_location_))
        return [(indices, self.latent_location_, self.latent_covariance_)]

    def _latent_gaussian(self, device="cpu"):
        """The fitted Gaussians' distances as a float64 module on ``device`` (:class:`~skocc.nn.LatentGaussian`).

        Built once per fitted Gaussian and device (a Cholesky factor and its
        inverse per block) and kept, since every scoring call needs it; the
        caller must not move or modify it (copy it first).
        """
        cache = getattr(self, "_latent_gaussian_cache", None)
        if cache is None or cache[0] is not self.latent_covariance_:
            cpu = LatentGaussian(
                [
                    (indices, location, whitening(ridged_cholesky(covariance)))
                    for indices, location, covariance in self._gaussian_blocks()
                ]
            )
            cache = (self.latent_covariance_, {"cpu": cpu})
            self._latent_gaussian_cache = cache
        modules, key = cache[1], str(torch.device(device))
        if key not in modules:
            modules[key] = copy.deepcopy(modules["cpu"]).to(device)
        return modules[key]

    def _score_terms(self, images):
        """(n, k) float64: the objective's terms, then the codes' Mahalanobis distances."""
        # The objective the net was trained with, even if set_params changed norm since.
        objective = self.net_.criterion_
        # float64 on the network's device where it has float64 (MPS has not).
        device = self.device_ if torch.device(self.device_).type in ("cpu", "cuda") else "cpu"
        gaussian = self._latent_gaussian(device)
        return self._map_batches(
            images, lambda module, xb: objective.score_terms(module(xb), gaussian)
        )

    def _fit_score_stats(self, terms):
        # The held-out images' statistics where fit holds images out: a
        # network reconstructs its training images better than new normal
        # ones, so that the training statistics give the reconstruction error
        # too much weight against the latent distance.
        self.score_mean_, self.score_std_ = standardisation(terms)

    def _score_key(self):
        return self.score_type

    def _score_columns(self):
        """Column of every score term in ``_score_terms``, as a slice of one."""
        return {"reconstruction": slice(0, 1), "latent": slice(1, 2), "mahalanobis": slice(2, 3)}

    def _anomaly_scores_from_terms(self, terms, *, leave_one_out=False):
        return self._combine(terms, self._score_columns(), leave_one_out=leave_one_out)[:, 0]

    def _combine(self, terms, columns, *, leave_one_out=False):
        """The anomaly score of ``score_type`` from the ``terms`` in ``columns`` (slices).

        The slices index ``score_mean_`` and ``score_std_`` too; the result has
        one column per entry of a slice. With ``leave_one_out``, ``terms`` are
        those the statistics were computed from, and each row is standardised
        with the statistics of the other rows instead: a held-out image's score
        then depends on the other held-out images only, as a new image's does,
        and the split-conformal threshold set from those scores keeps its
        promise up to the difference between n - 1 and n images (the
        benchmarks page measures it).
        """
        if self.score_type not in SCORE_TYPES:
            # set_params after fit is not validated by scikit-learn; without this
            # check an unknown name fell through to the combined score.
            raise ValueError(
                f"score_type must be one of {SCORE_TYPES}; got {self.score_type!r}."
            )
        mean, std = (
            leave_one_out_standardisation(terms)
            if leave_one_out
            else (self.score_mean_, self.score_std_)
        )
        return combine_score_terms(
            self.score_type,
            {name: (terms[:, cols], cols) for name, cols in columns.items()},
            mean,
            std,
        )

    def score_map(self, X):
        """Per-pixel reconstruction error: where an image looks anomalous.

        For every pixel, the Euclidean norm over channels of ``x - x_hat``
        (squared with ``norm="squared_l2"``), computed at the network's
        resolution and resized (bilinear) to the resolution of ``X``. With
        ``norm="l2"`` and no resizing, the root of the sum of a map's squares is
        the sample's reconstruction error.

        Parameters
        ----------
        X : array-like
            Images in a layout accepted by ``fit``.

        Returns
        -------
        maps : ndarray of shape (n_samples, H, W), dtype float32
            ``(n_samples, V, H, W)`` for multi-view input. Higher = more
            anomalous.

        See Also
        --------
        reconstruct : The reconstructions the map compares the images with.
        skocc.plotting.plot_anomaly_maps : The maps over the images.
        """
        check_is_fitted(self)
        images = self._validate_images(X, reset=False)
        size = tuple(self.image_shape_[-2:])
        objective = self.net_.criterion_
        return self._map_batches(
            images, lambda module, xb: objective.pixel_map(module(xb), size), dtype=torch.float32
        )

    def explain(self, X, *, steps=32, baseline="blur"):
        check_is_fitted(self)
        check_explain_arguments(steps, baseline)
        graph = AutoencoderGraph(self, self.net_.module_, "channels_first")
        return explain_images(graph, self, X, steps=steps, baseline=baseline)

    explain.__doc__ = EXPLAIN_DOC

    def reconstruct(self, X):
        """Reconstructions of the images by the autoencoder.

        The decoder's output, at the network's resolution (``input_shape_``)
        and on the scale of the network's input: ``uint8`` images scaled to
        [0, 1], and standardised per image with ``normalize="image"``. With
        ``norm="l2"``, ``resolution=None`` and ``normalize=None``, the
        Euclidean norm of ``X - reconstruct(X)`` per sample is the
        reconstruction error that ``score_type="reconstruction"`` scores.

        Parameters
        ----------
        X : array-like
            Images in a layout accepted by ``fit``.

        Returns
        -------
        X_hat : ndarray of shape (n_samples, C, H, W), dtype float32
            ``(C, H, W)`` is ``input_shape_``; ``(n_samples, V, C, H, W)``
            for multi-view input.

        See Also
        --------
        score_map : Where the reconstruction differs from the image.
        skocc.plotting.plot_reconstructions : Images above their reconstructions.
        """
        check_is_fitted(self)
        images = self._validate_images(X, reset=False)
        return self._map_batches(images, lambda module, xb: module(xb)[1], dtype=torch.float32)

    def encode(self, X):
        """Latent codes of the images.

        Parameters
        ----------
        X : array-like
            Images in a layout accepted by ``fit``.

        Returns
        -------
        codes : ndarray of shape (n_samples, latent_dim), dtype float32
        """
        check_is_fitted(self)
        images = self._validate_images(X, reset=False)
        return self._map_batches(images, lambda module, xb: module.encode(xb), dtype=torch.float32)

    def transform(self, X):
        """Same as :meth:`encode`, so the encoder can be a step of a ``Pipeline``.

        The estimator is an outlier detector that is also a transformer, as
        :class:`sklearn.cluster.KMeans` is a clusterer that is also one: in
        ``make_pipeline(ConvAEOneClass(), GaussianDensity())`` the autoencoder
        trains on the images and hands its codes to the next step, which is
        the "sequential transfer" of a deep encoder to a classical detector.

        Parameters
        ----------
        X : array-like
            Images in a layout accepted by ``fit``.

        Returns
        -------
        codes : ndarray of shape (n_samples, latent_dim), dtype float32
        """
        return self.encode(X)

    @property
    def _n_features_out(self):
        check_is_fitted(self)
        return self.net_.module__latent_dim  # as fitted, whatever set_params did since

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # transform() returns float32 codes whatever the input dtype.
        tags.transformer_tags = TransformerTags(preserves_dtype=["float32"])
        return tags


def __getattr__(name):
    # MultiViewConvAEOneClass moved to skocc.multiview; files pickled before
    # (joblib) and old imports still find it here.
    if name == "MultiViewConvAEOneClass":
        from .multiview import MultiViewConvAEOneClass

        return MultiViewConvAEOneClass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
