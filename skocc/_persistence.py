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
import math
import os
import re
import struct
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from skorch.exceptions import DeviceWarning
from skorch.history import History

from ._runtime import resolve_device
from ._version import __version__
from .base import _REGISTRY

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


def _decode(value, depth=0):
    """Inverse of :func:`_encode`; raises ValueError on anything it did not write."""
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if depth >= _MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested too deeply (more than {_MAX_JSON_DEPTH} levels)")
    if isinstance(value, list):
        return [_decode(v, depth + 1) for v in value]
    if isinstance(value, dict):
        tags = [t for t in _TAGS if t in value]
        if len(tags) != 1:
            raise ValueError(f"unexpected JSON object with keys {sorted(value)[:5]}")
        tag = tags[0]
        if tag == "__tuple__" and set(value) == {tag} and isinstance(value[tag], list):
            return tuple(_decode(v, depth + 1) for v in value[tag])
        if tag == "__dict__" and set(value) == {tag} and isinstance(value[tag], dict):
            return {str(k): _decode(v, depth + 1) for k, v in value[tag].items()}
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
        try:
            array = np.asarray(value["__ndarray__"], dtype=np.dtype(dtype))
        except (OverflowError, TypeError) as exc:  # 1000 as int8, a dict among numbers
            raise ValueError(f"array data that is not of dtype {dtype!r} ({exc})") from None
    else:
        raise ValueError(f"unsupported array dtype {dtype!r}")
    # math.prod, not np.prod: int64 products of hostile shapes wrap around to 0.
    if array.size != math.prod(shape):
        raise ValueError(f"array data does not fill its shape {shape}")
    return array.reshape(shape)


