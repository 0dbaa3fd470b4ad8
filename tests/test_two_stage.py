"""TwoStageOneClass: self-supervised features, then a classical detector."""

import pickle

import joblib
import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import IsolationForest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.svm import OneClassSVM

from skocc import SelfSupervisedFeatures, TwoStageOneClass
from skocc.detectors import GaussianDensity, GaussianKDE, scaled_gamma
from skocc.model_selection import OneClassKFold, anomaly_scorers

from ._settings import fast_features


def _digit(digits, label=0):
    X_train, X_test, y_train, y_test = digits
    return X_train[y_train == label], X_test, np.where(y_test == label, 1, -1)


# ------------------------------------------------------ TwoStageOneClass
@pytest.mark.parametrize("detector", ["kde", "ocsvm", "gde", IsolationForest(random_state=0)])
def test_two_stage_contract(digits, detector):
    X, X_test, _ = _digit(digits)
    model = TwoStageOneClass(
        fast_features(), detector, contamination=0.1, calibration="train"
    ).fit(X)
    scores = model.score_samples(X_test)
    assert scores.dtype == np.float64 and scores.shape == (len(X_test),)
    np.testing.assert_allclose(model.decision_function(X_test), scores - model.offset_)
    np.testing.assert_array_equal(model.predict(X_test), np.where(scores >= model.offset_, 1, -1))
    assert np.mean(model.predict(X) == -1) == pytest.approx(0.1, abs=0.03)
    np.testing.assert_allclose(model.anomaly_score(X_test), -scores)
    if isinstance(detector, str) and detector != "gde":
        assert model.gamma_ == pytest.approx(scaled_gamma(model.features_.transform(X)))


def test_rotation_ensemble_adds_standardised_scores_of_four_turns(digits):
    X, X_test, _ = _digit(digits)
    model = TwoStageOneClass(
        fast_features(), "gde", rotation_ensemble=True, calibration="train"
    ).fit(X)
    assert len(model.detectors_) == 4 and model.detector_ is model.detectors_[0]
    expected = 0
    for k, detector in enumerate(model.detectors_):
        train = model.features_.transform(np.rot90(X, k, axes=(1, 2)).copy())
        test = model.features_.transform(np.rot90(X_test, k, axes=(1, 2)).copy())
        reference = GaussianDensity(calibration="train").fit(train)
        np.testing.assert_allclose(detector.location_, reference.location_, rtol=1e-5, atol=1e-6)
        s_train = reference.score_samples(train)
        expected = expected + (reference.score_samples(test) - s_train.mean()) / s_train.std()
    np.testing.assert_allclose(model.score_samples(X_test), expected, rtol=1e-4, atol=1e-4)
    assert np.mean(model.predict(X) == -1) == pytest.approx(0.05, abs=0.02)


class _NoRotations(BaseEstimator):
    fits = 0

    def fit(self, X, y=None):
        type(self).fits += 1
        return self

    def transform(self, X):
        return np.asarray(X).reshape(len(X), -1)


def test_rotation_ensemble_needs_rotatable_features_and_says_so_before_training(digits):
    X, _, _ = _digit(digits)
    _NoRotations.fits = 0
    with pytest.raises(ValueError, match="rotation_ensemble"):
        TwoStageOneClass(_NoRotations(), "gde", rotation_ensemble=True).fit(X)
    assert _NoRotations.fits == 0
    model = TwoStageOneClass(_NoRotations(), "gde", rotation_ensemble=False).fit(X)
    assert model.score_samples(X[:3]).shape == (3,)


def test_two_stage_equals_its_pipeline(digits):
    X, X_test, _ = _digit(digits)
    two_stage = TwoStageOneClass(
        fast_features(), OneClassSVM(gamma=2.0), rotation_ensemble=False, calibration="train"
    ).fit(X)
    pipe = Pipeline([("features", fast_features()), ("detector", OneClassSVM(gamma=2.0))]).fit(X)
    np.testing.assert_allclose(two_stage.score_samples(X_test), pipe.score_samples(X_test))


