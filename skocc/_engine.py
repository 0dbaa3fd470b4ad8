"""Private training engine: the skorch pieces behind every skocc estimator.

skorch runs the loop, keeps the History and drives the callbacks; this module
only customises it where skorch documents that it is safe to (``get_loss``, the
batch iterator, callbacks).
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
from skorch import NeuralNet
from skorch.callbacks import Callback
from skorch.dataset import Dataset, unpack_data
from skorch.utils import TeeGenerator
from torch import nn
from torch.utils.data import Subset

from .losses import autoencoder_loss, feature_diversity, nt_xent, rotation_loss
from .nn.cutpaste import cutpaste_loss

#: Accepted values of the ``precision`` parameter and the autocast dtype of each.
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: Largest input (in bytes) that is copied to a CUDA device whole instead of batch by batch.
DEVICE_RESIDENT_MAX_BYTES = 2**30


class TensorBatchIterator:
    """Batches of an in-memory tensor by slicing and fancy indexing.

    A drop-in replacement for skorch's ``DataLoader`` when the data is one tensor:
    a batch is one indexing operation, never a per-sample ``__getitem__`` and
    ``collate``. Batches keep the stored dtype (``uint8`` images travel to the
    device as bytes and are converted there). Yields ``(X_batch, None)``.

    Parameters
    ----------
    dataset : skorch.dataset.Dataset or torch.utils.data.Subset of one
        Whose ``X`` is a tensor, on the CPU or already on the device.
    batch_size : int
    shuffle : bool, default=False
    generator : torch.Generator or None, default=None
        Source of the shuffling order (seeded by the estimator).
    pin_memory : bool, default=False
        Gather CPU batches straight into page-locked memory, so that the copy
        to a CUDA device can be asynchronous (``non_blocking=True``). Ignored
        for data already on a device and when CUDA is not available.
    """

    def __init__(self, dataset, batch_size, shuffle=False, generator=None, pin_memory=False):
        self.X, self.indices = _tensor_and_indices(dataset)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator
        self.pin_memory = pin_memory

    def __len__(self):
        n = len(self.X) if self.indices is None else len(self.indices)
        return -(-n // self.batch_size)

    def __iter__(self):
        X = self.X
        n = len(X) if self.indices is None else len(self.indices)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        if order is not None and self.indices is not None:
            order = self.indices[order]
        elif order is None:
            order = self.indices
        if order is not None and order.device != X.device:
            order = order.to(X.device)  # once per epoch, not once per batch
        pin = self.pin_memory and X.device.type == "cpu" and torch.cuda.is_available()
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            if order is None:
                batch = X[start:stop]
                yield (batch.pin_memory() if pin else batch), None
            elif pin:
                rows = order[start:stop]
                out = torch.empty((len(rows),) + X.shape[1:], dtype=X.dtype, pin_memory=True)
                yield torch.index_select(X, 0, rows, out=out), None
            else:
                yield X[order[start:stop]], None


def device_resident(X, device):
    """``X`` moved whole to a CUDA ``device`` when it is small, else ``X`` itself.

    Small means at most :data:`DEVICE_RESIDENT_MAX_BYTES` (1 GiB) and at most a
    quarter of the device's free memory: such data costs one copy per ``fit``
    or scoring call instead of one per batch and epoch. Larger data stays where
    it is and travels batch by batch (pinned, asynchronous). Data for the CPU
    and other devices is returned unchanged.
    """
    device = torch.device(device)
    if device.type != "cuda" or X.device == device:
        return X
    nbytes = X.element_size() * X.nelement()
    free, _ = torch.cuda.mem_get_info(device)
    if nbytes <= min(DEVICE_RESIDENT_MAX_BYTES, free // 4):
        return X.to(device)
    return X


def available_memory(device):
    """Bytes that ``device`` can still allocate, or None where that is unknown.

    CUDA: the free memory torch reports. CPU: the kernel's ``MemAvailable``
    (free memory plus caches it can drop), capped by the cgroup limit of a
    container; None on systems without ``/proc`` (the checks that use it are
    then skipped, not guessed).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit.isdigit() and available is not None:
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available


