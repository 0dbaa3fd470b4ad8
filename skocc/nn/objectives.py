"""What each network is trained to minimise and scored with, from the same code.

One objective per model. Its ``forward`` is the per-sample training loss (the
training engine averages it over the batch); the autoencoders' objectives also
give the per-sample score terms and the per-pixel anomaly map of a forward
pass, built from the very functions the loss is built from, so that training
and scoring cannot drift apart. Torch only: the estimators in :mod:`skocc`
choose the objective and its arguments.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cutpaste import cutpaste_loss
from .losses import (
    feature_diversity,
    latent_norm,
    nt_xent,
    per_view_reconstruction_error,
    reconstruction_error,
    rotation_loss,
)

__all__ = [
    "SCORE_TERMS",
    "SCORE_TYPES",
    "AutoencoderObjective",
    "LatentGaussian",
    "MultiViewAutoencoderObjective",
    "SelfSupervisedObjective",
    "combine_score_terms",
]

#: The autoencoders' score types, and the score terms each one is made of
#: (see :func:`combine_score_terms` for how two are combined).
SCORE_TERMS = {
    "reconstruction": ("reconstruction",),
    "latent": ("latent",),
    "mahalanobis": ("mahalanobis",),
    "combined": ("reconstruction", "latent"),
    "reconstruction+mahalanobis": ("reconstruction", "mahalanobis"),
}
SCORE_TYPES = tuple(SCORE_TERMS)


class LatentGaussian(nn.Module):
    """Mahalanobis distances of latent codes under fitted Gaussians, in float64.

    One Gaussian per block of code entries: ``blocks`` is a sequence of
    ``(indices, location, whitening)``, where ``whitening`` is the matrix
    ``W`` with ``W W^T`` the inverse covariance, so that the distance of a
    code ``z`` is ``||(z[indices] - location) W||``. ``forward(z)`` returns
    one column per block, shape ``(n, n_blocks)``. Matrix products only: the
    graph of :func:`skocc.export_onnx` computes it as it is.
    """

    def __init__(self, blocks) -> None:
        super().__init__()
        self.n_blocks = len(blocks)
        for i, (indices, location, whitening) in enumerate(blocks):
            self.register_buffer(f"indices{i}", torch.as_tensor(indices, dtype=torch.long))
            self.register_buffer(f"location{i}", torch.as_tensor(location, dtype=torch.float64))
            self.register_buffer(f"whitening{i}", torch.as_tensor(whitening, dtype=torch.float64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # On the buffers' device: float64 where the network's has none (MPS).
        z = z.flatten(1).to(self.location0.device, torch.float64)
        distances = []
        for i in range(self.n_blocks):
            block = z.index_select(1, getattr(self, f"indices{i}"))
            white = (block - getattr(self, f"location{i}")) @ getattr(self, f"whitening{i}")
            distances.append(white.pow(2).sum(dim=1).sqrt())
        return torch.stack(distances, dim=1)


class AutoencoderObjective(nn.Module):
    """Targeted collapse of an autoencoder's ``(x, x_hat, z)`` output.

    Per sample: training loss ``||x - x_hat|| + beta * ||z||`` (both squared
    with ``norm="squared_l2"``); score terms ``(||x - x_hat||, ||z||)``; and a
    batch-level feature-diversity penalty on ``z``, 0 unless ``diversity`` is
    set and weighted.

    Parameters
    ----------
    beta : float, default=0.0
    norm : {"l2", "squared_l2"}, default="l2"
    diversity : {"direct", "det", "logdet"} or None, default=None
    diversity_weight : float, default=0.0
    diversity_gamma : float, default=1.0
    """

    def __init__(
        self,
        beta: float = 0.0,
        norm: str = "l2",
        diversity: str | None = None,
        diversity_weight: float = 0.0,
        diversity_gamma: float = 1.0,
    ) -> None:
        super().__init__()
        self.beta = beta
        self.norm = norm
        self.diversity = diversity
        self.diversity_weight = diversity_weight
        self.diversity_gamma = diversity_gamma

    def reconstruction(self, output) -> torch.Tensor:
        """``||x - x_hat||`` of every sample, shape ``(n,)``."""
        x, x_hat = output[:2]
        return reconstruction_error(x, x_hat, self.norm)

    def latent(self, output) -> torch.Tensor:
        """``||z||`` of every sample, shape ``(n,)``."""
        return latent_norm(output[2], self.norm)

    def forward(self, output) -> torch.Tensor:
        loss = self.reconstruction(output)
        if self.beta:
            loss = loss + self.beta * self.latent(output)
        return loss

    def batch_penalty(self, output):
        if self.diversity is None or not self.diversity_weight:
            return 0.0
        z = output[2]
        return self.diversity_weight * feature_diversity(z, self.diversity, self.diversity_gamma)

    def score_terms(self, output, gaussian=None) -> torch.Tensor:
        """``(n, 2)``: the reconstruction error and the latent norm of every sample.

        With a :class:`LatentGaussian` of ``b`` blocks, ``(n, 2 + b)``: its
        distances follow, and the terms are float64 on its device.
        """
        terms = torch.stack([self.reconstruction(output), self.latent(output)], dim=1)
        return _with_distances(terms, output, gaussian)

    def pixel_map(self, output, size) -> torch.Tensor:
        """Per-pixel reconstruction error at ``size`` (bilinear resizing), shape ``(..., H, W)``.

        The Euclidean norm over channels of ``x - x_hat`` (squared with
        ``norm="squared_l2"``). Tensor operations alone, so that
        :func:`skocc.export_onnx` puts this very computation into its graph.
        """
        x, x_hat = output[:2]
        err = (x - x_hat).pow(2).sum(dim=-3)
        err = err if self.norm == "squared_l2" else err.sqrt()
        if tuple(err.shape[-2:]) != tuple(size):
            flat = err.reshape(-1, 1, *err.shape[-2:])
            flat = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False)
            err = flat.reshape(*err.shape[:-2], *size)
        return err


class MultiViewAutoencoderObjective(AutoencoderObjective):
    """:class:`AutoencoderObjective` of a multi-view autoencoder, ``x`` of shape ``(n, V, C, H, W)``.

    The reconstruction term is the sum of the views' errors,
    ``sum_v ||x_v - x_hat_v||``, and ``z`` is the concatenation of the views'
    codes. The score terms are the total reconstruction error and ``||z||``,
    then every view's reconstruction error, then every view's ``||z_v||``
    (then, with a :class:`LatentGaussian`, its distances).
    """

    def reconstruction(self, output) -> torch.Tensor:
        return self.view_reconstruction(output).sum(dim=1)

    def view_reconstruction(self, output) -> torch.Tensor:
        """``||x_v - x_hat_v||`` of every view of every sample, shape ``(n, V)``."""
        x, x_hat = output[:2]
        return per_view_reconstruction_error(x, x_hat, self.norm)

    def score_terms(self, output, gaussian=None) -> torch.Tensor:
        x, _, z = output[:3]
        n, n_views = x.shape[:2]
        recon_v = self.view_reconstruction(output)
        latent_v = latent_norm(z.view(n * n_views, -1), self.norm).view(n, n_views)
        total = torch.stack([recon_v.sum(dim=1), self.latent(output)], dim=1)
        return _with_distances(torch.cat([total, recon_v, latent_v], dim=1), output, gaussian)


def _with_distances(terms, output, gaussian):
    if gaussian is None:
        return terms
    distances = gaussian(output[2])
    return torch.cat([terms.to(distances.device, torch.float64), distances], dim=1)


class SelfSupervisedObjective(nn.Module):
    """Per-sample pretext loss of :class:`skocc.nn.SelfSupervisedNet`'s output.

    Rotation: the cross-entropy of every rotated copy; CutPaste: the 3-way
    cross-entropy of every image of the pretext batch; contrastive: NT-Xent of
    every view.

    Parameters
    ----------
    temperature : float, default=0.2
        Temperature of NT-Xent.
    pretext : str or None, default=None
        ``"cutpaste"`` scores the classifier's output with
        :func:`skocc.nn.cutpaste.cutpaste_loss`; other classifying pretexts
        with :func:`~skocc.nn.losses.rotation_loss`.
    """

    def __init__(self, temperature: float = 0.2, pretext: str | None = None) -> None:
        super().__init__()
        self.temperature = temperature
        self.pretext = pretext

    def forward(self, output) -> torch.Tensor:
        prediction, targets = output
        if targets is not None:
            loss = cutpaste_loss if self.pretext == "cutpaste" else rotation_loss
            return loss(prediction, targets)
        return nt_xent(prediction, self.temperature)


def _softplus(x):
    """``log(1 + exp(x))`` of a NumPy array or a tensor, without overflow.

    The same elementary operations on both (the tensor form exports to ONNX).
    """
    if isinstance(x, torch.Tensor):
        return torch.relu(x) + torch.log(1 + torch.exp(-torch.abs(x)))
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def combine_score_terms(score_type, terms, mean, std):
    """The anomaly score of ``score_type`` from its terms.

    ``terms`` maps the name of every term (``"reconstruction"``, ``"latent"``,
    ``"mahalanobis"``) to ``(values, stats)``, where ``stats`` indexes the
    last axis of the means ``mean`` and standard deviations ``std`` of those
    values (1-d, or one row per sample). A score type of one term
    (:data:`SCORE_TERMS`) is that term itself. One of two standardises each
    term, ``z = (value - mean) / std``, and adds up ``softplus(z) ** 2``: a
    smooth one-sided square, near 0 for a term below its mean and near ``z ** 2``
    above it, so that an image is as anomalous as the length of its excess
    over the normal range on both terms, and a term that is unusually low does
    not cancel one that is unusually high. NumPy arrays in ``score_samples``,
    tensors in the graph of :func:`skocc.export_onnx`.
    """
    names = SCORE_TERMS[score_type]
    if len(names) == 1:
        return terms[names[0]][0]
    total = 0.0
    for name in names:
        values, stats = terms[name]
        total = total + _softplus((values - mean[..., stats]) / std[..., stats]) ** 2
    return total
