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

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from skorch.exceptions import DeviceWarning
from skorch.history import History

from ._file_checks import (
    _check_attributes,
    _check_tensors,
    check_code_size,
    _not_safetensors,
    _read_safetensors_header,
)
from ._file_format import (
    _MAX_JSON_DEPTH,
    _METADATA_KEY,
    _NOT_JSON_ATTRIBUTES,
    _TRAINING_ONLY_NET_PARAMS,
    FORMAT_NAME,
    FORMAT_VERSION,
    _check_ints_fit_torch,
    _check_model_path,
    _check_save_path,
    _decode_section,
    _depth_exceeds,
    _encode,
    _first_line,
    _NotJSON,
    _parse_header,
    _short,
    weights_sha256,
)
from ._runtime import resolve_device
from ._version import __version__
from .base import _REGISTRY

__all__ = ["FORMAT_VERSION", "load", "save"]

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
        if isinstance(value, torch.nn.Module):
            raise TypeError(
                f"skocc.save cannot store the parameter {key} of {name}: it is your own "
                f"torch module ({type(value).__qualname__}). A skocc file rebuilds every "
                "network from JSON parameters so that loading runs no code, and a module's "
                "architecture is code. Save the model with joblib (load such files only if "
                "you trust them), or save the weights with torch.save(model.net_.module_."
                "state_dict(), path) and rebuild the module yourself before loading them."
            )
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
    check_code_size(estimator, invalid)
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
