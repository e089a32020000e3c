"""Cost of the training-set factory: atmospheres per core-second and converged fraction.

Runs ``radynversion synth``'s engine (``run_synthesis``) on a fresh LocalCluster for ``--n``
prior draws and prints a JSON summary. With ``--log`` it also summarises the per-atmosphere
log of a production run (``radynversion synth --log``).

    python benchmarks/synth.py --n 8 --workers 2
    python benchmarks/synth.py --quick
    python benchmarks/synth.py --log synth_log.txt --n 0
    python benchmarks/synth.py --cpu-time --n 6     # CPU seconds per atmosphere, robust to load
    python benchmarks/synth.py --cpu-time --n 24 --generator noneq --ng   # another generator

``--cpu-time`` runs the atmospheres in this process and counts process CPU time, which a busy
machine does not inflate (unlike wall time): the figure to quote as "seconds per atmosphere
per core". Prints one JSON object (the last line of stdout).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import emit

from radynversion.synth.factory import SynthConfig, run_synthesis
from radynversion.synth.nlte import NLTEConfig


def summarise_log(path: Path) -> dict:
    rows = [ln.split(maxsplit=4) for ln in path.read_text().splitlines() if ln.strip()]
    status = np.array([int(r[1]) for r in rows])
    iters = np.array([int(r[2]) for r in rows])
    secs = np.array([float(r[3]) for r in rows])
    return {
        "log": str(path),
        "atmospheres": int(status.size),
        "converged_fraction": float(np.mean(status == 0)),
        "not_converged": int(np.sum(status == 1)),
        "failed": int(np.sum(status == 2)),
        "seconds_per_atmosphere_median": float(np.median(secs)),
        "seconds_per_atmosphere_mean": float(np.mean(secs)),
        "seconds_range": [float(secs.min()), float(secs.max())],
        "iterations_median": float(np.median(iters)),
        "note": "per-task wall seconds of a production run (other work may have shared the cores)",
    }


def cpu_time_run(n: int, seed: int, depth_points: int, generator: str = "prior", ng: bool = False) -> dict:
    from radynversion.synth import sample_atmosphere, synthesise
    from radynversion.synth.factory import draw_and_solve

    ng_opts = {"ng_order": 2, "ng_period": 5, "ng_delay": 30} if ng else {}
    cfg = SynthConfig(seed=seed, generator=generator, nlte=NLTEConfig(depth_points=depth_points, **ng_opts))
    synthesise(sample_atmosphere(0, seed), NLTEConfig(depth_points=20))  # warm-up: imports, atoms
    cpu, status = [], []
    for i in range(n):
        t0 = time.process_time()
        _, r = draw_and_solve(i, cfg)  # the draw and every solve it needs (noneq: two)
        cpu.append(time.process_time() - t0)
        status.append(r.status)
    cpu_a, st = np.array(cpu), np.array(status)
    return {
        "atmospheres": n,
        "generator": generator,
        "ng_acceleration": ng,
        "depth_points": depth_points,
        "cpu_seconds_per_atmosphere_mean": round(float(cpu_a.mean()), 2),
        "cpu_seconds_per_atmosphere_median": round(float(np.median(cpu_a)), 2),
        "cpu_seconds_range": [round(float(cpu_a.min()), 2), round(float(cpu_a.max()), 2)],
        "atmospheres_per_core_second": round(float(n / cpu_a.sum()), 4),
        "converged_fraction": float(np.mean(st == 0)),
        "core_hours_per_10000": round(10000 * float(cpu_a.mean()) / 3600, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8, help="atmospheres to synthesise")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--depth-points", type=int, default=NLTEConfig().depth_points)
    p.add_argument("--quick", action="store_true", help="4 atmospheres")
    p.add_argument("--log", type=Path, help="also summarise a production log")
    p.add_argument("--cpu-time", dest="cpu_time", action="store_true",
                   help="in-process run measuring CPU seconds per atmosphere")
    p.add_argument("--generator", default="prior", help="with --cpu-time: prior, smooth or noneq")
    p.add_argument("--ng", action="store_true", help="with --cpu-time: Ng acceleration (order 2, period 5, delay 30)")
    args = p.parse_args()
    n = 4 if args.quick else args.n
    out: dict = {"benchmark": "synth", "cores": os.cpu_count(), "workers": args.workers}
    if args.cpu_time and n > 0:
        out["cpu_time"] = cpu_time_run(n, args.seed, args.depth_points, args.generator, args.ng)
    elif n > 0:
        cfg = SynthConfig(n=n, seed=args.seed, shard_size=n, nlte=NLTEConfig(depth_points=args.depth_points))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            stats = run_synthesis(Path(tmp) / "bench.zarr", cfg, workers=args.workers, progress=False)
            wall = time.perf_counter() - t0
        done = stats["converged"] + stats["not_converged"] + stats["failed"]
        out.update({
            "atmospheres": done,
            "depth_points": args.depth_points,
            "wall_s": round(wall, 2),
            "atmospheres_per_core_second": round(done / (wall * args.workers), 4),
            "seconds_per_atmosphere_per_core": round(wall * args.workers / done, 2),
            "task_seconds_mean": round(stats["seconds"] / done, 2),
            "converged_fraction": stats["converged"] / done,
            "core_hours_per_10000": round(10000 * wall * args.workers / done / 3600, 1),
        })
    if args.log:
        out["production"] = summarise_log(args.log)
    emit(out)


if __name__ == "__main__":
    main()
