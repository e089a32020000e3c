"""The profile schema: validation messages and astropy unit conversion."""

import astropy.units as u
import numpy as np
import pytest

from radynversion import LINES, air_to_vacuum
from radynversion.errors import ProfileSchemaError, UnitsError
from radynversion.schema import (
    RADIANCE_PER_AA,
    RADIANCE_PER_HZ,
    convert_intensity,
    profile_dataset,
    to_air_angstrom,
    validate_profiles,
)


def make(unit=RADIANCE_PER_HZ, n=3):
    rng = np.random.default_rng(0)
    return profile_dataset(
        {ln.key: ln.synth_wavelengths() for ln in LINES},
        {ln.key: 1e-8 * (1 + rng.random((n, ln.synth_wavelengths().size))) for ln in LINES},
        unit, dims=("sample",),
    )


def test_valid_dataset_passes():
    validate_profiles(make())


def test_per_hz_to_per_angstrom_uses_spectral_density():
    ds = make()
    out = convert_intensity(ds, RADIANCE_PER_AA)
    for ln in LINES:
        wl = air_to_vacuum(ds[ln.dim].values) * u.AA
        expect = (ds[ln.var].values * RADIANCE_PER_HZ).to_value(RADIANCE_PER_AA, u.spectral_density(wl))
        np.testing.assert_allclose(out[ln.var].values, expect, rtol=1e-12)
        assert u.Unit(out[ln.var].attrs["units"]) == RADIANCE_PER_AA
    # the per-Hz -> per-A factor differs between the lines by (8544/6565)^2 = 1.69
    f_ha = out.I_halpha.values[0, 100] / ds.I_halpha.values[0, 100]
    f_ca = out.I_ca8542.values[0, 75] / ds.I_ca8542.values[0, 75]
    assert f_ha / f_ca == pytest.approx((8544.44 / 6564.61) ** 2, rel=1e-3)
    back = convert_intensity(out, RADIANCE_PER_HZ)
    np.testing.assert_allclose(back.I_halpha.values, ds.I_halpha.values, rtol=1e-12)


def test_missing_line_named():
    with pytest.raises(ProfileSchemaError, match=r"obs\.nc: missing variable I_ca8542"):
        validate_profiles(make().drop_vars("I_ca8542"), "obs.nc")


def test_nm_labelled_angstrom():
    ds = make()
    ds = ds.assign_coords(wl_halpha=("wl_halpha", ds.wl_halpha.values / 10, {"units": "Angstrom", "wavelength_medium": "air"}))
    with pytest.raises(UnitsError, match="wl_halpha.*nm labelled as Angstrom"):
        validate_profiles(ds, "obs.nc")


def test_nm_accepted_and_converted():
    ds = make()
    ds = ds.assign_coords(wl_halpha=("wl_halpha", ds.wl_halpha.values / 10, {"units": "nm", "wavelength_medium": "air"}))
    validate_profiles(ds)
    np.testing.assert_allclose(to_air_angstrom(ds).wl_halpha.values, make().wl_halpha.values)


def test_missing_wavelength_units():
    ds = make()
    ds.wl_ca8542.attrs.pop("units")
    with pytest.raises(UnitsError, match="wl_ca8542 has no 'units'"):
        validate_profiles(ds, "obs.nc")


@pytest.mark.parametrize("declared,actual", [("air", "vacuum"), ("vacuum", "air")])
def test_mislabelled_medium(declared, actual):
    ds = make()
    wl = ds.wl_ca8542.values if actual == "air" else air_to_vacuum(ds.wl_ca8542.values)
    ds = ds.assign_coords(wl_ca8542=("wl_ca8542", wl, {"units": "Angstrom", "wavelength_medium": declared}))
    with pytest.raises(UnitsError, match=f"declared {declared}.*wavelength_medium = '{actual}'"):
        validate_profiles(ds, "obs.nc")


def test_vacuum_declared_is_converted_to_air():
    ds = make()
    vac = air_to_vacuum(ds.wl_halpha.values)
    ds = ds.assign_coords(wl_halpha=("wl_halpha", vac, {"units": "Angstrom", "wavelength_medium": "vacuum"}))
    np.testing.assert_allclose(to_air_angstrom(ds).wl_halpha.values, make().wl_halpha.values, atol=1e-6)


def test_intensity_units_required_and_dn_refused():
    ds = make()
    ds.I_halpha.attrs.pop("units")
    with pytest.raises(UnitsError, match="I_halpha has no 'units'"):
        validate_profiles(ds, "obs.nc")
    with pytest.raises(UnitsError, match="I_halpha has units 'DN'.*calibration"):
        convert_intensity(make(unit="DN"), RADIANCE_PER_HZ, "obs.nc")


def test_mismatched_spatial_dims():
    ds = make()
    ds["I_ca8542"] = ds.I_ca8542.rename(sample="other")
    with pytest.raises(ProfileSchemaError, match="different non-spectral dims"):
        validate_profiles(ds, "obs.nc")
