"""Throughput of skocc against a hand-written PyTorch loop over the same network.

For each configuration, in one process and alternating skocc / raw loop over
``--repeats`` rounds (medians reported):

One untimed warm-up round runs first.

- **fit epoch**: images per second of one training epoch. skocc: the epoch
  duration skorch records in ``net_.history`` (``dur``) of
  ``ConvAEOneClass(max_epochs=1)``; raw: a loop over the same module class
  (``skocc.nn.ConvAutoencoder`` / ``MultiViewConvAutoencoder``, same widths and
  latent size), the same optimizer (Adam, same lr), batch size, shuffling by
  ``torch.randperm`` and per-sample loss (``skocc.losses.autoencoder_loss``).
- **fit (whole call)**: ``fit`` end to end (input checks, net set-up, the
  epoch, and the scoring pass over the training images that sets
  ``offset_``), against the raw epoch plus a raw scoring pass.
- **score**: images per second of ``score_samples`` against a raw
  ``torch.no_grad`` loop computing the same per-sample reconstruction error.

Both sides get the same ``uint8`` images; both convert batches to float inside
the network. The ratio is skocc time / raw time (1.00 = no overhead).
``--scaling`` also times ``score_samples`` and the process's peak resident
memory (one subprocess per n) as n grows.

Reproduce (repository root)::

    OMP_NUM_THREADS=1 python benchmarks/throughput.py --device cpu
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, environment_line  # noqa: E402

from skocc import ConvAEOneClass, MultiViewConvAEOneClass  # noqa: E402
from skocc.losses import autoencoder_loss, reconstruction_error  # noqa: E402
from skocc.nn import ConvAutoencoder, ImagePreprocess, MultiViewConvAutoencoder  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "throughput.json"

CONFIGS = {
    "ConvAE 28x28x1": (ConvAEOneClass, (1, 28, 28)),
    "ConvAE 32x32x3": (ConvAEOneClass, (3, 32, 32)),
    "MultiView 2x32x32x3": (MultiViewConvAEOneClass, (2, 3, 32, 32)),
}


def make_data(shape, n, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(n,) + shape, dtype=np.uint8)


def raw_module(estimator_class, shape, params):
    """The module skocc builds, constructed by hand."""
    kwargs = dict(
        channels=params["channels"],
        latent_dim=params["latent_dim"],
        preprocess=ImagePreprocess(),
        lipschitz_decoder=True,
    )
    if estimator_class is MultiViewConvAEOneClass:
        return MultiViewConvAutoencoder(n_views=shape[0], input_shape=shape[1:], **kwargs)
    return ConvAutoencoder(input_shape=shape, **kwargs)


def raw_epoch(module, optimizer, X, batch_size, beta, generator, device):
    module.train()
    order = torch.randperm(len(X), generator=generator)
    for start in range(0, len(X), batch_size):
        xb = X[order[start : start + batch_size]].to(device)
        x, x_hat, z = module(xb)
        loss = autoencoder_loss(x, x_hat, z, beta).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # the one sync per batch a logging loop makes, as skorch does


def raw_score(module, X, batch_size, device):
    module.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(X), batch_size):
            x, x_hat, _ = module(X[start : start + batch_size].to(device))
            if x.ndim == 5:
                x, x_hat = x.flatten(1, 2), x_hat.flatten(1, 2)
            out.append(reconstruction_error(x, x_hat).cpu())
    return -torch.cat(out).double().numpy()


def time_call(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_config(name, estimator_class, shape, args):
    params = dict(channels=(32, 64, 128), latent_dim=64, batch_size=args.batch_size, lr=1e-3)
    X = make_data(shape, args.n)
    X_t = torch.from_numpy(X)
    device = torch.device(args.device)
    rows = {key: [] for key in ("epoch_skocc", "epoch_raw", "fit_skocc", "fit_raw", "score_skocc", "score_raw")}
    # Round -1 warms up both sides (first-call kernel selection, allocator) and is dropped.
    for rep in range(-1, args.repeats):
        if rep == 0:
            rows = {key: [] for key in rows}
        model = estimator_class(
            **params, max_epochs=1, device=args.device, random_state=max(rep, 0),
            score_type="reconstruction",
        )
        rows["fit_skocc"].append(time_call(lambda: model.fit(X)))
        rows["epoch_skocc"].append(float(model.net_.history[-1, "dur"]))

        torch.manual_seed(max(rep, 0))
        module = raw_module(estimator_class, shape, params).to(device)
        optimizer = torch.optim.Adam(module.parameters(), lr=params["lr"])
        generator = torch.Generator().manual_seed(max(rep, 0))
        epoch = time_call(
            lambda: raw_epoch(module, optimizer, X_t, args.batch_size, 0.1, generator, device)
        )
        rows["epoch_raw"].append(epoch)
        rows["fit_raw"].append(epoch + time_call(lambda: raw_score(module, X_t, args.batch_size, device)))

        rows["score_skocc"].append(time_call(lambda: model.score_samples(X)))
        rows["score_raw"].append(time_call(lambda: raw_score(module, X_t, args.batch_size, device)))
    med = {key: float(np.median(v)) for key, v in rows.items()}
    return {
        "n": args.n,
        "times": rows,
        "median_s": med,
        "images_per_s": {key: args.n / v for key, v in med.items()},
        "ratio": {
            "fit epoch": med["epoch_skocc"] / med["epoch_raw"],
            "fit (whole call)": med["fit_skocc"] / med["fit_raw"],
            "score": med["score_skocc"] / med["score_raw"],
        },
    }


def scaling_child(n, shape, device):
    """Run in a subprocess: fit on 2,000 images, score n; print time and peak RSS."""
    torch.set_num_threads(1)
    model = ConvAEOneClass(max_epochs=1, device=device, random_state=0).fit(make_data(shape, 2000))
    X = make_data(shape, n, seed=1)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = time_call(lambda: model.score_samples(X))
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n": n, "score_s": seconds, "peak_rss_mib_before": rss_before / 1024,
                      "peak_rss_mib_after": rss_after / 1024, "data_mib": X.nbytes / 2**20}))


def scaling(args):
    out = []
    for n in args.scaling:
        result = subprocess.run(
            [sys.executable, __file__, "--scaling-child", str(n), "--device", args.device],
            capture_output=True, text=True, check=True,
        )
        out.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(f"  n={n}: {out[-1]}", flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=4096, help="images per fit/score measurement")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--scaling", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--scaling-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.scaling_child is not None:
        scaling_child(args.scaling_child, (1, 28, 28), args.device)
        return
    env = environment(device=args.device, batch_size=args.batch_size, n=args.n, repeats=args.repeats)
    print(environment_line(env), flush=True)
    results = {"environment": env, "configs": {}}
    lines = [
        "| configuration | fit epoch img/s skocc | raw | ratio | fit (whole call) ratio | score img/s skocc | raw | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in args.configs:
        estimator_class, shape = CONFIGS[name]
        r = bench_config(name, estimator_class, shape, args)
        results["configs"][name] = r
        ips, ratio = r["images_per_s"], r["ratio"]
        lines.append(
            f"| {name} | {ips['epoch_skocc']:.0f} | {ips['epoch_raw']:.0f} | {ratio['fit epoch']:.3f} | "
            f"{ratio['fit (whole call)']:.3f} | {ips['score_skocc']:.0f} | {ips['score_raw']:.0f} | "
            f"{ratio['score']:.3f} |"
        )
        print(lines[-1], flush=True)
    if args.scaling:
        print("scoring as n grows (ConvAE 28x28x1, one subprocess per n):", flush=True)
        results["scaling"] = scaling(args)
    print("\n" + environment_line(env) + f"\nmedians of {args.repeats} alternating rounds, "
          f"n={args.n} images, batch {args.batch_size}, device {args.device}, OMP_NUM_THREADS as shown\n")
    print("\n".join(lines))
    if args.scaling:
        print("\n| n | score s | images/s | peak RSS before scoring (MiB) | after (MiB) | data (MiB) |")
        print("|---|---|---|---|---|---|")
        for row in results["scaling"]:
            print(f"| {row['n']} | {row['score_s']:.2f} | {row['n'] / row['score_s']:.0f} | "
                  f"{row['peak_rss_mib_before']:.0f} | {row['peak_rss_mib_after']:.0f} | {row['data_mib']:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
