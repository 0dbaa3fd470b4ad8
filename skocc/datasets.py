"""Small loaders for bundled data (no downloads)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

__all__ = ["load_digits_images", "one_class_digits_split"]


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
