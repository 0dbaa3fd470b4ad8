"""One-class benchmark of ``skocc.ConvAEOneClass`` against classical detectors.

Protocol (the one papers use, see ``../shared/data/README.md``): for every class
``c`` of a data set, fit each method on the training images of class ``c``
only, score the whole test set with ``score_samples`` (higher = more normal)
and compute the AUROC with class ``c`` as the normal (positive) class. Report
every class, the mean over classes (then mean ± std over seeds), and the
median wall time of fitting and of scoring.

Data sets and splits
--------------------
- ``digits``: ``skocc.datasets.one_class_digits_split(random_state=seed)``,
  8x8 images in [0, 1], 10 classes.
- ``coil20``: ``coil20/coil20_32x32.npz``, 20 objects x 72 poses, 32x32 uint8;
  stratified 50/50 split by object per seed, so 36 training images of the
  normal object and 720 test images.
- ``mnist``: a SUBSAMPLE of ``mnist/mnist_train_first20000.npz`` (the first
  ``--mnist-train`` images of each digit) and of ``mnist/mnist_test.npz`` (a
  fixed random subset of ``--mnist-test`` images, seed 0), because the
  benchmark machine is a small CPU. Not comparable to full-MNIST papers.

- ``elpv``: ``elpv/elpv_128.npz`` resized to 64 x 64 (bilinear, antialiased,
  back to uint8), module types pooled; normal = functional cells (defect
  probability 0), anomalies = defective cells (probability 1). Per seed the
  functional cells are shuffled, 70 % train, the test set is the other 30 % plus
  every defective cell; cells with probability 1/3 or 2/3 are left out
  (protocol of ``elpv/SOURCE.txt``). One normal class.

Methods (all on the same splits)
--------------------------------
- ``ConvAEOneClass`` with each recipe of ``--recipe`` (a name in ``RECIPES``:
  ``default`` is the library's defaults, ``calibration="holdout"`` included,
  so the network trains on 80 % of the training images, as a user's model
  does; ``--calibration train`` trains on all of them), fitted once per class
  and read with every ``score_type`` of the library (``set_params`` after
  ``fit``): ``reconstruction`` (``-||x - x_hat||``), ``latent`` (``-||z||``),
  ``mahalanobis`` (``-d_M(z)``, the Mahalanobis distance of the code under the
  Ledoit-Wolf Gaussian of the training codes), ``combined`` and
  ``reconstruction+mahalanobis`` (the two terms standardised with their
  training means and standard deviations, and added);
- on raw flattened pixels in [0, 1]: ``LocalOutlierFactor(novelty=True)``,
  ``OneClassSVM()``, ``IsolationForest(random_state=seed)`` and an exact
  Gaussian kernel density whose bandwidth is the median pairwise distance of
  the training points divided by sqrt(2) (training data only; nothing is tuned
  on the test set).

Reproduce (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/convae_one_class.py \\
        --datasets digits coil20 mnist elpv --data-dir ../shared/data \\
        --recipe default b64

Tables are printed as markdown; every seed and class is written to
``benchmarks/results/convae_one_class.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import LocalOutlierFactor
from sklearn.svm import OneClassSVM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import KDE_RULE, ExactGaussianKDE, environment_line  # noqa: E402
from _common import environment as common_environment  # noqa: E402

from skocc import ConvAEOneClass  # noqa: E402
from skocc.datasets import one_class_digits_split  # noqa: E402
from skocc.nn.objectives import SCORE_TYPES  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "convae_one_class.json"

#: ConvAEOneClass parameters of every recipe, on top of the library defaults.
#: ``default`` is the library as it is; the others are the candidates screened
#: for issue 14 (see RESULTS.md, "ConvAEOneClass: latent norm and defaults").
RECIPES = {
    "default": {},
    # The defaults before issue 14 (the scores are read from one fit anyway).
    "b64": {"batch_size": 64},
    "beta0.1": {"beta": 0.1},  # the default when the first tables were made
    "beta1": {"beta": 1.0},  # the digits demo's setting
    "b16": {"batch_size": 16},
    "b16-sq": {"batch_size": 16, "norm": "squared_l2"},
    "b16-nolip": {"batch_size": 16, "lipschitz_decoder": False},
    "b16-sq-nolip": {"batch_size": 16, "norm": "squared_l2", "lipschitz_decoder": False},
}

#: ``calibration`` of every recipe that does not set it (``--calibration``).
CALIBRATION = ["holdout"]

#: Every recipe is read with every score type of the library (one fit).
AE_SCORES = SCORE_TYPES

BASELINES = {
    "LOF": lambda seed: LocalOutlierFactor(novelty=True),
    "OC-SVM": lambda seed: OneClassSVM(),
    "IsolationForest": lambda seed: IsolationForest(random_state=seed),
    "Gaussian KDE (exact)": lambda seed: ExactGaussianKDE(),
}


def ae_columns(recipes):
    return [f"AE[{r}] {score}" for r in recipes for score in AE_SCORES]


# ---------------------------------------------------------------- data sets
def load_digits_split(seed, args):
    X_train, X_test, y_train, y_test = one_class_digits_split(random_state=seed)
    return X_train, X_test, y_train, y_test


def load_coil20_split(seed, args):
    z = np.load(Path(args.data_dir) / "coil20" / "coil20_32x32.npz", allow_pickle=True)
    X, y = z["X"], z["y"].astype(int)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.5, stratify=y, random_state=seed
    )
    return X_train, X_test, y_train, y_test


def load_mnist_split(seed, args):
    """The same images for every seed (``seed`` only seeds the models)."""
    root = Path(args.data_dir) / "mnist"
    train, test = np.load(root / "mnist_train_first20000.npz"), np.load(root / "mnist_test.npz")
    y_all = train["y"].astype(int)
    keep = np.sort(
        np.concatenate([np.flatnonzero(y_all == c)[: args.mnist_train] for c in range(10)])
    )
    n_test = len(test["y"])
    if args.mnist_test >= n_test:
        test_idx = np.arange(n_test)
    else:
        rng = np.random.RandomState(0)
        test_idx = np.sort(rng.choice(n_test, size=args.mnist_test, replace=False))
    return train["X"][keep], test["X"][test_idx], y_all[keep], test["y"][test_idx].astype(int)


def _resize_uint8(X, side):
    """uint8 images resized to ``side`` x ``side`` (bilinear, antialiased), uint8."""
    t = torch.from_numpy(X).float()[:, None]
    t = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return t[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def load_elpv_split(seed, args):
    """Functional cells (label 0) train; test: the rest of them and every defective cell (1)."""
    z = np.load(Path(args.data_dir) / "elpv" / "elpv_128.npz", allow_pickle=True)
    X, proba = _resize_uint8(z["X"], args.elpv_size), z["proba"]
    functional, defective = np.flatnonzero(proba == 0), np.flatnonzero(proba == 1)
    order = np.random.RandomState(seed).permutation(functional)
    n_train = int(round(0.7 * len(order)))
    train, test = order[:n_train], np.concatenate([order[n_train:], defective])
    y = (proba == 1).astype(int)
    return X[train], X[test], y[train], y[test]


LOADERS = {
    "digits": load_digits_split,
    "coil20": load_coil20_split,
    "mnist": load_mnist_split,
    "elpv": load_elpv_split,
}


def dataset_note(name, args):
    if name == "mnist":
        if args.mnist_train >= 2000 and args.mnist_test >= 10000:
            return (
                "all of mnist_train_first20000.npz (about 2,000 training images per digit, "
                "not the ~6,000 of full MNIST), the whole test set (10,000)"
            )
        return (
            f"SUBSAMPLE: first {args.mnist_train} training images per digit from "
            f"mnist_train_first20000.npz, {args.mnist_test} random test images (seed 0) "
            "from mnist_test.npz"
        )
    if name == "coil20":
        return "stratified 50/50 split per seed: 36 training images per object, 720 test images"
    if name == "elpv":
        return (
            f"pooled mono + poly, {args.elpv_size} x {args.elpv_size}: 70 % of the functional "
            "cells train (shuffled per seed), test = the other 30 % + every defective cell"
        )
    return "skocc.datasets.one_class_digits_split(random_state=seed): 50/50 stratified"


def flat_pixels(X):
    """Raw pixels in [0, 1], one row per image, float64."""
    X = np.asarray(X)
    flat = X.reshape(len(X), -1).astype(np.float64)
    return flat / 255.0 if X.dtype == np.uint8 else flat


# ------------------------------------------------------------------ methods
def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def ae_scores(model, X_test):
    """``{score_type: test normality scores}`` of one fitted ConvAEOneClass, for every score type."""
    default = model.score_type
    try:
        return {kind: model.set_params(score_type=kind).score_samples(X_test) for kind in AE_SCORES}
    finally:
        model.set_params(score_type=default)


def make_ae(recipe, seed, max_epochs, extra=None):
    params = dict(RECIPES[recipe]) if isinstance(recipe, str) else dict(recipe)
    params.update(extra or {})
    params.setdefault("max_epochs", max_epochs)
    params.setdefault("calibration", CALIBRATION[0])
    return ConvAEOneClass(random_state=seed, device="cpu", **params)


def run_recipe(recipe, X_normal, X_test, normal, seed, max_epochs):
    """Fit one recipe; AUROC and times for each of its scores."""
    model = make_ae(recipe, seed, max_epochs)
    _, fit_s = timed(model.fit, X_normal)
    scores, score_s = timed(ae_scores, model, X_test)
    return {
        f"AE[{recipe}] {name}": {
            "auroc": float(roc_auc_score(normal, test)),
            "fit_s": fit_s,
            # Every score type from one fit; the time of all of them.
            "score_s": score_s,
            "n_epochs": int(model.n_epochs_),
        }
        for name, test in scores.items()
    }


def run_baseline(make, X_normal, X_test, normal, seed):
    model = make(seed)
    _, fit_s = timed(model.fit, X_normal)
    scores, score_s = timed(model.score_samples, X_test)
    result = {"auroc": float(roc_auc_score(normal, scores)), "fit_s": fit_s, "score_s": score_s}
    if isinstance(model, ExactGaussianKDE):
        result["bandwidth"] = model.bandwidth_
    return result


def run_class(c, X_train, X_test, y_train, y_test, seed, max_epochs, recipes):
    """Every method with class ``c`` as the normal class: {method: result}."""
    normal = (y_test == c).astype(int)
    X_normal = X_train[y_train == c]
    results = {}
    for recipe in recipes:
        results.update(run_recipe(recipe, X_normal, X_test, normal, seed, max_epochs))
    F_normal, F_test = flat_pixels(X_normal), flat_pixels(X_test)
    for name, make in BASELINES.items():
        results[name] = run_baseline(make, F_normal, F_test, normal, seed)
    return results


def epochs_for(name, args):
    return {"mnist": args.mnist_epochs, "elpv": args.elpv_epochs}.get(name) or args.max_epochs


def run_dataset(name, seeds, args):
    """{"seeds": {seed: {class: {method: result}}}, ...} for one data set."""
    per_seed = {}
    max_epochs = epochs_for(name, args)
    for seed in seeds:
        X_train, X_test, y_train, y_test = LOADERS[name](seed, args)
        classes = np.unique(y_train)
        per_class = {}
        for c in classes:
            start = time.perf_counter()
            per_class[int(c)] = run_class(
                c, X_train, X_test, y_train, y_test, seed, max_epochs, args.recipe
            )
            first = f"AE[{args.recipe[0]}] {ConvAEOneClass().score_type}"
            print(
                f"[{name}] seed {seed} class {c}: {time.perf_counter() - start:.1f} s, "
                f"{first} AUROC {per_class[int(c)][first]['auroc']:.3f}, "
                f"LOF {per_class[int(c)]['LOF']['auroc']:.3f}",
                file=sys.stderr,
                flush=True,
            )
        per_seed[int(seed)] = per_class
    return {
        "note": dataset_note(name, args),
        "max_epochs": max_epochs,
        "n_train": int(len(X_train)),
        "n_test": int(len(X_test)),
        "image_shape": list(np.shape(X_train)[1:]),
        "seeds": per_seed,
    }


# ------------------------------------------------------------------ summary
def summarize(result, methods):
    """Per-method summary and per-class mean AUROC over seeds."""
    seeds = result["seeds"]
    classes = sorted(next(iter(seeds.values())))
    summary, per_class = {}, {}
    for method in methods:
        seed_means = [np.mean([seeds[s][c][method]["auroc"] for c in classes]) for s in seeds]
        fit_s = [seeds[s][c][method]["fit_s"] for s in seeds for c in classes]
        score_s = [seeds[s][c][method]["score_s"] for s in seeds for c in classes]
        summary[method] = {
            "mean_auroc": float(np.mean(seed_means)),
            "std_auroc_over_seeds": float(np.std(seed_means)),
            "mean_auroc_per_seed": [float(m) for m in seed_means],
            "median_fit_s": float(np.median(fit_s)),
            "median_score_s": float(np.median(score_s)),
        }
        per_class[method] = {
            c: float(np.mean([seeds[s][c][method]["auroc"] for s in seeds])) for c in classes
        }
    return summary, per_class


def summary_table(summary, n_seeds):
    lines = [
        f"| method | mean AUROC (%), mean ± std over {n_seeds} seed(s) "
        "| median fit s / class | median score s |",
        "|---|---|---|---|",
    ]
    for method, row in summary.items():
        lines.append(
            f"| {method} | {100 * row['mean_auroc']:.2f} ± {100 * row['std_auroc_over_seeds']:.2f} "
            f"| {row['median_fit_s']:.2f} | {row['median_score_s']:.3f} |"
        )
    return "\n".join(lines)


def per_class_table(per_class):
    methods = list(per_class)
    classes = list(per_class[methods[0]])
    lines = ["| class | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for c in classes:
        cells = " | ".join(f"{100 * per_class[m][c]:.1f}" for m in methods)
        lines.append(f"| {c} | {cells} |")
    means = " | ".join(f"{100 * np.mean(list(per_class[m].values())):.1f}" for m in methods)
    lines.append(f"| mean | {means} |")
    return "\n".join(lines)


def report(name, result, methods):
    summary, per_class = summarize(result, methods)
    n_seeds = len(result["seeds"])
    ae_note = (
        "AE rows of one recipe share one fit per class (same fit time) and one scoring "
        f"pass; max_epochs={result['max_epochs']}."
    )
    text = "\n\n".join(
        [
            f"## {name}: {result['note']}",
            f"train {result['n_train']} images in all, test {result['n_test']}, "
            f"image shape {tuple(result['image_shape'])}, seeds {list(result['seeds'])}. "
            + ae_note,
            summary_table(summary, n_seeds),
            f"Per-class AUROC (%), mean over {n_seeds} seed(s):",
            per_class_table(per_class),
        ]
    )
    result["summary"] = summary
    result["per_class_mean_auroc"] = {m: {str(c): v for c, v in pc.items()} for m, pc in per_class.items()}
    return text


# --------------------------------------------------------------------- main
def environment(args):
    return common_environment(
        max_epochs=args.max_epochs,
        mnist_epochs=args.mnist_epochs,
        elpv_epochs=args.elpv_epochs,
        recipes={r: RECIPES[r] for r in args.recipe},
        calibration=args.calibration,
        kde_bandwidth_rule=KDE_RULE,
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=list(LOADERS), default=["digits"])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--recipe", nargs="+", choices=list(RECIPES), default=["default"],
                        help="ConvAEOneClass recipes to run, side by side (see RECIPES)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="seeds for digits and coil20")
    parser.add_argument("--mnist-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--elpv-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--mnist-train", type=int, default=500,
                        help="training images per digit (the first ones; 2000 = all)")
    parser.add_argument("--mnist-test", type=int, default=2000,
                        help="size of the random test subset (seed 0; 10000 = the whole set)")
    parser.add_argument("--elpv-size", type=int, default=64, help="side of the ELPV images")
    parser.add_argument("--max-epochs", type=int, default=ConvAEOneClass().max_epochs)
    parser.add_argument("--mnist-epochs", type=int, default=None,
                        help="max_epochs on MNIST (default: --max-epochs)")
    parser.add_argument("--elpv-epochs", type=int, default=None,
                        help="max_epochs on ELPV (default: --max-epochs)")
    parser.add_argument("--calibration", choices=["holdout", "train"], default="holdout",
                        help="calibration of the recipes that do not set it (holdout: the "
                        "library's default, trains on 80 %%)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="print the tables of earlier runs' JSON files, seeds of one data set "
                        "pooled (e.g. two seeds run in parallel), instead of running")
    return parser.parse_args(argv)


def merge(paths):
    """Tables of earlier runs: every data set's seeds from every file, pooled."""
    merged = {}
    for path in paths:
        run = json.loads(Path(path).read_text())
        print(f"{path}: {environment_line(run['environment'])}")
        for name, result in run["datasets"].items():
            into = merged.setdefault(name, {**result, "seeds": {}})
            for seed, per_class in result["seeds"].items():
                if seed in into["seeds"]:
                    raise ValueError(f"{name} seed {seed} is in more than one file")
                into["seeds"][seed] = per_class
    for name, result in merged.items():
        first = next(iter(result["seeds"].values()))
        methods = list(next(iter(first.values())))
        print("\n" + report(name, result, methods) + "\n", flush=True)


