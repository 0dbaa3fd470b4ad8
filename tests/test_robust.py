"""TrimmedOneClass: a detector refitted without its least normal training images."""

import math
import pickle

import numpy as np
import pytest
from sklearn.base import BaseEstimator, OutlierMixin, clone
from sklearn.datasets import load_digits
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import LocalOutlierFactor
from sklearn.utils._param_validation import InvalidParameterError

from skocc import ConvAEOneClass, TrimmedOneClass
from skocc.detectors import GaussianKDE

from ._settings import FAST


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.reshape(-1, 8, 8) / 16.0, y


PLANTED = np.array([3, 20, 41, 60, 77, 101, 130, 150, 175])


def _dirty(zeros, defects):
    """170 zeros with 9 (5 %) defects planted at the positions ``PLANTED``."""
    images = np.empty((179, 8, 8))
    images[np.setdiff1d(np.arange(179), PLANTED)], images[PLANTED] = zeros[:170], defects[:9]
    return images


@pytest.fixture(scope="module")
def dirty_zeros(digits):
    """Zeros with ones planted among them."""
    X, y = digits
    return _dirty(X[y == 0], X[y == 1]), PLANTED


@pytest.fixture(scope="module")
def inverted_zeros(digits):
    """Zeros with inverted zeros planted among them (a reconstruction-error detector
    reconstructs thin ones well, so they are no defect to it)."""
    X, y = digits
    return _dirty(X[y == 0], 1.0 - X[y == 0][:9]), PLANTED


class _FixedScores(OutlierMixin, BaseEstimator):
    """Scores every sample by its first feature; no predict, no offset_."""

    def fit(self, X, y=None):
        self.n_fit_ = len(X)
        return self

    def score_samples(self, X):
        return np.asarray(X, dtype=np.float64)[:, 0]


# ------------------------------------------------------------ what it drops
@pytest.mark.parametrize(
    "estimator, flat, data",
    [
        (GaussianKDE(bandwidth="median", random_state=0), True, "dirty_zeros"),
        (LocalOutlierFactor(novelty=True), True, "dirty_zeros"),
        (IsolationForest(random_state=0), True, "inverted_zeros"),
        (ConvAEOneClass(**FAST), False, "inverted_zeros"),
    ],
    ids=["GaussianKDE", "LOF", "IsolationForest", "ConvAEOneClass"],
)
def test_drops_the_planted_outliers(request, estimator, flat, data):
    X, planted = request.getfixturevalue(data)
    X = X.reshape(len(X), -1) if flat else X
    model = TrimmedOneClass(estimator, trim=0.06).fit(X)
    assert model.n_trimmed_ == math.ceil(0.06 * len(X)) == 11
    caught = np.isin(planted, model.trimmed_indices_).sum()
    assert caught >= 7, f"only {caught} of the 9 planted ones were trimmed"


def test_trimmed_model_no_longer_learns_the_planted_class(dirty_zeros, digits):
    # The density of a KDE refitted without the planted ones falls at new ones
    # (their kernels are gone) and barely moves at new zeros.
    X, _ = dirty_zeros
    X_all, y_all = digits
    new_zeros = X_all[y_all == 0][170:].reshape(-1, 64)
    new_ones = X_all[y_all == 1][100:140].reshape(-1, 64)
    flat = X.reshape(len(X), -1)
    plain = GaussianKDE(bandwidth=0.5, calibration="train").fit(flat)
    trimmed = TrimmedOneClass(GaussianKDE(bandwidth=0.5, calibration="train")).fit(flat)
    drop_ones = np.mean(plain.score_samples(new_ones) - trimmed.score_samples(new_ones))
    drop_zeros = np.mean(plain.score_samples(new_zeros) - trimmed.score_samples(new_zeros))
    assert drop_ones > 1.0 > abs(drop_zeros), (drop_ones, drop_zeros)


