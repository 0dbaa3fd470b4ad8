"""Multi-view one-class benchmark on COIL-20: do two views beat one?

Protocol (``../shared/data/README.md``): a sample is a pair of images of one
object, pose ``p`` and pose ``(p + k) mod 72`` (``k = 18`` is 90 degrees),
stacked as two views. For every seed the 72 poses are split at random into 36
training and 36 test poses (the same split for every object). Each object in
turn is normal: methods train on its training pairs (36 samples) and score the
test pairs of all 20 objects (720 samples, 36 normal). Reported: mean AUROC
over objects (normal = positive, ``score_samples``), recall of anomalies at the
fitted threshold (``predict``) and precision@N (N = number of anomalies), then
mean ± std over seeds.

Methods, all on the same pairs:

- ``MV both views``: ``MultiViewConvAEOneClass`` defaults (``beta=0.1``);
- ``MV both views, logdet``: the same with ``diversity="logdet"``;
- ``view 1 alone`` / ``view 2 alone``: ``ConvAEOneClass(beta=0.1)`` on one view;
- ``late fusion``: the same two single-view models' ``score_samples``, each
  standardised with its training scores, averaged (its threshold: the 5th
  percentile of the fused training scores);

every skocc model is fitted once and read with each of the library's
``score_type`` values (rows ``[latent]``, ``[reconstruction]``,
``[mahalanobis]``, ``[combined]``, ``[reconstruction+mahalanobis]``; the
threshold for recall is recomputed from the training scores of that score
type);
- ``LOF`` / ``Gaussian KDE (exact)``: raw pixels of both views concatenated.

The ``diversity="logdet"`` and ``beta=2`` variants run at ``k = 18`` only. A ``resolution``
ablation (16 and 64; 32 is the native size) of the multi-view model runs on
``k = 18``. Seeds run in parallel processes (``--n-jobs``), one
torch thread each.

``--recipe NAME`` (a recipe of ``convae_one_class.py``) runs instead, for
every gap: ``MultiViewConvAEOneClass`` and the two single-view
``ConvAEOneClass`` with that recipe's parameters (``beta=0`` unless the recipe
sets it, ``calibration="train"``), next to LOF and the exact KDE on both
views' pixels.

Reproduce (repository root; one torch thread)::

    OMP_NUM_THREADS=1 python benchmarks/multiview_coil20.py --data-dir ../shared/data
    OMP_NUM_THREADS=1 python benchmarks/multiview_coil20.py --data-dir ../shared/data \\
        --recipe b16-sq --gaps 18 --resolutions --n-jobs 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from functools import partial

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import KDE_RULE, ExactGaussianKDE, environment, environment_line  # noqa: E402
from convae_one_class import RECIPES  # noqa: E402

from skocc import ConvAEOneClass, MultiViewConvAEOneClass, stack_views  # noqa: E402
from skocc.metrics import anomaly_recall, precision_at_n  # noqa: E402
from skocc.nn.objectives import SCORE_TYPES as LIBRARY_SCORE_TYPES  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "multiview_coil20.json"


def load_pairs(data_dir, k):
    """All (object, pose) pairs as two views: uint8 (1440, 2, 1, 32, 32), labels, poses."""
    z = np.load(Path(data_dir) / "coil20" / "coil20_32x32.npz")
    X, y, pose = z["X"], z["y"].astype(int), z["pose"].astype(int)
    index = {(o, p): i for i, (o, p) in enumerate(zip(y, pose))}
    partner = np.array([index[(o, (p + k) % 72)] for o, p in zip(y, pose)])
    return stack_views(X, X[partner]), y, pose


# Every score type of the library, read from one fit.
SCORE_TYPES = list(LIBRARY_SCORE_TYPES)


class Scored:
    """A skocc estimator whose three score types are read from one fit.

    ``offset_`` belongs to the estimator's own ``score_type``; for the others
    it is recomputed from the training scores (the 5th percentile), as ``fit``
    would set it.
    """

    score_types = SCORE_TYPES

    def __init__(self, estimator):
        self.estimator = estimator

    def fit(self, V):
        self.V_train_ = V
        self.estimator.fit(V)
        return self

    def set_score_type(self, score_type):
        self.estimator.set_params(score_type=score_type)
        train = self.estimator.score_samples(self.V_train_)
        self.estimator.offset_ = float(np.percentile(train, 100 * self.estimator.contamination))

    def results(self, V):
        return {None: (self.estimator.score_samples(V), self.estimator.predict(V))}


class SingleViews:
    """One single-view model per view, read alone and fused.

    ``late fusion`` averages the two models' normality scores after
    standardising each with its training scores; its threshold is the 5th
    percentile of the fused training scores.
    """

    score_types = SCORE_TYPES
    parts = ("view 1 alone", "view 2 alone", "late fusion")

    def __init__(self, make):
        self.make = make

    def fit(self, V):
        self.V_train_ = V
        self.models_ = [self.make().fit(V[:, v]) for v in range(V.shape[1])]
        return self

    def set_score_type(self, score_type):
        for model in self.models_:
            model.set_params(score_type=score_type)
        train = self._per_view(self.V_train_)
        self.mean_, self.std_ = train.mean(axis=0), train.std(axis=0) + 1e-12
        self.offset_ = np.percentile(self._fuse(train), 5.0)

    def _per_view(self, V):
        return np.stack([m.score_samples(V[:, v]) for v, m in enumerate(self.models_)], axis=1)

    def _fuse(self, per_view):
        return ((per_view - self.mean_) / self.std_).mean(axis=1)

    def results(self, V):
        """{part: (score_samples, predict)}."""
        per_view = self._per_view(V)
        fused = self._fuse(per_view)
        out = {
            f"view {v + 1} alone": (per_view[:, v], m.predict(V[:, v]))
            for v, m in enumerate(self.models_)
        }
        out["late fusion"] = (fused, np.where(fused >= self.offset_, 1, -1))
        return out


class OnPixels:
    """A classical detector on the concatenated raw pixels in [0, 1]."""

    def __init__(self, estimator):
        self.estimator = estimator

    @staticmethod
    def _flat(V):
        return V.reshape(len(V), -1).astype(np.float64) / 255.0

    def fit(self, V):
        self.estimator.fit(self._flat(V))
        self.offset_ = np.percentile(self.estimator.score_samples(self._flat(V)), 5.0)
        return self

    def results(self, V):
        scores = self.estimator.score_samples(self._flat(V))
        return {None: (scores, np.where(scores >= self.offset_, 1, -1))}


def methods(seed, resolution=None, diversity=True):
    """Method name -> factory. Views alone and late fusion share their two fits."""
    common = dict(random_state=seed, device="cpu", resolution=resolution)
    out = {"MV both views": lambda: Scored(MultiViewConvAEOneClass(**common))}
    if diversity:
        out["MV both views, logdet"] = lambda: Scored(
            MultiViewConvAEOneClass(**common, diversity="logdet")
        )
        # The setting under which the latent score worked on constructed digit views.
        out["MV both views, beta=2"] = lambda: Scored(MultiViewConvAEOneClass(**common, beta=2.0))
    # The single views use the multi-view model's beta, so the comparison is like for like.
    out["single views"] = lambda: SingleViews(lambda: ConvAEOneClass(**common, beta=0.1))
    out["LOF (both views' pixels)"] = lambda: OnPixels(LocalOutlierFactor(novelty=True))
    out["Gaussian KDE (both views' pixels)"] = lambda: OnPixels(ExactGaussianKDE())
    return out


def recipe_methods(seed, recipe):
    """``--recipe``: both views and single views with one ``RECIPES`` entry.

    Both models get the recipe's parameters, ``beta=0`` unless the recipe sets
    it (``ConvAEOneClass``'s default; ``MultiViewConvAEOneClass`` defaults to
    0.1) and ``calibration="train"``, and are read with every score type of the library.
    """
    params = {"beta": 0.0, **RECIPES[recipe]}
    common = dict(random_state=seed, device="cpu", calibration="train", **params)
    return {
        f"MV both views, {recipe}": lambda: Scored(MultiViewConvAEOneClass(**common)),
        "single views": lambda: SingleViews(lambda: ConvAEOneClass(**common)),
        "LOF (both views' pixels)": lambda: OnPixels(LocalOutlierFactor(novelty=True)),
        "Gaussian KDE (both views' pixels)": lambda: OnPixels(ExactGaussianKDE()),
    }


def evaluate(make, V_train, V_test, is_normal):
    """Fit once; {(part, score type): metrics} for every part and score type."""
    start = time.perf_counter()
    model = make().fit(V_train)
    fit_s = time.perf_counter() - start
    y = np.where(is_normal, 1, -1)
    out = {}
    for score_type in getattr(model, "score_types", [None]):
        if score_type is not None:
            model.set_score_type(score_type)
        for part, (scores, pred) in model.results(V_test).items():
            out[(part, score_type)] = {
                "auroc": float(roc_auc_score(is_normal, scores)),
                "recall": anomaly_recall(y, pred),
                "precision_at_n": precision_at_n(y, -scores),
                "fit_s": fit_s,
            }
    return out


def run_unit(V, y, pose, seed, objects, factories):
    """All methods on all objects for one seed: {row: [per-object metrics]}."""
    torch.set_num_threads(1)
    order = np.random.RandomState(seed).permutation(72)
    train_poses = set(order[:36].tolist())
    in_train = np.array([p in train_poses for p in pose])
    V_test, y_test = V[~in_train], y[~in_train]
    rows = {}
    for name, make in factories.items():
        for obj in objects:
            found = evaluate(make, V[in_train & (y == obj)], V_test, y_test == obj)
            for (part, score_type), metrics in found.items():
                label = name if part is None else part
                label = label if score_type is None else f"{label} [{score_type}]"
                rows.setdefault(label, []).append(metrics)
    return rows


def run(V, y, pose, seeds, objects, method_factory, n_jobs):
    """{row: {seed: [per-object metrics]}}, seeds in parallel processes."""
    units = Parallel(n_jobs=n_jobs)(
        delayed(run_unit)(V, y, pose, seed, objects, method_factory(seed)) for seed in seeds
    )
    out = {}
    for seed, rows in zip(seeds, units):
        for label, metrics in rows.items():
            out.setdefault(label, {})[seed] = metrics
    return out


def summarize(result):
    table = {}
    for name, by_seed in result.items():
        per_seed = {
            key: [np.mean([r[key] for r in rows]) for rows in by_seed.values()]
            for key in ("auroc", "recall", "precision_at_n")
        }
        table[name] = {
            **{f"{key}_mean": float(np.mean(v)) for key, v in per_seed.items()},
            **{f"{key}_std": float(np.std(v)) for key, v in per_seed.items()},
            "fit_s_median": float(np.median([r["fit_s"] for rows in by_seed.values() for r in rows])),
        }
    return table


def markdown(title, table, n_seeds):
    lines = [
        f"### {title}",
        "",
        f"| method | AUROC (mean ± std over {n_seeds} seeds) | recall of anomalies | precision@N | median fit s |",
        "|---|---|---|---|---|",
    ]
    for name, row in table.items():
        lines.append(
            f"| {name} | {row['auroc_mean']:.4f} ± {row['auroc_std']:.4f} | "
            f"{row['recall_mean']:.3f} | {row['precision_at_n_mean']:.3f} | {row['fit_s_median']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--gaps", type=int, nargs="*", default=[9, 18, 36])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--objects", type=int, nargs="+", default=list(range(20)))
    parser.add_argument("--resolutions", type=int, nargs="*", default=[16, 64])
    parser.add_argument("--resolution-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n-jobs", type=int, default=2, help="processes (one torch thread each)")
    parser.add_argument("--recipe", choices=list(RECIPES), default=None,
                        help="run only the both-views / single-views comparison with this "
                        "convae_one_class.py recipe (no logdet and beta=2 variants)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    env = environment(kde_bandwidth_rule=KDE_RULE, n_jobs=args.n_jobs)
    print(environment_line(env), flush=True)
    results = {"environment": env, "args": vars(args), "gaps": {}, "resolution": {}}
    reports = []
    for k in args.gaps:
        V, y, pose = load_pairs(args.data_dir, k)
        # The diversity and beta=2 variants run at k = 18 only, to keep the run short.
        if args.recipe is not None:
            factory = partial(recipe_methods, recipe=args.recipe)
        else:
            factory = partial(methods, diversity=(k == 18))
        raw = run(V, y, pose, args.seeds, args.objects, factory, args.n_jobs)
        table = summarize(raw)
        results["gaps"][k] = {"summary": table, "raw": raw}
        reports.append(markdown(f"k = {k} ({5 * k} degrees apart)", table, len(args.seeds)))
        print(reports[-1], flush=True)
    if args.resolutions:
        V, y, pose = load_pairs(args.data_dir, 18)
        table = {}
        for r in args.resolutions:
            factory = partial(_resolution_methods, resolution=r)
            raw = run(V, y, pose, args.resolution_seeds, args.objects, factory, args.n_jobs)
            table.update(summarize(raw))
            results["resolution"][r] = raw
        results["resolution_summary"] = table
        reports.append(
            markdown("Resolution ablation, k = 18 (32 is the native size: see k = 18)",
                     table, len(args.resolution_seeds))
        )
    print("\n" + environment_line(env) + "\n")
    print("\n\n".join(reports))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {args.out}")


def _resolution_methods(seed, resolution):
    common = dict(random_state=seed, device="cpu", resolution=resolution)
    return {f"MV both views, resolution={resolution}": lambda: Scored(MultiViewConvAEOneClass(**common))}


if __name__ == "__main__":
    main()
