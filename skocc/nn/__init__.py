"""Pure PyTorch building blocks of skocc's estimators.

Nothing in this subpackage knows about scikit-learn or skorch: every module takes
the shapes it needs as explicit constructor arguments, so it can be used (and
tested) on its own.
"""

from .autoencoder import (
    ConvAutoencoder,
    ConvDecoder,
    ConvEncoder,
    MultiViewConvAutoencoder,
    SpectralNormalized,
    plan_downsampling,
)
from .preprocess import ImagePreprocess

__all__ = [
    "ConvAutoencoder",
    "ConvDecoder",
    "ConvEncoder",
    "ImagePreprocess",
    "MultiViewConvAutoencoder",
    "SpectralNormalized",
    "plan_downsampling",
]
