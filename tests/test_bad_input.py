"""Bad input, table driven, by category: X, parameters, training faults, files, CLI, threads.

Every error case asserts the exception type, a message pattern that names the
argument, and that the input is unchanged afterwards. Validation errors come
before training, so most cases cost milliseconds; the few that train use tiny
networks on 8 x 8 images.
"""

import copy
import re
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Callback

import skocc
from skocc import (
    ConvAEOneClass,
    MultiViewConvAEOneClass,
    SelfSupervisedFeatures,
    TwoStageOneClass,
    stack_views,
)
from skocc.cli import main
from skocc.datasets import load_image_folder, load_images
from skocc.detectors import GaussianDensity, GaussianKDE
from skocc.images import check_images
from skocc.metrics import (
    anomaly_recall_scorer,
    anomaly_roc_auc_scorer,
    precision_at_n_scorer,
)

TINY = dict(channels=(4, 8), latent_dim=4, max_epochs=1, batch_size=32, device="cpu", random_state=0)
TINY_FEATURES = dict(width=4, head_dim=8, max_epochs=1, batch_size=32, device="cpu", random_state=0)
GIB = 2**30


# ------------------------------------------------------------------ helpers
_UNCOMPARABLE = object()


def _copy(X):
    """A copy of ``X`` to compare with after the call (None where it cannot be compared)."""
    if isinstance(X, torch.Tensor):
        return X.clone()
    if isinstance(X, np.ndarray):
        return np.array(X, copy=True)  # also materialises broadcast views
    if hasattr(X, "copy") and not isinstance(X, (list, dict, set)):
        return X.copy()  # DataFrames, sparse matrices
    if isinstance(X, (list, tuple, dict, set, str, bytes, int, float, type(None))):
        return copy.deepcopy(X)
    return _UNCOMPARABLE  # generators: reading them is consuming them


def _assert_unchanged(X, before):
    if before is _UNCOMPARABLE:
        return
    if isinstance(X, torch.Tensor):
        assert torch.equal(X, before)
    elif isinstance(X, np.ndarray):
        np.testing.assert_array_equal(X, before)
    elif hasattr(X, "toarray"):
        np.testing.assert_array_equal(X.toarray(), before.toarray())
    elif hasattr(X, "equals"):
        assert X.equals(before)
    elif isinstance(X, (list, tuple)):
        assert type(X) is type(before) and len(X) == len(before)
        for a, b in zip(X, before):
            _assert_unchanged(a, b)
    elif isinstance(X, dict):
        assert X.keys() == before.keys()
        for key in X:
            _assert_unchanged(X[key], before[key])
    else:
        assert X == before


def _raises(call, X, error, match):
    before = _copy(X)
    with pytest.raises(error, match=match):
        call(X)
    _assert_unchanged(X, before)


def _digits_uint8(digits):
    X_train, X_test, y_train, _ = digits
    return (
        np.rint(X_train[y_train == 0] * 255).astype(np.uint8),
        np.rint(X_test[:40] * 255).astype(np.uint8),
    )


@pytest.fixture(scope="module")
def fitted(digits):
    """A tiny ConvAEOneClass fitted on uint8 digits (8 x 8)."""
    train, _ = _digits_uint8(digits)
    return ConvAEOneClass(**{**TINY, "max_epochs": 2}).fit(train)


@pytest.fixture(scope="module")
def fitted_multiview(digits):
    train, _ = _digits_uint8(digits)
    return MultiViewConvAEOneClass(**TINY).fit(stack_views(train, train[:, :, ::-1]))


@pytest.fixture
def small_memory(monkeypatch):
    """Pretend the machine has 8 GiB available, so memory checks do not depend on it."""
    from skocc import _runtime, base

    def available(device):
        return 8 * GIB

    monkeypatch.setattr(_runtime, "available_memory", available)
    monkeypatch.setattr(base, "available_memory", available)


def _generator():
    return (np.zeros((8, 8)) for _ in range(4))


