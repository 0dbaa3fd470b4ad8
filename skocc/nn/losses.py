"""Per-sample losses and anomaly scores.

Every function takes batched tensors and returns one value per sample, shape
``(n,)``. Training averages them over the batch and scoring reports them as they
are, so a model is scored with exactly what it was trained to minimise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "DIVERSITIES",
    "NORMS",
    "autoencoder_loss",
    "feature_diversity",
    "latent_norm",
    "nt_xent",
    "per_view_reconstruction_error",
    "reconstruction_error",
    "rotation_loss",
]

#: Accepted values of the ``norm`` parameter.
NORMS = ("l2", "squared_l2")

#: Accepted values of the ``diversity`` parameter (besides None).
DIVERSITIES = ("direct", "det", "logdet")


def _norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    # Reduced in float32 even when autocast computed v in bfloat16 or float16:
    # a sum over thousands of pixels would lose the small differences that
    # separate anomalies. A no-op for float32 input.
    v = v.flatten(1).float()
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


def per_view_reconstruction_error(
    x: torch.Tensor, x_hat: torch.Tensor, norm: str = "l2"
) -> torch.Tensor:
    """Reconstruction error of every view of every sample, shape ``(n, V)``.

    ``x`` and ``x_hat`` have shape ``(n, V, C, H, W)``.
    """
    n, n_views = x.shape[:2]
    return reconstruction_error(x.flatten(0, 1), x_hat.flatten(0, 1), norm).view(n, n_views)


def autoencoder_loss(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    z: torch.Tensor,
    beta: float,
    norm: str = "l2",
) -> torch.Tensor:
    """Targeted-collapse loss of every sample: reconstruction + ``beta`` * latent norm.

    With a view axis (``x`` of shape ``(n, V, C, H, W)``) the reconstruction
    term is the sum of the views' errors, ``sum_v ||x_v - x_hat_v||``, and ``z``
    is the concatenation of the views' codes.
    """
    if x.ndim == 5:
        loss = per_view_reconstruction_error(x, x_hat, norm).sum(dim=1)
    else:
        loss = reconstruction_error(x, x_hat, norm)
    if beta:
        loss = loss + beta * latent_norm(z, norm)
    return loss


def feature_diversity(
    features: torch.Tensor, kind: str, gamma: float = 1.0, ridge: float = 1e-4
) -> torch.Tensor:
    """WLD-Reg feature-diversity penalty of a layer's units over one batch (a scalar).

    The one batch-level term in this module: it compares units, not samples.
    Following the description of Laakom et al. (AAAI 2023), unit ``n``'s
    activations over the batch form a vector ``phi_n`` (column ``n`` of
    ``features``, shape ``(batch, units)``); the similarity of two units is
    ``s_nm = exp(-gamma * ||phi_n - phi_m||^2 / batch)`` and ``S = [s_nm]``.
    Dividing by the batch size (the paper's formula has no such factor) keeps
    ``gamma`` meaning the same for every ``batch_size`` and for a smaller last
    batch. Minimising the penalty makes units less alike:

    - ``"direct"``: ``sum_{n != m} s_nm``;
    - ``"det"``: ``-det(S)``;
    - ``"logdet"``: ``-log det(S + ridge * I)``, computed with ``slogdet``.

    ``det(S)`` of many units underflows towards 0 (and so does its gradient);
    prefer ``"logdet"`` or ``"direct"`` for wide layers.
    """
    phi = features.flatten(1).t()  # (units, batch)
    gram = phi @ phi.t()
    sq_norms = gram.diagonal()
    # Exact zeros on the diagonal; clamp the rounding error of the expansion.
    off_diagonal = 1.0 - torch.eye(len(phi), dtype=phi.dtype, device=phi.device)
    sq_dist = (sq_norms[:, None] + sq_norms[None, :] - 2 * gram).clamp_min(0) * off_diagonal
    similarity = torch.exp(-gamma * sq_dist / phi.shape[1])
    if kind == "direct":
        return similarity.sum() - similarity.diagonal().sum()
    if kind == "det":
        return -torch.linalg.det(similarity)
    if kind == "logdet":
        eye = torch.eye(similarity.shape[0], dtype=similarity.dtype, device=similarity.device)
        return -torch.linalg.slogdet(similarity + ridge * eye).logabsdet
    raise ValueError(f"diversity must be one of {DIVERSITIES}; got {kind!r}.")


def rotation_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the predicted quarter turn, one value per rotated copy."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def nt_xent(z: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent (SimCLR's normalised temperature-scaled cross-entropy), per anchor.

    Parameters
    ----------
    z : Tensor of shape (2 m, d)
        L2-normalised embeddings; ``z[i]`` and ``z[i + m]`` are the two views
        of instance ``i``.
    temperature : float

    Returns
    -------
    Tensor of shape (2 m,)
        For every anchor, ``-log`` of the softmax probability of its positive
        among the other ``2 m - 1`` embeddings.
    """
    n = z.shape[0]
    if n % 2 or n < 2:
        raise ValueError(f"nt_xent needs an even number (>= 2) of embeddings; got {n}.")
    m = n // 2
    z = z.float()
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.arange(n, device=z.device).roll(m)
    return F.cross_entropy(sim, positives, reduction="none")
