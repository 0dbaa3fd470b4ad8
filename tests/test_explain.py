"""explain(X): integrated-gradient maps of the anomaly score, for the autoencoders and two-stage models."""

import numpy as np
import pytest
import torch

from skocc import (
    ConvAEOneClass,
    MultiViewConvAEOneClass,
    SelfSupervisedFeatures,
    TwoStageOneClass,
)
from skocc.nn.attribution import blurred_baseline, integrated_gradients

SIDE = 16
MASK = np.zeros((SIDE, SIDE), bool)
MASK[4:8, 9:13] = True  # 6 % of the image


def _smooth_images(n, seed):
    """Smooth ramps of random brightness and slope, with a little noise: the normal class."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[:SIDE, :SIDE] / SIDE
    a, b, c = (rng.uniform(0.2, 0.6, (3, n, 1, 1)))
    images = a + 0.3 * b * xx + 0.3 * c * yy + rng.normal(0, 0.02, (n, SIDE, SIDE))
    return np.clip(images, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    X = _smooth_images(300, seed=0)
    defective = _smooth_images(10, seed=1)
    defective[:, MASK] = 1.0  # a bright patch, planted
    return X, defective


@pytest.fixture(scope="module")
def autoencoder(data):
    return ConvAEOneClass(
        channels=(8, 16), latent_dim=8, max_epochs=30, device="cpu", random_state=0,
        calibration="train",
    ).fit(data[0])


@pytest.fixture(scope="module")
def two_stage(data):
    features = SelfSupervisedFeatures(
        pretext="rotation", width=8, head_dim=16, max_epochs=10, device="cpu", random_state=0
    )
    return TwoStageOneClass(features, random_state=0, calibration="train").fit(data[0])


def _mass_inside(maps):
    positive = np.clip(maps, 0, None)
    return positive[:, MASK].sum(axis=1) / positive.reshape(len(maps), -1).sum(axis=1)


@pytest.mark.parametrize("model", ["autoencoder", "two_stage"])
def test_explanation_concentrates_on_a_planted_defect(model, data, request):
    estimator = request.getfixturevalue(model)
    _, defective = data
    before = defective.copy()
    maps = estimator.explain(defective, steps=16)
    assert maps.shape == (10, SIDE, SIDE) and maps.dtype == np.float32
    np.testing.assert_array_equal(defective, before)  # the input is not modified
    # Most of the positive attribution lies in the 6 % of pixels that were planted.
    assert np.median(_mass_inside(maps)) > 0.5, _mass_inside(maps)


def test_explanation_adds_up_to_the_score_difference(autoencoder, data):
    _, defective = data
    maps = autoencoder.explain(defective[:4], steps=64, baseline="zeros")
    expected = autoencoder.score_samples(np.zeros_like(defective[:4])) - autoencoder.score_samples(
        defective[:4]
    )
    np.testing.assert_allclose(maps.reshape(4, -1).sum(axis=1), expected, rtol=0.05, atol=0.05)


def test_uint8_and_float_images_give_the_same_explanation(autoencoder, data):
    _, defective = data
    as_bytes = np.round(defective[:3] * 255).astype(np.uint8)
    np.testing.assert_allclose(
        autoencoder.explain(as_bytes, steps=4),
        autoencoder.explain(as_bytes.astype(np.float32) / 255, steps=4),
        rtol=1e-4, atol=1e-5,
    )


def test_multi_view_explanations_have_a_view_axis(data):
    X, defective = data
    views = np.stack([X[:60], X[:60, :, ::-1]], axis=1)
    model = MultiViewConvAEOneClass(
        channels=(8,), latent_dim=4, max_epochs=2, device="cpu", random_state=0, calibration="train"
    ).fit(views)
    maps = model.explain(np.stack([defective[:3], defective[:3]], axis=1), steps=2)
    assert maps.shape == (3, 2, SIDE, SIDE)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"steps": 0}, "steps must be a positive int"), ({"baseline": "mean"}, "baseline must be one of")],
)
def test_bad_arguments_are_named(autoencoder, data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        autoencoder.explain(data[1][:2], **kwargs)


def test_two_stage_without_a_torch_detector_says_so(data):
    features = SelfSupervisedFeatures(width=4, head_dim=8, max_epochs=1, device="cpu", random_state=0)
    model = TwoStageOneClass(features, detector="ocsvm", rotation_ensemble=False, calibration="train")
    model.fit(data[0][:40])
    with pytest.raises(TypeError, match=r"explain needs the scores of the second stage.*'gde' or 'kde'"):
        model.explain(data[1][:2])


def test_other_image_shapes_are_refused(autoencoder):
    with pytest.raises(ValueError, match=r"fitted on samples of shape \(1, 16, 16\)"):
        autoencoder.explain(np.zeros((2, 8, 8), np.float32))


# ------------------------------------------------------------ skocc.nn.attribution
def test_integrated_gradients_is_complete_and_exact_for_linear_functions():
    g = torch.Generator().manual_seed(0)
    x, w = torch.rand(3, 1, 5, 5, generator=g), torch.randn(1, 5, 5, generator=g)
    linear = lambda z: (z * w).flatten(1).sum(1)  # noqa: E731
    baseline = torch.zeros_like(x)
    torch.testing.assert_close(integrated_gradients(linear, x, baseline, steps=1), x * w)
    curved = lambda z: (z**2 * w).flatten(1).sum(1).sin()  # noqa: E731
    total = integrated_gradients(curved, x, baseline, steps=128).flatten(1).sum(1)
    torch.testing.assert_close(total, curved(x) - curved(baseline), rtol=1e-3, atol=1e-3)


def test_blurred_baseline_keeps_flat_images_and_removes_spots():
    flat = torch.full((2, 1, 12, 12), 0.4)
    torch.testing.assert_close(blurred_baseline(flat, 2.0), flat)
    spot = flat.clone()
    spot[:, :, 6, 6] = 1.0
    blurred = blurred_baseline(spot, 2.0)
    assert blurred.shape == spot.shape and blurred[0, 0, 6, 6] < 0.5
    assert int(blurred[0, 0].argmax()) == 6 * 12 + 6  # spread out around where it was


def test_plot_explanations_draws_images_maps_and_explanations(autoencoder, two_stage, data):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from skocc.plotting import plot_explanations

    fig = plot_explanations(autoencoder, data[1], n_images=3, steps=2)
    assert len(fig.axes) == 3 * 3 + 1  # image, map and explanation rows; the colour bar
    fig = plot_explanations(two_stage, data[1], n_images=2, steps=2)
    rows = 3 if hasattr(two_stage, "score_map") else 2
    assert len(fig.axes) == rows * 2 + 1
    with pytest.raises(TypeError, match="plot_explanations needs a fitted skocc detector"):
        plot_explanations(object(), data[1])
