"""Loaders: image folders through Pillow, .npz / .npy arrays without pickle."""

import sys
from unittest import mock

import numpy as np
import pytest

from skocc.datasets import load_image_folder, load_images

Image = pytest.importorskip("PIL.Image")  # the test extra installs Pillow


def _write(folder, name, array):
    folder.mkdir(exist_ok=True)
    Image.fromarray(array).save(folder / name)


def _pattern(h, w, channels=None, seed=0):
    shape = (h, w) if channels is None else (h, w, channels)
    return np.random.RandomState(seed).randint(0, 256, size=shape, dtype=np.uint8)


def test_folder_of_rgb_and_grayscale_images(tmp_path):
    rgb = [_pattern(6, 5, 3, seed) for seed in range(3)]
    for i, image in zip((2, 0, 1), rgb):  # written out of order: read in name order
        _write(tmp_path, f"img{i}.png", image)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    with pytest.warns(UserWarning, match=r"Skipped 1 file\(s\) .* notes\.txt"):
        images, names = load_image_folder(tmp_path)
    assert names == ["img0.png", "img1.png", "img2.png"]
    assert images.shape == (3, 6, 5, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[2], rgb[0])  # PNG is lossless
    with pytest.warns(UserWarning, match="Skipped 1 file"):
        gray, _ = load_image_folder(tmp_path, grayscale=True)
    assert gray.shape == (3, 6, 5)


def test_jpeg_and_resizing(tmp_path):
    _write(tmp_path, "a.jpg", _pattern(20, 30, 3))
    _write(tmp_path, "b.JPEG", _pattern(10, 10, 3))
    _write(tmp_path, "c.png", _pattern(7, 9))  # grayscale file, read as RGB
    images, names = load_image_folder(tmp_path, size=(8, 12))
    assert names == ["a.jpg", "b.JPEG", "c.png"] and images.shape == (3, 8, 12, 3)
    assert load_image_folder(tmp_path, size=4, grayscale=True)[0].shape == (3, 4, 4)
    # A constant image stays constant through resizing.
    _write(tmp_path / "flat", "x.png", np.full((10, 10), 77, np.uint8))
    assert np.all(load_image_folder(tmp_path / "flat", size=3)[0] == 77)


