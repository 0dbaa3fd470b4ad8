"""Batched, on-device image preprocessing shared by every skocc network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ImagePreprocess(nn.Module):
    """Turn a raw batch into the network's input: scale, resize, normalise.

    Runs inside the network, so it happens on the device, once per batch, and is
    applied identically when training, scoring and encoding.

    ``uint8`` batches are scaled to [0, 1]; every other dtype is used as given
    (:func:`skocc.images.check_images` has already turned ``uint16`` and other
    integer images into ``uint8`` or scaled ``float32``).
    Deciding by dtype (not by what was seen in ``fit``) keeps the rule the same for
    every call: a model fitted on ``uint8`` images scores float images in [0, 1]
    consistently.

    Parameters
    ----------
    size : tuple of (int, int) or None
        ``(height, width)`` to resize to, antialiased bilinear; ``None`` keeps
        the input size.
    normalize : {None, "image"}
        ``"image"`` standardises every image by its own mean and standard
        deviation over all channels and pixels (global contrast normalisation).
    eps : float
        Floor of the standard deviation, so constant images map to zeros.
    """

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        normalize: str | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if normalize not in (None, "image"):
            raise ValueError(f"normalize must be None or 'image'; got {normalize!r}.")
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.normalize = normalize
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(
                x, size=self.size, mode="bilinear", align_corners=False, antialias=True
            )
        if self.normalize == "image":
            dims = tuple(range(1, x.ndim))
            mean = x.mean(dim=dims, keepdim=True)
            std = x.std(dim=dims, keepdim=True, unbiased=False)
            x = (x - mean) / std.clamp_min(self.eps)
        return x

    def extra_repr(self) -> str:
        return f"size={self.size}, normalize={self.normalize!r}"
