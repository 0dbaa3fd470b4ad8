"""The image gate: every accepted layout, every rejected input."""

import numpy as np
import pytest
import torch

from skocc.images import check_images, infer_channels_last


@pytest.mark.parametrize(
    "shape, kwargs, expected",
    [
        ((5, 8, 8), {}, (5, 1, 8, 8)),
        ((5, 3, 8, 6), {}, (5, 3, 8, 6)),
        ((5, 8, 6, 3), {}, (5, 3, 8, 6)),  # channels-last, as PIL/OpenCV give it
        ((5, 8, 6, 1), {}, (5, 1, 8, 6)),
        ((5, 3, 4, 3), {}, (5, 3, 4, 3)),  # ambiguous: channels-first wins
        ((5, 3, 4, 3), {"data_format": "channels_last"}, (5, 3, 3, 4)),
        ((5, 8, 6, 3), {"data_format": "channels_first"}, (5, 8, 6, 3)),
        ((5, 12), {}, (5, 1, 1, 12)),  # tabular
        ((5, 12), {"image_shape": (3, 4)}, (5, 1, 3, 4)),
        ((5, 12), {"image_shape": (3, 2, 2)}, (5, 3, 2, 2)),
        ((5, 2, 8, 8), {"n_view_axes": 1}, (5, 2, 1, 8, 8)),
        ((5, 2, 3, 8, 8), {"n_view_axes": 1}, (5, 2, 3, 8, 8)),
        ((5, 2, 8, 8, 3), {"n_view_axes": 1}, (5, 2, 3, 8, 8)),
        ((5, 24), {"n_view_axes": 1, "image_shape": (2, 3, 4)}, (5, 2, 1, 3, 4)),
        ((5, 24), {"n_view_axes": 1}, (5, 1, 1, 1, 24)),
    ],
)
def test_layouts(shape, kwargs, expected):
    X = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    images = check_images(X, **kwargs)
    assert images.shape == expected
    assert images.dtype == np.float32


def test_channels_last_values_are_moved_not_scrambled():
    X = np.random.RandomState(0).rand(2, 5, 6, 3)
    images = check_images(X)
    np.testing.assert_allclose(images[1, 2], X[1, :, :, 2].astype(np.float32))


def test_flat_input_uses_channels_first_order():
    X = np.arange(24.0).reshape(1, 24)
    images = check_images(X, image_shape=(2, 3, 4))
    np.testing.assert_array_equal(images[0], np.arange(24.0).reshape(2, 3, 4))


def test_uint8_is_kept_without_copy_and_input_untouched():
    X = np.random.RandomState(0).randint(0, 256, size=(4, 8, 8)).astype(np.uint8)
    before = X.copy()
    images = check_images(X)
    assert images.dtype == np.uint8
    assert np.shares_memory(images, X)
    np.testing.assert_array_equal(X, before)


def test_uint8_dataframe_is_read_as_pixels():
    pd = pytest.importorskip("pandas")
    X = np.random.RandomState(0).randint(0, 256, size=(4, 6)).astype(np.uint8)
    images = check_images(pd.DataFrame(X))
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images, check_images(X))


def test_negative_strides_are_copied_not_shared():
    X = np.random.RandomState(0).rand(3, 4, 5).astype(np.float32)
    images = check_images(X[:, ::-1])
    assert all(s > 0 for s in images.strides)
    np.testing.assert_array_equal(images[:, 0], X[:, ::-1])


def test_torch_and_pandas_and_lists():
    pd = pytest.importorskip("pandas")
    X = np.random.RandomState(0).rand(4, 6)
    for given in (torch.from_numpy(X), pd.DataFrame(X), X.tolist()):
        np.testing.assert_allclose(check_images(given), check_images(X))


def test_infer_channels_last_rule():
    assert infer_channels_last((10, 28, 28, 3))
    assert not infer_channels_last((10, 3, 28, 28))
    assert not infer_channels_last((10, 3, 28, 3))


@pytest.mark.parametrize(
    "X, kwargs, error, match",
    [
        (np.full((3, 4, 4), np.nan), {}, ValueError, "NaN"),
        (np.full((3, 4, 4), np.inf), {}, ValueError, "infinity"),
        (np.zeros((0, 4, 4)), {}, ValueError, "0 sample"),
        (np.zeros(5), {}, ValueError, "Expected 2D array"),
        (np.zeros((2, 2, 2, 2, 2, 2)), {}, ValueError, r"layouts.*got an array of shape \(2, 2, 2, 2, 2, 2\)"),
        (np.zeros((3, 10)), {"image_shape": (3, 4)}, ValueError, "10 features per sample but image_shape"),
        (np.zeros((3, 10)), {"image_shape": (3, -4)}, ValueError, "image_shape must be a tuple of positive ints"),
        (np.zeros((3, 10)), {"data_format": "nhwc"}, ValueError, "data_format must be one of"),
        (np.array([["a", "b"], ["c", "d"]], dtype=object), {}, ValueError, "could not convert"),
        (np.zeros((3, 4, 4)), {"n_view_axes": 1}, ValueError, r"\(n, V, H, W\).*shape \(3, 4, 4\)\.$"),
        (np.zeros((3, 4), dtype=complex), {}, ValueError, "Complex data not supported"),
    ],
)
def test_bad_input(X, kwargs, error, match):
    with pytest.raises(error, match=match):
        check_images(X, **kwargs)


def test_sparse_input_is_rejected():
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="dense data is required"):
        check_images(sparse.csr_matrix(np.eye(3)))
