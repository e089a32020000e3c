"""Bad input, one case each: the library refuses with a one-line
:class:`~radynversion.errors.RadynversionError` naming the file, the variable and what was
expected; ``radynversion invert`` exits non-zero with that line and no traceback (unless
``--debug``); input files are never modified; partly bad data are not an error.

Library-level refusals tested elsewhere are not repeated here, only driven through the CLI:
the profile schema (tests/test_schema.py), the FITS readers (truncated and text files, shapes
and scan counts: tests/test_observation_readers.py), checkpoints (tests/test_model.py), and
foreign output stores (tests/test_engine.py).
"""

from __future__ import annotations

import errno
import hashlib
import os
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from astropy.io import fits
from synthetic import TINY, scan, tiny_model

import radynversion
from radynversion import cli
from radynversion.atmosphere import default_height_grid
from radynversion.engine import core as core_mod
from radynversion.engine import invert_to_zarr
from radynversion.engine import store as store_mod
from radynversion.errors import (
    CheckpointError,
    ConfigError,
    DataFileError,
    ProfileSchemaError,
    RadynversionError,
    StoreError,
    UnitsError,
)
from radynversion.io import open_observation
from radynversion.io.fits import write_sstred_cube
from radynversion.lines import CA8542, HALPHA, LINES, air_to_vacuum
from radynversion.model import RadynversionINN, save_checkpoint

# astropy notes the DATE-OBS/MJD-OBS it fills in; the engine warns about tiny chunks
pytestmark = [pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning"),
              pytest.mark.filterwarnings("ignore:invert. chunks of:UserWarning")]

NY, NX = 4, 4
FAST = ["--samples", "4", "--batch-size", "64", "--workers", "0", "--no-progress"]


# -- helpers ------------------------------------------------------------------------------------
def good_scan() -> xr.Dataset:
    """4 x 4 pixels of both lines, on the fine synthesis grids [W / (m2 Hz sr), air Angstrom]."""
    return scan(NY, NX)


def write_nc(path: Path, ds: xr.Dataset) -> Path:
    ds.to_netcdf(path)
    return path


def write_fits(path: Path, line, ny: int = NY, nx: int = NX, keep: slice = slice(None)) -> Path:
    """One line of :func:`good_scan` as an SSTRED cube (every 5th tuning: 0.1 A steps)."""
    ds = scan(ny, nx)[[line.var]].isel({line.dim: keep}).isel({line.dim: slice(None, None, 5)})
    write_sstred_cube(path, ds, time=np.datetime64("2017-09-06T10:00:00"), time_axis=False,
                      centre_arcsec=(0.0, 0.0))
    return path


def digest(paths) -> dict[str, str]:
    """sha256 of every file of ``paths`` (folders: every file under them)."""
    out = {}
    for p in map(Path, paths):
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def assert_clear(message: str, names) -> None:
    """One line, naming every one of ``names`` (file, variable...) and what was expected."""
    assert message and "\n" not in message, repr(message)
    assert "Traceback" not in message
    for name in names:
        assert str(name) in message, (name, message)
    assert "expected" in message, message


def cli_invert(inputs, out: Path, model: Path, *extra: str) -> int:
    return cli.main(["invert", *map(str, inputs), "-o", str(out), "--model", str(model), *FAST, *extra])


# -- the catalogue --------------------------------------------------------------------------------
@dataclass
class Bad:
    """A bad input: ``make(tmp, model_path)`` writes it and returns the inputs (and optionally
    another model and output); ``names`` (formatted with ``tmp``) must appear in the message."""

    make: Callable[[Path, Path], dict]
    error: type[RadynversionError]
    names: tuple[str, ...]
    #: the refusal comes after the (lazy) input was read: the complete store of NaN stays
    store_left: bool = False
    notes: dict = field(default_factory=dict)


def _missing_line_nc(tmp, _):
    return {"inputs": [write_nc(tmp / "one_line.nc", good_scan().drop_vars(CA8542.var))]}


def _missing_line_fits(tmp, _):
    return {"inputs": [write_fits(tmp / "ha.fits", HALPHA)]}


def _with_wl(ds: xr.Dataset, line, values, **attrs) -> xr.Dataset:
    wl_attrs = {"units": "Angstrom", "wavelength_medium": "air", **attrs}
    wl_attrs = {k: v for k, v in wl_attrs.items() if v is not None}
    return ds.assign_coords({line.dim: (line.dim, np.asarray(values), wl_attrs)})


def _nm_as_angstrom(tmp, _):
    ds = good_scan()
    return {"inputs": [write_nc(tmp / "nm.nc", _with_wl(ds, HALPHA, ds[HALPHA.dim].values / 10))]}


