"""skocc.plotting: what each figure contains, and the hint when matplotlib is missing."""

import importlib
import sys

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import skocc
from skocc import ConvAEOneClass, MultiViewConvAEOneClass, stack_views
from skocc.datasets import one_class_digits_split
from skocc.metrics import anomaly_roc_auc
from skocc.plotting import (
    plot_anomaly_maps,
    plot_reconstructions,
    plot_roc,
    plot_score_distribution,
)

from ._settings import FAST

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # the ImportError test below still runs
    matplotlib = None

needs_matplotlib = pytest.mark.skipif(matplotlib is None, reason="matplotlib is not installed")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    if matplotlib is not None:
        plt.close("all")


@pytest.fixture(scope="module")
def digits():
    X_train, X_test, y_train, y_test = one_class_digits_split(random_state=0)
    return X_train[y_train == 0], X_test[:200], np.where(y_test[:200] == 0, 1, -1)


@pytest.fixture(scope="module")
def model(digits):
    return ConvAEOneClass(**FAST).fit(digits[0])


@pytest.fixture(scope="module")
def multiview(digits):
    X_normal, X_test, _ = digits
    views = stack_views(X_normal, np.flip(X_normal, axis=2))
    return MultiViewConvAEOneClass(**FAST).fit(views), stack_views(X_test, np.flip(X_test, axis=2))


def _vertical_lines_at(ax, x):
    return [
        line for line in ax.lines
        if len(line.get_xdata()) == 2 and np.allclose(np.asarray(line.get_xdata(), float), x)
    ]


@needs_matplotlib
def test_score_distribution_splits_the_classes_and_draws_offset(model, digits):
    _, X_test, y = digits
    _, ax = plt.subplots()
    assert plot_score_distribution(model, X_test, y, ax=ax) is ax
    assert len(ax.containers) == 2  # one histogram per class
    assert len(_vertical_lines_at(ax, model.offset_)) == 1
    labels = ax.get_legend_handles_labels()[1]
    assert labels[:2] == [f"normal ({(y == 1).sum()})", f"anomalous ({(y == -1).sum()})"]
    assert labels[2].startswith("threshold offset_")


@needs_matplotlib
def test_score_distribution_without_labels_and_for_a_sklearn_pipeline(digits):
    X_normal, X_test, _ = digits
    flat = FunctionTransformer(lambda X: X.reshape(len(X), -1))
    forest = make_pipeline(flat, IsolationForest(random_state=0)).fit(X_normal)
    ax = plot_score_distribution(forest, X_test)
    assert len(ax.containers) == 1
    assert len(_vertical_lines_at(ax, forest[-1].offset_)) == 1


@needs_matplotlib
def test_score_distribution_rejects_zero_one_labels(model, digits):
    _, X_test, y = digits
    with pytest.raises(ValueError, match="anomaly_label=1"):
        plot_score_distribution(model, X_test, (y == -1).astype(int))


@needs_matplotlib
def test_roc_curve_auc_and_operating_point(model, digits):
    _, X_test, y = digits
    ax = plot_roc(model, X_test, y, name="ae")
    curve, point, chance = ax.lines
    auc = anomaly_roc_auc(y, model.anomaly_score(X_test))
    assert curve.get_label() == f"ae (AUROC {auc:.3f})"
    assert (curve.get_xdata()[-1], curve.get_ydata()[-1]) == (1.0, 1.0)
    flagged = model.predict(X_test) == -1
    np.testing.assert_allclose(
        [point.get_xdata()[0], point.get_ydata()[0]],
        [flagged[y == 1].mean(), flagged[y == -1].mean()],
    )
    assert point.get_color() == curve.get_color()
    np.testing.assert_array_equal(chance.get_xdata(), [0, 1])


@needs_matplotlib
def test_roc_compares_detectors_on_one_axes(model, digits):
    X_normal, X_test, y = digits
    flat = FunctionTransformer(lambda X: X.reshape(len(X), -1))
    forest = make_pipeline(flat, IsolationForest(random_state=0)).fit(X_normal)
    ax = plot_roc(model, X_test, y)
    assert plot_roc(forest, X_test, y, ax=ax) is ax
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels[0].startswith("ConvAEOneClass (AUROC")
    assert labels[1].startswith("FunctionTransformer + IsolationForest (AUROC")
    assert labels[2:] == ["threshold of predict", "chance (AUROC 0.5)"]


