"""The command line: fit, score, demo, version; clean errors."""

import argparse
import csv
import re
import subprocess
import sys

import numpy as np
import pytest

import skocc
from skocc._demo import run_demo
from skocc.cli import main, parse_param
from skocc.datasets import one_class_digits_split


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"skocc {skocc.__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "skocc.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and skocc.__version__ in out.stdout


@pytest.mark.slow
def test_demo_reports_every_detector():
    lines = []
    result = run_demo(digits=[0, 1], log=lines.append)
    assert set(result["auroc"]) == {"ConvAEOneClass", "OneClassSVM", "IsolationForest", "LOF(novelty)"}
    for scores in result["auroc"].values():
        assert len(scores) == 2 and all(0.5 < s <= 1.0 for s in scores)
    assert any(line.startswith("mean") for line in lines)
    assert np.mean(result["auroc"]["ConvAEOneClass"]) > 0.95


# ---------------------------------------------------------------- fit and score
FAST_PARAMS = [
    "--param", "channels=[8,16]", "--param", "latent_dim=4", "--param", "max_epochs=2",
    "--param", "device=cpu", "--param", "random_state=0",
]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("beta=10", ("beta", 10)),
        ("beta=0.5", ("beta", 0.5)),
        ("resolution=null", ("resolution", None)),
        ("channels=[8,16]", ("channels", [8, 16])),
        ("lipschitz_decoder=false", ("lipschitz_decoder", False)),
        ("device=cpu", ("device", "cpu")),
        ("device=cuda:1", ("device", "cuda:1")),
        ("net_params={\"lr\": 0.01}", ("net_params", {"lr": 0.01})),
        ("score_type=", ("score_type", "")),
    ],
)
def test_param_values_are_json_when_possible(text, expected):
    assert parse_param(text) == expected


