"""skocc.export_onnx: onnxruntime scores raw images as the fitted model does.

Tolerances. Every comparison is ``rtol=1e-5`` plus an ``atol`` derived from how
float32 networks differ between two runtimes: torch and onnxruntime sum the
products of a convolution or a matrix product in different orders, so their
results differ by a few float32 units in the last place of the *intermediate*
values (activations of order 1: about 1e-7), not of the result. Where a score is
small through cancellation, that is more than 1e-5 of it: the latent norm of a
collapsed code (about 0.02 after two epochs with ``beta=0.5``) came out 1e-5
apart, relatively. So a float32 term gets ``atol = TERM_ATOL = 1e-6`` (about ten
units in the last place of 1, ten times the largest difference seen), and a
score that divides terms by their training standard deviations gets the sum of
``TERM_ATOL / std`` over its terms. The two-stage detectors work in float64 on
float32 features, so their bound is ``rtol`` of each detector's typical score
(its training mean), divided by its standard deviation where the rotation
ensemble standardises it.
"""

import contextlib
import copy
import io
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator

import skocc
from skocc import ConvAEOneClass, MultiViewConvAEOneClass, TwoStageOneClass, export_onnx
from skocc.cli import main
from skocc.detectors import GaussianKDE
from skocc.nn.objectives import SCORE_TERMS

from ._settings import FAST, fast_features

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")  # installed with onnxruntime by skocc[onnx] and [test]

RTOL = 1e-5
TERM_ATOL = 1e-6
MAP_ATOL = TERM_ATOL  # a map pixel is a norm of float32 differences, like the terms
N_TRAIN = 200


# ---------------------------------------------------------------- helpers
def _as_uint8(images):
    return np.round(images * 255).astype(np.uint8)


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as torch in the tests: one thread
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _state(model, network_model):
    """What export must not change: the module's mode, device, weights, the model's attributes."""
    module = network_model.net_.module_
    return dict(
        training=[m.training for m in module.modules()],
        device=[str(t.device) for t in module.state_dict().values()],
        weights={k: v.clone() for k, v in module.state_dict().items()},
        requires_grad=[p.requires_grad for p in module.parameters()],
        params=repr(model.get_params()),
        offset=model.offset_,
    )


def _assert_same_state(before, after):
    assert before["training"] == after["training"]
    assert before["device"] == after["device"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["weights"].keys() == after["weights"].keys()
    for key, value in before["weights"].items():
        assert torch.equal(value, after["weights"][key]), key
    assert before["params"] == after["params"] and before["offset"] == after["offset"]


def _export(model, path, **options):
    """export_onnx, checking that it leaves the model as it was."""
    network_model = model.features_ if isinstance(model, TwoStageOneClass) else model
    before = _state(model, network_model)
    export_onnx(model, path, **options)
    _assert_same_state(before, _state(model, network_model))
    return _session(path)


def _autoencoder_atol(model, X):
    """A term's float32 error, through the combination of two terms: ``softplus(z) ** 2`` each."""
    names = SCORE_TERMS[model.score_type]
    if len(names) == 1:
        return TERM_ATOL
    columns = model._score_columns()
    terms = model._score_terms(model._validate_images(X, reset=False))
    atol = 0.0
    for name in names:
        col = columns[name].start
        z = (terms[:, col] - model.score_mean_[col]) / model.score_std_[col]
        # d softplus(z)**2 / dz = 2 softplus(z) sigmoid(z) <= 2 softplus(z).
        atol += 2 * np.logaddexp(0, z).max() / model.score_std_[col]
    return TERM_ATOL * float(atol)


def _two_stage_atol(model):
    typical = RTOL * np.abs(model.score_mean_)
    if len(model.detectors_) == 1:
        return float(typical[0])
    return float(np.sum(typical / model.score_std_))


def _check_parity(session, model, images, graph_input, atol, maps=True):
    """Scores, decisions (and maps) of the graph against the model's, batches of 1 and 37."""
    for n in (1, 37):
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(None, {"images": graph_input[:n]})))
        expected = model.score_samples(images[:n])
        assert outputs["score"].dtype == np.float64 and outputs["score"].shape == (n,)
        np.testing.assert_allclose(outputs["score"], expected, rtol=RTOL, atol=atol)
        np.testing.assert_allclose(
            outputs["decision"], model.decision_function(images[:n]), rtol=RTOL, atol=atol
        )
        if maps:
            expected_maps = model.score_map(images[:n])
            assert outputs["map"].dtype == np.float32 and outputs["map"].shape == expected_maps.shape
            np.testing.assert_allclose(outputs["map"], expected_maps, rtol=RTOL, atol=MAP_ATOL)
        else:
            assert "map" not in outputs
    return outputs


