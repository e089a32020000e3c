"""Make ``radynversion/data/quiet_sun_reference.nc``: the model's quiet Sun (FAL-C).

The calibration of DN or unitless scans (:mod:`radynversion.calibration`) scales a quiet-Sun
region of the field to the intensity that the package's own forward model gives for the
quiet Sun: FAL-C (Fontenla, Avrett & Loeser 1993; Lightweaver's ``Falc82``) solved with
:func:`radynversion.synth.synthesise` (H 6-level and Ca II 5-level in NLTE, charge
conservation) on its own 82-point depth grid (``NLTEConfig(depth_points=0)``), once per
viewing angle ``mu``, on the fine synthesis grids of both lines (air Angstrom,
W m^-2 Hz^-1 sr^-1).

Run once (about 10-20 s per mu on one core)::

    python examples/make_quiet_sun_reference.py [--out radynversion/data/quiet_sun_reference.nc]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import xarray as xr

from radynversion import __version__
from radynversion.calibration import REFERENCE_MU
from radynversion.config import to_toml
from radynversion.lines import LINES
from radynversion.synth import NLTEConfig, falc_atmosphere, synthesise

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "radynversion" / "data" / "quiet_sun_reference.nc"


def make_reference(mus: tuple[float, ...] = REFERENCE_MU) -> xr.Dataset:
    """FAL-C profiles of both lines at each ``mu``, shape ``(mu, wl_<key>)``."""
    import lightweaver

    base = NLTEConfig(depth_points=0)
    rows = []
    for mu in mus:
        t0 = time.perf_counter()
        res = synthesise(falc_atmosphere(), dataclasses.replace(base, mu=float(mu)))
        if res.status != 0:
            raise RuntimeError(f"FAL-C at mu = {mu}: {res.message}")
        print(f"mu = {mu:.2f}: {res.iterations} iterations, {time.perf_counter() - t0:.1f} s", flush=True)
        rows.append(res.intensity)
    data_vars = {}
    coords = {"mu": ("mu", np.asarray(mus, dtype=float), {"long_name": "cosine of the viewing angle"})}
    for ln in LINES:
        coords[ln.dim] = (ln.dim, ln.synth_wavelengths(), {
            "units": "Angstrom", "wavelength_medium": "air", "long_name": f"{ln.label} wavelength (air)"})
        data_vars[ln.var] = (("mu", ln.dim), np.stack([r[ln.key] for r in rows]), {
            "units": "W / (m2 Hz sr)", "long_name": f"{ln.label} emergent intensity of FAL-C"})
    return xr.Dataset(data_vars, coords=coords, attrs={
        "title": "radynversion quiet-Sun reference: FAL-C through the package's NLTE forward model",
        "atmosphere": "FAL-C (Fontenla, Avrett & Loeser 1993), Lightweaver Falc82, static",
        "nlte_config": to_toml(base),
        "nlte_config_note": "solved once per mu (the mu of nlte_config is replaced by each row's)",
        "radynversion_version": __version__,
        "lightweaver_version": lightweaver.__version__,
        "made_by": "examples/make_quiet_sun_reference.py",
    })


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    ds = make_reference()
    enc = {v: {"zlib": True, "complevel": 6} for v in ds.data_vars}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(args.out, encoding=enc)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
