"""skocc: scikit-learn compatible deep one-class classifiers for images."""

import importlib

from ._version import __version__

# Public name -> module that defines it. The modules import torch, which takes
# seconds; they are imported on the first use of a public name (PEP 562), so
# that `import skocc` and `skocc --version` stay fast.
_PUBLIC = {
    "ConvAEOneClass": "autoencoder",
    "MultiViewConvAEOneClass": "multiview",
    "SelfSupervisedFeatures": "self_supervised",
    "TrimmedOneClass": "robust",
    "TwoStageOneClass": "two_stage",
    "export_onnx": "_onnx",
    "load": "_persistence",
    "save": "_persistence",
    "stack_views": "images",
}

__all__ = [
    "ConvAEOneClass",
    "MultiViewConvAEOneClass",
    "SelfSupervisedFeatures",
    "TrimmedOneClass",
    "TwoStageOneClass",
    "export_onnx",
    "load",
    "save",
    "stack_views",
    "__version__",
]


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # All of them at once, as `import skocc` did before: skocc.load finds an
    # estimator class by name only once its module has registered it.
    for public, module in _PUBLIC.items():
        globals()[public] = getattr(importlib.import_module(f".{module}", __name__), public)
    return globals()[name]


def __dir__():
    return sorted(set(globals()) | set(__all__))
