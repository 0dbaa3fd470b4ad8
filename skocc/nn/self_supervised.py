"""Self-supervised representation learning for images: encoders, heads, pretexts.

The networks behind :class:`skocc.SelfSupervisedFeatures`, after Sohn et al.,
"Learning and Evaluating Representations for Deep One-class Classification"
(ICLR 2021). Pure PyTorch: shapes are explicit constructor arguments.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoder import plan_downsampling
from .cutpaste import cutpaste
from .preprocess import ImagePreprocess

PRETEXTS = ("rotation", "contrastive", "contrastive_da", "cutpaste")
#: Pretexts that classify: an MLP head with two hidden layers and one logit per class.
CLASSIFIER_PRETEXTS = {"rotation": 4, "cutpaste": 3}
ENCODERS = ("small", "resnet18")
FEATURE_LAYERS = ("encoder", "head")


def _strides(side: int, n_levels: int) -> list[int]:
    """One stride per level, the same on both axes, so a rotated image plans alike."""
    return [plan[0][0] for plan in plan_downsampling(side, side, n_levels)]


class SmallConvEncoder(nn.Module):
    """A small VGG-style encoder: three levels of two 3 x 3 conv + BN + ReLU.

    The second and third levels start with a stride-2 convolution where the
    (shorter) side is at least 4 pixels long. Global average pooling makes the
    output ``(n, 4 * width)`` for any input size.

    Parameters
    ----------
    in_channels : int
    side : int
        The shorter side of the input images, to plan the strides.
    width : int, default=32
        Channels of the first level; the next levels have 2x and 4x.
    """

    def __init__(self, in_channels: int, side: int, width: int = 32) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        strides = [1] + _strides(side, 2)
        layers = []
        c_in = in_channels
        for c_out, stride in zip(widths, strides):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.out_features = widths[-1]

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last level's activations before pooling, ``(n, 4 * width, h, w)``."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(-2, -1))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class ResNet18Encoder(nn.Module):
    """ResNet-18 for small images (the CIFAR variant): 3 x 3 stem, no max-pool.

    Four stages of two basic blocks with ``width``, 2x, 4x and 8x channels; the
    last three stages start with stride 2 where the (shorter) side allows.
    Global average pooling gives ``(n, 8 * width)``; ``width=64`` is ResNet-18.

    Parameters
    ----------
    in_channels : int
    side : int
        The shorter side of the input images, to plan the strides.
    width : int, default=64
    """

    def __init__(self, in_channels: int, side: int, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        strides = [1] + _strides(side, 3)
        blocks = []
        c_in = width
        for level, stride in enumerate(strides):
            c_out = width * 2**level
            blocks += [_BasicBlock(c_in, c_out, stride), _BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.out_features = c_in

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's activations before pooling, ``(n, 8 * width, h, w)``."""
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(-2, -1))


class ModuleEncoder(nn.Module):
    """A user's network as an encoder: pooled features and the spatial map it returns.

    ``module`` maps a float batch ``(n, C, H, W)`` (after skocc's
    preprocessing) to a spatial feature map ``(n, d, h, w)``; the encoder's
    features are its global average, as for skocc's own encoders. The output
    size is read from one pass on a zero image of ``input_shape``.

    Parameters
    ----------
    module : torch.nn.Module
        Used as given (the estimator passes a copy).
    input_shape : tuple (C, H, W)
    freeze : bool, default=False
        Keep the module's weights as they are: no gradient reaches them, and
        the module stays in eval mode (its batch-norm statistics unchanged)
        while the rest of the network trains.
    """

    def __init__(self, module: nn.Module, input_shape, freeze: bool = False) -> None:
        super().__init__()
        self.module = module
        self.freeze = bool(freeze)
        if self.freeze:
            module.requires_grad_(False)
        reference = next(iter(module.parameters()), None)
        device = reference.device if reference is not None else torch.device("cpu")
        was_training = module.training
        try:
            with torch.no_grad():
                out = module.eval()(torch.zeros((1, *input_shape), device=device))
        except Exception as exc:  # noqa: BLE001  (the user's module: name it, whatever it raised)
            raise ValueError(
                f"encoder {type(module).__name__} failed on a batch of shape "
                f"{(1, *tuple(input_shape))} (the network's input after preprocessing): {exc}"
            ) from exc
        finally:
            module.train(was_training and not self.freeze)
        if not (isinstance(out, torch.Tensor) and out.ndim == 4):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"encoder {type(module).__name__} must return a spatial feature map of shape "
                f"(n, d, h, w), which skocc pools into features and uses for score_map; it "
                f"returned {got} for an input of shape {(1, *tuple(input_shape))}. Drop the "
                "module's final pooling and classifier layers (for a torchvision ResNet: "
                "torch.nn.Sequential(*list(resnet.children())[:-2]))."
            )
        self.out_features = int(out.shape[1])

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.module.eval()
        return self

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(-2, -1))


