"""``explain``: integrated-gradient maps of a fitted detector's anomaly score.

The anomaly score is differentiated through the same torch modules that
:func:`skocc.export_onnx` traces (:mod:`skocc._score_graph`), so the
explanation is of exactly the score that ``score_samples`` returns.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch

from .images import read_as_fitted
from .nn.attribution import blurred_baseline, integrated_gradients

#: Accepted values of ``explain``'s ``baseline``.
BASELINES = ("blur", "zeros")


def check_explain_arguments(steps, baseline):
    if not isinstance(steps, Integral) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int; got {steps!r}.")
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}; got {baseline!r}.")


def blur_sigma(height, width):
    """The blurred baseline's Gaussian: a tenth of the shorter side, at least 1 pixel."""
    return max(1.0, min(height, width) / 10.0)


def explain_images(graph, network_estimator, X, *, steps, baseline):
    """Integrated gradients of ``-graph(x)[0]`` (the anomaly score), summed over channels.

    ``graph`` maps a float batch in the layout ``read_as_fitted`` returns to
    ``(score, ...)``; it runs on the fitted network's device, batch by batch
    (``batch_size`` of ``network_estimator``), in eval mode.

    Returns an ndarray of float32 of shape ``(n, H, W)``, or ``(n, V, H, W)``
    for multi-view samples.
    """
    images = read_as_fitted(network_estimator, X)
    device = torch.device(network_estimator.net_.device)
    graph = graph.to(device).eval()
    height, width = images.shape[-2:]
    sigma = blur_sigma(height, width)
    out = np.empty(images.shape[:-3] + images.shape[-2:], dtype=np.float32)
    batch = int(network_estimator.batch_size)

    def anomaly(x):
        return -graph(x)[0]

    for start in range(0, len(images), batch):
        xb = torch.from_numpy(np.ascontiguousarray(images[start : start + batch])).to(device)
        # uint8 as the network scales it, so the gradient is per unit of [0, 1].
        xb = xb.float() / 255.0 if xb.dtype == torch.uint8 else xb.float()
        base = blurred_baseline(xb, sigma) if baseline == "blur" else torch.zeros_like(xb)
        attributions = integrated_gradients(anomaly, xb, base, steps=steps)
        out[start : start + len(xb)] = attributions.sum(dim=-3).cpu().numpy()
    return out


EXPLAIN_DOC = """Where each image made the detector call it anomalous: one map per image.

        Integrated gradients (Sundararajan et al., ICML 2017) of the anomaly
        score ``-score_samples`` with respect to the image's pixels, summed
        over channels, at the input resolution: positive where a pixel raised
        the anomaly score relative to the baseline, negative where it lowered
        it. The maps of an image add up to about ``score_samples(baseline) -
        score_samples(image)`` (closer with more ``steps``). The gradient
        runs through the whole model, preprocessing and resizing included,
        on the model's device, ``batch_size`` images at a time; each costs
        ``steps`` forward and backward passes.

        Unlike :meth:`score_map`, which shows where the model finds an image
        unlike the normal ones (a property of the model's representation, e.g.
        the reconstruction error), an explanation shows which pixels moved
        the score that ``predict`` thresholds: use the map to locate a defect,
        the explanation to see why a decision was made.

        Parameters
        ----------
        X : array-like
            Images in a layout accepted by ``fit``, of the shape seen in ``fit``.
        steps : int, default=32
            Points of the Riemann sum along the path from the baseline.
        baseline : {"blur", "zeros"}, default="blur"
            The image the attribution starts from: ``"blur"`` the image
            blurred by a Gaussian of a tenth of its shorter side (keeps
            illumination and large shapes, removes small details such as a
            spot or a scratch); ``"zeros"`` a black image.

        Returns
        -------
        maps : ndarray of shape (n_samples, H, W), dtype float32
            ``(n_samples, V, H, W)`` for multi-view input. Higher = more
            responsible for the anomaly.
"""