@needs_matplotlib
def test_reconstructions_rows_and_pixels(model, digits):
    _, X_test, _ = digits
    fig = plot_reconstructions(model, X_test, n_images=5)
    assert len(fig.axes) == 10
    top, bottom = fig.axes[:5], fig.axes[5:]
    x_hat = model.reconstruct(X_test[:5])
    for i, (ax_image, ax_rebuilt) in enumerate(zip(top, bottom)):
        (image,), (rebuilt,) = ax_image.images, ax_rebuilt.images
        np.testing.assert_array_equal(image.get_array(), X_test[i])
        np.testing.assert_array_equal(rebuilt.get_array(), x_hat[i, 0])
        assert rebuilt.get_clim() == image.get_clim() == (X_test[i].min(), X_test[i].max())
    assert [ax.get_ylabel() for ax in (top[0], bottom[0])] == ["image", "reconstruction"]


@needs_matplotlib
def test_reconstructions_multiview_and_colour(multiview, digits):
    model, views = multiview
    fig = plot_reconstructions(model, views, n_images=3)
    assert len(fig.axes) == 4 * 3
    assert fig.axes[6].get_ylabel() == "view 1\nimage"
    rgb = ConvAEOneClass(**FAST).fit(np.repeat(digits[0][..., None], 3, axis=-1))
    fig = plot_reconstructions(rgb, np.repeat(digits[1][:2, ..., None], 3, axis=-1))
    assert fig.axes[0].images[0].get_array().shape == (8, 8, 3)


@needs_matplotlib
def test_anomaly_maps_overlay_score_map(model, digits):
    _, X_test, _ = digits
    fig = plot_anomaly_maps(model, X_test, n_images=4, titles=list("abcd"), vmax=2.0)
    *panels, colorbar = fig.axes
    assert len(panels) == 8
    maps = model.score_map(X_test[:4])
    for i, ax in enumerate(panels[4:]):
        image, heat = ax.images
        np.testing.assert_array_equal(image.get_array(), X_test[i])
        np.testing.assert_array_equal(heat.get_array(), maps[i])
        assert heat.get_clim() == (0.0, 2.0) and heat.get_alpha() == 0.5
    assert [ax.get_title() for ax in panels[:4]] == list("abcd")
    assert colorbar.get_ylabel() == "reconstruction error per pixel"
    with pytest.raises(ValueError, match="one entry per image"):
        plot_anomaly_maps(model, X_test, n_images=4, titles=["a"])


@needs_matplotlib
def test_anomaly_maps_multiview_share_one_scale(multiview):
    model, views = multiview
    fig = plot_anomaly_maps(model, views, n_images=2)
    *panels, _ = fig.axes
    assert len(panels) == 4 * 2
    heats = [ax.images[1] for ax in panels[2:4] + panels[6:8]]
    top = float(model.score_map(views[:2]).max())
    assert all(heat.get_clim() == (0.0, top) for heat in heats)


@needs_matplotlib
@pytest.mark.parametrize("plot", [plot_reconstructions, plot_anomaly_maps])
@pytest.mark.parametrize(
    "estimator, error, match",
    [
        (IsolationForest(), TypeError, "needs a fitted skocc autoencoder"),
        (ConvAEOneClass(), NotFittedError, "not fitted yet"),
    ],
    ids=["not-an-autoencoder", "not-fitted"],
)
def test_image_figures_reject_what_they_cannot_draw(plot, estimator, error, match, digits):
    with pytest.raises(error, match=match):
        plot(estimator, digits[1])


def test_missing_matplotlib_says_which_extra_to_install(monkeypatch, model, digits):
    monkeypatch.setattr(skocc, "plotting", sys.modules["skocc.plotting"])
    monkeypatch.delitem(sys.modules, "skocc.plotting")
    for name in ("matplotlib", "matplotlib.pyplot"):  # None in sys.modules: import fails
        monkeypatch.setitem(sys.modules, name, None)
    plotting = importlib.import_module("skocc.plotting")  # the module itself needs no matplotlib
    _, X_test, y = digits
    for call in (
        lambda: plotting.plot_score_distribution(model, X_test, y),
        lambda: plotting.plot_roc(model, X_test, y),
        lambda: plotting.plot_reconstructions(model, X_test),
        lambda: plotting.plot_anomaly_maps(model, X_test),
    ):
        with pytest.raises(ImportError, match=r'pip install "skocc\[plot\]"'):
            call()