def _no_wavelength_units(tmp, _):
    ds = good_scan()
    return {"inputs": [write_nc(tmp / "no_units.nc", _with_wl(ds, CA8542, ds[CA8542.dim].values, units=None))]}


def _undeclared_vacuum(tmp, _):
    ds = good_scan()
    vac = air_to_vacuum(ds[HALPHA.dim].values)
    return {"inputs": [write_nc(tmp / "undeclared.nc", _with_wl(ds, HALPHA, vac, wavelength_medium=None))]}


def _vacuum_declared_air(tmp, _):
    ds = good_scan()
    vac = air_to_vacuum(ds[HALPHA.dim].values)
    return {"inputs": [write_nc(tmp / "vacuum_as_air.nc", _with_wl(ds, HALPHA, vac))]}


def _air_declared_vacuum(tmp, _):
    ds = good_scan()
    air = ds[CA8542.dim].values
    return {"inputs": [write_nc(tmp / "air_as_vacuum.nc", _with_wl(ds, CA8542, air, wavelength_medium="vacuum"))]}


def _short_coverage_nc(tmp, _):
    ds = good_scan().isel({HALPHA.dim: slice(40, -40)})  # +-1.2 A of a +-1.4 A window
    return {"inputs": [write_nc(tmp / "short.nc", ds)]}


def _short_coverage_fits(tmp, _):
    return {"inputs": [write_fits(tmp / "ha_short.fits", HALPHA, keep=slice(40, -40)),
                       write_fits(tmp / "ca.fits", CA8542)]}


def _all_nan(tmp, _):
    ds = good_scan()
    ds[HALPHA.var].values[:] = np.nan
    return {"inputs": [write_nc(tmp / "all_nan.nc", ds)]}


def _all_inf(tmp, _):
    ds = good_scan()
    ds[CA8542.var].values[:] = np.inf
    return {"inputs": [write_nc(tmp / "all_inf.nc", ds)]}


def _negative(tmp, _):
    ds = good_scan()
    for ln in LINES:  # e.g. a difference image, or Stokes V
        ds[ln.var] = -ds[ln.var]
    return {"inputs": [write_nc(tmp / "negative.nc", ds)]}


def _ca_all_minus_one(tmp, _):  # issue 25: inverted to confident atmospheres, exit 0
    ds = good_scan()
    ds[CA8542.var].values[:] = -1.0
    return {"inputs": [write_nc(tmp / "ca_minus_one.nc", ds)]}


def _ca_zero(tmp, _):  # a dark frame in one line
    ds = good_scan()
    ds[CA8542.var].values[:] = 0.0
    return {"inputs": [write_nc(tmp / "ca_zero.nc", ds)]}


def _ca_negative_in_every_pixel(tmp, _):  # a bad background subtraction: one tuning below zero
    ds = good_scan()
    ds[CA8542.var].values[..., 40] = -1e-9
    return {"inputs": [write_nc(tmp / "ca_dip.nc", ds)]}


def _coarse_sampling(tmp, _):  # 5 tunings over +-1.5 A: 3 inside H-alpha's model window
    ds = good_scan()
    coarse = ds[[HALPHA.var]].interp({HALPHA.dim: HALPHA.center_air_A + np.linspace(-1.5, 1.5, 5)})
    coarse[HALPHA.var].attrs = ds[HALPHA.var].attrs
    coarse[HALPHA.dim].attrs = ds[HALPHA.dim].attrs
    return {"inputs": [write_nc(tmp / "coarse.nc", xr.merge([coarse, ds[[CA8542.var]]]))]}


def _stokes_dim(tmp, _):  # I, Q, U, V under I_<line>: Q/U/V are no intensities
    ds = good_scan().expand_dims(stokes=["I", "Q", "U", "V"])
    return {"inputs": [write_nc(tmp / "iquv.nc", ds)]}


def _mismatched_dims_nc(tmp, _):
    ds = good_scan()
    ds = xr.Dataset({HALPHA.var: ds[HALPHA.var], CA8542.var: ds[CA8542.var].rename(x="col")})
    return {"inputs": [write_nc(tmp / "dims.nc", ds)]}


def _mismatched_shapes_fits(tmp, _):
    return {"inputs": [write_fits(tmp / "ha.fits", HALPHA), write_fits(tmp / "ca_5x4.fits", CA8542, ny=NY + 1)]}


