"""How the engine scales: 1 vs 2 workers, and scan size at fixed chunks (time and memory).

* **Workers**: the example scan tiled to ``--workers-size`` (default 128^2) pixels, inverted
  on a fresh LocalCluster of 1 and of 2 workers (1 thread each); goal: 2 workers >= 1.7x one.
  The machine's own scaling is measured on the same clusters (``torch.mm`` of the model's
  hidden-layer shape on 1 worker, then on 2 at once), because on a shared machine the second
  worker gets only what the other jobs leave: ``machine_scaling`` bounds ``speedup``.
* **Size**: the example scan tiled to 64^2, 128^2 and 256^2 pixels (``--sizes``), written to
  Zarr on disk in chunks of ``--chunk`` x ``--chunk`` pixels and inverted from there into a
  Zarr store with the same chunks, smallest first on the warm 2-worker cluster; the time is
  fitted as ``fixed + per_pixel x pixels`` and the marginal cost per pixel should not change
  (linear time); the peak resident memory, sampled every 50 ms with psutil and summed over
  the worker processes and this process (client, scheduler, nannies), should stay flat (goal:
  256^2 peak within 1.2x of 64^2).

    python benchmarks/scaling.py --quick       # 2 samples per pixel
    python benchmarks/scaling.py               # 16 samples per pixel

Prints one JSON object (the last line of stdout).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import (
    RSSSampler,
    bench_model,
    cluster_pids,
    device_choice,
    emit,
    engine_client,
    layer_shape,
    log,
    machine,
    model_file,
    tiled_example_scan,
    worker_matmul_rates,
)

from radynversion.engine import invert_to_zarr
from radynversion.io import open_observation
from radynversion.lines import LINES


def write_scan(size: int, chunk: int, folder: Path) -> Path:
    """The tiled example scan of ``size`` x ``size`` pixels as a Zarr store chunked like the
    engine's chunks (every task reads only its own region)."""
    ds = tiled_example_scan(size)
    path = folder / f"scan-{size}.zarr"
    enc = {ln.var: {"chunks": (chunk, chunk, ds.sizes[ln.dim])} for ln in LINES}
    ds.to_zarr(path, mode="w", encoding=enc, zarr_format=2, consolidated=True)
    return path


def run(client, path: Path, out: Path, model: Path, chunk: int, samples: int, device: str) -> dict:
    """One inversion of the scan at ``path`` on ``client``'s cluster: seconds and peak memory."""
    ds = open_observation(path, chunks={"y": chunk, "x": chunk})
    n_pix = int(np.prod([ds.sizes[d] for d in ("y", "x")]))
    with RSSSampler(cluster_pids(client)) as rss:
        t0 = time.perf_counter()
        stats = invert_to_zarr(ds, out, model=model, samples=samples, sampling="plain", chunks={"y": chunk, "x": chunk},
                               client=client, progress=False, device=device)
        secs = time.perf_counter() - t0
    assert stats["complete"], stats
    return {"pixels": n_pix, "chunks": stats["chunks"], "seconds": round(secs, 2),
            "pixels_per_s": round(n_pix / secs, 2), "us_per_pixel_sample": round(1e6 * secs / (n_pix * samples), 2),
            "rss_start_mb": round(rss.start / 2**20, 1), "rss_peak_mb": round(rss.peak / 2**20, 1),
            "rss_samples": rss.samples}