@pytest.mark.parametrize("n, trim", [(100, 0.05), (101, 0.05), (20, 0.01), (7, 0.3), (50, 0.0)])
def test_drops_ceil_trim_n_and_refits_on_the_rest(n, trim):
    X = np.random.RandomState(0).normal(size=(n, 3))
    model = TrimmedOneClass(_FixedScores(), trim=trim).fit(X)
    n_trimmed = math.ceil(trim * n)
    assert model.n_trimmed_ == n_trimmed
    assert model.estimator_.n_fit_ == n - n_trimmed
    # The lowest first feature are the least normal, least normal first.
    np.testing.assert_array_equal(model.trimmed_indices_, np.argsort(X[:, 0])[:n_trimmed])
    assert model.trimmed_indices_.dtype.kind == "i"


def test_nan_scores_are_trimmed_first():
    X = np.arange(40.0).reshape(20, 2)
    X[[5, 11], 0] = np.nan
    model = TrimmedOneClass(_FixedScores(), trim=0.1).fit(X)
    assert sorted(model.trimmed_indices_.tolist()) == [5, 11]


def test_input_is_not_modified(digits):
    X = digits[0][:60].copy()
    before = X.copy()
    TrimmedOneClass(ConvAEOneClass(**FAST), trim=0.1).fit(X)
    np.testing.assert_array_equal(X, before)


# ------------------------------------------------------------ seeds
def test_trim_zero_is_the_plain_estimator(digits):
    X = digits[0][:80]
    plain = ConvAEOneClass(**FAST).fit(X)
    model = TrimmedOneClass(ConvAEOneClass(**FAST), trim=0).fit(X)
    assert model.n_trimmed_ == 0 and model.trimmed_indices_.size == 0
    np.testing.assert_array_equal(model.score_samples(X), plain.score_samples(X))
    assert model.offset_ == plain.offset_


def test_random_state_seeds_an_unseeded_estimator_and_keeps_an_explicit_seed(digits):
    X = digits[0][:60]
    unseeded = ConvAEOneClass(**{**FAST, "random_state": None})
    a = TrimmedOneClass(unseeded, trim=0.1, random_state=3).fit(X)
    b = TrimmedOneClass(unseeded, trim=0.1, random_state=3).fit(X)
    assert isinstance(a.estimator_.random_state, int)
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))
    assert unseeded.random_state is None  # the template is not touched
    seeded = TrimmedOneClass(ConvAEOneClass(**FAST), trim=0.1, random_state=3).fit(X)
    assert seeded.estimator_.random_state == FAST["random_state"]


# ------------------------------------------------------------ delegation
def test_delegates_to_a_skocc_estimator(digits):
    X, y = digits
    model = TrimmedOneClass(ConvAEOneClass(**FAST), trim=0.05).fit(X[y == 0][:100])
    test = X[:30]
    inner = model.estimator_
    np.testing.assert_array_equal(model.score_samples(test), inner.score_samples(test))
    np.testing.assert_array_equal(model.decision_function(test), model.score_samples(test) - model.offset_)
    np.testing.assert_array_equal(model.predict(test), inner.predict(test))
    np.testing.assert_array_equal(model.pvalues(test), inner.pvalues(test))
    np.testing.assert_array_equal(model.anomaly_score(test), -model.score_samples(test))
    assert model.score_map(test[:2]).shape == inner.score_map(test[:2]).shape
    assert model.explain(test[:2], steps=4).shape == inner.explain(test[:2], steps=4).shape
    before = model.offset_
    assert model.calibrate(X[y == 0][100:]) is model
    assert model.offset_ == inner.offset_ != before


def test_delegates_to_a_sklearn_detector():
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(size=(190, 2)), rng.normal(8.0, 0.3, size=(10, 2))]
    model = TrimmedOneClass(IsolationForest(random_state=0), trim=0.05).fit(X)
    assert np.isin(np.arange(190, 200), model.trimmed_indices_).sum() >= 9
    assert model.offset_ == model.estimator_.offset_
    assert model.n_features_in_ == 2
    assert model.predict([[0.0, 0.0], [8.0, 8.0]]).tolist() == [1, -1]
    for missing in ("pvalues", "calibrate", "score_map", "explain", "anomaly_score"):
        assert not hasattr(model, missing)