def _cut_fits(tmp: Path, extra: int) -> Path:
    """H-alpha cube cut ``extra`` bytes after the end of its primary HDU (where WCS-TAB starts)."""
    good = write_fits(tmp / "good_ha.fits", HALPHA)
    with fits.open(good) as hdul:
        start = hdul.fileinfo(1)["hdrLoc"]
    cut = tmp / "cut_ha.fits"
    cut.write_bytes(good.read_bytes()[: start + extra])
    return cut


def _truncated_fits_between_hdus(tmp, _):  # the primary HDU only: the WCS-TAB extension is lost
    return {"inputs": [_cut_fits(tmp, 0), write_fits(tmp / "ca.fits", CA8542)]}


def _truncated_fits_in_header(tmp, _):  # the extension's header begins and breaks off
    return {"inputs": [_cut_fits(tmp, 100), write_fits(tmp / "ca.fits", CA8542)]}


def _ambiguous_medium_fits(tmp, _):
    """H-alpha +-1.5 A in air, with the red wing sampled densely: the median tuning (+1.0 A) is
    nearer the vacuum centre (+1.8 A), the range centre (0 A) the air one; the file cannot say."""
    wl = np.unique(np.round(HALPHA.center_air_A + np.concatenate([np.linspace(-1.5, 1.5, 31),
                                                                  np.linspace(1.0, 1.5, 40)]), 4))
    da = xr.DataArray(np.full((wl.size, NY, NX), 3e-8, np.float32), dims=(HALPHA.dim, "y", "x"), name=HALPHA.var,
                      coords={HALPHA.dim: (HALPHA.dim, wl, {"units": "Angstrom", "wavelength_medium": "air"})},
                      attrs={"units": "W / (m2 Hz sr)"})
    path = write_sstred_cube(tmp / "red_wing_ha.fits", da.to_dataset(), time=np.datetime64("2017-09-06T10:00:00"),
                             time_axis=False, centre_arcsec=(0.0, 0.0))
    return {"inputs": [path, write_fits(tmp / "ca.fits", CA8542)]}


def _degenerate_tab_index(tmp, _):  # wcslib aborts the process (double free) on such an index
    good = write_fits(tmp / "good_ha.fits", HALPHA)
    with fits.open(good) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    tab = hdul["WCS-TAB"]
    cols = [fits.Column(name=c.name, format="2E", array=np.array([[1.0, 1.0]])) if c.name == "HPLN-INDEX" else c
            for c in tab.columns]
    hdul["WCS-TAB"] = fits.BinTableHDU.from_columns(cols, header=tab.header, name="WCS-TAB")
    hdul.writeto(tmp / "flat_index_ha.fits")
    return {"inputs": [tmp / "flat_index_ha.fits", write_fits(tmp / "ca.fits", CA8542)]}


def _not_fits(tmp, _):
    text = tmp / "notes.fits"
    text.write_text("observing log, not a cube\n" * 40)
    return {"inputs": [text, write_fits(tmp / "ca.fits", CA8542)]}


def _lapalma_pair(tmp):
    from radynversion.io import write_lapalma_cube

    scan = good_scan()
    paths = []
    for ln in (HALPHA, CA8542):
        wl = ln.center_air_A + np.linspace(-1.2, 1.2, 13)
        tag = str(int(round(ln.center_air_A)))
        paths.append(write_lapalma_cube(tmp / f"crispex.{tag}.icube", scan, ln, wl, gain=4e-12)[0])
    return paths


def _truncated_lapalma(tmp, _):
    ha, ca = _lapalma_pair(tmp)
    ha.write_bytes(ha.read_bytes()[:-64])
    return {"inputs": [ha, ca]}


def _lapalma_without_spectfile(tmp, _):
    ha, ca = _lapalma_pair(tmp)
    (tmp / "spectfile.8542.idlsave").unlink()
    return {"inputs": [ha, ca]}


