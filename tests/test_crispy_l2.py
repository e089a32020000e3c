"""crisPy level-2 files as the 2014-era SST/CRISP data have them (the original Radynversion's
example data): one int16 DN cube (wavelength, y, x) per line and scan, no BUNIT, the tunings in
a 'lambda-coordinate' image extension, a WAVE axis in vacuum Angstrom and the central tuning in
TWAVE1, centred 30 mA from the air rest wavelength. Built here from the example scan."""

import dataclasses

import astropy.units as u
import numpy as np
import pytest
from synthetic import TINY_C, training_set

from radynversion.datasets import example_observation
from radynversion.errors import UnitsError
from radynversion.io import open_observation, write_crispy_l2
from radynversion.lines import CA8542, HALPHA
from radynversion.model import ConditionalINN
from radynversion.model.invert import invert
from radynversion.model.preprocess import atmosphere_to_array, normalise_profiles
from radynversion.schema import wavelengths_air_A

#: crisPy l2 programs: H-alpha 15 tunings 0.2 A apart over +-1.4 A, Ca II 8542 25 at 0.1 A
PROGRAMS = {HALPHA.key: (15, 0.2), CA8542.key: (25, 0.1)}
OFFSET_A = -0.03  # the central tuning sits 30 mA blue of the air rest wavelength


