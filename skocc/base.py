"""Base classes: the shared fit skeleton of skocc's networks and scikit-learn's outlier contract."""

from __future__ import annotations

import copy
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._constraints import StrictInterval
from ._engine import build_net, check_net_params
from ._outlier import (
    THRESHOLD_CONSTRAINTS,
    OutlierContractMixin,
    clear_fitted,
    select_inliers,
    warn_if_not_finite,
)
from ._runtime import (
    PRECISIONS,
    as_tensor,
    available_memory,
    check_precision,
    device_resident,
    forked_torch_rng,
    network_footprint,
    resolve_device,
)
from ._sklearn_compat import StrOptions, check_feature_names, fit_context
from .images import DATA_FORMATS, check_images

# Every concrete skocc estimator, by class name. Filled by
# BaseDeepImageModel.__init_subclass__, read by skocc.load and the command line:
# they instantiate only classes listed here, never a name taken from a file.
_REGISTRY: dict = {}


def registered_estimators():
    """skocc's own estimator classes, by name (a copy).

    Every concrete subclass of :class:`BaseDeepImageModel` defined inside the
    ``skocc`` package is listed; classes defined elsewhere are not, so neither
    :func:`skocc.load` nor the command line can be made to build them.
    """
    return dict(_REGISTRY)


