"""The one place that knows image layouts.

:func:`check_images` turns every accepted input into a ``(n, C, H, W)`` array
(``(n, V, C, H, W)`` with views) without copying ``uint8`` data and without ever
writing into the caller's memory. Estimators call it through
:meth:`skocc.base.BaseDeepOneClass._validate_images`.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils.validation import check_array

__all__ = ["DATA_FORMATS", "check_images", "infer_channels_last", "stack_views"]

#: Accepted values of the ``data_format`` parameter.
DATA_FORMATS = ("auto", "channels_first", "channels_last")

# Channel counts that a trailing or leading axis of a 4-D array may have for
# ``data_format="auto"`` to read it as the channel axis.
_CHANNEL_COUNTS = (1, 2, 3, 4)


def infer_channels_last(shape: tuple[int, ...]) -> bool:
    """Decide whether an image array of ``shape`` is channels-last.

    The rule used by ``data_format="auto"`` on arrays whose last three axes are
    one image: channels-last (``(..., H, W, C)``, as PIL, OpenCV and matplotlib
    give images) when the last axis has 1 to 4 entries and the first of the three
    does not; channels-first (``(..., C, H, W)``, PyTorch's layout) otherwise,
    including the ambiguous case where both are small (``(n, 3, 4, 3)``). State
    ``data_format`` explicitly when images can be that small.
    """
    first, last = shape[-3], shape[-1]
    return last in _CHANNEL_COUNTS and first not in _CHANNEL_COUNTS


def as_array(X, input_name="X"):
    """Torch tensors and sequences become NumPy arrays; refuse what holds no data.

    Shared by every estimator's input check (images here, feature vectors in
    :mod:`skocc.detectors`).

    pandas objects and sparse matrices pass through for ``check_array``. The
    checks come first so that None, strings, generators and ragged lists give
    an error naming ``input_name`` rather than one from NumPy's internals.
    """
    import torch

    if X is None or isinstance(X, (str, bytes)):
        raise TypeError(
            f"{input_name} must be an array-like (NumPy array, list, DataFrame or torch "
            f"tensor); got {type(X).__name__}."
        )
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy()
    if hasattr(X, "dtype") or hasattr(X, "dtypes") or hasattr(X, "tocsr"):
        return X  # an array, a pandas object or a sparse matrix
    if hasattr(X, "__array__"):
        return np.asarray(X)  # NumPy's array protocol: the dtype rule then applies
    if not isinstance(X, (list, tuple)):
        # A generator or iterator would be consumed by reading it, and other
        # objects are no images: ask for the array instead of guessing.
        raise TypeError(
            f"{input_name} must be an array-like (NumPy array, list, DataFrame or torch "
            f"tensor); got {type(X).__name__}. Convert iterators with np.asarray(list(...))."
        )
    try:
        array = np.asarray(X)
    except ValueError as exc:  # NumPy refuses inhomogeneous nesting
        raise ValueError(
            f"{input_name} is a ragged sequence: its samples must all have one shape "
            f"({' '.join(str(exc).split())})."
        ) from None
    if array.dtype == object:
        raise ValueError(
            f"{input_name} is a ragged or mixed sequence (NumPy reads it as dtype=object): "
            "every sample must have the same shape and hold numbers."
        )
    return array


def _pixel_dtype(X):
    """The dtype that decides how ``X`` is scaled: its own, or a DataFrame's common one."""
    dtype = getattr(X, "dtype", None)
    if dtype is not None:
        return dtype if isinstance(dtype, np.dtype) else None  # pandas extension types: as before
    dtypes = getattr(X, "dtypes", None)  # pandas DataFrame
    if dtypes is None or len(dtypes) == 0:
        return None
    kinds = {d if isinstance(d, np.dtype) else None for d in dtypes}
    return kinds.pop() if len(kinds) == 1 else None