def _truncated_nc(tmp, _):
    raw = write_nc(tmp / "whole.nc", good_scan()).read_bytes()
    (tmp / "whole.nc").unlink()
    cut = tmp / "cut.nc"
    cut.write_bytes(raw[: len(raw) // 2])
    return {"inputs": [cut]}


def _not_netcdf(tmp, _):
    text = tmp / "scan.nc"
    text.write_text("I_halpha,I_ca8542\n1,2\n")
    return {"inputs": [text]}


def _foreign_zarr(tmp, _):
    path = tmp / "other.zarr"
    xr.Dataset({"brightness": (("y", "x"), np.ones((NY, NX)))}).to_zarr(path, zarr_format=2)
    return {"inputs": [path]}


def _folder_not_zarr(tmp, _):
    folder = tmp / "scans"
    folder.mkdir()
    (folder / "readme.txt").write_text("the cubes are elsewhere")
    return {"inputs": [folder]}


def _inversion_store_as_input(tmp, model):
    first = tmp / "result.zarr"
    invert_to_zarr(good_scan(), first, model=model, samples=4, batch_size=64, progress=False)
    return {"inputs": [first]}


def _checkpoint_other_heights(tmp, _):
    h = default_height_grid().copy()
    h[10] += 0.05
    return {"inputs": [write_nc(tmp / "scan.nc", good_scan())],
            "model": save_checkpoint(tmp / "other_heights.pt", RadynversionINN(TINY, height_Mm=h))}


def _checkpoint_other_windows(tmp, _):
    path = save_checkpoint(tmp / "other_windows.pt", tiny_model(None))
    ckpt = torch.load(path, weights_only=True)
    ckpt["wavelengths_A"][HALPHA.key] = [w + 0.1 for w in ckpt["wavelengths_A"][HALPHA.key]]
    torch.save(ckpt, path)
    return {"inputs": [write_nc(tmp / "scan.nc", good_scan())], "model": path}


def _checkpoint_other_version(tmp, _):
    path = save_checkpoint(tmp / "future.pt", tiny_model(None))
    ckpt = torch.load(path, weights_only=True)
    ckpt["format_version"] = 99
    torch.save(ckpt, path)
    return {"inputs": [write_nc(tmp / "scan.nc", good_scan())], "model": path}


def _checkpoint_corrupt(tmp, _):
    path = save_checkpoint(tmp / "corrupt.pt", tiny_model(None))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return {"inputs": [write_nc(tmp / "scan.nc", good_scan())], "model": path}


def _output_is_the_input(tmp, _):
    path = write_nc(tmp / "scan.nc", good_scan())
    return {"inputs": [path], "out": path}


def _output_is_foreign_zarr(tmp, _):
    path = write_nc(tmp / "scan.nc", good_scan())
    out = tmp / "profiles.zarr"
    good_scan().to_zarr(out, zarr_format=2)
    return {"inputs": [path], "out": out}


BAD = {
    "missing line (netCDF)": Bad(_missing_line_nc, ProfileSchemaError, ("{tmp}/one_line.nc", "I_ca8542")),
    "missing line (one FITS cube)": Bad(_missing_line_fits, ProfileSchemaError, ("{tmp}/ha.fits", "I_ca8542")),
    "nm labelled Angstrom": Bad(_nm_as_angstrom, UnitsError, ("{tmp}/nm.nc", "wl_halpha", "nm labelled as Angstrom")),
    "no wavelength units": Bad(_no_wavelength_units, UnitsError, ("{tmp}/no_units.nc", "wl_ca8542", "units")),
    "vacuum, medium undeclared": Bad(_undeclared_vacuum, UnitsError,
                                     ("{tmp}/undeclared.nc", "wl_halpha", "wavelength_medium")),
    "vacuum declared air": Bad(_vacuum_declared_air, UnitsError,
                               ("{tmp}/vacuum_as_air.nc", "wl_halpha", "wavelength_medium = 'vacuum'")),
    "air declared vacuum": Bad(_air_declared_vacuum, UnitsError,
                               ("{tmp}/air_as_vacuum.nc", "wl_ca8542", "wavelength_medium = 'air'")),
    "coverage short of the model window (netCDF)": Bad(_short_coverage_nc, ProfileSchemaError,
                                                       ("{tmp}/short.nc", "I_halpha", "model window")),
    "coverage short of the model window (FITS)": Bad(_short_coverage_fits, ProfileSchemaError,
                                                     ("{tmp}/ha_short.fits", "I_halpha", "model window")),
    "all NaN": Bad(_all_nan, ProfileSchemaError, ("{tmp}/all_nan.nc", "I_halpha", "NaN"), store_left=True),
    "all inf": Bad(_all_inf, ProfileSchemaError, ("{tmp}/all_inf.nc", "I_ca8542", "inf"), store_left=True),
    "negative intensities": Bad(_negative, ProfileSchemaError, ("{tmp}/negative.nc", "I_halpha", "positive"),
                                store_left=True),
    "one line negative everywhere": Bad(_ca_all_minus_one, ProfileSchemaError,
                                        ("{tmp}/ca_minus_one.nc", "I_ca8542", "no positive value", "-1"),
                                        store_left=True),
    "one line zero everywhere": Bad(_ca_zero, ProfileSchemaError, ("{tmp}/ca_zero.nc", "I_ca8542", "zero everywhere"),
                                    store_left=True),
    "one line negative in every pixel": Bad(_ca_negative_in_every_pixel, ProfileSchemaError,
                                            ("{tmp}/ca_dip.nc", "every pixel of I_ca8542 has a negative value"),
                                            store_left=True),
    "too few tunings in a model window": Bad(_coarse_sampling, ProfileSchemaError,
                                             ("{tmp}/coarse.nc", "I_halpha", "3 tunings within the model window")),
    "a stokes dim of I, Q, U, V": Bad(_stokes_dim, ProfileSchemaError, ("{tmp}/iquv.nc", "I_halpha", "Stokes I only")),
    "mismatched dims (netCDF)": Bad(_mismatched_dims_nc, ProfileSchemaError, ("{tmp}/dims.nc", "I_ca8542", "col")),
    "mismatched shapes (FITS)": Bad(_mismatched_shapes_fits, ProfileSchemaError,
                                    ("{tmp}/ha.fits", "{tmp}/ca_5x4.fits", "y=4", "y=5")),
    "truncated FITS (extension lost)": Bad(_truncated_fits_between_hdus, DataFileError,
                                           ("{tmp}/cut_ha.fits", "WCS-TAB", "truncated")),
    "truncated FITS (header cut)": Bad(_truncated_fits_in_header, DataFileError, ("{tmp}/cut_ha.fits", "truncated")),
    "FITS tunings ambiguous between air and vacuum": Bad(_ambiguous_medium_fits, UnitsError,
                                                         ("{tmp}/red_wing_ha.fits", "wl_halpha", "air and vacuum")),
    "FITS with a degenerate -TAB index": Bad(_degenerate_tab_index, DataFileError,
                                             ("{tmp}/flat_index_ha.fits", "HPLN-INDEX", "strictly monotonic")),
    "not FITS": Bad(_not_fits, DataFileError, ("{tmp}/notes.fits", "FITS")),
    "truncated La Palma cube": Bad(_truncated_lapalma, DataFileError, ("{tmp}/crispex.6563.icube", "truncated")),
    "La Palma cube without its spectfile": Bad(_lapalma_without_spectfile, DataFileError,
                                               ("{tmp}/crispex.8542.icube", "spectfile")),
    "truncated netCDF": Bad(_truncated_nc, DataFileError, ("{tmp}/cut.nc", "netCDF")),
    "not netCDF": Bad(_not_netcdf, DataFileError, ("{tmp}/scan.nc", "not a netCDF file")),
    "Zarr store not in the profile schema": Bad(_foreign_zarr, ProfileSchemaError,
                                                ("{tmp}/other.zarr", "I_halpha", "brightness")),
    "folder that is no Zarr store": Bad(_folder_not_zarr, DataFileError, ("{tmp}/scans", "Zarr")),
    "an inversion store as input": Bad(_inversion_store_as_input, ProfileSchemaError,
                                       ("{tmp}/result.zarr", "inversion", "I_halpha")),
    "checkpoint of another height grid": Bad(_checkpoint_other_heights, CheckpointError,
                                             ("{tmp}/other_heights.pt", "height_Mm")),
    "checkpoint of other model windows": Bad(_checkpoint_other_windows, CheckpointError,
                                             ("{tmp}/other_windows.pt", "wavelengths_A['halpha']")),
    "checkpoint of another format version": Bad(_checkpoint_other_version, CheckpointError,
                                                ("{tmp}/future.pt", "format version 99")),
    "corrupt checkpoint": Bad(_checkpoint_corrupt, CheckpointError, ("{tmp}/corrupt.pt", "not a readable checkpoint")),
    "output is the input file": Bad(_output_is_the_input, StoreError, ("{tmp}/scan.nc", "not a Zarr store")),
    "output is a foreign Zarr store": Bad(_output_is_foreign_zarr, StoreError,
                                          ("{tmp}/profiles.zarr", "not a radynversion inversion store")),
}


def _setup(case: Bad, tmp: Path, model_path: Path) -> tuple[list[Path], Path, Path, list[str]]:
    made = case.make(tmp, model_path)
    inputs = made["inputs"]
    out = made.get("out", tmp / "out.zarr")
    model = made.get("model", model_path)
    names = [n.format(tmp=tmp) for n in case.names]
    return inputs, out, model, names


@pytest.mark.parametrize("name", list(BAD))
def test_library_refuses_with_one_clear_line(name, tmp_path, model_path):
    case = BAD[name]
    inputs, out, model, names = _setup(case, tmp_path, model_path)
    before = digest([*inputs, out, model])
    with pytest.raises(case.error) as err:
        ds = open_observation(inputs, chunks={})
        invert_to_zarr(ds, out, model=model, samples=4, batch_size=64, progress=False)
    assert_clear(str(err.value), names)
    assert digest([*inputs, out, model]) == before | ({} if not case.store_left else digest([out]))
    if out == tmp_path / "out.zarr" and not case.store_left:
        assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("name", list(BAD))
def test_cli_refuses_with_one_line_and_no_traceback(name, tmp_path, model_path, capsys):
    case = BAD[name]
    inputs, out, model, names = _setup(case, tmp_path, model_path)
    before = digest([*inputs, model])
    capsys.readouterr()
    assert cli_invert(inputs, out, model) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("radynversion invert: error: "), err
    assert_clear(err, names)
    assert digest([*inputs, model]) == before


def test_cli_debug_shows_the_traceback(tmp_path, model_path):
    inputs, out, model, _ = _setup(BAD["missing line (netCDF)"], tmp_path, model_path)
    with pytest.raises(ProfileSchemaError, match="missing variable I_ca8542"):
        cli.main(["--debug", "invert", *map(str, inputs), "-o", str(out), "--model", str(model), *FAST])


# -- in-memory data: refused before any work --------------------------------------------------
@pytest.mark.parametrize("what", ["nan", "inf", "negative"])
def test_in_memory_data_without_one_invertible_pixel_is_refused_up_front(what, net, tmp_path):
    ds = good_scan()
    if what == "negative":
        for ln in LINES:
            ds[ln.var] = -ds[ln.var]
    else:
        ds[HALPHA.var].values[:] = np.nan if what == "nan" else np.inf
    expect = {"nan": "every value of I_halpha is NaN;", "inf": "every value of I_halpha is NaN or inf",
              "negative": "I_halpha has no positive value (values from -"}[what]
    with pytest.raises(ProfileSchemaError) as err:
        ds.radyn.invert(model=net, samples=4)
    assert_clear(str(err.value), [expect])
    with pytest.raises(ProfileSchemaError):
        invert_to_zarr(ds, tmp_path / "out.zarr", model=net, samples=4, progress=False)
    assert not (tmp_path / "out.zarr").exists()


# -- partly bad data: not an error ------------------------------------------------------------
def test_partly_bad_pixels_come_out_masked_and_the_rest_inverted(tmp_path, model_path, capsys):
    ds = good_scan()
    ds[HALPHA.var].values[0, 1, :] = np.nan  # a dead pixel
    ds[CA8542.var].values[2, 3, 60] = np.nan  # one NaN within the model window
    ds[HALPHA.var].values[3, 0, 100] = np.inf  # a hot pixel
    for ln in LINES:
        ds[ln.var].values[1, 2, :] = -1e-9  # a pixel with no positive intensity
    path = write_nc(tmp_path / "partial.nc", ds)
    bad = np.zeros((NY, NX), bool)
    bad[0, 1] = bad[2, 3] = bad[3, 0] = bad[1, 2] = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli_invert([path], tmp_path / "out.zarr", model_path) == 0
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning) and "invalid value" in str(w.message)]
    assert capsys.readouterr().err.strip() == ""
    out = xr.open_zarr(tmp_path / "out.zarr").load()
    np.testing.assert_array_equal(out["mask"].values, bad)
    for var in ("log_ne", "log_T", "v"):
        assert np.isnan(out[var].values[bad]).all()
        assert np.isfinite(out[var].values[~bad]).all()
    assert np.isnan(out["misfit"].values[bad]).all() and np.isfinite(out["misfit"].values[~bad]).all()


