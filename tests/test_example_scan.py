"""The shipped example scan: SSTRED cubes that the readers open, and the truth that matches them."""

from __future__ import annotations

import json
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits

from radynversion.atmosphere import default_height_grid
from radynversion.calibration import calibrate
from radynversion.datasets import example_scan, example_truth
from radynversion.io import map_header, open_observation
from radynversion.lines import CA8542, HALPHA, LINES
from radynversion.schema import RADIANCE_PER_HZ, validate_profiles

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")


@pytest.fixture(scope="module")
def scan():
    return open_observation(example_scan())


@pytest.fixture(scope="module")
def truth():
    return example_truth()


def test_package_data_is_small():
    paths = example_scan()
    files = [*paths, paths[0].parent / "truth.nc"]
    assert sum(p.stat().st_size for p in files) < 5 * 2**20
    assert paths[0].name.startswith("nb_6563_") and paths[1].name.startswith("nb_8542_")
    assert all(p.name.endswith("_im.fits") for p in paths)


def test_scan_opens_as_a_calibrated_crisp_observation(scan):
    validate_profiles(scan)
    assert scan.sizes["y"] == 64 and scan.sizes["x"] == 64 and scan.sizes["time"] == 1
    assert scan[HALPHA.var].dims == ("time", HALPHA.dim, "y", "x")
    assert scan.sizes[HALPHA.dim] == 15 and scan.sizes[CA8542.dim] == 21
    for ln in LINES:
        assert u.Unit(scan[ln.var].attrs["units"]) == RADIANCE_PER_HZ
        wl = scan[ln.dim]
        assert wl.attrs["wavelength_medium"] == "air" and wl.attrs["units"] == "Angstrom"
        model = ln.model_wavelengths()
        assert wl.values[0] <= model[0] and wl.values[-1] >= model[-1]  # covers the model window
        steps = np.diff(wl.values)
        assert steps.max() > 2 * steps.min()  # irregular CRISP tunings, denser in the core
        I = scan[ln.var].values
        assert np.all(np.isfinite(I)) and 1e-9 < np.median(I) < 1e-6
    assert scan.attrs["telescope"] == "SST" and scan.attrs["instrument"] == "CRISP"
    assert scan["time_ca8542"].values[0] > scan["time_halpha"].values[0]  # lines scanned in turn


def test_scan_has_a_helioprojective_wcs_and_observer(scan):
    meta = map_header(scan)
    assert meta["CTYPE1"] == "HPLN-TAN" and meta["NAXIS1"] == 64 and meta["NAXIS2"] == 64
    assert meta["CDELT1"] == pytest.approx(0.058, rel=1e-6)
    assert meta["CRVAL1"] == pytest.approx(118.0, abs=1e-6) and meta["CRVAL2"] == pytest.approx(-86.0, abs=1e-6)
    assert meta["TELESCOP"] == "SST" and "DSUN_OBS" in meta and "OBSGEO-X" in meta
    assert u.Unit(meta["BUNIT"], format="fits") == RADIANCE_PER_HZ
    with fits.open(example_scan()[1]) as hdul:  # Ca II 8542 is polarimetric: I, Q, U, V
        assert hdul[0].data.shape == (1, 4, 21, 64, 64) and hdul[0].header["BUNIT"] == "W m^-2 Hz^-1 sr^-1"
    import sunpy.map

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sunpy.map.Map(scan[HALPHA.var].isel(time=0, wl_halpha=7).values, meta)
    centre = m.pixel_to_world(31.5 * u.pix, 31.5 * u.pix)
    assert centre.Tx.to_value(u.arcsec) == pytest.approx(118.0, abs=1e-3)


def test_truth_aligns_with_the_scan(scan, truth):
    assert truth["log_T"].dims == ("y", "x", "height")
    np.testing.assert_array_equal(truth["y"].values, scan["y"].values)
    np.testing.assert_array_equal(truth["x"].values, scan["x"].values)
    np.testing.assert_allclose(truth["height"].values, default_height_grid())
    for v in ("log_ne", "log_T", "v"):
        assert truth[v].dtype == np.float32 and np.all(np.isfinite(truth[v].values))
    kinds = np.bincount(truth["kind"].values.ravel(), minlength=3)
    assert np.all(kinds > 100) and kinds[0] > kinds[2]  # quiet, weak and flare; mostly quiet
    flare = truth["kind"].values == 2
    chrom = (truth["height"] > 0.5) & (truth["height"] < 2.5)
    v = truth["v"].where(chrom).values[flare]
    assert np.nanmax(v) > 10 and np.nanmin(v) < -10  # down- and upflows in the ribbon
    # the ribbon is bright in the line cores, the quiet Sun is not
    core = scan[HALPHA.var].isel(time=0).sel({HALPHA.dim: HALPHA.center_air_A}, method="nearest").values
    assert np.median(core[flare]) > 1.5 * np.median(core[truth["kind"].values == 0])
    json.loads(truth.attrs["pool"])


def test_calibration_of_the_scan_in_dn_recovers_the_gain(scan):
    dn = scan.copy()
    for ln in LINES:
        dn[ln.var] = (scan[ln.var] * 3.0e9).assign_attrs(units="DN")
    cal = calibrate(dn)
    rec = json.loads(cal.attrs["calibration"])
    assert rec["mu"] == pytest.approx(np.sqrt(1 - (np.hypot(118, 86) / 959.6) ** 2), abs=2e-3)
    for ln in LINES:  # quiet pool atmospheres are perturbed FAL-C: their far wings within 10 %
        assert rec["factors"][ln.key][0] == pytest.approx(1 / 3.0e9, rel=0.10)
