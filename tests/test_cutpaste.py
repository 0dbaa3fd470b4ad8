"""CutPaste self-supervision and the anomaly maps of two-stage models."""

import math
import pickle

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation
from sklearn.utils._param_validation import InvalidParameterError

import skocc
from skocc import TwoStageOneClass
from skocc.nn import SelfSupervisedNet, SmallConvEncoder, cutpaste
from skocc.nn.cutpaste import CUT_PASTE, NORMAL, SCAR, scar_size
from skocc.nn.self_supervised import ResNet18Encoder

from ._settings import fast_features


def _batch(n=6, c=1, side=32, seed=0, **kwargs):
    x = torch.rand(n, c, side, side, generator=torch.Generator().manual_seed(100 + seed))
    return x, cutpaste(x, torch.Generator().manual_seed(seed), **kwargs)


# ------------------------------------------------------------ the pretext batch
@pytest.mark.parametrize("channels", [1, 3])
def test_labels_and_normal_copies(channels):
    x, out = _batch(c=channels)
    n = len(x)
    assert out.images.shape == (3 * n, channels, 32, 32)
    assert out.labels.tolist() == [NORMAL] * n + [CUT_PASTE] * n + [SCAR] * n
    assert torch.equal(out.images[:n], x)
    assert not out.masks[:n].any() and not out.boxes[:n].any()
    assert out.masks[n:].flatten(1).any(dim=1).all()  # every defect pastes something


@pytest.mark.parametrize("channels", [1, 3])
def test_cut_paste_geometry(channels):
    x, out = _batch(n=32, c=channels, side=40)
    n, side = len(x), 40
    for i in range(n):
        top, left, h, w = out.boxes[n + i].tolist()
        assert 0 <= top and top + h <= side and 0 <= left and left + w <= side
        box = torch.zeros(side, side, dtype=torch.bool)
        box[top : top + h, left : left + w] = True
        assert torch.equal(out.masks[n + i], box)
        # Pixels outside the pasted rectangle are untouched; inside, changed.
        assert torch.equal(out.images[n + i][:, ~box], x[i][:, ~box])
        assert not torch.equal(out.images[n + i][:, box], x[i][:, box])
        # Area within the paper's range, up to rounding the sides to pixels.
        area = h * w / side**2
        assert 0.02 * 0.7 <= area <= 0.15 * 1.3
        assert 0.3 * 0.7 <= w / h <= 3.34 / 0.7


def test_cut_paste_without_jitter_copies_a_block_of_the_same_image():
    x, out = _batch(n=4, side=24, jitter=0.0)
    n = len(x)
    for i in range(n):
        top, left, h, w = out.boxes[n + i].tolist()
        patch = out.images[n + i, :, top : top + h, left : left + w]
        found = any(
            torch.equal(x[i, :, r : r + h, c : c + w], patch)
            for r in range(24 - h + 1)
            for c in range(24 - w + 1)
        )
        assert found


@pytest.mark.parametrize("channels", [1, 3])
def test_scar_geometry(channels):
    x, out = _batch(n=32, c=channels, side=64)
    n = len(x)
    (_, w_hi), (_, l_hi) = scar_size(64)
    for i in range(n):
        mask = out.masks[2 * n + i]
        top, left, h, w = out.boxes[2 * n + i].tolist()
        rows, cols = torch.nonzero(mask, as_tuple=True)
        assert (rows.min(), cols.min()) == (top, left)
        assert (rows.max() + 1, cols.max() + 1) == (top + h, left + w)
        assert top + h <= 64 and left + w <= 64
        assert torch.equal(out.images[2 * n + i][:, ~mask], x[i][:, ~mask])
        # A rotated w x l sliver covers about w * l pixels.
        assert mask.sum() <= (w_hi + 2) * (l_hi + 2)
        assert max(h, w) <= math.hypot(w_hi, l_hi) + 2


def test_scar_size_scales_from_256_pixels():
    assert scar_size(256) == ((2, 16), (10, 25))
    assert scar_size(64) == ((1.0, 4.0), (2.5, 6.25))
    assert scar_size(8)[0][0] == 1.0 and scar_size(8)[1][0] == 2.0  # floors


