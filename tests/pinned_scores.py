"""Scores of every estimator at fixed seeds, pinned so that refactors cannot change them.

``python -m tests.pinned_scores`` writes ``tests/data/pinned_scores.npz`` from the
installed skocc; ``tests/test_pinned_scores.py`` compares a fresh fit with it.
``--mnist PATH`` adds MNIST (one digit, 500 training images) for a before/after
comparison outside the suite (the suite must not read ../shared):
``python -m tests.pinned_scores --out before.npz --mnist ../shared/data/mnist``.
``--only NAME ...`` re-pins those estimators after a deliberate change of their
scores and keeps every other array as it is.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from skocc import (
    ConvAEOneClass,
    MultiViewConvAEOneClass,
    SelfSupervisedFeatures,
    TwoStageOneClass,
)
from skocc.datasets import one_class_digits_split
from skocc.detectors import GaussianDensity, GaussianKDE

PINNED = os.path.join(os.path.dirname(__file__), "data", "pinned_scores.npz")

_AE = dict(channels=(8, 16), latent_dim=4, max_epochs=3, batch_size=32, device="cpu", random_state=0)
_AE_DEFAULTS = {k: v for k, v in _AE.items() if k != "batch_size"}
_FEATURES = dict(width=4, head_dim=8, max_epochs=2, batch_size=32, device="cpu", random_state=0)


def estimators():
    """(name, estimator, method) triples; ``method`` is what is pinned."""
    out = []
    for score_type in ("reconstruction", "latent", "combined"):
        out.append((f"convae_{score_type}", ConvAEOneClass(score_type=score_type, beta=0.1, **_AE)))
    out += [
        (
            # The score type the pins were made with, before the default changed.
            "convae_image_resized",
            ConvAEOneClass(normalize="image", resolution=12, score_type="reconstruction", **_AE),
        ),
        ("multiview_combined", MultiViewConvAEOneClass(score_type="combined", beta=0.1, **_AE)),
        # The defaults of batch_size and score_type since issue 14 (pinned then).
        ("convae_default", ConvAEOneClass(**_AE_DEFAULTS)),
        ("multiview_default", MultiViewConvAEOneClass(**_AE_DEFAULTS)),
        (
            "two_stage_rotation",
            TwoStageOneClass(
                SelfSupervisedFeatures(pretext="rotation", **_FEATURES), random_state=0
            ),
        ),
        (
            "two_stage_contrastive_da_kde",
            TwoStageOneClass(
                SelfSupervisedFeatures(pretext="contrastive_da", **_FEATURES),
                detector="kde",
                rotation_ensemble=False,
                random_state=0,
            ),
        ),
        ("gaussian_kde", GaussianKDE(random_state=0)),
        ("gaussian_density", GaussianDensity(random_state=0)),
    ]
    return out


def _views(X):
    """Two views per sample: the image and its mirror image."""
    return np.stack([X, X[..., ::-1]], axis=1)


def pinned_outputs(X_train, X_test, names=None):
    """``{name: scores}`` (and ``{name + '/offset': offset_}``) of every estimator."""
    results = {}
    for name, est in estimators():
        if names is not None and name not in names:
            continue
        Xtr, Xte = (X_train, X_test)
        if name.startswith("multiview"):
            Xtr, Xte = _views(X_train), _views(X_test)
        elif name.startswith("gaussian"):
            Xtr, Xte = X_train.reshape(len(X_train), -1), X_test.reshape(len(X_test), -1)
        est.fit(Xtr)
        results[name] = est.score_samples(Xte)
        results[name + "/offset"] = np.asarray(est.offset_)
        if name == "convae_combined":
            results[name + "/map"] = est.score_map(Xte[:5])
        if name == "two_stage_rotation":
            results[name + "/features"] = est.features_.transform(Xte)
    return results


def digits_data():
    X_train, X_test, y_train, _ = one_class_digits_split(random_state=0)
    return X_train[y_train == 0], X_test


def mnist_data(root, digit=3, n_train=500, n_test=1000):
    train = np.load(os.path.join(root, "mnist_train_first20000.npz"))
    test = np.load(os.path.join(root, "mnist_test.npz"))
    X_train = train["X"][train["y"] == digit][:n_train]
    return X_train, test["X"][:n_test]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=PINNED)
    parser.add_argument("--mnist", default=None, help="folder of mnist_*.npz; adds MNIST outputs")
    parser.add_argument(
        "--only", nargs="+", default=None, metavar="NAME",
        help="re-pin these estimators only (after a deliberate change of their scores), "
        "keeping the other arrays of --out as they are",
    )
    args = parser.parse_args(argv)
    results = {}
    if args.only:
        unknown = sorted(set(args.only) - {name for name, _ in estimators()})
        if unknown:
            parser.error(f"--only: no pinned estimator named {unknown}")
        with np.load(args.out) as old:
            results = {k: old[k] for k in old.files}
    new = pinned_outputs(*digits_data(), names=args.only)
    results.update({f"digits/{k}": v for k, v in new.items()})
    if args.mnist:
        mnist = pinned_outputs(*mnist_data(args.mnist), names=args.only)
        results.update({f"mnist/{k}": v for k, v in mnist.items()})
    np.savez_compressed(args.out, **results)
    print(f"wrote {len(results)} arrays to {args.out}")


if __name__ == "__main__":
    main()
