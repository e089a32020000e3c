"""Read SST/CRISP spectral scans from FITS into the profile schema (and write SSTRED cubes).

Two layouts are read, both with :mod:`astropy.io.fits` and :class:`astropy.wcs.WCS` (which
evaluates ``-TAB`` coordinates); nothing that astropy parses is parsed here by hand.

SSTRED cubes (:func:`read_sstred_cube`)
---------------------------------------
The SST reduction pipeline (github.com/ISP-SST/SSTRED, ``red_fitscube_addwcs``) writes one
SOLARNET-style cube per line and scan range (``nb_6563_<date>T<time>_scans=0-99_im.fits``):

* primary HDU of numpy shape ``(nscan, nstokes, ntune, ny, nx)``; ``CTYPE1..5`` =
  ``HPLN-TAB``, ``HPLT-TAB``, ``WAVE-TAB`` [nm], ``STOKES`` (1..4 = I, Q, U, V), ``UTC--TAB``
  [s since ``DATEREF``, midnight of the observing day];
* the tabulated coordinates in one binary-table extension ``WCS-TAB`` (``PSi_0``), one row,
  column ``HPLN+HPLT+WAVE+TIME`` (``PSi_1``) of numpy shape ``(nscan, ntune, 2, 2, 4)``: the
  coordinates at the four field corners for every tuning and scan, with the index columns
  ``HPLN-INDEX = [1, nx]`` and ``HPLT-INDEX = [1, ny]`` (``PSi_2``); ``WAVE-INDEX`` and
  ``TIME-INDEX`` only when the table is not one entry per pixel; ``PVi_3`` numbers the
  coordinate; ``CRPIXi = CRVALi = 0``, ``CDELTi = 1`` (unity transform);
* single-scan cubes written by IDL lose the trailing 1 of ``TDIM`` (``(4,2,2,ntune)`` instead of
  ``(4,2,2,ntune,1)``), which wcslib refuses as "Bad TDIM"; the table is then re-made in memory
  with the missing unit dimension and evaluated again (SSTRED's own reader pads it the same way);
* the cavity-map wavelength distortion (``CWDISj = 'Lookup'``, ``DWj`` records, ``WCSDVARR``
  extensions) is not evaluated: wavelengths are the nominal tuning wavelengths of the table and
  the ignored keywords are listed in the ``wcs_distortions_ignored`` attr;
* ``BUNIT`` is ``'W m^-2 Hz^-1 sr^-1'`` for calibrated cubes and ``'dn'`` (or ``'D.N.'``)
  otherwise.

Regular (linear) WCS axes (``HPLN-TAN``/``HPLT-TAN``, ``WAVE`` with ``CRVAL3``/``CDELT3`` in any
length unit of ``CUNIT3``, a linear ``UTC`` time axis) are evaluated by the same code.

crisPy per-scan files (:func:`read_crispy_fits`)
------------------------------------------------
The older per-scan FITS read by crisPy (github.com/bionictoucan/crispy, ``crispy.crisp.CRISP``
and ``CRISPNonU``): a primary HDU of numpy shape ``(ntune, ny, nx)`` or
``(nstokes, ntune, ny, nx)`` with a linear WCS (``HPLN-TAN``, ``HPLT-TAN``, ``WAVE``,
``STOKES``), the scan time in ``DATE-AVG`` (else ``DATE-OBS``/``DATE-BEG``), and, when the
tunings are not evenly spaced, the true wavelengths as a 1D array of length ``ntune`` in the
first extension (crisPy's ``CRISPNonU`` reads ``hdul[1].data``; ``CDELT3`` is then a
placeholder). That array has no unit keyword in crisPy: its unit is taken from ``BUNIT`` or
``CUNIT1`` of the extension when present, otherwise decided by the values (Angstrom or nm,
whichever puts them on a line). crisPy's plotting offers an air conversion because headers
may hold vacuum wavelengths; here the medium is decided by the values, as for SSTRED.

Writing (:func:`write_sstred_cube`)
-----------------------------------
One line's scans (a Dataset in the shape the readers return) are written in the SSTRED layout
above: ``-TAB`` HPLN/HPLT/WAVE/TIME in a one-row ``WCS-TAB`` table (corners of the field from
a pointing, pixel scale and rotation, or from the Dataset's ``map_header``), Stokes I (or
I, Q, U, V), ``BUNIT`` (SSTRED's ``'W m^-2 Hz^-1 sr^-1'``, or ``'dn'``), ``DATEREF``,
``DATE-OBS/BEG/END/AVG``, ``TELESCOP``, ``INSTRUME``, ``OBSRVTRY``, ``OBSGEO-X/Y/Z``,
``DSUN_OBS``, ``HGLN_OBS``, ``HGLT_OBS`` and ``RSUN_REF``. The package's example scan and the
tests write their cubes with it.

What both readers return
------------------------
A Dataset with one variable ``I_<key>`` over ``([time,] wl_<key>, y, x)`` (``time`` only when the
file has a time axis, kept even at length 1), where ``<key>`` is the line found from the
wavelengths: the median tuning must lie within 3 A of H-alpha or Ca II 8542 in air or in vacuum,
and the nearest of those four centres decides both the line and ``wavelength_medium``. The
wavelength coordinate is in Angstrom in that medium, increasing (tunings are sorted). The
``time`` coordinate (datetime64, UTC) is the mean of the tuning times of each scan; a file
without a time axis gets a scalar ``time`` from ``DATE-AVG``/``DATE-OBS`` when it has one.
``y`` and ``x`` carry the 0-based pixel indices of the file, so :func:`map_header` stays right
after cropping. Stokes ``stokes`` (default I) is taken when there is a Stokes axis.

Tuning wavelengths that differ between scans of one cube: the first scan's are kept and the
largest difference is recorded (``wavelength_scan_deviation_mA``); above
:data:`WAVELENGTH_TOLERANCE_A` (1 mA, 1/60 of the CRISP FWHM) the file is refused, since the
scans were then taken with different line programs.

The helioprojective plane is kept as a 2D FITS header (attr ``map_header``, a FITS header as
text): the original celestial keywords when they are linear, or, for ``-TAB`` axes, a
``HPLN-TAN``/``HPLT-TAN`` header with ``CRPIX`` at the field centre and a ``CDELT``/``PC``
least-squares fit to the tabulated coordinates of the first scan and tuning (exact for the
four-corner SSTRED tables up to the bilinear term; the largest residual is recorded as
``map_fit_residual_arcsec``), plus ``DATE-OBS``, ``TELESCOP``, ``INSTRUME``, ``OBSGEO-*``,
``DSUN_OBS``, ``HGLN_OBS``, ``HGLT_OBS``, ``RSUN_REF`` ... when the file has them.
:func:`map_header` turns it into the ``meta`` of :class:`sunpy.map.Map`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import xarray as xr
from astropy.io import fits
from astropy.time import Time
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from ..errors import ConfigError, DataFileError, ProfileSchemaError, UnitsError
from ..lines import LINES, Line, line_by_key
from ..schema import DN_NAMES, parse_intensity_unit

__all__ = [
    "LINE_MATCH_HALFWIDTH_A",
    "WAVELENGTH_TOLERANCE_A",
    "STOKES_CODES",
    "identify_line",
    "read_sstred_cube",
    "read_crispy_fits",
    "read_fits_profiles",
    "map_header",
    "write_sstred_cube",
    "write_crispy_l2",
    "SST_LOCATION",
]

#: the median tuning must lie within this of a line centre [Angstrom]
LINE_MATCH_HALFWIDTH_A = 3.0
#: largest accepted difference of a tuning's wavelength between scans of one cube [Angstrom]
WAVELENGTH_TOLERANCE_A = 1.0e-3
#: FITS ``STOKES`` axis values (WCS Paper I): 1..4 = I, Q, U, V
STOKES_CODES = {"I": 1, "Q": 2, "U": 3, "V": 4}

_TIME_TYPES = {"TIME", "UTC", "TAI", "TT", "TDT", "ET", "IAT", "UT1", "UT", "GMT", "TCG", "TCB", "TDB"}
_ASTROPY_SCALES = {"utc", "tai", "tt", "ut1", "tcg", "tcb", "tdb"}
_SPECTRAL_TYPES = {"WAVE", "AWAV"}
_X_TYPES = {"HPLN", "SOLX"}
_Y_TYPES = {"HPLT", "SOLY"}
_DISTORTION_KEY = re.compile(r"^(CWDIS|CWERR|CPDIS|CQDIS|CPERR|CQERR|DW|DP|DQ)\d")
_OBSERVER_KEYS = (
    "DATE-OBS", "DATE-BEG", "DATE-AVG", "DATE-END", "TIMESYS", "TELESCOP", "INSTRUME", "OBSRVTRY",
    "DETECTOR", "OBSGEO-X", "OBSGEO-Y", "OBSGEO-Z", "DSUN_OBS", "HGLN_OBS", "HGLT_OBS", "CRLN_OBS",
    "CRLT_OBS", "RSUN_REF", "RSUN_ARC", "WAVELNTH", "WAVEUNIT", "WAVEBAND",
)
_CELESTIAL_KEY = re.compile(r"^(WCSAXES|CRPIX\d|CRVAL\d|CDELT\d|CUNIT\d|CTYPE\d|PC\d_\d|CD\d_\d|LONPOLE|LATPOLE|PV\d_\d+)$")
_COMPRESSED = (".gz", ".bz2", ".zip", ".xz")
#: FITS files are written in blocks of this many bytes
_BLOCK = 2880
#: how far [A] the centre of the tuning range may sit from the line centre of the inferred medium
#: (radynversion.schema's tolerance for a declared medium)
_MEDIUM_TOLERANCE_A = 1.0


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def _set_hp_tan(hdr, nx: int, ny: int, crval_arcsec, cdelt_arcsec) -> None:
    """Write the keys of a 2D helioprojective TAN WCS centred on an ``(ny, nx)`` field into ``hdr``
    (a dict or FITS header): reference pixel at the field centre, values in arcsec."""
    hdr["WCSAXES"] = 2
    hdr["CTYPE1"], hdr["CTYPE2"] = "HPLN-TAN", "HPLT-TAN"
    hdr["CUNIT1"], hdr["CUNIT2"] = "arcsec", "arcsec"
    hdr["CRPIX1"], hdr["CRPIX2"] = (nx + 1) / 2, (ny + 1) / 2
    hdr["CRVAL1"], hdr["CRVAL2"] = float(crval_arcsec[0]), float(crval_arcsec[1])
    hdr["CDELT1"], hdr["CDELT2"] = float(cdelt_arcsec[0]), float(cdelt_arcsec[1])


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _open_fits(path: Path) -> fits.HDUList:
    """Open ``path`` with astropy, all HDUs, refusing non-FITS and truncated files."""
    if not path.is_file():
        raise DataFileError(f"{path}: no such file; expected a FITS file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            # memmap as astropy's default, not memmap=True: that makes astropy refuse scaled
            # integer images (BSCALE/BZERO/BLANK) instead of scaling them
            hdul = fits.open(path, lazy_load_hdus=False)
    except Exception as err:  # astropy raises OSError, ValueError, TypeError, ... for junk
        raise DataFileError(f"{path}: not a readable FITS file ({_one_line(err)}); expected a "
                            "FITS file from SSTRED or crisPy") from None
    if not path.name.lower().endswith(_COMPRESSED):
        size = path.stat().st_size
        end = 0
        for i, hdu in enumerate(hdul):
            end = hdul.fileinfo(i)["datLoc"] + hdu.size
            if end > size:
                hdul.close()
                raise DataFileError(f"{path}: truncated FITS file ({size} bytes; HDU {i} needs "
                                    f"{end}); expected a complete copy")
        # astropy drops an extension whose header was cut off: its start is still there
        padded = -(-end // _BLOCK) * _BLOCK
        if size > padded:
            with open(path, "rb") as f:
                f.seek(padded)
                tail = f.read(8)
            if tail == b"XTENSION":
                hdul.close()
                raise DataFileError(f"{path}: truncated FITS file ({size} bytes; the header of HDU "
                                    f"{len(hdul)} at byte {padded} is incomplete); expected a complete copy")
    if hdul[0].header.get("NAXIS", 0) == 0:
        hdul.close()
        raise ProfileSchemaError(f"{path}: primary HDU holds no data; expected the spectral cube "
                                 "in the primary HDU")
    return hdul


def _parse_bunit(value: Any, source: str) -> tuple[str, str]:
    """``(units, note)`` from a FITS ``BUNIT``: astropy-parsable, or ``'DN'`` for digital numbers."""
    if value is None or not str(value).strip():
        return "DN", "BUNIT absent: assumed DN (uncalibrated)"
    text = str(value).strip()
    unit = parse_intensity_unit(text)
    if unit is None:
        try:
            unit = u.Unit(text, format="fits")
        except ValueError:
            unit = None
    if unit == u.DN:
        return "DN", ""
    if unit == u.dimensionless_unscaled:
        return "1", f"BUNIT {text!r}: relative intensities, read as dimensionless (uncalibrated)"
    if unit is not None:
        return unit.to_string(), ""
    raise UnitsError(f"{source}: BUNIT {text!r} cannot be parsed by astropy; expected e.g. "
                     "'W m^-2 Hz^-1 sr^-1' or 'DN'")


def identify_line(wavelengths_A: np.ndarray, source: str = "<data>") -> tuple[Line, str]:
    """Which line, and which medium, a set of tuning wavelengths belongs to.

    Parameters
    ----------
    wavelengths_A : ndarray, shape ``(W,)``
        Tuning wavelengths [Angstrom], air or vacuum.
    source : str
        Named in the error message.

    Returns
    -------
    line, medium : Line, {"air", "vacuum"}
        The line whose air or vacuum centre is nearest to the median tuning.

    Raises
    ------
    ProfileSchemaError
        If the median tuning is more than :data:`LINE_MATCH_HALFWIDTH_A` from every centre.

    Example
    -------
    >>> identify_line(np.array([6562.0, 6562.8, 6563.6]))[0].key, identify_line(np.array([8544.4]))[1]
    ('halpha', 'vacuum')
    """
    wl = np.asarray(wavelengths_A, dtype=float).ravel()
    if wl.size == 0 or not np.all(np.isfinite(wl)):
        raise ProfileSchemaError(f"{source}: wavelengths must be finite and non-empty")
    med = float(np.median(wl))
    best = min(((abs(med - c), ln, m) for ln in LINES
                for m, c in (("air", ln.center_air_A), ("vacuum", ln.center_vacuum_A))),
               key=lambda t: t[0])
    if best[0] > LINE_MATCH_HALFWIDTH_A:
        known = "; ".join(f"{ln.label} {ln.center_air_A:.2f} A air / {ln.center_vacuum_A:.2f} A vacuum"
                          for ln in LINES)
        raise ProfileSchemaError(
            f"{source}: tunings span {wl.min():.2f}-{wl.max():.2f} A, median {med:.2f} A, which is "
            f"not within {LINE_MATCH_HALFWIDTH_A:g} A of a known line ({known})")
    return best[1], best[2]


def _axis_kind(ctype: str) -> str | None:
    base = ctype.upper().split("-")[0]
    if base in _X_TYPES:
        return "x"
    if base in _Y_TYPES:
        return "y"
    if base in _SPECTRAL_TYPES:
        return "wave"
    if base == "STOKES":
        return "stokes"
    if base in _TIME_TYPES:
        return "time"
    return None


def _check_medium_unambiguous(wl: np.ndarray, line: Line, medium: str, source: str) -> None:
    """The medium is inferred from the median tuning; refuse tunings whose range centres on the
    other medium's line centre, which :func:`radynversion.schema.validate_profiles` would
    refuse later with a message about a medium nobody declared."""
    centres = {"air": line.center_air_A, "vacuum": line.center_vacuum_A}
    other = "vacuum" if medium == "air" else "air"
    mid = 0.5 * (float(np.min(wl)) + float(np.max(wl)))
    if abs(mid - centres[medium]) > _MEDIUM_TOLERANCE_A and abs(mid - centres[other]) < abs(mid - centres[medium]):
        raise UnitsError(
            f"{source}: {line.dim} is ambiguous between air and vacuum (the file does not say which): "
            f"the median tuning {np.median(wl):.2f} A is nearest the {line.label} centre in {medium} "
            f"({centres[medium]:.2f} A) but the range {np.min(wl):.2f}-{np.max(wl):.2f} A centres on the "
            f"one in {other} ({centres[other]:.2f} A); expected tunings around the line centre, or a "
            "netCDF/Zarr file that declares wavelength_medium")


def _pad_tab_tdim(header: fits.Header, hdul: fits.HDUList) -> fits.HDUList | None:
    """A copy of ``hdul`` whose ``-TAB`` coordinate columns have the ``M + 1`` TDIM entries
    wcslib needs (IDL drops trailing unit dims of single-scan SSTRED tables); None if no change."""
    changed = False
    tables: dict[str, fits.BinTableHDU] = {}
    naxis = header.get("NAXIS", 0)
    for i in range(1, naxis + 1):
        if not str(header.get(f"CTYPE{i}", "")).upper().endswith("-TAB"):
            continue
        extname, colname = header.get(f"PS{i}_0"), header.get(f"PS{i}_1")
        if extname is None or colname is None or extname not in hdul:
            continue
        tab = tables.get(extname, hdul[extname])
        arr = np.asarray(tab.data[colname])  # shape (nrow, K_M, ..., K_1, M)
        m = arr.shape[-1]
        missing = m + 1 - (arr.ndim - 1)
        if missing <= 0:
            continue
        arr = arr.reshape(arr.shape[:1] + (1,) * missing + arr.shape[1:])
        cols = []
        for col in tab.columns:
            if col.name == colname:
                dim = "(" + ",".join(str(n) for n in arr.shape[:0:-1]) + ")"
                cols.append(fits.Column(name=col.name, format=f"{arr[0].size}{col.format.format}",
                                        dim=dim, array=arr))
            else:
                cols.append(col)
        tables[extname] = fits.BinTableHDU.from_columns(cols, header=tab.header, name=extname)
        changed = True
    if not changed:
        return None
    new = fits.HDUList([hdu if getattr(hdu, "name", None) not in tables else tables[hdu.name]
                        for hdu in hdul])
    return new


def _check_tab_indices(header: fits.Header, hdul: fits.HDUList, source: str) -> None:
    """Refuse ``-TAB`` index vectors (``PSi_2``) that are not strictly monotonic: wcslib
    aborts the process on them (a double free) instead of raising."""
    for i in range(1, int(header.get("NAXIS", 0)) + 1):
        if not str(header.get(f"CTYPE{i}", "")).upper().endswith("-TAB"):
            continue
        extname, colname = header.get(f"PS{i}_0"), header.get(f"PS{i}_2")
        if not extname or not colname or extname not in hdul:
            continue
        try:
            index = np.asarray(hdul[extname].data[colname], dtype=float)[0].ravel()
        except Exception:  # noqa: BLE001 - a missing column: left to astropy's own error
            continue
        steps = np.diff(index)
        if not (np.all(np.isfinite(index)) and (np.all(steps > 0) or np.all(steps < 0))):
            raise DataFileError(f"{source}: -TAB index {colname} (PS{i}_2) of {extname} is "
                                f"{index.tolist()}; expected a strictly monotonic index vector (one "
                                f"value per tabulated pixel of axis {i})")


def _make_wcs(header: fits.Header, hdul: fits.HDUList, source: str) -> tuple[WCS, list[str]]:
    """The WCS of the primary HDU with ``-TAB`` evaluated; distortion keywords are left out."""
    _check_tab_indices(header, hdul, source)
    hdr = header.copy()
    ignored = [k for k in hdr if _DISTORTION_KEY.match(k)]
    for k in ignored:
        del hdr[k]
    err: Exception | None = None
    for attempt in ("as written", "TDIM padded"):
        fobj = hdul if attempt == "as written" else _pad_tab_tdim(hdr, hdul)
        if fobj is None:
            break
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyWarning)
                return WCS(hdr, fobj=fobj), sorted({k.split(".")[0] for k in ignored})
        except Exception as e:  # wcslib raises ValueError, KeyError and its own errors
            err = err or e
    tab = sorted({str(header.get(f"PS{i}_0")) for i in range(1, int(header.get("NAXIS", 0)) + 1)
                  if str(header.get(f"CTYPE{i}", "")).upper().endswith("-TAB") and header.get(f"PS{i}_0")})
    missing = [name for name in tab if name not in hdul]
    if missing:
        raise DataFileError(f"{source}: its -TAB axes need the extension {missing[0]!r}, which the file "
                            f"lacks ({len(hdul)} HDU{'s' if len(hdul) != 1 else ''}; truncated?); expected "
                            "a complete SSTRED cube")
    raise DataFileError(f"{source}: its WCS cannot be evaluated by astropy ({_one_line(err)}); "
                        "expected SOLARNET WCS keywords (-TAB axes need the WCS-TAB extension)")


def _read_section(hdu: Any, key: Any) -> np.ndarray:
    """``hdu.data[key]`` through ``hdu.section``, with integer indices applied by numpy
    (astropy's ``Section`` keeps some length-1 axes indexed by an integer, e.g. the Stokes
    axis of a Stokes-I-only cube)."""
    key = key if isinstance(key, tuple) else (key,)
    sliced = tuple(slice(k, k + 1) if isinstance(k, (int, np.integer)) else k for k in key)
    take = tuple(0 if isinstance(k, (int, np.integer)) else slice(None) for k in key)
    return np.asarray(hdu.section[sliced])[take]


class _LazyFitsData:
    """Array-like view of a primary HDU that opens the file for each read (picklable for dask)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype):
        self.path = str(path)
        self.shape = shape
        self.dtype = dtype
        self.ndim = len(shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        with fits.open(self.path) as hdul:  # memmap when astropy can (not for scaled integers)
            return _read_section(hdul[0], key).astype(self.dtype, copy=False)


def _time_reference(header: fits.Header, wcs: WCS, ctype: str, source: str) -> Time:
    if not any(k in header for k in ("DATEREF", "MJDREF", "MJDREFI", "JDREF", "JDREFI")):
        raise ProfileSchemaError(f"{source}: time axis {ctype!r} has no reference date; expected "
                                 "DATEREF (or MJDREF) as SSTRED writes")
    scale = ctype.upper().split("-")[0].lower()
    if scale not in _ASTROPY_SCALES:
        scale = str(header.get("TIMESYS", "UTC")).strip().lower()
    if scale not in _ASTROPY_SCALES:
        scale = "utc"
    mjd = wcs.wcs.mjdref
    return Time(mjd[0], mjd[1], format="mjd", scale=scale)


def _header_time(header: fits.Header) -> Time | None:
    for key in ("DATE-AVG", "DATE-OBS", "DATE-BEG"):
        value = header.get(key)
        if value:
            scale = str(header.get("TIMESYS", "UTC")).strip().lower()
            try:
                return Time(str(value).strip(), scale=scale if scale in _ASTROPY_SCALES else "utc")
            except ValueError:
                continue
    return None


def _to_datetime64(t: Time) -> np.ndarray:
    return np.asarray(t.utc.to_value("datetime64")).astype("datetime64[ns]")


def _world(wcs: WCS, pixels: list[np.ndarray], axis: int) -> u.Quantity:
    values = wcs.pixel_to_world_values(*pixels)
    if wcs.pixel_n_dim == 1:
        values = (values,)
    return np.asarray(values[axis], dtype=float) * u.Unit(wcs.world_axis_units[axis] or "")


def _celestial_header(wcs: WCS, header: fits.Header, axes: dict[str, int], nx: int, ny: int,
                      others: dict[int, float], source: str) -> tuple[fits.Header, dict[str, float]]:
    """2D HPLN/HPLT header of the (y, x) plane and a summary (centre, pixel scale, fit residual)."""
    ix, iy = axes["x"], axes["y"]
    tabulated = any(wcs.wcs.ctype[i].upper().endswith("-TAB") for i in (ix, iy))
    linear_celestial = (not tabulated and wcs.wcs.ctype[ix].upper().startswith("HPLN-")
                        and wcs.wcs.ctype[iy].upper().startswith("HPLT-"))

    def lonlat(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pix = []
        for i in range(wcs.pixel_n_dim):
            if i == ix:
                pix.append(np.asarray(px, dtype=float))
            elif i == iy:
                pix.append(np.asarray(py, dtype=float))
            else:
                pix.append(np.full(np.shape(px), others.get(i, 0.0)))
        return (_world(wcs, pix, ix).to_value(u.arcsec), _world(wcs, pix, iy).to_value(u.arcsec))

    # at least one pixel's span along each axis: a field one pixel wide still has a scale
    gx, gy = np.meshgrid(np.linspace(0, max(nx - 1, 1), 3), np.linspace(0, max(ny - 1, 1), 3))
    gx, gy = gx.ravel(), gy.ravel()
    lon, lat = lonlat(gx, gy)
    design = np.column_stack([np.ones_like(gx), gx - (nx - 1) / 2, gy - (ny - 1) / 2])
    coef_lon = np.linalg.lstsq(design, lon, rcond=None)[0]
    coef_lat = np.linalg.lstsq(design, lat, rcond=None)[0]
    residual = float(max(np.abs(design @ coef_lon - lon).max(), np.abs(design @ coef_lat - lat).max()))
    cd = np.array([[coef_lon[1], coef_lon[2]], [coef_lat[1], coef_lat[2]]])  # arcsec / pixel
    cdelt = np.sqrt((cd**2).sum(axis=1))
    summary = {"centre_hpln": float(coef_lon[0]), "centre_hplt": float(coef_lat[0]),
               "scale_x": float(cdelt[0]), "scale_y": float(cdelt[1]), "residual": residual}

    out = fits.Header()
    out["NAXIS"] = 2
    out["NAXIS1"] = nx
    out["NAXIS2"] = ny
    if linear_celestial:
        sub = wcs.sub([ix + 1, iy + 1]).to_header()
        for card in sub.cards:
            if _CELESTIAL_KEY.match(card.keyword):
                out[card.keyword] = (card.value, card.comment)
        summary["residual"] = 0.0
    else:
        if np.any(cdelt <= 0):
            raise ProfileSchemaError(f"{source}: the helioprojective coordinates do not change "
                                     "across the field; expected a pixel scale")
        pc = cd / cdelt[:, None]
        _set_hp_tan(out, nx, ny, (coef_lon[0], coef_lat[0]), cdelt)
        for i in range(2):
            for j in range(2):
                out[f"PC{i + 1}_{j + 1}"] = float(pc[i, j])
        out["COMMENT"] = ("Linear fit to the tabulated HPLN/HPLT coordinates of the first scan "
                          "and tuning (radynversion)")
    for key in _OBSERVER_KEYS:
        if key in header and header[key] is not None and str(header[key]).strip() != "":
            out[key] = header[key]
    return out, summary


# ---------------------------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------------------------


def _read_cube(path: str | Path, stokes: str, chunks: Any, reader: str,
               wavelength_table: bool) -> xr.Dataset:
    path = Path(path)
    src = str(path)
    stokes = stokes.upper()
    if stokes not in STOKES_CODES:
        raise ConfigError(f"{src}: stokes = {stokes!r}; expected one of {list(STOKES_CODES)}")
    hdul = _open_fits(path)
    try:
        header = hdul[0].header
        shape = tuple(int(n) for n in hdul[0].shape)  # numpy order
        naxis = len(shape)
        wcs, ignored = _make_wcs(header, hdul, src)
        if wcs.pixel_n_dim != naxis:
            raise ProfileSchemaError(f"{src}: the WCS has {wcs.pixel_n_dim} axes but the data "
                                     f"{naxis}; expected one CTYPEi per data axis")
        ctypes = [str(c) for c in wcs.wcs.ctype]
        axes: dict[str, int] = {}  # kind -> FITS axis index (0-based)
        for i, ct in enumerate(ctypes):
            kind = _axis_kind(ct)
            if kind is None:
                if shape[naxis - 1 - i] != 1:
                    raise ProfileSchemaError(f"{src}: axis {i + 1} ({ct!r}) of length "
                                             f"{shape[naxis - 1 - i]} is not understood; expected "
                                             "HPLN, HPLT, WAVE, STOKES and time axes")
                continue
            if kind in axes:
                raise ProfileSchemaError(f"{src}: two {kind} axes ({ctypes}); expected one")
            axes[kind] = i
        if "wave" not in axes:
            raise ProfileSchemaError(f"{src}: no wavelength axis (CTYPEs {ctypes}); expected "
                                     "one CTYPEi of 'WAVE', 'WAVE-TAB' or 'AWAV'")
        for k in ("x", "y"):
            if k not in axes:
                raise ProfileSchemaError(f"{src}: no {'HPLN' if k == 'x' else 'HPLT'} axis (CTYPEs "
                                         f"{ctypes}); expected helioprojective spatial axes")
        n = {k: shape[naxis - 1 - i] for k, i in axes.items()}
        ntune, nscan = n["wave"], n.get("time", 1)

        # wavelengths and times of every (scan, tuning), at pixel (0, 0), Stokes index 0
        it = np.arange(ntune, dtype=float)
        isc = np.arange(nscan, dtype=float)
        grid_s, grid_t = np.meshgrid(isc, it, indexing="ij")
        pix = [np.zeros_like(grid_t) for _ in range(naxis)]
        pix[axes["wave"]] = grid_t
        if "time" in axes:
            pix[axes["time"]] = grid_s
        try:
            wl_all = _world(wcs, pix, axes["wave"]).to_value(u.AA)  # (nscan, ntune)
        except u.UnitConversionError:
            raise UnitsError(f"{src}: wavelength axis unit {wcs.world_axis_units[axes['wave']]!r} "
                             "is not a length; expected CUNIT of 'nm' or 'Angstrom'") from None
        if wavelength_table:
            wl_all = _crispy_wavelengths(hdul, ntune, src, wl_all)
        wl = wl_all[0]
        deviation = float(np.abs(wl_all - wl).max())
        if deviation > WAVELENGTH_TOLERANCE_A:
            raise ProfileSchemaError(
                f"{src}: tuning wavelengths differ between scans by up to {deviation * 1e3:.1f} mA; "
                f"expected the same tunings in every scan (within {WAVELENGTH_TOLERANCE_A * 1e3:g} mA)")
        line, medium = identify_line(wl, src)
        _check_medium_unambiguous(wl, line, medium, src)
        order = np.argsort(wl, kind="stable")
        wl = wl[order]
        if np.any(np.diff(wl) <= 0):
            raise ProfileSchemaError(f"{src}: two tunings have the same wavelength "
                                     f"({line.var}); expected distinct tunings")

        times = None
        if "time" in axes:
            ref = _time_reference(header, wcs, ctypes[axes["time"]], src)
            t_all = _world(wcs, pix, axes["time"])  # (nscan, ntune), a time unit
            times = _to_datetime64(ref + t_all.mean(axis=1))
        scalar_time = None if times is not None else _header_time(header)

        stokes_index = None
        if "stokes" in axes:
            ns = n["stokes"]
            spix = [np.zeros(ns) for _ in range(naxis)]
            spix[axes["stokes"]] = np.arange(ns, dtype=float)
            codes = np.rint(_world(wcs, spix, axes["stokes"]).value).astype(int)
            hits = np.flatnonzero(codes == STOKES_CODES[stokes])
            if hits.size == 0:
                have = [k for k, v in STOKES_CODES.items() if v in codes] or codes.tolist()
                raise ProfileSchemaError(f"{src}: Stokes {stokes} not in the file (Stokes axis has "
                                         f"{have}); expected Stokes {stokes}")
            stokes_index = int(hits[0])
        elif stokes != "I":
            raise ProfileSchemaError(f"{src}: no Stokes axis, so Stokes {stokes} cannot be taken; "
                                     "expected a STOKES axis")

        others = {axes["wave"]: 0.0}
        map_hdr, summary = _celestial_header(wcs, header, axes, n["x"], n["y"], others, src)
        drift = 0.0
        if "time" in axes and nscan > 1:
            cpix = [np.zeros(nscan) for _ in range(naxis)]
            cpix[axes["x"]] += (n["x"] - 1) / 2
            cpix[axes["y"]] += (n["y"] - 1) / 2
            cpix[axes["time"]] = isc
            cx = _world(wcs, cpix, axes["x"]).to_value(u.arcsec)
            cy = _world(wcs, cpix, axes["y"]).to_value(u.arcsec)
            drift = float(np.hypot(cx - cx[0], cy - cy[0]).max())
        if "DATE-OBS" not in map_hdr:
            first = times[0] if times is not None else (
                _to_datetime64(scalar_time) if scalar_time is not None else None)
            if first is not None:
                map_hdr["DATE-OBS"] = str(np.datetime_as_string(first, unit="ms"))

        units, units_note = _parse_bunit(header.get("BUNIT"), src)

        # the data: (file axes) -> select Stokes -> ([time,] wl, y, x)
        names = []
        for j in range(naxis):
            i = naxis - 1 - j  # FITS axis of numpy axis j
            kind = next((k for k, v in axes.items() if v == i), None)
            names.append({"x": "x", "y": "y", "wave": line.dim, "stokes": "stokes",
                          "time": "time", None: f"_unused{j}"}[kind])
        key = tuple(stokes_index if nm == "stokes" else (0 if nm.startswith("_unused") else slice(None))
                    for nm in names)
        kept = [nm for nm in names if nm != "stokes" and not nm.startswith("_unused")]
        # FITS is big-endian; hand out native byte order
        dtype = np.asarray(hdul[0].section[(slice(0, 1),) * naxis]).dtype.newbyteorder("=")
        if chunks is None:
            data: Any = _read_section(hdul[0], key).astype(dtype, copy=False)
        else:
            import dask.array as da
            from dask.base import tokenize

            lazy = _LazyFitsData(path, shape, dtype)
            blocks = tuple(1 if nm in ("stokes", "time") or nm.startswith("_unused") else -1
                           for nm in names)
            token = tokenize(str(path.resolve()), path.stat().st_mtime_ns, shape, key)
            data = da.from_array(lazy, chunks=blocks, name=f"fits-{token}")[key]
    finally:
        hdul.close()

    attrs_var = {"units": units, "stokes": stokes, "source_file": src}
    if units_note:
        attrs_var["units_note"] = units_note
    da_ = xr.DataArray(data, dims=kept, attrs=attrs_var)
    da_ = da_.isel({line.dim: order}) if np.any(order != np.arange(ntune)) else da_
    canonical = [d for d in ("time", line.dim, "y", "x") if d in da_.dims]
    da_ = da_.transpose(*canonical)
    coords: dict[str, Any] = {}
    if times is not None:
        coords["time"] = ("time", times, {"long_name": "mean time of the scan's tunings (UTC)"})
    elif scalar_time is not None:
        coords["time"] = ((), _to_datetime64(scalar_time),
                          {"long_name": "time of the scan (UTC), from DATE-AVG/DATE-OBS"})
    coords[line.dim] = (line.dim, wl, {"units": "Angstrom", "wavelength_medium": medium,
                                       "long_name": f"{line.label} tuning wavelength ({medium})"})
    coords["y"] = ("y", np.arange(n["y"]), {"long_name": "pixel index along HPLT (0-based, in the file)"})
    coords["x"] = ("x", np.arange(n["x"]), {"long_name": "pixel index along HPLN (0-based, in the file)"})
    ds = xr.Dataset({line.var: da_}, coords=coords)
    if chunks is not None and chunks != {}:
        ds = ds.chunk(chunks) if not isinstance(chunks, Mapping) else ds.chunk(
            {k: v for k, v in chunks.items() if k in ds.dims})
    ds.attrs = {
        "source_files": [src],
        "reader": reader,
        "line": line.key,
        "stokes": stokes,
        "wavelength_axis": ctypes[axes["wave"]],
        "wavelength_scan_deviation_mA": deviation * 1e3,
        "date_obs": str(map_hdr.get("DATE-OBS", "")),
        "telescope": str(header.get("TELESCOP", "")),
        "instrument": str(header.get("INSTRUME", "")),
        "pointing_hpln_arcsec": summary["centre_hpln"],
        "pointing_hplt_arcsec": summary["centre_hplt"],
        "pixel_scale_arcsec": [summary["scale_x"], summary["scale_y"]],
        "pointing_drift_arcsec": drift,
        "map_fit_residual_arcsec": summary["residual"],
        "map_header": map_hdr.tostring(sep="\n", endcard=False, padding=False),
    }
    if ignored:
        ds.attrs["wcs_distortions_ignored"] = ", ".join(ignored)
    return ds


def _crispy_wavelengths(hdul: fits.HDUList, ntune: int, source: str,
                        wcs_wl: np.ndarray) -> np.ndarray:
    """crisPy non-uniform sampling: the true wavelengths as a 1D array in HDU 1, else the WCS's."""
    if len(hdul) < 2 or not isinstance(hdul[1], fits.ImageHDU) or hdul[1].data is None:
        return wcs_wl
    arr = np.asarray(hdul[1].data, dtype=float).ravel()
    if arr.size != ntune:
        raise ProfileSchemaError(f"{source}: HDU 1 holds {arr.size} wavelengths but the cube has "
                                 f"{ntune} tunings; expected one wavelength per tuning")
    hdr = hdul[1].header
    unit_s = hdr.get("BUNIT") or hdr.get("CUNIT1")
    if unit_s:
        try:
            return ((arr * u.Unit(str(unit_s))).to_value(u.AA))[None, :]
        except (ValueError, u.UnitConversionError):
            raise UnitsError(f"{source}: HDU 1 wavelength unit {unit_s!r} is not a length; "
                             "expected 'Angstrom' or 'nm'") from None
    for unit in (u.AA, u.nm):
        wl = (arr * unit).to_value(u.AA)
        try:
            identify_line(wl, source)
        except ProfileSchemaError:
            continue
        return wl[None, :]
    raise ProfileSchemaError(f"{source}: HDU 1 wavelengths ({arr.min():g}-{arr.max():g}, no unit) "
                             "match no line in Angstrom or nm; expected the tuning wavelengths")


def read_sstred_cube(path: str | Path, stokes: str = "I", chunks: Any = None) -> xr.Dataset:
    """Read one line's SSTRED (SOLARNET) cube into the profile schema.

    Parameters
    ----------
    path : str or Path
        FITS file with the primary HDU of numpy shape ``(nscan, nstokes, ntune, ny, nx)`` (any
        axis order; axes found by ``CTYPEi``; time and Stokes axes optional) and, for ``-TAB``
        axes, the ``WCS-TAB`` extension.
    stokes : {"I", "Q", "U", "V"}
        Stokes parameter taken when the file has a Stokes axis.
    chunks : None, int, "auto" or mapping of dim -> size
        None reads the selected Stokes parameter into memory; anything else returns dask arrays
        (one scan per chunk, then rechunked to ``chunks``) that read the file on compute.

    Returns
    -------
    xarray.Dataset
        ``I_<key>`` of dims ``([time,] wl_<key>, y, x)`` in ``units`` (astropy string or
        ``'DN'``); ``wl_<key>`` [Angstrom] with ``wavelength_medium``; ``time`` (datetime64, UTC,
        mean of each scan's tuning times); ``y``, ``x`` pixel indices; attrs ``source_files``,
        ``reader``, ``line``, ``date_obs``, ``telescope``, ``instrument``,
        ``pointing_hpln_arcsec``, ``pointing_hplt_arcsec`` (field centre), ``pixel_scale_arcsec``
        (x, y), ``map_header`` (see :func:`map_header`).

    Raises
    ------
    DataFileError
        Missing, non-FITS or truncated file; a WCS astropy cannot evaluate.
    ProfileSchemaError
        No wavelength axis, no known line, tunings differing between scans by more than 1 mA.
    UnitsError
        ``BUNIT`` astropy cannot parse.

    Example
    -------
    >>> ds = read_sstred_cube("nb_6563_2017-09-06T10:01:02_scans=0-99_im.fits")  # doctest: +SKIP
    >>> ds.I_halpha.dims  # doctest: +SKIP
    ('time', 'wl_halpha', 'y', 'x')
    """
    return _read_cube(path, stokes, chunks, "sstred", wavelength_table=False)


def read_crispy_fits(path: str | Path, stokes: str = "I", chunks: Any = None) -> xr.Dataset:
    """Read one crisPy-style per-scan CRISP FITS file into the profile schema.

    Parameters
    ----------
    path : str or Path
        FITS file, primary HDU of numpy shape ``(ntune, ny, nx)`` or ``(nstokes, ntune, ny, nx)``
        with a linear WCS; optionally the true (non-uniform) tuning wavelengths as a 1D array of
        length ``ntune`` in HDU 1 (Angstrom or nm, see the module docstring).
    stokes : {"I", "Q", "U", "V"}
        Stokes parameter taken when the file has a Stokes axis.
    chunks : None, int, "auto" or mapping of dim -> size
        As for :func:`read_sstred_cube`.

    Returns
    -------
    xarray.Dataset
        ``I_<key>(wl_<key>, y, x)`` with a scalar ``time`` coordinate from ``DATE-AVG`` (else
        ``DATE-OBS``/``DATE-BEG``) when present; attrs as :func:`read_sstred_cube`, ``reader``
        = ``'crispy'``.

    Example
    -------
    >>> ds = read_crispy_fits("crisp_6563_scan000.fits")  # doctest: +SKIP
    >>> ds.I_halpha.dims  # doctest: +SKIP
    ('wl_halpha', 'y', 'x')
    """
    return _read_cube(path, stokes, chunks, "crispy", wavelength_table=True)


def read_fits_profiles(path: str | Path, stokes: str = "I", chunks: Any = None) -> xr.Dataset:
    """Read a CRISP FITS file of either layout: SSTRED when it has ``-TAB`` axes, a
    ``WCS-TAB`` extension or a time axis, crisPy otherwise (see the readers for the returns)."""
    p = Path(path)
    hdul = _open_fits(p)
    try:
        header = hdul[0].header
        ctypes = [str(header.get(f"CTYPE{i}", "")) for i in range(1, header.get("NAXIS", 0) + 1)]
        sstred = ("WCS-TAB" in hdul or any(c.upper().endswith("-TAB") for c in ctypes)
                  or any(_axis_kind(c) == "time" for c in ctypes))
    finally:
        hdul.close()
    return (read_sstred_cube if sstred else read_crispy_fits)(p, stokes=stokes, chunks=chunks)


def _fits_unit(unit_s: str) -> str:
    """A ``units`` attr as a FITS ``BUNIT``: astropy's FITS string; ``log(...)`` for a
    logarithmic unit such as ``dex(cm-3)`` (FITS standard 4.0, section 4.3; astropy cannot write
    it, and sunpy reads it as an unknown unit rather than failing on ``dex``); the text itself
    when astropy cannot parse it."""
    try:
        unit = u.Unit(unit_s)
    except ValueError:
        return str(unit_s)
    if isinstance(unit, u.FunctionUnitBase):
        inner = unit.physical_unit.to_string("fits")
        return f"log({inner})" if isinstance(unit, u.DexUnit) else str(unit_s)
    try:
        return unit.to_string("fits")
    except ValueError:
        return str(unit_s)


def map_header(ds: xr.Dataset, line: str | Line | None = None, time_index: int | None = None,
               variable: str | None = None) -> dict:
    """FITS-like header of the ``(y, x)`` plane of ``ds``, for ``sunpy.map.Map(data2d, meta)``.

    Parameters
    ----------
    ds : xarray.Dataset
        Read by this module or :func:`radynversion.io.observation.open_observation` (attr
        ``map_header``, or ``map_header_<key>`` when the two lines differ).
    line : str or Line, optional
        Which line's header, when they differ (default: H-alpha if present).
    time_index : int, optional
        Set ``DATE-OBS`` to this scan's time (``time`` or ``time_<key>`` coordinate).
    variable : str, optional
        The variable the map shows (e.g. ``"log_T"`` of an inversion result): ``BUNIT`` from
        its ``units`` attr (``dex(K)`` as ``log(K)``, ``km / s`` as ``km s-1``, ``1`` as
        dimensionless). Default: the line's intensity, when ``ds`` holds profiles.

    Returns
    -------
    dict
        ``NAXIS1/2`` (the sizes of ``x``/``y`` in ``ds``), ``CTYPE``, ``CUNIT``, ``CRPIX``
        (shifted by the first ``x``/``y`` pixel index, so crops stay right), ``CRVAL``,
        ``CDELT``, ``PC``, observer keywords and ``BUNIT``.

    Raises
    ------
    ProfileSchemaError
        No map header in ``ds``, ``x``/``y`` not contiguous pixel ranges, or no ``variable``
        in ``ds``.

    Example
    -------
    >>> import sunpy.map  # doctest: +SKIP
    >>> m = sunpy.map.Map(ds.I_halpha.isel(time=0, wl_halpha=7).values, map_header(ds))  # doctest: +SKIP
    """
    ln = line_by_key(line) if isinstance(line, str) else line
    candidates = []
    if ln is not None:
        candidates.append(f"map_header_{ln.key}")
    candidates.append("map_header")
    candidates += [f"map_header_{x.key}" for x in LINES]
    text = next((ds.attrs[c] for c in candidates if c in ds.attrs), None)
    if text is None:
        raise ProfileSchemaError(f"{ds.attrs.get('source_files', '<dataset>')}: no 'map_header' "
                                 "attr; expected a Dataset read by radynversion.io")
    hdr = fits.Header.fromstring(text, sep="\n")
    for dim, axis in (("x", 1), ("y", 2)):
        if dim not in ds.sizes:
            continue
        hdr[f"NAXIS{axis}"] = int(ds.sizes[dim])
        if dim in ds.coords and ds.sizes[dim] > 0:
            idx = np.asarray(ds[dim].values)
            if idx.dtype.kind in "iu":
                if idx.size > 1 and np.any(np.diff(idx) != 1):
                    raise ProfileSchemaError(f"map_header: {dim} must be a contiguous pixel range "
                                             "(step 1) to keep the map's WCS")
                hdr[f"CRPIX{axis}"] = float(hdr[f"CRPIX{axis}"]) - int(idx[0])
    if time_index is not None:
        keys = ["time"] + ([f"time_{ln.key}"] if ln else []) + [f"time_{x.key}" for x in LINES]
        for k in keys:
            if k in ds.coords and ds[k].ndim == 1:
                t = ds[k].values[time_index]
                hdr["DATE-OBS"] = str(np.datetime_as_string(t, unit="ms"))
                break
    if variable is not None and variable not in ds.data_vars:
        raise ProfileSchemaError(f"map_header: no variable {variable!r} in the Dataset (has "
                                 f"{sorted(map(str, ds.data_vars))[:8]}); expected one of its variables")
    var = variable or (ln.var if ln is not None and ln.var in ds else next((x.var for x in LINES if x.var in ds), None))
    if var is not None and "units" in ds[var].attrs:
        hdr["BUNIT"] = _fits_unit(ds[var].attrs["units"])
    return {k: v for k, v in hdr.items() if k not in ("COMMENT", "HISTORY", "")}


# ---------------------------------------------------------------------------------------------
# the writer
# ---------------------------------------------------------------------------------------------

#: geodetic position of the SST on La Palma (Scharmer et al. 2003): lon [deg E], lat [deg], h [m]
SST_LOCATION = (-17.8806, 28.7597, 2360.0)
#: SSTRED's spelling of a calibrated intensity unit
SSTRED_BUNIT = "W m^-2 Hz^-1 sr^-1"
#: default seconds between two tunings of one scan (CRISP takes ~15-25 tunings in ~5-15 s)
TUNING_STEP_S = 0.5


def _spatial_header(ds: xr.Dataset, line: Line, nx: int, ny: int, centre_arcsec, scale_arcsec,
                    rotation_deg: float, spatial_header) -> fits.Header:
    """The 2D HPLN/HPLT header of the (y, x) plane to tabulate: given, from ``ds`` (its
    ``map_header`` attr), or made from a pointing, pixel scale and rotation."""
    if spatial_header is not None:
        if isinstance(spatial_header, str):
            return fits.Header.fromstring(spatial_header, sep="\n")
        return fits.Header(spatial_header) if not isinstance(spatial_header, fits.Header) else spatial_header
    if centre_arcsec is None and any(k.startswith("map_header") for k in ds.attrs):
        return fits.Header(map_header(ds, line))
    if centre_arcsec is None:
        raise ProfileSchemaError("write_sstred_cube: no spatial WCS; pass centre_arcsec (and "
                                 "scale_arcsec), spatial_header, or a Dataset with a 'map_header' attr")
    scale = np.broadcast_to(np.asarray(scale_arcsec, dtype=float), (2,))
    rot = np.deg2rad(rotation_deg)
    hdr = fits.Header()
    _set_hp_tan(hdr, nx, ny, centre_arcsec, scale)
    hdr["PC1_1"], hdr["PC1_2"] = float(np.cos(rot)), float(-np.sin(rot))
    hdr["PC2_1"], hdr["PC2_2"] = float(np.sin(rot)), float(np.cos(rot))
    return hdr


def _corner_coordinates(hdr: fits.Header, nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    """HPLN, HPLT [arcsec] of the field corners, each numpy shape ``(2, 2)`` = (y corner, x corner).

    The linear (intermediate world) coordinates ``CRVAL + CDELT PC (p - CRPIX)``, as SSTRED
    tabulates its pointing plus pixel offsets, and as :func:`read_sstred_cube` fits them back;
    over CRISP's ~1 arcmin field they differ from the TAN-projected spherical coordinates by
    less than 1e-6 of the offsets.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        w = WCS(fits.Header([c for c in hdr.cards if _CELESTIAL_KEY.match(c.keyword)]), naxis=2)
    units = [u.Unit(x or "deg") for x in w.wcs.cunit]
    px, py = np.meshgrid([0.0, nx - 1.0], [0.0, ny - 1.0])
    d = np.stack([px.ravel() + 1 - w.wcs.crpix[0], py.ravel() + 1 - w.wcs.crpix[1]])  # FITS pixels
    offsets = w.wcs.get_pc() @ (w.wcs.cdelt[:, None] * d)  # (2, 4) in CUNIT
    lon = (w.wcs.crval[0] + offsets[0]) * units[0]
    lat = (w.wcs.crval[1] + offsets[1]) * units[1]
    return lon.to_value(u.arcsec).reshape(2, 2), lat.to_value(u.arcsec).reshape(2, 2)


def _observer_cards(date: Time, location: tuple[float, float, float] | None) -> dict[str, Any]:
    """Observer keywords (SOLARNET / sunpy): the Earth's heliographic position at ``date`` and,
    with ``location`` (geodetic lon, lat [deg], height [m]), OBSGEO-X/Y/Z [m]."""
    from sunpy.coordinates import get_earth
    from sunpy.sun import constants

    earth = get_earth(date)
    cards: dict[str, Any] = {
        "DSUN_OBS": (float(earth.radius.to_value(u.m)), "[m] Sun-observer distance (Earth centre)"),
        "HGLN_OBS": (float(earth.lon.to_value(u.deg)), "[deg] Stonyhurst longitude of the observer"),
        "HGLT_OBS": (float(earth.lat.to_value(u.deg)), "[deg] Stonyhurst latitude of the observer"),
        "RSUN_REF": (float(constants.radius.to_value(u.m)), "[m] solar radius"),
    }
    if location is not None:
        from astropy.coordinates import EarthLocation

        loc = EarthLocation.from_geodetic(location[0] * u.deg, location[1] * u.deg, location[2] * u.m)
        for axis, value in zip("XYZ", loc.to_geocentric(), strict=True):
            cards[f"OBSGEO-{axis}"] = (float(value.to_value(u.m)), "[m] observer position (ITRS)")
    return cards


def _bunit(units: str | None) -> str | None:
    if units is None:
        return None
    text = str(units).strip()
    if text.lower() in DN_NAMES or text == "DN":
        return "dn"
    try:
        unit = u.Unit(text)
    except ValueError:
        raise UnitsError(f"write_sstred_cube: intensity units {text!r} cannot be parsed by astropy") from None
    if unit == u.Unit("W / (m2 Hz sr)"):
        return SSTRED_BUNIT
    return unit.to_string("fits")


def write_sstred_cube(
    path: str | Path,
    ds_line: xr.Dataset | xr.DataArray,
    line: str | Line | None = None,
    *,
    time: Any = None,
    date_ref: Any = None,
    tuning_step_s: float = TUNING_STEP_S,
    centre_arcsec: tuple[float, float] | None = None,
    scale_arcsec: float | tuple[float, float] = 0.059,
    rotation_deg: float = 0.0,
    spatial_header: fits.Header | Mapping[str, Any] | str | None = None,
    bunit: str | None = None,
    telescope: str = "SST",
    instrument: str = "CRISP",
    observatory: str = "Observatorio del Roque de los Muchachos (ORM)",
    location: tuple[float, float, float] | None = SST_LOCATION,
    time_axis: bool = True,
    header: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one line's scans as an SSTRED (SOLARNET) cube that :func:`read_sstred_cube` reads.

    The layout is the one of SSTRED's ``red_fitscube_addwcs`` (see the module docstring):
    primary HDU float32 of numpy shape ``(nscan, nstokes, ntune, ny, nx)`` with ``CTYPE1..5`` =
    ``HPLN-TAB``, ``HPLT-TAB``, ``WAVE-TAB`` [nm], ``STOKES``, ``UTC--TAB`` [s since
    ``DATEREF``], and a one-row ``WCS-TAB`` binary table whose column ``HPLN+HPLT+WAVE+TIME``
    holds the coordinates of the four field corners for every scan and tuning.

    Parameters
    ----------
    path : str or Path
        The FITS file to write (SSTRED names: ``nb_6563_<date>T<time>_scans=0-0_im.fits``).
    ds_line : xarray.Dataset or DataArray
        ``I_<key>`` over ``([time,] [stokes,] wl_<key>, y, x)`` (any order; ``stokes`` labels
        ``I, Q, U, V`` in that order, Stokes I only when absent), with ``units`` on the variable
        (a spectral radiance, ``'DN'``) and ``units``/``wavelength_medium`` on ``wl_<key>``;
        the wavelengths are written as they are (in nm), air or vacuum. A ``time`` coordinate
        (datetime64, UTC, one per scan or scalar) gives the scan times.
    line : str or Line, optional
        Which line to write when ``ds_line`` holds both.
    time : datetime-like or sequence, optional
        Scan times (UTC) when ``ds_line`` has no ``time`` coordinate.
    date_ref : datetime-like, optional
        ``DATEREF`` (default: midnight UTC of the first scan, as SSTRED).
    tuning_step_s : float
        Seconds between tunings; tuning ``k`` of a scan at ``t`` is written at
        ``t + (k - (ntune - 1) / 2) tuning_step_s``, so the reader's scan time (the mean over
        tunings) is ``t``.
    centre_arcsec, scale_arcsec, rotation_deg :
        Helioprojective (HPLN, HPLT) position [arcsec] of the field centre, pixel scale
        [arcsec] (one value or (x, y)) and rotation of the field [deg, counter-clockwise],
        when ``ds_line`` has no ``map_header`` attr and no ``spatial_header`` is given.
    spatial_header : FITS header, mapping or header text, optional
        A 2D ``HPLN-*``/``HPLT-*`` header of the (y, x) plane (as :func:`map_header` returns).
    bunit : str, optional
        ``BUNIT``; default from the variable's ``units`` (``'W m^-2 Hz^-1 sr^-1'`` for
        W / (m2 Hz sr), ``'dn'`` for DN).
    telescope, instrument, observatory : str
        ``TELESCOP``, ``INSTRUME``, ``OBSRVTRY``.
    location : (lon [deg E], lat [deg], height [m]) or None
        Geodetic observer position for ``OBSGEO-X/Y/Z`` (default the SST). ``DSUN_OBS``,
        ``HGLN_OBS``, ``HGLT_OBS`` (the Earth's centre at ``DATE-OBS``, from sunpy's ephemeris)
        and ``RSUN_REF`` are always written.
    time_axis : bool
        Write the ``UTC--TAB`` axis (SSTRED always does); False writes a 4D cube
        ``(nstokes, ntune, ny, nx)`` of one scan whose time is only in ``DATE-*``.
    header : mapping, optional
        Extra or overriding primary-header keywords.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ProfileSchemaError
        No (or two and no ``line``) intensity variables, unknown dims, no spatial WCS, no time.
    UnitsError
        Intensity or wavelength units astropy cannot parse.

    Example
    -------
    >>> write_sstred_cube("nb_6563_2017-09-06T10:00:00_scans=0-0_im.fits", scan[["I_halpha"]],
    ...                   centre_arcsec=(512.0, -287.0))  # doctest: +SKIP
    """
    from ..schema import wavelengths_air_A

    path = Path(path)
    ds = ds_line.to_dataset() if isinstance(ds_line, xr.DataArray) else ds_line
    present = [ln for ln in LINES if ln.var in ds.data_vars]
    if line is not None:
        ln = line_by_key(line) if isinstance(line, str) else line
        if ln.var not in ds.data_vars:
            raise ProfileSchemaError(f"write_sstred_cube: no {ln.var} to write")
    elif len(present) == 1:
        ln = present[0]
    else:
        raise ProfileSchemaError(f"write_sstred_cube: expected one of {[x.var for x in LINES]} "
                                 f"(or line=...), found {[x.var for x in present]}")
    var = ds[ln.var]
    known = {"time", "stokes", ln.dim, "y", "x"}
    extra_dims = [d for d in var.dims if d not in known]
    if extra_dims or not {ln.dim, "y", "x"} <= set(var.dims):
        raise ProfileSchemaError(f"write_sstred_cube: {ln.var} has dims {var.dims}; expected "
                                 f"([time,] [stokes,] {ln.dim}, y, x)")
    if "time" not in var.dims:
        var = var.expand_dims("time")
    if "stokes" not in var.dims:
        var = var.expand_dims("stokes")
    if "stokes" in ds.coords and ds["stokes"].ndim == 1:
        labels = [str(s).upper() for s in ds["stokes"].values]
        if labels != list("IQUV")[: len(labels)]:
            raise ProfileSchemaError(f"write_sstred_cube: stokes labels {labels}; expected I[, Q, U, V]")
    data = np.asarray(var.transpose("time", "stokes", ln.dim, "y", "x").values, dtype=np.float32)
    nscan, nstokes, ntune, ny, nx = data.shape
    if not time_axis and nscan != 1:
        raise ProfileSchemaError(f"write_sstred_cube: time_axis=False needs one scan, got {nscan}")

    # wavelengths, in the medium the data declare, as SSTRED writes them (nm)
    coord = ds[ln.dim]
    try:
        wl_A = (np.asarray(coord.values, dtype=float) * u.Unit(coord.attrs.get("units", "Angstrom"))).to_value(u.AA)
    except (ValueError, u.UnitConversionError):
        raise UnitsError(f"write_sstred_cube: {ln.dim} units {coord.attrs.get('units')!r} are not a "
                         "length") from None
    wavelengths_air_A(ds, ln, "write_sstred_cube")  # checks the medium and the line

    # scan times
    if "time" in ds.coords:
        t_scan = np.atleast_1d(np.asarray(ds["time"].values, dtype="datetime64[ns]"))
    elif time is not None:
        t_scan = np.atleast_1d(np.asarray(time, dtype="datetime64[ns]"))
    else:
        raise ProfileSchemaError("write_sstred_cube: no scan time; give ds_line a 'time' "
                                 "coordinate or pass time=")
    if t_scan.size != nscan:
        raise ProfileSchemaError(f"write_sstred_cube: {t_scan.size} scan times for {nscan} scans")
    ref = (np.datetime64(np.datetime_as_string(t_scan[0], unit="D"), "ns") if date_ref is None
           else np.datetime64(np.asarray(date_ref, dtype="datetime64[ns]")))
    offset = (t_scan - ref) / np.timedelta64(1, "ns") * 1e-9  # (nscan,) s
    t_tune = offset[:, None] + tuning_step_s * (np.arange(ntune) - (ntune - 1) / 2)[None, :]

    # spatial corners, the same for every scan and tuning
    hdr2d = _spatial_header(ds, ln, nx, ny, centre_arcsec, scale_arcsec, rotation_deg, spatial_header)
    # the corners of pixels 1 and n tabulated at index [1, n]; a field one pixel wide is tabulated
    # over two pixels (its own and the next), as wcslib needs a strictly monotonic index
    tx, ty = max(nx, 2), max(ny, 2)
    lon, lat = _corner_coordinates(hdr2d, tx, ty)

    names = ["HPLN", "HPLT", "WAVE"] + (["TIME"] if time_axis else [])
    coords = np.zeros((nscan, ntune, 2, 2, len(names)))  # scan, tuning, y corner, x corner, M
    coords[..., 0] = lon[None, None]
    coords[..., 1] = lat[None, None]
    coords[..., 2] = (wl_A / 10.0)[None, :, None, None]
    if time_axis:
        coords[..., 3] = t_tune[:, :, None, None]
    else:
        coords = coords[0]
        data = data[0]

    hdu = fits.PrimaryHDU(data)
    h = hdu.header
    h["SOLARNET"] = (0.5, "SOLARNET compliance: partially")
    h["OBS_HDU"] = (1, "this HDU holds observational data")
    h["EXTNAME"] = "PRIMARY"
    t0 = Time(t_scan[0] - np.timedelta64(int(round((ntune - 1) / 2 * tuning_step_s * 1e9)), "ns"), scale="utc")
    t1 = Time(t_scan[-1] + np.timedelta64(int(round((ntune - 1) / 2 * tuning_step_s * 1e9)), "ns"), scale="utc")
    h["DATEREF"] = (Time(ref, scale="utc").isot, "reference time of the time axis")
    h["TIMESYS"] = "UTC"
    h["DATE-OBS"] = (t0.isot, "start of the observation")
    h["DATE-BEG"] = (t0.isot, "start of the observation")
    h["DATE-END"] = (t1.isot, "end of the observation")
    t_avg = np.datetime64(int(np.mean(t_scan.astype(np.int64))), "ns")
    h["DATE-AVG"] = (Time(t_avg, scale="utc").isot, "mean time of the scans")
    h["OBSRVTRY"] = observatory
    h["TELESCOP"] = telescope
    h["INSTRUME"] = instrument
    unit_text = bunit if bunit is not None else _bunit(var.attrs.get("units"))
    if unit_text is not None:
        h["BUNIT"] = (unit_text, "unit of the data")
    ttype = "+".join(names)
    tab_axes = [(1, "HPLN-TAB", "arcsec", "HPLN-INDEX"), (2, "HPLT-TAB", "arcsec", "HPLT-INDEX"),
                (3, "WAVE-TAB", "nm", None)] + ([(5, "UTC--TAB", "s", None)] if time_axis else [])
    for number, (ax, ctype, cunit, index) in enumerate(tab_axes, start=1):
        h[f"CTYPE{ax}"], h[f"CUNIT{ax}"] = ctype, cunit
        h[f"PS{ax}_0"], h[f"PS{ax}_1"] = "WCS-TAB", ttype
        if index:
            h[f"PS{ax}_2"] = index
        h[f"PV{ax}_3"] = number
        h[f"CRPIX{ax}"], h[f"CRVAL{ax}"], h[f"CDELT{ax}"] = 0, 0, 1
    h["CTYPE4"], h["CRPIX4"], h["CRVAL4"], h["CDELT4"] = "STOKES", 1, 1, 1
    h["CNAME4"] = "Stokes " + ", ".join("IQUV"[:nstokes])
    for k, v in (header or {}).items():
        h[k] = v
    # observer at DATE-OBS (the Earth's centre, plus the telescope's geocentric position)
    for key, value in _observer_cards(Time(str(h["DATE-OBS"]), scale="utc"), location).items():
        if key not in (header or {}):
            h[key] = value
    cols = [
        fits.Column(name=ttype, format=f"{coords.size}D",
                    dim="(" + ",".join(map(str, coords.shape[::-1])) + ")",
                    array=coords.reshape((1,) + coords.shape)),
        fits.Column(name="HPLN-INDEX", format="2E", array=np.array([[1.0, tx]])),
        fits.Column(name="HPLT-INDEX", format="2E", array=np.array([[1.0, ty]])),
    ]
    table = fits.BinTableHDU.from_columns(cols, name="WCS-TAB")
    table.header["SOLARNET"] = 0.5
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([hdu, table]).writeto(path, overwrite=overwrite)
    return path


def write_crispy_l2(
    path: str | Path,
    scan: xr.Dataset,
    line: Line,
    tunings_air_A: np.ndarray,
    gain: float,
    date_obs: str,
    pointing_arcsec: tuple[float, float] = (0.0, 0.0),
    scale_arcsec: float = 0.057,
) -> Path:
    """Write one line's scan as a 2014-era crisPy level-2 file (the layout of the original
    Radynversion's example data), for tests and examples.

    The file: a primary HDU of int16 counts (numpy ``(ntune, ny, nx)``, no ``BUNIT``), a linear
    WCS (``HPLN-TAN``, ``HPLT-TAN``, ``WAVE`` in vacuum Angstrom around the central tuning),
    ``TWAVE1`` = the central tuning (vacuum), ``DATE-OBS``, and a ``lambda-coordinate`` image
    extension with the tunings (vacuum Angstrom).

    Parameters
    ----------
    path : path
    scan : xarray.Dataset
        Profiles (schema of :mod:`radynversion.schema`, air wavelengths) over ``(y, x)``; the
        line is interpolated linearly onto the tunings.
    line : Line
    tunings_air_A : ndarray, shape ``(W,)``
        The program [air Angstrom], increasing.
    gain : float
        Intensity per count: the counts are ``round(I / gain)`` (keep them under 32767).
    date_obs : str
        ISO time of the scan.
    pointing_arcsec, scale_arcsec
        Helioprojective coordinates of pixel (0, 0) and the pixel scale.

    Returns
    -------
    Path
    """
    from ..lines import air_to_vacuum
    from ..schema import wavelengths_air_A

    wl_air = np.asarray(tunings_air_A, dtype=float)
    src = scan[line.var].transpose("y", "x", line.dim)
    wl_src = wavelengths_air_A(scan, line)
    order = np.argsort(wl_src)
    arr = np.asarray(src.values, dtype=float)[..., order]
    flat = arr.reshape(-1, arr.shape[-1])
    cube = np.stack([np.interp(wl_air, wl_src[order], row) for row in flat]).T.reshape(wl_air.size, *arr.shape[:2])
    counts = np.round(cube / gain)
    bad = ~np.isfinite(counts)
    if bad.any():
        raise ProfileSchemaError(
            f"write_crispy_l2: {line.var} has {int(bad.any(axis=0).sum())} pixel(s) with NaN or inf at the tunings; "
            "expected finite radiances (int16 counts cannot hold them: select or fill those pixels first)")
    lo, hi = np.iinfo(np.int16).min, np.iinfo(np.int16).max
    if counts.max() > hi or counts.min() < lo:
        raise ConfigError(f"write_crispy_l2: gain {gain:g} gives {line.var} counts from {counts.min():.0f} to "
                          f"{counts.max():.0f}; expected {lo} to {hi} (int16): choose another gain")
    wl_vac = air_to_vacuum(wl_air)
    mid = wl_air.size // 2
    hdu = fits.PrimaryHDU(counts.astype(np.int16))
    h = hdu.header
    for k, v in dict(CTYPE1="HPLN-TAN", CTYPE2="HPLT-TAN", CTYPE3="WAVE", CUNIT1="arcsec", CUNIT2="arcsec",
                     CUNIT3="Angstrom", CRPIX1=1.0, CRPIX2=1.0, CRPIX3=float(mid + 1),
                     CRVAL1=float(pointing_arcsec[0]), CRVAL2=float(pointing_arcsec[1]),
                     CRVAL3=float(wl_vac[mid]), CDELT1=scale_arcsec, CDELT2=scale_arcsec,
                     CDELT3=float(np.median(np.diff(wl_vac))) if wl_vac.size > 1 else 1.0,
                     TWAVE1=float(wl_vac[mid])).items():
        h[k] = v
    h["DATE-OBS"] = date_obs
    ext = fits.ImageHDU(wl_vac.astype(np.float64), name="lambda-coordinate")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([hdu, ext]).writeto(path, overwrite=True)
    return path
