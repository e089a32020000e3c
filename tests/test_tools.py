"""Helpers of the yardstick scripts in tools/ (run as scripts, so imported by path here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from radynversion.atmosphere import C_KM_S
from radynversion.lines import LINES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from _doppler import doppler_shifted  # noqa: E402  (tools/_doppler.py)


def _absorption_lines(n: int) -> xr.Dataset:
    """``n`` atmospheres, each line a Gaussian absorption at its centre on a 0.02 A grid."""
    ds = xr.Dataset({"v": (("sample", "height"), np.zeros((n, 4)))})
    for ln in LINES:
        wl = ln.center_air_A + np.arange(-1.5, 1.5 + 1e-9, 0.02)
        prof = 1.0 - 0.7 * np.exp(-(((wl - ln.center_air_A) / 0.25) ** 2))
        ds[ln.var] = (("sample", ln.dim), np.tile(prof, (n, 1)), {"units": "W m-2 Hz-1 sr-1"})
        ds = ds.assign_coords({ln.dim: wl})
    return ds


def _centroid(ds: xr.Dataset, ln) -> np.ndarray:  # noqa: ANN001
    wl = ds[ln.dim].values
    depth = 1.0 - ds[ln.var].transpose("sample", ln.dim).values
    return (depth * wl).sum(1) / depth.sum(1)


def test_doppler_shift_moves_profiles_red_for_a_downflow_and_the_velocity_with_them():
    ds = _absorption_lines(3)
    dv = np.array([10.0, -10.0, 0.0])  # km/s, positive = downflow = redshift
    out = doppler_shifted(ds, dv)
    np.testing.assert_allclose(out["v"].values, dv[:, None] * np.ones((3, 4)))
    for ln in LINES:
        moved = _centroid(out, ln) - _centroid(ds, ln)
        np.testing.assert_allclose(moved, ln.center_air_A * dv / C_KM_S, atol=2e-3)  # 10 km/s: 0.22-0.28 A
        assert out[ln.var].attrs == ds[ln.var].attrs
    np.testing.assert_array_equal(out[LINES[0].var].values[2], ds[LINES[0].var].values[2])
    assert ds["v"].values.max() == 0.0  # the input is untouched


@pytest.mark.parametrize("dv", [200.0, -200.0])
def test_doppler_shift_beyond_the_grid_holds_the_edge_value(dv):
    ds = _absorption_lines(1)
    out = doppler_shifted(ds, np.array([dv]))
    for ln in LINES:
        assert np.isfinite(out[ln.var].values).all()
        assert out[ln.var].values.max() <= 1.0 + 1e-12