def test_pixels_with_impossible_values_are_masked_in_memory_and_in_the_store(tmp_path, model_path, net):
    """Issue 25: a negative radiance, or a line nowhere positive, in a pixel masks that pixel
    (both front doors, the same mask), and the other pixels are inverted."""
    ds = good_scan()
    ds[CA8542.var].values[0, 0, 40] = -1e-9  # one tuning below zero (inside the window)
    ds[CA8542.var].values[1, 3, :] = 0.0  # Ca II dark in this pixel, H-alpha fine
    ds[HALPHA.var].values[2, 2, 5] = -3e-8  # far in H-alpha's wing, outside the window
    bad = np.zeros((NY, NX), bool)
    bad[0, 0] = bad[1, 3] = bad[2, 2] = True
    path = write_nc(tmp_path / "dips.nc", ds)
    assert cli_invert([path], tmp_path / "out.zarr", model_path) == 0
    out = xr.open_zarr(tmp_path / "out.zarr").load()
    mem = radynversion.invert(ds, model=net, samples=4, batch_size=64)
    for res in (out, mem):
        np.testing.assert_array_equal(res["mask"].values, bad)
        assert np.isnan(res["log_T"].values[bad]).all() and np.isfinite(res["log_T"].values[~bad]).all()
        assert np.isnan(res["misfit"].values[bad]).all()


