"""A user's own torch module as the encoder of SelfSupervisedFeatures and TwoStageOneClass."""

import copy
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

import skocc
from skocc import SelfSupervisedFeatures, TwoStageOneClass
from skocc.model_selection import OneClassKFold


def _backbone(seed=0):
    """A small 'pretrained' network built in place: conv, batch norm, ReLU, conv (spatial output)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 12, 3, stride=2, padding=1),
    )
    with torch.no_grad():  # non-trivial batch-norm statistics, as a trained network has
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def _weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def images(digits):
    X_train, X_test, y_train, y_test = digits
    return X_train[y_train == 0], X_test[:40], np.where(y_test[:40] == 0, 1, -1)


def _features(encoder, **params):
    return SelfSupervisedFeatures(
        encoder=encoder, pretext="rotation", head_dim=8, max_epochs=2, batch_size=32,
        device="cpu", random_state=0, **params,
    )


def test_frozen_module_gives_the_features_of_calling_it_directly(images):
    X, X_test, _ = images
    backbone = _backbone()
    before = _weights(backbone)
    features = _features(backbone, freeze_encoder=True).fit(X)
    with torch.no_grad():
        direct = backbone(torch.as_tensor(X_test[:, None])).mean(dim=(-2, -1))
    expected = torch.nn.functional.normalize(direct, dim=1).numpy()
    np.testing.assert_allclose(features.transform(X_test), expected, rtol=1e-5, atol=1e-6)
    maps = features.feature_maps(X_test)
    assert maps.shape == (40, 12, 4, 4)
    # Training (of the head) left the user's module and the frozen copy's weights alone.
    for key, value in _weights(backbone).items():
        assert torch.equal(value, before[key]), key
    trained = features.net_.module_.encoder.module
    for key, value in _weights(trained).items():
        assert torch.equal(value, before[key]), key


def test_fine_tuned_module_trains_a_copy(images):
    X, X_test, _ = images
    backbone = _backbone()
    before = _weights(backbone)
    features = _features(backbone).fit(X)
    for key, value in _weights(backbone).items():
        assert torch.equal(value, before[key]), key  # the user's module is untouched
    tuned = _weights(features.net_.module_.encoder.module)
    assert any(not torch.equal(tuned[k], before[k]) for k in before if "weight" in k)
    assert features.transform(X_test).shape == (40, 12)


def test_two_stage_scores_maps_and_explains_with_a_user_module(images):
    X, X_test, y = images
    model = TwoStageOneClass(_features(_backbone(), freeze_encoder=True), random_state=0)
    model.fit(X)
    assert model.score_samples(X_test).shape == (40,)
    assert model.score_map(X_test[:3]).shape == (3, 8, 8)
    assert model.explain(X_test[:3], steps=2).shape == (3, 8, 8)


def test_clone_and_grid_search_copy_the_module(images):
    X, X_test, y = images
    backbone = _backbone()
    features = _features(backbone, freeze_encoder=True)
    cloned = clone(features)
    assert cloned.encoder is not backbone
    for key, value in _weights(cloned.encoder).items():
        assert torch.equal(value, _weights(backbone)[key])
    X_all = np.concatenate([X, X_test[y == -1]])
    y_all = np.r_[np.ones(len(X)), -np.ones(int((y == -1).sum()))]
    search = GridSearchCV(
        TwoStageOneClass(_features(backbone, freeze_encoder=True, inlier_label=1), random_state=0),
        {"features__head_dim": [4, 8]},
        cv=OneClassKFold(2, shuffle=True, random_state=0),
        scoring=skocc.metrics.AnomalyScorer(),
    ).fit(X_all, y_all)
    assert search.best_score_ > 0.5
    pickle.loads(pickle.dumps(search.best_estimator_)).score_samples(X_test)


def test_save_refuses_a_user_module_and_says_what_to_do(images, tmp_path):
    features = _features(_backbone(), freeze_encoder=True).fit(images[0])
    with pytest.raises(TypeError, match=r"cannot store the parameter encoder .* your own torch module"):
        skocc.save(features, tmp_path / "model.skocc")


@pytest.mark.parametrize(
    "encoder, params, match",
    [
        (torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten()), {}, r"must return a spatial feature map"),
        (torch.nn.Conv2d(3, 4, 3), {}, r"failed on a batch of shape \(1, 1, 8, 8\)"),
        ("small", {"freeze_encoder": True}, "freeze_encoder=True keeps an encoder's weights as given"),
        (torch.nn.Linear(2, 2).double, {}, "The 'encoder' parameter"),
    ],
)
def test_bad_encoders_are_named(images, encoder, params, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _features(encoder, **params).fit(images[0])


def test_parameters_are_not_modified(images):
    backbone = _backbone()
    features = _features(backbone, freeze_encoder=True)
    features.fit(images[0])
    assert features.encoder is backbone and backbone.training is False
    assert all(p.requires_grad for p in backbone.parameters())
    copy.deepcopy(features)  # a fitted model with a module copies
