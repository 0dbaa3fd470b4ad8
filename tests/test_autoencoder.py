"""ConvAEOneClass: the outlier contract on images, learning, robustness, plumbing."""

import pickle
import warnings
from unittest import mock

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.covariance import LedoitWolf
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer
from skorch.callbacks import Callback, EarlyStopping
from skorch.exceptions import DeviceWarning

from skocc import ConvAEOneClass
from skocc.nn.objectives import SCORE_TYPES

from ._settings import FAST


@pytest.fixture(scope="module")
def fitted(digits):
    X_train, _, y_train, _ = digits
    return ConvAEOneClass(**{**FAST, "max_epochs": 20}).fit(X_train[y_train == 0])


# ---------------------------------------------------------------- contract
@pytest.mark.parametrize("score_type", SCORE_TYPES)
def test_outlier_contract_on_images(digits, score_type):
    """sklearn's check_outliers_train, on images instead of 2-D blobs."""
    X_train, X_test, y_train, _ = digits
    X = X_train[y_train == 3]
    model = ConvAEOneClass(**FAST, score_type=score_type)
    assert model.fit(X) is model
    for data in (X, X_test):
        pred = model.predict(data)
        decision = model.decision_function(data)
        scores = model.score_samples(data)
        assert pred.dtype.kind == "i" and pred.shape == (len(data),)
        assert set(np.unique(pred)) <= {-1, 1}
        for out in (decision, scores):
            assert out.dtype == np.float64 and out.shape == (len(data),)
        np.testing.assert_array_equal(decision >= 0, pred == 1)
        np.testing.assert_allclose(scores - model.offset_, decision)
        np.testing.assert_allclose(model.anomaly_score(data), -scores)
    with pytest.raises(ValueError, match="is expecting 64 features"):
        model.predict(X_test[:, :4, :4])


@pytest.mark.parametrize("contamination", [0.05, 0.1, 0.25, 0.5])
def test_contamination_sets_the_expected_count(digits, contamination):
    X_train, _, y_train, _ = digits
    X = X_train[y_train == 5]
    # scikit-learn's training-quantile definition of offset_.
    model = ConvAEOneClass(**FAST, contamination=contamination, calibration="train").fit(X)
    n_out = int(np.sum(model.predict(X) == -1))
    assert abs(n_out - contamination * len(X)) <= 1


# ---------------------------------------------------------------- learning
def test_the_model_learns(digits, fitted):
    X_train, X_test, y_train, y_test = digits
    losses = fitted.net_.history[:, "train_loss"]
    assert losses[-1] < 0.7 * losses[0]
    scores = fitted.score_samples(X_test)
    assert np.std(scores) > 0

    untrained = ConvAEOneClass(**{**FAST, "max_epochs": 1, "lr": 1e-12})
    untrained.fit(X_train[y_train == 0])
    before = untrained.net_.module_.encoder.to_latent.weight.detach().clone()
    after = fitted.net_.module_.encoder.to_latent.weight.detach()
    assert not torch.allclose(before, after)

    auroc_trained = roc_auc_score(y_test == 0, scores)
    auroc_untrained = roc_auc_score(y_test == 0, untrained.score_samples(X_test))
    assert auroc_trained > 0.97
    assert auroc_untrained < 0.97


def test_latent_score_carries_information(digits):
    """The penalty must be earned: ||z|| alone separates normal from anomalous."""
    X_train, X_test, y_train, y_test = digits
    model = ConvAEOneClass(**{**FAST, "max_epochs": 30, "score_type": "latent", "beta": 1.0})
    model.fit(X_train[y_train == 0])
    assert roc_auc_score(y_test == 0, model.score_samples(X_test)) > 0.9