class BaseDeepImageModel(BaseEstimator):
    """Base class of every skocc estimator that trains a network on images.

    Owns what is the same for every network: reading images (layouts, shapes,
    feature names), seeding, building and running the private skorch net, and
    mapping a fitted module over batches. :class:`BaseDeepOneClass` adds the
    outlier contract; :class:`skocc.SelfSupervisedFeatures` is a transformer
    built on it directly.

    Subclasses implement ``_build_net_params`` (module and criterion), may
    override ``_after_fit`` (called with the training images once the network
    is trained), and extend ``_persisted_attributes`` with the fitted
    attributes they add, so that :func:`skocc.save` stores them (it refuses to
    save an estimator with an undeclared fitted attribute rather than write an
    incomplete file).
    """

    # Axes between the sample axis and the image axes (1 for multi-view input).
    _n_view_axes = 0
    # How one sample's shape reads, for error messages.
    _sample_layout = "(C, H, W)"

    # Fitted attributes that skocc.save writes as JSON and skocc.load restores.
    # net_ (weights and history) and device_ (chosen at load time) are handled
    # apart. Optional ones are written only when present.
    _persisted_attributes: tuple = (
        "image_shape_",
        "input_shape_",
        "n_features_in_",
        "n_epochs_",
    )
    _optional_persisted_attributes: tuple = ("feature_names_in_",)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        module = cls.__module__ or ""
        if (module == "skocc" or module.startswith("skocc.")) and not (
            cls.__name__.startswith("_") or cls.__name__.startswith("Base")
        ):
            _REGISTRY[cls.__name__] = cls

    _parameter_constraints: dict = {
        # Labels may be ints (+1), strings ("good") or bools; Real covers bool.
        "inlier_label": [Real, str, None],
        "resolution": [StrictInterval(Integral, 1, None, closed="left"), None],
        "normalize": [StrOptions({"image"}), None],
        "data_format": [StrOptions(set(DATA_FORMATS))],
        "image_shape": [tuple, list, None],
        "max_epochs": [StrictInterval(Integral, 1, None, closed="left")],
        "batch_size": [StrictInterval(Integral, 1, None, closed="left")],
        "lr": [StrictInterval(Real, 0, None, closed="neither")],
        "weight_decay": [StrictInterval(Real, 0, None, closed="left")],
        "device": [str],
        "precision": [StrOptions(set(PRECISIONS))],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "callbacks": [list, None],
        "net_params": [dict, None],
    }

    # ------------------------------------------------------------------ fit
    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train on normal images.

        Parameters
        ----------
        X : array-like
            Training images; see the class docstring for accepted layouts.
            The dtype sets the scale of the values
            (:func:`skocc.images.check_images`): ``uint8`` / 255, ``uint16`` /
            65535, other integers (and lists of ints) as 8-bit pixels in
            0..255, ``bool`` as 0 and 1, floats as given.
        y : array-like of shape (n_samples,) or None, default=None
            Ignored when ``inlier_label`` is None (scikit-learn's convention for
            outlier detectors). Otherwise only the images with
            ``y == inlier_label`` are trained on, so that ``GridSearchCV``'s
            refit on labelled validation data trains on normal images only.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        # A failed fit must not leave a half-fitted model (or an old net beside new shapes).
        self._clear_fitted()
        try:
            return self._fit(X, y)
        except BaseException:
            self._clear_fitted()
            raise

    def _clear_fitted(self):
        clear_fitted(self)

    def _fit(self, X, y):
        self._check_net_params()
        images = self._validate_images(X, reset=True)
        images = self._select_inliers(images, y)
        self.device_ = resolve_device(self.device)
        check_precision(self._precision(), self.device_)
        self._check_training_memory(images)
        self._check_host_memory()
        rng = check_random_state(self.random_state)
        init_seed, order_seed = (int(s) for s in rng.randint(np.iinfo(np.int32).max, size=2))

        # Drawn after the first two so that adding it changed no earlier seed.
        train_seed = int(rng.randint(np.iinfo(np.int32).max))
        # Drawn last, for the same reason, and only when used: with
        # random_state=None, rng is NumPy's global generator.
        split_seed = (
            int(rng.randint(np.iinfo(np.int32).max))
            if getattr(self, "calibration", "train") == "holdout"
            else None
        )

        net = self._new_net(order_seed, init_seed)
        # After the net is built, so that a bad parameter fails before any
        # warning about the number of images.
        images, held_out = self._hold_out(images, split_seed)
        # Randomness inside training (data augmentation, dropout) draws from a
        # forked, seeded torch RNG: reproducible, and the user's global state
        # is untouched.
        with forked_torch_rng(self.device_, train_seed):
            net.partial_fit(device_resident(as_tensor(images), self.device_))
        # A fitted module stays in eval mode: scoring then never switches the
        # mode of a module that other threads may be scoring with at the same
        # time (train mode would run the decoder's power iteration, changing
        # both their scores and the weights' normalisation).
        net.module_.eval()
        self._warn_if_interrupted(net)
        self.net_ = net
        self.n_epochs_ = net.n_complete_epochs()
        self._after_fit(images, held_out)
        return self

    def _hold_out(self, images, seed):
        """Hook: ``(training images, held-out images or None)``; all are trained on here."""
        return images, None

    def _after_fit(self, images, held_out):
        """Hook: called with the training and held-out images once the network is trained."""

    # Parameters that set the size of a network or of its activations, named
    # when the memory check refuses them.
    _SIZE_PARAMS = (
        "resolution", "channels", "latent_dim", "encoder", "width", "head_dim", "batch_size"
    )

    def _check_training_memory(self, images):
        """Refuse a network and batch that cannot fit in the device's memory.

        The estimate, made on torch's meta device (shapes only, no
        allocation): 16 bytes per parameter (float32 weights, their gradients
        and Adam's two moments) plus the outputs of every layer for one batch
        of ``batch_size`` images in training mode (what backpropagation keeps).
        Training is refused when that exceeds the memory the device has
        available (:func:`skocc._runtime.available_memory`); the estimate is a
        lower bound, so a model that passes can still run out.
        """
        available = available_memory(self.device_)
        if available is None:
            return
        n_params, activations = self._network_footprint(images.dtype)
        needed = 16 * n_params + activations
        if needed <= available:
            return
        sizes = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in self._SIZE_PARAMS if hasattr(self, name)
        )
        raise ValueError(
            f"{type(self).__name__} would need about {needed / 2**30:.3g} GiB to train on "
            f"{self.device_!r} ({n_params:,} parameters: {16 * n_params / 2**30:.3g} GiB with "
            f"their gradients and Adam's moments; {activations / 2**30:.3g} GiB of activations "
            f"for one batch), but {available / 2**30:.3g} GiB is available. The sizes come "
            f"from the input shape {self.input_shape_} and {sizes}: reduce them."
        )

    def _host_fit_memory(self):
        """Hook: host memory that fitting needs besides the network.

        ``(bytes, what needs them, the parameters that set their size)``.
        """
        return 0, "", ""

    def _check_host_memory(self):
        needed, what, params = self._host_fit_memory()
        available = available_memory("cpu") if needed else None
        if available is not None and needed > available:
            raise ValueError(
                f"{type(self).__name__} would need about {needed / 2**30:.3g} GiB of host memory "
                f"for {what}, but {available / 2**30:.3g} GiB is available: reduce {params}."
            )

    def _network_footprint(self, dtype):
        """Parameter count and training activation bytes of one batch."""
        module_class, module_kwargs = self._module_spec()
        shape = (self.batch_size,) + tuple(int(s) for s in self.image_shape_)
        return network_footprint(module_class, module_kwargs, shape, as_tensor(np.empty(0, dtype)).dtype)

    def _module_spec(self):
        """The network's class and constructor arguments, from ``_build_net_params``."""
        params = self._build_net_params()
        kwargs = {k[len("module__") :]: v for k, v in params.items() if k.startswith("module__")}
        return params["module"], kwargs

    def _check_net_params(self):
        check_net_params(self.callbacks, self.net_params)

    def _select_inliers(self, images, y):
        """The images labelled ``inlier_label``; all of them when it is None."""
        if self.inlier_label is None:
            return images
        return images[select_inliers(y, self.inlier_label, len(images), type(self).__name__)]

    def _new_net(self, order_seed=0, init_seed=0):
        """The private skorch net, initialised with weights drawn from ``init_seed``.

        ``fit`` trains it; :func:`skocc.load` fills it with saved weights.
        """
        params = self._build_net_params()
        params.update(copy.deepcopy(self.net_params or {}))
        net = build_net(
            params.pop("net_class"),
            order_seed=order_seed,
            device=self.device_,
            precision=self._precision(),
            lr=self.lr,
            weight_decay=self.weight_decay,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            verbose=self.verbose,
            callbacks=self.callbacks,
            net_params=params,
        )
        return net.initialize_seeded(init_seed)

    def _precision(self):
        # A subclass whose __init__ has no precision parameter trains in float32.
        return getattr(self, "precision", "float32")

    def _warn_if_interrupted(self, net):
        """skorch swallows KeyboardInterrupt; tell the user what they got."""
        interrupted = net.interruption()
        if interrupted is not None:
            done, batches = interrupted
            warnings.warn(
                f"Training of {type(self).__name__} was interrupted after {done} complete "
                f"epoch(s) and {batches} batch(es) of the next. The model is usable and "
                "keeps the weights reached so far.",
                UserWarning,
                stacklevel=4,
            )

    # ------------------------------------------------------------ helpers
    def _validate_images(self, X, *, reset):
        """Read ``X`` as images; remember (``reset``) or check its shape."""
        check_feature_names(self, X, reset=reset)
        images = check_images(
            X,
            image_shape=self.image_shape,
            data_format=self.data_format,
            n_view_axes=self._n_view_axes,
            estimator_name=type(self).__name__,
        )
        shape = tuple(int(s) for s in images.shape[1:])
        n_features = int(np.prod(shape))
        if reset:
            self.image_shape_ = shape
            self.n_features_in_ = n_features
            self.input_shape_ = self._network_input_shape(shape)
        elif shape != self.image_shape_:
            fitted_on = (
                f"it was fitted on samples of shape {self._sample_layout} = "
                f"{self.image_shape_} and got samples of shape {shape} (after reading the "
                f"layout of an input of shape {np.shape(X)})."
            )
            if n_features != self.n_features_in_:
                raise ValueError(
                    f"X has {n_features} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input: {fitted_on}"
                )
            raise ValueError(f"X has samples of another shape than in fit: {fitted_on}")
        return images

    def _network_input_shape(self, image_shape):
        """Shape of one sample as the network sees it, after resizing."""
        if self.resolution is None:
            return image_shape
        return image_shape[:-2] + (self.resolution, self.resolution)

    def _map_batches(self, images, fn, dtype=torch.float64):
        """``fn(module, batch)`` over the images, by the fitted net (:meth:`OneClassNet.map_batches`)."""
        return self.net_.map_batches(as_tensor(images), fn, dtype)

    def __setstate__(self, state):
        # skorch moves a CUDA-trained net to the CPU when CUDA is missing at load
        # time; keep device_ in step with where the net really is.
        super().__setstate__(state)
        net = self.__dict__.get("net_")
        if net is not None:
            self.device_ = str(net.device)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.non_deterministic = False
        return tags