# ============================================================== category: X
X_CASES = [
    # (id, make X, error, message pattern)
    ("none", lambda: None, TypeError, r"X must be an array-like .* got NoneType"),
    ("string", lambda: "images/", TypeError, r"X must be an array-like .* got str"),
    ("bytes", lambda: b"\x00\x01", TypeError, r"X must be an array-like .* got bytes"),
    ("generator", _generator, TypeError, r"got generator\. Convert iterators"),
    ("iterator", lambda: iter([np.zeros((8, 8))] * 4), TypeError, r"got list_iterator"),
    ("dict", lambda: {"X": np.zeros((4, 8, 8))}, TypeError, r"got dict"),
    ("set", lambda: {1, 2, 3}, TypeError, r"got set"),
    ("scalar", lambda: 5, TypeError, r"got int"),
    ("ragged list", lambda: [[0.0, 1.0], [2.0]], ValueError, r"X is a ragged sequence"),
    ("ragged images", lambda: [np.zeros((8, 8)), np.zeros((7, 8))], ValueError, r"X is a ragged"),
    ("mixed list", lambda: [[0.0, "a"], [1.0, 2.0]], ValueError, r"X must hold real numbers"),
    ("list of strings", lambda: [["a", "b"], ["c", "d"]], ValueError, r"X must hold real numbers.*<U1"),
    ("string array", lambda: np.array([["a", "b"]] * 3), ValueError, r"X must hold real numbers"),
    ("object strings", lambda: np.array([["a", "b"]] * 3, dtype=object), ValueError, r"could not convert"),
    ("complex", lambda: np.zeros((4, 8, 8), dtype=complex), ValueError, r"Complex data not supported: X"),
    ("datetime", lambda: np.zeros((4, 8), dtype="datetime64[s]"), ValueError, r"X must hold real numbers.*datetime64"),
    ("zero channels", lambda: np.zeros((4, 0, 8, 8)), ValueError, r"X with at least one channel .* \(4, 0, 8, 8\)"),
    ("zero width", lambda: np.zeros((4, 1, 8, 0)), ValueError, r"at least one channel and one pixel"),
    ("zero height", lambda: np.zeros((4, 0, 8)), ValueError, r"at least one channel and one pixel"),
    ("no samples", lambda: np.zeros((0, 8, 8)), ValueError, r"0 sample"),
    ("nan", lambda: np.full((4, 8, 8), np.nan), ValueError, r"X contains NaN"),
    ("inf", lambda: np.full((4, 8, 8), np.inf), ValueError, r"X contains infinity"),
    ("-inf", lambda: np.full((4, 8, 8), -np.inf), ValueError, r"X contains infinity"),
    ("1-D", lambda: np.zeros(5), ValueError, r"Expected 2D array"),
    ("6-D", lambda: np.zeros((2, 2, 2, 2, 2, 2)), ValueError, r"layouts .* shape \(2, 2, 2, 2, 2, 2\)"),
    ("int64 above 255", lambda: np.full((4, 8, 8), 256), ValueError, r"integer dtype int64 with values in \[256, 256\]"),
    ("int64 negative", lambda: np.arange(-1, 63).reshape(1, 8, 8), ValueError, r"int64 with values in \[-1, 62\]"),
    ("int32 16-bit", lambda: np.full((4, 8, 8), 1000, np.int32), ValueError, r"int32 .* Cast 16-bit pixel data to uint16"),
    ("uint32", lambda: np.full((4, 8, 8), 70000, np.uint32), ValueError, r"uint32 with values in \[70000, 70000\]"),
    ("uint64 huge", lambda: np.full((4, 8, 8), 2**63, np.uint64), ValueError, r"uint64 with values"),
    ("int8 negative", lambda: np.full((4, 8, 8), -5, np.int8), ValueError, r"int8 with values in \[-5, -5\]"),
    ("int16 negative", lambda: np.full((4, 8, 8), -1, np.int16), ValueError, r"int16 .* floats on a small scale"),
    ("list of ints 300", lambda: np.full((2, 8, 8), 300).tolist(), ValueError, r"int64 with values in \[300, 300\]"),
    ("complex tensor", lambda: torch.zeros((4, 8, 8), dtype=torch.complex64), ValueError, r"Complex data not supported"),
]


@pytest.mark.parametrize("make, error, match", [c[1:] for c in X_CASES], ids=[c[0] for c in X_CASES])
def test_fit_refuses_bad_X(make, error, match):
    _raises(ConvAEOneClass(**TINY).fit, make(), error, match)


SCORE_CASES = [
    ("none", None, TypeError, r"X must be an array-like"),
    ("generator", _generator(), TypeError, r"Convert iterators"),
    ("ragged", [np.zeros((8, 8)), np.zeros((8, 7))], ValueError, r"ragged"),
    ("wrong shape", np.zeros((3, 9, 9)), ValueError, r"X has 81 features, but ConvAEOneClass is expecting 64"),
    ("wrong channels", np.zeros((3, 3, 8, 8)), ValueError, r"expecting 64 features"),
    ("int out of range", np.full((3, 8, 8), 999), ValueError, r"int64 with values in \[999, 999\]"),
    ("zero channels", np.zeros((3, 0, 8, 8)), ValueError, r"at least one channel"),
    ("nan", np.full((3, 8, 8), np.nan), ValueError, r"NaN"),
]


@pytest.mark.parametrize("method", ["score_samples", "predict", "decision_function", "encode"])
@pytest.mark.parametrize("X, error, match", [c[1:] for c in SCORE_CASES], ids=[c[0] for c in SCORE_CASES])
def test_scoring_refuses_bad_X(fitted, method, X, error, match):
    if isinstance(X, type(_generator())):
        X = _generator()  # one per call: a generator is consumed once
    _raises(getattr(fitted, method), X, error, match)


DETECTOR_X_CASES = [
    ("kde none", GaussianKDE, None, TypeError, r"X must be an array-like .* NoneType"),
    ("kde string", GaussianKDE, "features.csv", TypeError, r"got str"),
    ("kde generator", GaussianKDE, (row for row in np.zeros((3, 2))), TypeError, r"Convert iterators"),
    ("kde 1-D", GaussianKDE, np.zeros(3), ValueError, r"Expected 2D array"),
    ("kde ragged", GaussianKDE, [[1.0, 2.0], [3.0]], ValueError, r"X is a ragged"),
    ("gde none", GaussianDensity, None, TypeError, r"X must be an array-like"),
    ("gde dict", GaussianDensity, {"a": [1, 2]}, TypeError, r"got dict"),
    ("gde overflow", GaussianDensity, np.random.RandomState(0).normal(size=(30, 3)) * 1e200, ValueError,
     r"covariance of X overflowed float64 .* values up to 2\.\d+e\+200"),
    ("gde overflow 1e160", GaussianDensity, np.random.RandomState(1).normal(size=(30, 2)) * 1e160, ValueError,
     r"covariance of X overflowed"),
    ("gde nan", GaussianDensity, np.full((5, 2), np.nan), ValueError, r"Input X contains NaN"),
]


@pytest.mark.parametrize("cls, X, error, match", [c[1:] for c in DETECTOR_X_CASES], ids=[c[0] for c in DETECTOR_X_CASES])
def test_detectors_refuse_bad_X(cls, X, error, match):
    _raises(cls().fit, X, error, match)


