"""The velocity frame: rest wavelengths, the quiet Sun of the field, or an offset (sign: a
positive velocity is a redshift)."""

import numpy as np
import pytest
import xarray as xr

from radynversion.atmosphere import C_KM_S
from radynversion.errors import CalibrationError, ConfigError
from radynversion.lines import CA8542, HALPHA, LINES
from radynversion.schema import RADIANCE_PER_HZ, profile_dataset
from radynversion.velocity_frame import frame_shifts_kms, line_core_A, to_velocity_frame

PROGRAM = {HALPHA.key: HALPHA.center_air_A + np.arange(-1.4, 1.41, 0.1),
           CA8542.key: CA8542.center_air_A + np.arange(-1.0, 1.01, 0.07)}


def _field(v_kms: float, ny: int = 3, nx: int = 4, emission_rows: int = 0) -> xr.Dataset:
    """Absorption lines Doppler-shifted by ``v_kms`` (positive = redshift) in every pixel; the
    first ``emission_rows`` rows are bright flare pixels in emission."""
    rng = np.random.default_rng(0)
    ints = {}
    for ln in LINES:
        wl = PROGRAM[ln.key]
        centre = ln.center_air_A * (1 + v_kms / C_KM_S)
        prof = 1.0 - 0.7 * np.exp(-(((wl - centre) / 0.3) ** 2))
        cube = np.broadcast_to(prof, (ny, nx, wl.size)).copy() * (1 + 0.01 * rng.standard_normal((ny, nx, 1)))
        cube[:emission_rows] = 1.0 + 2.0 * np.exp(-(((wl - ln.center_air_A) / 0.3) ** 2))
        ints[ln.key] = (3e-8 * cube).astype(np.float32)
    return profile_dataset(PROGRAM, ints, RADIANCE_PER_HZ, dims=("y", "x"))


def test_line_core_is_found_between_tunings():
    wl = PROGRAM[HALPHA.key]
    for shift in (-0.037, 0.0, 0.021):
        prof = 1 - 0.6 * np.exp(-(((wl - HALPHA.center_air_A - shift) / 0.4) ** 2))
        assert line_core_A(prof[None], wl, HALPHA)[0] == pytest.approx(HALPHA.center_air_A + shift, abs=4e-3)
    emission = 1 + np.exp(-(((wl - HALPHA.center_air_A) / 0.4) ** 2))
    assert np.isnan(line_core_A(emission[None], wl, HALPHA)[0])  # no minimum inside: no core


def test_quiet_frame_measures_a_redshift_and_moves_it_to_rest():
    ds = _field(+1.5, emission_rows=1)  # one row of flare pixels: not quiet
    quiet = xr.DataArray(np.broadcast_to(np.arange(3)[:, None] >= 1, (3, 4)), dims=("y", "x"))
    shifts = frame_shifts_kms(ds, "quiet", quiet=quiet)
    assert shifts[HALPHA.key] == pytest.approx(1.5, abs=0.2)
    assert shifts[CA8542.key] == pytest.approx(1.5, abs=0.2)
    out = to_velocity_frame(ds, "quiet", quiet=quiet)
    assert out.attrs["velocity_frame"] == "quiet"
    assert out.attrs["velocity_frame_shift_kms_halpha"] == pytest.approx(shifts[HALPHA.key])
    cores = line_core_A(out[HALPHA.var].isel(y=1).values, out[HALPHA.dim].values, HALPHA)
    np.testing.assert_allclose(cores, HALPHA.center_air_A, atol=0.2 / C_KM_S * HALPHA.center_air_A)
    np.testing.assert_array_equal(out[HALPHA.var].values, ds[HALPHA.var].values)  # only the wavelengths move


def test_offset_and_rest_frames_and_refusals():
    ds = _field(0.0)
    out = to_velocity_frame(ds, 2.0)
    want = ds[CA8542.dim].values * (1 - 2.0 / C_KM_S)
    np.testing.assert_allclose(out[CA8542.dim].values, want)
    assert out.attrs["velocity_frame"] == "2.0"
    rest = to_velocity_frame(ds)
    np.testing.assert_array_equal(rest[HALPHA.dim].values, ds[HALPHA.dim].values)
    with pytest.raises(ConfigError, match="velocity frame 'sun'"):
        frame_shifts_kms(ds, "sun")
    with pytest.raises(ConfigError, match="at most 100 km/s"):
        frame_shifts_kms(ds, 500.0)
    bright = _field(0.0, emission_rows=3)  # every pixel in emission: no quiet core
    with pytest.raises(CalibrationError, match=r"no quiet pixel shows a H-alpha 6563 core") as err:
        frame_shifts_kms(bright, "quiet")
    assert "\n" not in str(err.value)


def test_quiet_frame_of_one_line_alone():
    ds = _field(-1.0).drop_vars([CA8542.var, CA8542.dim])
    shifts = frame_shifts_kms(ds, "quiet", quiet=xr.DataArray(np.ones((3, 4), bool), dims=("y", "x")))
    assert set(shifts) == {HALPHA.key} and shifts[HALPHA.key] == pytest.approx(-1.0, abs=0.2)
    auto = frame_shifts_kms(ds, "quiet")  # the automatic quiet region works on one line too
    assert auto[HALPHA.key] == pytest.approx(-1.0, abs=0.3)


def test_the_inversion_records_its_frame():
    from synthetic import scan, tiny_cinn

    import radynversion.engine  # noqa: F401 - the ds.radyn accessor

    ds, net = scan(1, 2), tiny_cinn()
    rest = ds.radyn.invert(model=net, samples=8)
    assert rest.attrs["velocity_frame"] == "rest"
    moved = ds.radyn.invert(model=net, samples=8, velocity_frame=1.5)
    assert moved.attrs["velocity_frame"] == "1.5"
    assert moved.attrs["velocity_frame_shift_kms_halpha"] == pytest.approx(1.5)
    assert not np.allclose(moved["v"].compute().values, rest["v"].compute().values)


def test_cli_velocity_frame_option():
    import argparse

    from radynversion.cli import _frame

    assert _frame("quiet") == "quiet" and _frame("-2.5") == -2.5
    with pytest.raises(argparse.ArgumentTypeError, match="'sun': expected 'rest', 'quiet' or an offset"):
        _frame("sun")


def test_quiet_frame_of_a_lazy_scan_and_numpy_offsets():
    ds = _field(+1.5)
    quiet = xr.DataArray(np.ones((3, 4), bool), dims=("y", "x"))
    lazy = ds.chunk({"y": 1})
    assert frame_shifts_kms(lazy, "quiet", quiet=quiet) == pytest.approx(frame_shifts_kms(ds, "quiet", quiet=quiet))
    assert frame_shifts_kms(ds, np.float32(2.0))[HALPHA.key] == pytest.approx(2.0)


def test_a_result_recorded_frame_is_applied_to_the_observation_again():
    from radynversion.velocity_frame import in_recorded_frame

    ds = _field(3.0)
    framed = to_velocity_frame(ds, 3.0)
    again = in_recorded_frame(ds, framed.attrs)  # e.g. verify comparing the observation with a result
    for ln in LINES:
        np.testing.assert_allclose(again[ln.dim].values, framed[ln.dim].values, rtol=1e-14)
    assert in_recorded_frame(framed, framed.attrs) is framed  # already in that frame: untouched
    assert in_recorded_frame(ds, {"velocity_frame": "rest"}) is ds
