"""Throughput of skocc against a hand-written PyTorch loop over the same network.

For each configuration, in one process and alternating skocc / raw loop over
``--repeats`` rounds (medians reported; one untimed warm-up round runs first):

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
- ``SelfSupervisedFeatures`` (rotation pretext, small encoder): the raw loop
  trains ``skocc.nn.SelfSupervisedNet`` with ``skocc.losses.rotation_loss``
  (4 rotated copies per image); its whole fit has no scoring pass, and
  "score" is ``transform`` against a raw loop computing the same features.
- **peak memory** (``--memory``): skocc's fit and score and the raw loop's,
  each side in a fresh subprocess (one per configuration and side), so that
  neither inherits the other's allocations: the rise of the peak resident
  memory (``VmHWM``, reset before the phase through ``/proc/self/clear_refs``)
  over the resident memory when the phase began, with the data already in
  memory; on CUDA ``torch.cuda.max_memory_allocated`` over what was allocated.

Both sides get the same ``uint8`` images; both convert batches to float inside
the network. With ``--precision bfloat16`` (or ``float16``) skocc runs with
that ``precision`` and the raw loop under the same ``torch.autocast`` (and a
``GradScaler`` for float16). On CUDA the raw loop copies the data to the GPU
once, as a hand-written loop over a small data set would. The ratio is skocc
time / raw time (1.00 = no overhead).

``--scaling`` times ``score_samples`` of a model fitted (and saved) here on
2,000 images, loaded in a fresh subprocess per n, so that the fit's memory
does not hide scoring's: the subprocess reports the rise of its peak resident
memory while scoring ``n`` ``uint8`` 28 x 28 images.

Reproduce (repository root)::

    OMP_NUM_THREADS=1 python benchmarks/throughput.py --device cpu
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, environment_line  # noqa: E402

import skocc  # noqa: E402
from skocc import ConvAEOneClass, MultiViewConvAEOneClass, SelfSupervisedFeatures  # noqa: E402
from skocc._runtime import PRECISIONS  # noqa: E402
from skocc.losses import autoencoder_loss, reconstruction_error, rotation_loss  # noqa: E402
from skocc.nn import (  # noqa: E402
    ConvAutoencoder,
    ImagePreprocess,
    MultiViewConvAutoencoder,
    SelfSupervisedNet,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "throughput.json"

WIDE = dict(channels=(32, 64, 128), latent_dim=64)
CONFIGS = {
    "ConvAE 28x28x1": (ConvAEOneClass, (1, 28, 28), WIDE),
    "ConvAE 32x32x3": (ConvAEOneClass, (3, 32, 32), WIDE),
    "MultiView 2x32x32x3": (MultiViewConvAEOneClass, (2, 3, 32, 32), WIDE),
    # A network so small that per-batch Python work would show: an upper
    # bound on what the sklearn and skorch layers cost per batch.
    "ConvAE 8x8x1 small net": (ConvAEOneClass, (1, 8, 8), dict(channels=(8,), latent_dim=8)),
    # Rotation pretext (4 rotated copies per image, so 4x the images per step);
    # "score" is transform (the features).
    "SelfSupervised rotation 28x28x1": (
        SelfSupervisedFeatures, (1, 28, 28), dict(pretext="rotation", width=16)
    ),
    "SelfSupervised rotation 32x32x3": (
        SelfSupervisedFeatures, (3, 32, 32), dict(pretext="rotation", width=16)
    ),
}


def make_data(shape, n, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(n,) + shape, dtype=np.uint8)


# ------------------------------------------------------------ measurement
def _peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024


def _rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024


def _reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(fn, device):
    """(seconds, peak memory rise in MiB) of ``fn()``; CUDA is synchronised around it."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        _reset_peak_rss()
        base = _rss_mib()
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if cuda:
        return seconds, (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return seconds, _peak_rss_mib() - base


# --------------------------------------------------------------- raw loop
def raw_module(estimator_class, shape, params):
    """The module skocc builds, constructed by hand."""
    if estimator_class is SelfSupervisedFeatures:
        return SelfSupervisedNet(
            input_shape=shape, pretext=params["pretext"], width=params["width"],
            preprocess=ImagePreprocess(),
        )
    kwargs = dict(
        channels=params["channels"],
        latent_dim=params["latent_dim"],
        preprocess=ImagePreprocess(),
        lipschitz_decoder=True,
    )
    if estimator_class is MultiViewConvAEOneClass:
        return MultiViewConvAutoencoder(n_views=shape[0], input_shape=shape[1:], **kwargs)
    return ConvAutoencoder(input_shape=shape, **kwargs)


def _autocast(device, precision):
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def raw_epoch(module, optimizer, X, batch_size, beta, generator, device, precision, scaler):
    module.train()
    order = torch.randperm(len(X), generator=generator).to(X.device)
    for start in range(0, len(X), batch_size):
        xb = X[order[start : start + batch_size]].to(device, non_blocking=True)
        with _autocast(device, precision):
            out = module(xb)
        if isinstance(module, SelfSupervisedNet):
            loss = rotation_loss(*out).mean()
        else:
            x, x_hat, z = out
            loss = autoencoder_loss(x.float(), x_hat.float(), z.float(), beta).mean()
        optimizer.zero_grad()
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        loss.item()  # the one sync per batch a logging loop makes, as skorch does


def raw_score(module, X, batch_size, device, precision):
    module.eval()
    out = []
    with torch.no_grad(), _autocast(device, precision):
        for start in range(0, len(X), batch_size):
            xb = X[start : start + batch_size].to(device, non_blocking=True)
            if isinstance(module, SelfSupervisedNet):
                out.append(module.features(xb).float().cpu())
                continue
            x, x_hat, _ = module(xb)
            if x.ndim == 5:
                x, x_hat = x.flatten(1, 2), x_hat.flatten(1, 2)
            out.append(reconstruction_error(x.float(), x_hat.float()).cpu())
    return -torch.cat(out).double().numpy()


def skocc_estimator(estimator_class, params, seed, args):
    extra = {} if estimator_class is SelfSupervisedFeatures else {"score_type": "reconstruction"}
    return estimator_class(**params, max_epochs=1, device=args.device, random_state=seed,
                           precision=args.precision, **extra)


def skocc_score(model, X):
    """What scoring means for the estimator: score_samples, or transform for features."""
    return model.transform(X) if isinstance(model, SelfSupervisedFeatures) else model.score_samples(X)


# ---------------------------------------------------------------- configs
def bench_config(name, estimator_class, shape, net_params, args):
    params = dict(**net_params, batch_size=args.batch_size, lr=1e-3)
    X = make_data(shape, args.n)
    device = torch.device(args.device)
    X_t = torch.from_numpy(X)
    if device.type == "cuda":
        X_t = X_t.to(device)  # a hand-written loop keeps a small data set on the GPU
    keys = ("epoch", "fit", "score")
    rows = {f"{k}_{side}": [] for k in keys for side in ("skocc", "raw")}
    # Round -1 warms up both sides (first-call kernel selection, allocator) and is dropped.
    for rep in range(-1, args.repeats):
        if rep == 0:
            rows = {key: [] for key in rows}
        seed = max(rep, 0)
        model = skocc_estimator(estimator_class, params, seed, args)
        rows["fit_skocc"].append(measure(lambda: model.fit(X), device)[0])
        rows["epoch_skocc"].append(float(model.net_.history[-1, "dur"]))

        torch.manual_seed(seed)
        module = raw_module(estimator_class, shape, params).to(device)
        optimizer = torch.optim.Adam(module.parameters(), lr=params["lr"])
        scaler = torch.amp.GradScaler(device.type) if args.precision == "float16" else None
        generator = torch.Generator().manual_seed(seed)

        def raw_fit():
            raw_fit.epoch = measure(
                lambda: raw_epoch(module, optimizer, X_t, args.batch_size, 0.0, generator,
                                  device, args.precision, scaler),
                device,
            )[0]
            if estimator_class is not SelfSupervisedFeatures:  # no threshold to set
                raw_score(module, X_t, args.batch_size, device, args.precision)

        rows["fit_raw"].append(measure(raw_fit, device)[0])
        rows["epoch_raw"].append(raw_fit.epoch)
        rows["score_skocc"].append(measure(lambda: skocc_score(model, X), device)[0])
        rows["score_raw"].append(
            measure(lambda: raw_score(module, X_t, args.batch_size, device, args.precision), device)[0]
        )
    med = {key: float(np.median(v)) for key, v in rows.items()}
    return {
        "n": args.n,
        "shape": shape,
        "net": net_params,
        "times": rows,
        "median_s": med,
        "images_per_s": {key: args.n / v for key, v in med.items()},
        "ratio": {
            "fit epoch": med["epoch_skocc"] / med["epoch_raw"],
            "fit (whole call)": med["fit_skocc"] / med["fit_raw"],
            "score": med["score_skocc"] / med["score_raw"],
        },
    }


def memory_child(name, side, args):
    """Run in a fresh subprocess: one side's fit and score; print the peak memory rises."""
    estimator_class, shape, net_params = CONFIGS[name]
    X = make_data(shape, args.n)
    device = torch.device(args.device)
    # The first torch optimizer imports torch._dynamo (about 75 MiB): a one-time
    # cost of torch, paid here so that neither side's measurement includes it.
    torch.optim.Adam(torch.nn.Linear(1, 1).parameters())
    if side == "skocc":
        model = skocc_estimator(estimator_class, dict(net_params, batch_size=args.batch_size), 0, args)
        fit = measure(lambda: model.fit(X), device)[1]
        score = measure(lambda: skocc_score(model, X), device)[1]
    else:
        X_t = torch.from_numpy(X)
        X_t = X_t.to(device) if device.type == "cuda" else X_t
        torch.manual_seed(0)
        module = raw_module(estimator_class, shape, net_params).to(device)
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler(device.type) if args.precision == "float16" else None

        def raw_fit():
            raw_epoch(module, optimizer, X_t, args.batch_size, 0.0, torch.Generator().manual_seed(0),
                      device, args.precision, scaler)
            if estimator_class is not SelfSupervisedFeatures:
                raw_score(module, X_t, args.batch_size, device, args.precision)

        fit = measure(raw_fit, device)[1]
        score = measure(lambda: raw_score(module, X_t, args.batch_size, device, args.precision),
                        device)[1]
    print(json.dumps({"fit_mib": fit, "score_mib": score, "data_mib": X.nbytes / 2**20}))


def memory(name, args):
    out = {}
    for side in ("skocc", "raw"):
        result = subprocess.run(
            [sys.executable, __file__, "--memory-child", name, side, "--n", str(args.n),
             "--batch-size", str(args.batch_size), "--device", args.device,
             "--precision", args.precision],
            capture_output=True, text=True, check=True,
        )
        out[side] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


# ---------------------------------------------------------------- scaling
SCALING_SHAPE = (1, 28, 28)


def scaling_child(n, model_path, device):
    """Run in a fresh subprocess: load the model, score n images, print time and memory."""
    torch.set_num_threads(1)
    model = skocc.load(model_path, device=device)
    X = make_data(SCALING_SHAPE, n, seed=1)
    model.score_samples(X[:256])  # warm-up: first-call allocations are not scoring's
    rss_before = _rss_mib()
    seconds, rise = measure(lambda: model.score_samples(X), torch.device(device))
    print(json.dumps({"n": n, "score_s": seconds, "rss_before_mib": rss_before,
                      "peak_rise_mib": rise, "data_mib": X.nbytes / 2**20}))


def scaling(args):
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.skocc"
        model = ConvAEOneClass(max_epochs=1, device=args.device, random_state=0,
                               precision=args.precision)
        skocc.save(model.fit(make_data(SCALING_SHAPE, 2000)), path)
        for n in args.scaling:
            result = subprocess.run(
                [sys.executable, __file__, "--scaling-child", str(n), "--model", str(path),
                 "--device", args.device],
                capture_output=True, text=True, check=True,
            )
            out.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"  n={n}: {out[-1]}", flush=True)
    return out