@pytest.mark.parametrize(
    "estimator",
    [SelfSupervisedFeatures(**TINY_FEATURES), TwoStageOneClass(SelfSupervisedFeatures(**TINY_FEATURES)),
     MultiViewConvAEOneClass(**TINY)],
    ids=["features", "two-stage", "multiview"],
)
@pytest.mark.parametrize("X, error, match", [(None, TypeError, r"X must be an array-like"),
                                             ("x", TypeError, r"got str"),
                                             (np.zeros((4, 2, 0, 8, 8)), ValueError, r"at least one channel")])
def test_other_estimators_refuse_bad_X(estimator, X, error, match):
    _raises(estimator.fit, X, error, match)


def test_broadcast_view_larger_than_memory_is_refused_before_copying(small_memory):
    row = np.linspace(0.0, 1.0, 60000)
    X = np.broadcast_to(row, (60000, 60000))  # 28.8 GB of float64, one row in memory
    with pytest.raises(ValueError, match=r"X of shape \(60000, 60000\) and dtype float64 must be "
                       r"converted to float32, which needs 13\.4 GiB, more than half of the 8\.0 GiB"):
        ConvAEOneClass(**TINY).fit(X)
    np.testing.assert_array_equal(row, np.linspace(0.0, 1.0, 60000))  # what the view shows


def test_float32_views_need_no_copy_and_pass_the_check(small_memory):
    X = np.broadcast_to(np.linspace(0, 1, 64, dtype=np.float32), (5, 64))
    assert check_images(X).shape == (5, 1, 1, 64)


@pytest.mark.parametrize(
    "convert",
    [
        lambda X: X.astype(np.int64),
        lambda X: X.astype(np.int32),
        lambda X: X.astype(np.int16),
        lambda X: X.astype(np.uint32),
        lambda X: X.astype(np.uint64),
        lambda X: X.tolist(),
        lambda X: torch.from_numpy(X.astype(np.int64)),
    ],
    ids=["int64", "int32", "int16", "uint32", "uint64", "list", "int64 tensor"],
)
def test_integer_copies_score_like_uint8(fitted, digits, convert):
    _, test = _digits_uint8(digits)
    expected = fitted.score_samples(test)
    given = convert(test)
    before = _copy(given)
    np.testing.assert_array_equal(fitted.score_samples(given), expected)
    np.testing.assert_array_equal(fitted.predict(given), fitted.predict(test))
    _assert_unchanged(given, before)


def test_uint16_and_float_copies_score_like_uint8(fitted, digits):
    _, test = _digits_uint8(digits)
    expected = fitted.score_samples(test)
    deep = test.astype(np.uint16) * np.uint16(257)  # the same intensities at 16 bits
    np.testing.assert_allclose(fitted.score_samples(deep), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fitted.score_samples(test / 255.0), expected, rtol=1e-5, atol=1e-6)
    # Before the rule, int64 and uint16 copies were used unscaled: scores hundreds of times lower.
    assert np.all(np.abs(fitted.score_samples(deep) - expected) < 1e-3)


def test_bool_images_are_zeros_and_ones(fitted):
    mask = np.zeros((3, 8, 8), dtype=bool)
    mask[:, 2:6, 3:5] = True
    np.testing.assert_array_equal(fitted.score_samples(mask), fitted.score_samples(mask.astype(np.float32)))