# ---------------------------------------------------------------- fitted models
@pytest.fixture(scope="module")
def images(digits):
    X_train, X_test, _, _ = digits
    return X_train[:N_TRAIN], X_test[:37]


@pytest.fixture(scope="module")
def autoencoders(images):
    """ConvAEOneClass with beta > 0 (so the latent score means something), by resolution."""
    X_train, _ = images
    return {
        resolution: ConvAEOneClass(beta=0.5, resolution=resolution, **FAST).fit(X_train)
        for resolution in (None, 6)
    }


@pytest.fixture(scope="module")
def two_stage_gde(images):
    X_train, _ = images
    return TwoStageOneClass(fast_features(), detector="gde").fit(X_train)


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize(
    "score_type, dtype, resolution",
    [
        ("reconstruction", "uint8", None),
        ("latent", "float32", None),
        # Downsized with antialiasing, maps sized back up. uint8 with resolution:
        # the kde test below.
        ("combined", "float32", 6),
        ("mahalanobis", "float32", None),
        ("reconstruction+mahalanobis", "uint8", 6),
    ],
)
def test_autoencoder_scores_match(autoencoders, images, tmp_path, score_type, dtype, resolution):
    _, X_test = images
    model = copy.deepcopy(autoencoders[resolution]).set_params(score_type=score_type)
    if score_type == "latent":
        # A recalibrated threshold: the file must hold the offset_ of the model
        # it was exported from, whatever computed it.
        model.offset_ = float(np.median(model.score_samples(X_test)))
    X = _as_uint8(X_test) if dtype == "uint8" else X_test
    session = _export(model, tmp_path / "model.onnx", input_dtype=dtype)
    assert session.get_inputs()[0].type == f"tensor({'uint8' if dtype == 'uint8' else 'float'})"
    _check_parity(session, model, X, X[:, None], _autoencoder_atol(model, X))


def test_multiview_scores_match_channels_last(images, tmp_path):
    X_train, X_test = images
    views = skocc.stack_views(X_train, np.flip(X_train, axis=2))
    model = MultiViewConvAEOneClass(beta=0.5, **FAST).fit(views)  # reconstruction+mahalanobis
    test_views = _as_uint8(skocc.stack_views(X_test, np.flip(X_test, axis=2)))
    session = _export(model, tmp_path / "model.onnx", input_layout="channels_last")
    assert session.get_inputs()[0].shape == ["batch", 2, 8, 8, 1]
    outputs = _check_parity(
        session, model, test_views, np.moveaxis(test_views, 2, -1), _autoencoder_atol(model, test_views)
    )
    assert outputs["map"].shape == (37, 2, 8, 8)


def test_two_stage_gde_rotation_ensemble_scores_match(two_stage_gde, images, tmp_path):
    _, X_test = images
    assert len(two_stage_gde.detectors_) == 4
    session = _export(two_stage_gde, tmp_path / "model.onnx", input_dtype="float32")
    atol = _two_stage_atol(two_stage_gde)
    _check_parity(session, two_stage_gde, X_test, X_test[:, None], atol, maps=False)


def test_two_stage_kde_normalized_resized_scores_match(images, tmp_path):
    X_train, X_test = images
    features = fast_features(resolution=6, normalize="image", max_epochs=1)
    model = TwoStageOneClass(features, detector="kde", rotation_ensemble=False).fit(X_train)
    X = _as_uint8(X_test)
    session = _export(model, tmp_path / "model.onnx", input_dtype="uint8")
    _check_parity(session, model, X, X[:, None], _two_stage_atol(model), maps=False)


