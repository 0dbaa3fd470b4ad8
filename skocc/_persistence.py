"""``skocc.save`` and ``skocc.load``: fitted estimators in a file that runs no code.

One file in the safetensors format: the network's weights are its tensors, and
everything else is JSON in the file's string metadata under the key
``"skocc"``. Reading uses ``safetensors.safe_open`` and ``json.loads`` only:
nothing is unpickled, no name from the file is imported, and only the classes
of skocc's own registry (:func:`skocc.base.registered_estimators`) can be
instantiated, with JSON values (numbers, strings, lists, dicts) as parameters.

The JSON holds the format name and version, the skocc version that wrote the
file, the class name, the constructor parameters, the fitted attributes that
the class declares in ``_persisted_attributes``, the training history and a
SHA-256 of the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from skorch.exceptions import DeviceWarning
from skorch.history import History

from . import __version__
from .base import _REGISTRY, resolve_device

__all__ = ["FORMAT_VERSION", "load", "save"]

FORMAT_NAME = "skocc"
#: Version of the file layout; a file of another version is refused.
FORMAT_VERSION = 1
_METADATA_KEY = "skocc"

# Attributes every fitted estimator has that are not stored as JSON: the net's
# weights and history are stored apart, the device is chosen when loading.
_NOT_JSON_ATTRIBUTES = ("net_", "device_")

# Keys of net_params that act only while training. A value that JSON cannot
# hold (an optimizer class, a ValidSplit) is dropped with a warning: the saved
# network and its scores do not depend on it. Any other key with such a value
# could change the network or its scoring, so saving refuses it.
_TRAINING_ONLY_NET_PARAMS = ("optimizer", "train_split", "iterator_train", "callbacks")

_TAGS = ("__tuple__", "__dict__", "__ndarray__")
_DTYPE_PATTERN = re.compile(r"^[<>|=]?[biuf][1248]$")


class _NotJSON(TypeError):
    """A value that the file's JSON cannot hold."""


# ---------------------------------------------------------------- JSON codec
def _encode(value):
    """JSON-safe form of ``value``; tuples, dicts and arrays carry a tag."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _NotJSON(f"a dict with non-string keys ({list(value)!r})")
        return {"__dict__": {k: _encode(v) for k, v in value.items()}}
    if isinstance(value, np.ndarray):
        shape = list(value.shape)
        if value.dtype.kind in "biuf":
            return {"__ndarray__": value.tolist(), "dtype": value.dtype.str, "shape": shape}
        if value.dtype == object and all(isinstance(v, str) for v in value.ravel()):
            return {"__ndarray__": value.tolist(), "dtype": "object", "shape": shape}
    raise _NotJSON(f"{type(value).__module__}.{type(value).__qualname__} object {value!r}")


def _decode(value):
    """Inverse of :func:`_encode`; raises ValueError on anything it did not write."""
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        tags = [t for t in _TAGS if t in value]
        if len(tags) != 1:
            raise ValueError(f"unexpected JSON object with keys {sorted(value)[:5]}")
        tag = tags[0]
        if tag == "__tuple__" and set(value) == {tag} and isinstance(value[tag], list):
            return tuple(_decode(v) for v in value[tag])
        if tag == "__dict__" and set(value) == {tag} and isinstance(value[tag], dict):
            return {str(k): _decode(v) for k, v in value[tag].items()}
        if tag == "__ndarray__" and set(value) == {tag, "dtype", "shape"}:
            return _decode_array(value)
        raise ValueError(f"malformed {tag} entry")
    raise ValueError(f"unexpected JSON value of type {type(value).__name__}")


def _decode_array(value):
    dtype, shape = value["dtype"], value["shape"]
    if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
        raise ValueError(f"malformed array shape {shape!r}")
    if dtype == "object":
        array = np.asarray(value["__ndarray__"], dtype=object)
        if not all(isinstance(v, str) for v in array.ravel()):
            raise ValueError("an object array may hold strings only")
    elif isinstance(dtype, str) and _DTYPE_PATTERN.match(dtype):
        array = np.asarray(value["__ndarray__"], dtype=np.dtype(dtype))
    else:
        raise ValueError(f"unsupported array dtype {dtype!r}")
    if array.size != int(np.prod(shape)):
        raise ValueError(f"array data does not fill its shape {shape}")
    return array.reshape(shape)


# ---------------------------------------------------------------- weights
def weights_sha256(state_dict):
    """SHA-256 of tensors: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- save
