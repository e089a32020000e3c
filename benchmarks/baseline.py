"""The engine against the per-pixel loop users have today, on the example scan, in one run.

**Baseline**: a loop in the style of the original Radynversion ``inversion()`` (Osborne,
Armstrong & Fletcher 2019): one pixel at a time, ``--samples`` latent draws in one batch
through the reverse network, the round trip ``forward(sample)`` for every draw, the samples
copied to the host and reduced with :func:`numpy.quantile`; same model, same outputs
(quantiles of ``log_ne``, ``log_T``, ``v`` and the round-trip misfit). In one process with
torch on 1 thread and on all cores (the faster setting is the baseline: the comparison
does not rest on a badly threaded baseline). Favourable to the baseline: the profiles are
preprocessed for all pixels at once (timed, included) and nothing is written to disk. The
draws of a pixel are the engine's (same seeds), so the quantiles must agree; the check is
reported (``quantiles_max_abs_diff``).

**Engine**: ``open_observation`` of the example scan's FITS files -> ``invert_to_zarr`` on a warm
LocalCluster (``--workers`` x 1 thread), default settings (misfit on the first 64 draws of
each pixel).

The loop runs in fp32, the original's arithmetic (``speedup``), and, on devices with a faster
precision that ``precision="auto"`` may pick (bf16 on CUDA and on CPUs with AMX or AVX-512 BF16), in that one
too (``loop_by_precision``, ``speedup_vs_loop_in_engine_precision``): the second ratio is what
the engine adds beyond the arithmetic.

``speedup`` = engine pixels/s / baseline pixels/s (goal >= 3). The baseline is timed in two
halves, before and after the engine run, so a change of the machine's load biases neither side.
``speedup_cpu_time`` compares CPU seconds per pixel (the engine's worker processes, all their
threads, against the baseline process): it does not depend on how much of the cores other
jobs leave. ``speedup_vs_torch_default_threads``: against the loop as users run it, with
torch's default thread count (all cores).

    python benchmarks/baseline.py --quick    # engine: first 2 rows (128 pixels); baseline: 16 of them, extrapolated
    python benchmarks/baseline.py            # engine and baseline on all 64 x 64 pixels

Prints one JSON object (the last line of stdout).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from _common import (
    bench_model,
    cluster_pids,
    device_choice,
    emit,
    engine_client,
    example_profiles,
    log,
    machine,
    model_file,
    process_cpu_seconds,
)

from radynversion.datasets import example_scan
from radynversion.engine import invert_to_zarr
from radynversion.io import open_observation
from radynversion.model import DEFAULT_QUANTILES, normalise_profiles
from radynversion.model.posterior import pixel_seeds, precision_context
from radynversion.model.precision import reduced_precisions
from radynversion.model.preprocess import sample_dims


def baseline_pixel(net, y: np.ndarray, seed: int, samples: int, quantiles: np.ndarray,
                   gen: torch.Generator, precision: str = "fp32") -> tuple[np.ndarray, float]:
    """One pixel, the original way: quantiles ``(Q, 150)`` (v in km/s) and the misfit (RMS of
    the round trip over all draws)."""
    n_h = net.height_Mm.numel()
    with torch.inference_mode(), precision_context(precision, net.device):
        gen.manual_seed(seed)
        z = torch.randn(samples, net.n_z, generator=gen, device=net.device)
        y_rep = torch.as_tensor(y, device=net.device).expand(samples, -1)
        atm = net.sample(net.condition(y_rep), z).float()
        y_fwd = net.emulate(atm).float()
        misfit = float(((y_fwd - y_rep) ** 2).mean(dim=1).sqrt().mean())
    s = atm.double().cpu().numpy()
    v = s[:, 2 * n_h:]
    s[:, 2 * n_h:] = np.sign(v) * (np.power(10.0, np.abs(v)) - 1.0)
    return np.quantile(s, quantiles, axis=0), misfit


def run_baseline(net, y: np.ndarray, pixels: np.ndarray, samples: int, quantiles: np.ndarray,
                 threads: int, precision: str = "fp32") -> tuple[float, float, dict[int, tuple[np.ndarray, float]]]:
    """Wall seconds and CPU seconds (this process) for ``pixels`` (flat indices) one at a time
    on ``threads`` torch threads in ``precision``, and their outputs."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    gen = torch.Generator(device=net.device)
    seeds = pixel_seeds(0, pixels)
    try:
        baseline_pixel(net, y[pixels[0]], int(seeds[0]), samples, quantiles, gen, precision)  # warm-up
        out = {}
        t0, c0 = time.perf_counter(), time.process_time()
        for i, s in zip(pixels, seeds, strict=True):
            out[int(i)] = baseline_pixel(net, y[i], int(s), samples, quantiles, gen, precision)
        return time.perf_counter() - t0, time.process_time() - c0, out
    finally:
        torch.set_num_threads(before)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="checkpoint (default: the packaged model, else an untrained one)")
    p.add_argument("--device", type=device_choice, default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--quick", action="store_true",
                   help="engine on the first 2 rows; baseline on 16 of those pixels, extrapolated")
    p.add_argument("--samples", type=int, default=1024, help="draws per pixel (default 1024)")
    p.add_argument("--rows", type=int, help="scan rows the engine inverts (default all 64; quick 2)")
    p.add_argument("--baseline-pixels", dest="baseline_pixels", type=int,
                   help="pixels the baseline times (default all the engine's; quick 16), extrapolated")
    p.add_argument("--misfit-samples", dest="misfit_samples", type=int, default=64,
                   help="the engine's round-trip draws per pixel (default 64; 0 = every draw, as the baseline)")
    p.add_argument("--workers", type=int, help="engine workers (default: one per core on CPU, 1 on CUDA)")
    p.add_argument("--chunk-rows", dest="chunk_rows", type=int, default=1, help="rows (y) per engine chunk")
    p.add_argument("--precision", choices=["auto", "fp32", "tf32", "bf16"], default="auto",
                   help="the engine's arithmetic (default auto, as radynversion invert)")
    p.add_argument("--compile", action="store_true",
                   help="the engine's passes through torch.compile (as radynversion invert --compile; "
                        "the compilation is inside the engine's time)")
    args = p.parse_args()
    cuda = args.device.startswith("cuda")
    workers = args.workers or (1 if cuda else (os.cpu_count() or 1))
    rows = args.rows or (2 if args.quick else 64)
    q = np.asarray(DEFAULT_QUANTILES)
    net, info = bench_model(args.model, args.device)
    out: dict = {"benchmark": "baseline", "quick": bool(args.quick), "machine": machine(args.device),
                 "device": args.device, **info, "samples": args.samples, "quantiles": q.tolist()}

    # -- preprocessing, once for all pixels (the baseline's share is timed)
    t0 = time.perf_counter()
    scan = example_profiles()
    dims = sample_dims(scan)
    shape = tuple(int(scan.sizes[d]) for d in dims)
    y_all, _ = normalise_profiles(scan, unit=net.config.intensity_unit, fwhm_A=net.instrument_fwhm_A())
    prep_s = time.perf_counter() - t0
    n_total = int(np.prod(shape))
    y_idx = dims.index("y")
    n_engine = n_total * rows // shape[y_idx]
    # the engine inverts the first `rows` rows: flat indices 0 .. n_engine - 1 (y follows time)
    in_rows = np.arange(n_engine)
    valid = np.flatnonzero(np.isfinite(y_all[in_rows]).all(axis=1))
    n_base = args.baseline_pixels or (16 if args.quick else valid.size)
    pick = valid[np.linspace(0, valid.size - 1, min(n_base, valid.size)).round().astype(int)]
    halves = (pick[0::2], pick[1::2])
    cores = os.cpu_count() or 1

    # -- the loop in fp32 (the original's arithmetic) and, where the device has one, in the
    # faster precision the engine may pick (bf16 on CUDA and on CPUs with AMX or AVX-512 BF16)
    loop_precs = ["fp32"] + [pr for pr in reduced_precisions(args.device) if pr == "bf16"]
    probe = pick[: min(2 if args.quick else 4, pick.size)]
    loops: dict[str, dict] = {}
    for lp in loop_precs:  # threads: the faster of 1 and all cores, on a few pixels
        t_by_threads = {}
        for t in sorted({1, cores}):
            secs, _, _ = run_baseline(net, y_all, probe, args.samples, q, t, lp)
            t_by_threads[t] = secs / probe.size
        threads = min(t_by_threads, key=lambda t: t_by_threads[t])
        log(f"baseline {lp}: {threads} thread(s) (s/pixel {t_by_threads})")
        secs, cpu, res_out = run_baseline(net, y_all, halves[0], args.samples, q, threads, lp)
        loops[lp] = {"threads": threads, "by_threads": t_by_threads, "secs": secs, "cpu": cpu, "out": res_out}

    # -- engine
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mpath = model_file(net, info, tmp)
        with engine_client(workers, 1, mpath, args.device) as client:
            worker_pids = cluster_pids(client)[1:]
            ds = open_observation(example_scan(), chunks={"y": args.chunk_rows}).isel(y=slice(0, rows))
            log(f"engine: {n_engine} pixels x {args.samples} samples on {workers} worker(s)")
            cpu0 = process_cpu_seconds(worker_pids)
            t1 = time.perf_counter()
            stats = invert_to_zarr(ds, tmp / "out.zarr", model=mpath, samples=args.samples, sampling="plain",
                                   chunks={"y": args.chunk_rows, "x": -1}, client=client, progress=False,
                                   misfit_samples=args.misfit_samples or None, device=args.device,
                                   precision=args.precision, compile=args.compile)
            engine_s = time.perf_counter() - t1
            engine_cpu = process_cpu_seconds(worker_pids) - cpu0
        assert stats["complete"], stats
        res = xr.open_zarr(tmp / "out.zarr").load()
    engine_prec = str(res.attrs.get("precision", args.precision))
    for lp in reversed(loop_precs):
        secs, cpu, more = run_baseline(net, y_all, halves[1], args.samples, q, loops[lp]["threads"], lp)
        loops[lp]["secs"] += secs
        loops[lp]["cpu"] += cpu
        loops[lp]["out"].update(more)

    # -- the same outputs? (against the loop in the engine's precision where it was timed)
    eng_q = np.stack([res[v].transpose(*dims, "quantile", "height").values for v in ("log_ne", "log_T", "v")],
                     axis=-2).reshape(-1, q.size, 3 * net.height_Mm.numel())
    eng_m = res["misfit"].transpose(*dims).values.reshape(-1)
    ref_out = loops.get(engine_prec, loops["fp32"])["out"]
    diff = max(float(np.max(np.abs(eng_q[i] - ref_out[i][0]))) for i in ref_out)
    mis_rel = [abs(float(eng_m[i]) / ref_out[i][1] - 1.0) for i in ref_out if ref_out[i][1] > 0]

    engine_rate = n_engine / engine_s
    default_threads = torch.get_num_threads()
    by_prec = {}
    for lp, lo in loops.items():
        n_timed = len(lo["out"])
        per_pixel = lo["secs"] / n_timed
        base_rate = n_engine / (prep_s + per_pixel * n_engine)  # for the engine's pixels
        tbt = lo["by_threads"]
        by_prec[lp] = {
            "threads": lo["threads"],
            "seconds_per_pixel_by_threads": {str(k): round(v, 4) for k, v in tbt.items()},
            "seconds_per_pixel": round(per_pixel, 4),
            "pixels_per_s": round(base_rate, 2),
            "cpu_seconds_per_pixel": round(lo["cpu"] / n_timed, 4),
            "speedup": round(engine_rate / base_rate, 2),
            "speedup_cpu_time": round(lo["cpu"] / n_timed / (engine_cpu / n_engine), 2),
            "speedup_vs_torch_default_threads": round(
                engine_rate / (n_engine / (prep_s + tbt[max(tbt)] * n_engine)), 2)
            if default_threads == max(tbt) else None,
        }
    head = by_prec["fp32"]
    n_timed = len(loops["fp32"]["out"])
    out.update({
        "pixels": n_engine,
        "baseline_precision": "fp32",
        "baseline_threads": head["threads"],
        "speedup_vs_torch_default_threads": head["speedup_vs_torch_default_threads"],
        "baseline_seconds_per_pixel_by_threads": head["seconds_per_pixel_by_threads"],
        "baseline_pixels_timed": n_timed,
        "baseline_extrapolated": n_timed < n_engine,
        "baseline_seconds_per_pixel": head["seconds_per_pixel"],
        "baseline_preprocess_s": round(prep_s, 3),
        "baseline_seconds": round(n_engine / head["pixels_per_s"], 2),
        "baseline_pixels_per_s": head["pixels_per_s"],
        "engine_workers": workers,
        "engine_precision": engine_prec,
        "engine_compiled": bool(args.compile),
        "engine_misfit_samples": min(args.samples, args.misfit_samples or args.samples),
        "engine_seconds": round(engine_s, 2),
        "engine_pixels_per_s": round(engine_rate, 2),
        "speedup": head["speedup"],
        "baseline_cpu_seconds_per_pixel": head["cpu_seconds_per_pixel"],
        "engine_worker_cpu_seconds_per_pixel": round(engine_cpu / n_engine, 4),
        "speedup_cpu_time": head["speedup_cpu_time"],
        "loop_by_precision": by_prec,
        "speedup_vs_loop_in_engine_precision": by_prec.get(engine_prec, head)["speedup"],
        "goal": "speedup >= 3 (against the loop in the original's fp32)",
        "goal_met": bool(head["speedup"] >= 3),
        "quantiles_compared_with_loop_in": engine_prec if engine_prec in loops else "fp32",
        "quantiles_max_abs_diff": diff,
        "misfit_max_rel_diff": round(max(mis_rel), 4) if mis_rel else None,
        "note": ("baseline = per-pixel loop (reverse + round trip of every draw, numpy quantiles), profiles "
                 "preprocessed at once and nothing written, in fp32 as the original and (loop_by_precision) "
                 "in the engine's faster precision where the device has one; "
                 + (f"timed on {n_timed} of the {n_engine} pixels and extrapolated; " if n_timed < n_engine
                    else "") + "engine = FITS -> Zarr end to end, precision 'auto' unless --precision; same "
                 "draws, so the quantiles agree (quantiles_max_abs_diff, dex or km/s: 0 in fp32, the "
                 "arithmetic's rounding in bf16, where a pass's rows differ); the misfits differ where the "
                 "engine averages fewer draws"),
    })
    emit(out)


if __name__ == "__main__":
    main()
