"""How much do the training profiles' line cores move with the chromospheric velocity?

For every converged atmosphere of a training set: ``v_top``, the mean velocity over the
``--nodes`` nodes just below the transition region (first node above 0.5 Mm with log T >= 4.5),
and the centroid of each line's core (the absolute departure from the mean of the two window
edges, weighted by wavelength offset, within ``--core`` Angstrom of the line centre), after
the model's preprocessing (CRISP-like instrument FWHM, joint-peak normalisation). Prints, per
velocity bin, the mean centroid against the shift a line forming wholly in that flow would
have (``v / c x lambda``), and the correlation of ``v_top`` with the centroid.

    .venv/bin/python tools/doppler_signal.py [--data STORE] [--first N]
"""

from __future__ import annotations

import argparse

import numpy as np

from radynversion.atmosphere import C_KM_S
from radynversion.datasets import training_set
from radynversion.lines import LINES
from radynversion.model import model_wavelengths, normalise_profiles
from radynversion.model.evaluate import TR_LOG_T

BINS = ((-np.inf, -10.0), (-10.0, -3.0), (-3.0, 3.0), (3.0, 10.0), (10.0, np.inf))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="training-set store (default: the shipped set)")
    p.add_argument("--first", type=int, help="only draws with sample label < N")
    p.add_argument("--nodes", type=int, default=4, help="nodes below the transition region")
    p.add_argument("--core", type=float, default=0.5, help="half-width of the core window [A]")
    args = p.parse_args()
    ds = training_set(args.data)
    if args.first is not None:
        ds = ds.isel(sample=np.asarray(ds["sample"].values) < args.first)
    fwhm = {ln.key: ln.crisp_fwhm_A for ln in LINES}
    y, _ = normalise_profiles(ds, fwhm_A=fwhm)
    h = np.asarray(ds["height"].values, dtype=float)
    v = np.asarray(ds["v"].transpose("sample", "height").values, dtype=float)
    hot = (np.asarray(ds["log_T"].transpose("sample", "height").values) >= TR_LOG_T) & (h > 0.5)
    itr = np.where(hot.any(axis=1), hot.argmax(axis=1), h.size)
    v_top = np.array([v[k, max(0, i - args.nodes):i].mean() if i > 0 else np.nan
                      for k, i in enumerate(itr)])
    print(f"{ds.sizes['sample']} atmospheres; v_top = mean v over {args.nodes} nodes below the TR")
    start = 0
    for ln, wl in zip(LINES, model_wavelengths().values(), strict=True):
        prof = y[:, start : start + wl.size]
        start += wl.size
        dwl = wl - ln.center_air_A
        core = np.abs(dwl) < args.core
        depart = np.abs(prof[:, core] - prof[:, [0, -1]].mean(axis=1, keepdims=True))
        centroid = (depart * dwl[core]).sum(axis=1) / depart.sum(axis=1)
        ok = np.isfinite(v_top) & np.isfinite(centroid)
        r = np.corrcoef(v_top[ok], centroid[ok])[0, 1]
        print(f"{ln.key}: correlation(v_top, core centroid) = {r:.3f}")
        for lo, hi in BINS:
            m = ok & (v_top >= lo) & (v_top < hi)
            if m.any():
                full = np.median(v_top[m]) / C_KM_S * ln.center_air_A
                print(f"  v_top in [{lo:g}, {hi:g}) km/s: {m.sum():5d} atmospheres, centroid "
                      f"{centroid[m].mean():+.3f} A, a full Doppler shift would be {full:+.3f} A")


if __name__ == "__main__":
    main()
