"""Gradient attributions of a scalar-per-sample function of images: integrated gradients.

Torch only. The estimators' ``explain`` methods pass their anomaly score as a
function of the raw image tensor (:mod:`skocc._score_graph`) and turn the
attributions into maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["blurred_baseline", "integrated_gradients"]


def integrated_gradients(fn, x, baseline, steps=32):
    """Integrated gradients of ``fn`` at ``x`` from ``baseline`` (Sundararajan et al., 2017).

    ``(x - baseline) * mean_k grad fn(baseline + a_k (x - baseline))`` with the
    ``steps`` midpoints ``a_k = (k + 0.5) / steps`` of ``[0, 1]``: a Riemann
    sum whose total over the pixels of a sample approaches
    ``fn(x) - fn(baseline)`` as ``steps`` grows (completeness).

    Parameters
    ----------
    fn : callable
        Maps a float batch of the shape of ``x`` to one value per sample,
        shape ``(n,)``; differentiable.
    x, baseline : Tensor of the same shape ``(n, ...)``, floating point
    steps : int, default=32

    Returns
    -------
    Tensor of the shape of ``x``
        Per-element attributions (signed), without gradient history.
    """
    if x.shape != baseline.shape:
        raise ValueError(f"x and baseline must have the same shape; got {tuple(x.shape)} and {tuple(baseline.shape)}.")
    if int(steps) < 1:
        raise ValueError(f"steps must be a positive int; got {steps!r}.")
    x, baseline = x.detach(), baseline.detach()
    delta = x - baseline
    total = torch.zeros_like(x)
    for k in range(int(steps)):
        point = (baseline + (k + 0.5) / steps * delta).requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(fn(point).sum(), point)
        total += grad
    return delta * total / steps


def blurred_baseline(x, sigma):
    """``x`` blurred by a Gaussian of ``sigma`` pixels over its last two axes (reflect padding).

    A baseline that keeps an image's illumination and large structures and
    removes small details, such as a scratch or a spot: the attribution
    from it to the image then falls on the details.
    """
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    shape = x.shape
    flat = x.reshape(-1, 1, *shape[-2:])
    pad_h, pad_w = min(radius, shape[-2] - 1), min(radius, shape[-1] - 1)
    out = F.pad(flat, (pad_w, pad_w, pad_h, pad_h), mode="reflect") if pad_h and pad_w else flat
    k_h = kernel[radius - pad_h : radius + pad_h + 1] if pad_h else kernel[radius : radius + 1]
    k_w = kernel[radius - pad_w : radius + pad_w + 1] if pad_w else kernel[radius : radius + 1]
    out = F.conv2d(out, (k_h / k_h.sum()).view(1, 1, -1, 1))
    out = F.conv2d(out, (k_w / k_w.sum()).view(1, 1, 1, -1))
    return out.reshape(shape)
