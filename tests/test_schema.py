"""The profile schema: validation messages and astropy unit conversion."""

import astropy.units as u
import numpy as np
import pytest

from radynversion import LINES, air_to_vacuum
from radynversion.errors import ProfileSchemaError, UnitsError
from radynversion.lines import HALPHA
from radynversion.schema import (
    RADIANCE_PER_AA,
    RADIANCE_PER_HZ,
    convert_intensity,
    intensity_unit,
    parse_intensity_unit,
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


@pytest.mark.parametrize("name", ["counts", "Counts", "ct", "cts", "ADU", "adu", "DN", "data numbers"])
def test_camera_count_units_read_as_dn_with_the_calibration_hint(name):
    """Uncalibrated camera units, whichever way a file spells them (astropy parses some as
    units of their own, others not at all), are DN: refused with the hint to calibrate, never
    an astropy parse error."""
    ds = make()
    for ln in LINES:
        ds[ln.var].attrs["units"] = name
    assert all(intensity_unit(ds, ln, "obs.nc") == u.DN for ln in LINES)
    with pytest.raises(UnitsError, match=f"I_halpha has units '{name}'.*not convertible.*calibration"):
        convert_intensity(ds, RADIANCE_PER_HZ, "obs.nc")


@pytest.mark.parametrize(("name", "expect"), [
    ("DN/s", u.DN), ("ct s-1", u.DN), ("counts/s", u.DN), ("DN per second", u.DN), ("1e3 DN", u.DN),
    ("I/Ic", u.dimensionless_unscaled), ("normalised", u.dimensionless_unscaled), ("%", u.dimensionless_unscaled),
    ("arb. units", u.dimensionless_unscaled), ("", u.dimensionless_unscaled),
    ("ph / (s cm2 sr Angstrom)", u.Unit("ph / (s cm2 sr Angstrom)")),  # a calibrated photon radiance
])
def test_uncalibrated_rates_and_relative_intensities_are_read_as_such(name, expect):
    """Count rates are camera counts (DN) and intensities relative to the continuum or in
    arbitrary units are dimensionless: both uncalibrated, so the per-line variant takes them."""
    assert parse_intensity_unit(name) == expect
    ds = make()
    for ln in LINES:
        ds[ln.var].attrs["units"] = name
    assert all(intensity_unit(ds, ln, "obs.nc") == expect for ln in LINES)


def test_unparsable_intensity_units_name_the_file_and_variable():
    ds = make()
    ds["I_halpha"].attrs["units"] = "furlongs per fortnight squared"
    with pytest.raises(UnitsError, match=r"obs.nc: variable I_halpha has units 'furlongs per fortnight squared', "
                                         r"which astropy cannot parse"):
        intensity_unit(ds, HALPHA, "obs.nc")


def test_mismatched_spatial_dims():
    ds = make()
    ds["I_ca8542"] = ds.I_ca8542.rename(sample="other")
    with pytest.raises(ProfileSchemaError, match="different non-spectral dims"):
        validate_profiles(ds, "obs.nc")


def test_descending_wavelengths_are_valid_and_come_out_increasing():
    ds = make()
    rev = ds.isel({ln.dim: slice(None, None, -1) for ln in LINES})
    validate_profiles(rev)
    air = to_air_angstrom(rev)
    for ln in LINES:
        np.testing.assert_array_equal(air[ln.dim].values, ds[ln.dim].values)
        np.testing.assert_array_equal(air[ln.var].values, ds[ln.var].values)


@pytest.mark.parametrize("change, what", [("repeat", "has repeated wavelengths"), ("nan", "has NaN or inf values"),
                                          ("shuffle", "is not sorted")])
def test_bad_wavelength_axes_say_what_is_wrong(change, what):
    ds = make()
    wl = ds["wl_halpha"].values.copy()
    if change == "repeat":
        wl[5] = wl[4]
    elif change == "nan":
        wl[5] = np.nan
    else:
        wl[[4, 5]] = wl[[5, 4]]
    bad = ds.assign_coords(wl_halpha=("wl_halpha", wl, ds["wl_halpha"].attrs))
    with pytest.raises(ProfileSchemaError, match=f"obs.nc: coordinate wl_halpha {what}; expected"):
        validate_profiles(bad, "obs.nc")


def test_float16_intensities_are_converted_in_float32():
    """1e-8 W / (m2 Hz sr) underflows in float16: the converted intensities are float32."""
    ds = make()
    half = ds.copy()
    for ln in LINES:
        half[ln.var] = (ds[ln.var] * 1e8).astype(np.float16).assign_attrs(units="1e-8 W / (m2 Hz sr)")
    out = convert_intensity(half, RADIANCE_PER_HZ)
    for ln in LINES:
        assert out[ln.var].dtype == np.float32
        np.testing.assert_allclose(out[ln.var].values, ds[ln.var].values, rtol=2e-3)


def test_a_stokes_dim_other_than_i_is_refused():
    ds = make()
    validate_profiles(ds.expand_dims(stokes=["I"]))
    validate_profiles(ds.expand_dims(stokes=[0]))  # I by its index in (I, Q, U, V)
    for bad, shown in [(ds.expand_dims(stokes=["I", "Q", "U", "V"]), "of size 4 ['I', 'Q', 'U', 'V']"),
                       (ds.expand_dims(stokes=["V"]), "of size 1 ['V']"),
                       (ds.expand_dims(stokes=[3]), "of size 1 ['3']")]:
        with pytest.raises(ProfileSchemaError) as err:
            validate_profiles(bad, "obs.nc")
        assert f"obs.nc: variable I_halpha has a 'stokes' dim {shown}; expected Stokes I only" in str(err.value)


# -- physically impossible intensities (issue 25) ------------------------------------------------
def test_impossible_pixels_are_negative_or_nowhere_positive_in_a_line():
    from radynversion.schema import impossible_pixels

    ds = make(n=5)
    ha, ca = LINES[0], LINES[1]
    ds[ca.var].values[1, 3] = -1e-12  # one negative value
    ds[ha.var].values[2, :] = 0.0  # a line dark in this pixel
    ds[ca.var].values[3, :] = np.nan  # NaN: not judged here (NaN rows mask themselves)
    np.testing.assert_array_equal(impossible_pixels(ds), [False, True, True, False, False])
    # C order over the non-spectral dims in I_halpha's order, whatever the other line's order
    grid = profile_dataset({ln.key: ln.synth_wavelengths() for ln in LINES},
                           {ln.key: np.ones((2, 3, ln.synth_wavelengths().size)) for ln in LINES},
                           RADIANCE_PER_HZ, dims=("y", "x"))
    grid[ca.var].values[1, 0, 7] = -1.0
    grid[ca.var] = grid[ca.var].transpose(ca.dim, "x", "y")
    np.testing.assert_array_equal(impossible_pixels(grid), [False, False, False, True, False, False])


@pytest.mark.parametrize("lazy", [False, True])
def test_check_intensities_names_the_file_the_variable_and_what_was_expected(lazy):
    from radynversion.schema import check_intensities

    def bad(change):
        ds = make(n=4)
        change(ds)
        ds.attrs["source_file"] = "scan.nc"
        return ds.chunk({"sample": 1}) if lazy else ds

    ca = LINES[1]
    check_intensities(bad(lambda ds: None))
    cases = [
        (lambda ds: ds[ca.var].values.__setitem__(slice(None), -1.0),
         "scan.nc: I_ca8542 has no positive value (values from -1 to -1 W / (Hz sr m2))"),
        (lambda ds: ds[ca.var].values.__setitem__(slice(None), 0.0), "scan.nc: I_ca8542 has no positive value (zero everywhere)"),
        (lambda ds: ds[ca.var].values.__setitem__((slice(None), 3), -2e-9),
         "scan.nc: every pixel of I_ca8542 has a negative value (down to -2e-09"),
    ]
    for change, message in cases:
        with pytest.raises(ProfileSchemaError) as err:
            check_intensities(bad(change))
        assert str(err.value).startswith(message) and "expected positive" in str(err.value), str(err.value)
    # pixels bad in one line or the other: none left
    def split(ds):
        ds[LINES[0].var].values[:2, 0] = -1.0
        ds[ca.var].values[2:, 0] = -1.0
    with pytest.raises(ProfileSchemaError, match="every pixel has a negative value, or no positive one, in "
                                                 "I_halpha or I_ca8542"):
        check_intensities(bad(split))
    # some pixels bad: passes (they are masked)
    check_intensities(bad(lambda ds: ds[ca.var].values.__setitem__((slice(0, 2), 3), -1.0)))
