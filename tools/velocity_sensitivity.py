"""Do the line profiles respond to the chromospheric velocity? Re-synthesis with Lightweaver.

For each chosen draw of the training-set prior (``radynversion.synth.prior.sample_atmosphere``
with the set's seed and prior), the atmosphere is synthesised as drawn and again with ``--dv``
km/s added to the velocity from ``--from-Mm`` up to the transition region (and, with
``--dense F``, once more with the prior's condensation layer F times denser). Printed per
draw and line: the RMS and largest change of the profile within the model window, in % of the
unperturbed window peak, and the shift of the core centroid (the wavelength-weighted absolute
departure from the window edges within 0.5 A), which a self-reversed flare profile can hide.

    .venv/bin/python tools/velocity_sensitivity.py --n 5            # the 5 fastest condensations
    .venv/bin/python tools/velocity_sensitivity.py --indices 12 345 --dv -20 --workers 2

Real NLTE runs: about 20 s per atmosphere per core.
"""

from __future__ import annotations

import argparse
import dataclasses
from multiprocessing import Pool

import numpy as np

from radynversion.config import load_toml
from radynversion.lines import LINES
from radynversion.synth.factory import SynthConfig
from radynversion.synth.nlte import synthesise
from radynversion.synth.prior import sample_atmosphere

TRAINING_SET_CONFIG = "data/prior.toml"


def _centroid(offset_A: np.ndarray, intensity: np.ndarray) -> float:
    core = np.abs(offset_A) < 0.5
    edge = 0.5 * (intensity[np.argmin(np.abs(offset_A + 1.0))] + intensity[np.argmin(np.abs(offset_A - 1.0))])
    w = np.abs(intensity[core] - edge)
    return float((w * offset_A[core]).sum() / w.sum())


def _variants(index: int, cfg: SynthConfig, dv: float, from_Mm: float, dense: float) -> dict:
    atm = sample_atmosphere(index, seed=cfg.seed, config=cfg.prior)
    z_tr = atm.params["z_tr_Mm"] * 1e6
    out = {"base": atm}
    v = atm.v_km_s.copy()
    v[(atm.z_m > from_Mm * 1e6) & (atm.z_m <= z_tr)] += dv
    out["dv"] = dataclasses.replace(atm, v_km_s=v)
    if dense > 0 and atm.params.get("v_condensation_kms"):
        n = atm.nHTot_m3.copy()
        d = atm.params["condensation_thickness_km"] * 1e3
        n[(atm.z_m <= z_tr) & (atm.z_m >= z_tr - d)] *= dense
        out["dense"] = dataclasses.replace(atm, nHTot_m3=n)
    return out


def _run(job: tuple) -> dict:
    index, cfg, dv, from_Mm, dense = job
    res = {"index": index}
    for name, atm in _variants(index, cfg, dv, from_Mm, dense).items():
        r = synthesise(atm, cfg.nlte)
        res[name] = r.intensity if r.status == 0 else None
        res["z_tr_Mm"] = atm.params["z_tr_Mm"]
        res["v_condensation_kms"] = atm.params.get("v_condensation_kms", 0.0)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=TRAINING_SET_CONFIG, help="synthesis config (seed, prior, NLTE)")
    p.add_argument("--indices", type=int, nargs="+", help="draw indices")
    p.add_argument("--n", type=int, default=5, help="without --indices: the n draws among the first "
                   "--pool with the fastest condensations")
    p.add_argument("--pool", type=int, default=1500)
    p.add_argument("--dv", type=float, default=20.0, help="added velocity [km/s, + = down]")
    p.add_argument("--from-Mm", dest="from_Mm", type=float, default=0.5)
    p.add_argument("--dense", type=float, default=10.0, help="condensation density factor (0: skip)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    cfg = load_toml(SynthConfig, args.config)
    idx = args.indices
    if not idx:
        speeds = [sample_atmosphere(i, seed=cfg.seed, config=cfg.prior).params.get("v_condensation_kms", 0.0)
                  for i in range(args.pool)]
        idx = [int(i) for i in np.argsort(speeds)[::-1][: args.n]]
    jobs = [(i, cfg, args.dv, args.from_Mm, args.dense) for i in idx]
    print(f"draws {idx}: +{args.dv:g} km/s from {args.from_Mm:g} Mm to the TR"
          + (f"; condensation x{args.dense:g} denser" if args.dense else ""))
    with Pool(args.workers) as pool:
        for res in pool.imap(_run, jobs):
            head = f"draw {res['index']} (TR {res['z_tr_Mm']:.2f} Mm, condensation {res['v_condensation_kms']:.0f} km/s)"
            if res["base"] is None:
                print(f"{head}: did not converge")
                continue
            for ln in LINES:
                wl = ln.synth_wavelengths()
                off = wl - ln.center_air_A
                win = np.abs(off) <= ln.model_halfwidth_A
                base = res["base"][ln.key]
                peak = base[win].max()
                parts = []
                for name in ("dv", "dense"):
                    if name not in res:
                        continue
                    if res[name] is None:
                        parts.append(f"{name}: did not converge")
                        continue
                    diff = res[name][ln.key][win] - base[win]
                    parts.append(f"{name}: RMS {100 * np.sqrt(np.mean(diff**2)) / peak:5.1f} %, max "
                                 f"{100 * np.abs(diff).max() / peak:5.1f} %, centroid "
                                 f"{_centroid(off, res[name][ln.key]) - _centroid(off, base):+.3f} A")
                print(f"{head} {ln.key}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