# ---------------------------------------------------------------- weights
def weights_sha256(state_dict):
    """SHA-256 of tensors: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        # The bytes through the buffer protocol: no second copy of the weights.
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
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
    # A skocc class that skocc.save cannot store says why, and what to do instead.
    refusal = getattr(cls, "_skocc_save_refusal", None) if cls.__module__.startswith("skocc.") else None
    if refusal:
        raise TypeError(f"skocc.save cannot store a {name}: {refusal}")
    if _REGISTRY.get(name) is not cls:
        raise TypeError(
            f"skocc.save stores skocc's own estimators ({', '.join(sorted(_REGISTRY))}); "
            f"got {cls.__module__}.{cls.__qualname__}. Use joblib for other objects, and "
            "load such files only if you trust them."
        )
    check_is_fitted(estimator)
    path = _check_save_path(path)
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
    partial = path.with_name(path.name + ".partial")
    try:
        save_file(state, partial, metadata={_METADATA_KEY: json.dumps(header)})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _check_save_path(path):
    """``path`` as a Path; an OSError naming it when it cannot be written to.

    Checked before anything is encoded, and before the command line trains for
    an hour: safetensors would otherwise fail at the end, naming only the
    temporary ``.partial`` file beside the target.
    """
    path = Path(os.fspath(path))
    if path.is_dir():
        raise IsADirectoryError(
            f"skocc.save cannot write path={str(path)!r}: it is a directory. Pass a file "
            f"name, e.g. {str(path / 'model.skocc')!r}."
        )
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"skocc.save cannot write path={str(path)!r}: the folder {str(folder)!r} does not "
            "exist. Create it first (os.makedirs), or pass a path in an existing folder."
        )
    return path


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
        ``"mps"``, ``"auto"``); it also becomes the estimator's ``device``
        parameter, so a later ``fit`` uses it too. ``None`` resolves the saved
        ``device`` parameter on this machine and falls back to the CPU, with a
        warning, when it names CUDA and CUDA is not available.

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
        does not describe a valid estimator and the network its tensors hold);
        if ``device`` cannot hold the weights (``"meta"``, or a device this
        machine does not have).
    TypeError
        If ``device`` is neither a str nor None.

    See Also
    --------
    save : Write the file.

    Notes
    -----
    Loading a file from a stranger runs none of its code, and checks the file
    before it allocates anything for it: the JSON (nesting depth, types,
    parameters the class accepts, every fitted attribute's type, shape,
    finiteness and consistency with the others), then the names, dtypes and
    shapes of the tensors the file declares against those of the network the
    JSON describes (built on torch's ``meta`` device, which allocates no
    memory), then the SHA-256 of the weights. Only then are the weights read
    and the network built, so a file cannot make ``load`` allocate more than
    a small multiple of the weights it really holds. The SHA-256 detects
    corruption, not tampering: whoever can edit the file can recompute it.
    """
    device = _check_device_argument(device)
    path = Path(os.fspath(path))
    _check_model_path(path)

    def invalid(detail):
        # rstrip: scikit-learn's and torch's messages end with their own period.
        detail = str(detail).rstrip(".")
        return ValueError(f"{str(path)!r} is not a valid skocc model file: {detail}.")

    # The safetensors header is read and checked here, not by safe_open: it
    # maps the whole file into memory at once, and mapping a file that
    # declares a 64 GB tensor failed with a RuntimeError before any check.
    metadata, declared = _read_safetensors_header(path)
    text = metadata.get(_METADATA_KEY)
    if text is None:
        raise invalid("it is a safetensors file without skocc's metadata")
    header = _parse_header(text, invalid)
    estimator, history = _restore(header, invalid)
    _check_tensors(estimator, declared, invalid)
    estimator.device_ = device if device is not None else _saved_device(estimator, path)
    # Only now, with the file known to hold exactly the network's tensors, are
    # its weights read.
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            state = {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as exc:
        raise _not_safetensors(path, exc) from None
    if weights_sha256(state) != header.get("weights_sha256"):
        raise invalid(
            "its weights do not match the SHA-256 recorded when it was saved (the file "
            "is corrupt or was modified)"
        )
    if device is not None:
        estimator.set_params(device=device)
    try:
        net = estimator._new_net()
        net.module_.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        detail = f"its weights and parameters do not fit together: {_first_line(exc)}"
        raise invalid(detail) from None
    net.module_.eval()  # as fit leaves it, so concurrent scoring is safe
    net.history = History(history)
    estimator.net_ = net
    return estimator


def _check_model_path(path):
    if not path.exists():
        raise FileNotFoundError(f"No skocc model file at {str(path)!r}.")
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory, not a skocc model file.")
    if not path.is_file():
        # A FIFO or /dev/zero would be read without end.
        raise ValueError(f"{str(path)!r} is not a regular file, so not a skocc model file.")


def _first_line(exc):
    """An exception's message without the C++ stack trace torch appends to some."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# ---------------------------------------------------------------- load: devices
# Device types that hold data and run skocc's networks. A "meta" tensor has a
# shape and no data, so a model loaded there has no weights; "lazy", "xla",
# "ipu" and the like are backends skocc neither supports nor tests.
_COMPUTE_DEVICES = ("cpu", "cuda", "mps", "xpu")


def _check_device_argument(device):
    """``load``'s ``device`` resolved, or None; checked before the file is opened."""
    if device is None:
        return None
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a str or None; got {device!r} ({type(device).__name__}).")
    return _usable_device(device)


def _usable_device(device):
    # ValueError for a malformed name, missing CUDA or the meta device.
    resolved = resolve_device(device)
    kind = torch.device(resolved).type
    if kind not in _COMPUTE_DEVICES:
        raise ValueError(
            "device must name a device that holds tensors and computes with them ('cpu', "
            f"'cuda', 'cuda:1', 'mps', 'xpu' or 'auto'); got {device!r}."
        )
    backend = getattr(torch.backends, kind, None) if kind == "mps" else getattr(torch, kind, None)
    if kind in ("mps", "xpu") and not (backend is not None and backend.is_available()):
        raise ValueError(
            f"device={device!r} was requested but this torch ({torch.__version__}) has no "
            f"available {kind} device. Use device='cpu' or 'auto'."
        )
    return resolved


def _saved_device(estimator, path):
    """The saved ``device`` parameter resolved here: CUDA falls back to the CPU with a warning."""
    saved = estimator.device
    try:
        return _usable_device(saved)
    except ValueError as exc:
        if str(saved).split(":")[0] == "cuda":
            warnings.warn(
                f"The model was saved with device={saved!r} but CUDA is not available "
                "here; loading it on the CPU. Pass device='cpu' to silence this.",
                DeviceWarning,
                stacklevel=3,
            )
            return "cpu"
        raise ValueError(
            f"The model in {str(path)!r} was saved with device={saved!r}, which cannot be "
            f"used here ({exc}) Load it with device='cpu' or another device."
        ) from None


# ---------------------------------------------------------------- load: JSON
# Deepest nesting of a file skocc writes is about 6 (history rows hold lists of
# dicts). json.loads itself raises RecursionError near Python's recursion
# limit; the decoder and the history check refuse anything deeper than this
# bound, so that no later recursive walk (decoding, copying, pickling the
# model) comes near that limit. Arrays' data is left to numpy, which walks
# it in C: checking the depth of a million scores in Python took a second.
_MAX_JSON_DEPTH = 64


def _parse_header(text, invalid):
    try:
        header = json.loads(text)
    except RecursionError:
        deep = f"its metadata is nested too deeply (more than {_MAX_JSON_DEPTH} levels)"
        raise invalid(deep) from None
    except ValueError as exc:  # JSONDecodeError, and integers of more than 4300 digits
        raise invalid(f"its metadata is not valid JSON ({exc})") from None
    try:
        return _check_header(header)
    except ValueError as exc:
        raise invalid(str(exc)) from None


def _depth_exceeds(value, limit):
    """Whether JSON ``value`` nests deeper than ``limit``; iterative, so never a RecursionError."""
    # Level by level, keeping only containers: a list of a million numbers
    # costs one isinstance each, in a comprehension.
    level = [value] if isinstance(value, (list, dict)) else []
    for _ in range(limit):
        if not level:
            return False
        children = []
        for item in level:
            items = item.values() if isinstance(item, dict) else item
            children.extend([c for c in items if isinstance(c, (list, dict))])
        level = children
    return bool(level)


def _check_header(header):
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ValueError("its metadata does not say format 'skocc'")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"it has format version {_short(header.get('format_version'))}, written by skocc "
            f"{_short(header.get('skocc_version'))}; this skocc ({__version__}) reads format "
            f"version {FORMAT_VERSION} only"
        )
    if header.get("skocc_version") != __version__:
        # Parameters, attributes and network layouts may change between
        # versions without a change of the file layout, so only the same
        # version is trusted to rebuild the same model.
        raise ValueError(
            f"it was written by skocc {_short(header.get('skocc_version'))} and this is skocc "
            f"{__version__}; load it with skocc {_short(header.get('skocc_version'))} (or refit "
            "and save with this version)"
        )
    return header


