"""Make the example scan shipped in ``radynversion/data/example_scan/``.

A synthetic SST/CRISP flare observation of 64 x 64 pixels, one scan of each line, written as
two SSTRED cubes (``nb_6563_..._im.fits``: Stokes I; ``nb_8542_..._im.fits``: Stokes I, Q, U,
V with Q = U = V = 0, as polarimetric 8542 programs write them) in W m^-2 Hz^-1 sr^-1 with a
helioprojective WCS near disk centre, plus the true atmosphere of every pixel
(``truth.nc``). How it is made:

1. **A pool of independent atmospheres**: 120 flaring, 60 weakly heated and 30 quiet ones,
   drawn from the package's prior (:mod:`radynversion.synth.prior`, default ranges, one kind
   per pool) with seeds 2026, 2027 and 2028 (the training set uses seed 0, so none of them is
   a training atmosphere) and solved with the same NLTE forward model and settings as the
   training set (:func:`radynversion.synth.factory.run_synthesis`, one worker, resumable: the
   pool stores live in ``--cache``, default ``/tmp/radynversion-example-pool``). Only
   converged members are used.
2. **A flare on the field**: a curved ribbon (an arc of a circle, 3-4 pixels wide, its width
   and position wobbling smoothly) of flaring atmospheres, surrounded by weakly heated ones
   out to ~10 pixels, quiet Sun elsewhere. Along the ribbon the heating strength (the flare
   member's coronal pressure rank) varies smoothly; across it, the leading (outer) edge takes
   members with chromospheric condensations (downflows) and the trailing (inner) edge members
   with chromospheric or evaporation upflows, so both signs of ``v`` are present. Weak members
   are ranked by heating (plateau temperature) falling off with distance from the ribbon; quiet
   members follow a smooth random pattern. Neighbouring pixels often share a pool member.
3. **Through CRISP**: the fine synthetic profiles of each pixel are seen through the Gaussian
   CRISP transmission at irregular tunings (:func:`radynversion.instrument.crisp_tunings`:
   H-alpha 15 within +-1.5 A, Ca II 8542 21 within +-1.25 A) with 1 % Gaussian noise relative
   to each pixel's joint peak, seeded per pixel (:func:`radynversion.instrument.degrade`).
4. **Written** with :func:`radynversion.io.fits.write_sstred_cube`; ``truth.nc`` holds
   ``log_ne, log_T, v (y, x, height)`` (float32, compressed), ``kind (y, x)``, ``pool_index
   (y, x)`` (the sample index in that kind's pool store) and the geometry.

Run (the pool takes about 30 minutes of one core on an idle machine; the rest a few seconds)::

    nice -n 10 python examples/make_example_scan.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import xarray as xr

from radynversion import __version__
from radynversion.atmosphere import VARIABLE_ATTRS
from radynversion.config import to_toml
from radynversion.datasets import training_set
from radynversion.instrument import crisp_tunings, degrade
from radynversion.io.fits import write_sstred_cube
from radynversion.lines import CA8542, HALPHA, LINES
from radynversion.schema import profile_dataset
from radynversion.synth import NLTEConfig, PriorConfig
from radynversion.synth.factory import INTENSITY_UNIT, SynthConfig, run_synthesis
from radynversion.synth.prior import KINDS, PARAM_NAMES

#: seeds of the pool (NOT 0: seed 0 is the training set); one stream per kind
POOL_SEED = 2026
#: kind -> (number of atmospheres, prior mix)
POOL = {
    "flare": (120, (0.0, 0.0, 1.0)),
    "weak": (60, (0.0, 1.0, 0.0)),
    "quiet": (30, (1.0, 0.0, 0.0)),
}
DEFAULT_CACHE = Path("/tmp/radynversion-example-pool")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "radynversion" / "data" / "example_scan"

NY = NX = 64
#: the observation: date, field centre (HPLN, HPLT) [arcsec] near disk centre (mu ~ 0.99, as the
#: mu = 1 synthesis), CRISP pixel scale [arcsec], seconds between tunings, Ca II after H-alpha
DATE = "2024-05-14T08:30:00"
CENTRE_ARCSEC = (118.0, -86.0)
SCALE_ARCSEC = 0.058
TUNING_STEP_S = 0.6
CA_DELAY_S = 10.0
NOISE = 0.01
NOISE_SEED = 2026
#: ribbon: arc of a circle of this centre (x, y) [pixel] and radius, half-width [pixel]
ARC_CENTRE = (32.0, -14.0)
ARC_RADIUS = 46.0
RIBBON_HALFWIDTH = 3.2
WEAK_HALFWIDTH = 10.0


def pool_config(kind: str) -> SynthConfig:
    """The synthesis configuration of the pool of one ``kind`` (default prior ranges and NLTE
    settings, as the training set; only the mix and the seed differ)."""
    n, mix = POOL[kind]
    seed = POOL_SEED + list(POOL).index(kind)
    return SynthConfig(n=n, seed=seed, shard_size=10, prior=PriorConfig(mix=mix), nlte=NLTEConfig())


def make_pool(cache: Path, workers: int = 1) -> dict[str, Path]:
    """Synthesise (or resume) the pool stores, one Zarr per kind, under ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind in POOL:
        out = cache / f"pool_{kind}.zarr"
        t0 = time.perf_counter()
        stats = run_synthesis(out, pool_config(kind), workers=workers, progress=False,
                              log=cache / f"pool_{kind}.log")
        print(f"pool {kind}: {stats} in {time.perf_counter() - t0:.0f} s", flush=True)
        paths[kind] = out
    return paths


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator, scale: float, n: int = 6) -> np.ndarray:
    """A smooth random field in [0, 1]: a sum of ``n`` random plane waves of wavelength ~ ``scale`` px."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    f = np.zeros(shape)
    for _ in range(n):
        k = 2 * np.pi / (scale * rng.uniform(0.7, 1.4))
        a = rng.uniform(0, 2 * np.pi)
        f += np.cos(k * (np.cos(a) * xx + np.sin(a) * yy) + rng.uniform(0, 2 * np.pi))
    return (f - f.min()) / (f.max() - f.min())


def _pick(rank_order: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Members of ``rank_order`` (indices sorted by a quantity) at fractional ranks ``s`` in [0, 1]."""
    k = np.clip(np.round(s * (rank_order.size - 1)).astype(int), 0, rank_order.size - 1)
    return rank_order[k]


