"""Private training engine: the skorch pieces behind every skocc estimator.

skorch runs the loop, keeps the History and drives the callbacks; this module
only customises it where skorch documents that it is safe to (``get_loss``, the
batch iterator, callbacks).
"""

from __future__ import annotations

import math

import torch
from skorch import NeuralNet
from skorch.callbacks import Callback
from skorch.dataset import Dataset
from torch import nn
from torch.utils.data import Subset

from .losses import autoencoder_loss, feature_diversity, nt_xent, rotation_loss


class TensorBatchIterator:
    """Batches of an in-memory tensor by slicing and fancy indexing.

    A drop-in replacement for skorch's ``DataLoader`` when the data is one tensor:
    a batch is one indexing operation, never a per-sample ``__getitem__`` and
    ``collate``. Batches keep the stored dtype (``uint8`` images travel to the
    device as bytes and are converted there). Yields ``(X_batch, None)``.

    Parameters
    ----------
    dataset : skorch.dataset.Dataset or torch.utils.data.Subset of one
        Whose ``X`` is a tensor.
    batch_size : int
    shuffle : bool, default=False
    generator : torch.Generator or None, default=None
        Source of the shuffling order (seeded by the estimator).
    """

    def __init__(self, dataset, batch_size, shuffle=False, generator=None):
        self.X, self.indices = _tensor_and_indices(dataset)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self):
        n = len(self.X) if self.indices is None else len(self.indices)
        return -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.X) if self.indices is None else len(self.indices)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        if order is not None and self.indices is not None:
            order = self.indices[order]
        elif order is None:
            order = self.indices
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            if order is None:
                yield self.X[start:stop], None
            else:
                yield self.X[order[start:stop]], None


def _tensor_and_indices(dataset):
    """The tensor behind ``dataset`` and the row indices it exposes (None = all)."""
    if isinstance(dataset, Subset):
        X, indices = _tensor_and_indices(dataset.dataset)
        sub = torch.as_tensor(dataset.indices, dtype=torch.long)
        return X, sub if indices is None else indices[sub]
    if isinstance(dataset, Dataset) and isinstance(dataset.X, torch.Tensor):
        return dataset.X, None
    raise TypeError(
        "TensorBatchIterator needs a skorch Dataset holding one tensor (or a Subset of "
        f"one); got {type(dataset).__name__}. Do not replace the estimator's dataset."
    )


class StopOnNonFiniteLoss(Callback):
    """Stop training with a clear error as soon as a batch loss is NaN or infinite."""

    def on_batch_end(self, net, batch=None, training=None, loss=None, **kwargs):
        if loss is None or math.isfinite(float(loss.detach())):
            return
        epoch = len(net.history)
        lr = getattr(net, "lr", None)
        raise FloatingPointError(
            f"The training loss became {float(loss.detach())} in epoch {epoch}. Try a lower "
            f"learning rate (lr={lr} now), input on a smaller scale (e.g. images in "
            "[0, 1], or normalize='image'), or a smaller beta."
        )


class AutoencoderCriterion(nn.Module):
    """Targeted-collapse loss of an autoencoder's ``(x, x_hat, z)`` output.

    ``forward`` returns one loss per sample; ``batch_penalty`` the batch-level
    feature-diversity term (0 unless ``diversity`` is set and weighted).
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

    def forward(self, output):
        x, x_hat, z = output[:3]
        return autoencoder_loss(x, x_hat, z, self.beta, self.norm)

    def batch_penalty(self, output):
        if self.diversity is None or not self.diversity_weight:
            return 0.0
        z = output[2]
        return self.diversity_weight * feature_diversity(z, self.diversity, self.diversity_gamma)


class SelfSupervisedCriterion(nn.Module):
    """Per-sample loss of :class:`skocc.nn.SelfSupervisedNet`'s pretext output.

    Rotation: the cross-entropy of every rotated copy; contrastive: NT-Xent of
    every view.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, output):
        prediction, targets = output
        if targets is not None:
            return rotation_loss(prediction, targets)
        return nt_xent(prediction, self.temperature)


class OneClassNet(NeuralNet):
    """skorch net whose criterion returns one loss per sample; training averages it.

    Labels do not exist in one-class training: the criterion sees only the
    module's output.
    """

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = self.criterion_(y_pred).mean()
        penalty = getattr(self.criterion_, "batch_penalty", None)
        return loss if penalty is None else loss + penalty(y_pred)
