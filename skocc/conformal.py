"""Split-conformal thresholds and p-values for one-class detectors.

Every skocc detector sets its threshold ``offset_`` from *calibration scores*:
the ``score_samples`` of normal images that the model did not train on (held
out by ``fit``, or given later to ``calibrate``). For a new normal image whose
score is exchangeable with the calibration scores (drawn from the same
distribution, no drift), split conformal prediction [1]_ guarantees

.. math::

    P(\\text{predict}(x) = -1) \\le \\alpha, \\qquad
    P(p(x) \\le t) \\le t \\text{ for every } t \\in [0, 1],

with ``alpha = contamination`` and ``p`` the conformal p-value of
:func:`conformal_pvalues`. The guarantee is marginal (over the draw of the
calibration images and of the new image), not conditional on one calibration
set, and it says nothing about anomalies: how many of those are caught is the
detector's power (its AUROC), not the threshold's.

The functions here are the arithmetic; the estimators' ``calibrate``,
``pvalues``, ``decision_function`` and ``predict`` use them.

References
----------
.. [1] V. Vovk, A. Gammerman and G. Shafer, "Algorithmic Learning in a Random
   World", Springer, 2005.
.. [2] S. Bates, E. Candès, L. Lei, Y. Romano and M. Sesia, "Testing for
   outliers with conformal p-values", Annals of Statistics 51(1), 2023.
.. [3] Y. Benjamini and Y. Hochberg, "Controlling the false discovery rate",
   J. R. Statist. Soc. B 57(1), 1995.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

__all__ = [
    "CalibrationWarning",
    "benjamini_hochberg",
    "conformal_pvalues",
    "conformal_threshold",
    "min_calibration_size",
]


class CalibrationWarning(UserWarning):
    """``fit`` had too few normal images to hold out a calibration set.

    The threshold then comes from the training scores, which is optimistic for
    a model that fits its training images: more than ``contamination`` of new
    normal images may be flagged. Call ``calibrate`` with new normal images.
    """


def _check_contamination(contamination):
    if (
        not isinstance(contamination, Real)
        or isinstance(contamination, bool)
        or not 0 < contamination < 1
    ):
        raise ValueError(
            f"contamination must be a float in (0, 1); got {contamination!r}."
        )
    return float(contamination)


def _rank_of_threshold(n, contamination):
    """``floor(contamination * (n + 1))``, robust to the float error of the product."""
    # 0.05 * 20 may come out as 0.9999999999999999; the rounding keeps the
    # intended rank, and errs by at most 1e-9 of a rank otherwise.
    return int(math.floor(round(contamination * (n + 1), 9)))


def min_calibration_size(contamination):
    """The fewest calibration scores for which the conformal threshold exists.

    ``ceil(1 / contamination - 1)``: with fewer, not even the lowest
    calibration score can be the threshold without exceeding the promised rate
    (19 for 0.05, 99 for 0.01, 9 for 0.1).

    Parameters
    ----------
    contamination : float in (0, 1)

    Returns
    -------
    n : int
    """
    contamination = _check_contamination(contamination)
    n = max(int(math.ceil(1.0 / contamination - 1.0 - 1e-9)), 1)
    while _rank_of_threshold(n, contamination) < 1:
        n += 1
    return n


def _as_scores(scores, name):
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of scores; got shape {scores.shape}.")
    return scores


def conformal_threshold(calibration_scores, contamination):
    """The split-conformal threshold on ``score_samples`` (higher = more normal).

    The ``k``-th lowest calibration score, ``k = floor(contamination * (n + 1))``.
    A new sample exchangeable with the calibration samples scores below it
    with probability at most ``k / (n + 1) <= contamination``; without ties
    among the scores, exactly ``k / (n + 1)``, which is at least
    ``contamination - 1 / (n + 1)``.

    Parameters
    ----------
    calibration_scores : array-like of shape (n,)
        ``score_samples`` of normal samples the model was not trained on. Not
        finite scores (a network that overflowed) count as the lowest.
    contamination : float in (0, 1)
        The promised rate of normal samples predicted -1.

    Returns
    -------
    offset : float

    Raises
    ------
    ValueError
        With fewer than :func:`min_calibration_size` scores.

    Examples
    --------
    >>> from skocc.conformal import conformal_threshold
    >>> conformal_threshold([5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0], 0.1)
    1.0
    """
    contamination = _check_contamination(contamination)
    scores = _as_scores(calibration_scores, "calibration_scores")
    n = scores.size
    k = _rank_of_threshold(n, contamination)
    if k < 1:
        raise ValueError(
            f"A conformal threshold at contamination={contamination} needs at least "
            f"{min_calibration_size(contamination)} calibration scores; got {n}. Give "
            "more normal samples, or raise contamination."
        )
    ordered = np.sort(np.where(np.isnan(scores), -np.inf, scores))
    return float(ordered[k - 1])


def conformal_pvalues(scores, calibration_scores):
    """Conformal p-values: ``(1 + #{calibration scores <= s}) / (n + 1)``.

    Small means anomalous. For a normal sample exchangeable with the
    calibration samples, ``P(p <= t) <= t`` for every ``t`` (Bates et al.,
    2023, in the module's references). A score that
    is NaN counts as the lowest possible, as ``predict`` labels it -1.

    Parameters
    ----------
    scores : array-like of shape (m,)
        ``score_samples`` of the samples to test (higher = more normal).
    calibration_scores : array-like of shape (n,)
        ``score_samples`` of normal samples the model was not trained on.

    Returns
    -------
    pvalues : ndarray of shape (m,), dtype float64
        In ``[1 / (n + 1), 1]``.

    Examples
    --------
    >>> from skocc.conformal import conformal_pvalues
    >>> conformal_pvalues([0.5, 2.5, 10.0], [1.0, 2.0, 3.0, 4.0]).tolist()
    [0.2, 0.6, 1.0]
    """
    scores = _as_scores(scores, "scores")
    calibration = _as_scores(calibration_scores, "calibration_scores")
    if calibration.size == 0:
        raise ValueError("calibration_scores is empty; p-values need at least one.")
    calibration = np.sort(np.where(np.isnan(calibration), -np.inf, calibration))
    below_or_equal = np.searchsorted(calibration, scores, side="right")
    below_or_equal[np.isnan(scores)] = 0
    return (1.0 + below_or_equal) / (calibration.size + 1.0)


def benjamini_hochberg(pvalues, fdr=0.1):
    """Flag a batch with a controlled false-discovery rate (Benjamini–Hochberg).

    Flags the ``k`` smallest p-values, with ``k`` the largest ``i`` such that
    the ``i``-th smallest p-value is at most ``fdr * i / m``. With conformal
    p-values from one calibration set (which are positively dependent, as
    Bates et al., 2023, show)
    the expected share of normal samples among the flagged ones is at most
    ``fdr`` times the share of normal samples in the batch: "of what I flag,
    at most 10 % should be good parts" is ``fdr=0.1``.

    Parameters
    ----------
    pvalues : array-like of shape (m,)
        For example ``model.pvalues(X)``.
    fdr : float in (0, 1), default=0.1
        Target false-discovery rate.

    Returns
    -------
    labels : ndarray of shape (m,), dtype int
        -1 for flagged samples (anomalies), +1 for the rest, as ``predict``.

    Examples
    --------
    >>> from skocc.conformal import benjamini_hochberg
    >>> benjamini_hochberg([0.001, 0.5, 0.02, 0.9], fdr=0.1).tolist()
    [-1, 1, -1, 1]
    """
    if not isinstance(fdr, Real) or isinstance(fdr, bool) or not 0 < fdr < 1:
        raise ValueError(f"fdr must be a float in (0, 1); got {fdr!r}.")
    p = _as_scores(pvalues, "pvalues")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("pvalues must lie in [0, 1] and not be NaN.")
    m = p.size
    labels = np.ones(m, dtype=int)
    if m == 0:
        return labels
    order = np.argsort(p, kind="stable")
    passed = np.flatnonzero(p[order] <= fdr * np.arange(1, m + 1) / m)
    if passed.size:
        labels[order[: passed[-1] + 1]] = -1
    return labels