# ===================================================== category: parameters
PARAM_CASES = [
    # bools where an int or a real is meant: InvalidParameterError (a ValueError and TypeError)
    (ConvAEOneClass, {"resolution": True}, InvalidParameterError, r"'resolution' parameter .* Got True"),
    (ConvAEOneClass, {"batch_size": True}, InvalidParameterError, r"'batch_size' parameter .* Got True"),
    (ConvAEOneClass, {"max_epochs": True}, InvalidParameterError, r"'max_epochs' parameter .* Got True"),
    (ConvAEOneClass, {"latent_dim": True}, InvalidParameterError, r"'latent_dim' parameter .* Got True"),
    (ConvAEOneClass, {"lr": True}, InvalidParameterError, r"'lr' parameter .* Got True"),
    (ConvAEOneClass, {"beta": True}, InvalidParameterError, r"'beta' parameter .* Got True"),
    (ConvAEOneClass, {"weight_decay": False}, InvalidParameterError, r"'weight_decay' parameter"),
    (ConvAEOneClass, {"contamination": np.True_}, InvalidParameterError, r"'contamination' parameter"),
    (ConvAEOneClass, {"diversity_weight": True}, InvalidParameterError, r"'diversity_weight' parameter"),
    (ConvAEOneClass, {"diversity_gamma": True}, InvalidParameterError, r"'diversity_gamma' parameter"),
    (MultiViewConvAEOneClass, {"resolution": True}, InvalidParameterError, r"'resolution' parameter"),
    (SelfSupervisedFeatures, {"width": True}, InvalidParameterError, r"'width' parameter .* Got True"),
    (SelfSupervisedFeatures, {"head_dim": True}, InvalidParameterError, r"'head_dim' parameter"),
    (SelfSupervisedFeatures, {"batch_size": False}, InvalidParameterError, r"'batch_size' parameter"),
    (SelfSupervisedFeatures, {"jitter": True}, InvalidParameterError, r"'jitter' parameter"),
    (GaussianKDE, {"batch_size": True}, InvalidParameterError, r"'batch_size' parameter of GaussianKDE"),
    (GaussianKDE, {"bandwidth": True}, InvalidParameterError, r"'bandwidth' parameter of GaussianKDE"),
    (GaussianDensity, {"contamination": True}, InvalidParameterError, r"'contamination' parameter"),
    (TwoStageOneClass, {"gamma": True}, InvalidParameterError, r"'gamma' parameter of TwoStageOneClass"),
    (TwoStageOneClass, {"contamination": True}, InvalidParameterError, r"'contamination' parameter"),
    # out of range or of the wrong kind
    (ConvAEOneClass, {"max_epochs": 0}, InvalidParameterError, r"'max_epochs' parameter .* Got 0"),
    (ConvAEOneClass, {"batch_size": -1}, InvalidParameterError, r"'batch_size' parameter"),
    (ConvAEOneClass, {"latent_dim": 2.5}, InvalidParameterError, r"'latent_dim' parameter"),
    (ConvAEOneClass, {"lr": 0}, InvalidParameterError, r"'lr' parameter"),
    (ConvAEOneClass, {"contamination": 0.6}, InvalidParameterError, r"'contamination' parameter"),
    (ConvAEOneClass, {"score_type": "foo"}, InvalidParameterError, r"'score_type' parameter"),
    (ConvAEOneClass, {"norm": "l1"}, InvalidParameterError, r"'norm' parameter"),
    (ConvAEOneClass, {"precision": "float64"}, InvalidParameterError, r"'precision' parameter"),
    (ConvAEOneClass, {"data_format": "nhwc"}, InvalidParameterError, r"'data_format' parameter"),
    (ConvAEOneClass, {"normalize": "zscore"}, InvalidParameterError, r"'normalize' parameter"),
    (ConvAEOneClass, {"channels": "abc"}, InvalidParameterError, r"'channels' parameter"),
    (ConvAEOneClass, {"channels": (True, 8)}, ValueError, r"channels must be a non-empty tuple of positive ints"),
    (ConvAEOneClass, {"channels": ()}, ValueError, r"channels must be a non-empty tuple"),
    (ConvAEOneClass, {"device": 5}, InvalidParameterError, r"'device' parameter"),
    (ConvAEOneClass, {"device": "meta"}, ValueError, r"device='meta' holds no data"),
    (ConvAEOneClass, {"device": "gpu7"}, ValueError, r"device must be 'auto' or a torch device string"),
    (ConvAEOneClass, {"verbose": "loud"}, InvalidParameterError, r"'verbose' parameter"),
    (ConvAEOneClass, {"random_state": "seed"}, InvalidParameterError, r"'random_state' parameter"),
    (ConvAEOneClass, {"inlier_label": [1]}, InvalidParameterError, r"'inlier_label' parameter"),
    (ConvAEOneClass, {"callbacks": [42]}, TypeError, r"callbacks must be a list of skorch callbacks .* item 0 is 42"),
    (ConvAEOneClass, {"callbacks": [("mine", "print")]}, TypeError, r"item 0 is \('mine', 'print'\)"),
    (ConvAEOneClass, {"callbacks": "print"}, InvalidParameterError, r"'callbacks' parameter"),
    (ConvAEOneClass, {"net_params": {"optimizer": "adam"}}, TypeError, r"net_params\['optimizer'\] must be a torch optimizer class .* got 'adam'"),
    (ConvAEOneClass, {"net_params": {"optimizer": torch.optim.SGD([torch.zeros(1, requires_grad=True)])}}, TypeError, r"net_params\['optimizer'\]"),
    (ConvAEOneClass, {"net_params": {"lr": 0.1}}, ValueError, r"net_params may not set 'lr'"),
    (ConvAEOneClass, {"net_params": {"module__latent_dim": 3}}, ValueError, r"net_params may not set 'module__latent_dim'"),
    (ConvAEOneClass, {"net_params": [("lr", 1)]}, InvalidParameterError, r"'net_params' parameter"),
    (MultiViewConvAEOneClass, {"share_weights": "yes"}, InvalidParameterError, r"'share_weights' parameter"),
    (SelfSupervisedFeatures, {"pretext": "jigsaw"}, InvalidParameterError, r"'pretext' parameter"),
    (SelfSupervisedFeatures, {"encoder": "resnet50"}, InvalidParameterError, r"'encoder' parameter"),
    (SelfSupervisedFeatures, {"crop_scale": (True, 1.0)}, ValueError, r"crop_scale must be a pair"),
    (SelfSupervisedFeatures, {"crop_scale": (0.9, 0.1)}, ValueError, r"crop_scale must be a pair"),
    (SelfSupervisedFeatures, {"temperature": 0}, InvalidParameterError, r"'temperature' parameter"),
    (SelfSupervisedFeatures, {"flip": "no"}, InvalidParameterError, r"'flip' parameter"),
    (TwoStageOneClass, {"detector": "svm"}, InvalidParameterError, r"'detector' parameter"),
    (TwoStageOneClass, {"rotation_ensemble": "yes"}, InvalidParameterError, r"'rotation_ensemble' parameter"),
    (GaussianKDE, {"bandwidth": "silverman"}, InvalidParameterError, r"'bandwidth' parameter"),
    (GaussianKDE, {"bandwidth": 1e-300}, ValueError, r"bandwidth=1e-300 gives a kernel bandwidth .* square 0\.0"),
    (GaussianKDE, {"bandwidth": 1e300}, ValueError, r"bandwidth=1e\+300 .* square inf under- or overflows"),
    (GaussianKDE, {"bandwidth": 1e-160}, ValueError, r"bandwidth=1e-160 .* between about 1e-154 and 1e154"),
    (GaussianKDE, {"device": "meta"}, ValueError, r"device='meta' holds no data"),
    (GaussianDensity, {"contamination": 0.7}, InvalidParameterError, r"'contamination' parameter"),
]


def _param_id(case):
    cls, params = case[:2]
    return f"{cls.__name__}-" + ",".join(f"{k}={v!r}"[:30] for k, v in params.items())


