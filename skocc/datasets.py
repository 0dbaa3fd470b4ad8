"""Small loaders: bundled data (no downloads), local arrays and image folders."""

from __future__ import annotations

import os
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


def load_image_folder(path, size=None, grayscale=False):
    """Read the PNG and JPEG images of a folder into one array.

    Files are read in name order; other files and sub-folders are skipped.
    JPEG orientation tags are applied. Images are 8-bit: each is converted to
    RGB (or to grayscale) with Pillow, so palette and RGBA images work (alpha
    is dropped).

    Needs Pillow (``pip install "skocc[images]"``).

    Parameters
    ----------
    path : str or path-like
        The folder.
    size : int, tuple of (int, int) or None, default=None
        Resize every image to ``(height, width)`` (an int: a square), with
        Pillow's antialiased bilinear filter. ``None`` keeps the sizes, which
        must then all be equal.
    grayscale : bool, default=False
        Convert to one channel (Pillow's ``"L"`` mode) instead of RGB.

    Returns
    -------
    images : ndarray of shape (n, H, W, 3), or (n, H, W) if grayscale, dtype uint8
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
    """
    size = _check_size(size)
    folder = Path(os.fspath(path))
    if not folder.exists():
        raise FileNotFoundError(f"No such folder: {str(folder)!r}.")
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder.")
    files = sorted(
        f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise ValueError(
            f"No image in {str(folder)!r}: expected files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)}."
        )
    Image, ImageOps = _import_pillow()
    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                image = ImageOps.exif_transpose(image).convert("L" if grayscale else "RGB")
                if size is not None and image.size != (size[1], size[0]):
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                images.append(np.asarray(image, dtype=np.uint8))
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
    return np.stack(images), [f.name for f in files]


def load_images(path, *, size=None, grayscale=False):
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
    grayscale : bool, default=False
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
    if size is not None or grayscale:
        raise ValueError(
            "size and grayscale apply to folders of images; the arrays of "
            f"{str(path)!r} are used as stored."
        )
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"Cannot read {str(path)!r}: {exc}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded, None
    with loaded:
        return _the_array(loaded, path), None


def _the_array(data, path):
    """The array named X of an opened .npz file, or its only array."""
    names = list(data.files)
    if "X" not in names and len(names) != 1:
        raise ValueError(
            f"{str(path)!r} holds the arrays {names}; name the images X "
            "(np.savez(path, X=images))."
        )
    name = "X" if "X" in names else names[0]
    try:
        return data[name]
    except (ValueError, OSError) as exc:  # object arrays need pickle: refused
        raise ValueError(f"Cannot read the array {name} of {str(path)!r}: {exc}") from None
