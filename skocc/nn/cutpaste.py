"""CutPaste self-supervision (Li, Sohn, Yoon and Pfister, CVPR 2021), batched in torch.

A classifier learns to tell normal images from two kinds of synthetic local
defects made from the images themselves: a rectangular patch cut from one
place and pasted at another ("cut-paste"), and a thin rotated sliver pasted
the same way ("scar"). The anomalies it then detects are local irregularities
of texture and structure, as in surface inspection.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

#: Class labels of the 3-way pretext.
NORMAL, CUT_PASTE, SCAR = 0, 1, 2

#: Image side (pixels) that the paper's scar sizes are given for.
REFERENCE_SIDE = 256


class CutPasteBatch(NamedTuple):
    """What :func:`cutpaste` returns.

    Attributes
    ----------
    images : Tensor of shape (3 n, C, H, W)
        The ``n`` images, then their cut-paste copies, then their scar copies.
    labels : Tensor of shape (3 n,), int64
        0 (normal), 1 (cut-paste) or 2 (scar).
    masks : Tensor of shape (3 n, H, W), bool
        The pixels that were pasted over (all False for normal images).
    boxes : Tensor of shape (3 n, 4), int64, on the images' device
        ``(top, left, height, width)`` of the pasted rectangle (cut-paste), of
        the bounding box of the pasted pixels (scar), zeros for normal images.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor


def _uniform(n, low, high, generator):
    # Parameters are drawn on the CPU: the same seed gives the same defects on
    # every device, and the draws are a few numbers per image.
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _randint_below(high, generator):
    """One integer in ``[0, high[i])`` per entry of the float64 tensor ``high``."""
    return torch.floor(torch.rand(high.shape, generator=generator, dtype=torch.float64) * high).long()


def _jitter(patch, mask, jitter, generator):
    """Brightness and contrast factors in ``[1 - jitter, 1 + jitter]`` on the masked pixels.

    Contrast scales the patch about its own mean (over the masked pixels and
    channels), so a grayscale patch is jittered as an RGB one is.
    """
    n = patch.shape[0]
    if jitter <= 0:
        return patch
    brightness = _uniform(n, 1 - jitter, 1 + jitter, generator).to(patch.device, patch.dtype)
    contrast = _uniform(n, 1 - jitter, 1 + jitter, generator).to(patch.device, patch.dtype)
    out = patch * brightness.view(n, 1, 1, 1)
    weights = mask.unsqueeze(1).to(patch.dtype)
    count = (weights.sum(dim=(1, 2, 3)) * patch.shape[1]).clamp(min=1)
    mean = (out * weights).sum(dim=(1, 2, 3)) / count
    return (out - mean.view(n, 1, 1, 1)) * contrast.view(n, 1, 1, 1) + mean.view(n, 1, 1, 1)


def _gather(x, src_y, src_x):
    """``out[i, :, r, c] = x[i, :, src_y[i, r, c], src_x[i, r, c]]`` (long index maps)."""
    n, c, h, w = x.shape
    flat = (src_y * w + src_x).view(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, flat).view(n, c, h, w)


def _boxes(n, h, w, area_ratio, aspect_ratio, generator):
    """Heights and widths of the cut-paste rectangles (long tensors)."""
    area = _uniform(n, area_ratio[0], area_ratio[1], generator) * (h * w)
    log_lo = math.log(aspect_ratio[0])
    log_hi = math.log(aspect_ratio[1])
    ratio = torch.exp(_uniform(n, log_lo, log_hi, generator))  # width / height
    bw = torch.sqrt(area * ratio).round().clamp(1, w).long()
    bh = torch.sqrt(area / ratio).round().clamp(1, h).long()
    return bh, bw


