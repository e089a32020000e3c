"""Observation readers: SSTRED -TAB cubes, linear-WCS cubes, crisPy per-scan files, netCDF/Zarr.

SSTRED cubes are written with the package's own writer,
:func:`radynversion.io.fits.write_sstred_cube`, in the layout SSTRED's ``red_fitscube_addwcs``
writes (one-row ``WCS-TAB`` binary table, coordinate column of numpy shape
``(nscan, ntune, 2, 2, M)``, ``HPLN-INDEX = [1, nx]``, ``HPLT-INDEX = [1, ny]``, unity
``CRPIX/CRVAL/CDELT``, ``PVi_3`` numbering the coordinates).
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from radynversion import CA8542, HALPHA, air_to_vacuum
from radynversion.errors import ConfigError, DataFileError, ProfileSchemaError, UnitsError
from radynversion.io.fits import (
    identify_line,
    map_header,
    read_crispy_fits,
    read_sstred_cube,
    write_sstred_cube,
)
from radynversion.io.observation import open_observation
from radynversion.schema import RADIANCE_PER_HZ, profile_dataset, to_air_angstrom, validate_profiles

# headers written here have DATE-OBS, which astropy's WCS notes as it fills in MJD-OBS
pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

NY, NX = 6, 5
SCALE = 0.059  # arcsec / pixel
X0, Y0 = 512.3, -287.6  # helioprojective coordinates [arcsec] of pixel (0, 0)
DATEREF = "2017-09-06T00:00:00"
T0 = 36000.0  # s after DATEREF
CADENCE = 20.0  # s between scans
BUNIT = "W m^-2 Hz^-1 sr^-1"  # as SSTRED writes it


def tunings(line, n, half):
    """Irregular air tunings [Angstrom] within +-half of the line centre, increasing."""
    rng = np.random.default_rng(len(line.key) + n)
    inner = np.sort(rng.uniform(-half, half, n - 2))
    return line.center_air_A + np.concatenate([[-half], inner, [half]])


WL_HA = tunings(HALPHA, 15, 1.5)
WL_CA = tunings(CA8542, 21, 1.75)


def cube(nscan, nstokes, ntune, ny=NY, nx=NX, seed=0):
    """Data of numpy shape (nscan, nstokes, ntune, ny, nx) whose Stokes k is 10 k + noise."""
    rng = np.random.default_rng(seed)
    data = rng.random((nscan, nstokes, ntune, ny, nx)).astype(np.float32)
    data += 10.0 * np.arange(nstokes, dtype=np.float32)[None, :, None, None, None]
    return data


def tuning_times(nscan, ntune):
    """Seconds after DATEREF of every (scan, tuning): numpy shape (nscan, ntune)."""
    return T0 + CADENCE * np.arange(nscan)[:, None] + 1.0 * np.arange(ntune)[None, :]


def _patch_wcs_table(path, wave_nm=None, idl_tdim=False):
    """Rewrite the WCS-TAB table of ``path``: new WAVE coordinates (numpy shape (nscan, ntune)),
    or the TDIM that IDL writes for one scan (trailing unit dim dropped)."""
    with fits.open(path, memmap=False) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    tab = hdul["WCS-TAB"]
    name = tab.columns[0].name
    coords = np.array(tab.data[name])  # (1, [nscan,] ntune, 2, 2, M)
    if wave_nm is not None:
        k = name.split("+").index("WAVE")
        wave = np.asarray(wave_nm, dtype=float)
        coords[..., k] = np.broadcast_to(wave, coords.shape[1:-3])[None, ..., None, None]
    tdim = coords.shape[1:][::-1]
    if idl_tdim:  # IDL drops the trailing unit dim of a single-scan table
        assert tdim[-1] == 1
        tdim = tdim[:-1]
    cols = [fits.Column(name=name, format=f"{coords[0].size}D", dim="(" + ",".join(map(str, tdim)) + ")",
                        array=coords)] + [c for c in tab.columns if c.name != name]
    hdul["WCS-TAB"] = fits.BinTableHDU.from_columns(cols, header=tab.header, name="WCS-TAB")
    hdul.writeto(path, overwrite=True)


def write_sstred(path, wl_A, nscan=2, nstokes=4, time_axis=True, ny=NY, nx=NX, bunit=BUNIT,
                 idl_tdim=False, wl_per_scan=None, extra=None, seed=0):
    """An SSTRED-style cube (radynversion.io.fits.write_sstred_cube) with -TAB
    HPLN/HPLT/WAVE(/TIME) in a WCS-TAB binary table; pixel (0, 0) at (X0, Y0), tuning k of scan
    s at T0 + CADENCE s + k seconds after DATEREF. Returns the data, numpy shape
    (nscan, nstokes, ntune, ny, nx), or (nstokes, ntune, ny, nx) without a time axis."""
    ntune = len(wl_A)
    data = cube(nscan, nstokes, ntune, ny, nx, seed)
    try:
        line, medium = identify_line(np.asarray(wl_A))
        wl_write, patch = np.asarray(wl_A, dtype=float), None
    except ProfileSchemaError:  # deliberately no known line: written as H-alpha, then patched
        line, medium = HALPHA, "air"
        wl_write, patch = HALPHA.center_air_A + np.linspace(-1, 1, ntune), np.asarray(wl_A) / 10.0
    if wl_per_scan is not None:
        patch = np.asarray(wl_per_scan) / 10.0
    times = (np.datetime64(DATEREF, "ns")
             + ((T0 + CADENCE * np.arange(nscan) + (ntune - 1) / 2) * 1e9).astype("timedelta64[ns]"))
    da = xr.DataArray(
        data, dims=("time", "stokes", line.dim, "y", "x"),
        coords={"time": times, "stokes": list("IQUV")[:nstokes],
                line.dim: (line.dim, wl_write, {"units": "Angstrom", "wavelength_medium": medium})},
        name=line.var)  # no units attr: BUNIT only when bunit is given
    centre = (X0 + (nx - 1) / 2 * SCALE, Y0 + (ny - 1) / 2 * SCALE)
    # the same observation-level DATE-* for every line, so that two lines share one map header
    hdr = {"TELESCOP": "Swedish 1-meter Solar Telescope", "DATE-OBS": "2017-09-06T10:00:00",
           "DATE-BEG": "2017-09-06T10:00:00", "DATE-END": "2017-09-06T10:01:00",
           "DATE-AVG": "2017-09-06T10:00:30"}
    hdr.update(extra or {})
    write_sstred_cube(path, da.isel(time=slice(0, 1)) if not time_axis else da, centre_arcsec=centre,
                      scale_arcsec=SCALE, date_ref=DATEREF, tuning_step_s=1.0, bunit=bunit,
                      time_axis=time_axis, header=hdr)
    if patch is not None or idl_tdim:
        _patch_wcs_table(path, patch, idl_tdim)
    return data if time_axis else data[0]


def write_linear(path, wl0_A, dwl, ntune, cunit3="nm", nscan=2, nstokes=4, bunit=BUNIT):
    """A cube with a linear WCS: HPLN-TAN/HPLT-TAN, WAVE with CRVAL3/CDELT3, STOKES, UTC."""
    data = cube(nscan, nstokes, ntune, seed=3)
    hdu = fits.PrimaryHDU(data)
    h = hdu.header
    factor = (1 * u.AA).to_value(u.Unit(cunit3))
    for k, v in dict(CTYPE1="HPLN-TAN", CTYPE2="HPLT-TAN", CTYPE3="WAVE", CTYPE4="STOKES",
                     CTYPE5="UTC", CUNIT1="arcsec", CUNIT2="arcsec", CUNIT3=cunit3, CUNIT5="s",
                     CRPIX1=1.0, CRPIX2=1.0, CRPIX3=1.0, CRPIX4=1.0, CRPIX5=1.0,
                     CRVAL1=X0, CRVAL2=Y0, CRVAL3=wl0_A * factor, CRVAL4=1.0, CRVAL5=T0,
                     CDELT1=SCALE, CDELT2=SCALE, CDELT3=dwl * factor, CDELT4=1.0, CDELT5=CADENCE,
                     DATEREF=DATEREF, BUNIT=bunit, TELESCOP="SST", INSTRUME="CRISP").items():
        h[k] = v
    hdu.writeto(path)
    return data


def write_crispy(path, wl_A, date_avg, nstokes=None, seed=5, unit_in_hdu1=None):
    """A crisPy per-scan file: (ntune, ny, nx) or (nstokes, ntune, ny, nx), true wavelengths in HDU 1."""
    ntune = len(wl_A)
    data = cube(1, nstokes or 1, ntune, seed=seed)[0]
    if nstokes is None:
        data = data[0]
    hdu = fits.PrimaryHDU(data)
    h = hdu.header
    for k, v in dict(CTYPE1="HPLN-TAN", CTYPE2="HPLT-TAN", CTYPE3="WAVE", CUNIT1="arcsec",
                     CUNIT2="arcsec", CUNIT3="Angstrom", CRPIX1=1.0, CRPIX2=1.0, CRPIX3=ntune // 2 + 1,
                     CRVAL1=X0, CRVAL2=Y0, CRVAL3=float(np.median(wl_A)), CDELT1=SCALE, CDELT2=SCALE,
                     CDELT3=0.1, DATE_AVG=None).items():
        if v is not None:
            h[k] = v
    if nstokes:
        h["CTYPE4"], h["CRPIX4"], h["CRVAL4"], h["CDELT4"] = "STOKES", 1.0, 1.0, 1.0
    h["DATE-AVG"] = date_avg
    h["WDESC1"] = "Halpha" if abs(np.median(wl_A) - HALPHA.center_air_A) < 5 else "Ca II 8542"
    ext = fits.ImageHDU(np.asarray(wl_A, dtype=float))
    if unit_in_hdu1:
        ext.header["BUNIT"] = unit_in_hdu1
    fits.HDUList([hdu, ext]).writeto(path)
    return data


def corners_of(m):
    """World coordinates [arcsec] of pixels (0, 0) and (nx-1, ny-1) of a sunpy map."""
    c = m.pixel_to_world([0, m.data.shape[1] - 1] * u.pix, [0, m.data.shape[0] - 1] * u.pix)
    return c.Tx.to_value(u.arcsec), c.Ty.to_value(u.arcsec)


# ---------------------------------------------------------------------------------------------
# SSTRED -TAB cubes
# ---------------------------------------------------------------------------------------------


def test_sstred_tab_cube_round_trips_wavelengths_time_and_stokes_i(tmp_path):
    f = tmp_path / "nb_6563_2017-09-06T10:00:00_scans=0-1_im.fits"
    data = write_sstred(f, WL_HA)
    ds = read_sstred_cube(f)
    da = ds[HALPHA.var]
    assert da.dims == ("time", HALPHA.dim, "y", "x")
    assert da.shape == (2, 15, NY, NX)
    wl = ds[HALPHA.dim]
    np.testing.assert_allclose(wl.values, WL_HA, rtol=0, atol=1e-9)
    assert wl.attrs["units"] == "Angstrom" and wl.attrs["wavelength_medium"] == "air"
    # Stokes I is index 0 of numpy axis 1; the values round-trip exactly, in native byte order
    np.testing.assert_array_equal(da.values, data[:, 0])
    assert da.dtype == np.float32 and da.dtype.isnative
    # each scan's time is DATEREF + the mean of its tunings' times
    expect = (Time(DATEREF, scale="utc") + tuning_times(2, 15).mean(axis=1) * u.s).utc.to_value("datetime64")
    np.testing.assert_array_equal(ds["time"].values, expect.astype("datetime64[ns]"))
    assert u.Unit(da.attrs["units"]) == RADIANCE_PER_HZ
    assert ds.attrs["reader"] == "sstred" and ds.attrs["line"] == "halpha"
    assert ds.attrs["source_files"] == [str(f)]
    assert ds.attrs["telescope"] == "Swedish 1-meter Solar Telescope" and ds.attrs["instrument"] == "CRISP"
    np.testing.assert_allclose(ds.attrs["pixel_scale_arcsec"], [SCALE, SCALE], rtol=1e-9)
    np.testing.assert_allclose(ds.attrs["pointing_hpln_arcsec"], X0 + (NX - 1) / 2 * SCALE, rtol=1e-12)


def test_stokes_parameter_is_selected_from_the_stokes_axis(tmp_path):
    f = tmp_path / "nb_8542_scans=0-1_stokes_corrected_im.fits"
    data = write_sstred(f, WL_CA)
    ds = read_sstred_cube(f, stokes="V")
    np.testing.assert_array_equal(ds[CA8542.var].values, data[:, 3])
    assert ds[CA8542.var].attrs["stokes"] == "V"
    assert ds[CA8542.dim].size == 21


def test_cube_without_time_axis_has_no_time_dim(tmp_path):
    f = tmp_path / "nb_6563_single_im.fits"
    data = write_sstred(f, WL_HA, nscan=1, time_axis=False)
    ds = read_sstred_cube(f)
    assert ds[HALPHA.var].dims == (HALPHA.dim, "y", "x")
    np.testing.assert_array_equal(ds[HALPHA.var].values, data[0])
    np.testing.assert_allclose(ds[HALPHA.dim].values, WL_HA, atol=1e-9)


def test_single_scan_cube_keeps_a_length_one_time_dim_even_with_idl_tdim(tmp_path):
    """IDL writes TDIM (4,2,2,ntune) for one scan, which wcslib refuses; it is padded and read."""
    f = tmp_path / "nb_6563_scans=0-0_im.fits"
    write_sstred(f, WL_HA, nscan=1, idl_tdim=True)
    with fits.open(f) as hdul:
        assert hdul["WCS-TAB"].header["TDIM1"] == f"(4,2,2,{WL_HA.size})"
        with pytest.raises(ValueError, match="TDIM"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            WCS(hdul[0].header, fobj=hdul)
    ds = read_sstred_cube(f)
    assert ds[HALPHA.var].dims == ("time", HALPHA.dim, "y", "x") and ds.sizes["time"] == 1
    np.testing.assert_allclose(ds[HALPHA.dim].values, WL_HA, atol=1e-9)


def test_vacuum_wavelengths_are_recognised_by_value(tmp_path):
    f = tmp_path / "nb_8542_vacuum_im.fits"
    write_sstred(f, air_to_vacuum(WL_CA))
    ds = read_sstred_cube(f)
    assert ds[CA8542.dim].attrs["wavelength_medium"] == "vacuum"
    np.testing.assert_allclose(ds[CA8542.dim].values, air_to_vacuum(WL_CA), atol=1e-9)


def test_tunings_that_differ_between_scans(tmp_path):
    small = np.stack([WL_HA, WL_HA + 0.0004])  # 0.4 mA: kept, recorded
    f = tmp_path / "small.fits"
    write_sstred(f, WL_HA, wl_per_scan=small)
    ds = read_sstred_cube(f)
    np.testing.assert_allclose(ds[HALPHA.dim].values, WL_HA, atol=1e-9)
    assert ds.attrs["wavelength_scan_deviation_mA"] == pytest.approx(0.4, abs=1e-3)
    big = np.stack([WL_HA, WL_HA + 0.01])  # 10 mA: refused
    g = tmp_path / "big.fits"
    write_sstred(g, WL_HA, wl_per_scan=big)
    with pytest.raises(ProfileSchemaError, match=r"big\.fits.*differ between scans"):
        read_sstred_cube(g)


def test_bunit_dn_missing_and_unparsable(tmp_path):
    f = tmp_path / "dn.fits"
    write_sstred(f, WL_HA, bunit="dn")
    assert read_sstred_cube(f)[HALPHA.var].attrs["units"] == "DN"
    g = tmp_path / "none.fits"
    write_sstred(g, WL_HA, bunit=None)
    attrs = read_sstred_cube(g)[HALPHA.var].attrs
    assert attrs["units"] == "DN" and "assumed" in attrs["units_note"]
    h = tmp_path / "junk.fits"
    write_sstred(h, WL_HA, bunit="furlongs per fortnight squiggle")
    with pytest.raises(UnitsError, match=r"junk\.fits.*BUNIT"):
        read_sstred_cube(h)


def test_distortion_keywords_are_ignored_and_listed(tmp_path):
    f = tmp_path / "cmap.fits"
    write_sstred(f, WL_HA, extra={"CWDIS3": "Lookup", "CWERR3": 0.002, "DW3": "EXTVER: 1"})
    ds = read_sstred_cube(f)
    assert ds.attrs["wcs_distortions_ignored"] == "CWDIS3, CWERR3, DW3"
    np.testing.assert_allclose(ds[HALPHA.dim].values, WL_HA, atol=1e-9)


def test_wavelengths_of_no_known_line_are_refused(tmp_path):
    f = tmp_path / "nb_5896_im.fits"
    write_sstred(f, np.linspace(5895, 5897, 9))
    with pytest.raises(ProfileSchemaError, match=r"nb_5896_im\.fits.*not within 3 A"):
        read_sstred_cube(f)


def test_missing_wavelength_axis_names_the_file(tmp_path):
    f = tmp_path / "wb_im.fits"
    hdu = fits.PrimaryHDU(np.zeros((NY, NX), np.float32))
    for k, v in dict(CTYPE1="HPLN-TAN", CTYPE2="HPLT-TAN", CUNIT1="arcsec", CUNIT2="arcsec",
                     CDELT1=SCALE, CDELT2=SCALE).items():
        hdu.header[k] = v
    hdu.writeto(f)
    with pytest.raises(ProfileSchemaError, match=r"wb_im\.fits: no wavelength axis"):
        read_sstred_cube(f)


# ---------------------------------------------------------------------------------------------
# the spatial WCS as a sunpy map
# ---------------------------------------------------------------------------------------------


def test_map_header_gives_the_tabulated_corner_coordinates(tmp_path):
    f = tmp_path / "nb_6563_im.fits"
    write_sstred(f, WL_HA)
    ds = read_sstred_cube(f)
    meta = map_header(ds)
    assert meta["CTYPE1"] == "HPLN-TAN" and meta["NAXIS1"] == NX and meta["NAXIS2"] == NY
    assert meta["TELESCOP"] == "Swedish 1-meter Solar Telescope" and meta["DATE-OBS"].startswith("2017-09-06")
    # the header alone, with astropy: pixel (0, 0) and the far corner are the table's corners
    w = WCS(meta)
    lon, lat = w.pixel_to_world_values([0, NX - 1], [0, NY - 1])
    lon = (np.asarray(lon) * u.Unit(w.world_axis_units[0])).to_value(u.arcsec)
    lat = (np.asarray(lat) * u.Unit(w.world_axis_units[1])).to_value(u.arcsec)
    np.testing.assert_allclose(lon, [X0, X0 + (NX - 1) * SCALE], atol=1e-4)
    np.testing.assert_allclose(lat, [Y0, Y0 + (NY - 1) * SCALE], atol=1e-4)
    # a crop keeps the coordinates of the pixels it keeps
    crop = map_header(ds.isel(x=slice(2, None), y=slice(1, None)))
    assert crop["NAXIS1"] == NX - 2 and crop["NAXIS2"] == NY - 1
    if importlib.util.find_spec("reproject") is None:  # sunpy.map needs sunpy[map]
        pytest.skip("sunpy.map needs the sunpy[map] extra (reproject)")
    import sunpy.map

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sunpy.map.Map(ds[HALPHA.var].isel(time=0, wl_halpha=7).values, meta)
        tx, ty = corners_of(m)
        np.testing.assert_allclose(tx, [X0, X0 + (NX - 1) * SCALE], atol=1e-4)
        np.testing.assert_allclose(ty, [Y0, Y0 + (NY - 1) * SCALE], atol=1e-4)
        assert m.unit == RADIANCE_PER_HZ
        mc = sunpy.map.Map(ds[HALPHA.var].isel(time=0, wl_halpha=7, x=slice(2, None), y=slice(1, None)).values, crop)
        tx, ty = corners_of(mc)
        np.testing.assert_allclose([tx[0], ty[0]], [X0 + 2 * SCALE, Y0 + SCALE], atol=1e-4)


# ---------------------------------------------------------------------------------------------
# linear WCS and crisPy files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cunit3", ["nm", "Angstrom"])
def test_linear_wcs_cube(tmp_path, cunit3):
    f = tmp_path / f"linear_{cunit3}.fits"
    data = write_linear(f, CA8542.center_air_A - 1.0, 0.1, 21, cunit3=cunit3)
    ds = read_sstred_cube(f)
    np.testing.assert_allclose(ds[CA8542.dim].values, CA8542.center_air_A - 1.0 + 0.1 * np.arange(21), atol=1e-6)
    assert ds[CA8542.dim].attrs["wavelength_medium"] == "air"
    np.testing.assert_array_equal(ds[CA8542.var].values, data[:, 0])
    expect = (Time(DATEREF, scale="utc") + (T0 + CADENCE * np.arange(2)) * u.s).utc.to_value("datetime64")
    np.testing.assert_array_equal(ds["time"].values, expect.astype("datetime64[ns]"))
    meta = map_header(ds)
    w = WCS(meta)
    lon, lat = w.pixel_to_world_values(0, 0)
    assert (float(lon) * u.Unit(w.world_axis_units[0])).to_value(u.arcsec) == pytest.approx(X0, abs=1e-6)
    assert (float(lat) * u.Unit(w.world_axis_units[1])).to_value(u.arcsec) == pytest.approx(Y0, abs=1e-6)


def test_crispy_file_with_nonuniform_wavelengths_in_hdu1(tmp_path):
    f = tmp_path / "crisp_6563_scan000.fits"
    data = write_crispy(f, WL_HA, "2017-09-06T10:00:07.500")
    ds = read_crispy_fits(f)
    assert ds[HALPHA.var].dims == (HALPHA.dim, "y", "x")
    np.testing.assert_allclose(ds[HALPHA.dim].values, WL_HA, atol=1e-9)
    np.testing.assert_array_equal(ds[HALPHA.var].values, data)
    assert ds["time"].values == np.datetime64("2017-09-06T10:00:07.500")
    assert ds.attrs["reader"] == "crispy" and ds[HALPHA.var].attrs["units"] == "DN"
    g = tmp_path / "crisp_8542_scan000.fits"
    data = write_crispy(g, WL_CA / 10, "2017-09-06T10:00:08", nstokes=4, unit_in_hdu1="nm")
    ds = read_crispy_fits(g)
    np.testing.assert_allclose(ds[CA8542.dim].values, WL_CA, atol=1e-9)
    np.testing.assert_array_equal(ds[CA8542.var].values, data[0])


def test_open_observation_joins_crispy_scans_of_each_line(tmp_path):
    files = []
    for i in (1, 0):  # written out of order: joined in time order
        for line, wl in ((HALPHA, WL_HA), (CA8542, WL_CA)):
            f = tmp_path / f"crisp_{line.key}_{i:03d}.fits"
            write_crispy(f, wl, f"2017-09-06T10:00:{10 * i + (line is CA8542) * 5:02d}", seed=i)
            files.append(f)
    ds = open_observation(files)
    assert ds[HALPHA.var].dims == ("time", HALPHA.dim, "y", "x") and ds.sizes["time"] == 2
    assert np.all(np.diff(ds["time_halpha"].values) > np.timedelta64(0))
    assert ds["time_ca8542"].values[0] == np.datetime64("2017-09-06T10:00:05")
    assert ds.attrs["reader"] == "crispy" and len(ds.attrs["source_files"]) == 4


# ---------------------------------------------------------------------------------------------
# open_observation: combining lines, errors, netCDF/Zarr
# ---------------------------------------------------------------------------------------------


def test_open_observation_combines_two_sstred_cubes(tmp_path):
    fh, fc = tmp_path / "nb_6563_im.fits", tmp_path / "nb_8542_im.fits"
    dh = write_sstred(fh, WL_HA, seed=1)
    dc = write_sstred(fc, WL_CA, seed=2)
    ds = open_observation([fc, fh])
    validate_profiles(ds)
    assert ds[HALPHA.var].dims == ("time", HALPHA.dim, "y", "x")
    assert ds[CA8542.var].dims == ("time", CA8542.dim, "y", "x")
    np.testing.assert_array_equal(ds[HALPHA.var].values, dh[:, 0])
    np.testing.assert_array_equal(ds[CA8542.var].values, dc[:, 0])
    assert {"time_halpha", "time_ca8542"} <= set(ds.coords) and "time" not in ds.coords
    assert ds["time_halpha"].dims == ("time",)
    assert sorted(ds.attrs["source_files"]) == sorted([str(fh), str(fc)])
    assert ds.attrs["reader"] == "sstred" and ds.attrs["telescope"] == "Swedish 1-meter Solar Telescope"
    # same field: one map header
    assert "map_header" in ds.attrs
    assert map_header(ds, time_index=1)["DATE-OBS"] == str(np.datetime_as_string(ds["time_halpha"].values[1], unit="ms"))
    to_air_angstrom(ds)
    # the combined Dataset, attrs and all, survives netCDF and is opened again as a schema store
    nc = tmp_path / "combined.nc"
    ds.to_netcdf(nc)
    back = open_observation(nc)
    assert back.attrs["reader"] == "netcdf" and back.attrs["source_files"] == ds.attrs["source_files"]
    assert map_header(back) == map_header(ds)
    np.testing.assert_array_equal(back["time_ca8542"].values, ds["time_ca8542"].values)


def test_open_observation_is_lazy_with_chunks(tmp_path):
    fh, fc = tmp_path / "nb_6563_im.fits", tmp_path / "nb_8542_im.fits"
    dh = write_sstred(fh, WL_HA, seed=1)
    write_sstred(fc, WL_CA, seed=2)
    ds = open_observation([fh, fc], chunks={"y": 3})
    import dask.array

    assert isinstance(ds[HALPHA.var].data, dask.array.Array)
    assert ds[HALPHA.var].data.chunks[2] == (3, 3)
    np.testing.assert_array_equal(ds[HALPHA.var].values, dh[:, 0])


def test_mismatched_spatial_shapes_name_both_files(tmp_path):
    fh, fc = tmp_path / "nb_6563_im.fits", tmp_path / "nb_8542_im.fits"
    write_sstred(fh, WL_HA)
    write_sstred(fc, WL_CA, ny=NY + 1)
    with pytest.raises(ProfileSchemaError, match="spatial shapes differ") as err:
        open_observation([fh, fc])
    assert str(fh) in str(err.value) and str(fc) in str(err.value)
    assert "\n" not in str(err.value)


def test_lines_at_different_cadences_pair_by_nearest_time_and_dims_must_agree(tmp_path):
    fh, fc, fs = tmp_path / "ha.fits", tmp_path / "ca.fits", tmp_path / "ca1.fits"
    dh = write_sstred(fh, WL_HA, nscan=2)
    dc = write_sstred(fc, WL_CA, nscan=3)
    write_sstred(fs, WL_CA, nscan=1, time_axis=False)
    ds = open_observation([fh, fc])  # scans 20 s apart in both: H-alpha's 2 pair with Ca's first 2
    assert ds.sizes["time"] == 2
    np.testing.assert_array_equal(ds[CA8542.var].values, dc[:2, 0])
    np.testing.assert_array_equal(ds[HALPHA.var].values, dh[:, 0])
    assert ds.attrs["scan_pairing_max_offset_s"] < 21 and "[0, 1]" in ds.attrs["scan_pairing"]
    with pytest.raises(ProfileSchemaError, match=r"ha\.fits.*ca1\.fits.*different dims"):
        open_observation([fh, fs])


def test_lines_whose_sequences_do_not_overlap_in_time_are_refused(tmp_path, monkeypatch):
    fh, fc = tmp_path / "ha.fits", tmp_path / "ca.fits"
    write_sstred(fh, WL_HA, nscan=2)
    monkeypatch.setattr(sys.modules[__name__], "T0", T0 + 3600.0)  # Ca II an hour later
    write_sstred(fc, WL_CA, nscan=3)
    with pytest.raises(ProfileSchemaError, match=r"ha\.fits.*ca\.fits.*2 vs 3 scans, and H-alpha 6563 scan \d is 36\d\d"):
        open_observation([fh, fc])


def test_scaled_integer_cube_is_read_scaled_with_blank_as_nan(tmp_path):
    """Integer cubes with BSCALE/BZERO/BLANK (DN cameras, older archives) are read as astropy
    scales them, not refused by astropy's strict memory mapping."""
    f = tmp_path / "nb_6563_int16_im.fits"
    write_sstred(f, WL_HA, bunit="DN")
    with fits.open(f, memmap=False) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    raw = np.round(hdul[0].data / 0.01).astype(np.int16)  # < 3300 DN
    raw[0, 0, 3, 1, 2] = -32768
    hdul[0].data = raw
    hdul[0].header["BSCALE"], hdul[0].header["BZERO"], hdul[0].header["BLANK"] = 0.01, 0.0, -32768
    hdul.writeto(f, overwrite=True)
    expect = raw[:, 0] * 0.01
    expect[0, 3, 1, 2] = np.nan
    for chunks in (None, "auto"):
        da = read_sstred_cube(f, chunks=chunks)[HALPHA.var].load()
        assert da.dtype.kind == "f" and da.attrs["units"] == "DN"
        assert np.isnan(da.values[0, 3, 1, 2]) and np.isfinite(da.values).sum() == da.size - 1
        np.testing.assert_allclose(da.values, expect, rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match=r"nb_6563_int16_im.fits: stokes = 'X'; expected one of"):
        read_sstred_cube(f, stokes="X")


