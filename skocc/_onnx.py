"""``skocc.export_onnx``: a fitted detector as one ONNX graph, from raw image to score.

Scores of exported models that differ from the trained model's are usually
caused by preprocessing done outside the graph, re-implemented by hand in the
deployment code. So everything between the raw image and the score goes into
the graph: the input layout, ``uint8`` scaling, resizing, per-image
normalisation, the network, the score terms and their standardisation, the
rotation ensemble and the classical detector of :class:`~skocc.TwoStageOneClass`.

The graph is traced from a small torch module around a copy of the fitted
network (:class:`_AutoencoderGraph`, :class:`_TwoStageGraph`) that calls the
estimators' own scoring functions, by torch's ``torch.export``-based exporter
(``dynamo=True``). The older TorchScript exporter (``dynamo=False``) is
deprecated in torch 2.13 (a ``DeprecationWarning`` on every call) and cannot
export antialiased resizing (``aten::_upsample_bilinear2d_aa``), which
``resolution`` uses; the new one maps it to ONNX ``Resize`` with
``antialias=1`` (opset 18).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._constraints import StrictInterval
from ._onnx_options import DEFAULT_OPSET, INPUT_DTYPES, INPUT_LAYOUTS
from ._sklearn_compat import StrOptions, validate_params
from ._version import __version__

__all__ = ["export_onnx"]


_INPUT_NAME = "images"
_TORCH_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
_EXTRA_MESSAGE = (
    "skocc.export_onnx needs the packages onnx and onnxscript (torch's ONNX exporter "
    'uses them); install them with: pip install "skocc[onnx]"'
)


def _import_exporter():
    """The ``onnx`` module, after checking that torch's exporter can run.

    onnxruntime is not needed to export, only to run the file.
    """
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx.export(dynamo=True) imports it)
    except ImportError as exc:
        raise ImportError(f"{_EXTRA_MESSAGE} ({exc}).") from exc
    return onnx


# ------------------------------------------------------------------ graph modules
def _to_channels_first(images, layout, sample_shape):
    """``(n, [V,] C, H, W)`` from the graph's input in ``layout``."""
    if layout == "channels_last":
        return images.movedim(-1, -3)
    if layout == "flat":
        return images.reshape((-1,) + tuple(sample_shape))
    return images


class _AutoencoderGraph(nn.Module):
    """Raw images to ``(score, decision, map)`` for a fitted (multi-view) autoencoder.

    ``module`` is a CPU copy of the fitted network in eval mode; its own
    :class:`~skocc.nn.ImagePreprocess` scales ``uint8``, resizes and normalises.
    The score terms, their combination and the map are the estimator's own
    functions; the combination runs in float64, as ``score_samples`` does.
    """

    def __init__(self, model, module, layout):
        super().__init__()
        from .nn.objectives import combine_score_terms

        self.module = module
        self.layout = layout
        self.sample_shape = tuple(model.image_shape_)
        self.map_size = tuple(model.image_shape_[-2:])
        # As score_samples and score_map read them: the objective the net was
        # trained with (its norm), the score type as set now.
        self.objective = copy.deepcopy(model.net_.criterion_)
        self.score_type = model.score_type
        self.combine_terms = combine_score_terms
        self.register_buffer("score_mean", torch.as_tensor(model.score_mean_, dtype=torch.float64))
        self.register_buffer("score_std", torch.as_tensor(model.score_std_, dtype=torch.float64))
        # The threshold that predict uses now (for the score type as set now).
        offset = model._threshold_now()[0]
        self.register_buffer("offset", torch.tensor(float(offset), dtype=torch.float64))

    def forward(self, images):
        output = self.module(_to_channels_first(images, self.layout, self.sample_shape))
        terms = self.objective.score_terms(output).double()
        anomaly = self.combine_terms(
            self.score_type, terms[:, 0], terms[:, 1], self.score_mean, self.score_std,
            slice(0, 1), slice(1, 2),
        )
        score = -anomaly.reshape(-1)
        return score, score - self.offset, self.objective.pixel_map(output, self.map_size)