@pytest.mark.parametrize("value", [-1.0, 0.0])
def test_one_impossible_line_in_memory_is_refused_before_any_work(value, net, tmp_path):
    ds = good_scan()
    ds[CA8542.var].values[:] = value
    expect = ["I_ca8542 has no positive value", "zero everywhere" if value == 0 else "values from -1 to -1",
              "expected positive"]
    for call in (lambda: radynversion.invert(ds, model=net, samples=4),
                 lambda: ds.radyn.invert(model=net, samples=4),
                 lambda: invert_to_zarr(ds, tmp_path / "out.zarr", model=net, samples=4, progress=False)):
        with pytest.raises(ProfileSchemaError) as err:
            call()
        assert_clear(str(err.value), expect)
    assert not (tmp_path / "out.zarr").exists()


# -- unusual but valid input: inverted like the plain scan ------------------------------------
def test_unusual_layouts_and_dtypes_invert_like_the_plain_scan(net, tmp_path, model_path, capsys):
    ds = good_scan()
    kw = dict(model=net, samples=4, precision="fp32")
    want = radynversion.invert(ds, **kw)["log_T"].values
    descending = ds.isel({ln.dim: slice(None, None, -1) for ln in LINES})
    wl_first = ds.transpose(HALPHA.dim, CA8542.dim, "y", "x")
    half = ds.copy()
    for ln in LINES:  # float16 holds 1e-8 W / (m2 Hz sr) only scaled; converted without underflow
        half[ln.var] = (ds[ln.var] * 1e8).astype(np.float16).assign_attrs(units="1e-8 W / (m2 Hz sr)")
    for name, case, tol in [("descending", descending, 0), ("wl first", wl_first, 0), ("float16", half, 0.05)]:
        got = radynversion.invert(case, **kw)["log_T"].values
        np.testing.assert_allclose(got, want, rtol=0, atol=tol, err_msg=name)
        lazy = case.radyn.invert(**kw)["log_T"].values
        np.testing.assert_allclose(lazy, want, rtol=0, atol=tol, err_msg=name)
    path = write_nc(tmp_path / "descending.nc", descending)
    assert cli_invert([path], tmp_path / "out.zarr", model_path) == 0
    assert capsys.readouterr().err.strip() == ""