@pytest.mark.parametrize("text", ["beta", "=3", "not a name=1"])
def test_bad_param_syntax(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE"):
        parse_param(text)


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    X_train, X_test, y_train, _ = one_class_digits_split(random_state=0)
    folder = tmp_path_factory.mktemp("cli")
    np.savez(folder / "train.npz", X=X_train[y_train == 0], y=y_train[y_train == 0])
    np.save(folder / "test.npy", X_test[:30])
    return folder, X_test[:30]


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fit_then_score_arrays(digits_files, tmp_path, capsys):
    folder, X_test = digits_files
    model_path, csv_path = tmp_path / "model.skocc", tmp_path / "scores.csv"
    assert main(["fit", "--data", str(folder / "train.npz"), "--out", str(model_path),
                 "--param", "beta=0.5", *FAST_PARAMS]) == 0
    err = capsys.readouterr().err
    assert "read an array of 89 samples" in err and "saved the model" in err
    model = skocc.load(model_path)
    assert model.beta == 0.5 and model.channels == [8, 16] and model.n_epochs_ == 2

    assert main(["score", "--model", str(model_path), "--data", str(folder / "test.npy"),
                 "--out", str(csv_path)]) == 0
    rows = _read_csv(csv_path)
    assert list(rows[0]) == ["sample", "score", "decision", "prediction", "pvalue"]
    assert [r["sample"] for r in rows] == [str(i) for i in range(30)]
    np.testing.assert_array_equal([float(r["score"]) for r in rows], model.score_samples(X_test))
    np.testing.assert_allclose([float(r["decision"]) for r in rows], model.decision_function(X_test))
    np.testing.assert_array_equal([int(r["prediction"]) for r in rows], model.predict(X_test))
    np.testing.assert_allclose([float(r["pvalue"]) for r in rows], model.pvalues(X_test))


def test_calibrate_resets_the_threshold_of_a_saved_model(digits_files, tmp_path, capsys):
    folder, X_test = digits_files
    model_path, calibrated_path = tmp_path / "model.skocc", tmp_path / "calibrated.skocc"
    assert main(["fit", "--data", str(folder / "train.npz"), "--out", str(model_path),
                 *FAST_PARAMS]) == 0
    # Any images will do here; mirrored ones, so that none is an image the
    # threshold was already set from.
    normals = np.ascontiguousarray(np.load(folder / "train.npz")["X"][:40][..., ::-1])
    np.save(tmp_path / "normals.npy", normals)
    assert main(["calibrate", "--model", str(model_path), "--data", str(tmp_path / "normals.npy"),
                 "--out", str(calibrated_path)]) == 0
    assert "calibrated on 40 samples" in capsys.readouterr().err
    before, after = skocc.load(model_path), skocc.load(calibrated_path)
    expected = skocc.load(model_path).calibrate(normals)
    assert after.offset_ == expected.offset_ != before.offset_
    np.testing.assert_array_equal(after.calibration_scores_, expected.calibration_scores_)
    np.testing.assert_array_equal(after.score_samples(X_test), before.score_samples(X_test))
    # Too few images: one line, and the model file is not written.
    np.save(tmp_path / "few.npy", normals[:5])
    assert main(["calibrate", "--model", str(model_path), "--data", str(tmp_path / "few.npy"),
                 "--out", str(tmp_path / "few.skocc")]) == 1
    assert "calibrate needs at least 19" in capsys.readouterr().err
    assert not (tmp_path / "few.skocc").exists()


def test_score_labels_nan_scores_as_anomalies_like_predict(digits_files, tmp_path, monkeypatch):
    folder, X_test = digits_files
    model_path = tmp_path / "model.skocc"
    assert main(["fit", "--data", str(folder / "train.npz"), "--out", str(model_path),
                 *FAST_PARAMS]) == 0
    # A network that overflowed to NaN: the command line used to label it +1.
    nan_scores = lambda self, X: np.full(len(X), np.nan)  # noqa: E731
    monkeypatch.setattr(skocc.ConvAEOneClass, "score_samples", nan_scores)
    assert main(["score", "--model", str(model_path), "--data", str(folder / "test.npy"),
                 "--out", str(tmp_path / "s.csv")]) == 0
    rows = _read_csv(tmp_path / "s.csv")
    predicted = skocc.load(model_path).predict(X_test)
    assert [int(r["prediction"]) for r in rows] == predicted.tolist() == [-1] * len(X_test)


def test_verbose_shows_epochs_on_stderr_without_colour(digits_files, tmp_path, capsys):
    folder, _ = digits_files
    assert main(["fit", "--data", str(folder / "train.npz"), "--out", str(tmp_path / "m.skocc"),
                 "-v", *FAST_PARAMS]) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert captured.out == ""  # stdout is kept for data
    assert "train_loss" in err and len([l for l in err.splitlines() if l.strip()[:1].isdigit()]) == 2
    assert "\x1b[" not in err  # captured stderr is no terminal: no colour codes


def _png_folder(path, images, sizes=None):
    from PIL import Image

    path.mkdir()
    for i, image in enumerate(images):
        picture = Image.fromarray((image * 255).astype(np.uint8))
        if sizes is not None:
            picture = picture.resize(sizes[i % len(sizes)])
        picture.save(path / f"digit{i:02d}.png")
    return path


def test_image_folders(tmp_path, capsys):
    pytest.importorskip("PIL")
    X_train, X_test, y_train, _ = one_class_digits_split(random_state=0)
    train = _png_folder(tmp_path / "train", X_train[y_train == 0], sizes=[(16, 16), (12, 12)])
    test = _png_folder(tmp_path / "test", X_test[:6], sizes=[(20, 20)])
    model_path = tmp_path / "m.skocc"
    # Mixed sizes need --size: a one-line error, not a traceback.
    assert main(["fit", "--data", str(train), "--out", str(model_path), "--grayscale", *FAST_PARAMS]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("skocc fit: error: The images in") and "--size" in err and "\n" not in err
    assert not model_path.exists()

    assert main(["fit", "--data", str(train), "--out", str(model_path), "--grayscale",
                 "--size", "8", *FAST_PARAMS]) == 0
    assert "read 89 images of shape (8, 8)" in capsys.readouterr().err
    # Scoring reads the folder at the model's size and channels.
    assert main(["score", "--model", str(model_path), "--data", str(test), "--out", "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "sample,score,decision,prediction,pvalue"
    assert [line.split(",")[0] for line in lines[1:]] == [f"digit{i:02d}.png" for i in range(6)]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["fit", "--data", "{tmp}/missing.npz", "--out", "{tmp}/m.skocc"], "No such file or folder"),
        (["fit", "--data", "{tmp}/broken", "--out", "{tmp}/m.skocc"], r"Cannot read the image .*bad.png"),
        (["fit", "--data", "{train}", "--out", "{tmp}/m.skocc", "--param", "beta=-1"], "'beta' parameter of ConvAEOneClass"),
        (["fit", "--data", "{train}", "--out", "{tmp}/m.skocc", "--param", "bogus=1"], "Invalid parameter 'bogus'"),
        (["fit", "--data", "{train}", "--out", "{tmp}/m.skocc", "--size", "8"], "apply to folders of images"),
        (["score", "--model", "{tmp}/none.skocc", "--data", "{train}", "--out", "-"], "No skocc model file"),
        (["score", "--model", "{train}", "--data", "{train}", "--out", "-"], "is not a skocc model file"),
    ],
)
def test_errors_are_one_line(digits_files, tmp_path, capsys, argv, match):
    pytest.importorskip("PIL")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bad.png").write_bytes(b"not a png")
    argv = [a.format(tmp=tmp_path, train=digits_files[0] / "train.npz") for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith(f"skocc {argv[0]}: error: ")
    assert "Traceback" not in "\n".join(err)
    assert re.search(match, err[-1])


def test_console_script_reports_errors_with_exit_status(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "skocc.cli", "fit", "--data", str(tmp_path / "no.npz"), "--out", "m"],
        capture_output=True, text=True,
    )
    assert out.returncode == 1
    assert out.stderr.strip().startswith("skocc fit: error: No such file or folder")
