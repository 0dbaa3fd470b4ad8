"""Command line: ``skocc fit``, ``score``, ``calibrate``, ``demo``, ``skocc --version``.

A thin layer over the Python API: data are read by
:func:`skocc.datasets.load_images`, models written and read by
:func:`skocc.save` and :func:`skocc.load`. Expected failures (missing files,
unreadable images, invalid parameters) end with a one-line message on stderr
and exit status 1; usage errors with argparse's message and status 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import warnings
from contextlib import nullcontext, redirect_stdout
from pathlib import Path

import numpy as np

# Only the version at import time: torch and the estimators are imported by
# the commands that need them, so `skocc --version` and `--help` answer at once.
from ._version import __version__

# Errors a user can cause and fix (TypeError: a parameter of the wrong type
# given with --param; MemoryError: data too large for this machine); anything
# else is a bug and keeps its traceback.
_USER_ERRORS = (OSError, ValueError, TypeError, ImportError, ArithmeticError, MemoryError)

# Terminal colour codes, as skorch's epoch table marks the best values with.
_ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


def _log(message):
    print(f"skocc: {message}", file=sys.stderr, flush=True)


def _log_warning(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning for the command line: one line, no source location."""
    _log(f"{category.__name__}: {' '.join(str(message).split())}")


class _ProgressToStderr:
    """A stdout stand-in that sends skorch's epoch table to stderr.

    skorch's PrintLog prints to stdout, which the command line keeps for
    data (``skocc score --out -`` writes the CSV there); progress goes to
    stderr, without colour codes unless stderr is a terminal. Done here rather
    than with a sink on the estimator's PrintLog, which would become part of
    the model's parameters and of the saved file.
    """

    def __init__(self, stream):
        self.stream = stream
        self.colour = stream.isatty()

    def write(self, text):
        return self.stream.write(text if self.colour else _ANSI_CODES.sub("", text))

    def flush(self):
        self.stream.flush()


def _check_output(path):
    """Fail before any work when ``path`` cannot be written: a missing or read-only folder."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise IsADirectoryError(f"--out {str(path)!r} is a folder; give a file name inside it.")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The folder of --out {str(path)!r} does not exist: create {str(folder)!r} first."
        )
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"Cannot write --out {str(path)!r}: {str(folder)!r} is not writable.")


def _one_line(estimator):
    return " ".join(repr(estimator).split())


def parse_param(text):
    """``KEY=VALUE`` to ``(key, value)``; VALUE is JSON when it parses, else a string.

    ``beta=10`` gives 10, ``resolution=null`` None, ``channels=[8,16]`` a list,
    ``lipschitz_decoder=false`` False, ``device=cpu`` the string ``"cpu"``.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE with KEY a parameter name, e.g. beta=10; got {text!r}"
        )
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _size(values):
    if values is None:
        return None
    if len(values) > 2:
        raise ValueError(f"--size takes one or two integers (height [width]); got {len(values)}.")
    return values[0] if len(values) == 1 else tuple(values)


def _detectors():
    """skocc's registered outlier detectors (not its transformers), by name."""
    from . import autoencoder, two_stage  # noqa: F401  (defining the classes registers them)
    from .base import BaseDeepOneClass, registered_estimators

    return {n: c for n, c in registered_estimators().items() if issubclass(c, BaseDeepOneClass)}


class _DetectorNames:
    """``choices`` for --estimator that imports the estimators (and torch) only when asked.

    argparse reads choices only to check a given value and to print help, so
    ``skocc --version`` stays free of the heavy imports.
    """

    def __contains__(self, name):
        return name in _detectors()

    def __iter__(self):
        return iter(sorted(_detectors()))


