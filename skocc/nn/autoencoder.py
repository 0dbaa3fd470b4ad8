"""Convolutional encoder, decoder and autoencoder that adapt to any image size."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# A side shorter than this is not halved any more: 1 x features "images" (tabular
# data) keep their single row, and small images are not reduced to nothing.
_MIN_SIDE_TO_DOWNSAMPLE = 4


def plan_downsampling(
    height: int, width: int, n_levels: int
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Strides and output sizes of the encoder's levels for one input size.

    Every level halves a side (3 x 3 convolution, stride 2, padding 1, so a side
    ``s`` becomes ``ceil(s / 2)``) while that side is at least 4 pixels long and
    keeps it otherwise. Sides are planned independently, so non-square images and
    ``1 x n_features`` rows work.

    Parameters
    ----------
    height, width : int
        Input size.
    n_levels : int
        Number of convolutional levels.

    Returns
    -------
    plan : list of ((stride_h, stride_w), (out_h, out_w))
        One entry per level.
    """
    if height < 1 or width < 1:
        raise ValueError(f"Image sides must be >= 1; got {(height, width)}.")
    plan = []
    h, w = height, width
    for _ in range(n_levels):
        sh = 2 if h >= _MIN_SIDE_TO_DOWNSAMPLE else 1
        sw = 2 if w >= _MIN_SIDE_TO_DOWNSAMPLE else 1
        h, w = -(-h // sh), -(-w // sw)
        plan.append(((sh, sw), (h, w)))
    return plan


class SpectralNormalized(nn.Module):
    """A linear or convolutional layer whose weight is divided by its spectral norm.

    The largest singular value of the weight (reshaped to ``(out, -1)``) is
    estimated by power iteration, one step per training forward pass, as in
    Miyato et al. (2018). Unlike ``torch.nn.utils.parametrizations``, the module
    is a plain module with two buffers, so it pickles with the rest of the net.

    Parameters
    ----------
    layer : nn.Linear or nn.Conv2d
        The layer to constrain; it keeps its parameters.
    eps : float
        Floor used when normalising the power-iteration vectors.
    """

    def __init__(self, layer: nn.Module, eps: float = 1e-12) -> None:
        super().__init__()
        if type(layer) not in (nn.Linear, nn.Conv2d):
            raise TypeError(
                f"SpectralNormalized wraps nn.Linear or nn.Conv2d layers; got {type(layer).__name__}."
            )
        self.layer = layer
        self.eps = eps
        weight = layer.weight.detach().flatten(1)
        u = F.normalize(torch.randn(weight.shape[0]), dim=0, eps=eps)
        v = F.normalize(weight.t() @ u, dim=0, eps=eps)
        self.register_buffer("u", u)
        self.register_buffer("v", v)

    def sigma(self) -> torch.Tensor:
        """Current estimate of the weight's spectral norm (differentiable in the weight).

        Always computed in float32, also under mixed-precision autocast: the
        power iteration accumulates in its buffers and would drift at bfloat16's
        three significant digits.
        """
        device_type = self.layer.weight.device.type
        # torch has no autocast state for the meta device, on which skocc
        # traces the network to estimate its memory before building it.
        if device_type != "meta" and torch.is_autocast_enabled(device_type):
            with torch.autocast(device_type, enabled=False):
                return self._sigma()
        return self._sigma()

    def _sigma(self) -> torch.Tensor:
        weight = self.layer.weight.flatten(1)
        if self.training:
            with torch.no_grad():
                v = F.normalize(weight.t() @ self.u, dim=0, eps=self.eps)
                u = F.normalize(weight @ v, dim=0, eps=self.eps)
                self.u.copy_(u)
                self.v.copy_(v)
        return torch.dot(self.u, weight @ self.v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The layer's own computation with the normalised weight passed in. Not
        # torch.func.functional_call: it swaps the layer's parameters for the
        # call, so two threads scoring with one module corrupted its weights.
        weight = self.layer.weight / self.sigma()
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, weight, self.layer.bias)
        return F.linear(x, weight, self.layer.bias)


def spectral_norm(layer: nn.Module) -> SpectralNormalized:
    """Wrap ``layer`` in :class:`SpectralNormalized`."""
    return SpectralNormalized(layer)


class ConvEncoder(nn.Module):
    """Strided 3 x 3 convolutions, then a linear map to the latent code.

    Parameters
    ----------
    input_shape : tuple of (int, int, int)
        ``(channels, height, width)`` of the (preprocessed) input.
    channels : sequence of int
        Width of every convolutional level.
    latent_dim : int
        Size of the latent code.
    """

    def __init__(
        self, input_shape: Sequence[int], channels: Sequence[int], latent_dim: int
    ) -> None:
        super().__init__()
        c_in, height, width = (int(s) for s in input_shape)
        plan = plan_downsampling(height, width, len(channels))
        layers: list[nn.Module] = []
        for c_out, (stride, _) in zip(channels, plan):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        out_h, out_w = plan[-1][1] if plan else (height, width)
        self.feature_shape = (c_in, out_h, out_w)
        self.to_latent = nn.Linear(c_in * out_h * out_w, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: linear map, then upsampling convolutions.

    With ``lipschitz=True`` every linear and convolutional layer is spectrally
    normalised, so the decoder cannot amplify its input by an amount it learns.
    This is what makes a penalty on the latent norm meaningful: an unconstrained
    decoder could undo any shrinking of the code for free (a larger first weight
    matrix), and the encoder would then collapse every code towards the origin,
    normal or not. With a bounded gain, codes of images that must be reconstructed
    differently have to stay apart, and only what the training data does not need
    is pulled to the origin.

    Parameters
    ----------
    output_shape : tuple of (int, int, int)
        ``(channels, height, width)`` to reconstruct.
    channels : sequence of int
        Widths of the encoder's levels (the decoder uses them in reverse).
    latent_dim : int
        Size of the latent code.
    lipschitz : bool
        Spectrally normalise every layer.
    """

    def __init__(
        self,
        output_shape: Sequence[int],
        channels: Sequence[int],
        latent_dim: int,
        lipschitz: bool = True,
    ) -> None:
        super().__init__()
        c_out, height, width = (int(s) for s in output_shape)
        plan = plan_downsampling(height, width, len(channels))
        wrap = spectral_norm if lipschitz else (lambda layer: layer)
        # sizes[i] is the spatial size *entering* encoder level i.
        sizes = [(height, width)] + [size for _, size in plan[:-1]]
        c_last = channels[-1]
        h_last, w_last = plan[-1][1]
        self.feature_shape = (c_last, h_last, w_last)
        self.from_latent = nn.Sequential(
            wrap(nn.Linear(latent_dim, c_last * h_last * w_last)), nn.LeakyReLU(0.2)
        )
        layers: list[nn.Module] = []
        widths = list(channels)
        for i in reversed(range(len(widths))):
            c_next = widths[i - 1] if i > 0 else c_out
            layers.append(nn.Upsample(size=sizes[i], mode="nearest"))
            layers.append(wrap(nn.Conv2d(widths[i], c_next, 3, padding=1)))
            if i > 0:
                layers.append(nn.LeakyReLU(0.2))
        self.features = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).unflatten(1, self.feature_shape)
        return self.features(h)


class ConvAutoencoder(nn.Module):
    """Preprocess, encode to a latent vector, decode.

    ``forward`` returns ``(x, x_hat, z)``: the preprocessed input (the
    reconstruction target), its reconstruction and the latent code, so the
    per-sample losses and scores in :mod:`skocc.losses` can be computed from one
    pass.

    Parameters
    ----------
    input_shape : tuple of (int, int, int)
        ``(channels, height, width)`` after preprocessing.
    channels : sequence of int
        Encoder widths.
    latent_dim : int
        Size of the latent code.
    preprocess : nn.Module or None
        Applied to the raw batch first (see :class:`~skocc.nn.ImagePreprocess`).
    lipschitz_decoder : bool
        See :class:`ConvDecoder`.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int],
        latent_dim: int,
        preprocess: nn.Module | None = None,
        lipschitz_decoder: bool = True,
    ) -> None:
        super().__init__()
        self.preprocess = preprocess if preprocess is not None else nn.Identity()
        self.encoder = ConvEncoder(input_shape, channels, latent_dim)
        self.decoder = ConvDecoder(input_shape, channels, latent_dim, lipschitz_decoder)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.preprocess(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.preprocess(x)
        z = self.encoder(x)
        return x, self.decoder(z), z


class MultiViewConvAutoencoder(nn.Module):
    """One convolutional autoencoder per view (or one shared by all views).

    Input ``(n, V, C, H, W)``. Every view is preprocessed, encoded to a code of
    ``latent_dim`` and reconstructed by its decoder; the codes are concatenated.
    ``forward`` returns ``(x, x_hat, z)`` with ``x`` and ``x_hat`` of shape
    ``(n, V, C, H', W')`` and ``z`` of shape ``(n, V * latent_dim)``.

    Parameters
    ----------
    n_views : int
        Number of views ``V``.
    input_shape : tuple of (int, int, int)
        ``(channels, height, width)`` of one view after preprocessing.
    channels : sequence of int
        Encoder widths.
    latent_dim : int
        Size of each view's code.
    share_weights : bool
        One encoder and one decoder for every view (the views are folded into
        the batch axis), or one pair per view.
    preprocess : nn.Module or None
        Applied to every view (see :class:`~skocc.nn.ImagePreprocess`).
    lipschitz_decoder : bool
        See :class:`ConvDecoder`.
    """

    def __init__(
        self,
        n_views: int,
        input_shape: Sequence[int],
        channels: Sequence[int],
        latent_dim: int,
        share_weights: bool = True,
        preprocess: nn.Module | None = None,
        lipschitz_decoder: bool = True,
    ) -> None:
        super().__init__()
        self.n_views = int(n_views)
        self.share_weights = bool(share_weights)
        n_models = 1 if self.share_weights else self.n_views
        self.autoencoders = nn.ModuleList(
            ConvAutoencoder(input_shape, channels, latent_dim, preprocess, lipschitz_decoder)
            for _ in range(n_models)
        )

    def _per_view(self, x: torch.Tensor, method: str):
        n = x.shape[0]
        if self.share_weights:
            out = getattr(self.autoencoders[0], method)(x.flatten(0, 1))
            outs = out if isinstance(out, tuple) else (out,)
            return tuple(t.unflatten(0, (n, self.n_views)) for t in outs)
        per_view = [getattr(ae, method)(x[:, v]) for v, ae in enumerate(self.autoencoders)]
        per_view = [o if isinstance(o, tuple) else (o,) for o in per_view]
        return tuple(torch.stack(parts, dim=1) for parts in zip(*per_view))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        (z,) = self._per_view(x, "encode")
        return z.flatten(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, x_hat, z = self._per_view(x, "forward")
        return x, x_hat, z.flatten(1)
