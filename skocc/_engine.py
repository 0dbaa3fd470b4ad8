"""Private training engine: the skorch pieces behind every skocc estimator.

skorch runs the loop, keeps the History and drives the callbacks; this module
only customises it where skorch documents that it is safe to (``get_loss``, the
batch iterator, callbacks), and adds what a fitted net needs to serve an
estimator: seeded initialisation and a batch mapper over images
(:meth:`OneClassNet.map_batches`, in the spirit of skorch's ``forward_iter``).
The device, seed and memory helpers they use are in :mod:`skocc._runtime`.
"""

from __future__ import annotations

import contextlib
import copy
import math

import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, ProgressBar
from skorch.dataset import Dataset, unpack_data
from skorch.utils import TeeGenerator
from torch.utils.data import Subset

from ._runtime import PRECISIONS, device_resident


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

    def initialize_seeded(self, seed):
        """``initialize()`` with weights drawn from ``seed``; the global torch RNG is untouched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.initialize()
        if torch.device(self.device).type == "cuda":
            # NHWC is the layout cuDNN's convolutions run fastest in on tensor
            # cores; on the CPU the module keeps torch's default layout.
            self.module_.to(memory_format=torch.channels_last)
        return self

    def map_batches(self, X, fn, dtype=torch.float64):
        """Apply ``fn(module, batch_on_device)`` to every batch of ``X``; collect on the CPU.

        Runs the module in eval mode without gradients, under the net's
        ``precision``; returns an ndarray of ``dtype``. ``X`` (a tensor) stays
        in its dtype (no float32 copy of ``uint8`` images) and goes to the
        device batch by batch unless it is small
        (:func:`skocc._runtime.device_resident`).
        """
        module = self.module_
        was_training = module.training
        module.eval()
        X = device_resident(X, self.device)
        dataset = self.get_dataset(X)
        # One array of the final size, filled batch by batch: a list of many
        # small per-batch tensors, each allocated between the batches' large
        # activations, fragmented the heap so that resident memory grew with
        # the number of images (295 MiB more for 100,000 images of 28 x 28).
        out, start = None, 0
        try:
            with torch.no_grad(), self.autocast():
                for Xb, _ in self.get_iterator(dataset, training=False):
                    result = fn(module, Xb.to(self.device, non_blocking=True))
                    if out is None:
                        out = torch.empty((len(X),) + tuple(result.shape[1:]), dtype=dtype)
                    out[start : start + len(result)] = result
                    start += len(result)
        finally:
            module.train(was_training)
        return out.numpy()

    def n_complete_epochs(self):
        """Epochs that ran to the end (an interrupted one has no ``train_loss``)."""
        return sum(1 for row in self.history if "train_loss" in row)

    def interruption(self):
        """``(complete epochs, batches of the next)`` if training was interrupted, else None.

        skorch swallows ``KeyboardInterrupt``; this tells what was reached.
        """
        last = self.history[-1] if len(self.history) else None
        if last is not None and "train_loss" in last:
            return None
        return self.n_complete_epochs(), len(last["batches"]) if last is not None else 0

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


def build_net(
    net_class,
    *,
    order_seed,
    device,
    precision,
    lr,
    weight_decay,
    max_epochs,
    batch_size,
    verbose,
    callbacks,
    net_params,
):
    """The skorch net of an estimator, not yet initialised.

    ``net_params`` holds the module and criterion (from the estimator) and the
    user's extra skorch settings, which win over the defaults built here; the
    shuffling order of training batches is drawn from ``order_seed``.
    """
    generator = torch.Generator().manual_seed(order_seed)
    all_callbacks = [("stop_on_non_finite_loss", StopOnNonFiniteLoss())]
    if verbose >= 2:
        all_callbacks.append(("progress_bar", ProgressBar()))
    all_callbacks += copy.deepcopy(callbacks or [])
    pin_memory = torch.device(device).type == "cuda"
    params = dict(
        optimizer=torch.optim.Adam,
        lr=lr,
        optimizer__weight_decay=weight_decay,
        max_epochs=max_epochs,
        batch_size=batch_size,
        train_split=None,
        iterator_train=TensorBatchIterator,
        iterator_train__shuffle=True,
        iterator_train__generator=generator,
        iterator_train__pin_memory=pin_memory,
        iterator_valid=TensorBatchIterator,
        iterator_valid__pin_memory=pin_memory,
        callbacks=all_callbacks,
        device=device,
        precision=precision,
        verbose=int(verbose >= 1),
    )
    params.update(net_params)
    return net_class(**params)


# skorch settings that an estimator's own parameters control.
RESERVED_NET_PARAMS = {
    "callbacks": "callbacks",
    "device": "device",
    "batch_size": "batch_size",
    "max_epochs": "max_epochs",
    "lr": "lr",
    "verbose": "verbose",
    "optimizer__weight_decay": "weight_decay",
    "precision": "precision",
}


def check_net_params(callbacks, net_params):
    """Refuse callbacks that are not skorch's and ``net_params`` that override the estimator."""
    for i, callback in enumerate(callbacks or []):
        named = isinstance(callback, tuple) and len(callback) == 2 and isinstance(callback[0], str)
        item = callback[1] if named else callback
        # skorch also takes a Callback class, which it instantiates.
        is_class = isinstance(item, type) and issubclass(item, Callback)
        if not (isinstance(item, Callback) or is_class):
            raise TypeError(
                "callbacks must be a list of skorch callbacks (instances or subclasses "
                "of skorch.callbacks.Callback) or (name, callback) pairs; item "
                f"{i} is {callback!r}."
            )
    optimizer = (net_params or {}).get("optimizer")
    if optimizer is not None and not (
        isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)
    ):
        raise TypeError(
            "net_params['optimizer'] must be a torch optimizer class such as "
            f"torch.optim.SGD (skorch builds it with lr); got {optimizer!r}."
        )
    for key in net_params or {}:
        if key in RESERVED_NET_PARAMS:
            raise ValueError(
                f"net_params may not set {key!r}: use the estimator parameter "
                f"{RESERVED_NET_PARAMS[key]!r} instead."
            )
        if key.split("__")[0] in ("module", "criterion", "net_class", "iterator_train", "iterator_valid"):
            raise ValueError(
                f"net_params may not set {key!r}: the estimator builds the network, its loss "
                "and its batch iterator from its own parameters."
            )
