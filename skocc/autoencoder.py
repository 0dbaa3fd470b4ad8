"""Convolutional autoencoder one-class classifiers."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import TransformerTags
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._docstrings import fill_doc
from ._engine import AutoencoderCriterion, OneClassNet
from .base import BaseDeepOneClass
from .losses import NORMS, latent_norm, reconstruction_error
from .nn import ConvAutoencoder, ImagePreprocess

__all__ = ["ConvAEOneClass"]

_SCORES = ("latent", "reconstruction", "combined")


def _check_channels(channels):
    if len(channels) == 0 or not all(
        isinstance(c, Integral) and not isinstance(c, bool) and c >= 1 for c in channels
    ):
        raise ValueError(
            "channels must be a non-empty tuple of positive ints (one width per "
            f"encoder level); got {channels!r}."
        )
    return tuple(int(c) for c in channels)


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
    towards the origin ("targeted collapse"), so a large ``||z||`` signals an
    anomaly.

    The decoder is spectrally normalised (``lipschitz_decoder=True``): it cannot
    rescale the code for free, so shrinking ``z`` costs reconstruction quality
    and the latent norm keeps its meaning (see :class:`skocc.nn.ConvDecoder`).

    Parameters
    ----------
    beta : float, default=1.0
        Weight of the latent-norm penalty. 0 trains a plain autoencoder (whose
        latent norm is no anomaly score: on digits it ranked anomalies as more
        normal). From about 0.3 on, with ``norm="l2"``, the decoder's output stays
        close to a template of the normal class, and most of the information is
        in ``||z||``: normal images are mapped near the origin, others are not.
    latent_dim : int, default=64
        Size of the latent code ``z``.
    channels : tuple of int, default=(32, 64, 128)
        Width of each convolutional level of the encoder (the decoder mirrors
        it). Each level halves every side that is at least 4 pixels long.
    norm : {"l2", "squared_l2"}, default="l2"
        Whether both loss terms (and the scores) are Euclidean norms or their
        squares.
    score_type : {"combined", "latent", "reconstruction"}, default="combined"
        Anomaly score: ``"latent"`` is ``||z||``; ``"reconstruction"`` is
        ``||x - x_hat||``; ``"combined"`` standardises each of the two with its
        mean and standard deviation on the training images and adds them, so
        neither dominates through its scale. (Not named ``score``: that name
        is scikit-learn's method for ``estimator.score(X, y)``.) Changing it
        after ``fit`` changes the scores at once but not ``offset_``: refit to
        move the threshold too.
    lipschitz_decoder : bool, default=True
        Spectrally normalise every decoder layer. Turn off only to reproduce
        unconstrained autoencoders; the latent score then carries little
        information when ``beta > 0``.
    {{threshold_params}}
    {{data_params}}
    {{training_params}}

    Attributes
    ----------
    {{fitted_attributes}}
    score_mean_ : ndarray of shape (2,)
        Mean of the reconstruction error and of the latent norm on the training
        images (used by ``score_type="combined"``).
    score_std_ : ndarray of shape (2,)
        Their standard deviations (1 where a term is constant).

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
        "beta": [Interval(Real, 0, None, closed="left")],
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "channels": [tuple, list],
        "norm": [StrOptions(set(NORMS))],
        "score_type": [StrOptions(set(_SCORES))],
        "lipschitz_decoder": ["boolean"],
    }

    _persisted_attributes = BaseDeepOneClass._persisted_attributes + (
        "score_mean_",
        "score_std_",
    )

    def __init__(
        self,
        *,
        beta=1.0,
        latent_dim=64,
        channels=(32, 64, 128),
        norm="l2",
        score_type="combined",
        lipschitz_decoder=True,
        contamination=0.05,
        inlier_label=None,
        resolution=None,
        normalize=None,
        data_format="auto",
        image_shape=None,
        max_epochs=50,
        batch_size=64,
        lr=1e-3,
        weight_decay=0.0,
        device="auto",
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
        self.contamination = contamination
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
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
        self.net_params = net_params

    def _build_net_params(self):
        size = None if self.resolution is None else (self.resolution, self.resolution)
        return dict(
            net_class=OneClassNet,
            module=ConvAutoencoder,
            module__input_shape=self.input_shape_,
            module__channels=_check_channels(self.channels),
            module__latent_dim=self.latent_dim,
            module__preprocess=ImagePreprocess(size=size, normalize=self.normalize),
            module__lipschitz_decoder=self.lipschitz_decoder,
            criterion=AutoencoderCriterion,
            criterion__beta=self.beta,
            criterion__norm=self.norm,
        )

    def _score_terms(self, images):
        """(n, 2) float64: reconstruction error and latent norm of every image."""
        norm = self.norm

        def terms(module, xb):
            x, x_hat, z = module(xb)
            return torch.stack(
                [reconstruction_error(x, x_hat, norm), latent_norm(z, norm)], dim=1
            )

        return self._map_batches(images, terms)

    def _fit_score_stats(self, terms):
        self.score_mean_ = terms.mean(axis=0)
        std = terms.std(axis=0)
        self.score_std_ = np.where(std > 0, std, 1.0)

    def _anomaly_scores_from_terms(self, terms):
        if self.score_type == "reconstruction":
            return terms[:, 0]
        if self.score_type == "latent":
            return terms[:, 1]
        return ((terms - self.score_mean_) / self.score_std_).sum(axis=1)

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
        return self._map_batches(images, lambda module, xb: module.encode(xb)).astype(
            np.float32
        )

    def transform(self, X):
        """Same as :meth:`encode`, so the encoder can be a step of a ``Pipeline``.

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
        return self.latent_dim

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # transform() returns float32 codes whatever the input dtype.
        tags.transformer_tags = TransformerTags(preserves_dtype=["float32"])
        return tags
