"""skocc: scikit-learn compatible deep one-class classifiers for images."""

from .autoencoder import ConvAEOneClass

__version__ = "0.1.0.dev0"

__all__ = ["ConvAEOneClass", "__version__"]
