"""``skocc.export_onnx``: a fitted detector as one ONNX graph, from raw image to score.

Scores of exported models that differ from the trained model's are usually
caused by preprocessing done outside the graph, re-implemented by hand in the
deployment code. So everything between the raw image and the score goes into
the graph: the input layout, ``uint8`` scaling, resizing, per-image
normalisation, the network, the score terms and their standardisation, the
rotation ensemble and the classical detector of :class:`~skocc.TwoStageOneClass`.

The graph is traced from a small torch module around a copy of the fitted
network (:class:`AutoencoderGraph`, :class:`TwoStageGraph`) that calls the
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

from ._constraints import StrictInterval
from ._onnx_options import DEFAULT_OPSET, INPUT_DTYPES, INPUT_LAYOUTS
from ._score_graph import AutoencoderGraph, TwoStageGraph, check_two_stage
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


# ------------------------------------------------------------------ the estimator side
def _network_model(model):
    """The fitted estimator that owns the network, and the graph module class.

    Raises a TypeError naming the model when it cannot be exported.
    """
    from .autoencoder import ConvAEOneClass
    from .two_stage import TwoStageOneClass

    if isinstance(model, ConvAEOneClass):  # MultiViewConvAEOneClass included
        check_is_fitted(model)
        return model, AutoencoderGraph
    if isinstance(model, TwoStageOneClass):
        check_is_fitted(model)
        check_two_stage(model)  # refuse before any tracing work
        return model.features_, TwoStageGraph
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
    network, the score type and its standardisation with the fitted
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
    >>> # float32 networks in two runtimes: equal to about 1e-5 of the terms,
    >>> # which the default score divides by their training spread.
    >>> bool(np.allclose(score, model.score_samples(X[:5]), rtol=1e-5, atol=1e-4))
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
    output_names = ["score", "decision"] + (["map"] if graph_class is AutoencoderGraph else [])
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
