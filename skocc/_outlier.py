"""scikit-learn's outlier contract, and the threshold that makes ``predict`` keep its promise.

One owner for ``offset_``: every skocc detector holds out normal images in
``fit`` (or takes them later in ``calibrate``), and sets ``offset_`` to the
split-conformal quantile of their scores (:mod:`skocc.conformal`).
"""

from __future__ import annotations

import math
import warnings
from numbers import Real

import numpy as np
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ._constraints import StrictInterval
from ._sklearn_compat import StrOptions
from .conformal import (
    CalibrationWarning,
    conformal_pvalues,
    conformal_threshold,
    min_calibration_size,
)

#: Accepted values of the ``calibration`` parameter.
CALIBRATIONS = ("holdout", "train")

# The constraints every detector adds for its threshold.
THRESHOLD_CONSTRAINTS = {
    "contamination": [StrictInterval(Real, 0, 0.5, closed="right")],
    "calibration": [StrOptions(set(CALIBRATIONS))],
    # Above one half, fewer images would train the model than calibrate it.
    "calibration_size": [StrictInterval(Real, 0, 0.5, closed="right")],
}


def labels_from_decision(decision):
    """+1 where ``decision >= 0``, else -1: NaN decisions are anomalies, not inliers."""
    decision = np.asarray(decision)
    labels = np.ones(decision.shape[0], dtype=int)
    labels[~(decision >= 0)] = -1
    return labels


def select_inliers(y, inlier_label, n_samples, caller):
    """Boolean mask of the samples labelled ``inlier_label``; checks the label convention.

    Refuses PyOD's 0/1 labels (1 = anomaly) with ``inlier_label=1``, which
    would otherwise train on the anomalies without a word.
    """
    if y is None:
        raise ValueError(
            f"{caller}(inlier_label={inlier_label!r}) trains only on the samples "
            "whose label y equals inlier_label, but fit was called without y. Pass "
            "y, or set inlier_label=None to train on every sample."
        )
    y = column_or_1d(y)
    if y.shape[0] != n_samples:
        raise ValueError(
            f"Found input variables with inconsistent numbers of samples: {caller} got "
            f"{n_samples} samples in X and {y.shape[0]} labels in y."
        )
    labels = np.unique(y)
    if (
        inlier_label is not True
        and isinstance(inlier_label, Real)
        and inlier_label == 1
        and labels.dtype.kind in "iuf"
        and labels.size == 2
        and set(labels.tolist()) == {0, 1}
    ):
        raise ValueError(
            f"{caller} expects labels inlier_label=1 (normal) and -1 (anomaly); y holds "
            "0 and 1. For 0/1 labels with 1 = anomaly (PyOD's convention) pass "
            "inlier_label=0; if 0 marks the anomalies, relabel y to +1/-1."
        )
    mask = y == inlier_label
    if not np.any(mask):
        shown = ", ".join(repr(v) for v in labels[:10].tolist())
        more = f" and {labels.size - 10} more" if labels.size > 10 else ""
        raise ValueError(
            f"No sample has y == inlier_label={inlier_label!r}, so {caller} has "
            f"nothing to train on; y holds the labels {shown}{more}."
        )
    return mask


def clear_fitted(estimator):
    """Delete every fitted attribute (``name_``) of ``estimator``: a failed or new fit starts clean."""
    for name in [a for a in vars(estimator) if a.endswith("_") and not a.startswith("__")]:
        delattr(estimator, name)


def standardisation(values):
    """``(mean, std)`` per column of ``values``, with 1 for a zero std (a constant column)."""
    return values.mean(axis=0), _one_where_zero(values.std(axis=0))


def _one_where_zero(std):
    """``std`` with 1 for every zero (a constant term), so that dividing by it is safe."""
    return np.where(std > 0, std, 1.0)


