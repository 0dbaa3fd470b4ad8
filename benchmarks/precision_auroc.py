"""Effect of the ``precision`` parameter on AUROC, on the 8 x 8 digits.

Protocol: ``skocc.datasets.one_class_digits_split(random_state=seed)``; for every
digit ``c``, fit ``ConvAEOneClass`` (default settings, ``random_state=seed``) on
the training images of ``c`` only, once per precision, and compute the AUROC of
``score_samples`` on the whole test split with ``c`` as the normal class.
Reports the mean AUROC over digits per seed and precision, the largest
per-digit difference to float32 and the median fit time.

Reproduce (repository root)::

    OMP_NUM_THREADS=1 python benchmarks/precision_auroc.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, environment_line  # noqa: E402

from skocc import ConvAEOneClass  # noqa: E402
from skocc.datasets import one_class_digits_split  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "precision_auroc.json"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16", "float16"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max-epochs", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    env = environment(device=args.device, seeds=args.seeds, max_epochs=args.max_epochs)
    print(environment_line(env), flush=True)
    auroc = {p: {} for p in args.precisions}
    fit_s = {p: [] for p in args.precisions}
    for seed in args.seeds:
        X_train, X_test, y_train, y_test = one_class_digits_split(random_state=seed)
        for c in range(10):
            for precision in args.precisions:
                model = ConvAEOneClass(max_epochs=args.max_epochs, device=args.device,
                                       random_state=seed, precision=precision)
                start = time.perf_counter()
                model.fit(X_train[y_train == c])
                fit_s[precision].append(time.perf_counter() - start)
                score = roc_auc_score(y_test == c, model.score_samples(X_test))
                auroc[precision].setdefault(seed, []).append(score)
        print(f"seed {seed}: " + ", ".join(
            f"{p} {100 * np.mean(auroc[p][seed]):.2f}" for p in args.precisions), flush=True)
    base = args.precisions[0]
    print(f"\n{environment_line(env)}\nConvAEOneClass defaults, max_epochs={args.max_epochs}, "
          f"device {args.device}; mean AUROC (%) over the 10 digits\n")
    print("| precision | " + " | ".join(f"seed {s}" for s in args.seeds)
          + f" | mean | largest per-digit difference to {base} (points) | median fit s |")
    print("|---|" + "---|" * (len(args.seeds) + 3))
    for p in args.precisions:
        per_seed = [100 * np.mean(auroc[p][s]) for s in args.seeds]
        diff = max(abs(a - b) for s in args.seeds for a, b in zip(auroc[p][s], auroc[base][s]))
        print(f"| {p} | " + " | ".join(f"{v:.2f}" for v in per_seed)
              + f" | {np.mean(per_seed):.2f} | {100 * diff:.2f} | {np.median(fit_s[p]):.2f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(
        {"environment": env, "auroc": {p: {str(s): v for s, v in d.items()} for p, d in auroc.items()},
         "fit_s": fit_s}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