def _input_for(cls):
    rng = np.random.RandomState(0)
    if cls in (GaussianKDE, GaussianDensity):
        return rng.normal(size=(20, 3))
    if cls is MultiViewConvAEOneClass:
        return rng.rand(20, 2, 8, 8).astype(np.float32)
    return rng.rand(20, 8, 8).astype(np.float32)


def _instance(cls, params):
    if cls in (ConvAEOneClass, MultiViewConvAEOneClass):
        return cls(**{**TINY, **params})
    if cls is SelfSupervisedFeatures:
        return cls(**{**TINY_FEATURES, **params})
    if cls is TwoStageOneClass:
        return cls(SelfSupervisedFeatures(**TINY_FEATURES), **params)
    return cls(**params)


@pytest.mark.parametrize("case", PARAM_CASES, ids=[_param_id(c) for c in PARAM_CASES])
def test_parameters_are_refused_before_training(case):
    cls, params, error, match = case
    estimator = _instance(cls, params)
    given = copy.deepcopy(estimator.get_params(deep=False))
    _raises(estimator.fit, _input_for(cls), error, match)
    assert not hasattr(estimator, "net_") and not hasattr(estimator, "offset_")
    # Nothing the user passed was modified: the parameters read the same.
    assert repr(estimator.get_params(deep=False)) == repr(given)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"latent_dim": 10**9}, r"input shape \(1, 8, 8\) .*latent_dim=1000000000"),
        ({"resolution": 100000}, r"input shape \(1, 100000, 100000\) and resolution=100000"),
        ({"channels": (4096, 4096, 4096), "resolution": 512, "batch_size": 512}, r"channels=\(4096, 4096, 4096\)"),
        ({"batch_size": 10**7, "resolution": 256}, r"batch_size=10000000"),
    ],
    ids=["latent_dim", "resolution", "channels", "batch_size"],
)
def test_networks_too_large_for_memory_are_refused_before_allocation(small_memory, params, match):
    X = np.random.RandomState(0).rand(20, 8, 8).astype(np.float32)
    _raises(ConvAEOneClass(**{**TINY, **params}).fit, X, ValueError,
            r"^ConvAEOneClass would need about .* GiB to train on 'cpu' \([\d,]+ parameters: .* but 8 GiB "
            r"is available\. .*" + match)


def test_latent_gaussian_too_large_for_host_memory_is_refused(small_memory):
    # A network of 1.3 million parameters, but a 20,000 x 20,000 covariance of its codes.
    X = np.random.RandomState(0).rand(20, 8, 8).astype(np.float32)
    _raises(ConvAEOneClass(**{**TINY, "latent_dim": 20_000}).fit, X, ValueError,
            r"^ConvAEOneClass would need about 11.9 GiB of host memory for the Gaussian of its "
            r"latent codes \(four 20000 x 20000 float64 matrices\), but 8 GiB is available: "
            r"reduce latent_dim=20000\.$")


def test_image_shape_of_bools_is_refused():
    _raises(ConvAEOneClass(**TINY, image_shape=(True, 64)).fit, np.zeros((4, 64)), ValueError,
            r"image_shape must be a tuple of positive ints .* got \(True, 64\)")


def test_self_supervised_network_too_large_is_refused(small_memory):
    X = np.random.RandomState(0).rand(20, 8, 8).astype(np.float32)
    _raises(SelfSupervisedFeatures(**TINY_FEATURES, resolution=20000).fit, X, ValueError,
            r"SelfSupervisedFeatures would need .* resolution=20000")


@pytest.mark.parametrize("gamma, match", [(1e-320, r"gamma=1e-320 .* square inf"), (1e308, r"gamma=1e\+308 .* square 0\.0")])
def test_two_stage_kde_gamma_that_overflows(digits, gamma, match):
    X = digits[0][:40]
    model = TwoStageOneClass(SelfSupervisedFeatures(**TINY_FEATURES), detector="kde",
                             gamma=gamma, rotation_ensemble=False)
    _raises(model.fit, X, ValueError, match)


@pytest.mark.parametrize("method", ["score_samples", "predict", "decision_function"])
def test_score_type_set_after_fit_is_checked_at_scoring(fitted, digits, method):
    model = copy.deepcopy(fitted)
    model.set_params(score_type="foo")
    _, test = _digits_uint8(digits)
    _raises(getattr(model, method), test, ValueError, r"score_type must be one of .* got 'foo'")


def test_score_type_set_after_fit_is_checked_per_view(fitted_multiview, digits):
    model = copy.deepcopy(fitted_multiview)
    model.set_params(score_type="latnet")
    _, test = _digits_uint8(digits)
    views = stack_views(test, test[:, :, ::-1])
    for method in (model.score_samples, model.score_samples_per_view):
        _raises(method, views, ValueError, r"score_type must be one of .* got 'latnet'")


# ================================================ category: training faults
class _Raise(Callback):
    """Raises ``error`` at the end of the first training batch."""

    def __init__(self, error):
        self.error = error

    def on_batch_end(self, net, **kwargs):
        raise self.error


def test_loss_overflow_stops_training_with_a_clear_error():
    X = np.full((20, 8, 8), 1e30, dtype=np.float32)
    _raises(ConvAEOneClass(**TINY).fit, X, FloatingPointError, r"training loss became .* lower learning rate")


def test_failing_callback_leaves_no_half_fitted_model(fitted, digits):
    model = copy.deepcopy(fitted)
    model.set_params(callbacks=[_Raise(RuntimeError("disk full"))])
    train, test = _digits_uint8(digits)
    _raises(model.fit, train, RuntimeError, r"disk full")
    with pytest.raises(NotFittedError):
        model.predict(test)


