"""Multi-view convolutional autoencoder one-class classifier."""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._docstrings import fill_doc, with_defaults
from .autoencoder import ConvAEOneClass
from .nn import MultiViewConvAutoencoder
from .nn.objectives import MultiViewAutoencoderObjective

__all__ = ["MultiViewConvAEOneClass"]


@with_defaults(batch_size=16)
@fill_doc
class MultiViewConvAEOneClass(ConvAEOneClass):
    """Multi-view convolutional autoencoder one-class classifier.

    The method of Laakom et al.'s multimodal convolutional autoencoder: every
    sample is ``V`` images of one object (two cameras, two poses, two
    modalities). Each view is encoded and reconstructed by a convolutional
    autoencoder (one shared by all views by default); the views' codes are
    concatenated into one latent vector ``z`` that the loss keeps compact:

    .. math::

        L(x) = \\sum_v \\lVert x_v - \\hat{x}_v \\rVert + \\beta \\, \\lVert z \\rVert

    (both norms squared with ``norm="squared_l2"``, the paper's form). The
    paper's anomaly score is the distance of ``z`` from the origin
    (``score_type="latent"``) and its threshold the 95th percentile of the
    training scores (``contamination=0.05``). The default score here is that
    of :class:`ConvAEOneClass`, for the reason it gives: the reconstruction
    error plus the Mahalanobis distance of ``z`` under the Gaussian of the
    training codes, since on COIL-20 pose pairs ``||z||`` ranked other
    objects as more normal (see the benchmarks page). With ``V = 1`` the
    model is :class:`ConvAEOneClass`.

    Input is one array with a view axis after the sample axis, so
    cross-validation can index it: ``(n, V, H, W)``, ``(n, V, C, H, W)``,
    channels-last ``(n, V, H, W, C)``, or 2-D ``(n, V*C*H*W)`` with
    ``image_shape=(V, C, H, W)`` (so that a step such as a scaler can come
    before it in a ``Pipeline``). :func:`skocc.stack_views` builds that array
    from one array per view. 2-D input without ``image_shape`` is read as one
    view of one-row images, as :class:`ConvAEOneClass` reads tabular data.

    Parameters
    ----------
    share_weights : bool, default=True
        One encoder and one decoder serve every view; ``False`` trains one pair
        per view (for views that look different, such as two modalities).
    beta : float, default=0.1
        Weight of the latent-norm penalty on the concatenated code. For the
        latent score, use about twice the single-view value, because the views'
        reconstruction errors are summed; the benchmarks page measures the
        latent score against beta on two constructed views of the digits
        (:doc:`/benchmarks`).
    latent_dim : int, default=64
        Size of each view's code; ``z`` has ``V * latent_dim`` entries.
    channels : tuple of int, default=(32, 64, 128)
        Width of each convolutional level of the encoders.
    norm : {"l2", "squared_l2"}, default="l2"
        Whether both loss terms (and the scores) are Euclidean norms or their
        squares.
    score_type : {"reconstruction+mahalanobis", "reconstruction", "mahalanobis", \
"latent", "combined"}, default="reconstruction+mahalanobis"
        Anomaly score: ``"reconstruction"`` is ``sum_v ||x_v - x_hat_v||``;
        ``"mahalanobis"`` the Mahalanobis distance of the concatenated code
        ``z`` under the Gaussian of the training codes; ``"latent"`` is
        ``||z||`` (the paper's); the two-term types combine their standardised
        terms as :class:`~skocc.ConvAEOneClass` does (``"combined"``: reconstruction
        and ``||z||``). Changing it after ``fit`` changes the scores and moves
        ``offset_`` with them.
    lipschitz_decoder : bool, default=True
        Spectrally normalise every decoder layer (see :class:`ConvAEOneClass`).
    {{diversity_params}}
    {{threshold_params}}
    {{data_params}}
    {{training_params}}

    Attributes
    ----------
    {{fitted_attributes}}
    n_views_ : int
        Number of views ``V``.
    score_mean_ : ndarray of shape (3 + 3 * `n_views_`,)
        Means, on the held-out samples (the training ones when fewer than
        three are held out), of: the total reconstruction error, ``||z||``, each
        view's reconstruction error, each view's code norm ``||z_v||``, the
        Mahalanobis distance of ``z``, that of each view's code ``z_v`` (under
        the Gaussian's marginal for that view).
    score_std_ : ndarray of shape (3 + 3 * `n_views_`,)
        Their standard deviations (1 where a term is constant).
    latent_location_ : ndarray of shape (`n_views_` * `latent_dim`,)
        Mean concatenated code of the training samples.
    latent_covariance_ : ndarray of shape (`n_views_` * `latent_dim`, `n_views_` * `latent_dim`)
        Ledoit-Wolf covariance of their concatenated codes.

    See Also
    --------
    ConvAEOneClass : The single-view model.
    skocc.stack_views : Build the multi-view array from one array per view.

    References
    ----------
    .. [1] F. Laakom et al., "Convolutional autoencoder-based multimodal
       one-class classification", arXiv:2309.14090.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from skocc import MultiViewConvAEOneClass, stack_views
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X.reshape(-1, 8, 8) / 16.0
    >>> views = stack_views(X, np.flip(X, axis=2))  # a constructed second view
    >>> views.shape
    (1797, 2, 1, 8, 8)
    >>> model = MultiViewConvAEOneClass(random_state=0).fit(views[y == 0])
    >>> model.score_samples_per_view(views[:3]).shape
    (3, 2)
    """

    _n_view_axes = 1
    _sample_layout = "(V, C, H, W)"
    _persisted_attributes = ConvAEOneClass._persisted_attributes + ("n_views_",)

    _parameter_constraints: dict = {
        **ConvAEOneClass._parameter_constraints,
        "share_weights": ["boolean"],
    }

    def __init__(
        self,
        *,
        share_weights=True,
        beta=0.1,
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
        super().__init__(
            beta=beta,
            latent_dim=latent_dim,
            channels=channels,
            norm=norm,
            score_type=score_type,
            lipschitz_decoder=lipschitz_decoder,
            diversity=diversity,
            diversity_weight=diversity_weight,
            diversity_gamma=diversity_gamma,
            contamination=contamination,
            calibration=calibration,
            calibration_size=calibration_size,
            inlier_label=inlier_label,
            resolution=resolution,
            normalize=normalize,
            data_format=data_format,
            image_shape=image_shape,
            max_epochs=max_epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            device=device,
            precision=precision,
            random_state=random_state,
            verbose=verbose,
            callbacks=callbacks,
            net_params=net_params,
        )
        self.share_weights = share_weights

    _objective = MultiViewAutoencoderObjective

    def _module_params(self):
        _, params = super()._module_params()
        # Set here because the network is built from the shapes read in fit.
        self.n_views_ = self.input_shape_[0]
        params["input_shape"] = self.input_shape_[1:]
        return MultiViewConvAutoencoder, dict(
            n_views=self.n_views_, share_weights=self.share_weights, **params
        )

    def score_samples_per_view(self, X):
        """Each view's contribution to the normality score (higher = more normal).

        Per view: ``-||z_v||`` for ``score_type="latent"``, ``-||x_v - x_hat_v||``
        for ``"reconstruction"``, minus the Mahalanobis distance of ``z_v``
        under the marginal of the codes' Gaussian for that view for
        ``"mahalanobis"``, and for the two-term types, that view's two terms
        combined with that view's fitted statistics. The view with the lowest
        value made the sample look anomalous. The reconstruction contributions
        add up to the total score; the latent ones do with
        ``norm="squared_l2"``, while with ``"l2"`` they are the views' own norms
        (``||z|| = sqrt(sum_v ||z_v||^2)``); the Mahalanobis distances and the
        sums do not add up.

        Parameters
        ----------
        X : array-like
            Multi-view images in a layout accepted by ``fit``.

        Returns
        -------
        scores : ndarray of shape (n_samples, `n_views_`), dtype float64
        """
        check_is_fitted(self)
        terms = self._score_terms(self._validate_images(X, reset=False))
        v = self.n_views_
        columns = {
            "reconstruction": slice(2, 2 + v),
            "latent": slice(2 + v, 2 + 2 * v),
            "mahalanobis": slice(3 + 2 * v, 3 + 3 * v),
        }
        return -self._combine(terms, columns)

    def _score_columns(self):
        # The total reconstruction error, ||z||, every view's reconstruction
        # error, every view's ||z_v||, the distance of z, every view's of z_v.
        v = self.n_views_
        return {
            "reconstruction": slice(0, 1),
            "latent": slice(1, 2),
            "mahalanobis": slice(2 + 2 * v, 3 + 2 * v),
        }

    def _code_size(self):
        return int(self.latent_dim) * int(self.input_shape_[0])

    def _gaussian_blocks(self):
        # The joint Gaussian of the concatenated code, then its marginal for
        # every view's code (the same mean and covariance, restricted).
        blocks = super()._gaussian_blocks()
        d = len(self.latent_location_) // self.n_views_
        for v in range(self.n_views_):
            idx = np.arange(v * d, (v + 1) * d)
            blocks.append((idx, self.latent_location_[idx], self.latent_covariance_[np.ix_(idx, idx)]))
        return blocks

    @property
    def _n_features_out(self):
        check_is_fitted(self)
        return self.net_.module__latent_dim * self.n_views_