def _decode_section(header, key):
    section = header.get(key)
    if not isinstance(section, dict):
        raise ValueError(f"its {key!r} entry is missing or not a JSON object")
    return {str(k): _decode(v) for k, v in section.items()}


def _restore(header, invalid):
    """The unfitted estimator with its checked fitted attributes, and the history."""
    name = header.get("estimator")
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise invalid(
            f"it names the class {_short(name)}, which is not one of skocc's estimators "
            f"({', '.join(sorted(_REGISTRY))}); only those can be loaded"
        )
    try:
        params = _decode_section(header, "params")
        _check_ints_fit_torch(params)
        estimator = cls(**params)
        estimator._validate_params()
        estimator._check_net_params()
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
    for key, value in _check_attributes(estimator, attributes, invalid).items():
        setattr(estimator, key, value)
    history = header.get("history")
    if not (isinstance(history, list) and all(isinstance(row, dict) for row in history)):
        raise invalid("its training history is not a list of JSON objects")
    # Copying or pickling the loaded model walks the history recursively.
    if _depth_exceeds(history, _MAX_JSON_DEPTH):
        raise invalid(
            f"its training history is nested too deeply (more than {_MAX_JSON_DEPTH} levels)"
        )
    return estimator, history


def _leaves(value):
    """Every value inside nested lists, tuples and dicts, without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        else:
            yield item


def _check_ints_fit_torch(params):
    """No parameter holds an int that no tensor size can be (torch sizes are int64)."""
    for key, value in params.items():
        for item in _leaves(value):
            if isinstance(item, int) and not -(2**63) <= item < 2**63:
                raise ValueError(f"{key} holds {item}, outside the int64 range of tensor sizes")


def _short(value, limit=80):
    """``repr(value)``, cut to ``limit`` characters: hostile values can be megabytes long."""
    if isinstance(value, np.ndarray):
        text = np.array2string(value, threshold=6, max_line_width=10**6, separator=", ")
        text = f"array({text}) of shape {value.shape} and dtype {value.dtype}"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- load: attributes
# Every fitted attribute read from a file is checked before it is set, so that
# a loaded model cannot predict everything -1 from offset_ = NaN or divide by
# a score_std_ of 0. A check takes the decoded value and the attributes
# checked before it (a dict; _ATTRIBUTE_CHECKS' order is the order of
# checking), returns the value to set, and raises _Expected with what the
# attribute must be; load names the attribute and the value it got.
class _Expected(Exception):
    """What a fitted attribute must be, raised by its check."""


_MAX_SIDE = 2**31 - 1  # conv and linear sizes beyond int32 are no image network's


def _is_int(value, low=None, high=None):
    return (
        isinstance(value, Integral)
        and not isinstance(value, (bool, np.bool_))
        and (low is None or value >= low)
        and (high is None or value <= high)
    )


def _check_image_shape(value, estimator, checked):
    n = 3 + estimator._n_view_axes
    if not (
        isinstance(value, (tuple, list))
        and len(value) == n
        and all(_is_int(v, 1, _MAX_SIDE) for v in value)
    ):
        raise _Expected(f"a tuple of {n} ints in [1, {_MAX_SIDE}], {estimator._sample_layout}")
    return tuple(int(v) for v in value)


def _check_n_views(value, estimator, checked):
    views = checked["image_shape_"][0]
    if not (_is_int(value) and value == views):
        raise _Expected(f"image_shape_[0] = {views}, the number of views")
    return int(value)


def _check_input_shape(value, estimator, checked):
    expected = tuple(estimator._network_input_shape(checked["image_shape_"]))
    same = isinstance(value, (tuple, list)) and tuple(value) == expected
    if not (same and all(_is_int(v, 1, _MAX_SIDE) for v in value)):
        raise _Expected(
            f"{expected} (image_shape_ {checked['image_shape_']} at "
            f"resolution={estimator.resolution!r})"
        )
    return expected


def _check_n_features_in(value, estimator, checked):
    expected = math.prod(checked["image_shape_"])
    if not (_is_int(value) and value == expected):
        raise _Expected(f"{expected} (the product of image_shape_ {checked['image_shape_']})")
    return int(value)


def _check_feature_names(value, estimator, checked):
    n = checked["n_features_in_"]
    if not (
        isinstance(value, np.ndarray)
        and value.shape == (n,)
        and value.dtype == object
        and all(isinstance(v, str) for v in value)
    ):
        raise _Expected(f"an array of {n} strings (n_features_in_)")
    return value


def _check_n_epochs(value, estimator, checked):
    if not _is_int(value, 0):
        raise _Expected("a non-negative int")
    return int(value)


def _check_offset(value, estimator, checked):
    if not (isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)):
        raise _Expected("a finite float")
    return float(value)


def _n_score_terms(checked):
    # ConvAEOneClass scores two terms; the multi-view model adds one
    # reconstruction error and one code norm per view.
    return 2 + 2 * checked["n_views_"] if "n_views_" in checked else 2


def _float_vector(value, length):
    return (
        isinstance(value, np.ndarray)
        and value.dtype.kind == "f"
        and value.shape == (length,)
        and bool(np.isfinite(value).all())
    )


def _check_score_mean(value, estimator, checked):
    n = _n_score_terms(checked)
    if not _float_vector(value, n):
        raise _Expected(f"a float array of shape ({n},), finite")
    return value.astype(np.float64)


def _check_score_std(value, estimator, checked):
    n = _n_score_terms(checked)
    if not (_float_vector(value, n) and bool((value > 0).all())):
        raise _Expected(f"a float array of shape ({n},), finite and > 0")
    return value.astype(np.float64)


def _check_calibration_scores(value, estimator, checked):
    # Sorted scores of the calibration images; -inf is a legitimate score (a
    # network that overflowed on an image), NaN and +inf are not.
    if not (
        isinstance(value, np.ndarray)
        and value.dtype.kind == "f"
        and value.ndim == 1
        and value.size >= 1
        and not np.isnan(value).any()
        and not np.isposinf(value).any()
        and np.all(value[1:] >= value[:-1])
    ):
        raise _Expected("a non-empty 1-D float array of sorted scores without NaN or +inf")
    offset = checked.get("offset_")
    if offset is not None and not value[0] <= offset <= value[-1]:
        # Both thresholds (conformal and training quantile) lie among these scores.
        raise _Expected(f"scores around offset_={offset!r} (from its lowest to its highest)")
    return value.astype(np.float64)


def _check_calibration_terms(value, estimator, checked):
    # The score terms behind calibration_scores_, one row per calibration
    # image. Norms: never negative; +inf or NaN where a network overflowed.
    n_terms = _n_score_terms(checked)
    n = checked["calibration_scores_"].size if "calibration_scores_" in checked else None
    if not (
        isinstance(value, np.ndarray)
        and value.dtype.kind == "f"
        and value.ndim == 2
        and value.shape[1] == n_terms
        and (n is None or value.shape[0] == n)
        and not (value < 0).any()
    ):
        raise _Expected(
            f"a float array of shape ({n if n is not None else 'n'}, {n_terms}) of score "
            "terms, none negative"
        )
    return value.astype(np.float64)


def _check_score_type(value, estimator, checked):
    from .nn.objectives import SCORE_TYPES

    if value not in SCORE_TYPES:
        raise _Expected(f"one of {SCORE_TYPES}")
    return value


def _check_bool(value, estimator, checked):
    if not isinstance(value, bool):
        raise _Expected("true or false")
    return value


def _check_finite(value, estimator, checked):
    """For attributes without a check of their own: no NaN or infinity anywhere."""
    for item in _leaves(value):
        if isinstance(item, np.ndarray) and item.dtype.kind in "biuf":
            if not np.isfinite(item).all():
                raise _Expected("finite (no NaN or infinity)")
        elif isinstance(item, float) and not math.isfinite(item):
            raise _Expected("finite (no NaN or infinity)")
    return value


# Add the check of a new fitted attribute here (after the attributes it reads
# from ``checked``); an attribute a class persists without an entry here gets
# _check_finite only.
_ATTRIBUTE_CHECKS = {
    "image_shape_": _check_image_shape,
    "n_views_": _check_n_views,
    "input_shape_": _check_input_shape,
    "n_features_in_": _check_n_features_in,
    "feature_names_in_": _check_feature_names,
    "n_epochs_": _check_n_epochs,
    "offset_": _check_offset,
    "calibration_scores_": _check_calibration_scores,
    "calibration_terms_": _check_calibration_terms,
    "threshold_held_out_": _check_bool,
    "calibration_score_type_": _check_score_type,
    "score_mean_": _check_score_mean,
    "score_std_": _check_score_std,
}


def _check_attributes(estimator, attributes, invalid):
    order = [k for k in _ATTRIBUTE_CHECKS if k in attributes]
    order += sorted(k for k in attributes if k not in _ATTRIBUTE_CHECKS)
    checked = {}
    for key in order:
        check = _ATTRIBUTE_CHECKS.get(key, _check_finite)
        try:
            checked[key] = check(attributes[key], estimator, checked)
        except _Expected as exc:
            raise invalid(
                f"its fitted attribute {key} must be {exc}; got {_short(attributes[key])}"
            ) from None
    return checked


# ---------------------------------------------------------------- load: tensors
# safetensors' dtype codes, and the bytes per element of each.
_SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
_ITEMSIZES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
              "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1}


# safetensors refuses headers larger than this; so does skocc, before reading one.
_MAX_SAFETENSORS_HEADER = 100_000_000


def _not_safetensors(path, reason):
    return ValueError(
        f"{str(path)!r} is not a skocc model file (not readable as safetensors: {reason})."
    )


def _read_safetensors_header(path):
    """The string metadata and name -> (dtype code, shape) of a safetensors file; no data is read.

    The layout is safetensors': an 8-byte little-endian header length, the
    JSON header, then the tensors' bytes, back to back. Every tensor's byte
    range must match its dtype and shape, and together they must fill the
    rest of the file exactly, as safetensors itself requires.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise _not_safetensors(
                path, f"the file has {len(head)} bytes, fewer than the 8 of a header length"
            )
        (length,) = struct.unpack("<Q", head)
        if length > min(_MAX_SAFETENSORS_HEADER, size - 8):
            raise _not_safetensors(
                path, f"it declares a header of {length} bytes in a file of {size} bytes"
            )
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise _not_safetensors(path, "its header is nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError
        raise _not_safetensors(path, f"its header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _not_safetensors(path, "its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise _not_safetensors(path, "its __metadata__ is not an object of strings")
    declared, ranges = {}, []
    for name, info in header.items():
        keys = ("dtype", "shape", "data_offsets")
        ok = isinstance(info, dict) and set(info) == set(keys)
        dtype, shape, offsets = (info[k] for k in keys) if ok else (None, None, None)
        ok = (
            ok
            and dtype in _ITEMSIZES
            and isinstance(shape, list)
            and all(_is_int(n, 0) for n in shape)
            and isinstance(offsets, list)
            and len(offsets) == 2
            and all(_is_int(n, 0) for n in offsets)
            and offsets[1] - offsets[0] == math.prod(shape) * _ITEMSIZES[dtype]
        )
        if not ok:
            raise _not_safetensors(
                path, f"the entry of tensor {_short(name)} is malformed: {_short(info)}"
            )
        declared[name] = (dtype, tuple(shape))
        ranges.append(tuple(offsets))
    position = 0
    for start, stop in sorted(ranges):
        if start != position:
            raise _not_safetensors(path, "its tensors' byte ranges overlap or leave gaps")
        position = stop
    if 8 + length + position != size:
        raise _not_safetensors(
            path, f"its tensors need {8 + length + position} bytes and the file has {size}"
        )
    return metadata, declared


# Parameters that multiply the number of layers a class builds. Building on the
# meta device allocates nothing, but it still runs Python once per layer (a
# file asking for 200,000 views of one autoencoder each kept load busy for
# minutes). Every level holds at least one tensor, so a file with fewer
# tensors than levels cannot hold the network, and is refused before the
# build. A class whose depth or number of sub-networks follows a parameter
# needs an entry here; the others build a fixed number of layers.
def _autoencoder_levels(estimator, attributes):
    levels = len(estimator.channels)
    return levels, f"len(channels)={levels}"


def _multi_view_levels(estimator, attributes):
    levels, how = _autoencoder_levels(estimator, attributes)
    if estimator.share_weights:
        return levels, how
    views = attributes["n_views_"]
    return levels * views, f"{how} times n_views_={views} with share_weights=False"


_LEVEL_COUNTS = {
    "ConvAEOneClass": _autoencoder_levels,
    "MultiViewConvAEOneClass": _multi_view_levels,
}


def _expected_tensors(estimator, n_declared, invalid):
    """Name -> (dtype code, shape) of the network the estimator builds, built on the meta device."""
    count = _LEVEL_COUNTS.get(type(estimator).__name__)
    if count is not None:
        levels, how = count(estimator, vars(estimator))
        if levels > n_declared:
            raise invalid(
                f"its parameters and fitted attributes ask for {levels} convolutional levels "
                f"({how}), but the file holds only {n_declared} tensors and every level has one"
            )
    module_class, kwargs = estimator._module_spec()
    try:
        with torch.device("meta"):
            module = module_class(**kwargs)
    # Whatever torch or the module refuses in hostile sizes (overflowing
    # storage, a zero-sized level) is a file that describes no network.
    except Exception as exc:  # noqa: BLE001
        raise invalid(
            f"its parameters do not describe a {type(estimator).__name__} network: "
            f"{_first_line(exc)}"
        ) from None
    return {
        key: (_SAFETENSORS_DTYPES.get(t.dtype, str(t.dtype)), tuple(t.shape))
        for key, t in module.state_dict().items()
    }


def _nbytes(tensors):
    return sum(math.prod(shape) * _ITEMSIZES.get(dtype, 1) for dtype, shape in tensors.values())


def _format_bytes(n):
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def _check_tensors(estimator, declared, invalid):
    """Refuse unless the file declares exactly the tensors of the network its JSON describes.

    Called before any tensor is read: this is what keeps a hostile file from
    making ``load`` allocate (a 3 GB tensor beside the weights, a JSON asking
    for a network of 64 GB) or hash gigabytes.
    """
    expected = _expected_tensors(estimator, len(declared), invalid)
    if declared == expected:
        return
    differences = []
    missing = sorted(expected.keys() - declared.keys())
    extra = sorted(declared.keys() - expected.keys())
    if missing:
        differences.append(f"tensors missing from the file: {_short(missing)}")
    if extra:
        differences.append(f"tensors the network does not have: {_short(extra)}")
    # The largest tensors of the network first: they show what the JSON asks for.
    for key in sorted(expected.keys() & declared.keys(), key=lambda k: -math.prod(expected[k][1])):
        (file_dtype, file_shape), (dtype, shape) = declared[key], expected[key]
        if file_dtype != dtype:
            differences.append(
                f"tensor {key!r} has dtype {file_dtype} in the file, {dtype} in the network"
            )
        if file_shape != shape:
            differences.append(
                f"tensor {key!r} has shape {file_shape} in the file, {shape} in the network"
            )
    more = f"; and {len(differences) - 4} more differences" if len(differences) > 4 else ""
    raise invalid(
        "its weights and parameters do not fit together: its parameters and fitted attributes "
        f"describe a network of {_format_bytes(_nbytes(expected))} in {len(expected)} tensors, "
        f"and the file holds {_format_bytes(_nbytes(declared))} of weights in {len(declared)} "
        f"tensors; " + "; ".join(differences[:4]) + more
    )