def _cut_paste(x, area_ratio, aspect_ratio, jitter, generator):
    n, _, h, w = x.shape
    bh, bw = _boxes(n, h, w, area_ratio, aspect_ratio, generator)
    src_top = _randint_below((h - bh + 1).double(), generator)
    src_left = _randint_below((w - bw + 1).double(), generator)
    top = _randint_below((h - bh + 1).double(), generator)
    left = _randint_below((w - bw + 1).double(), generator)
    dev = x.device
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    top_, left_, bh_, bw_ = (t.to(dev).view(n, 1, 1) for t in (top, left, bh, bw))
    mask = (rows >= top_) & (rows < top_ + bh_) & (cols >= left_) & (cols < left_ + bw_)
    src_y = (rows - top_ + src_top.to(dev).view(n, 1, 1)).clamp(0, h - 1).expand(n, h, w)
    src_x = (cols - left_ + src_left.to(dev).view(n, 1, 1)).clamp(0, w - 1).expand(n, h, w)
    patch = _jitter(_gather(x, src_y, src_x), mask, jitter, generator)
    out = torch.where(mask.unsqueeze(1), patch, x)
    return out, mask, torch.stack([top, left, bh, bw], dim=1).to(dev)


def scar_size(side, width=(2, 16), length=(10, 25)):
    """Scar width and length ranges, in pixels, for images whose shorter side is ``side``.

    The paper's ranges are for 256-pixel images; they are scaled by
    ``side / 256``, with a width of at least 1 pixel and a length of at least
    twice the width's lower bound (a scar stays longer than it is wide).
    """
    scale = side / REFERENCE_SIDE
    w_lo, w_hi = max(1.0, width[0] * scale), max(1.0, width[1] * scale)
    l_lo = max(2.0 * w_lo, length[0] * scale)
    l_hi = max(l_lo, length[1] * scale)
    return (w_lo, w_hi), (l_lo, l_hi)


def _scar(x, width, length, max_angle, jitter, generator):
    n, _, h, w = x.shape
    (w_lo, w_hi), (l_lo, l_hi) = scar_size(min(h, w), width, length)
    sw = _uniform(n, w_lo, w_hi, generator).clamp(max=w)
    sl = _uniform(n, l_lo, l_hi, generator).clamp(max=h)
    angle = _uniform(n, -max_angle, max_angle, generator) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Half-extents of the rotated scar's bounding box, so that it fits the image.
    ex = (sw * cos.abs() + sl * sin.abs()) / 2
    ey = (sw * sin.abs() + sl * cos.abs()) / 2
    cx = ex.clamp(max=w / 2) + _uniform(n, 0, 1, generator) * (w - 2 * ex).clamp(min=0)
    cy = ey.clamp(max=h / 2) + _uniform(n, 0, 1, generator) * (h - 2 * ey).clamp(min=0)
    # Centre of the unrotated sliver the scar is cut from.
    scx = sw / 2 + _uniform(n, 0, 1, generator) * (w - sw)
    scy = sl / 2 + _uniform(n, 0, 1, generator) * (h - sl)
    dev, dt = x.device, torch.float32
    ys = torch.arange(h, device=dev, dtype=dt).view(1, h, 1) + 0.5
    xs = torch.arange(w, device=dev, dtype=dt).view(1, 1, w) + 0.5

    def col(t):
        return t.to(dev, dt).view(n, 1, 1)

    dx, dy = xs - col(cx), ys - col(cy)
    # Pixel coordinates in the scar's own frame (rotated back by the angle).
    u = dx * col(cos) + dy * col(sin)
    v = -dx * col(sin) + dy * col(cos)
    mask = (u.abs() < col(sw) / 2) & (v.abs() < col(sl) / 2)
    src_x = torch.floor(col(scx) + u).long().clamp(0, w - 1)
    src_y = torch.floor(col(scy) + v).long().clamp(0, h - 1)
    patch = _jitter(_gather(x, src_y, src_x), mask, jitter, generator)
    out = torch.where(mask.unsqueeze(1), patch, x)
    return out, mask, _mask_boxes(mask)