def test_hides_what_the_estimator_lacks():
    model = TrimmedOneClass(_FixedScores())
    assert not hasattr(model, "predict") and not hasattr(model, "decision_function")
    assert not hasattr(model, "offset_")
    model.fit(np.arange(20.0).reshape(10, 2))
    assert not hasattr(model, "offset_")
    assert model.score_samples([[1.0, 0.0]]).tolist() == [1.0]


def test_unfitted_model_has_no_offset():
    with pytest.raises(AttributeError, match="not fitted"):
        TrimmedOneClass(IsolationForest()).offset_


# ------------------------------------------------------------ sklearn tools
def test_clone_pickle_and_nested_parameters(digits):
    X = digits[0][:60].reshape(60, -1)
    model = TrimmedOneClass(LocalOutlierFactor(novelty=True), trim=0.1)
    assert model.get_params()["estimator__n_neighbors"] == 20
    model.set_params(estimator__n_neighbors=5, trim=0.2)
    cloned = clone(model)
    assert cloned.estimator.n_neighbors == 5 and cloned.trim == 0.2
    assert not hasattr(cloned, "estimator_")
    model.fit(X)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.score_samples(X), model.score_samples(X))
    np.testing.assert_array_equal(restored.trimmed_indices_, model.trimmed_indices_)


def test_grid_search_over_trim_and_the_estimator(digits):
    X, y = digits
    X = X.reshape(len(X), -1)[:300]
    labels = np.where(y[:300] == 0, 1, -1)
    search = GridSearchCV(
        TrimmedOneClass(LocalOutlierFactor(novelty=True)),
        {"trim": [0.0, 0.1], "estimator__n_neighbors": [5, 10]},
        scoring=lambda est, X, y: roc_auc_score(y == 1, est.score_samples(X)),
        cv=2,
    ).fit(X, labels)
    assert set(search.best_params_) == {"trim", "estimator__n_neighbors"}
    assert search.best_estimator_.n_trimmed_ == math.ceil(search.best_params_["trim"] * 300)


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "params, match",
    [
        (dict(trim=0.5), r"'trim' parameter .* range \[0(\.0)?, 0\.5\)"),
        (dict(trim=-0.1), "'trim' parameter"),
        (dict(trim=True), "'trim' parameter .* Got True"),
        (dict(trim="5%"), "'trim' parameter"),
        (dict(estimator=object()), "'estimator' parameter .*'fit' and 'score_samples'"),
        (dict(estimator=None), "'estimator' parameter"),
        (dict(random_state="seed"), "'random_state' parameter"),
    ],
)
def test_bad_parameters_name_the_argument(params, match):
    model = TrimmedOneClass(**{"estimator": IsolationForest(), **params})
    with pytest.raises(InvalidParameterError, match=match):
        model.fit(np.zeros((10, 2)))


def test_nothing_left_to_fit_is_refused():
    with pytest.raises(ValueError, match="drop ceil.* = 1 of the 1 training samples"):
        TrimmedOneClass(IsolationForest(), trim=0.2).fit(np.zeros((1, 2)))


def test_a_list_of_samples_is_indexed_as_an_array():
    X = np.random.RandomState(0).normal(size=(40, 2))
    from_list = TrimmedOneClass(_FixedScores(), trim=0.1).fit(X.tolist())
    np.testing.assert_array_equal(from_list.trimmed_indices_, np.argsort(X[:, 0])[:4])


def test_skocc_save_refuses_it_and_says_why(tmp_path):
    import skocc
    from skocc import TrimmedOneClass
    from skocc.detectors import GaussianKDE

    model = TrimmedOneClass(GaussianKDE(), random_state=0).fit(np.random.RandomState(0).rand(40, 3))
    with pytest.raises(TypeError, match="cannot store a TrimmedOneClass: its inner estimator"):
        skocc.save(model, tmp_path / "model.skocc")
