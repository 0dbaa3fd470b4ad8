"""Scoring throughput of an exported model in onnxruntime against skocc's own ``score_samples``.

For each configuration one model is fitted (few epochs: only scoring is
timed), exported with :func:`skocc.export_onnx` (``uint8`` input,
channels-first) and scored on the same ``uint8`` images both ways, in one
process, alternating skocc / onnxruntime over ``--repeats`` rounds after one
untimed warm-up round of each; medians are reported.

- **skocc**: ``model.score_samples(X)``, batches of the model's
  ``batch_size``, torch on the CPU with one thread
  (``torch.set_num_threads(1)``, as ``OMP_NUM_THREADS=1``).
- **onnxruntime**: ``session.run`` on the same batches (same batch size),
  CPU execution provider, ``intra_op_num_threads=1`` and
  ``inter_op_num_threads=1`` (sequential execution) to match torch's one
  thread, graph optimisations at onnxruntime's default (all).

The ratio is onnxruntime images/s over skocc images/s (above 1: onnxruntime
is faster). ``max rel diff`` is the largest ``|onnx - skocc| / |skocc|`` of
the scores of the timed images, ``max diff / std`` the largest ``|onnx -
skocc|`` over the standard deviation of skocc's scores (what a threshold or
a ranking sees): a check that both computed the same thing (the parity tests
in ``tests/test_onnx.py`` are the real check). The rotation ensemble's score
is a sum of standardised log-densities and crosses zero, so its relative
difference is large where the score is near zero.

Data: MNIST from ``--data-dir`` (``mnist/mnist_train_first20000.npz``: the
training images of digit 0 to fit; ``mnist/mnist_test.npz``: the first
``--n-images`` test images to score), or random ``uint8`` images of the same
size where that folder is missing.

Reproduce (repository root)::

    OMP_NUM_THREADS=1 python benchmarks/onnx_throughput.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, environment_line  # noqa: E402

import skocc  # noqa: E402
from skocc import ConvAEOneClass, SelfSupervisedFeatures, TwoStageOneClass  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "onnx_throughput.json"

CONFIGS = {
    # The defaults (channels (32, 64, 128), latent_dim 64), reconstruction score.
    "ConvAEOneClass 28x28x1": lambda: ConvAEOneClass(max_epochs=2, device="cpu", random_state=0),
    # The defaults: contrastive_da features of the small encoder, one Gaussian
    # per quarter turn (rotation ensemble: four feature passes per image).
    "TwoStageOneClass 28x28x1": lambda: TwoStageOneClass(
        SelfSupervisedFeatures(max_epochs=1, device="cpu", random_state=0)
    ),
}


def load_data(data_dir, n_train, n_images):
    root = Path(data_dir) / "mnist"
    if (root / "mnist_train_first20000.npz").exists() and (root / "mnist_test.npz").exists():
        train = np.load(root / "mnist_train_first20000.npz")
        test = np.load(root / "mnist_test.npz")
        X_train = train["X"][train["y"] == 0][:n_train]
        return X_train, test["X"][:n_images], "MNIST (digit 0 to fit; test images to score)"
    rng = np.random.default_rng(0)
    X_train = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    X = rng.integers(0, 256, size=(n_images, 28, 28), dtype=np.uint8)
    return X_train, X, "random uint8 28x28 (MNIST not found)"


def make_session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_scores(session, X, batch_size):
    out = []
    for start in range(0, len(X), batch_size):
        score, *_ = session.run(None, {"images": X[start : start + batch_size]})
        out.append(score)
    return np.concatenate(out)


def batch_size_of(model):
    return (model.features_ if isinstance(model, TwoStageOneClass) else model).batch_size


def run_config(name, make_model, X_train, X, repeats, folder):
    t0 = time.perf_counter()
    model = make_model().fit(X_train)
    fit_s = time.perf_counter() - t0
    path = Path(folder) / f"{name.split()[0]}.onnx"
    t0 = time.perf_counter()
    skocc.export_onnx(model, path, input_layout="channels_first", input_dtype="uint8")
    export_s = time.perf_counter() - t0
    session = make_session(path)
    batch_size = batch_size_of(model)
    X_graph = X[:, None]  # (n, 1, 28, 28): channels-first uint8
    # Warm-up: first-call allocations and onnxruntime's lazy initialisation.
    reference = model.score_samples(X)
    exported = onnx_scores(session, X_graph, batch_size)
    times = {"skocc": [], "onnxruntime": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.score_samples(X)
        times["skocc"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        onnx_scores(session, X_graph, batch_size)
        times["onnxruntime"].append(time.perf_counter() - t0)
    skocc_ips = len(X) / float(np.median(times["skocc"]))
    onnx_ips = len(X) / float(np.median(times["onnxruntime"]))
    return {
        "config": name,
        "model": " ".join(repr(model).split()),
        "n_images": len(X),
        "batch_size": batch_size,
        "fit_s": fit_s,
        "export_s": export_s,
        "onnx_file_bytes": path.stat().st_size,
        "skocc_images_per_s": skocc_ips,
        "onnxruntime_images_per_s": onnx_ips,
        "ratio_onnx_over_skocc": onnx_ips / skocc_ips,
        "max_rel_diff": float(np.max(np.abs(exported - reference) / np.abs(reference))),
        "max_abs_diff": float(np.max(np.abs(exported - reference))),
        "score_std": float(np.std(reference)),
        "times_s": times,
    }


def print_table(rows, env):
    print(environment_line(env))
    print(f"onnxruntime {env['onnxruntime']}: intra_op_num_threads=1, inter_op_num_threads=1, "
          f"sequential; torch threads {env['torch_num_threads']}; data: {env['data']}")
    header = (
        f"{'config':<26} {'images':>7} {'batch':>5} {'skocc img/s':>12} {'onnxrt img/s':>13} "
        f"{'onnx/skocc':>10} {'max rel diff':>12} {'max diff/std':>12} {'export s':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['config']:<26} {r['n_images']:>7} {r['batch_size']:>5} "
            f"{r['skocc_images_per_s']:>12.0f} {r['onnxruntime_images_per_s']:>13.0f} "
            f"{r['ratio_onnx_over_skocc']:>10.2f} {r['max_rel_diff']:>12.1e} "
            f"{r['max_abs_diff'] / r['score_std']:>12.1e} {r['export_s']:>8.1f}"
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data", help="folder holding mnist/")
    p.add_argument("--n-train", type=int, default=1000, help="training images (digit 0)")
    p.add_argument("--n-images", type=int, default=3000, help="images scored per round")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (medians reported)")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    args = p.parse_args(argv)

    import onnxruntime

    torch.set_num_threads(1)
    X_train, X, data = load_data(args.data_dir, args.n_train, args.n_images)
    env = environment(
        onnxruntime=onnxruntime.__version__,
        onnxruntime_intra_op_num_threads=1,
        onnxruntime_inter_op_num_threads=1,
        data=data,
        repeats=args.repeats,
    )
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.configs:
            rows.append(run_config(name, CONFIGS[name], X_train, X, args.repeats, folder))
    print_table(rows, env)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": env, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