def linearity(runs: list[dict]) -> dict:
    """Fit ``seconds = fixed + per_pixel * pixels``; the marginal cost per pixel between
    consecutive sizes should not change (linear time)."""
    n = np.array([r["pixels"] for r in runs], dtype=float)
    t = np.array([r["seconds"] for r in runs], dtype=float)
    per_pixel, fixed = np.polyfit(n, t, 1)
    marginal = np.diff(t) / np.diff(n)
    return {"fixed_s": round(float(fixed), 2), "ms_per_pixel": round(1e3 * float(per_pixel), 4),
            "marginal_ms_per_pixel": [round(1e3 * float(m), 4) for m in marginal],
            "marginal_ratio_last_vs_first": round(float(marginal[-1] / marginal[0]), 3) if marginal.size > 1 else 1.0,
            "max_fit_residual_pct": round(float(np.max(np.abs(t - (fixed + per_pixel * n)) / t) * 100), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="checkpoint (default: the packaged model, else an untrained one)")
    p.add_argument("--device", type=device_choice, default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--quick", action="store_true", help="2 samples per pixel")
    p.add_argument("--samples", type=int, help="draws per pixel (default 16; quick 2)")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], help="scan sizes (pixels per side)")
    p.add_argument("--chunk", type=int, default=32, help="chunk side (pixels); chunks are chunk x chunk")
    p.add_argument("--workers-size", dest="workers_size", type=int, default=128,
                   help="scan size of the 1 vs 2 workers comparison (default 128)")
    p.add_argument("--matmul-seconds", dest="matmul_seconds", type=float, default=2.0)
    args = p.parse_args()
    samples = args.samples or (2 if args.quick else 16)
    wsize = args.workers_size
    sizes_sorted = sorted(args.sizes)
    net, info = bench_model(args.model, "cpu")
    layer = layer_shape(net)
    out: dict = {"benchmark": "scaling", "quick": bool(args.quick), "machine": machine(args.device),
                 "device": args.device, **info, "samples": samples, "chunk": [args.chunk, args.chunk]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mpath = model_file(net, info, tmp)
        paths = {s: write_scan(s, args.chunk, tmp) for s in sorted(set(sizes_sorted) | {wsize})}
        by_workers: dict[int, dict] = {}
        sizes: list[dict] = []
        for w in (1, 2):
            with engine_client(w, 1, mpath, args.device) as client:
                mm = worker_matmul_rates(client, layer, args.matmul_seconds, args.device)
                log(f"workers: {w} on {wsize}^2")
                by_workers[w] = {"workers": w, "matmul_gflops": round(mm["sustained"] / 1e9, 2),
                                 **run(client, paths[wsize], tmp / f"w{w}.zarr", mpath, args.chunk, samples,
                                       args.device)}
                if w == 2:  # scan sizes at fixed chunks, smallest first, on the same (warm) cluster
                    for s in sizes_sorted:
                        log(f"size: {s}^2 on 2 workers")
                        sizes.append({"size": s, **run(client, paths[s], tmp / f"s{s}.zarr", mpath, args.chunk,
                                                       samples, args.device)})
    speedup = by_workers[2]["pixels_per_s"] / by_workers[1]["pixels_per_s"]
    machine_scaling = by_workers[2]["matmul_gflops"] / by_workers[1]["matmul_gflops"]
    out["workers"] = {
        "size": wsize, "runs": [by_workers[1], by_workers[2]],
        "speedup_2_vs_1": round(speedup, 3),
        "machine_scaling_2_vs_1": round(machine_scaling, 3),
        "speedup_vs_machine_scaling": round(speedup / machine_scaling, 3),
        "goal": "2 workers >= 1.7x one", "goal_met": bool(speedup >= 1.7),
    }
    lin = linearity(sizes)
    rss_ratio = sizes[-1]["rss_peak_mb"] / sizes[0]["rss_peak_mb"]
    out["sizes"] = {
        "runs": sizes, "time": lin,
        "rss_peak_ratio_largest_vs_smallest": round(rss_ratio, 3),
        "goal": "time linear in pixels (marginal cost per pixel within 0.8-1.25x); peak RSS of the largest "
                "scan within 1.2x of the smallest's",
        "goal_met": bool(rss_ratio <= 1.2 and 0.8 <= lin["marginal_ratio_last_vs_first"] <= 1.25),
    }
    out["goals_met"] = {"workers": out["workers"]["goal_met"], "sizes": out["sizes"]["goal_met"]}
    out["note"] = ("RSS = sum over the worker processes and this process (client, scheduler, nannies), sampled "
                   "every 50 ms; the sizes run smallest first on one warm 2-worker cluster (memory kept from a "
                   "run would show in the next); time = fixed + per-pixel cost (least squares); "
                   "machine_scaling_2_vs_1 = summed torch.mm rate of the 2 workers at once / 1 worker's, on "
                   "the same clusters")
    emit(out)


if __name__ == "__main__":
    main()