def _check_dtype(X, input_name):
    """Refuse dtypes that hold no pixel values, with a message naming ``input_name``."""
    dtype = _pixel_dtype(X)
    if dtype is None:
        return None
    # ValueError, as scikit-learn raises for arrays of the wrong kind of values.
    if dtype.kind == "c":
        raise ValueError(
            f"Complex data not supported: {input_name} must hold real numbers (pixel "
            f"values); got an array of dtype {dtype}."
        )
    if dtype.kind in "USMmV":
        raise ValueError(
            f"{input_name} must hold real numbers (pixel values); got an array of dtype {dtype}."
        )
    if dtype == object:
        try:
            converted = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            # The type NumPy raised: TypeError for objects that are no numbers
            # (scikit-learn's convention), ValueError for unparsable strings.
            raise type(exc)(
                f"{input_name} must hold real numbers (pixel values); its dtype=object "
                f"entries do not convert to float ({exc})."
            ) from None
        return converted.dtype
    return dtype


def _integer_as_pixels(X, dtype, input_name):
    """Integer pixel data as ``uint8`` (kept as bytes) or scaled ``float32``.

    The rule: ``uint8`` is 8-bit pixel data and ``uint16`` 16-bit pixel data;
    any other integer dtype (int8 to int64, uint32, uint64, and the int64
    arrays NumPy makes of lists of ints) is 8-bit pixel data whose values must
    lie in 0..255. Its scale is never guessed from the values: one sample of
    300 would otherwise switch a whole call to another divisor, a silent
    change of every score.
    """
    if dtype == np.uint8:
        return X, "uint8"
    values = np.asarray(X)
    if dtype == np.uint16:
        return values, "uint16"
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if lo < 0 or hi > 255:
        raise ValueError(
            f"{input_name} has integer dtype {dtype} with values in [{lo}, {hi}]. Integer "
            "images other than uint16 are read as 8-bit pixels, whose values lie in "
            "[0, 255]. Cast 16-bit pixel data to uint16 (X.astype(np.uint16), scaled by "
            "1/65535), or pass floats on a small scale, such as [0, 1]."
        )
    return values.astype(np.uint8), "uint8"


def _check_conversion_memory(X, dtype, input_name):
    """Refuse a float32 copy of ``X`` larger than half the memory available.

    check_array copies ``X`` when its dtype changes. A broadcast view (which
    holds one row in memory) or a large float64 array can need tens of GiB for
    that copy; the error comes before the allocation, not from it. Half,
    because the copy is only the input: training or scoring it needs memory
    too (the network, its batches, the scores).
    """
    from ._runtime import available_memory

    shape = getattr(X, "shape", None)
    if shape is None or dtype in (np.float32, np.uint8):
        return
    needed = 4 * int(np.prod(shape, dtype=np.float64))
    available = available_memory("cpu")
    if available is not None and needed > available // 2:
        raise ValueError(
            f"{input_name} of shape {tuple(shape)} and dtype {dtype} must be converted to "
            f"float32, which needs {needed / 2**30:.1f} GiB, more than half of the "
            f"{available / 2**30:.1f} GiB of memory available. Pass float32 or uint8 "
            "images (used without a copy), or score in chunks of fewer samples."
        )


def _normalise_image_shape(image_shape, n_view_axes):
    """Validate ``image_shape`` and return it as a tuple with a channel axis."""
    expected = "(H, W) or (C, H, W)" if n_view_axes == 0 else "(V, H, W) or (V, C, H, W)"
    if (
        not isinstance(image_shape, (tuple, list))
        or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1
            for s in image_shape
        )
        or len(image_shape) not in (2 + n_view_axes, 3 + n_view_axes)
    ):
        raise ValueError(
            f"image_shape must be a tuple of positive ints {expected}; got {image_shape!r}."
        )
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2 + n_view_axes:  # no channel axis: insert C = 1
        shape = shape[:n_view_axes] + (1,) + shape[n_view_axes:]
    return shape


