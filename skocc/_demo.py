"""``skocc demo``: the one-class protocol on scikit-learn's bundled digits."""

from __future__ import annotations

import time

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor
from sklearn.svm import OneClassSVM

from .autoencoder import ConvAEOneClass
from .datasets import one_class_digits_split


def demo_estimators(random_state=0):
    """The detectors the demo compares, by display name (unfitted)."""
    return {
        # The library's defaults, but calibration="train": the demo compares
        # rankings (AUROC), not thresholds, so the autoencoder trains on every
        # image, as the baselines do.
        "ConvAEOneClass": ConvAEOneClass(
            calibration="train", random_state=random_state, device="cpu"
        ),
        "OneClassSVM": OneClassSVM(),
        "IsolationForest": IsolationForest(random_state=random_state),
        "LOF(novelty)": LocalOutlierFactor(novelty=True),
    }


def run_demo(random_state=0, digits=range(10), log=print):
    """Train on one digit, score held-out images of all digits; report AUROC.

    Parameters
    ----------
    random_state : int, default=0
        Seed of the split and of the estimators.
    digits : iterable of int, default=range(10)
        Which digits take a turn as the normal class.
    log : callable, default=print
        Receives each line of the report.

    Returns
    -------
    results : dict
        ``{"auroc": {name: [per digit]}, "fit_seconds": {name: total over the digits},
        "digits": [...]}``.
    """
    X_train, X_test, y_train, y_test = one_class_digits_split(random_state=random_state)
    digits = list(digits)
    names = list(demo_estimators(random_state))
    auroc = {name: [] for name in names}
    seconds = {name: 0.0 for name in names}
    log("One-class protocol on sklearn's digits: train on one digit (train split),")
    log(f"score all {len(X_test)} held-out digits; AUROC with the trained digit as normal.")
    log("")
    log("digit  " + "  ".join(f"{name:>15}" for name in names))
    for digit in digits:
        normal = X_train[y_train == digit]
        for name, estimator in demo_estimators(random_state).items():
            flat = name != "ConvAEOneClass"
            start = time.perf_counter()
            estimator.fit(normal.reshape(len(normal), -1) if flat else normal)
            scores = estimator.score_samples(
                X_test.reshape(len(X_test), -1) if flat else X_test
            )
            seconds[name] += time.perf_counter() - start
            auroc[name].append(roc_auc_score(y_test == digit, scores))
        log(f"{digit:>5}  " + "  ".join(f"{auroc[n][-1]:>15.4f}" for n in names))
    log("mean   " + "  ".join(f"{np.mean(auroc[n]):>15.4f}" for n in names))
    # Fit and score time summed over every digit: the cost of the whole table.
    log("total s" + "  ".join(f"{seconds[n]:>15.1f}" for n in names))
    log(f"(total s: seconds to fit and score, summed over the {len(digits)} digits)")
    return {"auroc": auroc, "fit_seconds": seconds, "digits": digits}