def geometry(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The ribbon: signed distance ``u`` across it (> 0 on the outer, leading side), position
    ``t`` along it in [0, 1], and the kind of every pixel (0 quiet, 1 weak, 2 flare)."""
    yy, xx = np.mgrid[0:NY, 0:NX].astype(float)
    wobble = 2.0 * (_smooth_field((NY, NX), rng, 40.0, 4) - 0.5)
    r = np.hypot(xx - ARC_CENTRE[0], yy - ARC_CENTRE[1]) + wobble
    ang = np.arctan2(yy - ARC_CENTRE[1], xx - ARC_CENTRE[0])
    t = (ang - ang.min()) / (ang.max() - ang.min())
    halfwidth = RIBBON_HALFWIDTH * (0.8 + 0.5 * _smooth_field((NY, NX), rng, 30.0, 3))
    u = (r - ARC_RADIUS) / halfwidth
    kind = np.zeros((NY, NX), np.int8)
    weak_w = WEAK_HALFWIDTH * (0.8 + 0.4 * _smooth_field((NY, NX), rng, 25.0, 3))
    kind[np.abs(r - ARC_RADIUS) < weak_w] = 1
    kind[np.abs(u) < 1.0] = 2
    return {"u": u, "t": t, "distance": np.abs(r - ARC_RADIUS), "kind": kind, "weak_width": weak_w}


def assign(pools: dict[str, xr.Dataset], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """Pool member of every pixel: ``(kind (y, x), index into the converged pool (y, x), geometry)``."""
    g = geometry(rng)
    kind, u, t = g["kind"], g["u"], g["t"]
    member = np.zeros((NY, NX), int)
    pidx = {k: list(PARAM_NAMES).index(k) for k in PARAM_NAMES}

    def param(ds: xr.Dataset, name: str) -> np.ndarray:
        return np.nan_to_num(np.asarray(ds["prior_params"].values[:, pidx[name]], dtype=float))

    # flare: heating rank along the ribbon, velocity class across it
    fl = pools["flare"]
    p_cor = param(fl, "p_cor_dyn_cm2")
    down = param(fl, "v_condensation_kms")
    up = -(param(fl, "v_chrom_upflow_kms") + 0.2 * param(fl, "v_evaporation_kms"))
    groups = {
        "down": np.flatnonzero(down > np.maximum(up, 5.0)),
        "up": np.flatnonzero((up > 5.0) & (down < 0.5 * up)),
    }
    groups["middle"] = np.arange(p_cor.size)
    # strongest heating in a kernel part-way along the ribbon and at its middle, patchy elsewhere
    strength = np.clip(0.1 + 0.45 * _smooth_field((NY, NX), rng, 22.0, 5)
                       + 0.3 * np.exp(-(((t - 0.6) / 0.2) ** 2)) + 0.15 * (1 - np.abs(u)), 0, 1)
    on = kind == 2
    for name, sel in (("down", u > 0.3), ("up", u < -0.3), ("middle", np.abs(u) <= 0.3)):
        members = groups[name]
        order = members[np.argsort(p_cor[members])]
        m = on & sel
        member[m] = _pick(order, strength[m])
    # weak: heating falls off away from the ribbon
    wk = pools["weak"]
    order = np.argsort(param(wk, "t_plateau_K") * param(wk, "p_cor_dyn_cm2") ** 0.25)
    d = np.clip((g["distance"] - RIBBON_HALFWIDTH) / (g["weak_width"] - RIBBON_HALFWIDTH), 0, 1)
    s = np.clip(0.75 * (1 - d) + 0.25 * _smooth_field((NY, NX), rng, 12.0, 5), 0, 1)
    member[kind == 1] = _pick(order, s[kind == 1])
    # quiet: a smooth random pattern (granulation-sized patches of ~8 px, 0.5 arcsec)
    qs = pools["quiet"]
    order = np.argsort(param(qs, "chrom_perturbation_dex"))
    member[kind == 0] = _pick(order, _smooth_field((NY, NX), rng, 8.0, 8)[kind == 0])
    return kind, member, g


def load_pools(paths: dict[str, Path]) -> dict[str, xr.Dataset]:
    """The converged members of each pool, with their sample index in the store kept."""
    pools = {}
    for kind, p in paths.items():
        ds = training_set(p)  # converged, completed shards only
        if ds.sizes["sample"] == 0:
            raise RuntimeError(f"{p}: no converged atmospheres yet")
        assert np.all(ds["kind"].values == KINDS.index(kind))
        pools[kind] = ds
    return pools


def build(pools: dict[str, xr.Dataset], seed: int = POOL_SEED) -> tuple[xr.Dataset, xr.Dataset]:
    """``(observation in the profile schema over (y, x), truth)``."""
    rng = np.random.default_rng(seed)
    kind, member, g = assign(pools, rng)
    names = [KINDS[k] for k in range(len(KINDS))]
    fine: dict[str, np.ndarray] = {}
    atm = {v: np.zeros((NY, NX, pools["flare"].sizes["height"]), np.float32) for v in ("log_ne", "log_T", "v")}
    pool_index = np.zeros((NY, NX), np.int32)
    for k, name in enumerate(names):
        m = kind == k
        if not m.any():
            continue
        ds = pools[name].isel(sample=member[m])
        for ln in LINES:
            fine.setdefault(ln.key, np.zeros((NY, NX, ds.sizes[ln.dim])))[m] = ds[ln.var].values
        for v in atm:
            atm[v][m] = ds[v].values
        pool_index[m] = ds["sample"].values
    wls = {ln.key: pools["flare"][ln.dim].values for ln in LINES}
    fine_ds = profile_dataset(wls, fine, INTENSITY_UNIT, dims=("y", "x"),
                              coords={"y": np.arange(NY), "x": np.arange(NX)})
    tunings = {ln.key: crisp_tunings(ln) for ln in LINES}
    obs = degrade(fine_ds, tunings, noise=NOISE, seed=NOISE_SEED)
    height = pools["flare"]["height"]
    truth = xr.Dataset(
        {v: (("y", "x", "height"), atm[v], dict(VARIABLE_ATTRS[v])) for v in atm},
        coords={"y": ("y", np.arange(NY), {"long_name": "pixel index along HPLT (as in the FITS cubes)"}),
                "x": ("x", np.arange(NX), {"long_name": "pixel index along HPLN (as in the FITS cubes)"}),
                "height": ("height", height.values, dict(height.attrs))})
    truth["kind"] = (("y", "x"), kind, {"flag_values": [0, 1, 2], "flag_meanings": " ".join(names),
                                        "long_name": "kind of atmosphere (pool it was taken from)"})
    truth["pool_index"] = (("y", "x"), pool_index, {
        "long_name": "sample index of the atmosphere in its kind's pool store (seed in attrs)"})
    truth["ribbon_offset"] = (("y", "x"), g["u"].astype(np.float32), {
        "long_name": "signed distance across the ribbon in ribbon half-widths (> 0: leading edge)"})
    return obs, truth


def write(obs: xr.Dataset, truth: xr.Dataset, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("nb_*_im.fits"):
        old.unlink()
    t_ha = np.datetime64(DATE, "ns")
    t_ca = t_ha + np.timedelta64(int(CA_DELAY_S * 1e9), "ns")
    stamp = DATE.replace(":", "")
    paths = []
    for ln, t, stokes in ((HALPHA, t_ha, 1), (CA8542, t_ca, 4)):
        da = obs[ln.var].astype(np.float32).transpose(ln.dim, "y", "x")
        if stokes == 4:
            da = xr.concat([da, xr.zeros_like(da), xr.zeros_like(da), xr.zeros_like(da)],
                           dim=xr.DataArray(list("IQUV"), dims="stokes"))
        ds = da.to_dataset(name=ln.var).assign_coords(time=("time", [t]))
        ds[ln.var] = ds[ln.var].expand_dims("time")
        ds[ln.var].attrs["units"] = INTENSITY_UNIT
        name = f"nb_{int(round(ln.center_air_A))}_{stamp}_scans=0-0_im.fits"
        header = {"OBJECT": "synthetic flare (radynversion example scan)",
                  "ORIGIN": f"radynversion {__version__} examples/make_example_scan.py"}
        paths.append(write_sstred_cube(out / name, ds, centre_arcsec=CENTRE_ARCSEC,
                                       scale_arcsec=SCALE_ARCSEC, tuning_step_s=TUNING_STEP_S,
                                       header=header, overwrite=True))
    truth.attrs = {
        "title": "True atmospheres of the radynversion example scan",
        "observation_files": json.dumps([p.name for p in paths]),
        "pool": json.dumps({k: {"n": POOL[k][0], "seed": pool_config(k).seed} for k in POOL}),
        "pool_config_flare": to_toml(pool_config("flare")),
        "instrument": obs.attrs["instrument"],
        "tunings_A": json.dumps({ln.key: obs[ln.dim].values.round(4).tolist() for ln in LINES}),
        "made_by": "examples/make_example_scan.py",
        "radynversion_version": __version__,
        "conventions": "v positive = downflow = redshift; heights in Mm above tau_500 = 1; "
                       "intensities synthesised at mu = 1",
    }
    enc = {v: {"zlib": True, "complevel": 9, "shuffle": True} for v in truth.data_vars}
    path = out / "truth.nc"
    truth.to_netcdf(path, encoding=enc)
    paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the pool stores live")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--pool-only", action="store_true", help="only synthesise (or resume) the pool")
    args = ap.parse_args(argv)
    paths = make_pool(args.cache, args.workers)
    if args.pool_only:
        return
    pools = load_pools(paths)
    for k, ds in pools.items():
        print(f"pool {k}: {ds.sizes['sample']} of {POOL[k][0]} converged")
    obs, truth = build(pools)
    for p in write(obs, truth, args.out):
        print(f"wrote {p} ({p.stat().st_size / 1024:.0f} kB)")
    counts = np.bincount(truth["kind"].values.ravel(), minlength=3)
    print("pixels per kind:", dict(zip(KINDS, counts.tolist(), strict=True)))


if __name__ == "__main__":
    main()
