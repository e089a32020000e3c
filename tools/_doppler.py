"""Doppler-shifted copies of training atmospheres, for the yardstick tools in this folder.

An atmosphere moved as a whole along the line of sight emits the same spectrum, Doppler-shifted:
in its own frame nothing has changed (statistical equilibrium and source functions are the same),
and at mu = 1 every line-of-sight velocity rises by the same amount. So a shifted copy is an exact
new training example, without a new radiative-transfer solve (up to the continuum's slope across
the shift, which is negligible over a few tenths of an Angstrom).
"""

from __future__ import annotations

import argparse

import numpy as np
import xarray as xr

from radynversion.atmosphere import C_KM_S
from radynversion.lines import LINES


def doppler_shifted(ds: xr.Dataset, dv_kms: np.ndarray) -> xr.Dataset:
    """``ds`` with each atmosphere moved as a whole by ``dv_kms`` (positive = redshift) and its
    profiles shifted to match, ``I'(lambda) = I(lambda - lambda_0 dv / c)``, by linear interpolation
    on their own (uniform) grids; values beyond a grid's end are held at the end's."""
    out = ds.copy()
    out["v"] = ds["v"] + xr.DataArray(dv_kms, dims="sample")
    for ln in LINES:
        wl = np.asarray(ds[ln.dim].values, dtype=float)
        prof = np.asarray(ds[ln.var].transpose("sample", ln.dim).values, dtype=float)
        pos = np.arange(wl.size)[None, :] - (ln.center_air_A * dv_kms / C_KM_S / np.diff(wl).mean())[:, None]
        pos = np.clip(pos, 0, wl.size - 1)
        i0 = np.minimum(np.floor(pos).astype(int), wl.size - 2)
        frac = pos - i0
        rows = np.arange(prof.shape[0])[:, None]
        shifted = (1 - frac) * prof[rows, i0] + frac * prof[rows, i0 + 1]
        out[ln.var] = (("sample", ln.dim), shifted.astype(prof.dtype), ds[ln.var].attrs)
    return out


def add_doppler_arguments(ap: argparse.ArgumentParser, note: str = "") -> None:
    """``--doppler-copies`` and ``--doppler-kms`` (:func:`doppler_copies`)."""
    ap.add_argument("--doppler-copies", type=int, default=0,
                    help="add this many copies of the training split, each atmosphere moved as a whole "
                         f"by a random velocity and its profiles Doppler-shifted to match{note}")
    ap.add_argument("--doppler-kms", type=float, default=5.0,
                    help="the copies' velocities are uniform in +-this [km/s]")


def doppler_copies(ds: xr.Dataset, copies: int, kms: float, seed: int) -> list[xr.Dataset]:
    """``copies`` Doppler-shifted copies of ``ds``, each atmosphere moved by a velocity uniform in
    ``+-kms`` [km/s], drawn from a generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    return [doppler_shifted(ds, rng.uniform(-kms, kms, ds.sizes["sample"])) for _ in range(copies)]


def _absorption_lines(n: int) -> xr.Dataset:
    """``n`` atmospheres, each line a Gaussian absorption at its centre on a 0.02 A grid."""
    ds = xr.Dataset({"v": (("sample", "height"), np.zeros((n, 4)))})
    for ln in LINES:
        wl = ln.center_air_A + np.arange(-1.5, 1.5 + 1e-9, 0.02)
        prof = 1.0 - 0.7 * np.exp(-(((wl - ln.center_air_A) / 0.25) ** 2))
        ds[ln.var] = (("sample", ln.dim), np.tile(prof, (n, 1)), {"units": "W m-2 Hz-1 sr-1"})
        ds = ds.assign_coords({ln.dim: wl})
    return ds


def self_check() -> None:
    """The sign convention and edge behaviour of :func:`doppler_shifted` (run by the tests as
    ``python tools/_doppler.py``): a downflow (positive v) moves the line red by ``lambda v / c``
    and adds v at every height; shifts beyond the grid hold the edge value."""
    def centroid(ds: xr.Dataset, ln) -> np.ndarray:  # noqa: ANN001
        depth = 1.0 - ds[ln.var].transpose("sample", ln.dim).values
        return (depth * ds[ln.dim].values).sum(1) / depth.sum(1)

    ds = _absorption_lines(3)
    dv = np.array([10.0, -10.0, 0.0])  # km/s, positive = downflow = redshift
    out = doppler_shifted(ds, dv)
    np.testing.assert_allclose(out["v"].values, dv[:, None] * np.ones((3, 4)))
    for ln in LINES:
        moved = centroid(out, ln) - centroid(ds, ln)
        np.testing.assert_allclose(moved, ln.center_air_A * dv / C_KM_S, atol=2e-3)  # 10 km/s: 0.22-0.28 A
        assert out[ln.var].attrs == ds[ln.var].attrs
    np.testing.assert_array_equal(out[LINES[0].var].values[2], ds[LINES[0].var].values[2])
    assert ds["v"].values.max() == 0.0  # the input is untouched
    for big in (200.0, -200.0):
        edge = doppler_shifted(_absorption_lines(1), np.array([big]))
        for ln in LINES:
            assert np.isfinite(edge[ln.var].values).all() and edge[ln.var].values.max() <= 1.0 + 1e-12
    print("doppler_shifted: sign convention and edges OK")


if __name__ == "__main__":
    self_check()
