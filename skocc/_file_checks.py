"""Checks of a model file's fitted attributes and tensors before anything is built.

Each fitted attribute has a check (``_ATTRIBUTE_CHECKS``) that knows its type,
shape and range from the attributes checked before it; the tensors' sizes are
compared with those of the network the parameters describe, built on the meta
device, so that a hostile file cannot make :func:`skocc.load` allocate.
"""

from __future__ import annotations

import json
import math
import os
import struct
from numbers import Integral, Real

import numpy as np
import torch

from ._file_format import _first_line, _leaves, _short


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
    # ConvAEOneClass scores three terms (reconstruction error, code norm and
    # the code's Mahalanobis distance); the multi-view model adds one of each
    # per view.
    return 3 + 3 * checked["n_views_"] if "n_views_" in checked else 3


def _float_vector(value, length=None):
    # A finite 1-D float array of ``length`` entries (of at least one if None).
    return (
        isinstance(value, np.ndarray)
        and value.dtype.kind == "f"
        and value.ndim == 1
        and (value.size >= 1 if length is None else value.size == length)
        and bool(np.isfinite(value).all())
    )


def _check_latent_location(value, estimator, checked):
    # Its length is checked against the network's code in check_code_size,
    # once the network is known to match the file's parameters.
    if not _float_vector(value):
        raise _Expected("a non-empty 1-D float array, finite")
    return value.astype(np.float64)


def _check_latent_covariance(value, estimator, checked):
    from .detectors import ridged_cholesky

    n = checked["latent_location_"].size if "latent_location_" in checked else None
    valid = (
        isinstance(value, np.ndarray)
        and value.dtype.kind == "f"
        and value.ndim == 2
        and value.shape[0] == value.shape[1]
        and (n is None or value.shape[0] == n)
        and bool(np.isfinite(value).all())
        and bool(np.array_equal(value, value.T))
    )
    if valid:
        try:
            ridged_cholesky(value.astype(np.float64))
        except np.linalg.LinAlgError:
            valid = False
    if not valid:
        size = "n" if n is None else n
        raise _Expected(
            "a finite, symmetric, positive semi-definite float array of shape "
            f"({size}, {size}) (latent_location_'s length)"
        )
    return value.astype(np.float64)


def check_code_size(estimator, invalid):
    """Refuse a latent Gaussian whose size is not that of the network's code.

    Called once the network is known to be the one the parameters describe.
    """
    location = getattr(estimator, "latent_location_", None)
    if location is None:
        return
    size = estimator._code_size()
    if location.size != size:
        raise invalid(
            f"its latent Gaussian (latent_location_, latent_covariance_) has {location.size} "
            f"entries, but the network's code has {size} (latent_dim={estimator.latent_dim} "
            f"per view)"
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
    "calibration_leave_one_out_": _check_bool,
    "calibration_score_type_": _check_score_type,
    "score_mean_": _check_score_mean,
    "score_std_": _check_score_std,
    "latent_location_": _check_latent_location,
    "latent_covariance_": _check_latent_covariance,
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