def test_radynversion_invert_refuses_with_radynversion_errors(net):
    """The in-memory front door refuses like the engine: a RadynversionError, never a KeyError or
    an all-NaN result."""
    ds = good_scan()
    for bad, match in [(dict(samples=0), "samples = 0; expected >= 1"),
                       (dict(quantiles=[1.5]), r"quantiles \[1.5\]; expected values in \[0, 1\]")]:
        with pytest.raises(ConfigError, match=match):
            radynversion.invert(ds, model=net, **{"samples": 4, **bad})
    dead = ds.copy(deep=True)
    dead[HALPHA.var].values[..., 70] = np.nan  # one tuning, inside the window, dead in every pixel
    zero = ds.copy(deep=True)
    for ln in LINES:
        zero[ln.var].values[:] = 0.0
    for bad, expect in [(ds.drop_vars(HALPHA.var), ["missing variable I_halpha", "expected"]),
                        (ds[CA8542.var], ["expected an xarray.Dataset, got DataArray"]),
                        (dead, ["no pixel can be inverted", "I_halpha", "expected"]),
                        (zero, ["no pixel can be inverted", "positive"])]:
        with pytest.raises(ProfileSchemaError) as err:
            radynversion.invert(bad, model=net, samples=4)
        assert_clear(str(err.value), expect)
    with pytest.raises(ProfileSchemaError) as err:  # the engine, up front for in-memory data
        dead.radyn.invert(model=net, samples=4)
    assert_clear(str(err.value), ["I_halpha is NaN or inf in every pixel at", "wl_halpha index 70",
                                  "drop_isel(wl_halpha=70)"])


@pytest.mark.parametrize("spectral_first", [False, True])
def test_a_dead_tuning_is_found_in_one_blocked_pass_whatever_the_dim_order(monkeypatch, spectral_first):
    """The up-front check reads in-memory cubes in blocks along their first axis: a tuning
    dead in every pixel is found whether the spectral dim comes last or first, and a tuning
    alive in one pixel of a late block is not refused."""
    from radynversion.engine.core import check_profiles
    monkeypatch.setattr("radynversion.schema._CHECK_BLOCK", 50)  # many blocks
    ds = good_scan()
    if spectral_first:
        ds = ds.transpose(HALPHA.dim, CA8542.dim, ...)
    dead = ds.copy(deep=True)
    dead[HALPHA.var].loc[{HALPHA.dim: dead[HALPHA.dim][70]}] = np.nan
    with pytest.raises(ProfileSchemaError, match=r"every pixel at .*wl_halpha index 70"):
        check_profiles(dead, "scan")
    alive = dead.copy(deep=True)  # the same tuning alive in the last pixel only
    last = {d: -1 for d in alive[HALPHA.var].dims if d != HALPHA.dim}
    alive[HALPHA.var][{**last, HALPHA.dim: 70}] = 1.0
    assert check_profiles(alive, "scan") == "scan"


