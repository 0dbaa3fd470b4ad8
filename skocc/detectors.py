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
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.covariance import LedoitWolf
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._constraints import StrictInterval
from ._outlier import THRESHOLD_CONSTRAINTS, OutlierContractMixin, warn_if_not_finite
from ._runtime import resolve_device
from ._sklearn_compat import StrOptions, fit_context
from .images import as_array

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


_THRESHOLD_DOC = """contamination : float, default=0.05
        The share of new normal samples that ``predict`` may flag -1, in
        (0, 0.5]; sets ``offset_`` (see ``calibration``).
    calibration : {"holdout", "train"}, default="holdout"
        ``"holdout"``: ``fit`` holds out ``calibration_size`` of ``X``
        (drawn with ``random_state``), fits on the rest and sets ``offset_``
        to the split-conformal quantile of the held-out scores, so that a new
        normal sample is flagged with probability at most ``contamination``.
        ``"train"``: fits on every row and takes the ``contamination``
        quantile of the training scores (scikit-learn's definition; optimistic
        for a density that peaks at its own training points). The
        :class:`skocc.TwoStageOneClass` builds its detectors with ``"train"``
        and calibrates the whole model itself.
    calibration_size : float, default=0.2
        Share of ``X`` held out for ``"holdout"``, in (0, 0.5], at least
        ``ceil(1 / contamination - 1)`` rows; with fewer than twice that many
        rows nothing is held out and a
        :class:`~skocc.conformal.CalibrationWarning` is raised.
    random_state : int, RandomState instance or None, default=None
        Draws the held-out rows."""


def check_bandwidth(bandwidth, name="bandwidth"):
    """Raise a ValueError when a kernel of width ``bandwidth`` under- or overflows float64.

    The log-density divides squared distances by ``2 h^2``: ``h^2`` must be a
    positive, finite float64 whose reciprocal is finite too, which holds for
    ``h`` between about 1e-154 and 1e154. ``name`` says which parameter set it.
    """
    h2 = float(bandwidth) * float(bandwidth)  # inf on overflow (** raises OverflowError)
    if not (math.isfinite(h2) and h2 > 0 and math.isfinite(0.5 / h2)):
        raise ValueError(
            f"{name} gives a kernel bandwidth of {float(bandwidth)!r}, whose square "
            f"{h2!r} under- or overflows float64; the bandwidth must lie between about "
            "1e-154 and 1e154 (scale the features, or choose another value)."
        )


class _Detector(OutlierContractMixin, OutlierMixin, BaseEstimator):
    """A density on feature vectors with the outlier contract and its calibration.

    Subclasses implement ``_fit_density(X)`` and ``_log_density(X)`` on
    validated float64 arrays.
    """

    _parameter_constraints: dict = {**THRESHOLD_CONSTRAINTS, "random_state": ["random_state"]}

    def _fit_and_calibrate(self, X):
        seed = None
        if self.calibration == "holdout":  # with random_state=None: NumPy's global generator
            seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        # Below fit and fit's wrapper: the user's code is 4 frames up.
        train, calibration = self._calibration_split(X.shape[0], seed, stacklevel=4)
        if calibration is None:  # no copy of X when every row is trained on
            self._fit_density(X)
            self._set_threshold(self._log_density(X), held_out=False)
        else:
            self._fit_density(X[train])
            self._set_threshold(self._log_density(X[calibration]), held_out=True)
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
        X = validate_data(self, as_array(X, "X"), dtype=np.float64, reset=False)
        return warn_if_not_finite(self._log_density(X), self._overflow_cause)


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
    %(threshold)s
    batch_size : int, default=1024
        Query rows per batch.
    device : str, default="cpu"
        Torch device of the computation (``"cuda"`` for large problems);
        ``"auto"`` uses CUDA when available at scoring time, else the CPU.

    Attributes
    ----------
    bandwidth_ : float
    offset_ : float
        Threshold on ``score_samples``.
    calibration_scores_ : ndarray of shape (n_calibration,)
        Sorted scores of the rows ``offset_`` was set from: the reference of
        ``pvalues``.
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
        **_Detector._parameter_constraints,
        "bandwidth": [
            StrictInterval(Real, 0, None, closed="neither"),
            StrOptions({"auto", "median"}),
        ],
        "batch_size": [StrictInterval(Integral, 1, None, closed="left")],
        "device": [str],
    }

    def __init__(
        self,
        bandwidth="auto",
        *,
        contamination=0.05,
        calibration="holdout",
        calibration_size=0.2,
        random_state=None,
        batch_size=1024,
        device="cpu",
    ):
        self.bandwidth = bandwidth
        self.contamination = contamination
        self.calibration = calibration
        self.calibration_size = calibration_size
        self.random_state = random_state
        self.batch_size = batch_size
        self.device = device

    @fit_context(prefer_skip_nested_validation=True)
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
        X = validate_data(self, as_array(X, "X"), dtype=np.float64, reset=True)
        resolve_device(self.device)  # a clear error for a bad device, before any work
        return self._fit_and_calibrate(X)

    def _fit_density(self, X):
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
        check_bandwidth(
            self.bandwidth_,
            f"bandwidth={self.bandwidth!r}"
            + (" (the rule's value for this X)" if isinstance(self.bandwidth, str) else ""),
        )
        self.X_fit_ = X.copy()

    def _log_density(self, X):
        device = torch.device(resolve_device(self.device))
        train = torch.from_numpy(self.X_fit_).to(device)
        n, d = train.shape
        h2 = self.bandwidth_**2
        const = math.log(n) + 0.5 * d * math.log(2.0 * math.pi * h2)
        step = int(self.batch_size)
        out = []
        for start in range(0, X.shape[0], step):
            # A copy of the batch: X may be read-only memory, which torch cannot wrap.
            query = torch.tensor(X[start : start + step], device=device)
            sq = torch.cdist(query, train).pow_(2)
            out.append(torch.logsumexp(sq.mul_(-0.5 / h2), dim=1).cpu())
        if not out:
            return np.empty(0)
        return torch.cat(out).numpy() - const

    @property
    def _overflow_cause(self):
        return (
            "the squared distance to every training point overflows float64 at rows far "
            f"from the training data, at bandwidth_={self.bandwidth_:.3g}"
        )