def main(argv=None):
    torch.set_num_threads(1)
    args = parse_args(argv)
    if args.merge:
        return merge(args.merge)
    CALIBRATION[0] = args.calibration
    env = environment(args)
    methods = ae_columns(args.recipe) + list(BASELINES)
    print(environment_line(env))
    print(
        f"ConvAEOneClass recipes {args.recipe} ({ {r: RECIPES[r] for r in args.recipe} }), "
        f"device='cpu', calibration={CALIBRATION[0]!r}, max_epochs={args.max_epochs} "
        f"(MNIST {epochs_for('mnist', args)}, ELPV {epochs_for('elpv', args)}). "
        f"Baselines on raw pixels in [0, 1]; Gaussian KDE bandwidth: {KDE_RULE}. "
        "Nothing tuned on test data. AUROC: class c normal (positive), score_samples.",
        flush=True,
    )
    out = {"environment": env, "datasets": {}}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        seeds = {"mnist": args.mnist_seeds, "elpv": args.elpv_seeds}.get(name, args.seeds)
        result = run_dataset(name, seeds, args)
        print("\n" + report(name, result, methods) + "\n", flush=True)
        out["datasets"][name] = result
        # Written after every data set so a later crash keeps the finished ones.
        out_path.write_text(json.dumps(out, indent=1))
    print(f"Results written to {out_path}")


if __name__ == "__main__":
    main()