def test_mahalanobis_score_is_the_distance_under_the_training_codes_gaussian(digits):
    X_train, X_test, y_train, _ = digits
    X = X_train[y_train == 2]
    model = ConvAEOneClass(**FAST, calibration="train", score_type="mahalanobis").fit(X)
    codes, test_codes = model.encode(X).astype(np.float64), model.encode(X_test).astype(np.float64)
    gaussian = LedoitWolf().fit(codes)
    np.testing.assert_allclose(model.latent_location_, codes.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(model.latent_covariance_, gaussian.covariance_, rtol=1e-12)
    distance = np.sqrt(gaussian.mahalanobis(test_codes))
    # The ridge of 1e-10 times the trace is the only difference from scikit-learn's.
    np.testing.assert_allclose(-model.score_samples(X_test), distance, rtol=1e-5)

    train_error = -model.set_params(score_type="reconstruction").score_samples(X)
    test_error = -model.score_samples(X_test)
    train_distance = np.sqrt(gaussian.mahalanobis(codes))
    # Each term standardised with the training statistics (calibration="train"
    # holds nothing out), then the squares of their softplus added up.
    z_error = (test_error - train_error.mean()) / train_error.std()
    z_distance = (distance - train_distance.mean()) / train_distance.std()
    expected = np.logaddexp(0, z_error) ** 2 + np.logaddexp(0, z_distance) ** 2
    model.set_params(score_type="reconstruction+mahalanobis")
    np.testing.assert_allclose(-model.score_samples(X_test), expected, rtol=1e-5, atol=1e-6)


def test_the_latent_gaussian_is_fitted_on_the_training_part_only(digits):
    X_train, _, y_train, _ = digits
    X = X_train[y_train == 4]
    model = ConvAEOneClass(**FAST, score_type="mahalanobis").fit(X)  # 20 % held out
    # The held-out images are those whose distances the calibration terms hold.
    distances = -model.score_samples(X)
    held = np.isclose(distances[:, None], model.calibration_terms_[None, :, 2], rtol=1e-9).any(axis=1)
    assert held.sum() == len(model.calibration_terms_) < len(X)
    codes = model.encode(X).astype(np.float64)
    np.testing.assert_allclose(model.latent_location_, codes[~held].mean(axis=0), rtol=1e-6)
    assert not np.allclose(model.latent_location_, codes.mean(axis=0), rtol=1e-3)
    np.testing.assert_array_equal(model.latent_covariance_, model.latent_covariance_.T)


def test_held_out_images_standardise_the_terms_and_each_is_left_out_of_its_own(digits):
    X_train, X_test, y_train, _ = digits
    model = ConvAEOneClass(**FAST).fit(X_train[y_train == 3])  # 20 % held out
    terms = model.calibration_terms_
    assert model.calibration_leave_one_out_
    np.testing.assert_allclose(model.score_mean_, terms.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(model.score_std_, terms.std(axis=0), rtol=1e-12)

    def score(row, mean, std):
        z = (row[[0, 2]] - mean[[0, 2]]) / std[[0, 2]]
        return -np.sum(np.logaddexp(0, z) ** 2)

    # Each held-out image is scored with the statistics of the others, as a new image is.
    expected = [
        score(row, np.delete(terms, i, 0).mean(axis=0), np.delete(terms, i, 0).std(axis=0))
        for i, row in enumerate(terms)
    ]
    np.testing.assert_allclose(model.calibration_scores_, np.sort(expected), rtol=1e-10)
    # A new image with the statistics of all of them.
    test_terms = model._score_terms(model._validate_images(X_test[:5], reset=False))
    np.testing.assert_allclose(
        model.score_samples(X_test[:5]),
        [score(row, model.score_mean_, model.score_std_) for row in test_terms],
        rtol=1e-10,
    )
    # The threshold follows score_type with the same leave-one-out scores.
    model.set_params(score_type="combined")
    expected = [
        -np.sum(np.logaddexp(0, (row[:2] - others.mean(axis=0)) / others.std(axis=0)) ** 2)
        for i, row in enumerate(terms)
        for others in [np.delete(terms, i, 0)[:, :2]]
    ]
    np.testing.assert_allclose(model._threshold_now()[1], np.sort(expected), rtol=1e-10)
    model.set_params(score_type="reconstruction+mahalanobis")
    # calibrate(X) scores new images, which the statistics did not come from.
    model.calibrate(X_train[y_train == 3][:25])
    assert not model.calibration_leave_one_out_
    np.testing.assert_allclose(
        model.calibration_scores_,
        np.sort(model.score_samples(X_train[y_train == 3][:25])),
        rtol=1e-12,
    )


def test_too_few_held_out_images_for_their_statistics_use_the_training_ones(digits):
    X_train, _, y_train, _ = digits
    X = X_train[y_train == 3][:4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero
        model = ConvAEOneClass(**FAST, contamination=0.5).fit(X)  # 1 image held out
    assert len(model.calibration_terms_) == 1 and not model.calibration_leave_one_out_
    # The held-out image: the one whose distance the calibration terms hold
    # (up to float32 rounding in batches of another size).
    distances = -model.set_params(score_type="mahalanobis").score_samples(X)
    held = np.arange(len(X)) == np.argmin(np.abs(distances - model.calibration_terms_[0, 2]))
    training_terms = model._score_terms(model._validate_images(X[~held], reset=False))
    np.testing.assert_allclose(model.score_mean_, training_terms.mean(axis=0), rtol=1e-10)
    assert np.isfinite(model.offset_)


def test_determinism_and_global_rng_untouched(digits):
    X_train, X_test, y_train, _ = digits
    X = X_train[y_train == 1]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = ConvAEOneClass(**FAST).fit(X).score_samples(X_test)
    assert torch.equal(state, torch.get_rng_state())
    b = ConvAEOneClass(**FAST).fit(X).score_samples(X_test)
    np.testing.assert_array_equal(a, b)
    c = ConvAEOneClass(**{**FAST, "random_state": 1}).fit(X).score_samples(X_test)
    assert not np.array_equal(a, c)


def test_resolution_resizes_inside_the_network(digits):
    X_train, X_test, y_train, _ = digits
    model = ConvAEOneClass(**FAST, resolution=16).fit(X_train[y_train == 2])
    assert model.image_shape_ == (1, 8, 8)
    assert model.input_shape_ == (1, 16, 16)
    assert model.score_samples(X_test).shape == (len(X_test),)


@pytest.mark.parametrize("shape", [(6, 1, 28, 20), (6, 3, 5, 7), (6, 1, 1, 9), (6, 2, 2, 2)])
def test_network_adapts_to_any_size(shape):
    X = np.random.RandomState(0).rand(*shape).astype(np.float32)
    model = ConvAEOneClass(**FAST, data_format="channels_first").fit(X)
    assert model.encode(X).shape == (6, FAST["latent_dim"])
    assert model.score_samples(X).shape == (6,)


def test_normalize_image_makes_scores_invariant_to_brightness(digits):
    X_train, X_test, y_train, _ = digits
    model = ConvAEOneClass(**FAST, normalize="image").fit(X_train[y_train == 4])
    np.testing.assert_allclose(
        model.score_samples(X_test), model.score_samples(3 * X_test + 0.5), rtol=1e-4, atol=1e-4
    )


def test_uint8_and_float_input_agree(digits):
    X_train, X_test, y_train, _ = digits
    X8 = np.round(X_train[y_train == 6] * 255).astype(np.uint8)
    model = ConvAEOneClass(**FAST).fit(X8)
    T8 = np.round(X_test * 255).astype(np.uint8)
    np.testing.assert_allclose(
        model.score_samples(T8), model.score_samples(T8.astype(np.float32) / 255), rtol=1e-5
    )


def test_channels_last_input_matches_channels_first():
    rng = np.random.RandomState(0)
    X = rng.rand(20, 3, 8, 8).astype(np.float32)
    first = ConvAEOneClass(**FAST).fit(X).score_samples(X)
    last = ConvAEOneClass(**FAST).fit(X.transpose(0, 2, 3, 1)).score_samples(X.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(first, last, rtol=1e-5)


def test_encode_and_transform(fitted, digits):
    _, X_test, _, _ = digits
    codes = fitted.encode(X_test)
    assert codes.shape == (len(X_test), FAST["latent_dim"]) and codes.dtype == np.float32
    np.testing.assert_array_equal(codes, fitted.transform(X_test))
    names = fitted.get_feature_names_out()
    assert len(names) == FAST["latent_dim"] and names[0] == "convaeoneclass0"


def test_input_is_never_modified(digits):
    X_train, _, y_train, _ = digits
    X = X_train[y_train == 7].copy()
    X.setflags(write=False)  # any write would raise
    model = ConvAEOneClass(**FAST, normalize="image", resolution=10).fit(X)
    model.score_samples(X)
    X8 = (X * 255).astype(np.uint8)
    before = X8.copy()
    ConvAEOneClass(**FAST).fit(X8).score_samples(X8)
    np.testing.assert_array_equal(X8, before)


def test_torch_tensor_input(digits):
    X_train, _, y_train, _ = digits
    X = X_train[y_train == 8]
    a = ConvAEOneClass(**FAST).fit(X).score_samples(X)
    b = ConvAEOneClass(**FAST).fit(torch.from_numpy(X)).score_samples(torch.from_numpy(X))
    np.testing.assert_allclose(a, b)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "params, match",
    [
        ({"beta": -1.0}, "'beta' parameter of ConvAEOneClass must be a float in the range"),
        ({"contamination": 0.6}, "'contamination' parameter"),
        ({"score_type": "latnet"}, "'score_type' parameter"),
        ({"norm": "l1"}, "'norm' parameter"),
        ({"channels": ()}, "channels must be a non-empty tuple of positive ints"),
        ({"channels": (8, -1)}, "channels must be a non-empty tuple"),
        ({"device": "gpu0"}, "device must be 'auto' or a torch device string"),
        ({"resolution": 0}, "'resolution' parameter"),
        ({"device": "cuda:0"}, "CUDA is not available"),
        ({"data_format": "nhwc"}, "'data_format' parameter"),
        ({"precision": "float64"}, "'precision' parameter of ConvAEOneClass must be a str among"),
        ({"net_params": {"precision": "bfloat16"}}, "use the estimator parameter 'precision'"),
    ],
)
def test_bad_parameters(params, match):
    X = np.random.RandomState(0).rand(10, 8, 8)
    # CUDA is hidden so that the cuda case means the same on a GPU machine.
    with mock.patch("torch.cuda.is_available", return_value=False):
        with pytest.raises(ValueError, match=match):
            ConvAEOneClass(**{**FAST, **params}).fit(X)


def test_predict_with_other_image_shape(fitted):
    with pytest.raises(ValueError, match=r"fitted on samples of shape \(C, H, W\) = \(1, 8, 8\).*\(1, 9, 9\)"):
        fitted.score_samples(np.zeros((3, 9, 9)))
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict(np.full((3, 8, 8), np.nan))


def test_unfitted_model_raises():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        ConvAEOneClass().score_samples(np.zeros((2, 8, 8)))
    with pytest.raises(NotFittedError):
        ConvAEOneClass().get_feature_names_out()


def test_failed_fit_leaves_no_half_fitted_model(fitted):
    from sklearn.exceptions import NotFittedError

    model = ConvAEOneClass(**{**FAST, "channels": ()})
    with pytest.raises(ValueError, match="channels"):
        model.fit(np.zeros((10, 5, 5)))
    with pytest.raises(NotFittedError):
        model.score_samples(np.zeros((2, 5, 5)))
    refit = pickle.loads(pickle.dumps(fitted))  # a fitted model whose refit fails
    refit.set_params(channels=())
    with pytest.raises(ValueError, match="channels"):
        refit.fit(np.zeros((10, 5, 5)))
    with pytest.raises(NotFittedError):
        refit.predict(np.zeros((2, 8, 8)))


def test_non_finite_scores_are_anomalies(fitted):
    X = np.full((2, 8, 8), 3e38, dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="not finite"):
        scores = fitted.score_samples(X)
    assert not np.isfinite(scores).any()
    with pytest.warns(RuntimeWarning, match="not finite"):
        assert fitted.predict(X).tolist() == [-1, -1]


def test_set_params_after_fit_does_not_change_what_was_fitted(fitted, digits):
    _, X_test, _, _ = digits
    model = pickle.loads(pickle.dumps(fitted))
    before = model.score_samples(X_test)
    model.set_params(norm="squared_l2", latent_dim=7)
    np.testing.assert_array_equal(model.score_samples(X_test), before)
    assert len(model.get_feature_names_out()) == model.transform(X_test[:2]).shape[1] == 4


@pytest.mark.parametrize(
    "net_params, match",
    [
        ({"callbacks": []}, "use the estimator parameter 'callbacks'"),
        ({"device": "cpu"}, "use the estimator parameter 'device'"),
        ({"max_epochs": 3}, "'max_epochs'"),
        ({"module__latent_dim": 3}, "builds the network"),
        ({"iterator_train__num_workers": 2}, "builds the network"),
    ],
)
def test_net_params_cannot_override_estimator_parameters(net_params, match):
    with pytest.raises(ValueError, match=match):
        ConvAEOneClass(**FAST, net_params=net_params).fit(np.zeros((10, 8, 8)))


def test_other_shape_with_the_same_feature_count(fitted):
    with pytest.raises(ValueError, match=r"another shape than in fit.*\(1, 4, 16\)"):
        fitted.score_samples(np.zeros((2, 1, 4, 16)))


def test_non_finite_loss_stops_with_advice():
    X = np.random.RandomState(0).rand(20, 8, 8) * 1e38
    with pytest.raises(FloatingPointError, match="lower learning rate"):
        ConvAEOneClass(**FAST).fit(X.astype(np.float32))


# ---------------------------------------------------------------- training control
class _InterruptAt(Callback):
    def __init__(self, batch):
        self.batch = batch

    def on_batch_end(self, net, **kwargs):
        if sum(len(row["batches"]) for row in net.history) >= self.batch:
            raise KeyboardInterrupt


def test_interrupt_keeps_a_usable_model(digits):
    X_train, X_test, y_train, _ = digits
    X = X_train[y_train == 9]  # 90 images: 3 batches per epoch
    model = ConvAEOneClass(**{**FAST, "max_epochs": 10}, callbacks=[_InterruptAt(batch=5)])
    with pytest.warns(UserWarning, match=r"interrupted after 1 complete epoch\(s\) and 2 batch"):
        model.fit(X)
    assert model.n_epochs_ == 1
    assert np.all(np.isfinite(model.score_samples(X_test)))


def test_early_stopping_is_not_an_interruption(digits):
    X_train, _, y_train, _ = digits
    stopper = EarlyStopping(monitor="train_loss", patience=1, threshold=10.0)
    model = ConvAEOneClass(**{**FAST, "max_epochs": 20}, callbacks=[stopper])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(X_train[y_train == 0])
    assert model.n_epochs_ < 20
    assert stopper.misses_ == 0  # the user's callback object was copied, not used


def test_verbose_prints_one_line_per_epoch(digits, capsys):
    X_train, _, y_train, _ = digits
    ConvAEOneClass(**{**FAST, "max_epochs": 3}, verbose=1).fit(X_train[y_train == 0])
    out = capsys.readouterr().out
    assert "train_loss" in out and len([l for l in out.splitlines() if l.strip()[:1].isdigit()]) == 3


def test_verbose_2_adds_a_progress_bar(digits):
    X_train, _, y_train, _ = digits
    model = ConvAEOneClass(**FAST, verbose=2).fit(X_train[y_train == 0])
    assert "progress_bar" in dict(model.net_.callbacks_)


def test_net_params_reach_skorch(digits):
    from skorch.dataset import ValidSplit

    X_train, _, y_train, _ = digits
    model = ConvAEOneClass(**FAST, net_params={"train_split": ValidSplit(4)})
    model.fit(X_train[y_train == 0])
    assert "valid_loss" in model.net_.history[-1]


# ---------------------------------------------------------------- ecosystem
def test_clone_pipeline_and_grid_search(digits):
    X_train, X_test, y_train, y_test = digits
    X = X_train[y_train == 0]
    model = clone(ConvAEOneClass(**FAST))
    pipe = make_pipeline(FunctionTransformer(lambda a: np.asarray(a) * 1.0), model).fit(X)
    assert pipe.predict(X_test).shape == (len(X_test),)

    # Normal-only training folds; scored on held-out images of all digits.
    normal = np.flatnonzero(y_train == 0)
    others = np.flatnonzero(y_test != 0)[:40]
    X_all = np.concatenate([X, X_test[others]])
    y_all = np.r_[np.ones(len(X)), -np.ones(len(others))]
    n = len(X)
    cv = [(np.arange(0, n // 2), np.r_[np.arange(n // 2, n), np.arange(n, len(X_all))])]
    search = GridSearchCV(
        ConvAEOneClass(**FAST),
        {"beta": [0.0, 1.0], "resolution": [None, 12]},
        cv=cv,
        scoring="roc_auc",
        refit=False,
    ).fit(X_all, y_all)
    assert len(search.cv_results_["params"]) == 4
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert normal.size == n


def test_encoder_features_in_a_pipeline(digits):
    X_train, X_test, y_train, y_test = digits
    pipe = Pipeline(
        # beta=1: the codes of the penalised model separate the digits (those of a
        # plain autoencoder, the default, served LOF worse in the gallery example).
        [("ae", ConvAEOneClass(**{**FAST, "max_epochs": 10, "beta": 1.0})),
         ("lof", LocalOutlierFactor(novelty=True))]
    ).fit(X_train[y_train == 0])
    assert roc_auc_score(y_test == 0, pipe.score_samples(X_test)) > 0.9


def test_pickle_and_joblib_round_trip(fitted, digits, tmp_path):
    _, X_test, _, _ = digits
    expected = fitted.score_samples(X_test)
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.score_samples(X_test), expected)
    joblib.dump(fitted, tmp_path / "model.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "model.joblib").score_samples(X_test), expected)


def test_cuda_trained_model_loads_on_cpu(fitted, digits):
    """Simulate a CUDA-trained model (skorch's own approach) and load it without CUDA."""
    _, X_test, _, _ = digits
    expected = fitted.score_samples(X_test)
    model = pickle.loads(pickle.dumps(fitted))
    model.device_ = "cuda"
    model.net_.device = "cuda"
    blob = pickle.dumps(model)
    with mock.patch("torch.cuda.is_available", return_value=False):
        with pytest.warns(DeviceWarning):  # skorch says it moves the net to the CPU
            loaded = pickle.loads(blob)
    assert loaded.device_ == "cpu"
    np.testing.assert_array_equal(loaded.score_samples(X_test), expected)


def test_score_map_locates_the_damage(digits):
    X_train, X_test, y_train, y_test = digits
    model = ConvAEOneClass(**{**FAST, "max_epochs": 20, "beta": 0.0}).fit(X_train[y_train == 0])
    clean = X_test[y_test == 0]
    maps = model.score_map(clean)
    assert maps.shape == (len(clean), 8, 8) and maps.dtype == np.float32
    model.set_params(score_type="reconstruction")
    np.testing.assert_allclose(
        np.sqrt((maps.astype(np.float64) ** 2).sum(axis=(1, 2))), -model.score_samples(clean), rtol=1e-4
    )
    damaged = clean.copy()
    damaged[:, :3, :3] = 1.0  # a bright blob in the top-left corner
    excess = model.score_map(damaged) - maps
    assert excess[:, :3, :3].mean() > 5 * excess[:, 4:, 4:].mean()


def test_score_map_comes_back_at_the_input_resolution(digits):
    X_train, X_test, y_train, _ = digits
    model = ConvAEOneClass(**FAST, resolution=16).fit(X_train[y_train == 0])
    assert model.score_map(X_test[:5]).shape == (5, 8, 8)


def test_reconstruct_gives_the_images_that_the_reconstruction_score_compares(fitted, digits):
    _, X_test, _, _ = digits
    x_hat = fitted.reconstruct(X_test[:6])
    assert x_hat.shape == (6, 1, 8, 8) and x_hat.dtype == np.float32
    error = np.linalg.norm((X_test[:6, None] - x_hat).reshape(6, -1).astype(np.float64), axis=1)
    model = pickle.loads(pickle.dumps(fitted)).set_params(score_type="reconstruction")
    np.testing.assert_allclose(error, model.anomaly_score(X_test[:6]), rtol=1e-4)


def test_reconstruct_is_at_the_network_resolution_and_scale(digits):
    X_train, X_test, y_train, _ = digits
    model = ConvAEOneClass(**FAST, resolution=16).fit(X_train[y_train == 0])
    x_hat = model.reconstruct(X_test[:3])
    assert x_hat.shape == (3, 1, 16, 16) and x_hat.dtype == np.float32
    as_bytes = np.round(X_test[:3] * 255).astype(np.uint8)
    np.testing.assert_allclose(model.reconstruct(as_bytes), x_hat, atol=0.02)
    with pytest.raises(NotFittedError):
        ConvAEOneClass(**FAST).reconstruct(X_test[:3])