class _GaussianLogDensity(nn.Module):
    """:meth:`skocc.detectors.GaussianDensity.score_samples` in float64 torch.

    ``-0.5 * ||W (f - location)||^2 - log_norm`` with ``W`` the inverse of the
    Cholesky factor, computed once here: ONNX has no triangular solve, and a
    matrix product with the exact float64 inverse differs from the solve by
    rounding only.
    """

    def __init__(self, detector):
        super().__init__()
        from scipy.linalg import solve_triangular

        location, cholesky, log_norm = detector._log_density_parameters()
        whiten = solve_triangular(cholesky, np.eye(len(cholesky)), lower=True)
        self.register_buffer("location", torch.as_tensor(location, dtype=torch.float64))
        self.register_buffer("whiten_t", torch.as_tensor(whiten.T.copy(), dtype=torch.float64))
        self.register_buffer("log_norm", torch.tensor(float(log_norm), dtype=torch.float64))

    def forward(self, features):
        white = (features - self.location) @ self.whiten_t
        return -0.5 * white.pow(2).sum(dim=1) - self.log_norm


class _GaussianKDELogDensity(nn.Module):
    """:meth:`skocc.detectors.GaussianKDE.score_samples` in float64 torch.

    The training points are a constant of the graph. The log-sum-exp is
    written out (maximum first) rather than left to ``torch.logsumexp``, so the
    graph cannot depend on how an exporter or a runtime implements
    ``ReduceLogSumExp``: at small bandwidths every kernel value underflows and
    only the shifted form stays finite.
    """

    def __init__(self, detector):
        super().__init__()
        train = np.asarray(detector.X_fit_, dtype=np.float64)
        n, d = train.shape
        h2 = float(detector.bandwidth_) ** 2
        self.register_buffer("train_t", torch.as_tensor(train.T.copy()))
        self.register_buffer("train_sq", torch.as_tensor((train**2).sum(axis=1)))
        self.register_buffer("scale", torch.tensor(-0.5 / h2, dtype=torch.float64))
        const = np.log(n) + 0.5 * d * np.log(2.0 * np.pi * h2)
        self.register_buffer("const", torch.tensor(float(const), dtype=torch.float64))

    def forward(self, features):
        # |f - x|^2 expanded into one matrix product, as torch.cdist computes
        # it for more than 25 points; clamped because rounding can make it < 0.
        sq = features.pow(2).sum(dim=1, keepdim=True) + self.train_sq - 2.0 * (features @ self.train_t)
        logits = sq.clamp_min(0.0) * self.scale
        top = logits.amax(dim=1, keepdim=True)
        return (top + (logits - top).exp().sum(dim=1, keepdim=True).log()).reshape(-1) - self.const


def _detector_module(detector, index):
    from .detectors import GaussianDensity, GaussianKDE

    # Exact types: a subclass may score differently from the formulas here.
    if type(detector) is GaussianDensity:
        return _GaussianLogDensity(detector)
    if type(detector) is GaussianKDE:
        return _GaussianKDELogDensity(detector)
    raise TypeError(
        "export_onnx puts only skocc's GaussianDensity (detector='gde') and GaussianKDE "
        f"(detector='kde') into the graph; the model's detectors_[{index}] is "
        f"{type(detector).__module__}.{type(detector).__qualname__}, whose scoring has no "
        "ONNX form here. Refit TwoStageOneClass with detector='gde' or 'kde' to export it, "
        "or deploy it with joblib."
    )


