"""How coarse can the radiative-transfer depth grid be without changing the profiles?

Synthesises ``--n`` prior draws on depth grids of several sizes and compares each with a
fine reference grid: the largest relative intensity difference per line, the difference of
the core/wing ratio, and of the node-grid log ne. Prints JSON.

    python benchmarks/depth_grid.py --n 6 --sizes 60 90 130 200 --reference 320
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from radynversion.lines import LINES
from radynversion.synth import NLTEConfig, sample_atmosphere, synthesise


def _core_wing(line, I):
    c = int(np.argmin(np.abs(line.synth_wavelengths() - line.center_air_A)))
    return I[c] / (0.5 * (I[0] + I[-1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--sizes", type=int, nargs="+", default=[60, 90, 130, 200])
    p.add_argument("--reference", type=int, default=320)
    args = p.parse_args()
    rows = {s: [] for s in args.sizes}
    skipped = 0
    for i in range(args.n):
        atmos = sample_atmosphere(i, args.seed)
        ref = synthesise(atmos, NLTEConfig(depth_points=args.reference))
        if ref.status != 0:
            skipped += 1
            continue
        for s in args.sizes:
            r = synthesise(atmos, NLTEConfig(depth_points=s))
            if r.status != 0:
                rows[s].append(None)
                continue
            rows[s].append({
                "kind": atmos.kind,
                "seconds": r.seconds,
                **{f"max_rel_dI_{ln.key}": float(np.max(np.abs(r.intensity[ln.key] / ref.intensity[ln.key] - 1)))
                   for ln in LINES},
                **{f"d_core_wing_{ln.key}": float(abs(_core_wing(ln, r.intensity[ln.key]) - _core_wing(ln, ref.intensity[ln.key])))
                   for ln in LINES},
                "max_d_log_ne_below_3.5Mm": float(np.nanmax(np.abs(r.log_ne - ref.log_ne)[:45])),
            })
    summary = {"benchmark": "depth_grid", "atmospheres": args.n, "reference_points": args.reference,
               "reference_not_converged": skipped, "sizes": {}}
    for s, rs in rows.items():
        ok = [r for r in rs if r is not None]
        if not ok:
            continue
        keys = [k for k in ok[0] if k not in ("kind",)]
        summary["sizes"][s] = {
            "not_converged": len(rs) - len(ok),
            **{f"{k}_median": round(float(np.median([r[k] for r in ok])), 4) for k in keys},
            **{f"{k}_max": round(float(np.max([r[k] for r in ok])), 4) for k in keys if k != "seconds"},
        }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
