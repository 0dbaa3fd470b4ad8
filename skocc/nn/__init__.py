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
from .cutpaste import CutPasteBatch, cutpaste, cutpaste_loss
from .objectives import (
    AutoencoderObjective,
    LatentGaussian,
    MultiViewAutoencoderObjective,
    SelfSupervisedObjective,
)
from .preprocess import ImagePreprocess
from .self_supervised import (
    MLPHead,
    ModuleEncoder,
    ResNet18Encoder,
    SelfSupervisedNet,
    SmallConvEncoder,
    augment,
    rotate,
)

__all__ = [
    "AutoencoderObjective",
    "ConvAutoencoder",
    "ConvDecoder",
    "ConvEncoder",
    "CutPasteBatch",
    "ImagePreprocess",
    "LatentGaussian",
    "MLPHead",
    "ModuleEncoder",
    "MultiViewAutoencoderObjective",
    "MultiViewConvAutoencoder",
    "ResNet18Encoder",
    "SelfSupervisedNet",
    "SelfSupervisedObjective",
    "SmallConvEncoder",
    "SpectralNormalized",
    "augment",
    "cutpaste",
    "cutpaste_loss",
    "plan_downsampling",
    "rotate",
]
