"""Classical one-class detectors for feature vectors: exact Gaussian KDE, Gaussian density.

The second stage of :class:`skocc.TwoStageOneClass`, and usable on their own
with scikit-learn's outlier contract (``score_samples`` higher = more normal,
``decision_function = score_samples - offset_``, ``predict`` in {+1, -1}).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch
from scipy.spatial.distance import pdist
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context
from sklearn.covariance import LedoitWolf
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._outlier import OutlierContractMixin
from .base import resolve_device

__all__ = ["GaussianDensity", "GaussianKDE", "scaled_gamma"]

# Rows used by the median-distance rule: all of them up to this many, else an
# evenly spaced subset (deterministic), so the rule stays O(1) in memory.
_MEDIAN_RULE_MAX_ROWS = 4000


def scaled_gamma(X, factor=10.0):
    """The RBF ``gamma`` of Sohn et al.: ``factor / (Var(X) * d)``.

    ``Var(X)`` is the variance of all entries of ``X`` and ``d`` its number of
    columns, so ``factor=1`` is scikit-learn's ``gamma="scale"`` and the
    default 10 is the rule of Sohn et al. (ICLR 2021) for features of
    self-supervised networks.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    factor : float, default=10.0

    Returns
    -------
    gamma : float
        ``inf`` is never returned: constant ``X`` gives ``factor / d``.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] == 0:
        raise ValueError(
            f"scaled_gamma needs a 2-D array (n_samples, n_features); got shape {X.shape}."
        )
    var = float(X.var())
    return float(factor / ((var if var > 0 else 1.0) * X.shape[1]))


class _Detector(OutlierContractMixin, OutlierMixin, BaseEstimator):
    """``offset_`` from ``contamination``; the rest of the outlier contract from the mixin."""

    def _set_offset(self, X):
        scores = self.score_samples(X)
        self.offset_ = float(np.percentile(scores, 100.0 * self.contamination))


