"""Quantile maps at equal accuracy: how much sooner each way of drawing reaches plain 1,024 draws.

What users take from the engine are posterior quantile maps (5, 16, 50, 84, 95 % of
``log_ne``, ``log_T`` and ``v`` on 50 heights). Their accuracy is limited by the finite number
of latent draws per pixel. This script measures, for each way of drawing
(:data:`radynversion.model.posterior.SAMPLINGS`), the cheapest number of draws whose maps are as
accurate as plain Monte Carlo with 1,024 draws, and times both through the engine in one run.

1. **Pixels**: ``--per-kind`` pixels of each kind of the example scan (quiet Sun, weakly
   heated, flare ribbon with up- and downflows; :func:`radynversion.datasets.example_truth`),
   chosen at random (seed 0).
2. **Reference**: their quantiles from ``--reference`` (16,384) plain draws each, in fp32.
3. **Accuracy** of a method and draw count: for every variable and quantile, the RMS
   difference of its quantiles from the reference over pixels, heights and ``--repeats``
   independent seeds (``v`` in km/s, the others in dex), at the precision the engine chooses
   on this machine (``precision="auto"``). Plain 1,024 sets the bar; a setting *matches* when
   all 15 of its errors are at most the bar's (the reference's own error, 1/16 of the bar's
   variance, is in both).
4. **Time**: the engine (``invert_to_zarr`` on a LocalCluster of ``--workers`` x 1 thread, as
   ``radynversion invert`` runs) on the example scan tiled to ``--time-size``^2 pixels, for
   plain 1,024 and for the cheapest matching setting of each method, alternating A B A B so
   that a change in the machine's load biases neither; pixel rates are the mean of the two runs.

The last line of stdout is JSON with ``speedup_at_equal_accuracy`` (pixel rate of the best
matching method against plain 1,024) and ``frame_1k_minutes`` (a 1024 x 1024 frame at that
rate on this machine).

    python benchmarks/maps_at_accuracy.py --quick      # 96 pixels, ~5-10 minutes on 2 cores
    python benchmarks/maps_at_accuracy.py              # 240 pixels
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import bench_model, emit, engine_client, log, machine, model_file, tiled_example_scan

from radynversion.datasets import example_observation, example_truth
from radynversion.engine import invert_to_zarr
from radynversion.model.invert import network_input
from radynversion.model.posterior import DEFAULT_QUANTILES, posterior
from radynversion.model.precision import select_precision

VARS = ("log_ne", "log_T", "v")
#: draw counts tried per method (the bar: plain 1,024)
CANDIDATES = {"plain": (512, 768, 1024), "sobol": (256, 320, 384, 448, 512, 640, 768, 1024)}


def pick_pixels(per_kind: int, seed: int = 0) -> np.ndarray:
    """Flat indices of ``per_kind`` random pixels of each kind of the example scan."""
    kind = example_truth().kind.values.ravel()
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(kind == k), per_kind, replace=False)
                           for k in np.unique(kind)])


def quantile_maps(net, y: np.ndarray, samples: int, sampling: str, seed: int, precision: str) -> np.ndarray:
    """Quantiles ``(N, Q, 3, H)`` (v in km/s) of the pixels ``y`` through the engine's core."""
    res = posterior(net, y, np.arange(y.shape[0]), samples=samples, quantiles=DEFAULT_QUANTILES, seed=seed,
                    misfit=False, precision=precision, sampling=sampling)
    return res.quantiles.astype(np.float64)


def errors(est: list[np.ndarray], ref: np.ndarray) -> np.ndarray:
    """RMS error ``(3, Q)`` per variable and quantile over repeats, pixels and heights."""
    d = np.stack(est) - ref[None]  # (R, N, Q, 3, H)
    return np.sqrt(np.mean(d**2, axis=(0, 1, 4))).T


