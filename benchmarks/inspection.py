"""Visual inspection on ELPV solar cells: CutPaste two-stage models against baselines.

Image level (ELPV protocol of ../shared/data/elpv/SOURCE.txt): normal =
functional cells (proba 0), anomalies = defective cells (proba 1); per module
type (mono, poly) and pooled, train on 70 % of the type's functional cells
(shuffled with the seed), test on the other 30 % and every defective cell of
the type. Images resized 128 -> ``--size`` with PIL bilinear. AUROC with
normal as the positive class from ``score_samples``; for two-stage models also
from the maximum of ``score_map`` (negated).

Localization: synthetic defects with known masks pasted into the held-out
functional cells of the pooled task (a dark elliptical blob, or a patch of
another held-out cell turned by 90 degrees); pixel AUROC of ``score_map``.

Heads (``--parts heads``, exploratory): one cutpaste network per seed, task and
``normalize`` (None, "image"), its first and last training loss, and the
AUROC of several second stages on it (Gaussian and KDE on the encoder's pooled
features, Gaussian on the head's).

Resolution: one epoch of ``SelfSupervisedFeatures(pretext="cutpaste")`` on 64
cells at 64, 128 and 256 pixels, median of 3 runs, each in a fresh process
(how much its peak resident memory grew during ``fit``).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/inspection.py --quick
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/inspection.py --parts image \\
        --models cutpaste lof kde kde_std --tasks mono poly pooled --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, environment, environment_line  # noqa: E402

from skocc import ConvAEOneClass, SelfSupervisedFeatures, TwoStageOneClass  # noqa: E402
from skocc.detectors import GaussianKDE  # noqa: E402

MODELS = ("cutpaste_user", "cutpaste", "cutpaste_image", "contrastive_da", "convae", "lof", "kde", "kde_std")


def load_elpv(root, size):
    from PIL import Image

    z = np.load(Path(root) / "elpv" / "elpv_128.npz")
    X, proba, kind = z["X"], z["proba"], z["type"]
    if size != X.shape[1]:
        X = np.stack([np.asarray(Image.fromarray(x).resize((size, size), Image.BILINEAR)) for x in X])
    return X, proba, kind


def split(proba, kind, task, seed):
    """Indices of the training images, of the test images, and the test labels (True = normal)."""
    of_type = np.ones(len(proba), bool) if task == "pooled" else kind == task
    good = np.flatnonzero(of_type & (proba == 0))
    bad = np.flatnonzero(of_type & (proba == 1))
    order = np.random.RandomState(seed).permutation(good)
    n_train = int(round(0.7 * len(good)))
    test = np.concatenate([order[n_train:], bad])
    return order[:n_train], test, np.isin(test, order[n_train:])


def standardise(X):
    X = X.reshape(len(X), -1).astype(np.float64) / 255.0
    return (X - X.mean(axis=1, keepdims=True)) / (X.std(axis=1, keepdims=True) + 1e-8)


def make_model(name, seed, epochs):
    if name == "cutpaste_user":
        # Exactly the constructor of an inspection user: every default
        # (20 epochs, rotation ensemble), the CPU.
        features = SelfSupervisedFeatures(pretext="cutpaste", device="cpu")
        return TwoStageOneClass(features=features, random_state=seed)
    if name in ("cutpaste", "cutpaste_image"):
        features = SelfSupervisedFeatures(
            pretext="cutpaste",
            max_epochs=epochs["cutpaste"],
            normalize="image" if name == "cutpaste_image" else None,
            device="cpu",
        )
        return TwoStageOneClass(features, rotation_ensemble=False, random_state=seed)
    if name == "contrastive_da":
        features = SelfSupervisedFeatures(max_epochs=epochs["contrastive_da"], device="cpu")
        return TwoStageOneClass(features, random_state=seed)
    if name == "convae":
        return ConvAEOneClass(max_epochs=epochs["convae"], device="cpu", random_state=seed)
    raise ValueError(name)


def run_image(X, proba, kind, args, epochs):
    rows, fitted = [], {}
    for seed in args.seeds:
        for task in args.tasks:
            train, test, normal = split(proba, kind, task, seed)
            for name in args.models:
                row = dict(model=name, task=task, seed=seed, n_train=len(train), n_test=len(test))
                t0 = time.perf_counter()
                if name in ("lof", "kde", "kde_std"):
                    prep = standardise if name == "kde_std" else (
                        lambda A: A.reshape(len(A), -1).astype(np.float64) / 255.0
                    )
                    model = (
                        LocalOutlierFactor(novelty=True)
                        if name == "lof"
                        else GaussianKDE(calibration="train")
                    )
                    model.fit(prep(X[train]))
                    row["fit_s"] = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    scores = model.score_samples(prep(X[test]))
                else:
                    model = make_model(name, seed, epochs).fit(X[train])
                    row["fit_s"] = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    scores = model.score_samples(X[test])
                row["score_s"] = time.perf_counter() - t0
                row["auroc"] = float(roc_auc_score(normal, scores))
                if isinstance(model, TwoStageOneClass):
                    row["auroc_map_max"] = float(
                        roc_auc_score(normal, -model.score_map(X[test]).max(axis=(1, 2)))
                    )
                    shared = TwoStageOneClass(
                        FrozenEstimator(model.features_), rotation_ensemble=model.rotation_ensemble,
                        map_density="shared", calibration="train",
                    ).fit(X[train])
                    row["auroc_map_max_shared"] = float(
                        roc_auc_score(normal, -shared.score_map(X[test]).max(axis=(1, 2)))
                    )
                    fitted[(name, task, seed)] = (model, shared)
                elif isinstance(model, ConvAEOneClass):
                    fitted[(name, task, seed)] = (model,)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows, fitted


def run_heads(X, proba, kind, args, epochs):
    """Exploration: one cutpaste network per setting, several second stages on it."""
    rows = []
    for seed in args.seeds:
        for task in args.tasks:
            train, test, normal = split(proba, kind, task, seed)
            for normalize in (None, "image"):
                features = SelfSupervisedFeatures(
                    pretext="cutpaste", max_epochs=epochs["cutpaste"], normalize=normalize,
                    device="cpu", random_state=seed,
                ).fit(X[train])
                losses = features.net_.history[:, "train_loss"]
                row = dict(task=task, seed=seed, normalize=normalize,
                           loss_first=float(losses[0]), loss_last=float(losses[-1]))
                frozen = FrozenEstimator(features)
                for label, detector, layer in (
                    ("gde", "gde", "encoder"), ("kde", "kde", "encoder"), ("gde head", "gde", "head"),
                ):
                    frozen.estimator.set_params(feature_layer=layer)
                    model = TwoStageOneClass(
                        frozen, detector, rotation_ensemble=False, calibration="train",
                        map_density=None,
                    ).fit(X[train])
                    row[label] = float(roc_auc_score(normal, model.score_samples(X[test])))
                frozen.estimator.set_params(feature_layer="encoder")
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def synthetic_defects(X, seed):
    """Copies of ``X`` (n, H, W) uint8 with one defect each, the masks, and the kind of each."""
    rng = np.random.RandomState(seed)
    n, h, w = X.shape
    out, masks, kinds = X.astype(np.float64).copy(), np.zeros((n, h, w), bool), []
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        if i % 2 == 0:
            cy, cx = rng.uniform(0.15 * h, 0.85 * h), rng.uniform(0.15 * w, 0.85 * w)
            ry, rx = rng.uniform(0.05, 0.12, size=2) * (h, w)
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            out[i][mask] *= 0.3
            kinds.append("dark blob")
        else:
            s = int(rng.randint(int(0.15 * h), int(0.3 * h) + 1))
            donor = X[(i + 1) % n]
            sy, sx = rng.randint(0, h - s + 1, size=2)
            ty, tx = rng.randint(0, h - s + 1), rng.randint(0, w - s + 1)
            out[i, ty : ty + s, tx : tx + s] = np.rot90(donor[sy : sy + s, sx : sx + s])
            mask = np.zeros((h, w), bool)
            mask[ty : ty + s, tx : tx + s] = True
            kinds.append("rotated patch")
        masks[i] = mask
    return np.clip(out, 0, 255).astype(np.uint8), masks, np.array(kinds)


def run_localization(X, proba, kind, fitted, seed):
    _, test, normal = split(proba, kind, "pooled", seed)
    defects, masks, kinds = synthetic_defects(X[test[normal]], seed)
    rows = []
    for (name, task, s), models in fitted.items():
        if task != "pooled" or s != seed:
            continue
        variants = {name: models[0]} if len(models) == 1 else {
            f"{name} (location)": models[0], f"{name} (shared)": models[1],
        }
        for label, model in variants.items():
            maps = model.score_map(defects)
            row = dict(model=label, seed=seed, n_images=len(defects))
            for k in ("dark blob", "rotated patch"):
                sel = kinds == k
                row[f"pixel_auroc {k}"] = float(roc_auc_score(masks[sel].ravel(), maps[sel].ravel()))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def probe(size, n=64):
    """One epoch of cutpaste features on ``n`` cells at ``size``: seconds, and the
    growth of the process's peak resident memory during ``fit`` (MiB)."""
    from PIL import Image

    z = np.load(Path(ARGS.data) / "elpv" / "elpv_128.npz")
    Xn = z["X"][z["proba"] == 0][:n]
    Xn = np.stack([np.asarray(Image.fromarray(x).resize((size, size), Image.BILINEAR)) for x in Xn])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    SelfSupervisedFeatures(pretext="cutpaste", max_epochs=1, device="cpu", random_state=0).fit(Xn)
    seconds = time.perf_counter() - t0
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps(dict(seconds=seconds, max_rss_mib=grown)))


