"""skocc: scikit-learn compatible deep one-class classifiers for images."""

from .autoencoder import ConvAEOneClass, MultiViewConvAEOneClass
from .images import stack_views

__version__ = "0.1.0.dev0"

__all__ = ["ConvAEOneClass", "MultiViewConvAEOneClass", "stack_views", "__version__"]
