"""Does Ng acceleration make the training-set synthesis cheaper without changing its profiles?

Synthesises ``--n`` prior draws three ways on one thread: as the shipped training set was
made (no acceleration), with Ng acceleration (``NLTEConfig.ng_order/ng_period/ng_delay``), and
with Ng acceleration to tolerances ``--tighten`` times smaller (the reference: closer to the
exact solution than either). Prints, per draw, iterations and CPU seconds, and the largest
difference of each solve's emergent intensity from the reference's (fraction of the line's
peak); then the CPU-time ratio of the two solves over the draws both converged, measured in
this one run. The last line is a JSON summary.

    python benchmarks/ng_acceleration.py --n 24     # order 2, period 5, delay 30

About 15 s per draw on one core (a draw that does not converge: up to a minute).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
from _common import emit, log, machine

from radynversion.synth import NLTEConfig, sample_atmosphere, synthesise


def _solve(atmos, cfg: NLTEConfig):  # noqa: ANN001, ANN202
    t = time.process_time()
    res = synthesise(atmos, cfg)
    return res, time.process_time() - t


def _max_diff(res, ref) -> float:  # noqa: ANN001
    return float(max(np.max(np.abs(res.intensity[k] - ref.intensity[k])) / ref.intensity[k].max()
                     for k in ref.intensity))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8, help="prior draws")
    p.add_argument("--seed", type=int, default=0, help="prior seed (0: the shipped set's first draws)")
    p.add_argument("--order", type=int, default=2)
    p.add_argument("--period", type=int, default=5)
    p.add_argument("--delay", type=int, default=30)
    p.add_argument("--tighten", type=float, default=20.0, help="reference tolerances = default / this")
    args = p.parse_args()
    plain_cfg = NLTEConfig(threads=1)
    ng_cfg = replace(plain_cfg, ng_order=args.order, ng_period=args.period, ng_delay=args.delay)
    ref_cfg = replace(ng_cfg, j_tol=plain_cfg.j_tol / args.tighten, pops_tol=plain_cfg.pops_tol / args.tighten,
                      max_iterations=1000, max_seconds=600.0)
    rows = []
    for i in range(args.n):
        atmos = sample_atmosphere(i, args.seed)
        (plain, t_plain), (ng, t_ng), (ref, _) = (_solve(atmos, c) for c in (plain_cfg, ng_cfg, ref_cfg))
        row = {"draw": i, "kind": atmos.kind, "status": [plain.status, ng.status, ref.status],
               "iterations": [plain.iterations, ng.iterations, ref.iterations],
               "cpu_s": [round(t_plain, 2), round(t_ng, 2)]}
        if ref.status == 0:
            row["max_dI_vs_reference"] = [_max_diff(r, ref) if r.status == 0 else None for r in (plain, ng)]
        if plain.status == ng.status == 0:
            row["max_dI_plain_vs_ng"] = _max_diff(plain, ng)
        rows.append(row)
        log(f"draw {i} ({atmos.kind}): iterations {row['iterations']} (plain / Ng / reference), CPU "
            f"{t_plain:.1f} / {t_ng:.1f} s, max |dI| / peak vs reference "
            f"{row.get('max_dI_vs_reference')}")
    both = [r for r in rows if r["status"][:2] == [0, 0]]
    cpu = np.array([r["cpu_s"] for r in both])
    it = np.array([r["iterations"][:2] for r in both])
    ref_d = np.array([r["max_dI_vs_reference"] for r in both if "max_dI_vs_reference" in r], dtype=float)
    emit({
        "benchmark": "ng_acceleration", "machine": machine(), "draws": args.n, "seed": args.seed,
        "ng": {"order": args.order, "period": args.period, "delay": args.delay},
        "converged": {"plain": sum(r["status"][0] == 0 for r in rows), "ng": sum(r["status"][1] == 0 for r in rows)},
        "cpu_ratio_plain_over_ng": round(float(cpu[:, 0].sum() / cpu[:, 1].sum()), 3) if both else None,
        "iteration_ratio_plain_over_ng": round(float(it[:, 0].sum() / it[:, 1].sum()), 3) if both else None,
        "max_dI_plain_vs_ng": max((r["max_dI_plain_vs_ng"] for r in both), default=None),
        "max_dI_vs_reference_plain_ng": ref_d.max(axis=0).tolist() if ref_d.size else None,
        "median_dI_vs_reference_plain_ng": np.median(ref_d, axis=0).tolist() if ref_d.size else None,
        "rows": rows,
    })


if __name__ == "__main__":
    main()
