"""The part of scikit-learn's outlier contract that follows from ``score_samples`` and ``offset_``."""

from __future__ import annotations

import warnings

import numpy as np


class OutlierContractMixin:
    """``anomaly_score``, ``decision_function`` and ``predict`` from ``score_samples``.

    For estimators that define ``score_samples`` (higher = more normal) and a
    fitted ``offset_``, as :class:`sklearn.svm.OneClassSVM` does.
    """

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
        return self.score_samples(X) - self.offset_

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
        decision = self.decision_function(X)
        labels = np.ones(decision.shape[0], dtype=int)
        labels[~(decision >= 0)] = -1  # NaN scores are anomalies, not inliers
        return labels


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