class _TwoStageGraph(nn.Module):
    """Raw images to ``(score, decision)`` for a fitted :class:`~skocc.TwoStageOneClass`.

    Per quarter turn of the rotation ensemble, the network's own
    ``features(x, layer, turn)`` (preprocessing, rotation, encoder, L2
    normalisation) and that turn's detector, then the estimator's own
    combination, in float64 as ``score_samples`` computes it.
    """

    def __init__(self, model, module, layout):
        super().__init__()
        from .two_stage import _combine_scores

        self.module = module
        self.layout = layout
        self.sample_shape = tuple(model.features_.image_shape_)
        self.feature_layer = model.features_.feature_layer  # read at transform time, as there
        self.detectors = nn.ModuleList(_detector_module(d, i) for i, d in enumerate(model.detectors_))
        self.combine_scores = _combine_scores
        self.register_buffer("score_mean", torch.as_tensor(model.score_mean_, dtype=torch.float64))
        self.register_buffer("score_std", torch.as_tensor(model.score_std_, dtype=torch.float64))
        self.register_buffer("offset", torch.tensor(float(model.offset_), dtype=torch.float64))

    def forward(self, images):
        x = _to_channels_first(images, self.layout, self.sample_shape)
        scores = torch.stack(
            [
                detector(self.module.features(x, self.feature_layer, turn).double())
                for turn, detector in enumerate(self.detectors)
            ],
            dim=1,
        )
        score = self.combine_scores(scores, self.score_mean, self.score_std)
        return score, score - self.offset


# ------------------------------------------------------------------ the estimator side
def _network_model(model):
    """The fitted estimator that owns the network, and the graph module class.

    Raises a TypeError naming the model when it cannot be exported.
    """
    from .autoencoder import ConvAEOneClass
    from .self_supervised import SelfSupervisedFeatures
    from .two_stage import TwoStageOneClass

    if isinstance(model, ConvAEOneClass):  # MultiViewConvAEOneClass included
        check_is_fitted(model)
        return model, _AutoencoderGraph
    if isinstance(model, TwoStageOneClass):
        check_is_fitted(model)
        if type(model.features_) is not SelfSupervisedFeatures:
            raise TypeError(
                "export_onnx exports a TwoStageOneClass whose features are skocc's "
                "SelfSupervisedFeatures; the model's features_ is "
                f"{type(model.features_).__module__}.{type(model.features_).__qualname__}."
            )
        for i, detector in enumerate(model.detectors_):
            _detector_module(detector, i)  # refuse before any tracing work
        return model.features_, _TwoStageGraph
    raise TypeError(
        "model must be a fitted ConvAEOneClass, MultiViewConvAEOneClass or "
        f"TwoStageOneClass; got {type(model).__module__}.{type(model).__qualname__}."
    )


def _resolve_layout(network_model, input_layout):
    """The concrete layout of ``input_layout="auto"``: the one the model was set to read."""
    if input_layout != "auto":
        return input_layout
    if network_model.image_shape is not None:
        return "flat"
    if network_model.data_format == "channels_last":
        return "channels_last"
    return "channels_first"


def _input_shape(network_model, layout):
    """Shape of one sample of the graph's input."""
    shape = tuple(int(s) for s in network_model.image_shape_)
    if layout == "flat":
        return (int(np.prod(shape)),)
    if layout == "channels_last":
        return shape[:-3] + shape[-2:] + shape[-3:-2]
    return shape


def _jsonable(value):
    """``value`` as JSON: tuples as lists, estimators as their class and parameters."""
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, BaseEstimator):
        return {"class": type(value).__name__, "params": _jsonable(value.get_params(deep=False))}
    return repr(value)  # a callback or a RandomState: recorded, not rebuilt


def _metadata(model, layout, input_dtype, input_shape, output_names, opset):
    return {
        "skocc_version": __version__,
        "class": type(model).__name__,
        "params": json.dumps(_jsonable(model.get_params(deep=False)), sort_keys=True),
        # Read, never recomputed: the file scores with the threshold predict uses now.
        "offset_": repr(float(model._threshold_now()[0])),
        "contamination": repr(float(model.contamination)),
        "input_name": _INPUT_NAME,
        "input_layout": layout,
        "input_dtype": input_dtype,
        "input_shape": json.dumps(["batch", *input_shape]),
        "output_names": json.dumps(list(output_names)),
        "opset": str(opset),
    }