def leave_one_out_standardisation(values):
    """``(mean, std)`` of every row's column among the other rows: arrays of ``values``' shape.

    As :func:`standardisation` computes them from ``values`` without that
    row (1 for a zero std); for two rows or more.
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    mean = (values.sum(axis=0) - values) / (n - 1)
    # Deviations from the full mean, then the shift to each row's own mean:
    # no cancellation of large sums of squares.
    full_mean = values.mean(axis=0)
    squares = (values - full_mean) ** 2
    variance = (squares.sum(axis=0) - squares) / (n - 1) - (mean - full_mean) ** 2
    return mean, _one_where_zero(np.sqrt(np.maximum(variance, 0.0)))


class OutlierContractMixin:
    """``offset_``, calibration, p-values, ``decision_function`` and ``predict``.

    For estimators that define ``score_samples`` (higher = more normal) and
    the parameters ``contamination``, ``calibration`` and
    ``calibration_size``. ``fit`` calls :meth:`_calibration_split` to hold
    normal images out of training, then :meth:`_set_threshold` with their
    scores (or with the training scores, for ``calibration="train"``).
    """

    # ------------------------------------------------------------ fit helpers
    def _calibration_split(self, n_samples, seed, stacklevel=2):
        """Indices ``(train, calibration)``; ``calibration`` is None when nothing is held out.

        ``ceil(calibration_size * n)`` samples, and at least
        :func:`~skocc.conformal.min_calibration_size` of ``contamination``,
        are held out, drawn with ``seed``. When that would leave fewer
        training than calibration samples (or fewer than 2), nothing is held
        out and a :class:`~skocc.conformal.CalibrationWarning` says so;
        ``stacklevel`` is the warning's stack level as seen from the caller.
        """
        everything = np.arange(n_samples)
        if self.calibration == "train":
            return everything, None
        needed = min_calibration_size(self.contamination)
        n_calibration = max(int(math.ceil(self.calibration_size * n_samples)), needed)
        if n_calibration > n_samples // 2 or n_samples - n_calibration < 2:
            warnings.warn(
                f"{type(self).__name__} got {n_samples} normal samples: too few to hold out "
                f"the {needed} that a threshold at contamination={self.contamination} "
                "needs and train on at least as many. offset_ is the training-score "
                "quantile instead, which flags more than contamination of new normal "
                f"samples. Call calibrate(X) with at least {needed} new normal samples, "
                "or pass calibration='train' to silence this.",
                CalibrationWarning,
                stacklevel=stacklevel + 1,
            )
            return everything, None
        order = np.random.RandomState(seed).permutation(n_samples)
        return np.sort(order[n_calibration:]), np.sort(order[:n_calibration])

    def _set_threshold(self, scores, *, held_out):
        """``calibration_scores_`` and ``offset_`` from ``scores``.

        Held-out scores give the split-conformal threshold; training scores
        (``held_out=False``) give scikit-learn's training quantile.
        """
        self.calibration_scores_, self.offset_ = self._threshold_of(scores, held_out=held_out)

    def _threshold_of(self, scores, *, held_out):
        """``(sorted scores, threshold)`` of :meth:`_set_threshold`, without storing them."""
        scores = np.asarray(scores, dtype=np.float64)
        # A NaN score (a network that overflowed) is the most anomalous, as in predict.
        scores = np.sort(np.where(np.isnan(scores), -np.inf, scores))
        if held_out:
            offset = conformal_threshold(scores, self.contamination)
        else:
            with np.errstate(invalid="ignore"):
                offset = float(np.percentile(scores, 100.0 * self.contamination))
        if not np.isfinite(offset):
            # decision_function would be NaN (-inf - -inf) for such images, and
            # predict and pvalues would disagree on them.
            n_bad = int(np.sum(~np.isfinite(scores)))
            raise ValueError(
                f"The threshold at contamination={self.contamination} falls on a score that "
                f"is not finite: {n_bad} of the {scores.size} images it is set from got NaN "
                "or infinite scores (the network overflowed on them). Remove those images, "
                "scale the input to the range the model was trained on, or raise "
                "contamination."
            )
        return scores, offset

    # ------------------------------------------------------------ public
    def calibrate(self, X):
        """Set the threshold from new normal samples, without retraining.

        ``offset_`` becomes the split-conformal threshold of the samples'
        scores at ``contamination``, and their scores become the reference of
        :meth:`pvalues`. Nothing else changes: the network, the detector and
        ``score_samples`` are untouched. Use it with normal images from a
        production line, after a change of lighting, or on a loaded model.

        For a new normal sample whose score is exchangeable with those of
        ``X`` (same source, no drift), ``predict`` returns -1 with probability
        at most ``contamination`` (see :mod:`skocc.conformal`).

        Parameters
        ----------
        X : array-like
            Normal samples the model was not trained on, in a form ``fit``
            accepts; at least ``ceil(1 / contamination - 1)`` of them (19 for
            0.05), and more for a threshold that varies less.

        Returns
        -------
        self : object
            The estimator, recalibrated.
        """
        check_is_fitted(self)
        self._validate_params()  # contamination may have been set since fit
        self._calibrate_on(X)
        return self

    def _calibrate_on(self, X):
        """Hook: the threshold from the normal samples ``X``, held out (conformal)."""
        scores = self.score_samples(X)
        self._check_calibration_count(scores.shape[0])
        self._set_threshold(scores, held_out=True)

    def _check_calibration_count(self, n_samples):
        needed = min_calibration_size(self.contamination)
        if n_samples < needed:
            raise ValueError(
                f"calibrate needs at least {needed} normal samples in X for "
                f"contamination={self.contamination}; got {n_samples}."
            )

    def _threshold_now(self):
        """Hook: ``(offset, calibration scores)`` of the parameters as set now.

        Estimators whose score depends on a parameter that can be changed
        after fit recompute them here; by default, the stored ones.
        """
        return self.offset_, self.calibration_scores_

    def _refresh_threshold(self):
        """Store :meth:`_threshold_now` when it differs from ``offset_``."""
        offset, scores = self._threshold_now()
        if scores is not self.calibration_scores_:
            self.offset_, self.calibration_scores_ = offset, scores

    def pvalues(self, X):
        """Conformal p-values of the samples: small means anomalous.

        ``(1 + #{calibration scores <= s(x)}) / (n + 1)``, against the
        ``n`` scores in ``calibration_scores_`` (held out by ``fit``, or given
        to :meth:`calibrate`). For a normal sample exchangeable with the
        calibration samples, ``P(p <= t) <= t`` for every ``t`` (approximately
        for fit's held-out images under the autoencoders' two-term score
        types, which are standardised with statistics of those images): flag
        ``pvalues(X) <= 0.01`` for at most 1 % false alarms, or pass them to
        :func:`skocc.conformal.benjamini_hochberg` to bound the share of
        normal samples among those flagged. With ``calibration="train"``
        (or when ``fit`` had too few samples to hold any out) the reference
        is the training scores, and the guarantee does not hold.

        ``predict(X) == -1`` exactly where ``pvalues(X) <= contamination``,
        when the threshold is conformal (``fit``'s held-out images or
        ``calibrate``).

        Parameters
        ----------
        X : array-like
            Samples in a form ``fit`` accepts.

        Returns
        -------
        pvalues : ndarray of shape (n_samples,), dtype float64
        """
        check_is_fitted(self)
        self._refresh_threshold()
        return conformal_pvalues(self.score_samples(X), self.calibration_scores_)

    def anomaly_score(self, X):
        """Anomaly score of every sample: higher means more anomalous.

        ``-score_samples(X)``, the convention of PyOD's ``decision_function``.

        Parameters
        ----------
        X : array-like
            Samples in a form ``fit`` accepts.

        Returns
        -------
        scores : ndarray of shape (n_samples,), dtype float64
        """
        return -self.score_samples(X)

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative for predicted anomalies.

        Parameters
        ----------
        X : array-like
            Samples in a form ``fit`` accepts.

        Returns
        -------
        decision : ndarray of shape (n_samples,), dtype float64
        """
        scores = self.score_samples(X)  # checks that the estimator is fitted
        self._refresh_threshold()
        return scores - self.offset_

    def predict(self, X):
        """+1 for predicted inliers, -1 for predicted anomalies.

        Parameters
        ----------
        X : array-like
            Samples in a form ``fit`` accepts.

        Returns
        -------
        labels : ndarray of shape (n_samples,), dtype int
        """
        return labels_from_decision(self.decision_function(X))


def warn_if_not_finite(scores, cause, stacklevel=3):
    """Warn (RuntimeWarning) when some ``scores`` are NaN or infinite.

    One message for every estimator, so that users who filter it catch all of
    them; ``cause`` says what overflows in this one. Returns ``scores``.
    """
    bad = ~np.isfinite(scores)
    if bad.any():
        warnings.warn(
            f"{int(bad.sum())} of {len(scores)} scores are not finite ({cause}); predict "
            "labels them -1.",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
    return scores


__all__ = [
    "CALIBRATIONS",
    "THRESHOLD_CONSTRAINTS",
    "CalibrationWarning",
    "OutlierContractMixin",
    "labels_from_decision",
    "select_inliers",
    "warn_if_not_finite",
]