def save(estimator, path):
    """Save a fitted skocc estimator to one file that loading cannot run code from.

    The weights are stored as safetensors, everything else as JSON in the same
    file; nothing is pickled. Load it with :func:`skocc.load`. Use the
    extension ``.skocc`` by convention.

    What is stored: the constructor parameters, the fitted attributes, the
    network's weights and the training history (dropped with a warning when a
    callback logged values JSON cannot hold). Not stored: the optimizer's
    state (a later ``fit`` starts afresh anyway).

    Parameters that JSON cannot hold are handled so that the loaded model
    scores exactly as the saved one:

    - ``callbacks`` act only while training: a non-empty list is dropped with
      a warning and the loaded estimator has ``callbacks=None``;
    - ``net_params`` entries for ``optimizer``, ``train_split``,
      ``iterator_train`` and ``callbacks`` holding Python objects are dropped
      with a warning, for the same reason, together with their ``__``
      arguments (``optimizer__momentum`` goes with ``optimizer``);
    - any other parameter holding a Python object (a ``net_params`` entry that
      shapes the module or the scoring, a ``RandomState`` instance as
      ``random_state``) makes ``save`` raise a ``TypeError`` naming it: set it
      to a JSON value, or use :mod:`joblib` for files you will only load
      yourself.

    Parameters
    ----------
    estimator : skocc estimator
        A fitted instance of one of skocc's estimator classes (subclasses
        defined outside skocc are refused: :func:`skocc.load` could not
        rebuild them).
    path : str or path-like
        File to write; replaced if it exists.

    Raises
    ------
    TypeError
        If the estimator is not one of skocc's classes, or a parameter cannot
        be stored.
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.

    See Also
    --------
    load : Read the file back.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> import skocc
    >>> X = np.random.RandomState(0).rand(20, 8, 8).astype(np.float32)
    >>> model = skocc.ConvAEOneClass(max_epochs=2, device="cpu", random_state=0).fit(X)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.skocc"
    >>> skocc.save(model, path)
    >>> again = skocc.load(path)
    >>> bool(np.array_equal(again.score_samples(X), model.score_samples(X)))
    True
    """
    cls = type(estimator)
    name = cls.__name__
    if name == "TwoStageOneClass" and cls.__module__ == "skocc.two_stage":
        raise TypeError(
            "skocc.save cannot store a TwoStageOneClass: its second stage is a scikit-learn "
            "detector, which only pickle can store. Save the network with "
            "skocc.save(model.features_, path) and the whole model with joblib (load such "
            "files only if you trust them)."
        )
    if _REGISTRY.get(name) is not cls:
        raise TypeError(
            f"skocc.save stores skocc's own estimators ({', '.join(sorted(_REGISTRY))}); "
            f"got {cls.__module__}.{cls.__qualname__}. Use joblib for other objects, and "
            "load such files only if you trust them."
        )
    check_is_fitted(estimator)
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "skocc_version": __version__,
        "torch_version": torch.__version__,
        "estimator": name,
        "params": _params_to_json(estimator),
        "attributes": _attributes_to_json(estimator),
        "history": _history_to_json(estimator),
    }
    state = {
        key: tensor.detach().cpu().contiguous().clone()
        for key, tensor in estimator.net_.module_.state_dict().items()
    }
    header["weights_sha256"] = weights_sha256(state)
    from safetensors.torch import save_file

    # Write beside the target, then rename: an interrupted save never leaves
    # a truncated file under the final name.
    path = Path(os.fspath(path))
    partial = path.with_name(path.name + ".partial")
    try:
        save_file(state, partial, metadata={_METADATA_KEY: json.dumps(header)})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _params_to_json(estimator):
    name = type(estimator).__name__
    params = estimator.get_params(deep=False)
    if params.get("callbacks"):
        warnings.warn(
            f"skocc.save drops callbacks={params['callbacks']!r}: callbacks act only while "
            "training and cannot be stored without pickle. The loaded estimator scores "
            "the same but has callbacks=None; pass them again before refitting it.",
            UserWarning,
            stacklevel=3,
        )
        params["callbacks"] = None
    if params.get("net_params"):
        params["net_params"] = _net_params_to_json_safe(params["net_params"])
    encoded = {}
    for key, value in params.items():
        try:
            encoded[key] = _encode(value)
        except _NotJSON as exc:
            raise TypeError(
                f"skocc.save cannot store the parameter {key} of {name}: it holds a "
                f"{exc}, and the file keeps only JSON values (numbers, strings, lists, "
                f"dicts) so that loading it runs no code. Set {key} to such a value "
                "(e.g. an int random_state), or save with joblib and load that file "
                "only if you trust it."
            ) from None
    return encoded