class BaseDeepOneClass(OutlierContractMixin, OutlierMixin, BaseDeepImageModel):
    """Base class of skocc's deep one-class estimators.

    Adds scikit-learn's outlier contract, that of
    :class:`sklearn.svm.OneClassSVM` and
    :class:`sklearn.ensemble.IsolationForest`, to :class:`BaseDeepImageModel`:

    - ``score_samples(X)``: higher means more normal, float64, shape ``(n,)``;
    - ``decision_function(X) = score_samples(X) - offset_``, negative for
      anomalies;
    - ``predict(X)``: +1 for inliers, -1 for anomalies (integers);
    - ``offset_``: the split-conformal threshold of the scores of normal
      images held out of training (``calibration="holdout"``), or the
      ``contamination`` quantile of the training scores
      (``calibration="train"``); :meth:`calibrate` re-sets it from new
      normal images.

    Subclasses implement ``_score_terms`` (per-sample terms from the network)
    and ``_anomaly_scores_from_terms(terms, leave_one_out=False)`` (the
    anomaly score from them; with ``leave_one_out``, each row standardised
    with the statistics of the others, for the images the statistics came from).
    """

    _persisted_attributes: tuple = (
        "offset_",
        "calibration_scores_",
        "calibration_terms_",
        "calibration_score_type_",
        "threshold_held_out_",
        "calibration_leave_one_out_",
    ) + BaseDeepImageModel._persisted_attributes

    _parameter_constraints: dict = {
        **BaseDeepImageModel._parameter_constraints,
        **THRESHOLD_CONSTRAINTS,
    }

    def _hold_out(self, images, seed):
        # Below _fit, fit and fit's wrapper: the user's code is 5 frames up.
        train, calibration = self._calibration_split(len(images), seed, stacklevel=5)
        if calibration is None:
            return images, None
        return images[train], images[calibration]

    def _after_fit(self, images, held_out):
        """Score statistics and ``offset_`` from the held-out images.

        The statistics come from the training images when fewer than three are
        held out, and ``offset_`` too when none are.
        """
        held = held_out is not None
        terms = self._score_terms(held_out if held else images)
        # Held-out images are scored leaving each one out of the statistics
        # computed from them, as a new image is (see _anomaly_scores_from_terms):
        # that needs a standard deviation of the others, so at least three.
        leave_one_out = held and len(terms) >= 3
        if held and not leave_one_out:
            self._fit_score_stats(self._score_terms(images))
        else:
            self._fit_score_stats(terms)
        self._threshold_from_terms(terms, held_out=held, leave_one_out=leave_one_out)

    def _fit_score_stats(self, terms):
        """Hook for subclasses that standardise score terms with the calibration images' statistics."""

    def _threshold_from_terms(self, terms, *, held_out, leave_one_out=False):
        """``offset_`` from the score terms of the calibration images, which are kept.

        Keeping the terms (``calibration_terms_``), not only the scores, lets
        the threshold follow parameters that change how terms make a score
        (``score_type``) without new images: see :meth:`_threshold_now`.
        ``leave_one_out`` says that the score statistics were computed from
        these very terms (fit's held-out images).
        """
        scores = -self._anomaly_scores_from_terms(terms, leave_one_out=leave_one_out)
        self._set_threshold(scores, held_out=held_out)
        self.calibration_terms_ = terms
        self.threshold_held_out_ = bool(held_out)
        self.calibration_leave_one_out_ = bool(leave_one_out)
        self.calibration_score_type_ = self._score_key()

    def _score_key(self):
        """Hook: the parameter that turns score terms into a score, as set now."""
        return None

    def _threshold_now(self):
        # offset_ and calibration_scores_ follow score_type when it is changed
        # after fit, so that predict and pvalues agree with score_samples. An
        # offset_ set by hand (it is not the threshold of calibration_scores_) is kept.
        if self.calibration_score_type_ == self._score_key():
            return self.offset_, self.calibration_scores_
        _, stored = self._threshold_of(self.calibration_scores_, held_out=self.threshold_held_out_)
        if stored != self.offset_:
            return self.offset_, self.calibration_scores_
        scores = -self._anomaly_scores_from_terms(
            self.calibration_terms_, leave_one_out=self.calibration_leave_one_out_
        )
        scores, offset = self._threshold_of(scores, held_out=self.threshold_held_out_)
        return offset, scores

    def _refresh_threshold(self):
        super()._refresh_threshold()
        self.calibration_score_type_ = self._score_key()

    def _calibrate_on(self, X):
        # The terms, not only the scores, so that the threshold can follow score_type.
        terms = self._score_terms(self._validate_images(X, reset=False))
        self._check_calibration_count(len(terms))
        self._threshold_from_terms(terms, held_out=True)

    # ------------------------------------------------------------ scoring
    def score_samples(self, X):
        """Normality score of every sample: higher means more normal.

        The opposite of :meth:`anomaly_score`, as scikit-learn's outlier
        detectors define it.

        Parameters
        ----------
        X : array-like
            Images in a layout accepted by ``fit``, of the shape seen in ``fit``.

        Returns
        -------
        scores : ndarray of shape (n_samples,), dtype float64
        """
        check_is_fitted(self)
        images = self._validate_images(X, reset=False)
        scores = -self._anomaly_scores_from_terms(self._score_terms(images))
        return warn_if_not_finite(
            scores, "the network overflowed, e.g. on input values far outside the training range"
        )

