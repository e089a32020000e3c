"""End-to-end rate of the engine against the bare batched model, measured in one run.

Writes a synthetic scan (``--ny`` x ``--nx`` pixels in the profile schema, netCDF) to disk,
then times

* **bare**: the batched posterior core (:func:`radynversion.model.posterior.posterior`, after
  :func:`radynversion.model.normalise_profiles`) on the same pixels and samples, in this
  process, with torch using all ``workers x threads`` threads (the profiles already in
  memory: no I/O);
* **engine**: ``radynversion invert``'s path (:func:`radynversion.io.open_observation` +
  :func:`radynversion.engine.invert_to_zarr`) from the netCDF file on disk to a Zarr store on
  disk, on a LocalCluster of ``workers x threads`` (started, and the model loaded on every
  worker, before the clock starts; the start-up is reported separately).

The bare core runs before and after the engine and its two rates are averaged, so that
a change in the machine's load during the run biases neither side. Prints one JSON object (the last
line of stdout), including ``ratio`` = engine rate / bare rate (1.0 = no overhead; the target is >= 0.85).

    python benchmarks/engine.py                  # quick: 16 x 32 pixels, 32 samples
    python benchmarks/engine.py --ny 64 --nx 64 --samples 256 --batch-size 8192

Keep ``chunk pixels`` a multiple of ``batch_size // samples`` (pixels per pass): a pass always
has its full padded shape, so a chunk that fills a pass partly wastes the rest.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import emit, synthetic_scan

from radynversion.engine import invert_to_zarr
from radynversion.engine.cluster import local_cluster
from radynversion.engine.core import ensure_plugin
from radynversion.engine.workers import model_spec
from radynversion.io import open_observation
from radynversion.lines import LINES
from radynversion.model import ModelConfig, RadynversionINN, normalise_profiles, posterior, save_checkpoint


def bare_rate(net: RadynversionINN, ds, samples: int, batch_size: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    y, _ = normalise_profiles(ds, unit=net.config.intensity_unit, fwhm_A=net.instrument_fwhm_A())
    res = posterior(net, y, np.arange(y.shape[0]), samples=samples, batch_size=batch_size)
    secs = time.perf_counter() - t0
    assert np.isfinite(res.quantiles).all()
    return {"seconds": round(secs, 3), "pixels_per_second": y.shape[0] / secs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the defaults (for make bench)")
    p.add_argument("--ny", type=int, default=16)
    p.add_argument("--nx", type=int, default=32)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--chunk-rows", dest="chunk_rows", type=int, default=4, help="rows (y) per chunk")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=4096,
                   help="rows per pass (default 4096: one chunk of 4 x 32 pixels x 32 samples)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--threads", type=int, default=1, help="threads per worker")
    p.add_argument("--model", choices=["default", "tiny"], default="default",
                   help="random network of the default architecture, or a tiny one")
    args = p.parse_args()
    total_threads = args.workers * args.threads
    cfg = ModelConfig() if args.model == "default" else ModelConfig(n_blocks=2, subnet_hidden=32, subnet_layers=1)
    net = RadynversionINN(cfg, fwhm_A={ln.key: ln.crisp_fwhm_A for ln in LINES}).eval()
    out: dict = {"benchmark": "engine", "cores": os.cpu_count(), "workers": args.workers,
                 "threads_per_worker": args.threads, "pixels": args.ny * args.nx, "samples": args.samples,
                 "batch_size": args.batch_size, "chunk": [args.chunk_rows, args.nx], "model": args.model}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_path = save_checkpoint(tmp / "model.pt", net)
        scan = synthetic_scan(args.ny, args.nx)
        scan.to_netcdf(tmp / "scan.nc", encoding={
            ln.var: {"chunksizes": (args.chunk_rows, args.nx, scan.sizes[ln.dim])} for ln in LINES})
        in_memory = scan.load()
        first = bare_rate(net, in_memory, args.samples, args.batch_size, total_threads)

        t0 = time.perf_counter()
        with local_cluster(args.workers, args.threads) as cluster:
            from distributed import Client

            with Client(cluster, set_as_default=False) as client:
                ensure_plugin(client, model_spec(model_path)[0])  # workers up, model loaded
                out["engine_startup_s"] = round(time.perf_counter() - t0, 3)
                t1 = time.perf_counter()
                ds = open_observation(tmp / "scan.nc", chunks={"y": args.chunk_rows})
                stats = invert_to_zarr(ds, tmp / "out.zarr", model=model_path, samples=args.samples, sampling="plain",
                                       batch_size=args.batch_size, chunks={"y": args.chunk_rows, "x": -1},
                                       client=client, progress=False)
                engine_s = time.perf_counter() - t1
        assert stats["complete"]
        second = bare_rate(net, in_memory, args.samples, args.batch_size, total_threads)

    bare = 0.5 * (first["pixels_per_second"] + second["pixels_per_second"])
    engine = args.ny * args.nx / engine_s
    out.update({
        "bare_seconds": [first["seconds"], second["seconds"]],
        "bare_pixels_per_s": round(bare, 3),
        "engine_seconds": round(engine_s, 3),
        "engine_pixels_per_s": round(engine, 3),
        "engine_chunks": stats["chunks"],
        "ratio": round(engine / bare, 3),
        "within_15_percent": bool(engine / bare >= 0.85),
        "note": "bare = posterior core in one process with torch on workers x threads threads, profiles "
                "in memory; engine = netCDF on disk -> Zarr on disk on a warm LocalCluster",
    })
    emit(out)


if __name__ == "__main__":
    main()