def check_images(
    X,
    *,
    image_shape=None,
    data_format="auto",
    n_view_axes=0,
    input_name="X",
    estimator_name=None,
):
    """Validate image input and return it as a channels-first NumPy array.

    Accepted layouts (``n_view_axes=0``):

    - ``(n, H, W)``: grayscale images;
    - ``(n, C, H, W)`` or ``(n, H, W, C)``: see ``data_format``;
    - ``(n, n_features)``: reshaped to ``image_shape`` when it is given (``(H, W)``
      or ``(C, H, W)``, channels-first order of the flattened values), otherwise
      read as one-row images ``(n, 1, 1, n_features)`` so tabular data works.

    With ``n_view_axes=1`` every layout has a view axis after the sample axis:
    ``(n, V, H, W)``, ``(n, V, C, H, W)``, ``(n, V, H, W, C)``, or 2-D with
    ``image_shape=(V, C, H, W)``; 2-D input without ``image_shape`` is one view
    of one-row images, ``(n, 1, 1, 1, n_features)``.

    Lists, pandas DataFrames and torch tensors are accepted. Pixel values
    follow one rule, by dtype:

    - ``uint8``: 8-bit pixels; kept as bytes (the network scales them to
      [0, 1] batch by batch, on the device);
    - ``uint16``: 16-bit pixels, as 16-bit cameras and PNGs give them;
      divided by 65535 into ``float32``;
    - any other integer dtype, and lists of ints (which NumPy reads as int64):
      8-bit pixels, whose values must lie in 0..255; read as ``uint8``, so a
      model fitted on ``uint8`` images scores an ``int64`` copy or a list of
      the same images identically. Other values raise a ValueError: the scale
      is never guessed from the values;
    - ``bool``: 0 and 1, as ``float32``;
    - floating-point dtypes: converted to ``float32`` and used as given, so
      give them on a small scale such as [0, 1].

    Parameters
    ----------
    X : array-like
        The input.
    image_shape : tuple of int or None
        Shape of one sample when ``X`` is 2-D.
    data_format : {"auto", "channels_first", "channels_last"}
        Where the channel axis of a 4-D (5-D with views) array is;
        ``"auto"`` follows :func:`infer_channels_last`.
    n_view_axes : {0, 1}
        Whether samples have a view axis.
    input_name : str
        Name used in error messages.
    estimator_name : str or None
        Name used in error messages.

    Returns
    -------
    images : ndarray of shape (n, C, H, W) or (n, V, C, H, W)
        ``uint8`` or ``float32`` (see the rule above); may share memory with ``X``, so callers must
        not write into it.

    Raises
    ------
    ValueError
        On NaN or infinite values, no samples, a ragged sequence, an image
        with no channel or pixel, integer values outside 0..255 (other than
        ``uint16``), a number of dimensions or a size that fits no layout, or
        a float32 copy larger than the memory available.
    TypeError
        On None, strings, iterators, non-numeric or sparse input.
    """
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}; got {data_format!r}.")
    X = as_array(X, input_name)
    dtype = _check_dtype(X, input_name)
    pixels = None
    if dtype is not None and dtype.kind in "ui":
        X, pixels = _integer_as_pixels(X, dtype, input_name)
    elif dtype is not None:
        _check_conversion_memory(X, dtype, input_name)
    X = check_array(
        X,
        accept_sparse=False,
        dtype=np.uint8 if pixels == "uint8" else np.float32,
        allow_nd=True,
        ensure_all_finite=True,
        ensure_min_samples=1,
        input_name=input_name,
        estimator=estimator_name,
    )
    if pixels == "uint16":
        # Scaled here, not on the device: torch reads uint16 arrays only from
        # version 2.3 on, and skocc supports 2.2. The float32 copy is twice the
        # uint16 data, as any other float input is.
        X = np.multiply(X, np.float32(1.0 / 65535.0), dtype=np.float32)
    if X.ndim > 1 and 0 in X.shape[1:]:
        raise ValueError(
            f"Expected {input_name} with at least one channel and one pixel per image; got "
            f"an array of shape {X.shape}."
        )
    if any(stride < 0 for stride in X.strides):
        # Flipped views (np.flip, [::-1]) have negative strides, which torch cannot wrap.
        X = X.copy()
    n = X.shape[0]
    nd = X.ndim - n_view_axes  # dimensions of one view, sample axis included
    views = X.shape[1 : 1 + n_view_axes]
    if X.ndim == 2 and image_shape is not None:
        shape = _normalise_image_shape(image_shape, n_view_axes)
        if int(np.prod(shape)) != X.shape[1]:
            raise ValueError(
                f"{input_name} has {X.shape[1]} features per sample but image_shape="
                f"{tuple(image_shape)} needs {int(np.prod(shape))}."
            )
        return X.reshape((n,) + shape)
    if X.ndim == 2:  # tabular: one-row images (a single view of them with a view axis)
        return X.reshape((n,) + (1,) * n_view_axes + (1, 1, X.shape[1]))
    if nd == 3:
        return X.reshape(X.shape[: 1 + n_view_axes] + (1,) + X.shape[1 + n_view_axes :])
    if nd == 4:
        last = (
            infer_channels_last(X.shape)
            if data_format == "auto"
            else data_format == "channels_last"
        )
        return np.moveaxis(X, -1, -3) if last else X
    if n_view_axes:
        layouts = "(n, V, H, W), (n, V, C, H, W), (n, V, H, W, C), or (n, n_features)"
    else:
        layouts = "(n, n_features), (n, H, W), (n, C, H, W) or (n, H, W, C)"
    raise ValueError(
        f"Expected {input_name} with one of the layouts {layouts}; got an array of "
        f"shape {X.shape}" + (f" with {views} views" if views and nd >= 3 else "") + "."
    )


