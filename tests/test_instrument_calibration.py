"""CRISP degradation of synthetic profiles and the quiet-Sun calibration of DN scans (fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from radynversion.calibration import (
    calibrate,
    far_wing,
    field_mu,
    quiet_sun_mask,
    quiet_sun_reference,
    reference_at_tunings,
)
from radynversion.errors import CalibrationError, ProfileSchemaError, UnitsError
from radynversion.instrument import crisp_tunings, degrade, pixel_noise, resampling_matrix
from radynversion.lines import CA8542, HALPHA, LINES
from radynversion.schema import RADIANCE_PER_AA, RADIANCE_PER_HZ, convert_intensity, profile_dataset

TUNINGS = {ln.key: crisp_tunings(ln) for ln in LINES}


def fine_profiles(n: int = 6, seed: int = 0) -> xr.Dataset:
    """Gaussian absorption lines on the fine synthesis grids, dims (sample,)."""
    rng = np.random.default_rng(seed)
    ints, wls = {}, {}
    for ln in LINES:
        wl = ln.synth_wavelengths()
        depth = rng.uniform(0.2, 0.8, (n, 1))
        ints[ln.key] = 3e-8 * (1 - depth * np.exp(-(((wl - ln.center_air_A) / 0.25) ** 2)))
        wls[ln.key] = wl
    return profile_dataset(wls, ints, RADIANCE_PER_HZ, dims=("sample",),
                           coords={"sample": np.arange(n), "kind": ("sample", np.arange(n) % 3)})


# ---------------------------------------------------------------------------------------------
# instrument
# ---------------------------------------------------------------------------------------------


def test_crisp_tunings_are_irregular_denser_in_the_core_and_cover_the_model_windows():
    for ln, n, half in ((HALPHA, 15, 1.5), (CA8542, 21, 1.25)):
        wl = crisp_tunings(ln)
        off = wl - ln.center_air_A
        assert wl.size == n and np.all(np.diff(wl) > 0)
        assert off[0] == pytest.approx(-half) and off[-1] == pytest.approx(half)
        steps = np.diff(wl)
        assert steps[wl.size // 2] < 0.5 * steps[0]  # core steps much finer than far-wing ones
        assert np.allclose(np.round(off, 3), off)  # whole mA
        mw = ln.model_wavelengths()
        assert wl[0] <= mw[0] and wl[-1] >= mw[-1]
    assert crisp_tunings("ca8542", halfwidth_A=1.75)[-1] == pytest.approx(CA8542.center_air_A + 1.75)
    even = crisp_tunings("halpha", core_density=0) - HALPHA.center_air_A
    np.testing.assert_allclose(np.diff(even), 3.0 / 14, atol=1e-3)


def test_degrade_is_the_gaussian_transmission_at_the_tunings():
    fine = fine_profiles()
    out = degrade(fine, TUNINGS)
    for ln in LINES:
        assert out[ln.var].dims == ("sample", ln.dim)
        np.testing.assert_allclose(out[ln.dim].values, TUNINGS[ln.key])
        # the same operator as the model's preprocessing, applied by hand
        mat = resampling_matrix(ln.synth_wavelengths(), TUNINGS[ln.key], ln.crisp_fwhm_A)
        np.testing.assert_allclose(out[ln.var].values, fine[ln.var].values @ mat.T, rtol=1e-12)
        # a Gaussian line through a Gaussian transmission: a Gaussian of summed variances
        wl = TUNINGS[ln.key] - ln.center_air_A
        s_line, s_inst = 0.25 / np.sqrt(2), ln.crisp_fwhm_A / (2 * np.sqrt(2 * np.log(2)))
        s_tot = np.hypot(s_line, s_inst)
        fine_c = fine[ln.var].values[:, [0]] / 3e-8  # 1 - depth x ~0 at the grid end
        depth = 1 - fine[ln.var].sel({ln.dim: ln.center_air_A}, method="nearest").values[:, None] / 3e-8
        expect = 3e-8 * fine_c * (1 - depth * s_line / s_tot * np.exp(-0.5 * (wl / s_tot) ** 2))
        np.testing.assert_allclose(out[ln.var].values, expect, rtol=2e-3)
    assert out[HALPHA.var].attrs["units"] == RADIANCE_PER_HZ.to_string()
    assert json.loads(out.attrs["instrument"])["fwhm_A"] == {"halpha": 0.066, "ca8542": 0.107}
    np.testing.assert_array_equal(out["kind"].values, fine["kind"].values)


def test_degrade_noise_is_relative_to_the_joint_peak_and_seeded_per_pixel():
    fine = fine_profiles(8)
    clean = degrade(fine, TUNINGS)
    noisy = degrade(fine, TUNINGS, noise=0.01, seed=5)
    peak = np.maximum(clean[HALPHA.var].max(HALPHA.dim), clean[CA8542.var].max(CA8542.dim)).values
    resid = np.concatenate([(noisy[ln.var] - clean[ln.var]).values for ln in LINES], axis=1)
    assert 0.007 < np.std(resid / peak[:, None]) < 0.013
    # a pixel's noise does not depend on the other pixels
    np.testing.assert_array_equal(pixel_noise(4, 3, 5)[0], pixel_noise(1, 3, 5)[0])
    first = degrade(fine.isel(sample=[0]), TUNINGS, noise=0.01, seed=5)
    np.testing.assert_allclose(first[HALPHA.var].values[0], noisy[HALPHA.var].values[0], rtol=1e-12)
    assert not np.array_equal(degrade(fine, TUNINGS, noise=0.01, seed=6)[HALPHA.var].values,
                              noisy[HALPHA.var].values)


def test_degrade_accepts_other_units_and_refuses_tunings_beyond_the_grid():
    fine = fine_profiles(2)
    per_aa = convert_intensity(fine, RADIANCE_PER_AA)
    np.testing.assert_allclose(degrade(per_aa, TUNINGS)[CA8542.var].values,
                               degrade(fine, TUNINGS)[CA8542.var].values, rtol=1e-9)
    with pytest.raises(ProfileSchemaError, match="Ca II 8542 tunings"):
        degrade(fine, {**TUNINGS, "ca8542": crisp_tunings("ca8542", halfwidth_A=1.75)})
    with pytest.raises(ProfileSchemaError, match="no tunings for H-alpha"):
        degrade(fine, {"ca8542": TUNINGS["ca8542"]})


# ---------------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------------


def dn_scan(ny: int = 12, nx: int = 16, gain=(4.0e10, 2.5e10), mu: float = 1.0, seed: int = 0) -> xr.Dataset:
    """A DN scan: the quiet-Sun reference at CRISP tunings everywhere, with a bright ribbon
    (far wings x1.3, core x3) in the middle rows and a dark pore in one corner."""
    ref = reference_at_tunings(TUNINGS, mu=mu)
    rng = np.random.default_rng(seed)
    ints = {}
    for k, ln in enumerate(LINES):
        prof = np.broadcast_to(ref[ln.key], (ny, nx, ref[ln.key].size)).copy()
        core = np.exp(-(((TUNINGS[ln.key] - ln.center_air_A) / 0.4) ** 2))
        prof[ny // 2 - 2 : ny // 2 + 2] *= (1.3 + 1.7 * core)
        prof[:3, :3] *= 0.4
        prof *= 1 + 0.005 * rng.normal(size=prof.shape)
        ints[ln.key] = (prof * gain[k]).astype(np.float32)
    return profile_dataset(TUNINGS, ints, "DN", dims=("y", "x"),
                           coords={"y": np.arange(ny), "x": np.arange(nx)})


def test_reference_is_falc_through_the_package_model():
    ref = quiet_sun_reference()
    assert ref[HALPHA.var].dims == ("mu", HALPHA.dim) and ref["mu"].values[0] == 1.0
    assert "FAL-C" in ref.attrs["atmosphere"] and ref[HALPHA.var].attrs["units"] == "W / (m2 Hz sr)"
    for ln in LINES:
        I = ref[ln.var].sel(mu=1.0).values
        assert 1e-8 < I[0] < 1e-7  # continuum-ish far wing, per Hz
        assert I[np.argmin(np.abs(ref[ln.dim].values - ln.center_air_A))] < 0.5 * I[0]  # absorption
    # limb darkening
    assert np.all(np.diff(ref[HALPHA.var].isel({HALPHA.dim: 0}).values) < 0)


def test_calibrate_recovers_the_gain_from_an_automatic_quiet_region():
    gain = (4.0e10, 2.5e10)
    ds = dn_scan(gain=gain)
    mask = quiet_sun_mask(ds)
    assert mask.dims == ("y", "x") and not mask.values[6].any() and not mask.values[0, 0]
    cal = calibrate(ds)
    rec = json.loads(cal.attrs["calibration"])
    assert rec["method"] == "far_wing" and rec["mu_source"].startswith("assumed")
    assert rec["region"].startswith("auto") and rec["region_pixels"] == int(mask.sum())
    for k, ln in enumerate(LINES):
        assert rec["factors"][ln.key] == pytest.approx(1 / gain[k], rel=0.01)
        assert cal[ln.var].attrs["units"] == RADIANCE_PER_HZ.to_string()
        assert cal[ln.var].attrs["units_before_calibration"] == "DN"
        ref = reference_at_tunings(TUNINGS)[ln.key]
        np.testing.assert_allclose(cal[ln.var].isel(y=0, x=-1).values, ref, rtol=0.03)
    # the inversion's unit conversion now accepts it, and refused the DN original
    convert_intensity(cal, RADIANCE_PER_HZ)
    with pytest.raises(UnitsError, match="calibration"):
        convert_intensity(ds, RADIANCE_PER_HZ)


def test_calibrate_with_mask_slices_profile_method_and_mu():
    ds = dn_scan(mu=0.6)
    by_slices = calibrate(ds, quiet={"y": slice(8, 12), "x": slice(4, 16)}, mu=0.6)
    rec = json.loads(by_slices.attrs["calibration"])
    assert rec["region"] == "slices: y=8:12, x=4:16" and rec["region_pixels"] == 48
    assert rec["factors"]["halpha"] == pytest.approx(1 / 4.0e10, rel=0.01)
    mask = np.zeros((12, 16), bool)
    mask[9:, 5:] = True
    by_mask = calibrate(ds, quiet=mask, method="profile", mu=0.6)
    assert json.loads(by_mask.attrs["calibration"])["factors"]["ca8542"] == pytest.approx(1 / 2.5e10, rel=0.01)
    # the wrong mu misses the limb darkening of the reference
    at_centre = json.loads(calibrate(ds, quiet=mask, mu=1.0).attrs["calibration"])["factors"]["halpha"]
    assert at_centre > 1.05 / 4.0e10
    # mu from the pointing attrs the readers write
    ds.attrs.update(pointing_hpln_arcsec=0.8 * 959.63, pointing_hplt_arcsec=0.0)
    assert field_mu(ds) == pytest.approx(0.6, abs=1e-6)
    assert json.loads(calibrate(ds, quiet=mask).attrs["calibration"])["mu_source"].startswith("field centre")


def test_calibrate_keeps_a_time_dim_and_refuses_bad_regions():
    ds = xr.concat([dn_scan(seed=0), dn_scan(gain=(8.0e10, 5.0e10), seed=1)], dim="time")
    cal = calibrate(ds)
    f = json.loads(cal.attrs["calibration"])["factors"]["halpha"]
    assert len(f) == 2 and f[0] == pytest.approx(2 * f[1], rel=0.02)
    with pytest.raises(CalibrationError, match="pixels"):
        calibrate(dn_scan(), quiet=np.zeros((12, 16), bool))
    with pytest.raises(CalibrationError, match="shape"):
        calibrate(dn_scan(), quiet=np.ones((3, 3), bool))
    with pytest.raises(CalibrationError, match="off the disk"):
        calibrate(dn_scan().assign_attrs(pointing_hpln_arcsec=1200.0, pointing_hplt_arcsec=0.0))
    with pytest.raises(ValueError, match="method"):
        calibrate(dn_scan(), method="continuum")


def test_far_wing_picks_the_outer_tunings_on_both_sides():
    wl = TUNINGS["halpha"]
    m = far_wing(wl, HALPHA)
    off = np.abs(wl - HALPHA.center_air_A)
    assert m[0] and m[-1] and not m[wl.size // 2] and np.all(off[m] >= 0.75 * off.max())
