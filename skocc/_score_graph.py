"""Fitted detectors' scores as torch functions of raw images.

One module per model family computes, from the raw image batch to the score,
exactly what ``score_samples`` computes, in float64 where it does: the
network's own preprocessing and forward pass, the model's objective (score
terms, pixel map) or second-stage detectors, and the standardisation with the
fitted statistics. :func:`skocc.export_onnx` traces these modules into ONNX;
the ``explain`` methods differentiate them.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn


def to_channels_first(images, layout, sample_shape):
    """``(n, [V,] C, H, W)`` from the graph's input in ``layout``."""
    if layout == "channels_last":
        return images.movedim(-1, -3)
    if layout == "flat":
        return images.reshape((-1,) + tuple(sample_shape))
    return images


class AutoencoderGraph(nn.Module):
    """Raw images to ``(score, decision, map)`` for a fitted (multi-view) autoencoder.

    ``module`` is a CPU copy of the fitted network in eval mode; its own
    :class:`~skocc.nn.ImagePreprocess` scales ``uint8``, resizes and normalises.
    The score terms (with the codes' Mahalanobis distances), their
    combination and the map are the estimator's own functions; the distances
    and the combination run in float64, as ``score_samples`` computes them.
    """

    def __init__(self, model, module, layout):
        super().__init__()
        from .nn.objectives import combine_score_terms

        self.module = module
        self.layout = layout
        self.sample_shape = tuple(model.image_shape_)
        self.map_size = tuple(model.image_shape_[-2:])
        # As score_samples and score_map read them: the objective the net was
        # trained with (its norm), the score type as set now.
        self.objective = copy.deepcopy(model.net_.criterion_)
        self.gaussian = copy.deepcopy(model._latent_gaussian())
        self.score_type = model.score_type
        self.columns = model._score_columns()
        self.combine_terms = combine_score_terms
        self.register_buffer("score_mean", torch.as_tensor(model.score_mean_, dtype=torch.float64))
        self.register_buffer("score_std", torch.as_tensor(model.score_std_, dtype=torch.float64))
        # The threshold that predict uses now (for the score type as set now).
        offset = model._threshold_now()[0]
        self.register_buffer("offset", torch.tensor(float(offset), dtype=torch.float64))

    def forward(self, images):
        output = self.module(to_channels_first(images, self.layout, self.sample_shape))
        terms = self.objective.score_terms(output, self.gaussian)
        anomaly = self.combine_terms(
            self.score_type,
            {name: (terms[:, cols], cols) for name, cols in self.columns.items()},
            self.score_mean,
            self.score_std,
        )
        score = -anomaly.reshape(-1)
        return score, score - self.offset, self.objective.pixel_map(output, self.map_size)


class _GaussianLogDensity(nn.Module):
    """:meth:`skocc.detectors.GaussianDensity.score_samples` in float64 torch.

    ``-0.5 * ||(f - location) W||^2 - log_norm`` with ``W`` the transposed
    inverse of the Cholesky factor (:func:`skocc.detectors.whitening`),
    computed once here.
    """

    def __init__(self, detector):
        super().__init__()
        from .detectors import whitening

        location, cholesky, log_norm = detector._log_density_parameters()
        self.register_buffer("location", torch.as_tensor(location, dtype=torch.float64))
        self.register_buffer("whiten_t", torch.as_tensor(whitening(cholesky), dtype=torch.float64))
        self.register_buffer("log_norm", torch.tensor(float(log_norm), dtype=torch.float64))

    def forward(self, features):
        white = (features - self.location) @ self.whiten_t
        return -0.5 * white.pow(2).sum(dim=1) - self.log_norm