# -- inputs are never modified -----------------------------------------------------------------
def test_invert_never_modifies_its_inputs(tmp_path, model_path, capsys):
    fh, fc = write_fits(tmp_path / "ha.fits", HALPHA), write_fits(tmp_path / "ca.fits", CA8542)
    nc = write_nc(tmp_path / "scan.nc", good_scan())
    zarr_in = tmp_path / "scan.zarr"
    good_scan().to_zarr(zarr_in, zarr_format=2)
    for k, inputs in enumerate([[fh, fc], [nc], [zarr_in]]):
        before = digest([*inputs, model_path])
        stamps = {str(p): p.stat().st_mtime_ns for p in inputs}
        assert cli_invert(inputs, tmp_path / f"out{k}.zarr", model_path) == 0
        assert cli_invert(inputs, tmp_path / f"out{k}.zarr", model_path) == 0  # resume: nothing to do
        assert digest([*inputs, model_path]) == before
        assert {str(p): p.stat().st_mtime_ns for p in inputs} == stamps
    capsys.readouterr()


# -- the output: unwritable, or too little room -------------------------------------------------
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through chmod")
def test_read_only_output_directory_is_refused_before_any_work(tmp_path, model_path, capsys):
    path = write_nc(tmp_path / "scan.nc", good_scan())
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert cli_invert([path], locked / "out.zarr", model_path) == 2
        err = capsys.readouterr().err.strip()
        assert_clear(err, [f"{locked}/out.zarr", "Permission denied", "writable"])
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_unwritable_output_directory_is_refused_before_any_work(tmp_path, model_path, capsys, monkeypatch):
    """As above, whoever runs it (root passes chmod): the write probe fails as on a read-only mount."""
    path = write_nc(tmp_path / "scan.nc", good_scan())
    target = tmp_path / "ro"
    target.mkdir()

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(store_mod.tempfile, "mkdtemp", refuse)
    assert cli_invert([path], target / "new" / "out.zarr", model_path) == 2
    err = capsys.readouterr().err.strip()
    assert_clear(err, [f"{target}/new/out.zarr", f"cannot write in {target} (", "writable"])
    with pytest.raises(StoreError, match="cannot write in"):
        invert_to_zarr(good_scan(), target / "out.zarr", model=model_path, samples=4, progress=False)
    assert list(target.iterdir()) == []


def test_output_under_a_file_is_refused(tmp_path, model_path, capsys):
    path = write_nc(tmp_path / "scan.nc", good_scan())
    assert cli_invert([path], tmp_path / "scan.nc" / "out.zarr", model_path) == 2
    assert_clear(capsys.readouterr().err.strip(), [f"{tmp_path}/scan.nc", "not a directory"])


def test_too_little_free_space_is_refused_before_any_work(tmp_path, model_path, capsys, monkeypatch):
    path = write_nc(tmp_path / "scan.nc", good_scan())
    monkeypatch.setattr(store_mod.shutil, "disk_usage",
                        lambda p: types.SimpleNamespace(total=10**9, used=10**9 - 1000, free=1000))
    assert cli_invert([path], tmp_path / "out.zarr", model_path) == 2
    err = capsys.readouterr().err.strip()
    assert_clear(err, [f"{tmp_path}/out.zarr", "GB are free"])
    with pytest.raises(StoreError, match="GB are free"):
        invert_to_zarr(good_scan(), tmp_path / "out.zarr", model=model_path, samples=4, progress=False)
    assert not (tmp_path / "out.zarr").exists()


def test_disk_full_mid_run_is_one_line(tmp_path, model_path, capsys, monkeypatch):
    path = write_nc(tmp_path / "scan.nc", good_scan())

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "out.zarr" / "log_T"))

    monkeypatch.setattr(core_mod, "write_region", full)  # as the chunk tasks' writes would fail
    assert cli_invert([path], tmp_path / "out.zarr", model_path) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "--debug" in err, err
    with pytest.raises(OSError, match="No space left"):
        cli.main(["--debug", "invert", str(path), "-o", str(tmp_path / "out.zarr"), "--model", str(model_path),
                  *FAST])
