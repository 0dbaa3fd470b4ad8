"""Per-sample losses and anomaly scores.

Every function takes batched tensors and returns one value per sample, shape
``(n,)``. Training averages them over the batch and scoring reports them as they
are, so a model is scored with exactly what it was trained to minimise.
"""

from __future__ import annotations

import torch

__all__ = ["NORMS", "latent_norm", "reconstruction_error", "autoencoder_loss"]

#: Accepted values of the ``norm`` parameter.
NORMS = ("l2", "squared_l2")


def _norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    v = v.flatten(1)
    if norm == "l2":
        return torch.linalg.vector_norm(v, dim=1)
    if norm == "squared_l2":
        return v.pow(2).sum(dim=1)
    raise ValueError(f"norm must be one of {NORMS}; got {norm!r}.")


def latent_norm(z: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Distance of every latent code from the origin: ``||z||`` or ``||z||^2``."""
    return _norm(z, norm)


def reconstruction_error(
    x: torch.Tensor, x_hat: torch.Tensor, norm: str = "l2"
) -> torch.Tensor:
    """``||x - x_hat||`` (or its square) over all channels and pixels of each sample."""
    return _norm(x - x_hat, norm)


def autoencoder_loss(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    z: torch.Tensor,
    beta: float,
    norm: str = "l2",
) -> torch.Tensor:
    """Targeted-collapse loss of every sample: reconstruction + ``beta`` * latent norm."""
    loss = reconstruction_error(x, x_hat, norm)
    if beta:
        loss = loss + beta * latent_norm(z, norm)
    return loss
