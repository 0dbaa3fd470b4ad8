"""The torch runtime of skocc's estimators: devices, seeds, tensors and memory.

Torch only (no scikit-learn, no skorch), so that both the training engine
(:mod:`skocc._engine`) and the torch-based detectors (:mod:`skocc.detectors`)
can use it without importing each other.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

#: Accepted values of the ``precision`` parameter and the autocast dtype of each.
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: Largest input (in bytes) that is copied to a CUDA device whole instead of batch by batch.
DEVICE_RESIDENT_MAX_BYTES = 2**30


def resolve_device(device):
    """``"auto"`` becomes ``"cuda"`` when CUDA is available, else ``"cpu"``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be 'auto' or a torch device string such as 'cpu' or 'cuda:0'; "
            f"got {device!r}."
        ) from exc
    if kind == "meta":
        # Tensors on torch's meta device have shapes but no values: a model
        # "trained" there has no weights to score with.
        raise ValueError(
            "device='meta' holds no data, so nothing can be trained or scored on it; "
            "use device='auto', 'cpu' or a CUDA device such as 'cuda:0'."
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available (torch "
            f"{torch.__version__}, built {'with' if torch.backends.cuda.is_built() else 'without'} "
            "CUDA). Use device='auto' or 'cpu', or install a CUDA build of torch."
        )
    return device


@contextlib.contextmanager
def forked_torch_rng(device, seed):
    """Seed torch's RNGs (CPU, and ``device``'s if CUDA) inside; restore them after."""
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if (
        device.type == "cuda"
    ) else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def as_tensor(images):
    """A tensor view of ``images``; read-only arrays are shared, never written to."""
    with warnings.catch_warnings():
        # torch warns that it cannot protect read-only memory; skocc only reads it.
        warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)
        return torch.from_numpy(images)


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


def network_footprint(module_class, module_kwargs, batch_shape, dtype):
    """Parameter count and training activation bytes of one batch, traced on the meta device.

    ``module_class(**module_kwargs)`` is built on torch's meta device (shapes
    only, no allocation) and run in training mode on an empty batch of
    ``batch_shape`` and ``dtype``; the outputs of every leaf layer are summed.
    """
    with torch.device("meta"):
        module = module_class(**module_kwargs)
    n_params = sum(p.numel() for p in module.parameters())
    total = 0

    def count(layer, inputs, output):
        nonlocal total
        for out in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(out, torch.Tensor):
                total += out.numel() * out.element_size()

    leaves = [m for m in module.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        module.train()
        module(torch.empty(batch_shape, dtype=dtype, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return n_params, total