def test_one_line_alone_reads_and_only_a_full_coverage_model_refuses_it(tmp_path):
    from radynversion.engine.core import check_profiles

    fh = tmp_path / "ha.fits"
    write_sstred(fh, HALPHA.center_air_A + np.linspace(-1.5, 1.5, 15))
    ds = open_observation(fh)  # many data sets hold one line: the reader takes it
    assert HALPHA.var in ds and CA8542.var not in ds
    check_profiles(ds, partial=True)  # a model trained on partial coverage inverts it
    with pytest.raises(ProfileSchemaError, match="missing variable I_ca8542.*partial coverage"):
        check_profiles(ds)


def test_truncated_fits_and_text_files_raise_data_file_error(tmp_path):
    good = tmp_path / "nb_6563_im.fits"
    write_sstred(good, WL_HA)
    raw = good.read_bytes()
    trunc = tmp_path / "nb_6563_truncated.fits"
    trunc.write_bytes(raw[: len(raw) // 2])
    text = tmp_path / "notes.fits"
    text.write_text("these are not the cubes you are looking for\n" * 20)
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    for bad in (trunc, text, empty):
        for call in (read_sstred_cube, read_crispy_fits, open_observation):
            with pytest.raises(DataFileError) as err:
                call(bad)
            assert str(bad) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataFileError, match="truncated"):
        read_sstred_cube(trunc)
    with pytest.raises(DataFileError, match="no such file"):
        open_observation(tmp_path / "missing.fits")
    with pytest.raises(ConfigError, match="open_observation: no path given; expected"):
        open_observation([])


def schema_dataset():
    rng = np.random.default_rng(7)
    ds = profile_dataset(
        {"halpha": WL_HA, "ca8542": WL_CA},
        {"halpha": 1e-8 * rng.random((2, NY, NX, WL_HA.size)), "ca8542": 1e-8 * rng.random((2, NY, NX, WL_CA.size))},
        RADIANCE_PER_HZ, dims=("time", "y", "x"),
        coords={"time_halpha": ("time", np.array(["2017-09-06T10:00:07", "2017-09-06T10:00:27"], "datetime64[ns]"))},
        attrs={"telescope": "SST"},
    )
    return ds


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_schema_store_round_trip(tmp_path, fmt):
    ds = schema_dataset()
    if fmt == "netcdf":
        path = tmp_path / "obs.nc"
        ds.to_netcdf(path)
    else:
        path = tmp_path / "obs.zarr"
        ds.to_zarr(path, consolidated=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zarr: no consolidated metadata
        out = open_observation(path)
    xr.testing.assert_allclose(out[[HALPHA.var, CA8542.var]].load(), ds[[HALPHA.var, CA8542.var]])
    assert out.attrs["reader"] == fmt and out.attrs["source_files"] == [str(path)]
    assert out.attrs["telescope"] == "SST"
    assert out[HALPHA.dim].attrs["wavelength_medium"] == "air"


def test_a_line_from_two_sources_is_refused(tmp_path):
    path = tmp_path / "obs.nc"
    schema_dataset().to_netcdf(path)
    fh = tmp_path / "ha.fits"
    write_sstred(fh, WL_HA)
    with pytest.raises(ProfileSchemaError, match=r"both hold I_halpha"):
        open_observation([path, fh])


def test_paths_are_str_or_path(tmp_path):
    fh, fc = tmp_path / "nb_6563_im.fits", tmp_path / "nb_8542_im.fits"
    write_sstred(fh, WL_HA)
    write_sstred(fc, WL_CA)
    ds = open_observation([str(fh), Path(fc)])
    assert set(ds.attrs["lines"]) == {"halpha", "ca8542"}


# ---------------------------------------------------------------------------------------------
# the writer on its own: defaults (Stokes I only, SST observer keys), rotation, re-writing a read
# ---------------------------------------------------------------------------------------------


def test_write_sstred_cube_defaults_and_observer_keys(tmp_path):
    rng = np.random.default_rng(3)
    I = rng.random((WL_CA.size, NY, NX)).astype(np.float32)
    ds = profile_dataset({"halpha": WL_HA, "ca8542": WL_CA},
                         {"halpha": np.zeros((NY, NX, WL_HA.size)), "ca8542": np.moveaxis(I, 0, -1)},
                         RADIANCE_PER_HZ, dims=("y", "x"))[[CA8542.var]]
    f = write_sstred_cube(tmp_path / "nb_8542_im.fits", ds, time="2017-09-06T10:00:08",
                          centre_arcsec=(-300.0, 200.0), scale_arcsec=0.057, rotation_deg=30.0)
    with fits.open(f) as hdul:
        h = hdul[0].header
        assert hdul[0].data.shape == (1, 1, WL_CA.size, NY, NX)
        assert h["TELESCOP"] == "SST" and h["INSTRUME"] == "CRISP" and h["BUNIT"] == BUNIT
        assert h["CTYPE1"] == "HPLN-TAB" and h["CTYPE3"] == "WAVE-TAB" and h["CTYPE5"] == "UTC--TAB"
        assert h["DATEREF"].startswith("2017-09-06T00:00:00")
        assert 1.47e11 < h["DSUN_OBS"] < 1.53e11 and abs(h["HGLT_OBS"]) < 7.3
        assert np.hypot(h["OBSGEO-X"], h["OBSGEO-Y"]) == pytest.approx(5.6e6, rel=0.01)  # La Palma
    back = read_sstred_cube(f)
    np.testing.assert_array_equal(back[CA8542.var].values[0], I)
    np.testing.assert_allclose(back[CA8542.dim].values, WL_CA, atol=1e-9)
    assert back["time"].values[0] == np.datetime64("2017-09-06T10:00:08")
    assert back.attrs["telescope"] == "SST" and back.attrs["map_fit_residual_arcsec"] < 1e-9
    np.testing.assert_allclose([back.attrs["pointing_hpln_arcsec"], back.attrs["pointing_hplt_arcsec"]],
                               [-300.0, 200.0], atol=1e-9)
    np.testing.assert_allclose(back.attrs["pixel_scale_arcsec"], [0.057, 0.057], rtol=1e-9)
    meta = map_header(back)
    assert meta["PC1_1"] == pytest.approx(np.cos(np.deg2rad(30.0)))
    assert meta["PC2_1"] == pytest.approx(np.sin(np.deg2rad(30.0)))
    assert meta["DSUN_OBS"] == h["DSUN_OBS"]
    # what was read is written again (its map header reused) and reads back the same
    g = write_sstred_cube(tmp_path / "again.fits", back)
    again = read_sstred_cube(g)
    np.testing.assert_array_equal(again[CA8542.var].values, back[CA8542.var].values)
    np.testing.assert_allclose(again[CA8542.dim].values, back[CA8542.dim].values, atol=1e-9)
    assert again["time"].values[0] == back["time"].values[0]
    assert map_header(again)["CRVAL1"] == pytest.approx(meta["CRVAL1"], abs=1e-9)


def test_write_sstred_cube_refuses_what_it_cannot_write(tmp_path):
    ds = schema_dataset()
    with pytest.raises(ProfileSchemaError, match="expected one of"):
        write_sstred_cube(tmp_path / "x.fits", ds, centre_arcsec=(0, 0))
    with pytest.raises(ProfileSchemaError, match="no scan time"):
        write_sstred_cube(tmp_path / "x.fits", ds, line="ca8542", centre_arcsec=(0, 0))
    one = ds.assign_coords(time=("time", ds["time_halpha"].values)).drop_vars("time_halpha")
    with pytest.raises(ProfileSchemaError, match="no spatial WCS"):
        write_sstred_cube(tmp_path / "x.fits", one, line="halpha")
    dn = one.copy()
    dn[HALPHA.var].attrs["units"] = "DN"
    f = write_sstred_cube(tmp_path / "dn.fits", dn, line="halpha", centre_arcsec=(0, 0))
    assert fits.getheader(f)["BUNIT"] == "dn" and read_sstred_cube(f)[HALPHA.var].attrs["units"] == "DN"