def write_pair_file(path, scan, line, date_obs, gain):
    n, step = PROGRAMS[line.key]
    wl_air = line.center_air_A + OFFSET_A + step * (np.arange(n) - n // 2)
    write_crispy_l2(path, scan, line, wl_air, gain, date_obs, pointing_arcsec=(-300.0, 200.0))
    return wl_air


@pytest.fixture(scope="module")
def crispy_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("crispy")
    scan = example_observation().isel(y=slice(20, 26), x=slice(20, 26))
    if "time" in scan.dims:
        scan = scan.isel(time=0)
    peak = float(scan[HALPHA.var].max())
    ha = d / "crisp_l2_20140906_152724_6563_r00447.fits"
    ca = d / "crisp_l2_20140906_152724_8542_r00447.fits"
    wl_ha = write_pair_file(ha, scan, HALPHA, "2014-09-06T15:27:24.000", gain=peak / 20000)
    wl_ca = write_pair_file(ca, scan, CA8542, "2014-09-06T15:27:28.500", gain=peak / 12000)
    return ha, ca, wl_ha, wl_ca


def test_crispy_l2_pair_reads_as_dn_air_with_both_times(crispy_pair):
    ha, ca, wl_ha, wl_ca = crispy_pair
    ds = open_observation([ha, ca])
    for ln, wl in ((HALPHA, wl_ha), (CA8542, wl_ca)):
        assert ds[ln.var].attrs["units"] == "DN"
        np.testing.assert_allclose(wavelengths_air_A(ds, ln), wl, atol=2e-3)  # vacuum in the file
    times = {k: str(v.values) for k, v in ds.coords.items() if k.startswith("time")}
    assert any("15:27:24" in t for t in times.values()) and any("15:27:28" in t for t in times.values())


def test_crispy_l2_dn_pair_inverts_with_a_per_line_model_and_is_refused_by_a_joint_one(crispy_pair):
    ha, ca, *_ = crispy_pair
    ds = open_observation([ha, ca])
    per_line = ConditionalINN(dataclasses.replace(TINY_C, partial_coverage=True, normalisation="per_line")).eval()
    train = training_set(64)
    y, _ = normalise_profiles(train, normalisation="per_line")
    per_line.set_standardisation(atmosphere_to_array(train), y)
    out = invert(ds, per_line, samples=16)
    assert np.isfinite(out["log_T"].values).all()
    assert out["peak"].attrs["units"] == "DN"  # the data's own scale, not the model's unit
    joint = ConditionalINN(TINY_C).eval()
    with pytest.raises(UnitsError, match="DN"):
        invert(ds, joint, samples=16)


def test_the_default_model_is_chosen_by_what_the_data_need(crispy_pair):
    from radynversion.model.checkpoint import (
        DEFAULT_MODEL_PATH,
        DEFAULT_PER_LINE_MODEL_PATH,
        default_model_for,
        default_model_reason,
    )

    ha, ca, *_ = crispy_pair
    calibrated = example_observation().isel(y=slice(0, 2), x=slice(0, 2))
    assert default_model_reason(calibrated) == "" and default_model_for(None, calibrated) == DEFAULT_MODEL_PATH
    dn = open_observation([ha, ca])
    assert "DN" in default_model_reason(dn) and default_model_for(None, dn) == DEFAULT_PER_LINE_MODEL_PATH
    one = calibrated.drop_vars([CA8542.var, CA8542.dim])
    assert "one line alone" in default_model_reason(one)
    wl = calibrated[HALPHA.dim].values
    gap = calibrated.isel({HALPHA.dim: np.flatnonzero(np.abs(wl - HALPHA.center_air_A) > 0.3)})
    assert "partial coverage" in default_model_reason(gap)
    assert default_model_for("mine.pt", dn) == "mine.pt"  # a model asked for is used as it is


@pytest.mark.slow
def test_a_dn_crispy_pair_inverts_in_one_command(crispy_pair, tmp_path):
    import json
    import subprocess
    import sys

    import xarray as xr

    ha, ca, *_ = crispy_pair
    out = tmp_path / "dn.zarr"
    r = subprocess.run([sys.executable, "-m", "radynversion.cli", "invert", str(ha), str(ca), "-o", str(out),
                        "--samples", "16", "--workers", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "uncalibrated input (I_halpha, I_ca8542 in DN)" in r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["model"].endswith("default_model_per_line.pt") and "DN" in summary["model_chosen_for"]
    res = xr.open_zarr(out)
    assert res.attrs["model"].endswith("default_model_per_line.pt")
    assert np.isfinite(res["log_T"].values).all()


def test_radynversion_calibrate_writes_calibrated_profiles(crispy_pair, tmp_path, capsys):
    from radynversion.cli import main

    ha, ca, *_ = crispy_pair
    out = tmp_path / "cal" / "calibrated.nc"
    assert main(["calibrate", str(ha), str(ca), "-o", str(out), "--quiet", "y=0:3,x=0:6"]) == 0
    ds = open_observation(out)
    assert u.Unit(ds[HALPHA.var].attrs["units"]) == u.Unit("W / (m2 Hz sr)")
    assert "slices: y=0:3, x=0:6" in ds.attrs["calibration"]
    capsys.readouterr()
    assert main(["calibrate", str(ha), str(ca), "-o", str(out)]) == 2
    assert "calibrated.nc: exists; expected a new file" in capsys.readouterr().err
    assert main(["calibrate", str(ha), str(ca), "-o", str(tmp_path / "b.nc"), "--quiet", "y=0"]) == 2
    assert "expected e.g. 'y=0:20,x=40:64'" in capsys.readouterr().err


def test_writing_counts_refuses_what_int16_cannot_hold(tmp_path):
    from radynversion.errors import ConfigError, ProfileSchemaError

    scan = example_observation().isel(time=0, y=slice(0, 3), x=slice(0, 3))
    peak = float(scan[HALPHA.var].max())
    holed = scan.copy(deep=True)
    one = (holed.y == holed.y[1]) & (holed.x == holed.x[2])
    holed[HALPHA.var] = holed[HALPHA.var].where(~one)
    with pytest.raises(ProfileSchemaError, match="I_halpha has 1 pixel.s. with NaN or inf"):
        write_pair_file(tmp_path / "a.fits", holed, HALPHA, "2014-09-06T15:27:24.000", gain=peak / 20000)
    with pytest.raises(ConfigError, match="expected -32768 to 32767"):
        write_pair_file(tmp_path / "b.fits", scan, HALPHA, "2014-09-06T15:27:24.000", gain=peak / 40000)
    with pytest.raises(ConfigError, match="expected -32768 to 32767"):
        write_pair_file(tmp_path / "c.fits", scan, HALPHA, "2014-09-06T15:27:24.000", gain=-peak / 40000)
    assert not any(tmp_path.iterdir())  # nothing half-written
