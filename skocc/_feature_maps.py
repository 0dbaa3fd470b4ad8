"""Gaussian densities on spatial feature maps: the anomaly maps of two-stage models.

The encoder's activations before global pooling give one feature vector per
location of a coarse grid. A Gaussian is fitted to the training images'
vectors, one per location (``"location"``) or one for all locations
(``"shared"``); the Mahalanobis distance of a new image's vector at every
location, resized bilinearly to the image, is its anomaly map.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MAP_DENSITIES = ("location", "shared")


def ledoit_wolf_batched(X):
    """Ledoit-Wolf covariances of ``L`` centred samples at once: ``X`` (L, n, d) -> (L, d, d).

    scikit-learn's :func:`~sklearn.covariance.ledoit_wolf` formula, one
    shrinkage per ``X[l]``, without a Python loop over the ``L`` locations (and
    without its warning for a single sample, whose covariance is 0).
    """
    _, n, d = X.shape
    emp_cov = np.einsum("lni,lnj->lij", X, X) / n
    X2 = X**2
    trace = X2.sum(axis=(1, 2)) / n
    mu = trace / d
    beta_ = np.einsum("lni,lnj->l", X2, X2)
    delta_ = (emp_cov**2).sum(axis=(1, 2))
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2 * mu * trace + d * mu**2) / d
    beta = np.minimum(beta, delta)
    shrinkage = np.divide(beta, delta, out=np.zeros_like(beta), where=delta > 0)
    shrunk = (1 - shrinkage)[:, None, None] * emp_cov
    shrunk += (shrinkage * mu)[:, None, None] * np.eye(d)
    return shrunk


def fit_map_density(maps, kind):
    """Mean and precision of the Gaussian(s) of ``maps`` (n, d, h, w).

    Returns ``(mean, precision)`` of shapes ``(L, d)`` and ``(L, d, d)``,
    float64, with ``L = h * w`` for ``"location"`` and 1 for ``"shared"``.
    Covariances are shrunk by Ledoit and Wolf's rule, so that they are
    invertible even with fewer images than features, plus a ridge of
    ``1e-10 * max(trace, 1)`` for degenerate ones.
    """
    maps = np.asarray(maps, dtype=np.float64)
    n, d, h, w = maps.shape
    vectors = maps.reshape(n, d, h * w).transpose(2, 0, 1)  # (h w, n, d)
    if kind == "shared":
        vectors = vectors.reshape(1, -1, d)
    elif kind != "location":
        raise ValueError(f"map_density must be one of {MAP_DENSITIES} or None; got {kind!r}.")
    mean = vectors.mean(axis=1)
    covariances = ledoit_wolf_batched(vectors - mean[:, None, :])
    # Channels that never fire (ReLU) at a location, or a single training
    # image, give a singular covariance: the ridge of GaussianDensity keeps
    # it invertible.
    scale = np.maximum(np.trace(covariances, axis1=1, axis2=2), 1.0)
    covariances += 1e-10 * scale[:, None, None] * np.eye(d)
    return mean, np.linalg.inv(covariances)


def mahalanobis_maps(maps, mean, precision, size):
    """Mahalanobis distance of every location of ``maps`` (n, d, h, w), resized to ``size``.

    Returns an array of shape ``(n, *size)``, float32: the distance is
    computed in float64 on the ``h x w`` grid, then resized bilinearly.
    """
    maps = torch.as_tensor(np.asarray(maps), dtype=torch.float64)
    n, d, h, w = maps.shape
    diff = maps.reshape(n, d, h * w).permute(0, 2, 1) - torch.as_tensor(mean)  # (n, L, d)
    prec = torch.as_tensor(precision)
    if prec.shape[0] == 1:
        squared = torch.einsum("nld,de,nle->nl", diff, prec[0], diff)
    else:
        squared = torch.einsum("nld,lde,nle->nl", diff, prec, diff)
    dist = squared.clamp(min=0).sqrt().reshape(n, 1, h, w).float()
    if (h, w) != tuple(size):
        dist = F.interpolate(dist, size=tuple(size), mode="bilinear", align_corners=False)
    return dist[:, 0].numpy()
