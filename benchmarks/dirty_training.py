"""A dirty training set: a few defects among the normal training images, with and without trimming.

The unsupervised setting of Sohn et al. (ICLR 2021): the "normal" training
set holds a share of undetected anomalies. For every data set, seed and
share of defects (0 %, 2 %, 5 % of the training images), every estimator is
fitted twice on the same training images: plain, and inside
``TrimmedOneClass(trim=0.05)``. Columns: AUROC on the test set, and the
false-positive rate at ``contamination=0.05`` (the share of NEW normal test
images that ``predict`` flags -1; promised 5 %), plus the share of the planted
defects that trimming dropped.

Data (read from ``--data``, default ``../shared/data``):

- ELPV solar cells at ``--elpv-size`` pixels (SOURCE.txt's protocol: normal =
  defect probability 0, anomaly = probability 1). The functional cells are
  shuffled with the seed; 30 % are the normal test images, ``--n-train`` of
  the others train. The defects mixed into training are anomalies, removed
  from the test set; ``--n-test-anomalies`` of the remaining anomalies test.
- MNIST: ``--digits`` are the normal class (``--n-train`` training images
  from the first 20,000, the digits' test images as normal test images,
  subsampled to ``--n-test-normal``); defects and test anomalies are other
  digits (``--n-test-anomalies`` of the test set's).

The training set has ``--n-train`` images in all: ``round(share * n_train)``
defects and normal images for the rest, so every share trains on as many
images.

Estimators (small, short settings for a shared CPU; the constants below):
ConvAEOneClass, TwoStageOneClass, LocalOutlierFactor(novelty=True,
contamination=0.05) and skocc.detectors.GaussianKDE(bandwidth="median"),
the last two on per-image standardised pixels.

Example::

    OMP_NUM_THREADS=1 python benchmarks/dirty_training.py --quick
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor

from _common import environment, environment_line

from skocc import ConvAEOneClass, SelfSupervisedFeatures, TrimmedOneClass, TwoStageOneClass
from skocc.conformal import CalibrationWarning
from skocc.detectors import GaussianKDE

SHARES = (0.0, 0.02, 0.05)
TRIM = 0.05
CONTAMINATION = 0.05

CONVAE = dict(channels=(16, 32), latent_dim=32, max_epochs=5, batch_size=64, device="cpu")
FEATURES = dict(pretext="rotation", width=8, head_dim=32, max_epochs=3, batch_size=64, device="cpu")
QUICK_CONVAE = dict(CONVAE, max_epochs=3)
QUICK_FEATURES = dict(FEATURES, max_epochs=2)


def make_estimators(quick):
    convae, features = (QUICK_CONVAE, QUICK_FEATURES) if quick else (CONVAE, FEATURES)
    return {
        "ConvAEOneClass": ConvAEOneClass(**convae, contamination=CONTAMINATION),
        "TwoStageOneClass": TwoStageOneClass(
            SelfSupervisedFeatures(**features), detector="gde", rotation_ensemble=False,
            contamination=CONTAMINATION,
        ),
        "LOF (std. pixels)": LocalOutlierFactor(novelty=True, contamination=CONTAMINATION),
        "GaussianKDE (std. pixels)": GaussianKDE(bandwidth="median", contamination=CONTAMINATION),
    }


FLAT = ("LOF (std. pixels)", "GaussianKDE (std. pixels)")


def standardised_pixels(X):
    X = X.reshape(len(X), -1).astype(np.float64)
    std = X.std(axis=1, keepdims=True)
    return (X - X.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)


# ---------------------------------------------------------------- data
def elpv_pool(root, size):
    from PIL import Image

    z = np.load(root / "elpv" / "elpv_128.npz")
    X, proba = z["X"], z["proba"]
    if size != X.shape[1]:
        X = np.stack([np.asarray(Image.fromarray(x).resize((size, size), Image.BILINEAR)) for x in X])
    return X[proba == 0], X[proba == 1]


def elpv_task(pool, share, seed, n_train, n_test_anomalies):
    good, bad = pool
    rng = np.random.RandomState(seed)
    good = good[rng.permutation(len(good))]
    bad = bad[rng.permutation(len(bad))]
    n_test = int(round(0.3 * len(good)))
    test_normal, train_normal = good[:n_test], good[n_test:]
    n_defects = int(round(share * n_train))
    defects, test_anomalies = bad[:n_defects], bad[n_defects:][:n_test_anomalies]
    return _assemble(train_normal[: n_train - n_defects], defects, test_normal, test_anomalies, rng)


def mnist_task(root, digits, share, seed, n_train, n_test_normal, n_test_anomalies):
    train = np.load(root / "mnist" / "mnist_train_first20000.npz")
    test = np.load(root / "mnist" / "mnist_test.npz")
    rng = np.random.RandomState(seed)
    normal = np.isin(train["y"], digits)
    n_defects = int(round(share * n_train))
    train_normal = train["X"][rng.permutation(np.flatnonzero(normal))[: n_train - n_defects]]
    defects = train["X"][rng.permutation(np.flatnonzero(~normal))[:n_defects]]
    normal_test = np.isin(test["y"], digits)
    test_normal = test["X"][rng.permutation(np.flatnonzero(normal_test))[:n_test_normal]]
    test_anomalies = test["X"][rng.permutation(np.flatnonzero(~normal_test))[:n_test_anomalies]]
    return _assemble(train_normal, defects, test_normal, test_anomalies, rng)


def _assemble(train_normal, defects, test_normal, test_anomalies, rng):
    """Shuffled training images with a mask of the defects; test images with a normal mask."""
    X_train = np.concatenate([train_normal, defects])
    is_defect = np.r_[np.zeros(len(train_normal), bool), np.ones(len(defects), bool)]
    order = rng.permutation(len(X_train))
    X_test = np.concatenate([test_normal, test_anomalies])
    is_normal = np.r_[np.ones(len(test_normal), bool), np.zeros(len(test_anomalies), bool)]
    return X_train[order], is_defect[order], X_test, is_normal


# ---------------------------------------------------------------- measure
def run_one(name, template, X_train, is_defect, X_test, is_normal, seed):
    if name in FLAT:
        X_train, X_test = standardised_pixels(X_train), standardised_pixels(X_test)
    row = dict(estimator=name, seed=seed, n_train=len(X_train), n_defects=int(is_defect.sum()),
               n_test_normal=int(is_normal.sum()), n_test_anomaly=int((~is_normal).sum()))
    for variant in ("plain", "trimmed"):
        model = clone(template)
        if "random_state" in model.get_params(deep=False):
            model.set_params(random_state=seed)
        if variant == "trimmed":
            model = TrimmedOneClass(model, trim=TRIM, random_state=seed)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            model.fit(X_train)
        fit_s = time.perf_counter() - start
        scores = model.score_samples(X_test)
        out = dict(
            fit_s=fit_s,
            auroc=float(roc_auc_score(is_normal, scores)),
            fpr=float(np.mean(model.predict(X_test[is_normal]) == -1)),
        )
        if variant == "trimmed":
            caught = int(is_defect[model.trimmed_indices_].sum())
            out["n_trimmed"] = int(model.n_trimmed_)
            out["defects_trimmed"] = caught
        row[variant] = out
    return row


def summarise(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["estimator"], r["share"]), []).append(r)
    table = []
    for (data, est, share), rs in sorted(groups.items()):
        entry = dict(dataset=data, estimator=est, share=share, runs=len(rs),
                     seeds=sorted(r["seed"] for r in rs))
        for variant in ("plain", "trimmed"):
            for key in ("auroc", "fpr", "fit_s"):
                v = [r[variant][key] for r in rs]
                entry[f"{key}_{variant}"] = (float(np.mean(v)), float(np.std(v)))
        n_def = sum(r["n_defects"] for r in rs)
        entry["defects_trimmed"] = (
            None if n_def == 0 else sum(r["trimmed"]["defects_trimmed"] for r in rs) / n_def
        )
        table.append(entry)
    return table


def markdown(table, env):
    def cell(v, scale=1.0, digits=3):
        m, s = v
        return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"

    lines = [
        f"Environment: {environment_line(env)}",
        "",
        f"Mean ± sd over seeds. AUROC (normal = positive); FPR = % of new normal test images "
        f"that predict flags -1 at contamination={CONTAMINATION} (promised {100 * CONTAMINATION:g} %); "
        f"trimmed = TrimmedOneClass(trim={TRIM}); caught = share of the planted training defects "
        "that trimming dropped.",
        "",
        "| data | estimator | defects in training | runs | AUROC plain | AUROC trimmed "
        "| FPR % plain | FPR % trimmed | caught | fit s plain / trimmed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        caught = "n/a" if e["defects_trimmed"] is None else f"{100 * e['defects_trimmed']:.0f} %"
        lines.append(
            f"| {e['dataset']} | {e['estimator']} | {100 * e['share']:g} % | {e['runs']} | "
            f"{cell(e['auroc_plain'])} | {cell(e['auroc_trimmed'])} | "
            f"{cell(e['fpr_plain'], 100, 1)} | {cell(e['fpr_trimmed'], 100, 1)} | {caught} | "
            f"{e['fit_s_plain'][0]:.0f} / {e['fit_s_trimmed'][0]:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--datasets", nargs="+", default=["elpv", "mnist"])
    parser.add_argument("--estimators", nargs="+", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--shares", nargs="+", type=float, default=list(SHARES))
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-test-normal", type=int, default=500, help="MNIST only")
    parser.add_argument("--n-test-anomalies", type=int, default=500)
    parser.add_argument("--digits", nargs="+", type=int, default=[0])
    parser.add_argument("--elpv-size", type=int, default=64)
    parser.add_argument("--quick", action="store_true",
                        help="one seed, 200 training images, fewer epochs: a smoke run")
    parser.add_argument("--out", default="benchmarks/results/dirty_training")
    parser.add_argument("--summarise", metavar="JSONL", nargs="+",
                        help="only summarise the rows of these .jsonl files (separate or "
                             "interrupted runs), into --out .md and .json")
    args = parser.parse_args(argv)
    if args.summarise:
        rows = [json.loads(line) for f in args.summarise
                for line in Path(f).read_text().splitlines() if line]
        env = dict(rows[0]["environment"])
        env["command"] = sorted({r["environment"]["command"] for r in rows})
        table = summarise(rows)
        Path(args.out).with_suffix(".json").write_text(
            json.dumps(dict(environment=env, table=table), indent=1))
        text = markdown(table, env)
        Path(args.out).with_suffix(".md").write_text(text + "\n")
        print(text)
        return
    if args.quick:
        args.seeds, args.n_train = args.seeds[:1], 200
        args.n_test_normal = args.n_test_anomalies = 200
    templates = make_estimators(args.quick)
    names = args.estimators or list(templates)
    env = environment(
        quick=args.quick, n_train=args.n_train, n_test_normal=args.n_test_normal,
        n_test_anomalies=args.n_test_anomalies, digits=args.digits, elpv_size=args.elpv_size,
        trim=TRIM, contamination=CONTAMINATION,
        settings={n: repr(templates[n]) for n in names},
    )
    root = Path(args.data)
    out = Path(args.out + ("_quick" if args.quick else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    pool = elpv_pool(root, args.elpv_size) if "elpv" in args.datasets else None
    with open(out.with_suffix(".jsonl"), "w") as log:
        for seed in args.seeds:
            for share in args.shares:
                tasks = []
                if "elpv" in args.datasets:
                    tasks.append((f"elpv/{args.elpv_size}px", elpv_task(
                        pool, share, seed, args.n_train, args.n_test_anomalies)))
                if "mnist" in args.datasets:
                    tasks.append(("mnist/" + "+".join(map(str, args.digits)), mnist_task(
                        root, args.digits, share, seed, args.n_train, args.n_test_normal,
                        args.n_test_anomalies)))
                for data, (X_train, is_defect, X_test, is_normal) in tasks:
                    for name in names:
                        row = run_one(name, templates[name], X_train, is_defect, X_test,
                                      is_normal, seed)
                        row.update(dataset=data, share=share, environment=env)
                        rows.append(row)
                        log.write(json.dumps(row) + "\n")
                        log.flush()
                        p, t = row["plain"], row["trimmed"]
                        print(
                            f"{data:10s} {name:26s} defects {100 * share:g} % seed {seed}: AUROC "
                            f"{p['auroc']:.3f} / {t['auroc']:.3f}, FPR {p['fpr']:.3f} / "
                            f"{t['fpr']:.3f}, caught {t['defects_trimmed']}/{row['n_defects']} "
                            f"(fit {p['fit_s']:.0f} / {t['fit_s']:.0f} s)",
                            flush=True,
                        )
    table = summarise(rows)
    out.with_suffix(".json").write_text(json.dumps(dict(environment=env, table=table), indent=1))
    text = markdown(table, env)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