def check_precision(precision, device):
    """Raise a ValueError when torch cannot autocast to ``precision`` on ``device``."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return
    device_type = torch.device(device).type
    with warnings.catch_warnings():
        # torch only warns (and turns autocast off) for a dtype it cannot autocast to.
        warnings.simplefilter("error")
        try:
            torch.autocast(device_type, dtype=dtype)
        except (RuntimeError, UserWarning, ValueError) as exc:
            raise ValueError(
                f"precision={precision!r} needs torch.autocast to {dtype} on {device_type!r}, "
                f"which torch {torch.__version__} does not support ({exc}). Use "
                "precision='float32', or another precision or device."
            ) from exc


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
        # skorch has just recorded the batch loss as a float: reading it back
        # costs no second device synchronisation, as float(loss) would.
        key = "train_loss" if training else "valid_loss"
        value = net.history[-1]["batches"][-1].get(key) if len(net.history) else None
        if value is None or math.isfinite(value):
            return
        epoch = len(net.history)
        lr = getattr(net, "lr", None)
        raise FloatingPointError(
            f"The training loss became {value} in epoch {epoch}. Try a lower "
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

    Rotation: the cross-entropy of every rotated copy; CutPaste: the 3-way
    cross-entropy of every image of the pretext batch; contrastive: NT-Xent of
    every view.
    """

    def __init__(self, temperature: float = 0.2, pretext: str | None = None) -> None:
        super().__init__()
        self.temperature = temperature
        self.pretext = pretext

    def forward(self, output):
        prediction, targets = output
        if targets is not None:
            loss = cutpaste_loss if self.pretext == "cutpaste" else rotation_loss
            return loss(prediction, targets)
        return nt_xent(prediction, self.temperature)


class OneClassNet(NeuralNet):
    """skorch net whose criterion returns one loss per sample; training averages it.

    Labels do not exist in one-class training: the criterion sees only the
    module's output.

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`skorch.NeuralNet`.
    precision : {"float32", "bfloat16", "float16"}, default="float32"
        ``torch.autocast`` dtype of the module's forward pass (training and
        inference); outputs are returned as float32, so losses and scores are
        reduced in float32. ``"float16"`` scales the loss with a
        ``torch.amp.GradScaler`` so that small gradients do not underflow.
    """

    def __init__(self, module, *args, precision="float32", **kwargs):
        super().__init__(module, *args, **kwargs)
        self.precision = precision

    def autocast(self):
        """The autocast context of ``precision`` on the net's device (a no-op for float32)."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=dtype)

    def infer(self, x, **fit_params):
        if isinstance(x, torch.Tensor):
            # Asynchronous when the batch is pinned (see TensorBatchIterator).
            x = x.to(self.device, non_blocking=True)
        if PRECISIONS[self.precision] is None:
            return super().infer(x, **fit_params)
        with self.autocast():
            y_pred = super().infer(x, **fit_params)
        return _to_float32(y_pred)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = self.criterion_(y_pred).mean()
        penalty = getattr(self.criterion_, "batch_penalty", None)
        extra = 0.0 if penalty is None else penalty(y_pred)
        # No tensor addition per batch for a penalty that is off (a plain 0.0).
        return loss + extra if isinstance(extra, torch.Tensor) or extra else loss

    def train_step_single(self, batch, **fit_params):
        # skorch's step, with two changes: the walk over the module tree that
        # sets train mode runs only when some module is not in train mode
        # (skorch repeats it before every batch; during fit only evaluation
        # switches modes, and it switches the top-level modules), and the loss
        # is scaled for float16.
        if not all(getattr(self, name + "_").training for name in self._modules + self._criteria):
            self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        scaler = self._grad_scaler()
        (loss if scaler is None else scaler.scale(loss)).backward()
        return {"loss": loss, "y_pred": y_pred}

    def train_step(self, batch, **fit_params):
        scaler = self._grad_scaler()
        if scaler is None:
            return super().train_step(batch, **fit_params)
        # skorch's step without the optimizer closure, which GradScaler does not
        # support; callbacks see unscaled gradients (e.g. for clipping).
        optimizers = [getattr(self, name + "_") for name in self._optimizers]
        self._zero_grad_optimizer()
        step = self.train_step_single(batch, **fit_params)
        for optimizer in optimizers:
            scaler.unscale_(optimizer)
        self.notify(
            "on_grad_computed",
            named_parameters=TeeGenerator(self.get_all_learnable_params()),
            batch=batch,
            training=True,
        )
        for optimizer in optimizers:
            scaler.step(optimizer)
        scaler.update()
        return step

    def _grad_scaler(self):
        """The net's GradScaler for float16 training (created once), else None."""
        if self.precision != "float16":
            return None
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None:
            scaler = self.grad_scaler_ = torch.amp.GradScaler(torch.device(self.device).type)
        return scaler


def _to_float32(output):
    """Floating-point tensors of a (nested) module output as float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, (tuple, list)):
        return type(output)(_to_float32(o) for o in output)
    return output