def test_two_stage_with_inlier_label_trains_on_normals_only(digits):
    X_train, _, y_train, _ = digits
    labels = np.where(y_train == 0, 1, -1)
    # The same seed draws the same held-out images from the same inliers.
    model = TwoStageOneClass(fast_features(inlier_label=1), random_state=0).fit(X_train, labels)
    reference = TwoStageOneClass(fast_features(), random_state=0).fit(X_train[labels == 1])
    np.testing.assert_allclose(
        model.score_samples(X_train[:20]), reference.score_samples(X_train[:20])
    )


def test_grid_search_over_pretext_detector_and_its_parameters(digits):
    X_train, _, y_train, _ = digits
    X = X_train[y_train <= 1][:120]
    y = np.where(y_train[y_train <= 1][:120] == 0, 1, -1)
    model = TwoStageOneClass(fast_features(max_epochs=1, inlier_label=1), OneClassSVM())
    grid = GridSearchCV(
        model,
        {"features__pretext": ["rotation", "contrastive_da"], "detector__nu": [0.1, 0.5]},
        cv=OneClassKFold(n_splits=2, shuffle=True, random_state=0),
        scoring=anomaly_scorers()["roc_auc"],
    ).fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    grid_detectors = GridSearchCV(
        TwoStageOneClass(fast_features(max_epochs=1, inlier_label=1)),
        {"detector": ["kde", "ocsvm", "gde"]},
        cv=OneClassKFold(n_splits=2, shuffle=True, random_state=0),
        scoring=anomaly_scorers()["roc_auc"],
    ).fit(X, y)
    assert grid_detectors.best_params_["detector"] in ("kde", "ocsvm", "gde")


class _CountingFeatures(SelfSupervisedFeatures):
    fits = 0

    def fit(self, X, y=None):
        type(self).fits += 1
        return super().fit(X, y)


def test_pipeline_memory_trains_the_network_once_for_many_detectors(digits, tmp_path):
    X, X_test, _ = _digit(digits)
    memory = joblib.Memory(tmp_path, verbose=0)
    scores = {}
    _CountingFeatures.fits = 0
    for name, detector in [("ocsvm", OneClassSVM()), ("kde", GaussianKDE()), ("gde", GaussianDensity())]:
        pipe = Pipeline(
            [("features", _CountingFeatures(width=4, head_dim=8, max_epochs=1, device="cpu", random_state=0)),
             ("detector", detector)],
            memory=memory,
        )
        scores[name] = pipe.fit(X).score_samples(X_test)
    assert _CountingFeatures.fits == 1
    assert len({tuple(np.round(s[:5], 6)) for s in scores.values()}) == 3


def test_two_stage_survives_clone_and_pickle(digits):
    X, X_test, _ = _digit(digits)
    model = TwoStageOneClass(fast_features(), "kde").fit(X)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.score_samples(X_test), model.score_samples(X_test))
    unfitted = clone(model)
    assert not hasattr(unfitted, "offset_")
    assert unfitted.get_params()["features__pretext"] == "contrastive_da"


def test_features_save_and_load_safely_two_stage_refuses(digits, tmp_path):
    import skocc

    X, X_test, _ = _digit(digits)
    features = fast_features(pretext="contrastive_da").fit(X)
    skocc.save(features, tmp_path / "features.skocc")
    loaded = skocc.load(tmp_path / "features.skocc")
    np.testing.assert_array_equal(loaded.transform(X_test), features.transform(X_test))
    with pytest.raises(TypeError, match="model.features_"):
        skocc.save(TwoStageOneClass(features).fit(X), tmp_path / "model.skocc")


def test_two_stage_bad_detector():
    with pytest.raises(ValueError, match="detector"):
        TwoStageOneClass(fast_features(), detector="lof").fit(np.zeros((10, 8, 8)))
