"""Figures for one-class detectors: score distributions, ROC, reconstructions, anomaly maps.

matplotlib is optional (``pip install "skocc[plot]"``) and imported inside the
functions, so ``import skocc.plotting`` works without it. Single-panel
functions draw into ``ax`` (a new figure when ``None``) and return the Axes;
multi-panel functions draw into ``fig`` (a Figure or SubFigure, a new figure
when ``None``) and return it. None of them calls ``plt.show()``.

:func:`plot_score_distribution` and :func:`plot_roc` work with any
scikit-learn outlier detector that has ``score_samples`` (higher = more
normal), including a :class:`~sklearn.pipeline.Pipeline` that ends in one.
:func:`plot_reconstructions` and :func:`plot_anomaly_maps` need an autoencoder
(:class:`~skocc.ConvAEOneClass`, :class:`~skocc.MultiViewConvAEOneClass`).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.pipeline import Pipeline

from ._sklearn_compat import safe_indexing
from .images import read_as_fitted
from .metrics import _is_anomaly

__all__ = [
    "plot_anomaly_maps",
    "plot_explanations",
    "plot_reconstructions",
    "plot_roc",
    "plot_score_distribution",
]

_INSTALL_HINT = 'skocc.plotting needs matplotlib; install it with: pip install "skocc[plot]"'

# Marks artists that must be drawn once per Axes however often a function draws into it.
_CHANCE_GID = "skocc-chance"
_OPERATING_POINT_GID = "skocc-operating-point"


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return plt


def _axes(plt, ax):
    if ax is not None:
        return ax
    _, ax = plt.subplots()
    return ax


def _figure(plt, fig, n_rows, n_cols):
    if fig is None:
        fig = plt.figure(figsize=(1.3 * n_cols + 1.2, 1.4 * n_rows), layout="constrained")
    return fig, fig.subplots(n_rows, n_cols, squeeze=False)


def _name(estimator):
    if isinstance(estimator, Pipeline):
        return " + ".join(type(step).__name__ for _, step in estimator.steps)
    return type(estimator).__name__


def _threshold(estimator):
    """``offset_`` of the detector (of a Pipeline's last step), or None."""
    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    offset = getattr(final, "offset_", None)
    return None if offset is None else float(offset)


def plot_score_distribution(estimator, X, y=None, *, anomaly_label=-1, bins=30, ax=None):
    """Histograms of ``score_samples`` with the fitted threshold ``offset_``.

    With ``y``, normal and anomalous samples get one histogram each, scaled to
    unit area so that classes of very different sizes can be compared. Samples
    left of the dashed line are the ones ``predict`` flags.

    Parameters
    ----------
    estimator : fitted outlier detector
        Anything with ``score_samples`` (higher = more normal): skocc's
        estimators, :class:`~sklearn.svm.OneClassSVM`,
        :class:`~sklearn.ensemble.IsolationForest`, a Pipeline ending in one.
        The threshold line is drawn when it (or a Pipeline's last step) has
        ``offset_``.
    X : array-like
        Samples to score.
    y : array-like of shape (n_samples,) or None, default=None
        Labels; ``anomaly_label`` marks anomalies, every other value is normal.
        ``None`` draws one histogram of all samples.
    anomaly_label : int or str, default=-1
        Label of anomalies in ``y`` (scikit-learn's outlier convention).
    bins : int, default=30
        Number of bins, shared by both histograms.
    ax : matplotlib Axes or None, default=None
        Axes to draw in; ``None`` creates a figure.

    Returns
    -------
    ax : matplotlib Axes

    See Also
    --------
    plot_roc : How well the same scores rank anomalies.

    Examples
    --------
    >>> import numpy as np
    >>> from skocc import ConvAEOneClass
    >>> from skocc.datasets import load_digits_images
    >>> from skocc.plotting import plot_score_distribution
    >>> X, digit = load_digits_images()
    >>> model = ConvAEOneClass(max_epochs=2, random_state=0).fit(X[digit == 0])
    >>> ax = plot_score_distribution(model, X[:300], np.where(digit[:300] == 0, 1, -1))
    >>> ax.get_xlabel()
    'score_samples (higher = more normal)'
    """
    ax = _axes(_pyplot(), ax)
    scores = np.asarray(estimator.score_samples(X), dtype=float)
    edges = np.histogram_bin_edges(scores, bins=bins)
    if y is None:
        ax.hist(scores, bins=edges, alpha=0.6, color="C0", label="samples")
        ax.set_ylabel("samples")
    else:
        is_anomaly = _is_anomaly(y, anomaly_label)
        for mask, label, color in ((~is_anomaly, "normal", "C0"), (is_anomaly, "anomalous", "C3")):
            if mask.any():
                ax.hist(scores[mask], bins=edges, density=True, alpha=0.6, color=color,
                        label=f"{label} ({int(mask.sum())})")
        ax.set_ylabel("density")
    offset = _threshold(estimator)
    if offset is not None:
        ax.axvline(offset, color="k", linestyle="--", label=f"threshold offset_ = {offset:.3g}")
    ax.set_xlabel("score_samples (higher = more normal)")
    ax.legend()
    return ax


def plot_roc(estimator, X, y, *, anomaly_label=-1, name=None, ax=None):
    """ROC curve with anomalies as the positive class, and ``predict``'s operating point.

    The curve ranks samples by ``-score_samples(X)``: it shows the fraction of
    anomalies found against the fraction of normal samples flagged, for every
    threshold. A dot marks the threshold ``predict`` uses. Call it again with
    the same ``ax`` to compare detectors.

    Parameters
    ----------
    estimator : fitted outlier detector
        Anything with ``score_samples`` (higher = more normal); the dot is
        drawn when it also has ``predict`` (+1/-1).
    X : array-like
        Samples to score.
    y : array-like of shape (n_samples,)
        Labels; ``anomaly_label`` marks anomalies, every other value is normal.
    anomaly_label : int or str, default=-1
        Label of anomalies in ``y`` (scikit-learn's outlier convention).
    name : str or None, default=None
        Legend name; ``None`` uses the class name (the steps' names for a
        Pipeline).
    ax : matplotlib Axes or None, default=None
        Axes to draw in; ``None`` creates a figure.

    Returns
    -------
    ax : matplotlib Axes

    See Also
    --------
    skocc.metrics.anomaly_roc_auc : The area under this curve.

    Examples
    --------
    >>> import numpy as np
    >>> from skocc import ConvAEOneClass
    >>> from skocc.datasets import load_digits_images
    >>> from skocc.plotting import plot_roc
    >>> X, digit = load_digits_images()
    >>> model = ConvAEOneClass(max_epochs=2, random_state=0).fit(X[digit == 0])
    >>> ax = plot_roc(model, X[:300], np.where(digit[:300] == 0, 1, -1), name="autoencoder")
    >>> ax.get_legend_handles_labels()[1][0].startswith("autoencoder (AUROC")
    True
    """
    ax = _axes(_pyplot(), ax)
    is_anomaly = _is_anomaly(y, anomaly_label)
    anomaly_scores = -np.asarray(estimator.score_samples(X), dtype=float)
    fpr, tpr, _ = roc_curve(is_anomaly, anomaly_scores)
    auc = roc_auc_score(is_anomaly, anomaly_scores)
    name = _name(estimator) if name is None else name
    (line,) = ax.plot(fpr, tpr, label=f"{name} (AUROC {auc:.3f})")
    if hasattr(estimator, "predict"):
        flagged = np.asarray(estimator.predict(X)) == -1
        first = not any(a.get_gid() == _OPERATING_POINT_GID for a in ax.lines)
        ax.plot(flagged[~is_anomaly].mean(), flagged[is_anomaly].mean(), "o",
                color=line.get_color(), markeredgecolor="k", gid=_OPERATING_POINT_GID,
                label="threshold of predict" if first else "_nolegend_")
    if not any(a.get_gid() == _CHANCE_GID for a in ax.lines):
        ax.plot([0, 1], [0, 1], ":", color="grey", gid=_CHANCE_GID, label="chance (AUROC 0.5)")
    ax.set_xlabel("normal samples flagged (false positive rate)")
    ax.set_ylabel("anomalies found (true positive rate)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    # Curves first, then the markers' and chance's entries, however many curves.
    entries = sorted(zip(*ax.get_legend_handles_labels()),
                     key=lambda entry: entry[0].get_gid() in (_CHANCE_GID, _OPERATING_POINT_GID))
    ax.legend(*zip(*entries), loc="lower right")
    return ax


def _check_autoencoder(estimator, method, function):
    if not hasattr(estimator, method) or not hasattr(estimator, "_validate_images"):
        raise TypeError(
            f"{function} needs a fitted skocc autoencoder (ConvAEOneClass or "
            f"MultiViewConvAEOneClass), which has {method}(); got {type(estimator).__name__}."
        )


def _head(X, n_images):
    """The first ``n_images`` samples of any array-like, in its own type."""
    n = min(int(n_images), len(X))
    return safe_indexing(X, np.arange(n))


def _images_as_read(estimator, X):
    """``X`` as the fitted ``estimator`` reads it, with a view axis: ``(n, V, C, H, W)``."""
    n_view_axes = len(estimator.image_shape_) - 3
    return _with_view_axis(read_as_fitted(estimator, X), n_view_axes), n_view_axes


def _with_view_axis(images, n_view_axes):
    return images if n_view_axes else images[:, None]


def _displayable(image):
    """One ``(C, H, W)`` image as something ``imshow`` draws: RGB or one channel."""
    image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image
    if image.shape[0] == 3:
        return np.clip(np.moveaxis(image, 0, -1), 0.0, 1.0)
    return image.mean(axis=0)  # one channel as it is; other counts averaged


def _clean_axes(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def plot_reconstructions(estimator, X, *, n_images=8, cmap="gray", fig=None):
    """Images above their reconstructions by an autoencoder.

    One column per image. For every view (one for single-view models) a row of
    the images as given and a row of :meth:`~skocc.ConvAEOneClass.reconstruct`,
    at the network's resolution. With ``normalize=None`` an image and its
    reconstruction share a colour scale, the image's own range, so brightness
    can be compared. Three-channel images are drawn as RGB; other channel
    counts are averaged into one grey image.

    Parameters
    ----------
    estimator : fitted ConvAEOneClass or MultiViewConvAEOneClass
    X : array-like
        Images in a layout accepted by the estimator; the first ``n_images``
        are drawn.
    n_images : int, default=8
        Number of columns.
    cmap : str, default="gray"
        Colour map of one-channel images.
    fig : matplotlib Figure or SubFigure or None, default=None
        Where to draw; ``None`` creates a figure.

    Returns
    -------
    fig : matplotlib Figure or SubFigure

    See Also
    --------
    plot_anomaly_maps : Where the reconstructions differ from the images.

    Examples
    --------
    >>> from skocc import ConvAEOneClass
    >>> from skocc.datasets import load_digits_images
    >>> from skocc.plotting import plot_reconstructions
    >>> X, digit = load_digits_images()
    >>> model = ConvAEOneClass(max_epochs=2, random_state=0).fit(X[digit == 0])
    >>> fig = plot_reconstructions(model, X[:5])
    >>> len(fig.axes)
    10
    """
    plt = _pyplot()
    _check_autoencoder(estimator, "reconstruct", "plot_reconstructions")
    X = _head(X, n_images)
    x_hat = estimator.reconstruct(X)  # checks it is fitted
    images, n_view_axes = _images_as_read(estimator, X)
    x_hat = _with_view_axis(x_hat, n_view_axes)
    n, n_views = images.shape[:2]
    fig, axes = _figure(plt, fig, 2 * n_views, n)
    shared_scale = getattr(estimator, "normalize", None) is None
    for v in range(n_views):
        for i in range(n):
            original, rebuilt = _displayable(images[i, v]), _displayable(x_hat[i, v])
            scale = {}
            if shared_scale and original.ndim == 2:
                scale = dict(vmin=float(original.min()), vmax=float(original.max()))
            axes[2 * v, i].imshow(original, cmap=cmap, **scale)
            axes[2 * v + 1, i].imshow(rebuilt, cmap=cmap, **scale)
        view = f"view {v}\n" if n_views > 1 else ""
        axes[2 * v, 0].set_ylabel(f"{view}image")
        axes[2 * v + 1, 0].set_ylabel(f"{view}reconstruction")
    for ax in axes.flat:
        _clean_axes(ax)
    return fig


def plot_anomaly_maps(
    estimator, X, *, n_images=8, alpha=0.5, cmap="inferno", vmax=None, titles=None, fig=None
):
    """Images with their per-pixel anomaly map laid over them.

    One column per image. For every view (one for single-view models) a row of
    the images and a row of the same images under a heat map of the model's
    ``score_map`` (brighter = more anomalous): the reconstruction error of
    :meth:`~skocc.ConvAEOneClass.score_map`, or the feature-map distance of
    :meth:`~skocc.TwoStageOneClass.score_map`. All maps share one colour
    scale, from 0 to ``vmax``, shown by a colour bar.

    Parameters
    ----------
    estimator : fitted ConvAEOneClass, MultiViewConvAEOneClass or TwoStageOneClass
    X : array-like
        Images in a layout accepted by the estimator; the first ``n_images``
        are drawn.
    n_images : int, default=8
        Number of columns.
    alpha : float, default=0.5
        Opacity of the heat map over the image.
    cmap : str, default="inferno"
        Colour map of the heat map.
    vmax : float or None, default=None
        Top of the colour scale; ``None`` uses the largest value shown. Pass the
        same value to several calls to compare their figures.
    titles : list of str or None, default=None
        One title per column, such as each image's score.
    fig : matplotlib Figure or SubFigure or None, default=None
        Where to draw; ``None`` creates a figure.

    Returns
    -------
    fig : matplotlib Figure or SubFigure

    See Also
    --------
    plot_reconstructions : What the model expected each image to look like.

    Examples
    --------
    >>> from skocc import ConvAEOneClass
    >>> from skocc.datasets import load_digits_images
    >>> from skocc.plotting import plot_anomaly_maps
    >>> X, digit = load_digits_images()
    >>> model = ConvAEOneClass(max_epochs=2, random_state=0).fit(X[digit == 0])
    >>> fig = plot_anomaly_maps(model, X[:5])
    >>> len(fig.axes)  # 2 rows of 5 images, and the colour bar
    11
    """
    plt = _pyplot()
    X = _head(X, n_images)
    two_stage = hasattr(estimator, "score_map") and hasattr(estimator, "features_")
    if not two_stage:
        _check_autoencoder(estimator, "score_map", "plot_anomaly_maps")
    maps = estimator.score_map(X)  # checks it is fitted
    # A two-stage model's features read the images' layout.
    images, n_view_axes = _images_as_read(estimator.features_ if two_stage else estimator, X)
    maps = maps if n_view_axes else maps[:, None]
    label = (
        "anomaly score per pixel (Mahalanobis distance)"
        if two_stage
        else "reconstruction error per pixel"
    )
    n, n_views = images.shape[:2]
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles needs one entry per image drawn ({n}); got {len(titles)}.")
    vmax = float(maps.max()) if vmax is None else float(vmax)
    fig, axes = _figure(plt, fig, 2 * n_views, n)
    heat = None
    for v in range(n_views):
        for i in range(n):
            image = _displayable(images[i, v])
            gray = "gray" if image.ndim == 2 else None
            axes[2 * v, i].imshow(image, cmap=gray)
            axes[2 * v + 1, i].imshow(image, cmap=gray)
            heat = axes[2 * v + 1, i].imshow(
                maps[i, v], cmap=cmap, alpha=alpha, vmin=0.0, vmax=vmax
            )
        view = f"view {v}\n" if n_views > 1 else ""
        axes[2 * v, 0].set_ylabel(f"{view}image")
        axes[2 * v + 1, 0].set_ylabel(f"{view}anomaly map")
    for i, title in enumerate(titles or []):
        axes[0, i].set_title(title, fontsize="small")
    for ax in axes.flat:
        _clean_axes(ax)
    fig.colorbar(heat, ax=axes, shrink=0.8, label=label)
    return fig


def plot_explanations(estimator, X, *, n_images=8, cmap="RdBu_r", steps=32, titles=None, fig=None):
    """Images, their anomaly maps and their explanations, column by column.

    Rows: the images; their :meth:`score_map` (when the estimator has one),
    as a heat map over the image; and their :meth:`explain` maps, on a
    diverging colour scale centred on 0 (red: pixels that raised the anomaly
    score, blue: pixels that lowered it), shared by all columns. Multi-view
    models show the first view.

    Parameters
    ----------
    estimator : fitted ConvAEOneClass, MultiViewConvAEOneClass or TwoStageOneClass
    X : array-like
        Images in a layout accepted by the estimator; the first ``n_images``
        are drawn.
    n_images : int, default=8
        Number of columns.
    cmap : str, default="RdBu_r"
        Diverging colour map of the explanations.
    steps : int, default=32
        Passed to :meth:`explain`.
    titles : list of str or None, default=None
        One title per column, such as each image's score.
    fig : matplotlib Figure or SubFigure or None, default=None
        Where to draw; ``None`` creates a figure.

    Returns
    -------
    fig : matplotlib Figure or SubFigure

    See Also
    --------
    plot_anomaly_maps : The anomaly maps alone, for every view.
    """
    plt = _pyplot()
    if not hasattr(estimator, "explain"):
        raise TypeError(
            "plot_explanations needs a fitted skocc detector with explain() (ConvAEOneClass, "
            f"MultiViewConvAEOneClass or TwoStageOneClass); got {type(estimator).__name__}."
        )
    X = _head(X, n_images)
    explanations = estimator.explain(X, steps=steps)  # checks it is fitted
    network = getattr(estimator, "features_", estimator)
    images, n_view_axes = _images_as_read(network, X)
    maps = estimator.score_map(X) if hasattr(estimator, "score_map") else None
    if n_view_axes:  # the first view
        explanations = explanations[:, 0]
        maps = None if maps is None else maps[:, 0]
    n = len(images)
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles needs one entry per image drawn ({n}); got {len(titles)}.")
    rows = ["image"] + (["anomaly map"] if maps is not None else []) + ["explanation"]
    fig, axes = _figure(plt, fig, len(rows), n)
    limit = float(np.abs(explanations).max()) or 1.0
    shown = None
    for i in range(n):
        image = _displayable(images[i, 0])
        gray = "gray" if image.ndim == 2 else None
        axes[0, i].imshow(image, cmap=gray)
        if maps is not None:
            axes[1, i].imshow(image, cmap=gray)
            axes[1, i].imshow(maps[i], cmap="inferno", alpha=0.5)
        shown = axes[-1, i].imshow(explanations[i], cmap=cmap, vmin=-limit, vmax=limit)
    for row, label in enumerate(rows):
        axes[row, 0].set_ylabel(label)
    for i, title in enumerate(titles or []):
        axes[0, i].set_title(title, fontsize="small")
    for ax in axes.flat:
        _clean_axes(ax)
    fig.colorbar(shown, ax=axes[-1, :], shrink=0.8, label="attribution to the anomaly score")
    return fig
