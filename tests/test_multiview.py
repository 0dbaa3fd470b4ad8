"""MultiViewConvAEOneClass and stack_views (the diversity losses: test_losses.py)."""

import pickle

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from skocc import ConvAEOneClass, MultiViewConvAEOneClass, stack_views
from skocc.datasets import one_class_digits_split
from skocc.nn.objectives import SCORE_TYPES

from ._settings import FAST


@pytest.fixture(scope="module")
def views():
    """Two constructed views of the digits: each image and its mirror image."""
    X_train, X_test, y_train, y_test = one_class_digits_split(random_state=0)
    return (
        stack_views(X_train, np.flip(X_train, axis=2)),
        stack_views(X_test, np.flip(X_test, axis=2)),
        y_train,
        y_test,
    )


def test_contract_and_learning(views):
    V_train, V_test, y_train, y_test = views
    model = MultiViewConvAEOneClass(**{**FAST, "max_epochs": 20}).fit(V_train[y_train == 0])
    assert model.n_views_ == 2 and model.image_shape_ == (2, 1, 8, 8)
    scores = model.score_samples(V_test)
    assert scores.dtype == np.float64 and scores.shape == (len(V_test),)
    np.testing.assert_allclose(model.decision_function(V_test), scores - model.offset_)
    np.testing.assert_array_equal(model.predict(V_test) == 1, model.decision_function(V_test) >= 0)
    assert model.encode(V_test).shape == (len(V_test), 2 * FAST["latent_dim"])
    assert roc_auc_score(y_test == 0, scores) > 0.9
    losses = model.net_.history[:, "train_loss"]
    assert losses[-1] < losses[0]


def test_one_view_is_conv_ae_one_class():
    X = np.random.RandomState(0).rand(40, 8, 8).astype(np.float32)
    params = {**FAST, "beta": 1.0}
    single = ConvAEOneClass(**params).fit(X)
    multi = MultiViewConvAEOneClass(**params).fit(X[:, None])
    for score_type in SCORE_TYPES:
        single.set_params(score_type=score_type)
        multi.set_params(score_type=score_type)
        np.testing.assert_array_equal(multi.score_samples(X[:, None]), single.score_samples(X))


@pytest.mark.parametrize("share_weights", [True, False])
def test_per_view_scores_point_at_the_damaged_view(views, share_weights):
    V_train, V_test, y_train, y_test = views
    # beta=2: the latent score needs a strong penalty to point anywhere (user guide).
    model = MultiViewConvAEOneClass(
        **{**FAST, "max_epochs": 20, "beta": 2.0}, share_weights=share_weights
    )
    model.fit(V_train[y_train == 0])
    normal = V_test[y_test == 0].copy()
    damaged = normal.copy()
    damaged[:, 1] = V_test[y_test == 1][: len(normal), 0]  # view 1 shows another digit
    for score_type in SCORE_TYPES:
        model.set_params(score_type=score_type)
        per_view = model.score_samples_per_view(damaged)
        assert per_view.shape == (len(damaged), 2)
        assert np.mean(per_view[:, 1] < per_view[:, 0]) > 0.7
    if not share_weights:
        assert len(model.net_.module_.autoencoders) == 2


def test_per_view_contributions_add_up_where_documented(views):
    V_train, V_test, y_train, _ = views
    squared = MultiViewConvAEOneClass(**FAST, norm="squared_l2", score_type="latent")
    squared.fit(V_train[y_train == 3])
    np.testing.assert_allclose(
        squared.score_samples_per_view(V_test).sum(axis=1), squared.score_samples(V_test), rtol=1e-5
    )
    plain = MultiViewConvAEOneClass(**FAST, score_type="latent").fit(V_train[y_train == 3])
    per_view = plain.score_samples_per_view(V_test)
    assert not np.allclose(per_view.sum(axis=1), plain.score_samples(V_test), rtol=1e-3)
    np.testing.assert_allclose(
        -np.sqrt((per_view**2).sum(axis=1)), plain.score_samples(V_test), rtol=1e-5
    )
    plain.set_params(score_type="reconstruction")
    np.testing.assert_allclose(
        plain.score_samples_per_view(V_test).sum(axis=1), plain.score_samples(V_test), rtol=1e-5
    )


