"""skocc.save / skocc.load: exact round trips, devices, and files that must be refused."""

import json
import pickle
from unittest import mock

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from skorch.callbacks import EarlyStopping
from skorch.dataset import ValidSplit
from skorch.exceptions import DeviceWarning

import skocc
from skocc import ConvAEOneClass
from skocc.base import registered_estimators

from ._settings import FAST, fast_estimators


def _images(estimator, n=40, seed=0):
    """Random images in the layout ``estimator`` reads (a view axis if it has one)."""
    shape = (n,) + (2,) * estimator._n_view_axes + (8, 8)
    return np.random.RandomState(seed).rand(*shape).astype(np.float32)


def _rewrite(path, header=None, state=None):
    """Edit a saved file's JSON header and/or tensors, as a tamperer would."""
    with safe_open(path, framework="pt") as f:
        meta = json.loads(f.metadata()["skocc"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if header is not None:
        header(meta)
    if state is not None:
        state(tensors)
    save_file(tensors, path, metadata={"skocc": json.dumps(meta)})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = ConvAEOneClass(**FAST).fit(_images(ConvAEOneClass()))
    path = tmp_path_factory.mktemp("model") / "model.skocc"
    skocc.save(model, path)
    return model, path


def _copy(saved, tmp_path):
    path = tmp_path / "copy.skocc"
    path.write_bytes(saved[1].read_bytes())
    return path


# ---------------------------------------------------------------- round trips
def test_every_public_estimator_is_registered():
    # Every public estimator that trains a network; the meta-estimators
    # (TwoStageOneClass, TrimmedOneClass) hold scikit-learn objects that only
    # pickle can store, and skocc.save refuses them, saying why.
    public = {
        name
        for name in skocc.__all__
        if isinstance(getattr(skocc, name), type) and issubclass(getattr(skocc, name), BaseEstimator)
    }
    refused = {name for name in public if getattr(getattr(skocc, name), "_skocc_save_refusal", None)}
    assert refused == {"TwoStageOneClass", "TrimmedOneClass"}
    assert set(registered_estimators()) == public - refused


SAVABLE = [e for e in fast_estimators() if type(e).__name__ in registered_estimators()]


@pytest.mark.parametrize("estimator", SAVABLE, ids=lambda e: type(e).__name__)
def test_round_trip_gives_identical_scores(estimator, tmp_path):
    X = _images(estimator)
    model = estimator.fit(X)
    skocc.save(model, tmp_path / "model.skocc")
    loaded = skocc.load(tmp_path / "model.skocc")
    assert type(loaded) is type(model)
    assert loaded.get_params() == model.get_params()
    methods = ("score_samples", "decision_function", "predict")
    for method in methods if hasattr(model, "score_samples") else ("transform",):
        np.testing.assert_array_equal(getattr(loaded, method)(X), getattr(model, method)(X))
    for name in type(model)._persisted_attributes:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
        assert type(getattr(loaded, name)) is type(getattr(model, name))
    assert loaded.device_ == "cpu"
    assert list(loaded.net_.history) == json.loads(json.dumps(list(model.net_.history)))
    # Loaded models can be refitted and pickled like fitted ones.
    again = pickle.loads(pickle.dumps(loaded))
    out = again.score_samples(X[:3]) if hasattr(again, "score_samples") else again.transform(X[:3])
    assert out.shape[0] == 3


def test_round_trip_keeps_feature_names_and_settings(tmp_path):
    X = _images(ConvAEOneClass()).reshape(40, 64)
    frame = pd.DataFrame(X, columns=[f"px{i}" for i in range(64)])
    model = ConvAEOneClass(
        **{**FAST, "random_state": 3},
        image_shape=(8, 8),
        score_type="latent",
        norm="squared_l2",
        resolution=10,
        inlier_label="good",
        net_params={"optimizer__eps": 1e-7},
    ).fit(frame, ["good"] * 40)
    skocc.save(model, tmp_path / "m.skocc")
    loaded = skocc.load(tmp_path / "m.skocc")
    np.testing.assert_array_equal(loaded.feature_names_in_, model.feature_names_in_)
    assert loaded.image_shape == (8, 8) and loaded.channels == FAST["channels"]
    assert loaded.net_params == {"optimizer__eps": 1e-7}
    np.testing.assert_array_equal(loaded.score_samples(frame), model.score_samples(frame))
    np.testing.assert_array_equal(loaded.encode(frame), model.encode(frame))


def test_load_picks_the_device(saved, tmp_path):
    model, path = saved
    loaded = skocc.load(path, device="cpu")
    assert loaded.device_ == "cpu" and loaded.device == "cpu"
    assert str(next(loaded.net_.module_.parameters()).device) == "cpu"
    # A model saved with device="cuda" loads on a machine without CUDA: on the
    # CPU with a warning, or silently when the CPU is asked for.
    cuda = _copy(saved, tmp_path)
    _rewrite(cuda, header=lambda h: h["params"].update(device="cuda"))
    X = _images(model)
    with mock.patch("torch.cuda.is_available", return_value=False):
        with pytest.warns(DeviceWarning, match="CUDA is not available here"):
            fallback = skocc.load(cuda)
        assert fallback.device_ == "cpu" and fallback.device == "cuda"
        np.testing.assert_array_equal(fallback.score_samples(X), model.score_samples(X))
        assert skocc.load(cuda, device="cpu").device_ == "cpu"
        with pytest.raises(ValueError, match="CUDA is not available"):
            skocc.load(path, device="cuda")


def test_loading_unpickles_nothing(saved):
    model, path = saved
    forbidden = AssertionError("loading a skocc file must not unpickle")
    with mock.patch("pickle.load", side_effect=forbidden), mock.patch(
        "pickle.loads", side_effect=forbidden
    ), mock.patch("torch.load", side_effect=forbidden):
        loaded = skocc.load(path)
    X = _images(model)
    np.testing.assert_array_equal(loaded.score_samples(X), model.score_samples(X))


# ---------------------------------------------------------------- refused files
def test_tampered_weights_are_detected(saved, tmp_path):
    path = _copy(saved, tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one byte of the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="do not match the SHA-256 recorded"):
        skocc.load(path)
    # Same through the tensors, header untouched.
    path = _copy(saved, tmp_path)
    _rewrite(path, state=lambda t: t[sorted(t)[0]].add_(1e-3))
    with pytest.raises(ValueError, match="do not match the SHA-256 recorded"):
        skocc.load(path)


def _set(key, value):
    return lambda h: h.__setitem__(key, value)


def _set_param(key, value):
    return lambda h: h["params"].__setitem__(key, value)


@pytest.mark.parametrize(
    "edit, match",
    [
        (_set("estimator", "os.system"), "names the class 'os.system', which is not one of skocc's"),
        (_set("estimator", "BaseDeepOneClass"), "not one of skocc's estimators"),
        (_set("format_version", 2), "format version 2.*reads format version 1 only"),
        (_set("skocc_version", "0.0.1"), r"written by skocc '0.0.1' and this is skocc"),
        (_set("format", "other"), "does not say format 'skocc'"),
        (_set_param("evil", 1), "parameters do not describe a ConvAEOneClass"),
        (_set_param("beta", -1.0), "'beta' parameter of ConvAEOneClass"),
        (_set_param("channels", {"__class__": "os.system"}), "unexpected JSON object"),
        (_set_param("channels", {"__tuple__": [8, 16], "x": 1}), "malformed __tuple__"),
        (_set_param("latent_dim", 5), "weights and parameters do not fit together"),
        (lambda h: h["attributes"].__setitem__("score_samples", 1), r"unknown \['score_samples'\]"),
        (lambda h: h["attributes"].pop("offset_"), r"missing \['offset_'\]"),
        (
            lambda h: h["attributes"].__setitem__(
                "score_mean_", {"__ndarray__": [1, 2], "dtype": "|O", "shape": [2]}
            ),
            "unsupported array dtype",
        ),
        (_set("history", "not a list"), "history is not a list"),
    ],
)
def test_tampered_json_is_refused(saved, tmp_path, edit, match):
    path = _copy(saved, tmp_path)
    _rewrite(path, header=edit)
    with pytest.raises(ValueError, match=match):
        skocc.load(path)


def test_files_that_are_not_skocc_models(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="No skocc model file"):
        skocc.load(tmp_path / "missing.skocc")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match="safetensors file without skocc's metadata"):
        skocc.load(plain)
    broken = _copy(saved, tmp_path)
    with safe_open(broken, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, broken, metadata={"skocc": "{not json"})
    with pytest.raises(ValueError, match="metadata is not valid JSON"):
        skocc.load(broken)


class _Payload:
    """Pickling this runs code on load: what a hostile file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_named_like_a_model_runs_nothing(saved, tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "model.skocc"
    hostile.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match="not a skocc model file"):
        skocc.load(hostile)
    joblib.dump(saved[0], tmp_path / "trusted.joblib")
    with pytest.raises(ValueError, match="not a skocc model file"):
        skocc.load(tmp_path / "trusted.joblib")
    assert not marker.exists()


# ---------------------------------------------------------------- what save refuses or drops
def test_callbacks_and_training_only_objects_are_dropped_with_a_warning(tmp_path):
    X = _images(ConvAEOneClass())
    model = ConvAEOneClass(
        **FAST,
        callbacks=[EarlyStopping(monitor="train_loss")],
        net_params={
            "train_split": ValidSplit(4),
            "optimizer": torch.optim.SGD,
            "optimizer__momentum": 0.5,  # JSON, but meaningless without SGD: dropped too
            "warm_start": False,
        },
    ).fit(X)
    with pytest.warns(UserWarning) as record:
        skocc.save(model, tmp_path / "m.skocc")
    messages = " ".join(str(w.message) for w in record)
    assert "drops callbacks" in messages
    assert "['train_split', 'optimizer', 'optimizer__momentum']" in messages
    loaded = skocc.load(tmp_path / "m.skocc")
    assert loaded.callbacks is None and loaded.net_params == {"warm_start": False}
    np.testing.assert_array_equal(loaded.score_samples(X), model.score_samples(X))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"random_state": np.random.RandomState(0)}, "cannot store the parameter random_state"),
        ({"net_params": {"criterion": torch.nn.MSELoss}}, "cannot store the parameter net_params"),
        ({"net_params": {"iterator_valid": ValidSplit}}, "cannot store the parameter net_params"),
    ],
)
def test_objects_that_may_shape_the_model_are_refused(params, match, tmp_path):
    # Parameters are read from get_params, so setting them after fit is enough.
    model = ConvAEOneClass(**FAST).fit(_images(ConvAEOneClass())).set_params(**params)
    with pytest.raises(TypeError, match=match):
        skocc.save(model, tmp_path / "m.skocc")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_save_refuses_foreign_unfitted_and_undeclared(tmp_path):
    class Mine(ConvAEOneClass):
        pass

    X = _images(ConvAEOneClass())
    with pytest.raises(TypeError, match="stores skocc's own estimators"):
        skocc.save(Mine(**FAST).fit(X), tmp_path / "m.skocc")
    assert "Mine" not in registered_estimators()
    with pytest.raises(NotFittedError):
        skocc.save(ConvAEOneClass(), tmp_path / "m.skocc")
    model = ConvAEOneClass(**FAST).fit(X)
    model.extra_ = 1
    with pytest.raises(TypeError, match=r"fitted attributes \['extra_'\] that are not declared"):
        skocc.save(model, tmp_path / "m.skocc")


def test_history_that_json_cannot_hold_is_dropped(tmp_path):
    X = _images(ConvAEOneClass())
    model = ConvAEOneClass(**FAST).fit(X)
    model.net_.history.record("note", object())
    with pytest.warns(UserWarning, match="drops the training history"):
        skocc.save(model, tmp_path / "m.skocc")
    loaded = skocc.load(tmp_path / "m.skocc")
    assert len(loaded.net_.history) == 0 and loaded.n_epochs_ == model.n_epochs_
    np.testing.assert_array_equal(loaded.score_samples(X), model.score_samples(X))
