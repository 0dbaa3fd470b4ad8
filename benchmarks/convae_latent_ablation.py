"""Why does the latent norm of ``ConvAEOneClass`` rank anomalies as normal?

One factor at a time from ``ConvAEOneClass(beta=0.1, batch_size=64)`` (the setting of the
issue: 31 % AUROC on COIL-20), every model fitted once per normal class with
``calibration="train"`` and read with:

- ``-||z||``: the latent norm (``score_type="latent"``, what targeted collapse scores);
- ``-||z - mean||``: distance of the code from the mean of the training codes;
- ``-d_M(z)``: Mahalanobis distance under a Ledoit-Wolf Gaussian of the
  training codes (``score_type="mahalanobis"``);
- ``-||x - x_hat||``: the reconstruction error;

and, to show the mechanism, on the test images: the median ``||z||`` of
normal and of anomalous images, their median input norm ``||x||``, the AUROC
of the input norm itself (``-||x||``, no model at all) and the Spearman
correlation of ``||z||`` with ``||x||``.

Factors (each changes one thing from the base):

- ``beta=0`` / ``beta=1``: the penalty weight;
- ``no spectral norm``: ``lipschitz_decoder=False``;
- ``squared norms``: ``norm="squared_l2"`` (trains with both norms squared; as a
  score, ``||z||^2`` ranks exactly as ``||z||``);
- ``latent_dim=16``: code size (64 in the base);
- ``centred input``: the model is fitted on ``x - m`` and scores ``x - m``,
  with ``m`` the mean training image of the normal class (float input in
  place of ``uint8``; no library change: the benchmark subtracts it).

Data and splits as in ``convae_one_class.py`` (digits, COIL-20; ``--seeds``).

Reproduce (repository root)::

    OMP_NUM_THREADS=1 python benchmarks/convae_latent_ablation.py \\
        --datasets digits coil20 --seeds 0 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, environment_line  # noqa: E402
from convae_one_class import LOADERS, ae_scores, flat_pixels, make_ae  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "convae_latent_ablation.json"

# The library's defaults when the table was made, and beta=0.1.
BASE = {"beta": 0.1, "batch_size": 64}
FACTORS = {
    "beta=0.1 (base)": ({}, False),
    "beta=0": ({"beta": 0.0}, False),
    "beta=1": ({"beta": 1.0}, False),
    "no spectral norm": ({"lipschitz_decoder": False}, False),
    "squared norms": ({"norm": "squared_l2"}, False),
    "latent_dim=16": ({"latent_dim": 16}, False),
    "centred input": ({}, True),
}

SCORES = ("-||z||", "-||z - mean||", "-d_M(z)", "-||x - x_hat||")


def one_fit(params, centre, X_normal, X_test, normal, seed, max_epochs):
    if centre:
        F_normal, F_test = flat_pixels(X_normal), flat_pixels(X_test)
        mean = F_normal.mean(axis=0)
        shape = (-1,) + np.shape(X_normal)[1:]
        X_normal = (F_normal - mean).reshape(shape).astype(np.float32)
        X_test = (F_test - mean).reshape(shape).astype(np.float32)
    model = make_ae({**BASE, "calibration": "train", **params}, seed, max_epochs)
    start = time.perf_counter()
    model.fit(X_normal)
    fit_s = time.perf_counter() - start
    scores = ae_scores(model, X_test)
    Z_train = model.encode(X_normal).astype(np.float64)
    Z_test = model.encode(X_test).astype(np.float64)
    centred = -np.linalg.norm(Z_test - Z_train.mean(axis=0), axis=1)
    z_norm = np.linalg.norm(Z_test, axis=1)
    x_norm = np.linalg.norm(flat_pixels(X_test), axis=1)
    is_normal = normal.astype(bool)
    return {
        "-||z||": roc_auc_score(normal, scores["latent"]),
        "-||z - mean||": roc_auc_score(normal, centred),
        "-d_M(z)": roc_auc_score(normal, scores["mahalanobis"]),
        "-||x - x_hat||": roc_auc_score(normal, scores["reconstruction"]),
        "median ||z|| normal": float(np.median(z_norm[is_normal])),
        "median ||z|| anomaly": float(np.median(z_norm[~is_normal])),
        "median ||x|| normal": float(np.median(x_norm[is_normal])),
        "median ||x|| anomaly": float(np.median(x_norm[~is_normal])),
        "AUROC -||x||": roc_auc_score(normal, -x_norm),
        "spearman(||z||, ||x||)": float(spearmanr(z_norm, x_norm)[0]),
        "fit_s": fit_s,
    }


KEYS = SCORES + (
    "median ||z|| normal", "median ||z|| anomaly", "median ||x|| normal",
    "median ||x|| anomaly", "AUROC -||x||", "spearman(||z||, ||x||)",
)


def table(rows):
    head = "| factor | " + " | ".join(KEYS) + " | fraction of classes with median ||z|| anomaly < normal |"
    lines = [head, "|---" * (len(KEYS) + 2) + "|"]
    for factor, per_class in rows.items():
        cells = []
        for key in KEYS:
            v = np.mean([r[key] for r in per_class])
            cells.append(f"{100 * v:.1f}" if key in SCORES or key.startswith("AUROC") else f"{v:.3g}")
        smaller = np.mean([r["median ||z|| anomaly"] < r["median ||z|| normal"] for r in per_class])
        lines.append(f"| {factor} | " + " | ".join(cells) + f" | {smaller:.2f} |")
    return "\n".join(lines)


def mechanism_table(rows):
    """Per-class view of the mechanism: how often, and in step with what, ``||z||`` inverts."""
    lines = [
        "| factor | classes with AUROC(-||z||) < 50 % | median over classes of "
        "median ||z|| anomaly / normal | same for ||x|| | correlation over classes of "
        "AUROC(-||z||) and AUROC(-||x||) |",
        "|---|---|---|---|---|",
    ]
    for factor, per_class in rows.items():
        auc_z = np.array([r["-||z||"] for r in per_class])
        auc_x = np.array([r["AUROC -||x||"] for r in per_class])
        ratio_z = np.median([r["median ||z|| anomaly"] / r["median ||z|| normal"] for r in per_class])
        ratio_x = np.median([r["median ||x|| anomaly"] / r["median ||x|| normal"] for r in per_class])
        lines.append(
            f"| {factor} | {(auc_z < 0.5).sum()} / {len(auc_z)} | {ratio_z:.2f} | {ratio_x:.2f} "
            f"| {np.corrcoef(auc_z, auc_x)[0, 1]:.2f} |"
        )
    return "\n".join(lines)


def report(name, rows, seeds):
    # "||" would split markdown table cells: norms are printed with U+2016.
    tables = (table(rows) + "\n\n" + mechanism_table(rows)).replace("||", "\u2016")
    return f"\n### {name}, seeds {seeds} (AUROC in %, mean over classes and seeds)\n\n" + tables


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=["digits", "coil20"], default=["digits", "coil20"])
    parser.add_argument("--factors", nargs="+", choices=list(FACTORS), default=list(FACTORS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--max-epochs", type=int, default=50)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--report", metavar="JSON", default=None,
                        help="print the tables of an earlier run's JSON and exit")
    args = parser.parse_args(argv)
    if args.report:
        done = json.loads(Path(args.report).read_text())
        print(environment_line(done["environment"]))
        for name, rows in done["datasets"].items():
            print(report(name, rows, done["args"]["seeds"]))
        return
    torch.set_num_threads(1)
    env = environment(base=BASE, max_epochs=args.max_epochs)
    print(environment_line(env), flush=True)
    out = {"environment": env, "args": vars(args), "datasets": {}}
    for name in args.datasets:
        rows = {}
        for seed in args.seeds:
            X_train, X_test, y_train, y_test = LOADERS[name](seed, args)
            for factor in args.factors:
                params, centre = FACTORS[factor]
                start = time.perf_counter()
                for c in np.unique(y_train):
                    r = one_fit(params, centre, X_train[y_train == c], X_test,
                                (y_test == c).astype(int), seed, args.max_epochs)
                    rows.setdefault(factor, []).append({"seed": seed, "class": int(c), **r})
                mean = np.mean([r["-||z||"] for r in rows[factor] if r["seed"] == seed])
                print(f"[{name}] seed {seed} {factor}: {time.perf_counter() - start:.0f} s, "
                      f"-||z|| AUROC {mean:.3f}", file=sys.stderr, flush=True)
        out["datasets"][name] = rows
        print(report(name, rows, args.seeds), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
