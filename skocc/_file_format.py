"""The skocc model file's format: constants, the JSON codec, the header parser.

Everything :func:`skocc.save` writes and :func:`skocc.load` reads besides the
weights, and the limits that keep a hostile header from exhausting memory or
the stack. Pure functions; the checks of what the header says live in
:mod:`skocc._file_checks`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch

from ._version import __version__

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


def _first_line(exc):
    """An exception's message without the C++ stack trace torch appends to some."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# ---------------------------------------------------------------- paths
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


def _check_model_path(path):
    if not path.exists():
        raise FileNotFoundError(f"No skocc model file at {str(path)!r}.")
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory, not a skocc model file.")
    if not path.is_file():
        # A FIFO or /dev/zero would be read without end.
        raise ValueError(f"{str(path)!r} is not a regular file, so not a skocc model file.")
