"""Figures: training-set coverage (and, later, posterior and map plots).

All functions take xarray objects, draw with matplotlib (Agg backend is fine) and return the
``Figure``; pass ``path`` to save a PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from .lines import LINES

__all__ = ["training_coverage", "core_wing_ratio"]


def core_wing_ratio(ds: xr.Dataset, line_key: str) -> np.ndarray:
    """Line-centre intensity over the mean of the two outermost wing points, shape ``(sample,)``.

    Above 1: the line is in emission at its centre; below 1: in absorption.
    """
    ln = next(x for x in LINES if x.key == line_key)
    I = np.asarray(ds[ln.var].values, dtype=float)
    wl = np.asarray(ds[ln.dim].values)
    centre = int(np.argmin(np.abs(wl - ln.center_air_A)))
    return I[:, centre] / (0.5 * (I[:, 0] + I[:, -1]))


def training_coverage(ds: xr.Dataset, path: str | Path | None = None, title: str | None = None):
    """Coverage of a training set: envelopes of T, ne, v versus height, core/wing ratios of
    both lines, and example profiles in emission and absorption.

    Parameters
    ----------
    ds : xr.Dataset
        A training set (``radynversion.datasets.training_set()``), dim ``sample``.
    path : path, optional
        Where to save the PNG.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    h = ds["height"].values
    fig = plt.figure(figsize=(15, 9), constrained_layout=True)
    gs = fig.add_gridspec(2, 4)
    kinds = str(ds["kind"].attrs.get("flag_meanings", "quiet weak flare")).split()
    colors = {"quiet": "tab:blue", "weak": "tab:green", "flare": "tab:red"}
    for col, (name, label) in enumerate(
        [("log_T", r"$\log_{10} T$ [K]"), ("log_ne", r"$\log_{10} n_e$ [cm$^{-3}$]"), ("v", r"$v$ [km s$^{-1}$] (+ = down)")]
    ):
        ax = fig.add_subplot(gs[0, col])
        vals = np.asarray(ds[name].values, dtype=float)
        lo1, lo2, med, hi2, hi1 = np.nanpercentile(vals, [1, 16, 50, 84, 99], axis=0)
        ax.fill_between(h, lo1, hi1, color="0.85", label="1-99 %")
        ax.fill_between(h, lo2, hi2, color="0.6", label="16-84 %")
        ax.plot(h, med, "k", lw=1.5, label="median")
        kind = np.asarray(ds["kind"].values)
        for k, kname in enumerate(kinds):
            sel = kind == k
            if sel.any():
                ax.plot(h, np.nanmedian(vals[sel], axis=0), color=colors.get(kname, None), lw=1, label=f"median {kname}")
        if name == "v":
            ax.set_yscale("symlog", linthresh=5)
        ax.set_xlabel("height [Mm]")
        ax.set_ylabel(label)
        ax.set_xlim(h[0], h[-1])
        ax.set_xscale("symlog", linthresh=3.5, linscale=3)
        if col == 0:
            ax.legend(fontsize=7, loc="upper left")
    ax = fig.add_subplot(gs[0, 3])
    for ln in LINES:
        r = core_wing_ratio(ds, ln.key)
        ax.hist(np.log10(r[np.isfinite(r) & (r > 0)]), bins=60, histtype="step", lw=1.5, label=ln.label)
    ax.axvline(0, color="k", ls=":")
    ax.set_xlabel(r"$\log_{10}$ (core / far wing)")
    ax.set_ylabel("atmospheres")
    ax.legend(fontsize=8)
    ax.set_title("< 0: absorption, > 0: emission", fontsize=9)
    rng = np.random.default_rng(0)
    for col, ln in enumerate(LINES):
        r = core_wing_ratio(ds, ln.key)
        wl = ds[ln.dim].values - ln.center_air_A
        for j, (sel, style, lab) in enumerate(
            [(r > 1.2, "-", "emission"), (r < 0.8, "--", "absorption")]
        ):
            ax = fig.add_subplot(gs[1, 2 * col + j])
            idx = np.flatnonzero(sel)
            if idx.size:
                pick = rng.choice(idx, size=min(12, idx.size), replace=False)
                I = np.asarray(ds[ln.var].values[pick], dtype=float)
                ax.plot(wl, (I / 1e-8).T, style, lw=0.8)
            ax.set_title(f"{ln.label}: {lab} ({int(sel.sum())} of {sel.size})", fontsize=9)
            ax.set_xlabel(r"$\Delta\lambda$ [$\AA$] (air)")
            ax.set_ylabel(r"$I_\nu$ [$10^{-8}$ W m$^{-2}$ Hz$^{-1}$ sr$^{-1}$]")
    fig.suptitle(title or f"Training-set coverage: {ds.sizes['sample']} converged atmospheres")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