class _GaussianKDELogDensity(nn.Module):
    """:meth:`skocc.detectors.GaussianKDE.score_samples` in float64 torch.

    The training points are a constant of the graph. The log-sum-exp is
    written out (maximum first) rather than left to ``torch.logsumexp``, so the
    graph cannot depend on how an exporter or a runtime implements
    ``ReduceLogSumExp``: at small bandwidths every kernel value underflows and
    only the shifted form stays finite.
    """

    def __init__(self, detector):
        super().__init__()
        train = np.asarray(detector.X_fit_, dtype=np.float64)
        n, d = train.shape
        h2 = float(detector.bandwidth_) ** 2
        self.register_buffer("train_t", torch.as_tensor(train.T.copy()))
        self.register_buffer("train_sq", torch.as_tensor((train**2).sum(axis=1)))
        self.register_buffer("scale", torch.tensor(-0.5 / h2, dtype=torch.float64))
        const = np.log(n) + 0.5 * d * np.log(2.0 * np.pi * h2)
        self.register_buffer("const", torch.tensor(float(const), dtype=torch.float64))

    def forward(self, features):
        # |f - x|^2 expanded into one matrix product, as torch.cdist computes
        # it for more than 25 points; clamped because rounding can make it < 0.
        sq = features.pow(2).sum(dim=1, keepdim=True) + self.train_sq - 2.0 * (features @ self.train_t)
        logits = sq.clamp_min(0.0) * self.scale
        top = logits.amax(dim=1, keepdim=True)
        return (top + (logits - top).exp().sum(dim=1, keepdim=True).log()).reshape(-1) - self.const


def detector_module(detector, index, caller="export_onnx"):
    """The torch form of a fitted second-stage detector; a TypeError for one without it."""
    from .detectors import GaussianDensity, GaussianKDE

    # Exact types: a subclass may score differently from the formulas here.
    if type(detector) is GaussianDensity:
        return _GaussianLogDensity(detector)
    if type(detector) is GaussianKDE:
        return _GaussianKDELogDensity(detector)
    raise TypeError(
        f"{caller} needs the scores of the second stage as a torch function, which skocc "
        "has for its GaussianDensity (detector='gde') and GaussianKDE (detector='kde'); "
        f"the model's detectors_[{index}] is "
        f"{type(detector).__module__}.{type(detector).__qualname__}. Refit "
        "TwoStageOneClass with detector='gde' or 'kde'"
        + (", or deploy it with joblib." if caller == "export_onnx" else ".")
    )


def check_two_stage(model, caller="export_onnx"):
    """Raise a TypeError unless the fitted ``model``'s score has a torch form here.

    Its features must be skocc's :class:`~skocc.SelfSupervisedFeatures` and its
    detectors ones that :func:`detector_module` converts; checked before any
    tracing or gradient work.
    """
    from .self_supervised import SelfSupervisedFeatures

    if type(model.features_) is not SelfSupervisedFeatures:
        verb = "exports" if caller == "export_onnx" else "explains"
        raise TypeError(
            f"{caller} {verb} a TwoStageOneClass whose features are skocc's "
            "SelfSupervisedFeatures; the model's features_ is "
            f"{type(model.features_).__module__}.{type(model.features_).__qualname__}."
        )
    for i, detector in enumerate(model.detectors_):
        detector_module(detector, i, caller)


class TwoStageGraph(nn.Module):
    """Raw images to ``(score, decision)`` for a fitted :class:`~skocc.TwoStageOneClass`.

    Per quarter turn of the rotation ensemble, the network's own
    ``features(x, layer, turn)`` (preprocessing, rotation, encoder, L2
    normalisation) and that turn's detector, then the estimator's own
    combination, in float64 as ``score_samples`` computes it.
    """

    def __init__(self, model, module, layout, caller="export_onnx"):
        super().__init__()
        from .two_stage import _combine_scores

        self.module = module
        self.layout = layout
        self.sample_shape = tuple(model.features_.image_shape_)
        self.feature_layer = model.features_.feature_layer  # read at transform time, as there
        self.detectors = nn.ModuleList(
            detector_module(d, i, caller) for i, d in enumerate(model.detectors_)
        )
        self.combine_scores = _combine_scores
        self.register_buffer("score_mean", torch.as_tensor(model.score_mean_, dtype=torch.float64))
        self.register_buffer("score_std", torch.as_tensor(model.score_std_, dtype=torch.float64))
        self.register_buffer("offset", torch.tensor(float(model.offset_), dtype=torch.float64))

    def forward(self, images):
        x = to_channels_first(images, self.layout, self.sample_shape)
        scores = torch.stack(
            [
                detector(self.module.features(x, self.feature_layer, turn).double())
                for turn, detector in enumerate(self.detectors)
            ],
            dim=1,
        )
        score = self.combine_scores(scores, self.score_mean, self.score_std)
        return score, score - self.offset
