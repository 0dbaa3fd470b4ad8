"""Small loaders: bundled data (no downloads), local arrays and image folders."""

from __future__ import annotations

import os
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

__all__ = [
    "IMAGE_EXTENSIONS",
    "load_digits_images",
    "load_image_folder",
    "load_images",
    "one_class_digits_split",
]

#: File extensions :func:`load_image_folder` reads (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def load_digits_images():
    """scikit-learn's bundled 8 x 8 digits as images in [0, 1].

    Returns
    -------
    images : ndarray of shape (1797, 8, 8), dtype float32
        Pixel values divided by 16 (their maximum).
    labels : ndarray of shape (1797,), dtype int
        The digit shown.
    """
    X, y = load_digits(return_X_y=True)
    return (X.reshape(-1, 8, 8) / 16.0).astype(np.float32), y


def one_class_digits_split(test_size=0.5, random_state=0):
    """The split skocc's demo and tests use: stratified train / test digits.

    For the one-class protocol, train on ``X_train[y_train == c]`` and score
    all of ``X_test``, with digit ``c`` the normal class.

    Parameters
    ----------
    test_size : float, default=0.5
        Fraction of the images held out for scoring.
    random_state : int, default=0
        Seed of the split.

    Returns
    -------
    X_train, X_test : ndarray of shape (n, 8, 8), dtype float32
    y_train, y_test : ndarray of shape (n,), dtype int
    """
    X, y = load_digits_images()
    return train_test_split(X, y, test_size=test_size, stratify=y, random_state=random_state)


def _check_size(size):
    """``None``, an int (square) or ``(height, width)`` as a tuple of two ints."""
    if size is None:
        return None
    if isinstance(size, Integral) and not isinstance(size, bool) and size >= 1:
        return int(size), int(size)
    if (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, Integral) and not isinstance(s, bool) and s >= 1 for s in size)
    ):
        return int(size[0]), int(size[1])
    raise ValueError(
        f"size must be None, a positive int or a (height, width) pair of positive ints; "
        f"got {size!r}."
    )


def _import_pillow():
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:
        raise ImportError(
            "Reading image folders needs Pillow, which skocc installs with the "
            "'images' extra: pip install \"skocc[images]\" (or pip install pillow)."
        ) from exc
    return Image, ImageOps


# Pillow modes of one-channel images, and of those with 16 bits per pixel
# (Pillow reads 16-bit grayscale PNGs as "I;16" or "I"; it has no 16-bit RGB mode).
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"})
_DEEP_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def _read_image(file, size, grayscale, Image, ImageOps):
    """One image as ``(H, W)`` or ``(H, W, 3)`` uint8, or uint16 for 16-bit files."""
    with Image.open(file) as image:
        image = ImageOps.exif_transpose(image)
        gray = grayscale if grayscale is not None else image.mode in _GRAY_MODES
        if image.mode not in _DEEP_MODES:
            image = image.convert("L" if gray else "RGB")
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
        # 16-bit: read at full depth; resized in Pillow's float mode, so no
        # value is cut to 8 bits on the way.
        array = np.asarray(image).astype(np.float32)
        if size is not None and array.shape != tuple(size):
            resized = Image.fromarray(array).resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(resized)
        array = np.clip(np.rint(array), 0, 65535).astype(np.uint16)
        return array if gray else np.repeat(array[:, :, None], 3, axis=2)


def _common_format(images):
    """Every image with one channel count and one depth, as the first-come rules say.

    Grayscale images join RGB ones as three equal channels (what Pillow's
    conversion gives); 8-bit images join 16-bit ones multiplied by 257, so that
    v / 255 == 257 v / 65535 and both depths read as the same intensity.
    """
    if any(a.ndim == 3 for a in images):
        images = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in images]
    if any(a.dtype == np.uint16 for a in images):
        images = [
            a if a.dtype == np.uint16 else a.astype(np.uint16) * np.uint16(257) for a in images
        ]
    return images