# ------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32", choices=sorted(PRECISIONS))
    parser.add_argument("--n", type=int, default=4096, help="images per fit/score measurement")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--scaling", type=int, nargs="*", default=[1000, 10000, 100000, 1000000])
    parser.add_argument("--scaling-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true",
                        help="also measure peak memory, one fresh subprocess per side")
    parser.add_argument("--memory-child", nargs=2, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.scaling_child is not None:
        scaling_child(args.scaling_child, args.model, args.device)
        return
    if args.memory_child is not None:
        memory_child(*args.memory_child, args)
        return
    env = environment(device=args.device, batch_size=args.batch_size, n=args.n,
                      repeats=args.repeats, precision=args.precision)
    print(environment_line(env), flush=True)
    results = {"environment": env, "configs": {}}
    lines = [
        "| configuration | fit epoch img/s skocc | raw | ratio | fit (whole call) ratio "
        "| score img/s skocc | raw | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    memory_lines = [
        "| configuration | data (MiB) | peak rise fit (MiB) skocc | raw | peak rise score (MiB) skocc | raw |",
        "|---|---|---|---|---|---|",
    ]
    for name in args.configs:
        estimator_class, shape, net_params = CONFIGS[name]
        r = results["configs"][name] = {}
        if args.repeats:  # --repeats 0 --memory measures memory only
            r.update(bench_config(name, estimator_class, shape, net_params, args))
            ips, ratio = r["images_per_s"], r["ratio"]
            lines.append(
                f"| {name} | {ips['epoch_skocc']:.0f} | {ips['epoch_raw']:.0f} | "
                f"{ratio['fit epoch']:.3f} | {ratio['fit (whole call)']:.3f} | "
                f"{ips['score_skocc']:.0f} | {ips['score_raw']:.0f} | {ratio['score']:.3f} |"
            )
            print(lines[-1], flush=True)
        if args.memory:
            mem = r["peak_memory_rise_mib"] = memory(name, args)
            memory_lines.append(
                f"| {name} | {mem['skocc']['data_mib']:.1f} | {mem['skocc']['fit_mib']:.1f} | "
                f"{mem['raw']['fit_mib']:.1f} | {mem['skocc']['score_mib']:.1f} | "
                f"{mem['raw']['score_mib']:.1f} |"
            )
            print(memory_lines[-1], flush=True)
    if args.scaling:
        print("scoring as n grows (ConvAE 28x28x1, a fresh subprocess per n):", flush=True)
        results["scaling"] = scaling(args)
    print("\n" + environment_line(env) + f"\nmedians of {args.repeats} alternating rounds, "
          f"n={args.n} images, batch {args.batch_size}, device {args.device}, "
          f"precision {args.precision}\n")
    if args.configs and args.repeats:
        print("\n".join(lines))
    if args.configs and args.memory:
        print("\n" + "\n".join(memory_lines))
    if args.scaling:
        print("\n| n | score s | images/s | data (MiB) | RSS before scoring (MiB) "
              "| peak rise while scoring (MiB) |")
        print("|---|---|---|---|---|---|")
        for row in results["scaling"]:
            print(f"| {row['n']} | {row['score_s']:.2f} | {row['n'] / row['score_s']:.0f} | "
                  f"{row['data_mib']:.0f} | {row['rss_before_mib']:.0f} | {row['peak_rise_mib']:.1f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
