"""Thresholds from held-out normal images: offset_, calibrate, p-values, BH."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import skocc
from skocc import ConvAEOneClass, TwoStageOneClass
from skocc.conformal import (
    CalibrationWarning,
    benjamini_hochberg,
    conformal_pvalues,
    conformal_threshold,
    min_calibration_size,
)
from skocc.detectors import GaussianDensity, GaussianKDE

from ._settings import FAST, fast_features


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.reshape(-1, 8, 8) / 16.0, y


@pytest.fixture(scope="module")
def zeros_model(digits):
    X, y = digits
    return ConvAEOneClass(**FAST).fit(X[y == 0][:120])


# ------------------------------------------------------------ the arithmetic
@pytest.mark.parametrize("contamination, n", [(0.05, 19), (0.01, 99), (0.1, 9), (0.5, 1), (0.3, 3)])
def test_min_calibration_size(contamination, n):
    assert min_calibration_size(contamination) == n
    conformal_threshold(np.arange(n, dtype=float), contamination)
    with pytest.raises(ValueError, match=f"needs at least {n} calibration scores; got {n - 1}"):
        conformal_threshold(np.arange(n - 1, dtype=float), contamination)


def test_conformal_threshold_is_the_kth_lowest_score():
    scores = np.random.default_rng(0).permutation(np.arange(1.0, 101.0))
    # k = floor(0.05 * 101) = 5: the 5th lowest of 1..100.
    assert conformal_threshold(scores, 0.05) == 5.0
    assert conformal_threshold(scores, 0.1) == 10.0
    # NaN scores count as the lowest.
    assert conformal_threshold(np.r_[np.nan, np.arange(1.0, 20.0)], 0.05) == -np.inf


def test_conformal_pvalues_definition():
    calibration = np.array([3.0, 1.0, 2.0, 2.0])
    p = conformal_pvalues([0.0, 1.0, 2.0, 2.5, 9.0, np.nan], calibration)
    np.testing.assert_allclose(p, [1 / 5, 2 / 5, 4 / 5, 4 / 5, 1.0, 1 / 5])


def test_pvalues_are_valid_over_many_calibration_draws():
    # The guarantee: for new normals exchangeable with the calibration set,
    # P(p <= alpha) <= alpha, marginally over the calibration draws; and not
    # far below it.
    rng = np.random.default_rng(0)
    alpha, n_draws, n_cal, n_new = 0.1, 400, 29, 50
    flagged = 0
    for _ in range(n_draws):
        p = conformal_pvalues(rng.normal(size=n_new), rng.normal(size=n_cal))
        flagged += int(np.sum(p <= alpha))
    share = flagged / (n_draws * n_new)
    exact = np.floor(alpha * (n_cal + 1)) / (n_cal + 1)  # 3 / 30
    # Over draws the share varies with the calibration sets (a Beta(3, 27)
    # coverage, sd 0.054 per draw) and the new samples: 4 sd is 0.011.
    margin = 4 * np.sqrt(exact * (1 - exact) / (n_cal + 2) / n_draws + exact / (n_draws * n_new))
    assert abs(share - exact) <= margin
    assert share <= alpha + margin


def test_detector_pvalues_and_predict_keep_the_promise_on_new_normals():
    # End to end through fit's held-out split: a Gaussian density on fresh
    # normal data, many times.
    rng = np.random.default_rng(1)
    contamination, rates = 0.1, []
    for seed in range(60):
        model = GaussianDensity(contamination=contamination, random_state=seed)
        model.fit(rng.normal(size=(150, 3)))
        new = rng.normal(size=(200, 3))
        labels, p = model.predict(new), model.pvalues(new)
        # predict flags exactly the samples whose p-value is <= contamination.
        np.testing.assert_array_equal(labels == -1, p <= contamination)
        rates.append(np.mean(labels == -1))
    # 30 held out: P(flag) = 3/31 = 0.097 <= 0.1; sd of the mean over 60 fits
    # is about 0.007.
    assert np.mean(rates) == pytest.approx(3 / 31, abs=0.025)
    assert np.mean(rates) <= contamination + 0.025


def test_benjamini_hochberg_matches_its_definition():
    p = np.array([0.01, 0.04, 0.03, 0.5, 0.2, 0.001])
    # sorted 0.001 0.01 0.03 0.04 0.2 0.5 against 0.1 * i / 6:
    # 0.0167 0.033 0.05 0.067 0.083 0.1 -> the largest passing i is 4.
    np.testing.assert_array_equal(benjamini_hochberg(p, fdr=0.1), [-1, -1, -1, 1, 1, -1])
    assert benjamini_hochberg([], fdr=0.1).size == 0
    assert benjamini_hochberg([0.9, 0.8], fdr=0.1).tolist() == [1, 1]
    with pytest.raises(ValueError, match="fdr must be a float in"):
        benjamini_hochberg(p, fdr=1.5)
    with pytest.raises(ValueError, match=r"pvalues must lie in \[0, 1\]"):
        benjamini_hochberg([0.5, np.nan])


def test_benjamini_hochberg_controls_the_false_discovery_rate_with_conformal_pvalues():
    rng = np.random.default_rng(2)
    fdr, ratios = 0.2, []
    for _ in range(300):
        calibration = rng.normal(size=99)
        normal, anomalies = rng.normal(size=80), rng.normal(-3.0, 1.0, size=20)
        labels = benjamini_hochberg(conformal_pvalues(np.r_[normal, anomalies], calibration), fdr)
        flagged = labels == -1
        ratios.append(flagged[:80].sum() / max(flagged.sum(), 1))
    # BH bounds the expected false-discovery proportion by fdr * 80 / 100.
    assert np.mean(ratios) <= fdr * 0.8 + 0.03


# ------------------------------------------------------------ fit
def test_fit_holds_out_calibration_images_and_never_trains_on_them():
    X = np.random.default_rng(3).normal(size=(100, 4))
    model = GaussianKDE(bandwidth=0.7, random_state=0).fit(X)
    assert model.X_fit_.shape == (80, 4) and model.calibration_scores_.shape == (20,)
    trained = {row.tobytes() for row in model.X_fit_}
    held_out = np.array([row.tobytes() not in trained for row in X])
    assert held_out.sum() == 20
    np.testing.assert_allclose(model.calibration_scores_, np.sort(model.score_samples(X[held_out])))
    assert model.offset_ == conformal_threshold(model.calibration_scores_, 0.05)
    # Seeded: the same rows again.
    np.testing.assert_array_equal(GaussianKDE(bandwidth=0.7, random_state=0).fit(X).X_fit_, model.X_fit_)


@pytest.mark.parametrize("contamination, n_held_out", [(0.05, 40), (0.01, 99), (0.2, 40)])
def test_held_out_count_is_a_fraction_with_a_minimum(contamination, n_held_out):
    X = np.random.default_rng(4).normal(size=(200, 3))
    model = GaussianDensity(contamination=contamination, random_state=0).fit(X)
    assert model.calibration_scores_.shape == (n_held_out,)


def test_too_few_images_fall_back_to_the_training_quantile_with_a_warning(digits):
    X, y = digits
    X = X[y == 3][:30]  # fewer than 2 x 19
    with pytest.warns(CalibrationWarning, match=r"got 30 normal samples.*calibrate\(X\) with at least 19"):
        model = ConvAEOneClass(**FAST).fit(X)
    scores = model.score_samples(X)
    assert model.offset_ == pytest.approx(np.percentile(scores, 5), rel=1e-5)
    np.testing.assert_allclose(model.calibration_scores_, np.sort(scores), rtol=1e-5)


def test_calibration_train_is_scikit_learns_definition(digits):
    X, y = digits
    X = X[y == 2]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        model = ConvAEOneClass(**FAST, calibration="train").fit(X)
    assert model.offset_ == pytest.approx(np.percentile(model.score_samples(X), 5), rel=1e-5)
    # Trained on every image: the same network as before held-out calibration existed.
    held = ConvAEOneClass(**FAST).fit(X)
    assert held.calibration_scores_.shape == (int(np.ceil(0.2 * len(X))),)


@pytest.mark.parametrize("param, value, match", [
    ("calibration", "test", "'calibration' parameter"),
    ("calibration_size", 1.0, "'calibration_size' parameter"),
    ("calibration_size", 0, "'calibration_size' parameter"),
])
def test_bad_calibration_parameters(digits, param, value, match):
    X, y = digits
    for model in (ConvAEOneClass(**FAST), GaussianKDE(), TwoStageOneClass(fast_features())):
        with pytest.raises(ValueError, match=match):
            model.set_params(**{param: value}).fit(X[y == 1] if not isinstance(model, GaussianKDE)
                                                   else X[y == 1].reshape(-1, 64))


# ------------------------------------------------------------ calibrate
def _state(model):
    return {k: v.clone() for k, v in model.net_.module_.state_dict().items()}


def test_calibrate_changes_the_threshold_and_nothing_else(zeros_model, digits):
    X, y = digits
    model = pickle.loads(pickle.dumps(zeros_model))
    new_normals, test = X[y == 0][120:150], X[:50]
    weights, scores, params = _state(model), model.score_samples(test), model.get_params()
    # The threshold's state: offset_, the calibration scores and the terms they come from.
    threshold = (
        "offset_",
        "calibration_scores_",
        "calibration_terms_",
        "threshold_held_out_",
        "calibration_leave_one_out_",
    )
    others = {k: v for k, v in vars(model).items() if k not in threshold}
    assert model.calibrate(new_normals) is model
    assert model.offset_ == conformal_threshold(model.score_samples(new_normals), 0.05)
    np.testing.assert_allclose(model.calibration_scores_, np.sort(model.score_samples(new_normals)))
    np.testing.assert_array_equal(model.score_samples(test), scores)
    assert model.get_params() == params
    for key, value in _state(model).items():
        assert torch.equal(value, weights[key])
    for key, value in others.items():
        assert vars(model)[key] is value
    np.testing.assert_array_equal(
        model.pvalues(test), conformal_pvalues(scores, model.score_samples(new_normals))
    )


def test_calibrate_needs_enough_images(zeros_model, digits):
    X, y = digits
    model = pickle.loads(pickle.dumps(zeros_model))
    before = model.offset_
    with pytest.raises(ValueError, match="calibrate needs at least 19 normal samples in X"):
        model.calibrate(X[y == 0][:18])
    assert model.offset_ == before
    with pytest.raises(ValueError, match="needs at least 99"):
        model.set_params(contamination=0.01).calibrate(X[y == 0][:50])


@pytest.mark.parametrize("make", [
    lambda: GaussianKDE(random_state=0),
    lambda: GaussianDensity(random_state=0),
    lambda: TwoStageOneClass(fast_features(), "gde", rotation_ensemble=False, random_state=0),
], ids=["kde", "gde", "two-stage"])
def test_every_detector_calibrates(make, digits):
    X, y = digits
    flat = not isinstance(make(), TwoStageOneClass)
    data = X.reshape(len(X), -1) if flat else X
    model = make().fit(data[y == 4][:100])
    new = data[y == 4][100:]
    model.calibrate(new)
    assert model.offset_ == conformal_threshold(model.score_samples(new), model.contamination)
    p = model.pvalues(data[:40])
    np.testing.assert_array_equal(model.predict(data[:40]) == -1, p <= model.contamination)


def test_calibration_survives_save_load_and_pickle(zeros_model, digits, tmp_path):
    X, y = digits
    model = pickle.loads(pickle.dumps(zeros_model)).calibrate(X[y == 0][120:])
    skocc.save(model, tmp_path / "m.skocc")
    for again in (skocc.load(tmp_path / "m.skocc"), pickle.loads(pickle.dumps(model))):
        assert again.offset_ == model.offset_
        np.testing.assert_array_equal(again.calibration_scores_, model.calibration_scores_)
        np.testing.assert_array_equal(again.pvalues(X[:30]), model.pvalues(X[:30]))
        np.testing.assert_array_equal(again.predict(X[:30]), model.predict(X[:30]))
    # A loaded model can be recalibrated.
    loaded = skocc.load(tmp_path / "m.skocc").calibrate(X[y == 0][:40])
    assert loaded.offset_ == conformal_threshold(loaded.score_samples(X[y == 0][:40]), 0.05)


# ------------------------------------------------------------ labels
def test_pyod_style_zero_one_labels_are_refused(digits):
    X, y = digits
    labels = (y != 0).astype(int)  # PyOD: 1 = anomaly
    with pytest.raises(ValueError, match=r"holds 0 and 1.*PyOD's convention\) pass inlier_label=0"):
        ConvAEOneClass(**FAST, inlier_label=1).fit(X, labels)
    with pytest.raises(ValueError, match="holds 0 and 1"):
        TwoStageOneClass(fast_features(inlier_label=1)).fit(X, labels)
    with pytest.raises(ValueError, match="holds 0 and 1"):
        fast_features(inlier_label=1).fit(X, labels)
    # The right label trains on the normals.
    model = ConvAEOneClass(**FAST, inlier_label=0).fit(X[:300], labels[:300])
    reference = ConvAEOneClass(**FAST).fit(X[:300][labels[:300] == 0])
    np.testing.assert_allclose(model.score_samples(X[:5]), reference.score_samples(X[:5]), rtol=1e-6)
    # Other label sets with inlier_label=1 are unambiguous: digit 1 normal.
    ConvAEOneClass(**FAST, inlier_label=1).fit(X[:200], y[:200])


# ------------------------------------------------------------ meta-estimator seed
def test_two_stage_random_state_is_passed_to_unseeded_features(digits):
    X, y = digits
    X = X[y == 5]
    a = TwoStageOneClass(fast_features(random_state=None), "gde", rotation_ensemble=False,
                         random_state=3).fit(X)
    b = TwoStageOneClass(fast_features(random_state=None), "gde", rotation_ensemble=False,
                         random_state=3).fit(X)
    np.testing.assert_array_equal(a.score_samples(X[:10]), b.score_samples(X[:10]))
    assert isinstance(a.features_.random_state, int)
    # An explicit seed of the features is kept.
    c = TwoStageOneClass(fast_features(random_state=7), "gde", rotation_ensemble=False,
                         random_state=3).fit(X)
    assert c.features_.random_state == 7


# ------------------------------------------------------------ edge cases
def test_calibration_size_above_one_half_is_refused():
    X = np.random.default_rng(5).normal(size=(100, 3))
    with pytest.raises(ValueError, match="'calibration_size' parameter"):
        GaussianDensity(calibration_size=0.6).fit(X)
    assert GaussianDensity(calibration_size=0.5, random_state=0).fit(X).calibration_scores_.size == 50


def test_a_threshold_on_non_finite_scores_is_refused_not_set():
    rng = np.random.default_rng(6)
    model = GaussianDensity(contamination=0.1, calibration="train").fit(rng.normal(size=(100, 2)))
    before = model.offset_
    overflowing = np.r_[np.full((3, 2), 1e200), rng.normal(size=(29, 2))]
    with pytest.warns(RuntimeWarning, match="not finite"):
        with pytest.raises(ValueError, match="falls on a score that is not finite: 3 of the 32"):
            model.calibrate(overflowing)
    assert model.offset_ == before


def test_calibrate_validates_contamination_set_after_fit():
    model = GaussianDensity(random_state=0).fit(np.random.default_rng(7).normal(size=(100, 2)))
    with pytest.raises(ValueError, match="'contamination' parameter"):
        model.set_params(contamination=0.9).calibrate(np.zeros((50, 2)))


def test_two_stage_fits_a_given_skocc_detector_on_every_training_image(digits):
    X, y = digits
    model = TwoStageOneClass(fast_features(), GaussianDensity(), rotation_ensemble=False,
                             random_state=0).fit(X[y == 6][:100])
    assert model.detector_.calibration == "train"
    assert model.detector_.calibration_scores_.size == 80  # 100 minus the 20 held out
    assert model.calibration_scores_.size == 20


def test_training_quantile_leaves_numpys_global_generator_alone():
    X = np.random.default_rng(8).normal(size=(60, 3))
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    GaussianDensity(calibration="train").fit(X)
    GaussianKDE(calibration="train").fit(X)
    assert np.random.rand() == expected


@pytest.mark.parametrize("calibration", ["holdout", "train"])
def test_threshold_follows_score_type_set_after_fit(digits, calibration):
    # Changing score_type after fit used to leave offset_ at the old score's
    # threshold, so that predict disagreed with the score it used.
    X, y = digits
    X_train, X_test = X[y == 0][:120], X[:200]
    params = dict(FAST, beta=0.1, calibration=calibration, max_epochs=3)
    model = ConvAEOneClass(score_type="combined", **params).fit(X_train)
    fresh = ConvAEOneClass(score_type="latent", **params).fit(X_train)
    model.set_params(score_type="latent")
    decision = model.decision_function(X_test)
    assert model.offset_ == fresh.offset_
    np.testing.assert_array_equal(model.calibration_scores_, fresh.calibration_scores_)
    np.testing.assert_allclose(decision, fresh.decision_function(X_test))
    np.testing.assert_array_equal(model.predict(X_test), fresh.predict(X_test))
    np.testing.assert_array_equal(model.pvalues(X_test), fresh.pvalues(X_test))
    model.score_type = "combined"  # also without set_params
    model.predict(X_test)
    assert model.offset_ != fresh.offset_
