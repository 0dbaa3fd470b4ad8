"""SelfSupervisedFeatures, TwoStageOneClass and the classical detectors."""

import pickle

import joblib
import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.base import BaseEstimator, clone
from sklearn.covariance import LedoitWolf
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.svm import OneClassSVM

from skocc import SelfSupervisedFeatures, TwoStageOneClass
from skocc.detectors import GaussianDensity, GaussianKDE, scaled_gamma
from skocc.losses import nt_xent
from skocc.model_selection import OneClassKFold, anomaly_scorers
from skocc.nn.self_supervised import SelfSupervisedNet, augment, rotate

from ._settings import fast_features


def _digit(digits, label=0):
    X_train, X_test, y_train, y_test = digits
    return X_train[y_train == label], X_test, np.where(y_test == label, 1, -1)


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


def test_nt_xent_matches_its_definition():
    z = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    loss = nt_xent(z, 0.5).numpy()
    sim = (z @ z.T).numpy() / 0.5
    for i in range(6):
        others = [sim[i, k] for k in range(6) if k != i]
        assert loss[i] == pytest.approx(-(sim[i, (i + 3) % 6] - logsumexp(others)), rel=1e-5)
    with pytest.raises(ValueError, match="even"):
        nt_xent(z[:5])


# ------------------------------------------------------ network pieces
def test_augment_keeps_shape_and_varies():
    x = torch.rand(8, 3, 16, 16)
    torch.manual_seed(0)
    a = augment(x)
    b = augment(x)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert not torch.allclose(a, b)
    # Full-size crop, no flip, no jitter: the identity.
    same = augment(x, crop_scale=(1.0, 1.0), flip=False, jitter=0.0)
    # The aspect ratio still varies, so only the centre row/column is exact;
    # a unit-area square crop would be the identity up to interpolation.
    assert same.shape == x.shape


def test_rotation_pretext_targets_and_non_square_images():
    net = SelfSupervisedNet((1, 6, 10), pretext="rotation", width=4, head_dim=8)
    logits, targets = net(torch.rand(5, 1, 6, 10))
    assert logits.shape == (20, 4)
    np.testing.assert_array_equal(targets.numpy(), np.repeat(np.arange(4), 5))
    assert torch.equal(rotate(rotate(torch.arange(6.0).view(1, 1, 2, 3), 1), 3), torch.arange(6.0).view(1, 1, 2, 3))


@pytest.mark.parametrize("pretext,n_embeddings", [("contrastive", 2 * 5), ("contrastive_da", 2 * 4 * 5)])
def test_contrastive_pretexts_give_pairs(pretext, n_embeddings):
    net = SelfSupervisedNet((1, 8, 8), pretext=pretext, width=4, head_dim=8)
    z, targets = net(torch.rand(5, 1, 8, 8))
    assert targets is None and z.shape == (n_embeddings, 8)
    np.testing.assert_allclose(z.norm(dim=1).detach().numpy(), 1.0, rtol=1e-5)


# ------------------------------------------------ SelfSupervisedFeatures
@pytest.mark.parametrize("pretext", ["rotation", "contrastive", "contrastive_da"])
def test_features_shape_norm_and_determinism(digits, pretext):
    X, X_test, _ = _digit(digits)
    state = torch.random.get_rng_state()
    a = fast_features(pretext=pretext).fit(X).transform(X_test[:30])
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    b = fast_features(pretext=pretext).fit(X).transform(X_test[:30])
    assert a.shape == (30, 16) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(a, b)
    c = fast_features(pretext=pretext, random_state=1).fit(X).transform(X_test[:30])
    assert not np.allclose(a, c)


def test_features_layers_encoders_and_names(digits):
    X, X_test, _ = _digit(digits)
    model = fast_features(head_dim=6).fit(X)
    assert model.transform(X_test[:3]).shape == (3, 16)
    model.set_params(feature_layer="head")
    assert model.transform(X_test[:3]).shape == (3, 6)
    names = model.get_feature_names_out()
    assert names.shape == (6,) and names[0] == "selfsupervisedfeatures0"
    resnet = fast_features(encoder="resnet18", max_epochs=1).fit(X[:20])
    assert resnet.transform(X_test[:3]).shape == (3, 32)  # 8 * width


@pytest.mark.parametrize("pretext", ["rotation", "contrastive", "contrastive_da"])
def test_features_training_lowers_the_pretext_loss(digits, pretext):
    X, _, _ = _digit(digits)
    # Against the same network with lr=1e-9 (weights that do not move): the
    # mean loss of the last three epochs. Measured: rotation 0.85 against
    # 1.45, contrastive 4.19 against 4.53, contrastive_da 4.83 against 5.81.
    def last_losses(lr):
        model = fast_features(pretext=pretext, width=8, max_epochs=10, lr=lr).fit(X)
        return np.mean(model.net_.history[-3:, "train_loss"])

    assert last_losses(1e-3) < last_losses(1e-9) - 0.2


def test_learned_features_separate_a_digit_better_than_untrained(digits):
    # Rotation features of the digit 3 against every other digit, exact KDE.
    # Measured with random_state 0, 1, 2: trained 0.971, 0.974, 0.969; the
    # untrained encoder (lr=1e-9: batch norm sees the data, weights do not
    # move) 0.757, 0.806, 0.876. The floor sits between them.
    X, X_test, y = _digit(digits, 3)
    params = dict(pretext="rotation", width=8, head_dim=32, device="cpu", random_state=0)

    def auroc(**training):
        model = TwoStageOneClass(
            SelfSupervisedFeatures(**params, **training), "kde", rotation_ensemble=False
        )
        return roc_auc_score(y, model.fit(X).score_samples(X_test))

    trained = auroc(max_epochs=20)
    untrained = auroc(max_epochs=1, lr=1e-9)
    assert trained > 0.93 > untrained


@pytest.mark.parametrize(
    "params,match",
    [
        (dict(crop_scale=(0.0, 1.0)), "crop_scale"),
        (dict(crop_scale=(0.9, 0.5)), "crop_scale"),
        (dict(pretext="jigsaw"), "pretext"),
        (dict(encoder="vgg"), "encoder"),
        (dict(temperature=0), "temperature"),
    ],
)
def test_features_bad_parameters(digits, params, match):
    X, _, _ = _digit(digits)
    with pytest.raises(ValueError, match=match):
        fast_features(**params).fit(X)


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