def test_interrupted_training_warns_and_keeps_a_usable_model(digits):
    train, test = _digits_uint8(digits)
    model = ConvAEOneClass(**{**TINY, "max_epochs": 3}, callbacks=[_Raise(KeyboardInterrupt())])
    before = train.copy()
    with pytest.warns(UserWarning, match=r"interrupted after 0 complete epoch\(s\) and 1 batch"):
        model.fit(train)
    np.testing.assert_array_equal(train, before)
    assert model.predict(test).shape == (40,)


@pytest.mark.parametrize(
    "make_model, X",
    [
        (lambda: GaussianKDE(bandwidth=0.5).fit(np.random.RandomState(0).normal(size=(30, 3))),
         np.full((2, 3), 1e160)),
        (lambda: GaussianDensity().fit(np.random.RandomState(0).normal(size=(30, 3))), np.full((2, 3), 1e200)),
    ],
    ids=["kde", "gde"],
)
def test_detectors_warn_about_non_finite_scores_like_the_autoencoder(make_model, X):
    model = make_model()
    before = X.copy()
    with pytest.warns(RuntimeWarning, match=r"2 of 2 scores are not finite .* predict labels them -1"):
        scores = model.score_samples(X)
    assert not np.isfinite(scores).any()
    with pytest.warns(RuntimeWarning, match="not finite"):
        assert model.predict(X).tolist() == [-1, -1]
    np.testing.assert_array_equal(X, before)


def test_autoencoder_warns_about_non_finite_scores(fitted):
    X = np.full((2, 8, 8), 3e38, dtype=np.float32)
    with pytest.warns(RuntimeWarning, match=r"2 of 2 scores are not finite \(the network overflowed"):
        fitted.score_samples(X)


class _NaNScores:
    """A fitted estimator whose scores are NaN (a network that overflowed)."""

    def score_samples(self, X):
        return np.full(len(X), np.nan)

    def predict(self, X):
        return -np.ones(len(X), dtype=int)


@pytest.mark.parametrize("scorer", [anomaly_roc_auc_scorer, precision_at_n_scorer], ids=["auc", "p@n"])
def test_scorers_refuse_nan_scores(scorer):
    X, y = np.zeros((4, 2)), np.array([1, 1, -1, -1])
    before = y.copy()
    with pytest.raises(ValueError, match=r"needs finite scores, but score_samples of _NaNScores returned 4 NaN"):
        scorer(_NaNScores(), X, y)
    np.testing.assert_array_equal(y, before)


def test_recall_scorer_works_on_predictions_even_with_nan_scores():
    assert anomaly_recall_scorer(_NaNScores(), np.zeros((4, 2)), np.array([1, 1, -1, -1])) == 1.0


# ========================================================= category: files
def _write_npy_header(path, shape, descr="<f8", payload=64):
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
        f.write(bytes(payload))


@pytest.mark.parametrize(
    "shape, match",
    [
        ((10**6, 10**6), r"header declares an array of shape \(1000000, 1000000\) .* file holds"),
        ((10**9,), r"header declares an array of shape \(1000000000,\)"),
        ((100, 100), r"\(100, 100\) and dtype float64 .* but the file holds 192 bytes"),
    ],
    ids=["1e6 x 1e6", "1e9", "truncated"],
)
def test_npy_headers_are_checked_before_loading(tmp_path, shape, match):
    _write_npy_header(tmp_path / "x.npy", shape)
    before = (tmp_path / "x.npy").read_bytes()
    with pytest.raises(ValueError, match=match):
        load_images(tmp_path / "x.npy")
    assert (tmp_path / "x.npy").read_bytes() == before


def test_npz_member_larger_than_memory_is_refused(tmp_path, small_memory):
    _write_npy_header(tmp_path / "X.npy", (10**6, 10**6))
    with zipfile.ZipFile(tmp_path / "data.npz", "w") as z:
        z.write(tmp_path / "X.npy", "X.npy")
    with pytest.raises(ValueError, match=r"the array X of .* needs 7\.45e\+03 GiB, more than the 8\.0 GiB"):
        load_images(tmp_path / "data.npz")


def test_npy_header_garbage_is_a_value_error(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"Cannot read .*x\.npy"):
        load_images(tmp_path / "x.npy")


def _png(path, array):
    from PIL import Image

    path.parent.mkdir(exist_ok=True)
    Image.fromarray(array).save(path)


def test_16_bit_pngs_keep_their_depth_and_non_images_are_counted(tmp_path):
    pytest.importorskip("PIL")
    deep = np.random.RandomState(0).randint(0, 65536, size=(3, 8, 8)).astype(np.uint16)
    for i, image in enumerate(deep):
        _png(tmp_path / "f" / f"{i}.png", image)
    (tmp_path / "f" / "notes.txt").write_text("x")
    (tmp_path / "f" / "labels.csv").write_text("x")
    with pytest.warns(UserWarning, match=r"Skipped 2 file\(s\) .* labels\.csv, notes\.txt"):
        images, names = load_image_folder(tmp_path / "f")
    assert images.dtype == np.uint16 and len(set(np.unique(images))) > 2  # not {0, 255}
    np.testing.assert_array_equal(images, deep)
    assert names == ["0.png", "1.png", "2.png"]


@pytest.mark.parametrize("grayscale", ["yes", 1.0])
def test_load_image_folder_grayscale_must_be_a_bool_or_none(tmp_path, grayscale):
    pytest.importorskip("PIL")
    _png(tmp_path / "f" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"grayscale must be None, True or False"):
        load_image_folder(tmp_path / "f", grayscale=grayscale)


