"""skocc: scikit-learn compatible deep one-class classifiers for images."""

# Defined first: the modules imported below read it.
__version__ = "0.1.0.dev0"

from ._onnx import export_onnx  # noqa: E402
from ._persistence import load, save  # noqa: E402
from .autoencoder import ConvAEOneClass, MultiViewConvAEOneClass  # noqa: E402
from .images import stack_views  # noqa: E402
from .self_supervised import SelfSupervisedFeatures  # noqa: E402
from .two_stage import TwoStageOneClass  # noqa: E402

__all__ = [
    "ConvAEOneClass",
    "MultiViewConvAEOneClass",
    "SelfSupervisedFeatures",
    "TwoStageOneClass",
    "export_onnx",
    "load",
    "save",
    "stack_views",
    "__version__",
]
