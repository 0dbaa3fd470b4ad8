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
from sklearn.covariance import ledoit_wolf

MAP_DENSITIES = ("location", "shared")


def fit_map_density(maps, kind):
    """Mean and precision of the Gaussian(s) of ``maps`` (n, d, h, w).

    Returns ``(mean, precision)`` of shapes ``(L, d)`` and ``(L, d, d)``,
    float64, with ``L = h * w`` for ``"location"`` and 1 for ``"shared"``.
    Covariances are shrunk by Ledoit and Wolf's rule, so that they are
    invertible even with fewer images than features.
    """
    maps = np.asarray(maps, dtype=np.float64)
    n, d, h, w = maps.shape
    vectors = maps.reshape(n, d, h * w).transpose(2, 0, 1)  # (h w, n, d)
    if kind == "shared":
        vectors = vectors.reshape(1, -1, d)
    elif kind != "location":
        raise ValueError(f"map_density must be one of {MAP_DENSITIES} or None; got {kind!r}.")
    mean = vectors.mean(axis=1)
    covariances = np.stack([ledoit_wolf(v, assume_centered=False)[0] for v in vectors])
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
