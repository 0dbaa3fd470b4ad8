"""Base classes: the shared fit skeleton of skocc's networks and scikit-learn's outlier contract."""

from __future__ import annotations

import contextlib
import copy
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import _check_feature_names, check_is_fitted
from skorch.callbacks import Callback, ProgressBar

from ._engine import (
    PRECISIONS,
    available_memory,
    StopOnNonFiniteLoss,
    TensorBatchIterator,
    check_precision,
    device_resident,
)
from ._constraints import StrictInterval
from ._outlier import (
    THRESHOLD_CONSTRAINTS,
    OutlierContractMixin,
    select_inliers,
    warn_if_not_finite,
)
from .images import DATA_FORMATS, check_images


def resolve_device(device):
    """``"auto"`` becomes ``"cuda"`` when CUDA is available, else ``"cpu"``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be 'auto' or a torch device string such as 'cpu' or 'cuda:0'; "
            f"got {device!r}."
        ) from exc
    if kind == "meta":
        # Tensors on torch's meta device have shapes but no values: a model
        # "trained" there has no weights to score with.
        raise ValueError(
            "device='meta' holds no data, so nothing can be trained or scored on it; "
            "use device='auto', 'cpu' or a CUDA device such as 'cuda:0'."
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available (torch "
            f"{torch.__version__}, built {'with' if torch.backends.cuda.is_built() else 'without'} "
            "CUDA). Use device='auto' or 'cpu', or install a CUDA build of torch."
        )
    return device


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


@contextlib.contextmanager
def _forked_torch_rng(device, seed):
    """Seed torch's RNGs (CPU, and ``device``'s if CUDA) inside; restore them after."""
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if (
        device.type == "cuda"
    ) else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def _as_tensor(images):
    """A tensor view of ``images``; read-only arrays are shared, never written to."""
    with warnings.catch_warnings():
        # torch warns that it cannot protect read-only memory; skocc only reads it.
        warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)
        return torch.from_numpy(images)


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
    # skorch settings that the estimator's own parameters control.
    _RESERVED_NET_PARAMS = {
        "callbacks": "callbacks",
        "device": "device",
        "batch_size": "batch_size",
        "max_epochs": "max_epochs",
        "lr": "lr",
        "verbose": "verbose",
        "optimizer__weight_decay": "weight_decay",
        "precision": "precision",
    }

    @_fit_context(prefer_skip_nested_validation=True)
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
        for name in [a for a in vars(self) if a.endswith("_") and not a.startswith("__")]:
            delattr(self, name)

    def _fit(self, X, y):
        self._check_net_params()
        images = self._validate_images(X, reset=True)
        images = self._select_inliers(images, y)
        self.device_ = resolve_device(self.device)
        check_precision(self._precision(), self.device_)
        self._check_training_memory(images)
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

        net = self._make_net(order_seed)
        self._initialize_net(net, init_seed)
        # After the net is built, so that a bad parameter fails before any
        # warning about the number of images.
        images, held_out = self._hold_out(images, split_seed)
        # Randomness inside training (data augmentation, dropout) draws from a
        # forked, seeded torch RNG: reproducible, and the user's global state
        # is untouched.
        with _forked_torch_rng(self.device_, train_seed):
            net.partial_fit(device_resident(_as_tensor(images), self.device_))
        # A fitted module stays in eval mode: scoring then never switches the
        # mode of a module that other threads may be scoring with at the same
        # time (train mode would run the decoder's power iteration, changing
        # both their scores and the weights' normalisation).
        net.module_.eval()
        self._warn_if_interrupted(net)
        self.net_ = net
        self.n_epochs_ = sum(1 for row in net.history if "train_loss" in row)
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
        available (:func:`skocc._engine.available_memory`); the estimate is a
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

    def _network_footprint(self, dtype):
        """Parameter count and training activation bytes of one batch, traced on the meta device."""
        params = self._build_net_params()
        kwargs = {k[len("module__") :]: v for k, v in params.items() if k.startswith("module__")}
        with torch.device("meta"):
            module = params["module"](**kwargs)
        n_params = sum(p.numel() for p in module.parameters())
        total = 0

        def count(layer, inputs, output):
            nonlocal total
            for out in output if isinstance(output, (tuple, list)) else (output,):
                if isinstance(out, torch.Tensor):
                    total += out.numel() * out.element_size()

        leaves = [m for m in module.modules() if not list(m.children())]
        hooks = [m.register_forward_hook(count) for m in leaves]
        shape = (self.batch_size,) + tuple(int(s) for s in self.image_shape_)
        try:
            module.train()
            module(torch.empty(shape, dtype=_as_tensor(np.empty(0, dtype)).dtype, device="meta"))
        finally:
            for hook in hooks:
                hook.remove()
        return n_params, total

    def _check_net_params(self):
        for i, callback in enumerate(self.callbacks or []):
            named = (
                isinstance(callback, tuple) and len(callback) == 2 and isinstance(callback[0], str)
            )
            item = callback[1] if named else callback
            # skorch also takes a Callback class, which it instantiates.
            is_class = isinstance(item, type) and issubclass(item, Callback)
            if not (isinstance(item, Callback) or is_class):
                raise TypeError(
                    "callbacks must be a list of skorch callbacks (instances or subclasses "
                    "of skorch.callbacks.Callback) or (name, callback) pairs; item "
                    f"{i} is {callback!r}."
                )
        optimizer = (self.net_params or {}).get("optimizer")
        if optimizer is not None and not (
            isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)
        ):
            raise TypeError(
                "net_params['optimizer'] must be a torch optimizer class such as "
                f"torch.optim.SGD (skorch builds it with lr); got {optimizer!r}."
            )
        for key in self.net_params or {}:
            if key in self._RESERVED_NET_PARAMS:
                raise ValueError(
                    f"net_params may not set {key!r}: use the estimator parameter "
                    f"{self._RESERVED_NET_PARAMS[key]!r} instead."
                )
            if key.split("__")[0] in ("module", "criterion", "net_class", "iterator_train", "iterator_valid"):
                raise ValueError(
                    f"net_params may not set {key!r}: the estimator builds the network, its loss "
                    "and its batch iterator from its own parameters."
                )

    def _select_inliers(self, images, y):
        """The images labelled ``inlier_label``; all of them when it is None."""
        if self.inlier_label is None:
            return images
        return images[select_inliers(y, self.inlier_label, len(images), type(self).__name__)]

    @staticmethod
    def _initialize_net(net, seed):
        """``net.initialize()`` with weights drawn from ``seed``.

        Inside a forked RNG so the user's global torch state is untouched.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net.initialize()
        if torch.device(net.device).type == "cuda":
            # NHWC is the layout cuDNN's convolutions run fastest in on tensor
            # cores; on the CPU the module keeps torch's default layout.
            net.module_.to(memory_format=torch.channels_last)
        return net

    def _make_net(self, order_seed):
        """The private skorch net, not yet initialised."""
        generator = torch.Generator().manual_seed(order_seed)
        callbacks = [("stop_on_non_finite_loss", StopOnNonFiniteLoss())]
        if self.verbose >= 2:
            callbacks.append(("progress_bar", ProgressBar()))
        callbacks += copy.deepcopy(self.callbacks or [])
        pin_memory = torch.device(self.device_).type == "cuda"
        params = dict(
            optimizer=torch.optim.Adam,
            lr=self.lr,
            optimizer__weight_decay=self.weight_decay,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            train_split=None,
            iterator_train=TensorBatchIterator,
            iterator_train__shuffle=True,
            iterator_train__generator=generator,
            iterator_train__pin_memory=pin_memory,
            iterator_valid=TensorBatchIterator,
            iterator_valid__pin_memory=pin_memory,
            callbacks=callbacks,
            device=self.device_,
            precision=self._precision(),
            verbose=int(self.verbose >= 1),
        )
        params.update(self._build_net_params())
        params.update(copy.deepcopy(self.net_params or {}))
        net_class = params.pop("net_class")
        return net_class(**params)

    def _precision(self):
        # A subclass whose __init__ has no precision parameter trains in float32.
        return getattr(self, "precision", "float32")

    def _warn_if_interrupted(self, net):
        """skorch swallows KeyboardInterrupt; tell the user what they got."""
        last = net.history[-1] if len(net.history) else None
        if last is None or "train_loss" not in last:
            done = sum(1 for row in net.history if "train_loss" in row)
            batches = len(last["batches"]) if last is not None else 0
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
        _check_feature_names(self, X, reset=reset)
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
        """Apply ``fn(module, batch_on_device)`` to every batch; collect the results on the CPU.

        Runs the module in eval mode without gradients, under the net's
        ``precision``; returns ``dtype``. The input stays in its dtype (no
        float32 copy of ``uint8`` images) and goes to the device batch by batch
        unless it is small (see :func:`skocc._engine.device_resident`).
        """
        net = self.net_
        module = net.module_
        was_training = module.training
        module.eval()
        X = device_resident(_as_tensor(images), net.device)
        dataset = net.get_dataset(X)
        # One array of the final size, filled batch by batch: a list of many
        # small per-batch tensors, each allocated between the batches' large
        # activations, fragmented the heap so that resident memory grew with
        # the number of images (295 MiB more for 100,000 images of 28 x 28).
        out, start = None, 0
        try:
            with torch.no_grad(), net.autocast():
                for Xb, _ in net.get_iterator(dataset, training=False):
                    result = fn(module, Xb.to(net.device, non_blocking=True))
                    if out is None:
                        out = torch.empty((len(X),) + tuple(result.shape[1:]), dtype=dtype)
                    out[start : start + len(result)] = result
                    start += len(result)
        finally:
            module.train(was_training)
        return out.numpy()

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
    and ``_anomaly_scores_from_terms`` (the anomaly score from them).
    """

    _persisted_attributes: tuple = (
        "offset_",
        "calibration_scores_",
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
        """Training-score statistics, then ``offset_`` from the held-out images."""
        terms = self._score_terms(images)
        self._fit_score_stats(terms)
        if held_out is None:
            self._set_threshold(-self._anomaly_scores_from_terms(terms), held_out=False)
        else:
            scores = -self._anomaly_scores_from_terms(self._score_terms(held_out))
            self._set_threshold(scores, held_out=True)

    def _fit_score_stats(self, terms):
        """Hook for subclasses that standardise score terms with training statistics."""

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