# =========================================================== category: CLI
@pytest.fixture(scope="module")
def train_file(tmp_path_factory, digits):
    train, _ = _digits_uint8(digits)
    path = tmp_path_factory.mktemp("cli") / "train.npy"
    np.save(path, train)
    return path


CLI_TINY = ["--param", "channels=[4,8]", "--param", "latent_dim=4", "--param", "max_epochs=1",
            "--param", "device=cpu", "--param", "random_state=0"]

CLI_CASES = [
    # (id, argv, message pattern); {tmp} is a fresh folder, {train} a valid .npy
    ("out folder missing", ["fit", "--data", "{tmp}/no-data.npy", "--out", "{tmp}/missing/dir/m.skocc"],
     r"The folder of --out .*missing/dir/m\.skocc' does not exist"),
    ("out is a folder", ["fit", "--data", "{train}", "--out", "{tmp}"], r"--out .* is a folder"),
    ("score out missing", ["score", "--model", "{tmp}/m.skocc", "--data", "{train}", "--out", "{tmp}/a/b.csv"],
     r"The folder of --out .*a/b\.csv' does not exist"),
    ("param typo", ["fit", "--data", "{tmp}/no-data.npy", "--out", "{tmp}/m.skocc", "--param", "max_epoch=1"],
     r"Invalid parameter 'max_epoch' for estimator ConvAEOneClass"),
    ("param zero", ["fit", "--data", "{tmp}/no-data.npy", "--out", "{tmp}/m.skocc", "--param", "max_epochs=0"],
     r"'max_epochs' parameter of ConvAEOneClass"),
    ("param bool", ["fit", "--data", "{tmp}/no-data.npy", "--out", "{tmp}/m.skocc", "--param", "resolution=true"],
     r"'resolution' parameter of ConvAEOneClass .* Got True"),
    ("param string", ["fit", "--data", "{tmp}/no-data.npy", "--out", "{tmp}/m.skocc", "--param", "score_type=foo"],
     r"'score_type' parameter"),
    ("device meta", ["fit", "--data", "{tmp}/no-data.npy", "--out", "{tmp}/m.skocc", "--param", "device=meta"],
     r"device='meta' holds no data"),
    ("callbacks", ["fit", "--data", "{train}", "--out", "{tmp}/m.skocc", *CLI_TINY, "--param", "callbacks=[42]"],
     r"callbacks must be a list of skorch callbacks"),
    ("optimizer", ["fit", "--data", "{train}", "--out", "{tmp}/m.skocc", *CLI_TINY,
                   "--param", 'net_params={{"optimizer": "adam"}}'], r"net_params\['optimizer'\]"),
    ("huge npy", ["fit", "--data", "{tmp}/huge.npy", "--out", "{tmp}/m.skocc"], r"header declares an array of shape \(1000000, 1000000\)"),
    ("int64 out of range", ["fit", "--data", "{tmp}/int.npy", "--out", "{tmp}/m.skocc", *CLI_TINY],
     r"X has integer dtype int64 with values in \[0, 1000\]"),
    ("strings", ["fit", "--data", "{tmp}/str.npy", "--out", "{tmp}/m.skocc", *CLI_TINY], r"X must hold real numbers"),
    ("zero channels", ["fit", "--data", "{tmp}/empty.npy", "--out", "{tmp}/m.skocc", *CLI_TINY], r"at least one channel"),
    ("too large network", ["fit", "--data", "{train}", "--out", "{tmp}/m.skocc", *CLI_TINY, "--param", "latent_dim=1000000000"],
     r"would need about .* latent_dim=1000000000"),
]


@pytest.mark.parametrize("argv, match", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_command_line_errors_are_one_line(tmp_path, train_file, capsys, argv, match):
    _write_npy_header(tmp_path / "huge.npy", (10**6, 10**6))
    np.save(tmp_path / "int.npy", np.linspace(0, 1000, 20 * 64).astype(np.int64).reshape(20, 8, 8))
    np.save(tmp_path / "str.npy", np.array([["a", "b"]] * 4))
    np.save(tmp_path / "empty.npy", np.zeros((4, 0, 8, 8), np.float32))
    train_before = train_file.read_bytes()
    argv = [a.format(tmp=tmp_path, train=train_file) for a in argv]
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines[-1].startswith(f"skocc {argv[0]}: error: ")
    assert re.search(match, lines[-1]), lines[-1]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "m.skocc").exists()
    assert train_file.read_bytes() == train_before


@pytest.mark.parametrize(
    "argv",
    [["fit", "--data", "x.npy", "--out", "m.skocc", "--grayscale", "--rgb"],
     ["fit", "--data", "x.npy", "--out", "m.skocc", "--estimator", "Bogus"],
     ["fit", "--data", "x.npy", "--out", "m.skocc", "--param", "not a name=1"]],
    ids=["grayscale and rgb", "unknown estimator", "param syntax"],
)
def test_command_line_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_unknown_estimator_lists_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--data", "x.npy", "--out", "m.skocc", "--estimator", "Bogus"])
    assert "ConvAEOneClass" in capsys.readouterr().err


