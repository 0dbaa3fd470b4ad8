"""Self-supervised image features: the first stage of two-stage one-class models."""

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
from ._sklearn_compat import StrOptions
from .base import BaseDeepImageModel, StrictInterval
from .nn import ImagePreprocess
from .nn.objectives import SelfSupervisedObjective
from .nn.self_supervised import ENCODERS, FEATURE_LAYERS, PRETEXTS, SelfSupervisedNet

__all__ = ["SelfSupervisedFeatures"]


def _check_crop_scale(crop_scale):
    try:
        if any(isinstance(v, bool) for v in crop_scale):
            raise TypeError  # a bool is no area fraction
        lo, hi = (float(v) for v in crop_scale)
    except (TypeError, ValueError):
        lo = hi = None
    if lo is None or not 0 < lo <= hi <= 1:
        raise ValueError(
            "crop_scale must be a pair (low, high) of area fractions with "
            f"0 < low <= high <= 1; got {crop_scale!r}."
        )
    return lo, hi


@with_defaults(max_epochs=20, batch_size=32)
@fill_doc
class SelfSupervisedFeatures(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseDeepImageModel):
    """Image features learned by self-supervision on normal images.

    The first stage of the two-stage one-class framework of Sohn et al.:
    a network learns a representation of the training images by solving a
    pretext task, then ``transform`` returns L2-normalised features on which a
    classical detector (:class:`skocc.TwoStageOneClass`, or any scikit-learn
    outlier detector in a ``Pipeline``) is fitted.

    Pretext tasks:

    - ``"rotation"``: predict which of the four quarter turns (exact
      ``torch.rot90``) was applied to an image, with an MLP head (Sohn et al.
      found the MLP head better than a linear one). Every batch of ``n``
      images trains on its ``4 n`` rotated copies.
    - ``"contrastive"``: SimCLR's NT-Xent loss on two random augmentations of
      every image (random resized crop, horizontal flip, brightness/contrast
      jitter and saturation for colour images; batched on the device, see
      :func:`skocc.nn.augment`).
    - ``"contrastive_da"``: contrastive learning with distribution
      augmentation: the four rotations of every image are treated as distinct
      instances, so the representation separates rotated copies from the
      normal distribution. Sohn et al.'s best setting on semantic benchmarks,
      with small batches (32 here).
    - ``"cutpaste"``: CutPaste (Li et al., 3-way): a classifier (the MLP head)
      tells normal images from copies with a rectangle cut and pasted
      elsewhere in the same image, and copies with a thin rotated "scar"
      pasted likewise (geometry: :func:`skocc.nn.cutpaste`). Every batch of
      ``n`` images trains on ``3 n``. Made for surface inspection, where
      anomalies are local defects of a texture rather than other objects;
      ``crop_scale``, ``flip`` and ``jitter`` do not apply.

    The augmentations are skocc's own few lines of torch rather than kornia:
    kornia's colour jitter refused 1-channel images, its import took 3 s, and
    its random draws could not be seeded apart from the global state.

    Parameters
    ----------
    pretext : {"rotation", "contrastive", "contrastive_da", "cutpaste"}, default="contrastive_da"
        Pretext task (above). The default was the best on the digits and MNIST
        (:doc:`/benchmarks`); ``"rotation"`` was as good on the digits at a
        third of the training time, and lower on MNIST.
    encoder : {"small", "resnet18"} or torch.nn.Module, default="small"
        ``"small"``: three levels of two 3 x 3 convolutions with batch norm
        (:class:`skocc.nn.SmallConvEncoder`), fast on a CPU.
        ``"resnet18"``: ResNet-18 for small images (3 x 3 stem, no max-pool;
        :class:`skocc.nn.ResNet18Encoder`), for a GPU.
        A module: your own network (torchvision, timm or yours, with the
        weights you loaded), mapping a float batch ``(n, C, H, W)`` (after
        ``resolution`` and ``normalize``; ``uint8`` images scaled to [0, 1])
        to a spatial feature map ``(n, d, h, w)``, whose global average
        gives the features (:class:`skocc.nn.ModuleEncoder`). ``fit`` trains
        a deep copy; the module you pass is never changed. ``clone`` (and so
        ``GridSearchCV``) deep-copies it with its weights. :func:`skocc.save`
        refuses such a model: use joblib, from trusted files only.
        ``width`` is ignored.
    width : int or None, default=None
        Channels of the encoder's first level; None: 16 for ``"small"`` (64
        features), 64 for ``"resnet18"`` (512 features).
    head_dim : int, default=128
        Width of the head's hidden layers (rotation: two, before the 4-way
        output) and of the contrastive projection.
    freeze_encoder : bool, default=False
        Keep the encoder's weights as they are (no gradient reaches them,
        and a user module stays in eval mode, its batch-norm statistics
        unchanged): the features of ``feature_layer="encoder"`` are then
        those of the encoder as given, and the pretext trains only the
        head. Meant for a pretrained module of your own.
    feature_layer : {"encoder", "head"}, default="encoder"
        ``"encoder"``: the globally pooled encoder output (Sohn et al.'s
        choice); ``"head"``: the head's last hidden layer (rotation,
        cutpaste) or the projection (contrastive). Read at ``transform`` time.
    temperature : float, default=0.2
        Temperature of NT-Xent (contrastive pretexts only).
    crop_scale : tuple of (float, float), default=(0.5, 1.0)
        Range of the area fraction of the random crops (contrastive only).
        SimCLR uses (0.08, 1.0) for photographs; on digits a crop must keep
        enough of the shape to stay the same digit.
    flip : bool, default=False
        Random horizontal flips (contrastive only). Off by default because a
        mirrored digit or character is another shape; turn it on for objects
        whose mirror image is as normal as they are.
    jitter : float, default=0.4
        Strength of the brightness/contrast/saturation jitter, applied to 80 %
        of the views (contrastive only); 0 turns it off.
    inlier_label : int, float, str, bool or None, default=None
        ``None``: ``fit`` ignores ``y``. Otherwise ``fit(X, y)`` learns only
        from the samples with ``y == inlier_label``, as the detectors of skocc
        do, so that a ``GridSearchCV`` refit on labelled data trains the
        network on normal images only. In a ``Pipeline`` the next step still
        sees every row (``transform`` returns them all);
        :class:`TwoStageOneClass` fits its detector on the inliers only.
    {{data_params}}
    {{training_params}}

    Attributes
    ----------
    net_ : skocc._engine.OneClassNet
        The fitted skorch net; ``net_.module_`` is the
        :class:`skocc.nn.SelfSupervisedNet`, ``net_.history``
        holds the pretext losses.
    device_ : str
        Device the network lives on.
    image_shape_ : tuple of int
        ``(C, H, W)`` of the samples given to ``fit``, after reading their
        layout.
    input_shape_ : tuple of int
        The same after resizing to ``resolution``.
    n_features_in_ : int
        Number of values per sample seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names, when ``fit`` was given a DataFrame with string column
        names.
    n_epochs_ : int
        Epochs completed.

    See Also
    --------
    skocc.TwoStageOneClass : These features and a classical detector, as one
        outlier detector.

    References
    ----------
    .. [1] K. Sohn, C.-L. Li, J. Yoon, M. Jin and T. Pfister, "Learning and
       Evaluating Representations for Deep One-class Classification", ICLR
       2021.
    .. [2] S. Gidaris, P. Singh and N. Komodakis, "Unsupervised Representation
       Learning by Predicting Image Rotations", ICLR 2018.
    .. [3] T. Chen, S. Kornblith, M. Norouzi and G. Hinton, "A Simple
       Framework for Contrastive Learning of Visual Representations", ICML
       2020.
    .. [4] C.-L. Li, K. Sohn, J. Yoon and T. Pfister, "CutPaste:
       Self-Supervised Learning for Anomaly Detection and Localization", CVPR
       2021.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skocc import SelfSupervisedFeatures
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X.reshape(-1, 8, 8) / 16.0
    >>> features = SelfSupervisedFeatures(max_epochs=2, random_state=0).fit(X[y == 0])
    >>> features.transform(X[:3]).shape
    (3, 64)
    """

    _parameter_constraints: dict = {
        **BaseDeepImageModel._parameter_constraints,
        "pretext": [StrOptions(set(PRETEXTS))],
        "encoder": [StrOptions(set(ENCODERS)), torch.nn.Module],
        "freeze_encoder": ["boolean"],
        "width": [StrictInterval(Integral, 1, None, closed="left"), None],
        "head_dim": [StrictInterval(Integral, 1, None, closed="left")],
        "feature_layer": [StrOptions(set(FEATURE_LAYERS))],
        "temperature": [StrictInterval(Real, 0, None, closed="neither")],
        "crop_scale": [tuple, list],
        "flip": ["boolean"],
        "jitter": [StrictInterval(Real, 0, 1, closed="left")],
    }

    def __init__(
        self,
        *,
        pretext="contrastive_da",
        encoder="small",
        width=None,
        head_dim=128,
        freeze_encoder=False,
        feature_layer="encoder",
        temperature=0.2,
        crop_scale=(0.5, 1.0),
        flip=False,
        jitter=0.4,
        inlier_label=None,
        resolution=None,
        normalize=None,
        data_format="auto",
        image_shape=None,
        max_epochs=20,
        batch_size=32,
        lr=1e-3,
        weight_decay=0.0,
        device="auto",
        precision="float32",
        random_state=None,
        verbose=0,
        callbacks=None,
        net_params=None,
    ):
        self.pretext = pretext
        self.encoder = encoder
        self.width = width
        self.freeze_encoder = freeze_encoder
        self.head_dim = head_dim
        self.feature_layer = feature_layer
        self.temperature = temperature
        self.crop_scale = crop_scale
        self.flip = flip
        self.jitter = jitter
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

    def _build_net_params(self):
        if self.freeze_encoder and not isinstance(self.encoder, torch.nn.Module):
            raise ValueError(
                "freeze_encoder=True keeps an encoder's weights as given, which needs your own "
                f"module as encoder; encoder={self.encoder!r} would stay at its random "
                "initialisation."
            )
        size = None if self.resolution is None else (self.resolution, self.resolution)
        module_kwargs = dict(
            input_shape=self.input_shape_,
            pretext=self.pretext,
            # A user's module is copied, so that training never changes the one passed.
            encoder=(
                copy.deepcopy(self.encoder)
                if isinstance(self.encoder, torch.nn.Module)
                else self.encoder
            ),
            width=self.width,
            head_dim=self.head_dim,
            preprocess=ImagePreprocess(size=size, normalize=self.normalize),
            crop_scale=_check_crop_scale(self.crop_scale),
            flip=self.flip,
            jitter=self.jitter,
            freeze_encoder=self.freeze_encoder,
        )
        return dict(
            net_class=OneClassNet,
            module=SelfSupervisedNet,
            **{f"module__{key}": value for key, value in module_kwargs.items()},
            criterion=SelfSupervisedObjective,
            criterion__temperature=self.temperature,
            criterion__pretext=self.pretext,
        )

    def _check_training_memory(self, images):
        # A user's module holds real weights, so it cannot be traced on the
        # meta device; its memory is the user's to know.
        if isinstance(self.encoder, torch.nn.Module):
            return
        super()._check_training_memory(images)

    def transform(self, X):
        """Features of the images: L2-normalised, one row per image.

        Parameters
        ----------
        X : array-like
            Images in a layout accepted by ``fit``, of the shape seen in ``fit``.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out), dtype float32
            ``n_features_out`` is the encoder's width (64 for the default
            ``"small"`` encoder, 512 for ``"resnet18"``) with
            ``feature_layer="encoder"``, the head's with ``"head"``.
        """
        return self.transform_rotated(X)

    def feature_maps(self, X):
        """Spatial features of the images: the encoder's activations before pooling.

        One feature vector per location of a grid coarser than the images
        (for the ``"small"`` encoder, a quarter of the network's input side
        when that is at least 16 pixels), not normalised.
        :meth:`TwoStageOneClass.score_map` fits its densities on these.

        Parameters
        ----------
        X : array-like
            Images in a layout accepted by ``fit``, of the shape seen in ``fit``.

        Returns
        -------
        maps : ndarray of shape (n_samples, n_channels, h, w), dtype float32
            ``n_channels`` is the encoder's width (that of ``transform`` with
            ``feature_layer="encoder"``).
        """
        check_is_fitted(self)
        images = self._validate_images(X, reset=False)
        return self._map_batches(images, lambda module, xb: module.feature_map(xb), dtype=torch.float32)

    def transform_rotated(self, X, quarter_turns=0):
        """Features of the images rotated by ``quarter_turns`` times 90 degrees.

        Rotated on the device, batch by batch, counter-clockwise in the image
        plane; ``quarter_turns=0`` is :meth:`transform`. A tuple of turns gives
        a list of arrays, one per turn, from one read of ``X`` and one pass
        over its batches: the rotation ensemble of
        :class:`skocc.TwoStageOneClass` uses it.

        Parameters
        ----------
        X : array-like
            Images in a layout accepted by ``fit``, of the shape seen in ``fit``.
        quarter_turns : int or tuple of int, default=0

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out), dtype float32
            Or a list of such arrays, one per entry of a tuple ``quarter_turns``.
        """
        check_is_fitted(self)
        images = self._validate_images(X, reset=False)
        layer = self.feature_layer
        if layer not in FEATURE_LAYERS:
            raise ValueError(f"feature_layer must be one of {FEATURE_LAYERS}; got {layer!r}.")
        single = isinstance(quarter_turns, Integral)
        turns = (int(quarter_turns),) if single else tuple(quarter_turns)
        out = self._map_batches(
            images,
            lambda module, xb: torch.cat([module.features(xb, layer, k) for k in turns], dim=1),
            dtype=torch.float32,
        )
        parts = np.split(out, len(turns), axis=1)
        return parts[0] if single else parts

    @property
    def _n_features_out(self):
        check_is_fitted(self)
        return self.net_.module_.feature_dim(self.feature_layer)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags(preserves_dtype=["float32"])
        return tags