def make_encoder(name, in_channels: int, side: int, width: int | None = None) -> nn.Module:
    """``"small"`` (:class:`SmallConvEncoder`) or ``"resnet18"`` (:class:`ResNet18Encoder`)."""
    if name == "small":
        return SmallConvEncoder(in_channels, side, 16 if width is None else width)
    if name == "resnet18":
        return ResNet18Encoder(in_channels, side, 64 if width is None else width)
    raise ValueError(f"encoder must be one of {ENCODERS}; got {name!r}.")


class MLPHead(nn.Module):
    """``n_hidden`` blocks of Linear + BN + ReLU, then a linear output layer.

    ``hidden(x)`` is the output of the last hidden block (the "head" features).
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, n_hidden: int = 2) -> None:
        super().__init__()
        layers = []
        c_in = in_features
        for _ in range(n_hidden):
            layers += [nn.Linear(c_in, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            c_in = hidden
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(c_in, out_features)
        self.hidden_features = c_in

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


def rotate(x: torch.Tensor, k: int) -> torch.Tensor:
    """Rotate a batch ``(..., H, W)`` by ``k`` quarter turns (exact, ``torch.rot90``)."""
    return torch.rot90(x, k % 4, dims=(-2, -1))


def augment(
    x: torch.Tensor,
    crop_scale: tuple[float, float] = (0.2, 1.0),
    flip: bool = True,
    jitter: float = 0.4,
    jitter_p: float = 0.8,
) -> torch.Tensor:
    """SimCLR-style random augmentation of a batch, batched on its device.

    Every image gets its own random resized crop (area fraction in
    ``crop_scale``, aspect ratio in [3/4, 4/3], resampled bilinearly to the
    input size), a horizontal flip with probability 1/2 (``flip``), and with
    probability ``jitter_p`` a colour jitter: brightness and contrast factors
    in ``[1 - jitter, 1 + jitter]`` and, for 3-channel images, saturation too.
    Draws from torch's global RNG (skocc seeds and forks it around training).

    Parameters
    ----------
    x : Tensor of shape (n, C, H, W), floating point
    crop_scale : (float, float)
    flip : bool
    jitter : float
    jitter_p : float

    Returns
    -------
    Tensor of the same shape and dtype.
    """
    n, c = x.shape[:2]
    opts = dict(device=x.device, dtype=torch.float32)
    lo, hi = crop_scale
    area = lo + (hi - lo) * torch.rand(n, **opts)
    log_ratio = (torch.rand(n, **opts) * 2 - 1) * math.log(4 / 3)
    ratio = torch.exp(log_ratio)
    # Half-sides of the crop in [-1, 1] coordinates.
    sx = torch.sqrt(area * ratio).clamp(max=1.0)
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(n, **opts) * 2 - 1) * (1 - sx)
    cy = (torch.rand(n, **opts) * 2 - 1) * (1 - sy)
    sign = torch.where(torch.rand(n, **opts) < 0.5, -1.0, 1.0) if flip else torch.ones(n, **opts)
    theta = torch.zeros(n, 2, 3, **opts)
    theta[:, 0, 0] = sx * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False).to(x.dtype)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if jitter > 0 and jitter_p > 0:
        apply = (torch.rand(n, 1, 1, 1, **opts) < jitter_p).to(x.dtype)

        def factor():
            return (1 + (torch.rand(n, 1, 1, 1, **opts) * 2 - 1) * jitter).to(x.dtype)

        jittered = out * factor()
        mean = jittered.mean(dim=(1, 2, 3), keepdim=True)
        jittered = (jittered - mean) * factor() + mean
        if c == 3:
            weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
            gray = (jittered * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
            jittered = (jittered - gray) * factor() + gray
        out = apply * jittered + (1 - apply) * out
    return out


def _forward_by_shape(fn, batches: list[torch.Tensor]) -> torch.Tensor:
    """``fn`` over the concatenation of ``batches``, one call per distinct shape.

    Rotating a non-square image swaps its sides, so such batches go through
    ``fn`` grouped by shape (all batches of one shape in one call, which keeps
    batch norm's statistics over as many samples as possible); the results
    come back in the order given.
    """
    groups: dict = {}
    for i, b in enumerate(batches):
        groups.setdefault(tuple(b.shape[1:]), []).append(i)
    if len(groups) == 1:
        return fn(torch.cat(batches))
    parts: list = [None] * len(batches)
    for members in groups.values():
        out = fn(torch.cat([batches[i] for i in members]))
        for i, chunk in zip(members, out.split([len(batches[i]) for i in members])):
            parts[i] = chunk
    return torch.cat(parts)


class SelfSupervisedNet(nn.Module):
    """Encoder + head trained on a pretext task; features from either.

    ``forward(x)`` runs the pretext on a batch and returns what its loss needs:

    - ``"rotation"``: ``(logits, targets)``: the head's 4-way prediction of
      the quarter turn applied to each of the ``4 n`` rotated copies;
    - ``"contrastive"``: ``(z, None)``: L2-normalised projections of two
      augmented views of every image, ``z[i]`` and ``z[i + m]`` a positive pair
      (``m`` the number of instances);
    - ``"contrastive_da"``: the same with distribution augmentation: the four
      rotations of every image are distinct instances (``m = 4 n``);
    - ``"cutpaste"``: ``(logits, labels)``: the head's 3-way prediction for
      the ``3 n`` images of :func:`skocc.nn.cutpaste.cutpaste` (normal,
      cut-paste, scar), drawn from torch's global generator (which skocc
      seeds and forks around training).

    ``features(x, layer)`` returns L2-normalised representations of
    unaugmented images.

    Parameters
    ----------
    input_shape : tuple (C, H, W)
        Shape after ``preprocess``.
    pretext : {"rotation", "contrastive", "contrastive_da", "cutpaste"}
    encoder : {"small", "resnet18"}
    width : int or None
        Width of the encoder's first level (None: 16 for "small", 64 for
        "resnet18").
    head_dim : int
        Width of the head's hidden layers, and of the contrastive projection.
    preprocess : ImagePreprocess or None
    crop_scale, flip, jitter
        Augmentation settings of the contrastive pretexts (see :func:`augment`).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        pretext: str = "rotation",
        encoder: str | nn.Module = "small",
        width: int | None = None,
        head_dim: int = 128,
        preprocess: ImagePreprocess | None = None,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        flip: bool = True,
        jitter: float = 0.4,
        freeze_encoder: bool = False,
    ) -> None:
        super().__init__()
        if pretext not in PRETEXTS:
            raise ValueError(f"pretext must be one of {PRETEXTS}; got {pretext!r}.")
        c, h, w = (int(s) for s in input_shape)
        self.input_shape = (c, h, w)
        self.pretext = pretext
        self.preprocess = preprocess if preprocess is not None else ImagePreprocess()
        if isinstance(encoder, nn.Module):
            self.encoder = ModuleEncoder(encoder, self.input_shape, freeze=freeze_encoder)
        else:
            self.encoder = make_encoder(encoder, c, min(h, w), width)
        d = self.encoder.out_features
        classes = CLASSIFIER_PRETEXTS.get(pretext)
        out = head_dim if classes is None else classes
        self.head = MLPHead(d, head_dim, out, n_hidden=1 if classes is None else 2)
        self.crop_scale = tuple(float(s) for s in crop_scale)
        self.flip = bool(flip)
        self.jitter = float(jitter)

    def feature_dim(self, layer: str = "encoder") -> int:
        return self.encoder.out_features if layer == "encoder" else self._head_feature_dim()

    def _head_feature_dim(self) -> int:
        if self.pretext in CLASSIFIER_PRETEXTS:
            return self.head.hidden_features
        return self.head.out.out_features

    def forward(self, x: torch.Tensor):
        x = self.preprocess(x)
        if self.pretext == "rotation":
            rotated = [rotate(x, k) for k in range(4)]
            logits = _forward_by_shape(lambda b: self.head(self.encoder(b)), rotated)
            targets = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
            return logits, targets
        if self.pretext == "cutpaste":
            batch = cutpaste(x)
            return self.head(self.encoder(batch.images)), batch.labels
        instances = [rotate(x, k) for k in range(4)] if self.pretext == "contrastive_da" else [x]

        def project(b):
            return F.normalize(self.head(self.encoder(b)), dim=1)

        views = [augment(b, self.crop_scale, self.flip, self.jitter) for b in instances]
        views += [augment(b, self.crop_scale, self.flip, self.jitter) for b in instances]
        return _forward_by_shape(project, views), None

    def features(self, x: torch.Tensor, layer: str = "encoder", quarter_turns: int = 0) -> torch.Tensor:
        """L2-normalised representation of (unaugmented) images.

        ``quarter_turns`` rotates the images by that many quarter turns first.
        """
        h = self.encoder(rotate(self.preprocess(x), quarter_turns))
        if layer == "head":
            h = self.head.hidden(h) if self.pretext in CLASSIFIER_PRETEXTS else self.head(h)
        elif layer != "encoder":
            raise ValueError(f"layer must be one of {FEATURE_LAYERS}; got {layer!r}.")
        return F.normalize(h, dim=1)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's spatial activations before pooling, ``(n, d, h, w)``, not normalised."""
        return self.encoder.feature_map(self.preprocess(x))