def _net_params_to_json_safe(net_params):
    def base(key):
        return key.split("__", 1)[0]

    def storable(value):
        try:
            _encode(value)
        except _NotJSON:
            return False
        return True

    # A training-only group (``optimizer`` and its ``optimizer__*`` arguments)
    # is dropped whole when any of it is an object: keeping SGD's momentum
    # without SGD would make the rebuilt net fail to initialise.
    groups = {
        base(key)
        for key, value in net_params.items()
        if base(key) in _TRAINING_ONLY_NET_PARAMS and not storable(value)
    }
    dropped = [key for key in net_params if base(key) in groups]
    kept = {key: value for key, value in net_params.items() if base(key) not in groups}
    if dropped:
        warnings.warn(
            f"skocc.save drops the training-only net_params entries {dropped}: they hold "
            "Python objects, which the file cannot store without pickle. The loaded "
            "estimator scores the same; set them again before refitting it.",
            UserWarning,
            stacklevel=4,
        )
    return kept


def _attributes_to_json(estimator):
    cls = type(estimator)
    declared = set(cls._persisted_attributes) | set(cls._optional_persisted_attributes)
    fitted = {k for k in vars(estimator) if k.endswith("_") and not k.startswith("_")}
    undeclared = sorted(fitted - declared - set(_NOT_JSON_ATTRIBUTES))
    if undeclared:
        # A developer's error: refuse rather than write a file that loads into
        # a half-restored estimator.
        raise TypeError(
            f"{cls.__name__} has fitted attributes {undeclared} that are not declared in "
            f"{cls.__name__}._persisted_attributes, so skocc.save cannot know whether "
            "they are needed; declare them."
        )
    attributes = {}
    for key in cls._persisted_attributes + tuple(
        k for k in cls._optional_persisted_attributes if k in fitted
    ):
        try:
            attributes[key] = _encode(getattr(estimator, key))
        except _NotJSON as exc:
            raise TypeError(f"skocc.save cannot store the fitted attribute {key}: {exc}.") from None
    return attributes


def _history_to_json(estimator):
    def default(value):
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(type(value).__name__)

    history = list(estimator.net_.history)
    try:
        json.dumps(history, default=default)
    except (TypeError, ValueError) as exc:
        warnings.warn(
            f"skocc.save drops the training history of {type(estimator).__name__}: it "
            f"holds a value JSON cannot store ({exc}). Scores are unaffected.",
            UserWarning,
            stacklevel=3,
        )
        return []
    return json.loads(json.dumps(history, default=default))