def _fit(args):
    from . import save
    from ._runtime import resolve_device
    from .datasets import load_images

    # Every parameter is checked before a single image is read: a typo such
    # as max_epoch=1 fails at once, not after reading the whole folder.
    estimator = _detectors()[args.estimator]()
    estimator.set_params(**dict(args.param or []))
    if args.verbose:
        estimator.set_params(verbose=args.verbose)
    estimator._validate_params()
    resolve_device(estimator.device)
    X, names = load_images(args.data, size=_size(args.size), grayscale=args.grayscale)
    source = f"{len(names)} images" if names is not None else f"an array of {len(X)} samples"
    _log(f"read {source} of shape {X.shape[1:]} and dtype {X.dtype} from {args.data}")
    _log(f"fitting {_one_line(estimator)}")
    with redirect_stdout(_ProgressToStderr(sys.stderr)) if args.verbose else nullcontext():
        estimator.fit(X)
    save(estimator, args.out)
    _log(f"{estimator.n_epochs_} epochs on {estimator.device_}; saved the model to {args.out}")
    return 0


def _folder_options(model, data):
    """Folders are read at the fitted size and channel count, so images of any
    size can be scored by a model trained on arrays or on a folder."""
    if not Path(data).is_dir():
        return {}
    channels, height, width = model.image_shape_[-3:]
    return dict(size=(height, width), grayscale=channels == 1)


def _score(args):
    from . import load
    from .datasets import load_images

    model = load(args.model, device=args.device)
    if args.verbose:
        _log(f"loaded {_one_line(model)} from {args.model} on {model.device_}")
    X, names = load_images(args.data, **_folder_options(model, args.data))
    if args.verbose:
        _log(f"scoring {len(X)} samples from {args.data}")
    from ._outlier import labels_from_decision
    from .conformal import conformal_pvalues

    scores = model.score_samples(X)
    # The estimators' own rules, applied to the scores computed once.
    decision = scores - model.offset_
    prediction = labels_from_decision(decision)
    pvalues = conformal_pvalues(scores, model.calibration_scores_)
    samples = names if names is not None else range(len(X))
    with (nullcontext(sys.stdout) if args.out == "-" else open(args.out, "w", newline="")) as f:
        writer = csv.writer(f)
        writer.writerow(["sample", "score", "decision", "prediction", "pvalue"])
        rows = zip(samples, scores.tolist(), decision.tolist(), prediction.tolist(), pvalues.tolist())
        for row in rows:
            writer.writerow(row)
    if args.out != "-":
        n_anomalies = int(np.sum(prediction == -1))
        _log(f"wrote {len(X)} rows ({n_anomalies} predicted anomalies) to {args.out}")
    return 0


def _calibrate(args):
    from . import load, save
    from .datasets import load_images

    model = load(args.model, device=args.device)
    X, _ = load_images(args.data, **_folder_options(model, args.data))
    before = model.offset_
    model.calibrate(X)
    save(model, args.out)
    _log(
        f"calibrated on {len(X)} samples from {args.data} at contamination="
        f"{model.contamination}: offset_ {before:.6g} -> {model.offset_:.6g}; saved the "
        f"model to {args.out}"
    )
    return 0


def _demo(args):
    from ._demo import run_demo

    run_demo(random_state=args.random_state)
    return 0