def test_seeded_generator_is_deterministic_and_input_untouched():
    x = torch.rand(5, 3, 16, 16)
    before = x.clone()
    a = cutpaste(x, torch.Generator().manual_seed(3))
    b = cutpaste(x, torch.Generator().manual_seed(3))
    c = cutpaste(x, torch.Generator().manual_seed(4))
    assert torch.equal(x, before)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a.images, c.images)
    # Without a generator, torch's global one (which skocc seeds) drives it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        d = cutpaste(x)
    assert torch.equal(d.images, a.images)


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.rand(4, 16, 16), r"shape \(n, C, H, W\).*\(4, 16, 16\)"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "floating point.*uint8"),
    ],
)
def test_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        cutpaste(x)


# ------------------------------------------------------------ network and estimator
@pytest.mark.parametrize("encoder_class", [SmallConvEncoder, ResNet18Encoder])
def test_encoder_forward_is_the_pooled_feature_map(encoder_class):
    encoder = encoder_class(1, 16, 4).eval()
    x = torch.rand(3, 1, 16, 16)
    assert torch.equal(encoder(x), encoder.feature_map(x).mean(dim=(-2, -1)))


def test_cutpaste_net_classifies_three_ways():
    net = SelfSupervisedNet((1, 16, 16), pretext="cutpaste", width=4, head_dim=8)
    logits, labels = net(torch.rand(5, 1, 16, 16))
    assert logits.shape == (15, 3) and labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert net.feature_dim("head") == 8 and net.feature_dim("encoder") == 16