# ---------------------------------------------------------------- load
def load(path, *, device=None):
    """Load an estimator saved by :func:`skocc.save`, without running code from the file.

    Parameters
    ----------
    path : str or path-like
        File written by :func:`skocc.save`.
    device : str or None, default=None
        Device to put the network on (``"cpu"``, ``"cuda"``, ``"cuda:1"``,
        ``"auto"``); it also becomes the estimator's ``device`` parameter, so a
        later ``fit`` uses it too. ``None`` resolves the saved ``device``
        parameter on this machine and falls back to the CPU, with a warning,
        when it names CUDA and CUDA is not available.

    Returns
    -------
    estimator : skocc estimator
        Fitted, with the saved parameters, fitted attributes and weights;
        ``score_samples`` gives the saved model's scores. ``device_`` says
        where the network is.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a skocc model, was written by another skocc version
        or in another format version, names a class that is not skocc's, or was
        modified (its weights do not match their recorded SHA-256, or its JSON
        does not describe a valid estimator).

    See Also
    --------
    save : Write the file.

    Notes
    -----
    Loading a file from a stranger runs none of its code, but it does build a
    network of the size the file describes: a hostile file can still ask for
    a lot of memory.
    """
    path = Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"No skocc model file at {str(path)!r}.")
    header, state = _read(path)

    def invalid(detail):
        return ValueError(f"{str(path)!r} is not a valid skocc model file: {detail}.")

    name = header.get("estimator")
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise invalid(
            f"it names the class {name!r}, which is not one of skocc's estimators "
            f"({', '.join(sorted(_REGISTRY))}); only those can be loaded"
        )
    if weights_sha256(state) != header.get("weights_sha256"):
        raise invalid(
            "its weights do not match the SHA-256 recorded when it was saved (the file "
            "is corrupt or was modified)"
        )
    try:
        params = _decode_section(header, "params")
        estimator = cls(**params)
        estimator._validate_params()
    except (TypeError, ValueError) as exc:
        raise invalid(f"its parameters do not describe a {name}: {exc}") from None
    try:
        attributes = _decode_section(header, "attributes")
    except ValueError as exc:
        raise invalid(f"its fitted attributes are malformed: {exc}") from None
    missing = set(cls._persisted_attributes) - set(attributes)
    declared = set(cls._persisted_attributes) | set(cls._optional_persisted_attributes)
    unknown = set(attributes) - declared
    if missing or unknown:
        raise invalid(
            f"its fitted attributes do not match {name}'s (missing {sorted(missing)}, "
            f"unknown {sorted(unknown)})"
        )
    for key, value in attributes.items():
        setattr(estimator, key, value)
    history = header.get("history")
    if not (isinstance(history, list) and all(isinstance(row, dict) for row in history)):
        raise invalid("its training history is not a list of JSON objects")

    estimator.device_ = _load_device(estimator, device)
    if device is not None:
        estimator.set_params(device=device)
    try:
        net = estimator._make_net(order_seed=0)
        estimator._initialize_net(net, seed=0)
        net.module_.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise invalid(f"its weights and parameters do not fit together: {exc}") from None
    net.module_.eval()  # as fit leaves it, so concurrent scoring is safe
    net.history = History(history)
    estimator.net_ = net
    return estimator


def _read(path):
    """The JSON header and the tensors of a skocc file; ValueError if it is not one."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            text = metadata.get(_METADATA_KEY)
            if text is None:
                raise ValueError("it is a safetensors file without skocc's metadata")
            header = _check_header(text)
            state = {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as exc:
        raise ValueError(
            f"{str(path)!r} is not a skocc model file (not readable as safetensors: {exc})."
        ) from None
    except ValueError as exc:
        raise ValueError(f"{str(path)!r} is not a valid skocc model file: {exc}.") from None
    return header, state


def _check_header(text):
    try:
        header = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"its metadata is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ValueError("its metadata does not say format 'skocc'")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"it has format version {header.get('format_version')!r}, written by skocc "
            f"{header.get('skocc_version')!r}; this skocc ({__version__}) reads format "
            f"version {FORMAT_VERSION} only"
        )
    if header.get("skocc_version") != __version__:
        # Parameters, attributes and network layouts may change between
        # versions without a change of the file layout, so only the same
        # version is trusted to rebuild the same model.
        raise ValueError(
            f"it was written by skocc {header.get('skocc_version')!r} and this is skocc "
            f"{__version__}; load it with skocc {header.get('skocc_version')!r} (or refit "
            "and save with this version)"
        )
    return header


def _decode_section(header, key):
    section = header.get(key)
    if not isinstance(section, dict):
        raise ValueError(f"its {key!r} entry is missing or not a JSON object")
    return {str(k): _decode(v) for k, v in section.items()}


def _load_device(estimator, device):
    if device is not None:
        return resolve_device(device)
    try:
        return resolve_device(estimator.device)
    except ValueError:
        if str(estimator.device).split(":")[0] != "cuda":
            raise
        warnings.warn(
            f"The model was saved with device={estimator.device!r} but CUDA is not "
            "available here; loading it on the CPU. Pass device='cpu' to silence this.",
            DeviceWarning,
            stacklevel=3,
        )
        return "cpu"