def engine_rate(scan, folder: Path, model_path: Path, client, samples: int, sampling: str, precision: str,
                tag: str) -> float:
    t0 = time.perf_counter()
    stats = invert_to_zarr(scan, folder / f"{tag}.zarr", model=model_path, samples=samples, sampling=sampling,
                           precision=precision, client=client, progress=False, chunks={"y": 16, "x": -1})
    assert stats["complete"]
    return scan.sizes["y"] * scan.sizes["x"] / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="32 pixels per kind, 2 repeats, a 32^2 timing scan")
    p.add_argument("--per-kind", dest="per_kind", type=int, default=80, help="pixels per kind (default 80)")
    p.add_argument("--reference", type=int, default=16384, help="plain draws of the reference (default 16384)")
    p.add_argument("--repeats", type=int, default=3, help="independent seeds per setting (default 3)")
    p.add_argument("--time-size", dest="time_size", type=int, default=48, help="timing scan side (default 48)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--model", type=Path, help="checkpoint (default: the packaged model)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="arithmetic of the accuracy runs and the engine (default auto, as the engine)")
    args = p.parse_args()
    if args.quick:
        args.per_kind, args.repeats, args.time_size = 32, 2, 32
    torch.set_num_threads(args.workers)
    net, info = bench_model(args.model)
    net.eval()
    obs = example_observation().isel(time=0).stack(pixel=("y", "x")).transpose("pixel", ...)
    pix = pick_pixels(args.per_kind)
    y, _ = network_input(obs.isel(pixel=pix), net)
    precision = select_precision(net, y[:32], samples=1024) if args.precision == "auto" else args.precision
    out = {"benchmark": "maps_at_accuracy", "machine": machine(), "model": info, "pixels": int(y.shape[0]),
           "reference_draws": args.reference, "repeats": args.repeats, "precision": precision,
           "quantiles": list(DEFAULT_QUANTILES)}

    t0 = time.perf_counter()
    ref = quantile_maps(net, y, args.reference, "plain", 10**6, "fp32")
    log(f"reference: {y.shape[0]} pixels x {args.reference} draws in {time.perf_counter() - t0:.0f} s")
    bar = errors([quantile_maps(net, y, 1024, "plain", s, precision) for s in range(args.repeats)], ref)
    table, best = {}, {}
    for method, counts in CANDIDATES.items():
        for n in counts:
            e = bar if (method, n) == ("plain", 1024) else errors(
                [quantile_maps(net, y, n, method, s, precision) for s in range(args.repeats)], ref)
            ratio = e / bar
            table[f"{method} {n}"] = {"worst_ratio": round(float(ratio.max()), 3),
                                      "mean_ratio": round(float(ratio.mean()), 3),
                                      "errors": {v: np.round(e[k], 4).tolist() for k, v in enumerate(VARS)}}
            log(f"{method:6s} {n:5d}: error / plain-1024 worst {ratio.max():.3f}, mean {ratio.mean():.3f}")
            if ratio.max() <= 1.0 and method not in best:
                best[method] = n
    out["accuracy"] = table
    out["bar_errors_plain_1024"] = {v: np.round(bar[k], 4).tolist() for k, v in enumerate(VARS)}
    out["cheapest_matching"] = best

    scan = tiled_example_scan(args.time_size)
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mpath = model_file(net, info, tmp)
        with engine_client(args.workers, 1, mpath) as client:
            engine_rate(scan.isel(y=slice(0, 16)), tmp, mpath, client, 64, "sobol", precision, "warm")
            runs = [("plain", 1024)] + [(m, n) for m, n in best.items() if (m, n) != ("plain", 1024)]
            for rep in range(2):
                for m, n in runs:
                    r = engine_rate(scan, tmp, mpath, client, n, m, precision, f"{m}-{n}-{rep}")
                    rates.setdefault(f"{m} {n}", []).append(r)
                    log(f"engine {m} {n} (run {rep + 1}): {r:.1f} pixels/s")
    mean = {k: float(np.mean(v)) for k, v in rates.items()}
    base = mean["plain 1024"]
    winner = max(mean, key=mean.get)
    out["engine_pixels_per_s"] = {k: [round(r, 2) for r in v] for k, v in rates.items()}
    out["time_scan_pixels"] = args.time_size**2
    out["winner"] = winner
    out["speedup_at_equal_accuracy"] = round(mean[winner] / base, 3)
    out["frame_1k_minutes"] = round(1024**2 / mean[winner] / 60, 1)
    out["frame_1k_minutes_plain_1024"] = round(1024**2 / base / 60, 1)
    emit(out)


if __name__ == "__main__":
    main()
