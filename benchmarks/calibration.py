"""Does ``predict`` flag ``contamination`` of NEW normal images?

For every estimator, data set, normal class and seed, two models are fitted
on the same normal training images:

- ``calibration="train"``: scikit-learn's threshold, the ``contamination``
  quantile of the training scores, on a model trained on every image;
- ``calibration="holdout"`` (skocc's default): the model trains on 80 % and
  ``offset_`` is the split-conformal quantile of the other 20 %'s scores.

Both score the same test set: held-out normal images of the class (never
seen in fit) and anomalies. Columns: the false-positive rate on the held-out
normal images (the share that ``predict`` flags; promised: ``contamination``)
at contamination 0.01 / 0.05 / 0.10, and the AUROC (what training on less
data costs). "calibrate" rows: the holdout model re-calibrated with
``calibrate`` on half of the held-out normal test images, its false-positive
rate measured on the other half.

Thresholds at the three contamination levels come from one fit each: the
held-out split does not depend on the level once the training set has at
least 5 x 99 images (it always holds out max(20 %, the minimum count)), and
``offset_`` is a function of ``calibration_scores_`` and the level
(:func:`skocc.conformal.conformal_threshold`); the script checks that
``predict`` agrees at contamination 0.05.

Data (read from ``--data``, default ``../shared/data``): MNIST (``--n-train``
training images of a digit, the digit's 1,000-odd test images as held-out
normals, the other digits as anomalies), COIL-20 (one object normal: 50 of its
72 images to train, 22 held-out normals, the other objects' images as
anomalies), ELPV solar cells (functional cells: 70 % to train, 30 % held-out
normals, every defective cell an anomaly; ``--elpv-size`` pixels).

Writes a JSON line per fitted pair as it finishes (``--out``.jsonl) and the
summary table as JSON and Markdown.

Example::

    OMP_NUM_THREADS=1 python benchmarks/calibration.py --datasets mnist \\
        --estimators ConvAEOneClass --classes 1 4 7 9 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from _common import environment, environment_line

from skocc import ConvAEOneClass, MultiViewConvAEOneClass, TwoStageOneClass
from skocc.conformal import CalibrationWarning, conformal_threshold, min_calibration_size
from skocc.detectors import GaussianDensity, GaussianKDE

LEVELS = (0.01, 0.05, 0.10)


CALIBRATION_SIZE = 0.2


def make_estimator(name, calibration, seed):
    common = dict(calibration=calibration, calibration_size=CALIBRATION_SIZE, random_state=seed)
    if name == "ConvAEOneClass":
        return ConvAEOneClass(**common)
    if name == "MultiViewConvAEOneClass":
        return MultiViewConvAEOneClass(**common)
    if name == "TwoStageOneClass":
        return TwoStageOneClass(**common)
    if name == "GaussianKDE (pixels)":
        return GaussianKDE(**common)
    if name == "GaussianDensity (pixels)":
        return GaussianDensity(**common)
    raise ValueError(f"unknown estimator {name!r}")


FLAT = ("GaussianKDE (pixels)", "GaussianDensity (pixels)")


# ---------------------------------------------------------------- data
def mnist_tasks(root, classes, n_train):
    train = np.load(root / "mnist" / "mnist_train_first20000.npz")
    test = np.load(root / "mnist" / "mnist_test.npz")
    for c in classes:
        X_train = train["X"][train["y"] == c][:n_train]
        yield f"mnist/{c}", X_train, test["X"], test["y"] == c


def coil20_tasks(root, classes, seed):
    z = np.load(root / "coil20" / "coil20_32x32.npz")
    X, objects = z["X"], z["y"]
    for c in classes:
        idx = np.flatnonzero(objects == c)
        order = np.random.RandomState(seed).permutation(idx)
        train, held = order[:50], order[50:]
        others = np.flatnonzero(objects != c)
        test = np.concatenate([held, others])
        yield f"coil20/{c}", X[train], X[test], np.isin(test, held)


def coil20_pair_tasks(root, classes, seed, k=18):
    """Multi-view: pose p and pose p + k of one object, stacked as two views."""
    z = np.load(root / "coil20" / "coil20_32x32.npz")
    X, objects, poses = z["X"], z["y"], z["pose"]
    lookup = {(int(o), int(p)): i for i, (o, p) in enumerate(zip(objects, poses))}
    pairs = np.stack(
        [np.stack([X[lookup[(o, p)]], X[lookup[(o, (p + k) % 72)]]]) for o, p in zip(objects, poses)]
    )
    for c in classes:
        idx = np.flatnonzero(objects == c)
        order = np.random.RandomState(seed).permutation(idx)
        train, held = order[:50], order[50:]
        test = np.concatenate([held, np.flatnonzero(objects != c)])
        yield f"coil20-pairs/{c}", pairs[train], pairs[test], np.isin(test, held)


def elpv_tasks(root, size, seed):
    from PIL import Image

    z = np.load(root / "elpv" / "elpv_128.npz")
    X, proba = z["X"], z["proba"]
    if size != X.shape[1]:
        X = np.stack([np.asarray(Image.fromarray(x).resize((size, size), Image.BILINEAR)) for x in X])
    good = np.flatnonzero(proba == 0)
    bad = np.flatnonzero(proba == 1)
    order = np.random.RandomState(seed).permutation(good)
    n_train = int(round(0.7 * len(good)))
    train, held = order[:n_train], order[n_train:]
    test = np.concatenate([held, bad])
    yield "elpv/pooled", X[train], X[test], np.isin(test, held)


# ---------------------------------------------------------------- measure
def fpr(scores, offset):
    return float(np.mean(~(scores - offset >= 0)))


def run_pair(name, task, X_train, X_test, is_normal, seed):
    flat = name in FLAT
    if flat:
        X_train = X_train.reshape(len(X_train), -1) / 255.0
        X_test = X_test.reshape(len(X_test), -1) / 255.0
    row = dict(estimator=name, task=task, seed=seed, n_train=len(X_train),
               n_test_normal=int(is_normal.sum()), n_test_anomaly=int((~is_normal).sum()))
    normal_idx = np.flatnonzero(is_normal)
    half = np.random.RandomState(seed + 1).permutation(normal_idx)
    cal_half, eval_half = half[: len(half) // 2], half[len(half) // 2:]
    for calibration in ("train", "holdout"):
        model = make_estimator(name, calibration, seed)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CalibrationWarning)
            model.fit(X_train)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        scores = model.score_samples(X_test)
        score_s = time.perf_counter() - start
        ref = model.calibration_scores_
        held_out = calibration == "holdout" and not any(
            issubclass(w.category, CalibrationWarning) for w in caught
        )
        out = dict(
            fit_s=fit_s, score_s=score_s, auroc=float(roc_auc_score(is_normal, scores)),
            n_calibration=int(ref.size), held_out=held_out,
        )
        # predict itself at the contamination it was fitted with (0.05).
        out["predict_fpr_0.05"] = float(np.mean(model.predict(X_test[normal_idx]) == -1))
        for level in LEVELS:
            if calibration == "train" or not held_out:
                offset = float(np.percentile(ref, 100 * level))
            elif ref.size >= min_calibration_size(level):
                offset = conformal_threshold(ref, level)
            else:
                offset = None
            out[f"fpr_{level}"] = None if offset is None else fpr(scores[normal_idx], offset)
        if calibration == "holdout":
            # calibrate() on half of the held-out normals, measured on the other half.
            cal_scores = scores[cal_half]
            for level in LEVELS:
                key = f"calibrate_fpr_{level}"
                if cal_scores.size >= min_calibration_size(level):
                    out[key] = fpr(scores[eval_half], conformal_threshold(cal_scores, level))
                else:
                    out[key] = None
            # The same through the public method, at the fitted contamination.
            if len(cal_half) >= min_calibration_size(model.contamination):
                model.calibrate(X_test[cal_half])
                out["calibrate_predict_fpr_0.05"] = float(
                    np.mean(model.predict(X_test[eval_half]) == -1)
                )
        row[calibration] = out
    return row


def summarise(rows):
    """Mean and sd per (estimator, data set) over classes and seeds."""
    groups = {}
    for r in rows:
        size = r["environment"].get("calibration_size", 0.2)
        name = r["estimator"] + (f", calibration_size={size}" if size != 0.2 else "")
        groups.setdefault((name, r["task"].split("/")[0]), []).append(r)
    table = []
    for (est, data), rs in sorted(groups.items()):
        entry = dict(estimator=est, dataset=data, runs=len(rs))
        for key, path in [
            ("auroc_train", ("train", "auroc")), ("auroc_holdout", ("holdout", "auroc")),
            *[(f"fpr_train_{l}", ("train", f"fpr_{l}")) for l in LEVELS],
            *[(f"fpr_holdout_{l}", ("holdout", f"fpr_{l}")) for l in LEVELS],
            *[(f"fpr_calibrate_{l}", ("holdout", f"calibrate_fpr_{l}")) for l in LEVELS],
        ]:
            values = [r[path[0]][path[1]] for r in rs if r[path[0]][path[1]] is not None]
            entry[key] = (float(np.mean(values)), float(np.std(values))) if values else None
        table.append(entry)
    return table


def markdown(table, env):
    def cell(v, pct=True):
        if v is None:
            return "n/a"
        m, s = v
        return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:.3f} ± {s:.3f}"

    lines = [
        f"Environment: {environment_line(env)}",
        "",
        "False-positive rate on held-out normal images, % (mean ± sd over classes and seeds); "
        "AUROC of the same models. train = training-quantile threshold (model trained on "
        "all); holdout = conformal threshold on 20 % held out (default); calibrate = "
        "holdout model re-calibrated on half of the held-out normal test images, "
        "measured on the other half.",
        "",
        "| estimator | data | runs | AUROC train / holdout | FPR @1% train / holdout / calibrate "
        "| FPR @5% train / holdout / calibrate | FPR @10% train / holdout / calibrate |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in table:
        fprs = [
            " / ".join(cell(e[f"fpr_{kind}_{l}"]) for kind in ("train", "holdout", "calibrate"))
            for l in LEVELS
        ]
        lines.append(
            f"| {e['estimator']} | {e['dataset']} | {e['runs']} | "
            f"{cell(e['auroc_train'], False)} / {cell(e['auroc_holdout'], False)} | "
            + " | ".join(fprs) + " |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--datasets", nargs="+", default=["mnist", "coil20", "elpv"])
    parser.add_argument(
        "--estimators", nargs="+",
        default=["ConvAEOneClass", "TwoStageOneClass", "GaussianKDE (pixels)", "GaussianDensity (pixels)"],
    )
    parser.add_argument("--classes", nargs="+", type=int, default=[1, 4, 7, 9])
    parser.add_argument("--coil-classes", nargs="+", type=int, default=[0, 4, 8, 12, 16])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--elpv-size", type=int, default=32)
    parser.add_argument(
        "--calibration-size", type=float, default=0.2,
        help="share held out by the holdout models (the estimators' calibration_size)",
    )
    parser.add_argument("--out", default="benchmarks/results/calibration")
    parser.add_argument("--summarise", nargs="*", help="only summarise these .jsonl files")
    args = parser.parse_args(argv)
    global CALIBRATION_SIZE
    CALIBRATION_SIZE = args.calibration_size
    env = environment(
        n_train=args.n_train, elpv_size=args.elpv_size, calibration_size=args.calibration_size
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.summarise:
        rows = [json.loads(l) for f in args.summarise for l in Path(f).read_text().splitlines() if l]
    else:
        rows = []
        root = Path(args.data)
        with open(out.with_suffix(".jsonl"), "a") as log:
            for seed in args.seeds:
                tasks = []
                if "mnist" in args.datasets:
                    tasks += list(mnist_tasks(root, args.classes, args.n_train))
                if "coil20" in args.datasets:
                    tasks += list(coil20_tasks(root, args.coil_classes, seed))
                if "coil20-pairs" in args.datasets:
                    tasks += list(coil20_pair_tasks(root, args.coil_classes, seed))
                if "elpv" in args.datasets:
                    tasks += list(elpv_tasks(root, args.elpv_size, seed))
                for task, X_train, X_test, is_normal in tasks:
                    for name in args.estimators:
                        multi = task.startswith("coil20-pairs")
                        if multi != (name == "MultiViewConvAEOneClass"):
                            continue
                        row = run_pair(name, task, X_train, X_test, is_normal, seed)
                        row["environment"] = env
                        rows.append(row)
                        log.write(json.dumps(row) + "\n")
                        log.flush()
                        h, t = row["holdout"], row["train"]
                        print(
                            f"{name:26s} {task:16s} seed {seed}: AUROC {t['auroc']:.4f}/{h['auroc']:.4f} "
                            f"FPR@5% train {t['fpr_0.05']:.3f} holdout {h['fpr_0.05']} "
                            f"calibrate {h['calibrate_fpr_0.05']} (fit {h['fit_s']:.0f} s)",
                            flush=True,
                        )
    table = summarise(rows)
    if args.summarise:
        # Report where the runs ran, not where they were summarised.
        env = dict(rows[0]["environment"])
        env["git"] = ", ".join(sorted({r["environment"]["git"] for r in rows}))
        dates = sorted(r["environment"]["date"] for r in rows)
        env["date"] = f"{dates[0]} to {dates[-1]}"
    out.with_suffix(".json").write_text(json.dumps(dict(environment=env, table=table), indent=1))
    text = markdown(table, env)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