def load_image_folder(path, size=None, grayscale=None):
    """Read the PNG and JPEG images of a folder into one array.

    Files are read in name order; sub-folders are not read, and other files
    are skipped with a warning that counts them. JPEG orientation tags are
    applied. Palette and RGBA images are converted to RGB (alpha is dropped).

    Pixel depth follows :func:`skocc.images.check_images`' rule: 8-bit files
    give ``uint8`` arrays; 16-bit grayscale PNGs (as inspection cameras write
    them) give ``uint16`` at full depth, which the estimators divide by 65535.
    A folder that mixes both depths is read as ``uint16``, the 8-bit images
    multiplied by 257 (the same intensity). Pillow reads 16-bit colour PNGs
    at 8 bits only.

    Needs Pillow (``pip install "skocc[images]"``).

    Parameters
    ----------
    path : str or path-like
        The folder.
    size : int, tuple of (int, int) or None, default=None
        Resize every image to ``(height, width)`` (an int: a square), with
        Pillow's antialiased bilinear filter. ``None`` keeps the sizes, which
        must then all be equal.
    grayscale : bool or None, default=None
        ``None``: the files' own mode, one channel when every image is
        grayscale, else RGB (grayscale images then get three equal channels).
        ``True``: one channel (Pillow's ``"L"`` conversion); ``False``: RGB.

    Returns
    -------
    images : ndarray of shape (n, H, W, 3) or (n, H, W), dtype uint8 or uint16
        Channels-last, as every skocc estimator reads it.
    names : list of str
        The file name of every image, in the order of ``images``.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist.
    ValueError
        If it holds no image, an image cannot be read (the message names the
        file), or the images differ in size and ``size`` is None.
    ImportError
        If Pillow is not installed.

    Warns
    -----
    UserWarning
        When files other than PNG and JPEG images were skipped (how many, and
        the first names).
    """
    size = _check_size(size)
    if grayscale is not None and not isinstance(grayscale, (bool, np.bool_)):
        raise ValueError(f"grayscale must be None, True or False; got {grayscale!r}.")
    folder = Path(os.fspath(path))
    if not folder.exists():
        raise FileNotFoundError(f"No such folder: {str(folder)!r}.")
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder.")
    entries = sorted(f for f in folder.iterdir() if f.is_file())
    files = [f for f in entries if f.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise ValueError(
            f"No image in {str(folder)!r}: expected files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)}."
        )
    skipped = [f.name for f in entries if f.suffix.lower() not in IMAGE_EXTENSIONS]
    if skipped:
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        shown = ", ".join(skipped[:5]) + more
        warnings.warn(
            f"Skipped {len(skipped)} file(s) of {str(folder)!r} that are not "
            f"{'/'.join(e.lstrip('.').upper() for e in IMAGE_EXTENSIONS)} images: {shown}.",
            UserWarning,
            stacklevel=2,
        )
    Image, ImageOps = _import_pillow()
    images = []
    for file in files:
        try:
            images.append(_read_image(file, size, grayscale, Image, ImageOps))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ValueError(f"Cannot read the image {str(file)!r}: {exc}") from None
        if images[-1].shape[:2] != images[0].shape[:2]:
            first, this = images[0].shape[:2], images[-1].shape[:2]
            raise ValueError(
                f"The images in {str(folder)!r} differ in size: {files[0].name} is "
                f"{first[0]}x{first[1]} (height x width) and {file.name} is "
                f"{this[0]}x{this[1]}. Pass size=(height, width) to resize them all "
                "(--size on the command line)."
            )
    return np.stack(_common_format(images)), [f.name for f in files]


def load_images(path, *, size=None, grayscale=None):
    """Read images from a ``.npz`` or ``.npy`` file or from a folder of images.

    The command line reads its data with this function.

    - A folder: :func:`load_image_folder` (``size`` and ``grayscale`` apply).
    - ``.npz``: the array named ``X``, or the only array in the file.
    - ``.npy``: the array.

    Arrays are read with ``allow_pickle=False``: a file holding Python objects
    is refused rather than unpickled.

    Parameters
    ----------
    path : str or path-like
        File or folder.
    size : int, tuple of (int, int) or None, default=None
        For folders only: see :func:`load_image_folder`.
    grayscale : bool or None, default=None
        For folders only: see :func:`load_image_folder`.

    Returns
    -------
    images : ndarray
        As stored (arrays) or as :func:`load_image_folder` returns them.
    names : list of str or None
        File names for a folder, None for arrays.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file type is not supported, an ``.npz`` file holds several
        arrays and none named ``X``, an array holds Python objects, ``size`` or
        ``grayscale`` is given for an array, or a folder cannot be read.
    """
    path = Path(os.fspath(path))
    if path.is_dir():
        return load_image_folder(path, size=size, grayscale=grayscale)
    if not path.exists():
        raise FileNotFoundError(f"No such file or folder: {str(path)!r}.")
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise ValueError(
            f"Cannot read {str(path)!r}: expected a .npz or .npy file or a folder of "
            f"images ({', '.join(IMAGE_EXTENSIONS)})."
        )
    if size is not None or grayscale is not None:
        raise ValueError(
            "size and grayscale apply to folders of images; the arrays of "
            f"{str(path)!r} are used as stored."
        )
    if suffix == ".npy":
        with open(path, "rb") as f:
            _check_array_header(f, path, stored_bytes=path.stat().st_size)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"Cannot read {str(path)!r}: {exc}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded, None
    with loaded:
        return _the_array(loaded, path), None


def _check_array_header(f, path, stored_bytes=None, name=None):
    """Refuse an array whose header declares more data than the file or memory holds.

    Reads only the header, so a file that declares 10^6 x 10^6 values is
    refused before NumPy tries to allocate them. ``stored_bytes`` is the size
    of an uncompressed file (None inside a compressed ``.npz``).
    """
    from ._runtime import available_memory

    what = f"{str(path)!r}" if name is None else f"the array {name} of {str(path)!r}"
    try:
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0  # 2.0 and 3.0 differ in name encoding only
        )
        shape, _, dtype = read_header(f)
    except (ValueError, OSError) as exc:
        raise ValueError(f"Cannot read {what}: {exc}") from None
    if dtype.hasobject:
        return  # np.load refuses it with allow_pickle=False, naming pickle
    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if stored_bytes is not None and declared > stored_bytes:
        raise ValueError(
            f"Cannot read {what}: its header declares an array of shape {shape} and dtype "
            f"{dtype} ({declared / 2**30:.3g} GiB), but the file holds {stored_bytes} bytes."
        )
    available = available_memory("cpu")
    if available is not None and declared > available:
        raise ValueError(
            f"Cannot read {what}: its array of shape {shape} and dtype {dtype} needs "
            f"{declared / 2**30:.3g} GiB, more than the {available / 2**30:.1f} GiB of memory "
            "available."
        )


def _the_array(data, path):
    """The array named X of an opened .npz file, or its only array."""
    names = list(data.files)
    if "X" not in names and len(names) != 1:
        raise ValueError(
            f"{str(path)!r} holds the arrays {names}; name the images X "
            "(np.savez(path, X=images))."
        )
    name = "X" if "X" in names else names[0]
    with data.zip.open(f"{name}.npy") as member:
        _check_array_header(member, path, name=name)
    try:
        return data[name]
    except (ValueError, OSError) as exc:  # object arrays need pickle: refused
        raise ValueError(f"Cannot read the array {name} of {str(path)!r}: {exc}") from None