def test_per_view_mahalanobis_uses_the_joint_gaussians_marginal(views):
    V_train, V_test, y_train, _ = views
    model = MultiViewConvAEOneClass(**FAST, score_type="mahalanobis", calibration="train")
    model.fit(V_train[y_train == 3])
    codes = model.encode(V_test).astype(np.float64)
    d = model.latent_dim
    assert model.latent_covariance_.shape == (2 * d, 2 * d)
    expected = []
    for v in range(2):
        block = slice(v * d, (v + 1) * d)
        diff = codes[:, block] - model.latent_location_[block]
        inverse = np.linalg.inv(model.latent_covariance_[block, block])
        expected.append(np.sqrt(np.einsum("ni,ij,nj->n", diff, inverse, diff)))
    np.testing.assert_allclose(-model.score_samples_per_view(V_test), np.stack(expected, 1), rtol=1e-5)
    diff = codes - model.latent_location_
    joint = np.sqrt(np.einsum("ni,ij,nj->n", diff, np.linalg.inv(model.latent_covariance_), diff))
    np.testing.assert_allclose(-model.score_samples(V_test), joint, rtol=1e-5)
    assert model.calibration_terms_.shape[1] == 3 + 3 * 2


@pytest.mark.parametrize(
    "make",
    [
        lambda V: V,  # (n, V, C, H, W)
        lambda V: V[:, :, 0],  # (n, V, H, W)
        lambda V: np.moveaxis(V, 2, -1),  # (n, V, H, W, C)
    ],
)
def test_view_layouts_agree(views, make):
    V_train, V_test, y_train, _ = views
    ref = MultiViewConvAEOneClass(**FAST).fit(V_train[y_train == 2]).score_samples(V_test)
    got = MultiViewConvAEOneClass(**FAST).fit(make(V_train[y_train == 2])).score_samples(make(V_test))
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_flat_input_in_a_pipeline_with_a_scaler(views):
    V_train, V_test, y_train, y_test = views
    flat = V_train[y_train == 0].reshape(-1, 2 * 64)
    pipe = make_pipeline(
        MinMaxScaler(), MultiViewConvAEOneClass(**{**FAST, "max_epochs": 10}, image_shape=(2, 1, 8, 8))
    ).fit(flat)
    scores = pipe.score_samples(V_test.reshape(len(V_test), -1))
    assert roc_auc_score(y_test == 0, scores) > 0.8


def test_other_views_at_predict_time_fail_clearly(views):
    V_train, V_test, y_train, _ = views
    model = MultiViewConvAEOneClass(**FAST).fit(V_train[y_train == 0])
    three = np.concatenate([V_test, V_test[:, :1]], axis=1)
    with pytest.raises(ValueError, match=r"\(V, C, H, W\) = \(2, 1, 8, 8\).*\(3, 1, 8, 8\)"):
        model.score_samples(three)
    with pytest.raises(ValueError, match=r"\(2, 1, 6, 6\)"):
        model.predict(V_test[..., :6, :6])