def _textures(n, side=32, seed=0):
    """Horizontal stripes of random phase, with noise."""
    rng = np.random.RandomState(seed)
    grid = np.arange(side, dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    stripes = 0.5 + 0.3 * np.sin(2 * np.pi * grid[None, :, None] / 6 + phase)
    stripes = np.broadcast_to(stripes, (n, side, side)).copy()
    return (stripes + 0.05 * rng.standard_normal((n, side, side))).astype(np.float32)


def test_cutpaste_training_loss_falls():
    X = _textures(64)
    model = fast_features(pretext="cutpaste", max_epochs=6, width=8, lr=3e-3).fit(X)
    losses = model.net_.history[:, "train_loss"]
    assert losses[-1] < losses[0]


def _two_stage():
    model = TwoStageOneClass(
        fast_features(pretext="cutpaste", width=8, max_epochs=4), rotation_ensemble=False, random_state=0
    )
    return model.fit(_textures(128))


@pytest.fixture(scope="module")
def two_stage():
    return _two_stage()


def _with_blob(n=12, side=32, size=10, seed=1):
    X = _textures(n, side, seed)
    masks = np.zeros_like(X, dtype=bool)
    rng = np.random.RandomState(seed)
    for i in range(n):
        r, c = rng.randint(2, side - size - 2, size=2)
        X[i, r : r + size, c : c + size] = 0.05
        masks[i, r : r + size, c : c + size] = True
    return X, masks


def test_score_map_localises_a_pasted_blob(two_stage):
    X, masks = _with_blob()
    maps = two_stage.score_map(X)
    assert maps.shape == X.shape and maps.dtype == np.float32
    # The map's grid is 4 times coarser than the image: its top pixels (as
    # many as the blob has) lie in the blob or within one grid cell of it.
    k = int(masks[0].sum())
    inside, near = [], []
    for m, mask in zip(maps, masks):
        top = np.argsort(m.ravel())[-k:]
        inside.append(mask.ravel()[top].mean())
        near.append(binary_dilation(mask, iterations=4).ravel()[top].mean())
    assert np.mean(near) >= 0.8 and min(near) >= 0.5
    assert np.mean(inside) >= 0.3  # about 0.1 by chance
    # Higher = more anomalous: the blob's images are further from normal.
    clean = two_stage.score_map(_textures(6, seed=2))
    assert maps.max(axis=(1, 2)).min() > np.median(clean.max(axis=(1, 2)))


def test_score_map_shapes_resolution_and_densities():
    X = _textures(40, side=40)
    features = fast_features(pretext="cutpaste", resolution=32, max_epochs=1)
    location = TwoStageOneClass(features, rotation_ensemble=False, random_state=0).fit(X)
    d = location.features_.feature_maps(X[:2]).shape[1]
    assert location.features_.feature_maps(X[:2]).shape == (2, d, 8, 8)
    assert location.map_mean_.shape == (64, d) and location.map_precision_.shape == (64, d, d)
    assert location.score_map(X[:3]).shape == (3, 40, 40)  # the input's resolution
    shared = TwoStageOneClass(
        features, rotation_ensemble=False, map_density="shared", random_state=0
    ).fit(X)
    assert shared.map_mean_.shape == (1, d) and shared.map_precision_.shape == (1, d, d)
    # Same network (same seeds), another density: another map.
    assert not np.allclose(shared.score_map(X[:3]), location.score_map(X[:3]))
    assert np.all(shared.score_map(X[:3]) >= 0)


def test_score_map_is_deterministic_and_leaves_input_untouched(two_stage):
    X, _ = _with_blob()
    before = X.copy()
    again = _two_stage()
    np.testing.assert_array_equal(two_stage.score_map(X), again.score_map(X))
    np.testing.assert_array_equal(X, before)


def test_no_map_without_map_density():
    model = TwoStageOneClass(
        fast_features(max_epochs=1), rotation_ensemble=False, map_density=None
    ).fit(_textures(30))
    assert not hasattr(model, "map_mean_")
    with pytest.raises(ValueError, match="map_density.*None"):
        model.score_map(_textures(2))
    with pytest.raises(InvalidParameterError, match="map_density"):
        TwoStageOneClass(fast_features(), map_density="pixel").fit(_textures(30))


def test_existing_pretexts_score_the_same_with_or_without_a_map():
    X = _textures(40)
    with_map = TwoStageOneClass(fast_features(max_epochs=1), random_state=0).fit(X)
    without = TwoStageOneClass(fast_features(max_epochs=1), map_density=None, random_state=0).fit(X)
    np.testing.assert_array_equal(with_map.score_samples(X), without.score_samples(X))


# ------------------------------------------------------------ persistence and plots
def test_cutpaste_features_round_trip(tmp_path):
    X = _textures(40)
    model = fast_features(pretext="cutpaste").fit(X)
    skocc.save(model, tmp_path / "cutpaste.skocc")
    again = skocc.load(tmp_path / "cutpaste.skocc")
    assert again.pretext == "cutpaste"
    np.testing.assert_array_equal(again.transform(X), model.transform(X))
    np.testing.assert_array_equal(again.feature_maps(X[:3]), model.feature_maps(X[:3]))


def test_two_stage_map_round_trip(two_stage, tmp_path):
    X, _ = _with_blob()
    again = pickle.loads(pickle.dumps(two_stage))
    np.testing.assert_array_equal(again.score_map(X), two_stage.score_map(X))
    np.testing.assert_array_equal(again.score_samples(X), two_stage.score_samples(X))
    # skocc.save stores the network; the two-stage model itself goes through pickle.
    with pytest.raises(TypeError, match="cannot store a TwoStageOneClass"):
        skocc.save(two_stage, tmp_path / "m.skocc")


def test_plot_anomaly_maps_draws_two_stage_maps(two_stage):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skocc.plotting import plot_anomaly_maps

    X = _with_blob()[0][:3]
    fig = plot_anomaly_maps(two_stage, X)
    try:
        assert len(fig.axes) == 7  # two rows of three, and the colour bar
        heat = fig.axes[3].get_images()[-1].get_array()
        np.testing.assert_array_equal(heat, two_stage.score_map(X)[0])
    finally:
        plt.close(fig)


def test_map_density_is_finite_for_one_image_and_dead_channels():
    from skocc._feature_maps import fit_map_density, mahalanobis_maps

    maps = np.random.RandomState(0).rand(1, 4, 3, 3)
    maps[:, 2] = 0.0  # a channel that never fires
    for kind in ("location", "shared"):
        mean, precision = fit_map_density(maps, kind)
        assert np.all(np.isfinite(precision))
        out = mahalanobis_maps(maps, mean, precision, (6, 6))
        assert out.shape == (1, 6, 6) and np.all(np.isfinite(out))


def test_batched_ledoit_wolf_matches_scikit_learn():
    from sklearn.covariance import ledoit_wolf

    from skocc._feature_maps import ledoit_wolf_batched

    for n in (20, 4):  # more samples than features, and fewer
        X = np.random.RandomState(n).standard_normal((3, n, 6)) * [1, 2, 3, 1, 1, 5]
        X -= X.mean(axis=1, keepdims=True)
        for got, x in zip(ledoit_wolf_batched(X), X):
            np.testing.assert_allclose(got, ledoit_wolf(x, assume_centered=True)[0], rtol=1e-10)