def _check_opset(proto, opset):
    """Raise unless ``proto`` is in ``opset``.

    torch's exporter writes opset 18 and converts to the one asked for; where
    that conversion fails it logs a warning and keeps 18, and the file would
    then not be what its metadata says.
    """
    written = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if written != [opset]:
        raise ValueError(
            f"torch's ONNX exporter could not convert the graph to opset={opset}; it wrote "
            f"opset {written[0] if len(written) == 1 else written}. Export with "
            f"opset={DEFAULT_OPSET}, which it writes natively."
        )


def _graph_module(model, network_model, graph_class, layout):
    """The graph module around a CPU copy of the fitted network.

    A copy, so that nothing of the user's model changes: not its module's
    mode, device or weights, nor (through tracing) any buffer.
    """
    module = copy.deepcopy(network_model.net_.module_).to("cpu").eval()
    module.requires_grad_(False)
    return graph_class(model, module, layout).eval()


@validate_params(
    {
        "model": [BaseEstimator],
        "path": [str, os.PathLike],
        "input_layout": [StrOptions(set(INPUT_LAYOUTS))],
        "input_dtype": [StrOptions(set(INPUT_DTYPES))],
        "opset": [StrictInterval(Integral, DEFAULT_OPSET, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def export_onnx(model, path, *, input_layout="auto", input_dtype="uint8", opset=DEFAULT_OPSET):
    """Write a fitted detector to an ONNX file that scores raw images.

    The graph holds everything between the raw image and the score, so that
    deployment code (ONNX Runtime from C++, C#, Java or Python) feeds pixels
    and reads ``score_samples`` and ``decision_function``, with nothing to
    re-implement: the input layout, the scaling of ``uint8`` to [0, 1],
    resizing to ``resolution`` (antialiased), ``normalize="image"``, the
    network, the score type and its standardisation with the training
    statistics, and for :class:`~skocc.TwoStageOneClass` the L2-normalised
    features of every quarter turn of the rotation ensemble and the Gaussian
    (``"gde"``) or the exact kernel density (``"kde"``, its training points
    stored in the file). The batch size is dynamic.

    Outputs, per sample:

    - ``score``: ``score_samples`` (float64, higher = more normal);
    - ``decision``: ``score - offset_`` (float64), with ``offset_`` as the
      model has it when exported; ``predict`` is +1 where it is >= 0, else -1;
    - ``map`` (autoencoders only): ``score_map``, float32 of shape
      ``(batch, H, W)`` (``(batch, V, H, W)`` with views).

    The file's metadata (``metadata_props``) records the skocc version, the
    class, its parameters (JSON), ``offset_``, ``contamination``, the input's
    name, layout, dtype and shape, the output names and the opset.

    Not exported: detectors other than ``"gde"`` and ``"kde"`` (``"ocsvm"``,
    any scikit-learn detector), which raise a TypeError, and anything that is
    not scoring (training, ``score_samples_per_view``, ``reconstruct``). The
    threshold is a number in the file: after recalibrating ``offset_``, export
    again. The graph computes in float32 (the score's last steps in float64):
    a model with ``precision="bfloat16"`` or ``"float16"`` scores in float32
    here (a warning says so).

    Parameters
    ----------
    model : ConvAEOneClass, MultiViewConvAEOneClass or TwoStageOneClass
        A fitted model; it is not changed (the network is copied to the CPU).
    path : str or path-like
        ONNX file to write; replaced if it exists.
    input_layout : {"auto", "channels_first", "channels_last", "flat"}, default="auto"
        Layout of the graph's input: ``"channels_first"`` is ``(batch, C, H,
        W)``, ``"channels_last"`` ``(batch, H, W, C)`` as OpenCV and PIL give
        images, ``"flat"`` ``(batch, C*H*W)`` in channels-first order (as
        ``image_shape`` reads 2-D input); multi-view models have the view axis
        after the batch axis (``(batch, V, C, H, W)``, ``(batch, V, H, W, C)``,
        ``(batch, V*C*H*W)``). ``"auto"``: the layout the model was set to
        read: ``"flat"`` when it has an ``image_shape``, ``"channels_last"``
        with ``data_format="channels_last"``, otherwise ``"channels_first"``.
        ``C``, ``H`` and ``W`` are those seen in ``fit`` (``image_shape_``);
        grayscale images have ``C = 1``.
    input_dtype : {"uint8", "float32"}, default="uint8"
        Element type of the input. ``"uint8"`` pixels are divided by 255 in
        the graph, ``"float32"`` values are used as given: the rule
        ``score_samples`` applies to each dtype.
    opset : int, default=18
        ONNX opset of the file. 18, the first with antialiased ``Resize``, is
        the one torch's exporter writes natively; a later one (up to the
        newest the installed onnx defines) is converted to by onnxscript, and
        a ValueError says so if that conversion fails.

    Raises
    ------
    TypeError
        If ``model`` is not one of the exportable classes, or its detector has
        no ONNX form here.
    sklearn.exceptions.NotFittedError
        If ``model`` is not fitted.
    ImportError
        If onnx or onnxscript is missing (``pip install "skocc[onnx]"``).

    See Also
    --------
    skocc.save : The model in skocc's own file format, for Python.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> import onnxruntime
    >>> import skocc
    >>> X = np.random.RandomState(0).randint(0, 256, size=(40, 8, 8)).astype(np.uint8)
    >>> model = skocc.ConvAEOneClass(
    ...     channels=(8,), latent_dim=4, max_epochs=1, device="cpu", random_state=0
    ... ).fit(X)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.onnx"
    >>> skocc.export_onnx(model, path, input_dtype="uint8")
    >>> session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    >>> score, decision, maps = session.run(None, {"images": X[:5, None]})
    >>> bool(np.allclose(score, model.score_samples(X[:5]), rtol=1e-5))
    True
    >>> maps.shape
    (5, 8, 8)
    """
    onnx = _import_exporter()
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ValueError(
            f"opset must be at most {newest}, the newest opset the installed onnx "
            f"{onnx.__version__} defines; got {opset}."
        )
    network_model, graph_class = _network_model(model)
    precision = network_model.net_.precision  # as fitted: set_params since changes nothing
    if precision != "float32":
        warnings.warn(
            f"{type(network_model).__name__} scores with precision={precision!r} "
            "(autocast); the exported graph computes in float32, so its scores differ from "
            "score_samples by that rounding.",
            UserWarning,
            stacklevel=2,
        )
    layout = _resolve_layout(network_model, input_layout)
    input_shape = _input_shape(network_model, layout)
    graph = _graph_module(model, network_model, graph_class, layout)
    output_names = ["score", "decision"] + (["map"] if graph_class is _AutoencoderGraph else [])
    # Two examples: a batch of one would let the tracer specialise the batch size.
    example = torch.zeros((2,) + input_shape, dtype=_TORCH_DTYPES[input_dtype])
    with warnings.catch_warnings():
        # Raised inside torch.export by torch's own pytree code on every export
        # (torch 2.13); nothing a caller can change.
        warnings.filterwarnings(
            "ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning
        )
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            opset_version=int(opset),
            input_names=[_INPUT_NAME],
            output_names=output_names,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    proto = program.model_proto
    _check_opset(proto, int(opset))
    metadata = _metadata(model, layout, input_dtype, input_shape, output_names, int(opset))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = (
        f"skocc {metadata['skocc_version']} {metadata['class']}: input {_INPUT_NAME!r} "
        f"{input_dtype} {layout}; outputs {', '.join(output_names)} (score = score_samples, "
        "higher = more normal; decision = score - offset_, predict = +1 where decision >= 0)."
    )
    onnx.save_model(proto, os.fspath(path))