class GaussianKDE(_Detector):
    """Exact Gaussian kernel density estimate, batched, in float64, on a torch device.

    ``score_samples(X)`` is the log-density

    .. math::

        \\log \\frac{1}{n} \\sum_{i=1}^{n} (2 \\pi h^2)^{-d/2}
        \\exp\\left(-\\frac{\\lVert x - x_i \\rVert^2}{2 h^2}\\right)

    computed with a log-sum-exp over all ``n`` training points, in batches of
    ``batch_size`` query rows. Unlike :class:`sklearn.neighbors.KernelDensity`,
    whose tree-based approximation returned log-densities off by hundreds of
    nats at small bandwidths in skocc's measurements, nothing is approximated.
    Memory per batch is ``batch_size * n`` float64 values.

    Parameters
    ----------
    bandwidth : float, "auto" or "median", default="auto"
        Kernel standard deviation ``h``. ``"auto"``: ``h = 1 / sqrt(2 gamma)``
        with ``gamma = 10 / (Var(X) * d)`` (:func:`scaled_gamma`, the rule of
        Sohn et al. for self-supervised features); ``"median"``: the median
        distance between training points divided by ``sqrt(2)`` (1 when that
        distance is 0, e.g. for one training point). The value used is
        ``bandwidth_``.
    contamination : float, default=0.05
        Proportion of training samples predicted -1; sets ``offset_``.
    batch_size : int, default=1024
        Query rows per batch.
    device : str, default="cpu"
        Torch device of the computation (``"cuda"`` for large problems);
        ``"auto"`` uses CUDA when available at scoring time, else the CPU.

    Attributes
    ----------
    bandwidth_ : float
    offset_ : float
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined only when ``X`` had string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from skocc.detectors import GaussianKDE
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> kde = GaussianKDE(bandwidth=0.5).fit(X)
    >>> kde.predict([[0.0, 0.0], [6.0, 6.0]]).tolist()
    [1, -1]
    """

    _parameter_constraints: dict = {
        "bandwidth": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto", "median"})],
        "contamination": [Interval(Real, 0, 0.5, closed="right")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
    }

    def __init__(self, bandwidth="auto", *, contamination=0.05, batch_size=1024, device="cpu"):
        self.bandwidth = bandwidth
        self.contamination = contamination
        self.batch_size = batch_size
        self.device = device

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Store the training points and choose the bandwidth.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        self : object
        """
        X = validate_data(self, X, dtype=np.float64, reset=True)
        resolve_device(self.device)  # a clear error for a bad device, before any work
        if self.bandwidth == "auto":
            self.bandwidth_ = float(1.0 / math.sqrt(2.0 * scaled_gamma(X)))
        elif self.bandwidth == "median":
            rows = X
            if len(X) > _MEDIAN_RULE_MAX_ROWS:
                rows = X[np.linspace(0, len(X) - 1, _MEDIAN_RULE_MAX_ROWS).astype(int)]
            median = float(np.median(pdist(rows))) if len(rows) > 1 else 0.0
            self.bandwidth_ = median / math.sqrt(2.0) if median > 0 else 1.0
        else:
            self.bandwidth_ = float(self.bandwidth)
        self.X_fit_ = X.copy()
        self._set_offset(X)
        return self

    def score_samples(self, X):
        """Log-density of every row (higher = more normal).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_density : ndarray of shape (n_samples,), dtype float64
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        device = torch.device(resolve_device(self.device))
        train = torch.from_numpy(self.X_fit_).to(device)
        n, d = train.shape
        h2 = self.bandwidth_**2
        const = math.log(n) + 0.5 * d * math.log(2.0 * math.pi * h2)
        step = int(self.batch_size)
        out = []
        for start in range(0, X.shape[0], step):
            query = torch.from_numpy(X[start : start + step]).to(device)
            sq = torch.cdist(query, train).pow_(2)
            out.append(torch.logsumexp(sq.mul_(-0.5 / h2), dim=1).cpu())
        if not out:
            return np.empty(0)
        return torch.cat(out).numpy() - const


class GaussianDensity(_Detector):
    """One full-covariance Gaussian (Sohn et al.'s "GDE"), Ledoit-Wolf shrunk.

    ``score_samples(X)`` is the Gaussian log-density at every row, with the
    training mean and the Ledoit-Wolf covariance (well conditioned even when
    features outnumber samples).

    Parameters
    ----------
    contamination : float, default=0.05
        Proportion of training samples predicted -1; sets ``offset_``.

    Attributes
    ----------
    location_ : ndarray of shape (n_features,)
    covariance_ : ndarray of shape (n_features, n_features)
    offset_ : float
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined only when ``X`` had string column names.
    """

    _parameter_constraints: dict = {
        "contamination": [Interval(Real, 0, 0.5, closed="right")],
    }

    def __init__(self, *, contamination=0.05):
        self.contamination = contamination

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Estimate the mean and the shrunk covariance.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        self : object
        """
        X = validate_data(self, X, dtype=np.float64, reset=True, ensure_min_samples=2)
        lw = LedoitWolf().fit(X)
        self.location_ = lw.location_
        self.covariance_ = lw.covariance_
        # Constant features give a singular covariance; a tiny ridge keeps it invertible.
        cov = self.covariance_ + 1e-10 * np.eye(X.shape[1]) * max(np.trace(self.covariance_), 1.0)
        self._chol = np.linalg.cholesky(cov)
        self._log_norm = float(
            np.log(np.diag(self._chol)).sum() + 0.5 * X.shape[1] * np.log(2.0 * np.pi)
        )
        self._set_offset(X)
        return self

    def score_samples(self, X):
        """Gaussian log-density of every row (higher = more normal).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_density : ndarray of shape (n_samples,), dtype float64
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        from scipy.linalg import solve_triangular

        white = solve_triangular(self._chol, (X - self.location_).T, lower=True)
        return -0.5 * (white**2).sum(axis=0) - self._log_norm

    def _log_density_parameters(self):
        """``(location, cholesky, log_norm)`` of the fitted Gaussian.

        :meth:`score_samples` is ``-0.5 * ||L^-1 (x - location)||^2 - log_norm``
        with ``L = cholesky`` (lower triangular, of the ridged covariance);
        :func:`skocc.export_onnx` writes the same into its graph.
        """
        check_is_fitted(self)
        return self.location_, self._chol, self._log_norm
