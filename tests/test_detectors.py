"""skocc.detectors: the exact KDE and the Gaussian density."""


import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.covariance import LedoitWolf

from skocc.detectors import GaussianDensity, GaussianKDE, scaled_gamma

from ._settings import modules_loaded_by


# ------------------------------------------------------------ detectors
def _brute_force_kde(train, query, h):
    n, d = train.shape
    out = []
    for q in query:
        terms = [-np.sum((q - t) ** 2) / (2 * h * h) for t in train]
        out.append(logsumexp(terms) - np.log(n) - 0.5 * d * np.log(2 * np.pi * h * h))
    return np.array(out)


@pytest.mark.parametrize("bandwidth", [0.05, 0.3, 2.0])
def test_gaussian_kde_matches_brute_force(bandwidth):
    rng = np.random.default_rng(0)
    train, query = rng.normal(size=(60, 5)), rng.normal(size=(25, 5)) * 1.5
    kde = GaussianKDE(bandwidth=bandwidth, batch_size=7, calibration="train").fit(train)
    np.testing.assert_allclose(
        kde.score_samples(query), _brute_force_kde(train, query, bandwidth), rtol=1e-10, atol=1e-8
    )


def test_gaussian_kde_small_bandwidth_is_exact_where_trees_are_not():
    # Far from every training point the log-density is hundreds of nats down:
    # the exact computation keeps it, and keeps the ranking of such points.
    rng = np.random.default_rng(1)
    train = rng.normal(size=(100, 8))
    query = train[:5] + 3.0
    scores = GaussianKDE(bandwidth=0.05, calibration="train").fit(train).score_samples(query)
    np.testing.assert_allclose(scores, _brute_force_kde(train, query, 0.05), rtol=1e-10)
    assert np.all(scores < -1000) and np.all(np.isfinite(scores))


def test_gaussian_kde_bandwidth_rules():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 4))
    auto = GaussianKDE(calibration="train").fit(X)
    assert auto.bandwidth_ == pytest.approx(1 / np.sqrt(2 * 10 / (X.var() * 4)))
    median = GaussianKDE(bandwidth="median", calibration="train").fit(X)
    from scipy.spatial.distance import pdist

    assert median.bandwidth_ == pytest.approx(np.median(pdist(X)) / np.sqrt(2))
    assert scaled_gamma(X, 1.0) == pytest.approx(1 / (X.var() * 4))  # sklearn's "scale"


def test_gaussian_kde_contract_and_input_untouched():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 2))
    before = X.copy()
    # scikit-learn's training-quantile definition of offset_.
    kde = GaussianKDE(bandwidth=0.5, contamination=0.1, calibration="train").fit(X)
    np.testing.assert_array_equal(X, before)
    assert np.mean(kde.predict(X) == -1) == pytest.approx(0.1, abs=0.01)
    np.testing.assert_allclose(kde.decision_function(X), kde.score_samples(X) - kde.offset_)
    with pytest.raises(ValueError, match="features"):
        kde.score_samples(rng.normal(size=(3, 5)))


def test_detector_parameters_are_checked():
    X = np.random.default_rng(5).normal(size=(20, 3))
    with pytest.raises(ValueError, match="batch_size"):
        GaussianKDE(batch_size=2.5).fit(X)
    with pytest.raises(ValueError, match="device"):
        GaussianKDE(device="gpu0").fit(X)
    # "auto" is the CPU here, and the scores are those of device="cpu".
    np.testing.assert_array_equal(
        GaussianKDE(device="auto", random_state=0).fit(X).score_samples(X),
        GaussianKDE(random_state=0).fit(X).score_samples(X),
    )
    with pytest.raises(ValueError, match="2-D"):
        scaled_gamma(np.ones(5))


def test_gaussian_density_matches_scipy():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(80, 6)) @ rng.normal(size=(6, 6))
    query = rng.normal(size=(10, 6))
    gde = GaussianDensity(calibration="train").fit(X)
    lw = LedoitWolf().fit(X)
    expected = multivariate_normal(lw.location_, lw.covariance_).logpdf(query)
    np.testing.assert_allclose(gde.score_samples(query), expected, rtol=1e-6)


def test_detectors_need_neither_skorch_nor_the_network_base():
    assert modules_loaded_by("import skocc.detectors", ["skorch", "skocc.base", "skocc._engine"]) == []