# ---------------------------------------------------------------- the file
@pytest.fixture(scope="module")
def cli_export(autoencoders, tmp_path_factory):
    """``skocc export`` of the saved ConvAEOneClass, flat float32 input: (path, exit status, stderr).

    The metadata test reads the same file, so the module exports one graph fewer.
    """
    folder = tmp_path_factory.mktemp("cli")
    skocc.save(autoencoders[None], folder / "model.skocc")
    path = folder / "model.onnx"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(
            ["export", "--model", str(folder / "model.skocc"), "--out", str(path),
             "--layout", "flat", "--dtype", "float32"]
        )
    return path, code, stderr.getvalue()


def test_cli_export(cli_export, autoencoders, images):
    _, X_test = images
    path, code, stderr = cli_export
    assert code == 0 and f"wrote {path}" in stderr
    model = autoencoders[None]
    session = _session(path)
    _check_parity(
        session, model, X_test, X_test.reshape(len(X_test), -1), _autoencoder_atol(model, X_test)
    )


def test_metadata_and_dynamic_batch(cli_export, autoencoders):
    path, code, _ = cli_export
    assert code == 0
    model = autoencoders[None]
    proto = onnx.load(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["skocc_version"] == skocc.__version__
    assert meta["class"] == "ConvAEOneClass"
    params = json.loads(meta["params"])
    assert params["beta"] == 0.5 and params["channels"] == [8, 16] and params["resolution"] is None
    assert set(params) == set(model.get_params(deep=False))
    assert float(meta["offset_"]) == model.offset_  # repr round-trips a float exactly
    assert float(meta["contamination"]) == model.contamination
    assert (meta["input_name"], meta["input_layout"], meta["input_dtype"]) == ("images", "flat", "float32")
    assert json.loads(meta["input_shape"]) == ["batch", 64]
    assert json.loads(meta["output_names"]) == ["score", "decision", "map"]
    assert meta["opset"] == "18"
    assert [o.version for o in proto.opset_import if o.domain == ""] == [18]
    # One symbolic batch axis on the input and every output.
    (graph_input,) = proto.graph.input
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "batch"
    for output in proto.graph.output:
        assert output.type.tensor_type.shape.dim[0].dim_param == "batch"
    session = _session(path)
    assert session.get_modelmeta().custom_metadata_map == meta
    for n in (1, 5, 64):
        X = np.random.default_rng(n).random((n, 64), dtype=np.float32)
        score, decision, maps = session.run(None, {"images": X})
        assert score.shape == decision.shape == (n,) and maps.shape == (n, 8, 8)


def test_auto_layout_follows_the_model():
    from skocc._onnx import _resolve_layout

    assert _resolve_layout(ConvAEOneClass(), "auto") == "channels_first"
    assert _resolve_layout(ConvAEOneClass(data_format="channels_last"), "auto") == "channels_last"
    assert _resolve_layout(ConvAEOneClass(image_shape=(8, 8)), "auto") == "flat"
    assert _resolve_layout(ConvAEOneClass(image_shape=(8, 8)), "channels_last") == "channels_last"


# ---------------------------------------------------------------- refusals
def test_refuses_ocsvm_naming_the_detector(images, tmp_path):
    X_train, _ = images
    features = fast_features(max_epochs=1)
    model = TwoStageOneClass(features, detector="ocsvm", rotation_ensemble=False).fit(X_train)
    with pytest.raises(TypeError, match=r"detectors_\[0\] is sklearn\.svm\..*OneClassSVM.*'gde' or 'kde'"):
        export_onnx(model, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_refuses_features_it_cannot_trace(two_stage_gde, images, tmp_path):
    X_train, _ = images
    frozen = FrozenEstimator(two_stage_gde.features_)
    model = TwoStageOneClass(frozen, rotation_ensemble=False).fit(X_train)
    with pytest.raises(TypeError, match="features_ is sklearn.frozen.*FrozenEstimator"):
        export_onnx(model, tmp_path / "model.onnx")


def test_refuses_other_estimators_and_unfitted_models(tmp_path):
    kde = GaussianKDE().fit(np.random.default_rng(0).normal(size=(20, 3)))
    expected = "ConvAEOneClass, MultiViewConvAEOneClass or TwoStageOneClass; got skocc.detectors.GaussianKDE"
    with pytest.raises(TypeError, match=expected):
        export_onnx(kde, tmp_path / "model.onnx")
    with pytest.raises(NotFittedError):
        export_onnx(ConvAEOneClass(), tmp_path / "model.onnx")


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(input_layout="NCHW"), "'input_layout' parameter of export_onnx must be a str among"),
        (dict(input_dtype="float64"), "'input_dtype' parameter of export_onnx must be a str among"),
        (dict(opset=17), "'opset' parameter of export_onnx must be an int in the range \\[18, inf\\)"),
    ],
)
def test_bad_options_name_the_argument(autoencoders, tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        export_onnx(autoencoders[None], tmp_path / "model.onnx", **options)


def test_opset_beyond_what_onnx_defines_is_refused(autoencoders, tmp_path):
    newest = onnx.defs.onnx_opset_version()
    with pytest.raises(ValueError, match=f"opset must be at most {newest}.*got {newest + 1}"):
        export_onnx(autoencoders[None], tmp_path / "model.onnx", opset=newest + 1)


def test_a_file_in_another_opset_than_asked_is_refused():
    from skocc._onnx import _check_opset

    # What torch's exporter writes when its conversion to the opset asked for fails.
    graph = onnx.helper.make_graph([], "g", [], [])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    _check_opset(proto, 18)
    with pytest.raises(ValueError, match="could not convert the graph to opset=21; it wrote opset 18"):
        _check_opset(proto, 21)


@pytest.mark.parametrize("missing", ["onnx", "onnxscript"])
def test_import_error_names_the_extra(autoencoders, tmp_path, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import <missing>` fail
    with pytest.raises(ImportError, match=r'pip install "skocc\[onnx\]"'):
        export_onnx(autoencoders[None], tmp_path / "model.onnx")


def test_reduced_precision_is_announced(autoencoders, tmp_path, monkeypatch):
    model = copy.deepcopy(autoencoders[None])
    model.net_.precision = "bfloat16"  # as a model fitted with precision="bfloat16" has it

    def stop(*args, **kwargs):
        raise RuntimeError("stopped before tracing")

    monkeypatch.setattr("skocc._onnx._graph_module", stop)
    with pytest.warns(UserWarning, match="precision='bfloat16'.*computes in float32"):
        with pytest.raises(RuntimeError, match="stopped before tracing"):
            export_onnx(model, tmp_path / "model.onnx")


# ---------------------------------------------------------------- command line
def test_cli_export_refuses_features_in_one_line(two_stage_gde, tmp_path, capsys):
    skocc.save(two_stage_gde.features_, tmp_path / "features.skocc")
    argv = ["export", "--model", str(tmp_path / "features.skocc"), "--out", str(tmp_path / "f.onnx")]
    code = main(argv)
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("skocc export: error:") and "cannot be exported" in err
    assert "SelfSupervisedFeatures" in err and "\n" not in err


# ---------------------------------------------------------------- documentation
def test_user_guide_deployment_example_runs_without_skocc(
    cli_export, autoencoders, tmp_path, monkeypatch
):
    # The user guide's example as a reader runs it: in a folder holding
    # model.onnx, with skocc and torch unimportable.
    text = (Path(__file__).resolve().parents[1] / "docs" / "user_guide.rst").read_text()
    section = text[text.index(".. _deployment:"):]
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", section)
    example = next(b for b in blocks if "onnxruntime" in b)
    code = "\n".join(line[3:] for line in example.splitlines())
    assert "skocc" not in code and "torch" not in code
    path, code_status, _ = cli_export
    assert code_status == 0
    shutil.copy(path, tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    for name in ("skocc", "torch"):
        monkeypatch.setitem(sys.modules, name, None)
    namespace = {}
    exec(compile(code, "user_guide.rst", "exec"), namespace)
    monkeypatch.undo()
    model = autoencoders[None]
    zeros = np.zeros((16, 1, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(namespace["score"], model.score_samples(zeros), rtol=RTOL, atol=TERM_ATOL)
    assert namespace["labels"].tolist() == model.predict(zeros).tolist()