def shrunk_gaussian(
    X,
    name="X",
    advice="Scale the features (e.g. with sklearn.preprocessing.StandardScaler).",
):
    """``(location, covariance, cholesky)`` of a Ledoit-Wolf Gaussian of the rows of ``X``.

    ``cholesky`` is :func:`ridged_cholesky` of the covariance. A ValueError
    where the covariance overflows float64 (or ``X`` is not finite), naming
    the data (``name``) and what to do (``advice``).
    """
    try:
        # Overflow raises here instead of surfacing as a NaN that
        # scikit-learn then reports as "Input contains NaN".
        with np.errstate(over="raise", invalid="raise"):
            lw = LedoitWolf().fit(X)
            chol = ridged_cholesky(lw.covariance_)
    except (FloatingPointError, ValueError, np.linalg.LinAlgError) as exc:
        raise ValueError(
            f"The covariance of {name} overflowed float64 ({exc}): {name} has values up to "
            f"{np.abs(X).max():.3g} in absolute value, whose squares exceed float64's range. "
            + advice
        ) from None
    return lw.location_, lw.covariance_, chol


def ridged_cholesky(covariance):
    """Lower Cholesky factor of ``covariance`` plus ``1e-10`` times its trace (at least 1e-10).

    The ridge keeps the factor defined when features are constant; a
    covariance that is not positive semi-definite raises ``LinAlgError``.
    """
    ridge = 1e-10 * max(float(np.trace(covariance)), 1.0)
    return np.linalg.cholesky(covariance + ridge * np.eye(len(covariance)))


def whitening(cholesky):
    """``W = L^-T`` for the lower Cholesky factor ``L`` of a covariance.

    ``||(x - location) W||`` is then the Mahalanobis distance of a row ``x``.
    A matrix product with the exact float64 inverse differs from a triangular
    solve by rounding only, and ONNX has no triangular solve.
    """
    from scipy.linalg import solve_triangular

    return solve_triangular(cholesky, np.eye(len(cholesky)), lower=True).T.copy()


class GaussianDensity(_Detector):
    """One full-covariance Gaussian (Sohn et al.'s "GDE"), Ledoit-Wolf shrunk.

    ``score_samples(X)`` is the Gaussian log-density at every row, with the
    training mean and the Ledoit-Wolf covariance (well conditioned even when
    features outnumber samples).

    Parameters
    ----------
    %(threshold)s

    Attributes
    ----------
    location_ : ndarray of shape (n_features,)
    covariance_ : ndarray of shape (n_features, n_features)
    offset_ : float
        Threshold on ``score_samples``.
    calibration_scores_ : ndarray of shape (n_calibration,)
        Sorted scores of the rows ``offset_`` was set from: the reference of
        ``pvalues``.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined only when ``X`` had string column names.
    """

    _parameter_constraints: dict = dict(_Detector._parameter_constraints)

    def __init__(
        self, *, contamination=0.05, calibration="holdout", calibration_size=0.2, random_state=None
    ):
        self.contamination = contamination
        self.calibration = calibration
        self.calibration_size = calibration_size
        self.random_state = random_state

    @fit_context(prefer_skip_nested_validation=True)
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
        X = validate_data(
            self, as_array(X, "X"), dtype=np.float64, reset=True, ensure_min_samples=2
        )
        return self._fit_and_calibrate(X)

    def _fit_density(self, X):
        self.location_, self.covariance_, self._chol = shrunk_gaussian(X)
        self._log_norm = float(
            np.log(np.diag(self._chol)).sum() + 0.5 * X.shape[1] * np.log(2.0 * np.pi)
        )

    def _log_density(self, X):
        from scipy.linalg import solve_triangular

        # Rows far outside the training range overflow to -inf: reported once,
        # in score_samples, rather than by NumPy's warning from inside the sum.
        with np.errstate(over="ignore", invalid="ignore"):
            white = solve_triangular(self._chol, (X - self.location_).T, lower=True)
            return -0.5 * (white**2).sum(axis=0) - self._log_norm

    _overflow_cause = (
        "the squared Mahalanobis distance overflows float64 at rows far from the training data"
    )

    def _log_density_parameters(self):
        """``(location, cholesky, log_norm)`` of the fitted Gaussian.

        :meth:`score_samples` is ``-0.5 * ||L^-1 (x - location)||^2 - log_norm``
        with ``L = cholesky`` (lower triangular, of the ridged covariance);
        :func:`skocc.export_onnx` writes the same into its graph.
        """
        check_is_fitted(self)
        return self.location_, self._chol, self._log_norm


for _cls in (GaussianKDE, GaussianDensity):
    _cls.__doc__ = _cls.__doc__.replace("%(threshold)s", _THRESHOLD_DOC)