@pytest.mark.parametrize(
    "setup, kwargs, error, match",
    [
        ("missing", {}, FileNotFoundError, "No such folder"),
        ("empty", {}, ValueError, r"No image in .*\.png, \.jpg, \.jpeg"),
        ("mixed", {}, ValueError, r"differ in size: a.png is 8x8 .* b.png is 8x9\. Pass size="),
        ("broken", {}, ValueError, r"Cannot read the image .*broken.png"),
        ("mixed", {"size": (0, 3)}, ValueError, "size must be None, a positive int"),
    ],
)
def test_folder_errors(tmp_path, setup, kwargs, error, match):
    folder = tmp_path / "data"
    if setup != "missing":
        folder.mkdir()
    if setup == "mixed":
        _write(folder, "a.png", _pattern(8, 8))
        _write(folder, "b.png", _pattern(8, 9))
    if setup == "broken":
        _write(folder, "a.png", _pattern(8, 8))
        (folder / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(error, match=match):
        load_image_folder(folder, **kwargs)


def test_missing_pillow_names_the_extra(tmp_path):
    _write(tmp_path, "a.png", _pattern(4, 4))
    with mock.patch.dict(sys.modules, {"PIL": None}):
        with pytest.raises(ImportError, match=r"skocc\[images\]"):
            load_image_folder(tmp_path)


def test_arrays(tmp_path):
    X = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.savez(tmp_path / "named.npz", X=X, y=np.ones(2))
    np.savez(tmp_path / "single.npz", images=X)
    np.save(tmp_path / "plain.npy", X)
    for name in ("named.npz", "single.npz", "plain.npy"):
        loaded, names = load_images(tmp_path / name)
        np.testing.assert_array_equal(loaded, X)
        assert names is None
    _write(tmp_path / "folder", "a.png", _pattern(4, 4, 3))
    images, names = load_images(tmp_path / "folder", grayscale=True)
    assert images.shape == (1, 4, 4) and names == ["a.png"]


@pytest.mark.parametrize(
    "make, kwargs, error, match",
    [
        (lambda p: np.savez(p / "d.npz", a=np.zeros(2), b=np.zeros(2)), {}, ValueError, r"arrays \['a', 'b'\]; name the images X"),
        (lambda p: np.savez(p / "d.npz", X=np.array([{}, 1], dtype=object)), {}, ValueError, "Object arrays cannot be loaded"),
        (lambda p: np.save(p / "d.npy", np.array([{}], dtype=object)), {}, ValueError, "Cannot read .*pickle"),
        (lambda p: (p / "d.csv").write_text("1,2"), {}, ValueError, "expected a .npz or .npy file or a folder"),
        (lambda p: np.save(p / "d.npy", np.zeros((2, 3, 3))), {"size": 4}, ValueError, "apply to folders of images"),
        (lambda p: None, {}, FileNotFoundError, "No such file or folder"),
    ],
)
def test_array_errors(tmp_path, make, kwargs, error, match):
    make(tmp_path)
    files = [f for f in tmp_path.iterdir()] or [tmp_path / "d.npz"]
    with pytest.raises(error, match=match):
        load_images(files[0], **kwargs)


def test_grayscale_files_keep_one_channel_unless_forced(tmp_path):
    for i in range(2):
        _write(tmp_path, f"g{i}.png", _pattern(5, 6, seed=i))
    images, _ = load_image_folder(tmp_path)
    assert images.shape == (2, 5, 6) and images.dtype == np.uint8
    rgb, _ = load_image_folder(tmp_path, grayscale=False)
    assert rgb.shape == (2, 5, 6, 3)
    np.testing.assert_array_equal(rgb[..., 1], images)  # three equal channels
    _write(tmp_path, "h.png", _pattern(5, 6, 3))  # one colour file: all read as RGB
    mixed, _ = load_image_folder(tmp_path)
    assert mixed.shape == (3, 5, 6, 3)
    np.testing.assert_array_equal(mixed[:2], rgb)


def _write16(folder, name, array):
    folder.mkdir(exist_ok=True)
    Image.fromarray(array.astype(np.uint16)).save(folder / name)


def test_16_bit_pngs_are_read_at_full_depth(tmp_path):
    deep = np.random.RandomState(0).randint(0, 65536, size=(2, 6, 7)).astype(np.uint16)
    for i, image in enumerate(deep):
        _write16(tmp_path, f"d{i}.png", image)
    images, _ = load_image_folder(tmp_path)
    assert images.dtype == np.uint16
    np.testing.assert_array_equal(images, deep)
    # An 8-bit file in the folder joins at the same intensity (x 257).
    _write(tmp_path, "e.png", np.full((6, 7), 128, np.uint8))
    mixed, _ = load_image_folder(tmp_path)
    assert mixed.dtype == np.uint16 and np.all(mixed[2] == 128 * 257)
    np.testing.assert_array_equal(mixed[:2], deep)
    # Resizing keeps 16 bits: a constant image stays exactly constant.
    _write16(tmp_path / "flat", "f.png", np.full((10, 10), 40000))
    flat, _ = load_image_folder(tmp_path / "flat", size=3)
    assert flat.dtype == np.uint16 and np.all(flat == 40000)
    rgb, _ = load_image_folder(tmp_path / "flat", grayscale=False)
    assert rgb.shape == (1, 10, 10, 3) and np.all(rgb == 40000)


@pytest.mark.parametrize("shape", [(10**6, 10**6), (10**9,)])
def test_npy_header_is_checked_before_loading(tmp_path, shape):
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    with open(tmp_path / "big.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(bytes(64))
    with pytest.raises(ValueError, match=r"header declares an array of shape .* but the file holds"):
        load_images(tmp_path / "big.npy")