def test_command_line_16_bit_folder_scores_at_full_depth(tmp_path, digits, capsys):
    pytest.importorskip("PIL")
    train, test = _digits_uint8(digits)
    for i, image in enumerate(train[:40]):
        _png(tmp_path / "train" / f"{i:02d}.png", image.astype(np.uint16) * np.uint16(257))
    (tmp_path / "train" / "README").write_text("not an image")
    for i, image in enumerate(test[:6]):
        _png(tmp_path / "test" / f"{i}.png", image.astype(np.uint16) * np.uint16(257))
    model_path = tmp_path / "m.skocc"
    assert main(["fit", "--data", str(tmp_path / "train"), "--out", str(model_path), *CLI_TINY]) == 0
    err = capsys.readouterr().err
    assert "read 40 images of shape (8, 8) and dtype uint16" in err
    assert re.search(r"^skocc: UserWarning: Skipped 1 file\(s\) .* README\.$", err, re.MULTILINE)
    assert main(["score", "--model", str(model_path), "--data", str(tmp_path / "test"), "--out", "-"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    scores = np.array([float(r.split(",")[1]) for r in rows])
    model = skocc.load(model_path)
    np.testing.assert_allclose(scores, model.score_samples(test[:6]), rtol=1e-5)  # 16 bits = the 8-bit values
    assert model.image_shape_ == (1, 8, 8)  # grayscale files: one channel without --grayscale


def test_command_line_rgb_flag_forces_three_channels(tmp_path, digits, capsys):
    pytest.importorskip("PIL")
    train, _ = _digits_uint8(digits)
    for i, image in enumerate(train[:20]):
        _png(tmp_path / "train" / f"{i:02d}.png", image)
    assert main(["fit", "--data", str(tmp_path / "train"), "--out", str(tmp_path / "m.skocc"),
                 "--rgb", *CLI_TINY]) == 0
    assert "read 20 images of shape (8, 8, 3)" in capsys.readouterr().err


def test_version_answers_without_importing_torch():
    code = "import sys; from skocc.cli import main\ntry: main(['--version'])\nexcept SystemExit: pass\n" \
           "print('torch' in sys.modules, 'skocc.base' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # scikit-learn alone takes about 2 s to import here.
    assert out.stdout.splitlines() == [f"skocc {skocc.__version__}", "False False False"]


def test_package_imports_public_names_on_first_use():
    code = "import sys, skocc; a = 'torch' in sys.modules; from skocc import ConvAEOneClass; " \
           "print(a, 'torch' in sys.modules, 'ConvAEOneClass' in dir(skocc), sorted(skocc.__all__) == sorted(" \
           "n for n in skocc.__all__ if hasattr(skocc, n)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True", "True"]
    with pytest.raises(AttributeError, match="has no attribute 'Bogus'"):
        skocc.Bogus  # noqa: B018


# ======================================================= category: threads
def _in_threads(fn, inputs, n_threads=4):
    with ThreadPoolExecutor(n_threads) as pool:
        return list(pool.map(fn, inputs))


def test_four_threads_score_bit_identically_to_a_serial_run(fitted, digits):
    _, test = _digits_uint8(digits)
    chunks = [test, test.astype(np.int64), test.tolist(), test[::-1].copy()] * 2
    serial = [fitted.score_samples(c) for c in chunks]
    parallel = _in_threads(fitted.score_samples, chunks)
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


def test_threads_scoring_detectors_match_serial():
    X = np.random.RandomState(0).normal(size=(60, 4))
    for model in (GaussianKDE(bandwidth=0.7).fit(X), GaussianDensity().fit(X)):
        serial = model.score_samples(X)
        for result in _in_threads(model.score_samples, [X] * 8):
            np.testing.assert_array_equal(result, serial)


def test_bad_input_in_some_threads_leaves_the_others_and_the_model_intact(fitted, digits):
    _, test = _digits_uint8(digits)
    expected = fitted.score_samples(test)
    inputs = [test, None, np.full((3, 8, 8), 999), test, "x", np.zeros((3, 0, 8, 8))] * 2

    def score(X):
        try:
            return fitted.score_samples(X)
        except (TypeError, ValueError) as exc:
            return type(exc)

    results = _in_threads(score, inputs)
    for X, result in zip(inputs, results):
        if X is test:
            np.testing.assert_array_equal(result, expected)
        else:
            assert result in (TypeError, ValueError)
    np.testing.assert_array_equal(fitted.score_samples(test), expected)


def test_threads_see_the_same_validation_errors(fitted):
    def fit_bad(params):
        try:
            ConvAEOneClass(**{**TINY, **params}).fit(np.zeros((4, 8, 8)))
        except (TypeError, ValueError) as exc:
            return str(exc)

    params = [{"resolution": True}, {"batch_size": True}, {"device": "meta"}, {"callbacks": [42]}]
    assert _in_threads(fit_bad, params) == [fit_bad(p) for p in params]


@pytest.mark.parametrize("method", ["score_map", "encode", "reconstruct"])
def test_four_threads_map_images_bit_identically(fitted, digits, method):
    _, test = _digits_uint8(digits)
    inputs = [test, test.astype(np.int32), test.astype(np.uint16) * np.uint16(257), test.tolist()]
    serial = [getattr(fitted, method)(X) for X in inputs]
    for a, b in zip(serial, _in_threads(getattr(fitted, method), inputs)):
        np.testing.assert_array_equal(a, b)


def test_four_threads_score_a_multiview_model_bit_identically(fitted_multiview, digits):
    _, test = _digits_uint8(digits)
    views = stack_views(test, test[:, :, ::-1])
    serial = fitted_multiview.score_samples_per_view(views)
    for result in _in_threads(fitted_multiview.score_samples_per_view, [views, views.astype(np.int64)] * 2):
        np.testing.assert_array_equal(result, serial)


def test_four_threads_read_a_16_bit_folder_identically(tmp_path):
    pytest.importorskip("PIL")
    deep = np.random.RandomState(0).randint(0, 65536, size=(6, 8, 8)).astype(np.uint16)
    for i, image in enumerate(deep):
        _png(tmp_path / "f" / f"{i}.png", image)
    for images, names in _in_threads(lambda size: load_image_folder(tmp_path / "f", size=size), [None, 8] * 2):
        np.testing.assert_array_equal(images, deep)
        assert names == [f"{i}.png" for i in range(6)]