def run_resolution(sizes, repeats):
    rows = []
    for size in sizes:
        runs = []
        for _ in range(repeats):
            out = subprocess.run(
                [sys.executable, __file__, "--probe", str(size), "--data", str(ARGS.data)],
                capture_output=True, text=True, check=True,
            ).stdout.strip().splitlines()[-1]
            runs.append(json.loads(out))
        rows.append(dict(
            size=size,
            seconds=statistics.median(r["seconds"] for r in runs),
            max_rss_mib=statistics.median(r["max_rss_mib"] for r in runs),
        ))
    base = rows[0]
    for row in rows:
        row["time_ratio"] = row["seconds"] / base["seconds"]
        row["rss_ratio"] = row["max_rss_mib"] / base["max_rss_mib"]
        print(json.dumps(row), flush=True)
    return rows


def print_tables(image_rows, loc_rows, res_rows):
    if image_rows:
        print("\nImage AUROC (normal = positive), mean ± sd over seeds; fit / score seconds")
        print("| model | task | seeds | AUROC | AUROC of map max (location / shared) | fit s | score s |")
        print("|---|---|---|---|---|---|---|")
        keys = sorted({(r["model"], r["task"]) for r in image_rows}, key=lambda k: (k[1], k[0]))
        for model, task in keys:
            rs = [r for r in image_rows if r["model"] == model and r["task"] == task]

            def ms(key, rs=rs):
                v = [r[key] for r in rs if key in r]
                if not v:
                    return "n/a"
                return f"{np.mean(v):.3f} ± {np.std(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"

            maps = "n/a" if "auroc_map_max" not in rs[0] else (
                f"{ms('auroc_map_max')} / {ms('auroc_map_max_shared')}"
            )
            fit = np.mean([r["fit_s"] for r in rs])
            score = np.mean([r["score_s"] for r in rs])
            print(f"| {model} | {task} | {len(rs)} | {ms('auroc')} | {maps} | {fit:.1f} | {score:.1f} |")
    if loc_rows:
        print("\nPixel AUROC of score_map on synthetic defects in held-out functional cells (pooled model)")
        print("| model | seed | images | dark blob | rotated patch |")
        print("|---|---|---|---|---|")
        for r in loc_rows:
            print(
                f"| {r['model']} | {r['seed']} | {r['n_images']} | {r['pixel_auroc dark blob']:.3f} "
                f"| {r['pixel_auroc rotated patch']:.3f} |"
            )
    if res_rows:
        print("\nOne cutpaste epoch on 64 cells, median of 3 fresh processes (ratio to the smallest size)")
        print("| side | seconds | time ratio | peak RSS growth in fit, MiB | memory ratio |")
        print("|---|---|---|---|---|")
        for r in res_rows:
            print(
                f"| {r['size']} | {r['seconds']:.1f} | {r['time_ratio']:.1f} | "
                f"{r['max_rss_mib']:.0f} | {r['rss_ratio']:.2f} |"
            )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    p.add_argument("--parts", nargs="+", default=["image", "localization", "resolution"])
    p.add_argument("--models", nargs="+", choices=MODELS, default=["cutpaste", "lof", "kde", "kde_std"])
    p.add_argument("--tasks", nargs="+", default=["mono", "poly", "pooled"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs-cutpaste", type=int, default=10)
    p.add_argument("--epochs-contrastive", type=int, default=20)
    p.add_argument("--epochs-convae", type=int, default=50)
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256])
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, pooled, seed 0, sizes 32 64")
    p.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", default="inspection")
    global ARGS
    ARGS = args = p.parse_args()
    if args.probe:
        return probe(args.probe)
    if args.quick:
        args.tasks, args.seeds, args.sizes = ["pooled"], [0], [32, 64]
        args.epochs_cutpaste = args.epochs_contrastive = args.epochs_convae = 2
    epochs = dict(cutpaste=args.epochs_cutpaste, contrastive_da=args.epochs_contrastive, convae=args.epochs_convae)
    env = environment(size=args.size, epochs=epochs, parts=args.parts, quick=args.quick)
    print(environment_line(env), flush=True)
    X, proba, kind = load_elpv(args.data, args.size)
    image_rows, loc_rows, res_rows, fitted = [], [], [], {}
    head_rows = run_heads(X, proba, kind, args, epochs) if "heads" in args.parts else []
    if "image" in args.parts or "localization" in args.parts:
        image_rows, fitted = run_image(X, proba, kind, args, epochs)
    if "localization" in args.parts:
        loc_rows = run_localization(X, proba, kind, fitted, args.seeds[0])
    if "resolution" in args.parts:
        res_rows = run_resolution(args.sizes, 3)
    out = REPO_ROOT / "benchmarks" / "results" / f"{args.out}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(dict(environment=env, image=image_rows, localization=loc_rows,
                                   resolution=res_rows, heads=head_rows), indent=1))
    print_tables(image_rows, loc_rows, res_rows)
    print(f"\nwrote {out}")


ARGS = None

if __name__ == "__main__":
    main()