def _export(args):
    from . import load
    from ._onnx import export_onnx

    # On the CPU: the graph is traced from a CPU copy of the network anyway, and
    # a model saved on a GPU then exports on a machine without one.
    model = load(args.model, device="cpu")
    try:
        export_onnx(
            model, args.out, input_layout=args.layout, input_dtype=args.dtype, opset=args.opset
        )
    except TypeError as exc:
        # The file holds a model that has no ONNX form (SelfSupervisedFeatures):
        # a problem with the input, reported in one line like the others.
        raise ValueError(f"{args.model} cannot be exported: {exc}") from exc
    _log(f"wrote {args.out} (opset {args.opset}, input 'images' {args.dtype} {args.layout})")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="skocc",
        description="scikit-learn compatible deep one-class classifiers for images.",
    )
    parser.add_argument("--version", action="version", version=f"skocc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    data_help = (
        "a .npz file (array X, or its only array), a .npy file, or a folder of "
        "PNG/JPEG images (needs skocc[images])"
    )

    fit = sub.add_parser("fit", help="train on normal images and save the model")
    fit.add_argument("--data", required=True, help=data_help)
    fit.add_argument("--out", required=True, help="model file to write (e.g. model.skocc)")
    fit.add_argument(
        "--estimator",
        default="ConvAEOneClass",
        choices=_DetectorNames(),
        metavar="NAME",
        help="estimator class: %(choices)s (default ConvAEOneClass)",
    )
    fit.add_argument(
        "--param",
        action="append",
        type=parse_param,
        metavar="KEY=VALUE",
        help="estimator parameter, repeatable; VALUE is read as JSON when it can be "
        "(beta=10, resolution=null, channels=[8,16]), else as a string (device=cpu)",
    )
    fit.add_argument(
        "--size", nargs="+", type=int, metavar="N", help="folders: resize to HEIGHT [WIDTH]"
    )
    channels = fit.add_mutually_exclusive_group()
    channels.add_argument(
        "--grayscale", dest="grayscale", action="store_const", const=True, default=None,
        help="folders: read one channel (default: the files' own mode, one channel "
        "when every image is grayscale)",
    )
    channels.add_argument(
        "--rgb", dest="grayscale", action="store_const", const=False,
        help="folders: read three channels, also from grayscale files",
    )
    fit.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="-v: a line per epoch; -vv: also a progress bar (the estimator's verbose)",
    )
    fit.set_defaults(func=_fit)

    score = sub.add_parser("score", help="score samples with a saved model, to CSV")
    score.add_argument(
        "--model", required=True, help="model file written by skocc fit or skocc.save"
    )
    score.add_argument(
        "--data", required=True,
        help=data_help + "; folders are resized to the model's image size",
    )
    score.add_argument(
        "--out", required=True,
        help="CSV to write (- for stdout): sample, score (higher = more normal), "
        "decision (negative = anomaly), prediction (+1 normal, -1 anomaly), "
        "pvalue (conformal p-value: small = anomalous)",
    )
    score.add_argument("--device", default=None, help="device to score on (default: as saved)")
    score.add_argument("-v", "--verbose", action="count", default=0, help="report progress")
    score.set_defaults(func=_score)

    calibrate = sub.add_parser(
        "calibrate",
        help="re-set a saved model's threshold from new normal images, without retraining",
    )
    calibrate.add_argument("--model", required=True, help="model file to calibrate")
    calibrate.add_argument(
        "--data", required=True,
        help=data_help + " of normal samples the model was not trained on",
    )
    calibrate.add_argument(
        "--out", required=True, help="model file to write (may be the same as --model)"
    )
    calibrate.add_argument("--device", default=None, help="device to score on (default: as saved)")
    calibrate.set_defaults(func=_calibrate)

    demo = sub.add_parser(
        "demo",
        help="one-class protocol on sklearn's bundled digits, against classical detectors",
    )
    demo.add_argument("--random-state", type=int, default=0, help="seed (default 0)")
    demo.set_defaults(func=_demo)

    from ._onnx_options import DEFAULT_OPSET, INPUT_DTYPES, INPUT_LAYOUTS

    export = sub.add_parser(
        "export",
        help="write a saved model as an ONNX graph from raw images to scores (needs skocc[onnx])",
    )
    export.add_argument(
        "--model", required=True, help="model file written by skocc fit or skocc.save"
    )
    export.add_argument("--out", required=True, help="ONNX file to write (e.g. model.onnx)")
    export.add_argument(
        "--layout", default="auto", choices=INPUT_LAYOUTS,
        help="input layout: (batch, C, H, W), (batch, H, W, C), (batch, C*H*W), or auto: as "
        "the model reads its input (default auto)",
    )
    export.add_argument(
        "--dtype", default="uint8", choices=INPUT_DTYPES,
        help="input element type; uint8 pixels are scaled to [0, 1] in the graph (default uint8)",
    )
    export.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET,
        help=f"ONNX opset, at least {DEFAULT_OPSET} (default {DEFAULT_OPSET})",
    )
    export.set_defaults(func=_export)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            # The command line decides how warnings show: each once, as one
            # log line on stderr like every other message, whatever filters
            # the environment set.
            warnings.simplefilter("default")
            warnings.showwarning = _log_warning
            if getattr(args, "out", "-") != "-":
                _check_output(args.out)  # before reading or training anything
            return args.func(args)
    except _USER_ERRORS as exc:
        message = " ".join(str(exc).split())  # one line, whatever the exception held
        print(f"skocc {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