def test_grid_search_pickle_and_resolution(views):
    V_train, V_test, y_train, y_test = views
    X = np.concatenate([V_train[y_train == 0], V_test[y_test != 0][:30]])
    y = np.r_[np.ones((y_train == 0).sum()), -np.ones(30)]
    n = int((y_train == 0).sum())
    cv = [(np.arange(n // 2), np.arange(n // 2, len(X)))]
    search = GridSearchCV(
        MultiViewConvAEOneClass(**FAST),
        {"beta": [0.5, 2.0], "resolution": [None, 12]},
        cv=cv,
        scoring="roc_auc",
        refit=False,
    ).fit(X, y)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    model = MultiViewConvAEOneClass(**FAST, resolution=12).fit(V_train[y_train == 0])
    assert model.input_shape_ == (2, 1, 12, 12)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.score_samples(V_test), model.score_samples(V_test))


# ---------------------------------------------------------------- stack_views
def test_flipped_views_are_accepted(views):
    V_train, V_test, y_train, _ = views
    X = V_train[y_train == 0]
    flipped = np.flip(X, axis=-1)  # negative strides
    model = MultiViewConvAEOneClass(**FAST).fit(flipped)
    np.testing.assert_array_equal(
        model.score_samples(np.flip(V_test, axis=-1)),
        model.score_samples(np.ascontiguousarray(np.flip(V_test, axis=-1))),
    )


def test_stack_views_shapes_and_resizing():
    a = np.random.RandomState(0).randint(0, 255, (5, 16, 16)).astype(np.uint8)
    b = np.random.RandomState(1).randint(0, 255, (5, 32, 32)).astype(np.uint8)
    assert stack_views(a, a).dtype == np.uint8
    resized = stack_views(a, b, size=16)
    assert resized.shape == (5, 2, 1, 16, 16) and resized.dtype == np.float32
    np.testing.assert_allclose(resized[:, 0, 0], a / 255.0, rtol=1e-6)
    rgb = stack_views(np.zeros((5, 8, 8, 3)), np.zeros((5, 3, 8, 8)))
    assert rgb.shape == (5, 2, 3, 8, 8)


@pytest.mark.parametrize(
    "arrays, kwargs, match",
    [
        ((np.zeros((5, 8, 8)), np.zeros((4, 8, 8))), {}, "view 0 has 5 and view 1 has 4"),
        ((np.zeros((5, 8, 8)), np.zeros((5, 9, 9))), {}, "different image sizes.*pass size="),
        ((np.zeros((5, 8, 8)), np.zeros((5, 3, 8, 8))), {}, "same number of channels"),
        ((), {}, "at least one view"),
        ((np.zeros((5, 8, 8)), np.full((5, 8, 8), np.nan)), {}, "NaN"),
    ],
)
def test_stack_views_bad_input(arrays, kwargs, match):
    with pytest.raises(ValueError, match=match):
        stack_views(*arrays, **kwargs)


@pytest.mark.parametrize("estimator", [ConvAEOneClass, MultiViewConvAEOneClass])
def test_diversity_at_weight_zero_changes_nothing(views, estimator):
    V_train, V_test, y_train, _ = views
    X, T = V_train[y_train == 0], V_test
    if estimator is ConvAEOneClass:
        X, T = X[:, 0], T[:, 0]
    off = estimator(**FAST).fit(X).score_samples(T)
    zero = estimator(**FAST, diversity="logdet", diversity_weight=0.0).fit(X).score_samples(T)
    on = estimator(**FAST, diversity="logdet", diversity_weight=1.0).fit(X).score_samples(T)
    np.testing.assert_array_equal(off, zero)
    assert not np.allclose(off, on)


def test_score_map_per_view(views):
    V_train, V_test, y_train, _ = views
    model = MultiViewConvAEOneClass(**FAST).fit(V_train[y_train == 0])
    assert model.score_map(V_test[:4]).shape == (4, 2, 8, 8)


def test_reconstruct_per_view(views):
    V_train, V_test, y_train, _ = views
    model = MultiViewConvAEOneClass(**FAST).fit(V_train[y_train == 0])
    x_hat = model.reconstruct(V_test[:4])
    assert x_hat.shape == (4, 2, 1, 8, 8) and x_hat.dtype == np.float32
    per_view = np.linalg.norm((V_test[:4] - x_hat).reshape(4, 2, -1).astype(np.float64), axis=2)
    model.set_params(score_type="reconstruction")
    np.testing.assert_allclose(per_view, -model.score_samples_per_view(V_test[:4]), rtol=1e-4)