def _mask_boxes(mask):
    """``(top, left, height, width)`` of every mask's True pixels (zeros when empty)."""
    n, h, w = mask.shape
    rows, cols = mask.any(dim=2), mask.any(dim=1)
    r_idx = torch.arange(h, device=mask.device)
    c_idx = torch.arange(w, device=mask.device)
    top = torch.where(rows, r_idx, h).min(dim=1).values
    bottom = torch.where(rows, r_idx, -1).max(dim=1).values
    left = torch.where(cols, c_idx, w).min(dim=1).values
    right = torch.where(cols, c_idx, -1).max(dim=1).values
    empty = ~rows.any(dim=1)
    boxes = torch.stack([top, left, bottom - top + 1, right - left + 1], dim=1)
    return torch.where(empty.view(n, 1), 0, boxes)


def cutpaste(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    area_ratio: tuple[float, float] = (0.02, 0.15),
    aspect_ratio: tuple[float, float] = (0.3, 1 / 0.3),
    scar_width: tuple[float, float] = (2.0, 16.0),
    scar_length: tuple[float, float] = (10.0, 25.0),
    max_angle: float = 45.0,
    jitter: float = 0.1,
) -> CutPasteBatch:
    """The 3-way CutPaste pretext batch of ``x``: normal, cut-paste and scar copies.

    Geometry, per image (all draws independent):

    - cut-paste: a rectangle of area ``U(area_ratio) * H * W`` and aspect
      ratio (width / height) log-uniform in ``aspect_ratio`` (so ratios in
      [0.3, 1] and [1, 3.3] are equally likely), sides rounded to whole pixels
      and clipped to the image; it is cut at a uniformly random position and
      pasted at another, wholly inside the image. Pixels outside the pasted
      rectangle are unchanged.
    - scar: a sliver of width ``U(scar_width)`` and length ``U(scar_length)``
      pixels (ranges scaled from 256-pixel images to the image's shorter side,
      see :func:`scar_size`; at 64 pixels width 1-4, length 2.5-6.25), cut
      upright from a random position, rotated by an angle uniform in
      ``[-max_angle, max_angle]`` degrees and pasted (nearest-pixel sampling)
      with its bounding box inside the image.

    The pasted pixels get a brightness and a contrast factor uniform in
    ``[1 - jitter, 1 + jitter]`` (contrast about the patch's mean), which works
    for any number of channels. The random parameters are drawn on the CPU
    from ``generator`` (torch's global generator when None); the pasting runs
    batched on ``x``'s device.

    Parameters
    ----------
    x : Tensor of shape (n, C, H, W), floating point
    generator : torch.Generator or None, default=None
        A CPU generator.
    area_ratio, aspect_ratio, scar_width, scar_length, max_angle, jitter
        The geometry above; the defaults are the paper's.

    Returns
    -------
    CutPasteBatch
        ``(images, labels, masks, boxes)``; ``x`` is not modified.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(
            f"cutpaste expects x of shape (n, C, H, W), floating point; got shape "
            f"{tuple(x.shape)} and dtype {x.dtype}."
        )
    n, _, h, w = x.shape
    pasted, mask_cp, box_cp = _cut_paste(x, area_ratio, aspect_ratio, jitter, generator)
    scarred, mask_sc, box_sc = _scar(x, scar_width, scar_length, max_angle, jitter, generator)
    images = torch.cat([x, pasted, scarred])
    labels = torch.tensor([NORMAL, CUT_PASTE, SCAR], device=x.device).repeat_interleave(n)
    masks = torch.cat([torch.zeros(n, h, w, dtype=torch.bool, device=x.device), mask_cp, mask_sc])
    boxes = torch.cat([torch.zeros(n, 4, dtype=torch.long, device=x.device), box_cp, box_sc])
    return CutPasteBatch(images, labels, masks, boxes)


def cutpaste_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the three CutPaste classes, one value per image."""
    return F.cross_entropy(logits.float(), labels, reduction="none")