def stack_views(*views, size=None, data_format="auto"):
    """Stack one image array per view into the multi-view array ``(n, V, C, H, W)``.

    Each view is read like single-view input (``(n, H, W)``, ``(n, C, H, W)``,
    ``(n, H, W, C)``; see :func:`check_images`); all must have the same number
    of samples and channels.

    Parameters
    ----------
    *views : array-like
        One array per view, sample ``i`` of every array showing the same object.
    size : int or tuple of (int, int) or None, default=None
        Resize every view to this ``(H, W)`` (antialiased bilinear), for views
        of different native sizes. ``None`` requires equal sizes.
    data_format : {"auto", "channels_first", "channels_last"}, default="auto"
        Layout of 4-D views.

    Returns
    -------
    stacked : ndarray of shape (n, V, C, H, W)
        ``uint8`` when every view is ``uint8`` and nothing is resized;
        otherwise ``float32``, with ``uint8`` views scaled to [0, 1] (the rule
        the estimators apply to ``uint8`` input).

    Examples
    --------
    >>> import numpy as np
    >>> from skocc import stack_views
    >>> left, right = np.zeros((10, 32, 32)), np.zeros((10, 64, 64))
    >>> stack_views(left, right, size=32).shape
    (10, 2, 1, 32, 32)
    """
    if not views:
        raise ValueError("stack_views needs at least one view; got none.")
    arrays = [
        check_images(view, data_format=data_format, input_name=f"view {i}")
        for i, view in enumerate(views)
    ]
    n = arrays[0].shape[0]
    for i, a in enumerate(arrays):
        if a.shape[0] != n:
            raise ValueError(
                f"Every view needs the same number of samples; view 0 has {n} and view {i} "
                f"has {a.shape[0]}."
            )
        if a.shape[1] != arrays[0].shape[1]:
            raise ValueError(
                f"Every view needs the same number of channels; view 0 has "
                f"{arrays[0].shape[1]} and view {i} has {a.shape[1]}."
            )
    sizes = {a.shape[2:] for a in arrays}
    if size is None:
        if len(sizes) > 1:
            raise ValueError(
                f"The views have different image sizes {sorted(sizes)}; pass size=(H, W) "
                "to resize them to one size."
            )
        if all(a.dtype == np.uint8 for a in arrays):
            return np.stack(arrays, axis=1)
    target = (size, size) if isinstance(size, numbers.Integral) else size
    return np.stack([_to_float(a, target) for a in arrays], axis=1)


def _to_float(images, size):
    """float32 images (``uint8`` scaled to [0, 1]), resized to ``size`` if given."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return x.numpy()


def read_as_fitted(estimator, X):
    """``X`` read as a fitted skocc network reads it, channels-first with any view axis.

    Uses the estimator's public parameters (``image_shape``, ``data_format``)
    and its fitted ``image_shape_`` (whose length says whether samples have a
    view axis), and refuses samples of another shape than in ``fit``.
    """
    n_view_axes = len(estimator.image_shape_) - 3
    images = check_images(
        X,
        image_shape=estimator.image_shape,
        data_format=estimator.data_format,
        n_view_axes=n_view_axes,
        estimator_name=type(estimator).__name__,
    )
    if tuple(images.shape[1:]) != tuple(estimator.image_shape_):
        raise ValueError(
            f"X has samples of shape {tuple(images.shape[1:])}, but "
            f"{type(estimator).__name__} was fitted on samples of shape "
            f"{tuple(estimator.image_shape_)}."
        )
    return images
