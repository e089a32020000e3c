"""Absolute calibration of DN or unitless scans against the model's quiet Sun.

The network compares line shapes *and* the two lines' intensities with each other (both lines
are divided by their joint peak in W m^-2 Hz^-1 sr^-1), so data in DN, or normalised to some
continuum, must first be put in that unit. :func:`calibrate` does it per line with one factor
(per scan when there is a ``time`` dim): it scales a quiet-Sun region of the field so that its
mean intensity matches what the package's own forward model gives for the quiet Sun, the FAL-C
atmosphere (Fontenla, Avrett & Loeser 1993) solved in NLTE by :mod:`radynversion.synth`
(``examples/make_quiet_sun_reference.py`` wrote ``radynversion/data/quiet_sun_reference.nc``
once, for ``mu`` = 1 to 0.3). The reference profile is first seen through the CRISP
transmission at the observed tunings, so that like is compared with like
(:func:`radynversion.instrument.resampling_matrix`, the operator of ``degrade``).

Methods
-------
``"far_wing"`` (default)
    factor = mean of the reference over the far-wing tunings / mean of the quiet region over
    the same tunings. Far wing: the tunings at least :data:`FAR_WING_FRACTION` (75 %) of the
    largest offset from the line centre away from it, on both sides. The far wings are formed
    deep down, where flares change little and FAL-C is a fair quiet Sun, so this is robust.
``"profile"``
    factor = mean of the reference over all tunings / mean of the quiet region over all
    tunings: uses the line core too, which is more sensitive to the chromospheric model.

The quiet-Sun region
--------------------
A boolean mask over the spatial dims (``y``, ``x``), a mapping of dim -> slice, or, when none
is given, found automatically: the pixels whose far-wing intensity (mean over the far-wing
tunings) lies in the central band of the field's far-wing distribution, between its 40th and
60th percentiles (:data:`QUIET_PERCENTILES`), in both lines (per scan). Bright features
(ribbons, kernels: bright far wings) and dark ones (pores, sunspots) sit in the tails, so the
band is quiet Sun as long as each covers less than 40 % of the field; pass a mask for fields
filled by a flare or a spot.

Viewing angle
-------------
Quiet-Sun intensities fall towards the limb (limb darkening): the reference is interpolated
linearly in ``mu``, taken from ``mu=`` or else from the field centre (``pointing_hpln_arcsec``,
``pointing_hplt_arcsec`` attrs of the readers and the solar radius of the map header or
959.63 arcsec), or else 1 (disk centre, recorded as assumed).

Example
-------
>>> cal = calibrate(scan_dn)  # doctest: +SKIP
>>> json.loads(cal.attrs["calibration"])["factors"]  # doctest: +SKIP
{'halpha': 1.93e-12, 'ca8542': 2.41e-12}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import xarray as xr

from .errors import CalibrationError, UnitsError
from .instrument import default_fwhm_A, resampling_matrix
from .lines import LINES, Line, span_text, spans
from .schema import (
    RADIANCE_PER_HZ,
    convert_intensity,
    intensity_unit,
    to_air_angstrom,
    validate_profiles,
    wavelengths_air_A,
)

__all__ = [
    "REFERENCE_MU",
    "FAR_WING_FRACTION",
    "QUIET_PERCENTILES",
    "METHODS",
    "quiet_sun_reference_path",
    "quiet_sun_reference",
    "reference_at_tunings",
    "far_wing",
    "quiet_sun_mask",
    "field_mu",
    "calibrate",
]

#: viewing angles of the shipped reference
REFERENCE_MU: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
#: far wing = tunings at least this fraction of the largest offset from the line centre
FAR_WING_FRACTION = 0.75
#: the automatic quiet-Sun region: far-wing intensity between these percentiles of the field
QUIET_PERCENTILES: tuple[float, float] = (40.0, 60.0)
METHODS: tuple[str, ...] = ("far_wing", "profile")
#: the mean solar angular radius at 1 au [arcsec] (IAU 2015 nominal radius)
_RSUN_ARCSEC = 959.63
_MIN_PIXELS = 4


def quiet_sun_reference_path() -> Path:
    """Path of the shipped reference (``radynversion/data/quiet_sun_reference.nc``)."""
    return Path(str(resources.files("radynversion") / "data" / "quiet_sun_reference.nc"))


def quiet_sun_reference(path: str | Path | None = None) -> xr.Dataset:
    """The quiet-Sun reference: FAL-C through the package's NLTE model.

    Returns
    -------
    xarray.Dataset
        ``I_<key>(mu, wl_<key>)`` [W m^-2 Hz^-1 sr^-1] on the fine synthesis grids (air
        Angstrom), ``mu`` from 1 to 0.3; attrs say how it was made.
    """
    p = quiet_sun_reference_path() if path is None else Path(path)
    if not p.is_file():
        raise CalibrationError(f"{p}: no quiet-Sun reference here; make it with "
                               "examples/make_quiet_sun_reference.py")
    with xr.open_dataset(p) as ds:
        return ds.load()


def _reference_at_mu(ref: xr.Dataset, mu: float) -> xr.Dataset:
    mus = np.asarray(ref["mu"].values, dtype=float)
    if not mus.min() - 1e-6 <= mu <= mus.max() + 1e-6:
        raise CalibrationError(f"calibrate: mu = {mu:.3f} is outside the reference's "
                               f"{mus.min():g}-{mus.max():g}; too close to the limb")
    out = ref.sortby("mu").interp(mu=float(np.clip(mu, mus.min(), mus.max())))
    return out.drop_vars("mu")


def reference_at_tunings(
    wavelengths_A: Mapping[str, np.ndarray],
    mu: float = 1.0,
    fwhm_A: Mapping[str, float] | None = None,
    reference: xr.Dataset | str | Path | None = None,
) -> dict[str, np.ndarray]:
    """The quiet-Sun reference as CRISP sees it at the given tunings.

    Parameters
    ----------
    wavelengths_A : mapping line key -> ndarray, shape ``(W_k,)``
        Tunings [air Angstrom].
    mu : float
        Viewing angle (linear interpolation between the reference's angles).
    fwhm_A : mapping, optional
        Transmission FWHM per line [A] (default CRISP's); tunings beyond the reach of the
        reference grid are interpolated without transmission.
    reference : Dataset or path, optional
        Default the shipped FAL-C reference.

    Returns
    -------
    dict line key -> ndarray, shape ``(W_k,)``, W m^-2 Hz^-1 sr^-1, in the order of the
    sorted tunings.
    """
    ref = reference if isinstance(reference, xr.Dataset) else quiet_sun_reference(reference)
    ref = _reference_at_mu(ref, mu)
    fwhm = dict(default_fwhm_A() if fwhm_A is None else fwhm_A)
    out = {}
    for ln in LINES:
        wl = np.sort(np.asarray(wavelengths_A[ln.key], dtype=float))
        grid = np.asarray(ref[ln.dim].values)
        if not spans(grid, wl):
            raise CalibrationError(
                f"calibrate: {ln.label} tunings {span_text(wl)} reach beyond the quiet-Sun reference "
                f"({span_text(grid)}); use tunings within it or the 'profile' method on a subset")
        profile = np.asarray(ref[ln.var].values, dtype=float)
        vals = np.interp(wl, grid, profile)
        # the transmission needs 2 FWHM of reference beyond a tuning; nearer the grid ends the
        # reference is interpolated (the far-wing profile is smooth over 0.1 A)
        f = float(fwhm.get(ln.key, 0.0))
        ok = (wl >= grid[0] + 2 * f) & (wl <= grid[-1] - 2 * f)
        if ok.any() and f > 0:
            vals[ok] = resampling_matrix(grid, wl[ok], f) @ profile
        out[ln.key] = vals
    return out


def far_wing(wavelengths_A: np.ndarray, line: Line, fraction: float = FAR_WING_FRACTION) -> np.ndarray:
    """Boolean mask of the far-wing tunings: ``|lambda - lambda_0| >= fraction x max |lambda -
    lambda_0|`` (air Angstrom), at least the outermost tuning on each side that has one."""
    off = np.asarray(wavelengths_A, dtype=float) - line.center_air_A
    reach = np.abs(off).max()
    mask = np.abs(off) >= fraction * reach
    for side in (off < 0, off > 0):
        if side.any():
            mask[np.flatnonzero(side)[np.argmax(np.abs(off[side]))]] = True
    return mask


def _spatial_dims(ds: xr.Dataset, line: Line) -> tuple[str, ...]:
    return tuple(d for d in ds[line.var].dims if d not in (line.dim, "time"))


def quiet_sun_mask(ds: xr.Dataset, percentiles: tuple[float, float] = QUIET_PERCENTILES) -> xr.DataArray:
    """The automatic quiet-Sun region of a scan (see the module docstring).

    Parameters
    ----------
    ds : xarray.Dataset
        Profile schema, one line or both, any intensity unit.
    percentiles : (float, float)
        The band of far-wing intensities kept, in percent of the field's distribution.

    Returns
    -------
    xarray.DataArray of bool
        Over the non-spectral dims of the lines (``time`` included when present): True where
        the far-wing intensities of every line present are in the band of their scan.
    """
    lo, hi = percentiles
    mask = None
    for ln in (x for x in LINES if x.var in ds.data_vars):  # one line alone is enough
        wl = wavelengths_air_A(ds, ln)
        fw = ds[ln.var].isel({ln.dim: np.flatnonzero(far_wing(wl, ln))}).mean(ln.dim)
        space = _spatial_dims(ds, ln)
        q = fw.quantile([lo / 100.0, hi / 100.0], dim=space, skipna=True)
        band = (fw >= q.isel(quantile=0, drop=True)) & (fw <= q.isel(quantile=1, drop=True))
        mask = band if mask is None else mask & band
    assert mask is not None
    return mask.rename("quiet_sun").assign_attrs(
        long_name="automatic quiet-Sun region", method=f"far-wing intensity between the {lo:g}th "
        f"and {hi:g}th percentiles of the field, in both lines")


def field_mu(ds: xr.Dataset) -> float | None:
    """``mu`` of the field centre from the readers' pointing attrs, or None without them."""
    try:
        x = float(np.asarray(ds.attrs["pointing_hpln_arcsec"]).ravel()[0])
        y = float(np.asarray(ds.attrs["pointing_hplt_arcsec"]).ravel()[0])
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    rsun = _RSUN_ARCSEC
    text = ds.attrs.get("map_header") or next((v for k, v in ds.attrs.items() if k.startswith("map_header")), None)
    if text:
        from astropy.io import fits

        hdr = fits.Header.fromstring(str(text), sep="\n")
        if "RSUN_REF" in hdr and "DSUN_OBS" in hdr:
            rsun = float((np.arcsin(hdr["RSUN_REF"] / hdr["DSUN_OBS"]) * u.rad).to_value(u.arcsec))
    rho = np.hypot(x, y) / rsun
    if rho >= 1.0:
        raise CalibrationError(f"calibrate: the field centre ({x:.1f}, {y:.1f}) arcsec is off the "
                               "disk; a quiet-Sun calibration needs an on-disk field")
    return float(np.sqrt(1.0 - rho**2))


def _region(ds: xr.Dataset, quiet: Any, percentiles: tuple[float, float]) -> tuple[xr.DataArray, str]:
    ref_line = LINES[0]
    dims = tuple(d for d in ds[ref_line.var].dims if d != ref_line.dim)
    if quiet is None:
        return quiet_sun_mask(ds, percentiles), ("auto: far-wing intensity between the "
                                                 f"{percentiles[0]:g}th and {percentiles[1]:g}th "
                                                 "percentiles of the field, in both lines")
    if isinstance(quiet, Mapping):
        bad = [d for d in quiet if d not in dims]
        if bad:
            raise CalibrationError(f"calibrate: quiet region names dims {bad}; the scan has {dims}")
        template = xr.zeros_like(ds[ref_line.var].isel({ref_line.dim: 0}, drop=True), dtype=bool)
        mask = template.copy()
        mask[{d: s for d, s in quiet.items()}] = True
        return mask, "slices: " + ", ".join(f"{d}={s.start}:{s.stop}" if isinstance(s, slice) else f"{d}={s}"
                                            for d, s in quiet.items())
    if isinstance(quiet, xr.DataArray):
        return quiet.astype(bool), "mask"
    arr = np.asarray(quiet, dtype=bool)
    space = _spatial_dims(ds, ref_line)
    if arr.shape == tuple(ds.sizes[d] for d in space):
        return xr.DataArray(arr, dims=space), "mask"
    if arr.shape == tuple(ds.sizes[d] for d in dims):
        return xr.DataArray(arr, dims=dims), "mask"
    raise CalibrationError(f"calibrate: quiet mask of shape {arr.shape}; expected the spatial shape "
                           f"{tuple(ds.sizes[d] for d in space)} ({space})")


def calibrate(
    ds: xr.Dataset,
    quiet: Any = None,
    reference: xr.Dataset | str | Path | None = None,
    mu: float | None = None,
    method: str = "far_wing",
    fwhm_A: Mapping[str, float] | None = None,
    percentiles: tuple[float, float] = QUIET_PERCENTILES,
) -> xr.Dataset:
    """Scale each line so that the quiet Sun matches the model's, giving W m^-2 Hz^-1 sr^-1.

    Parameters
    ----------
    ds : xarray.Dataset
        Profile schema (:mod:`radynversion.schema`), both lines, ``I_<key>([time,] wl_<key>,
        y, x)`` (any non-spectral dims) in DN, dimensionless, or a spectral radiance (then
        re-calibrated); air or vacuum wavelengths.
    quiet : None, bool array / DataArray over the spatial dims, or mapping dim -> slice
        The quiet-Sun region; None finds it (:func:`quiet_sun_mask`).
    reference : Dataset or path, optional
        Quiet-Sun reference (default the shipped FAL-C, :func:`quiet_sun_reference`).
    mu : float, optional
        Viewing angle; default from the pointing (:func:`field_mu`), else 1.
    method : {"far_wing", "profile"}
        What is matched (module docstring).
    fwhm_A : mapping, optional
        Transmission FWHM per line [A] through which the reference is seen (default CRISP's).
    percentiles : (float, float)
        Band of the automatic region.

    Returns
    -------
    xarray.Dataset
        ``ds`` with every ``I_<key>`` multiplied by its factor, ``units`` ``W / (m2 Hz sr)``,
        ``calibration_factor`` and ``units_before_calibration`` attrs; ``attrs["calibration"]``
        a JSON string: method, reference, ``mu`` and its source, the region and its size in
        pixels, and the factors per line (a list over ``time`` when the scan has one).

    Raises
    ------
    CalibrationError
        Empty (or < 4 pixel) quiet region, a bad mask, an off-disk field, tunings beyond the
        reference.

    Example
    -------
    >>> cal = calibrate(scan_dn, quiet={"y": slice(0, 20), "x": slice(0, 20)})  # doctest: +SKIP
    >>> cal.I_halpha.attrs["units"]  # doctest: +SKIP
    'W / (m2 Hz sr)'
    """
    if method not in METHODS:
        raise ValueError(f"calibrate: method {method!r}; expected one of {METHODS}")
    validate_profiles(ds)
    before = {ln.key: intensity_unit(ds, ln).to_string() for ln in LINES}
    try:  # radiances are first put in the model unit: the factor is then a re-calibration
        work = convert_intensity(ds, RADIANCE_PER_HZ)
        factor_unit = "dimensionless (re-calibration of a spectral radiance)"
    except UnitsError:
        work = ds
        factor_unit = f"W / (m2 Hz sr) per {before[LINES[0].key]}" if len(set(before.values())) == 1 else \
            "W / (m2 Hz sr) per input unit"
    air = to_air_angstrom(work)
    mask, region = _region(air, quiet, percentiles)
    if mu is None:
        mu_used = field_mu(ds)
        mu_source = "field centre (pointing attrs)" if mu_used is not None else "assumed (no pointing)"
        mu_used = 1.0 if mu_used is None else mu_used
    else:
        mu_used, mu_source = float(mu), "given"
    tunings = {ln.key: np.asarray(air[ln.dim].values) for ln in LINES}
    ref = reference_at_tunings(tunings, mu_used, fwhm_A, reference)

    out = ds.copy()
    record: dict[str, Any] = {}
    n_pix = None
    for ln in LINES:
        wl = tunings[ln.key]
        order = np.argsort(wl)
        use = far_wing(wl, ln) if method == "far_wing" else np.ones(wl.size, bool)
        var = air[ln.var]
        space = _spatial_dims(air, ln)
        m = mask.broadcast_like(var.isel({ln.dim: 0}, drop=True))
        counts = m.sum(space)
        if int(counts.min()) < _MIN_PIXELS:
            raise CalibrationError(f"calibrate: the quiet-Sun region ({region}) has {int(counts.min())} "
                                   f"pixels in some scan; expected at least {_MIN_PIXELS}")
        n_pix = int(counts.max())
        obs = var.where(m).mean(space, skipna=True)  # (..., wl)
        obs_use = obs.isel({ln.dim: np.flatnonzero(use)}).mean(ln.dim)
        ref_sorted = ref[ln.key]  # in sorted-tuning order
        ref_use = float(np.mean(ref_sorted[np.argsort(order)][use]))
        factor = ref_use / obs_use
        if not bool(np.all(np.isfinite(factor.values)) and np.all(factor.values > 0)):
            raise CalibrationError(f"calibrate: {ln.label}: the quiet region's mean intensity is not "
                                   "positive and finite; check the data and the region")
        new = (work[ln.var] * factor).astype(np.float32 if ds[ln.var].dtype == np.float32 else float)
        f_values = np.asarray(factor.values, dtype=float)
        new.attrs = dict(ds[ln.var].attrs, units=RADIANCE_PER_HZ.to_string(),
                         units_before_calibration=before[ln.key],
                         calibration_factor=float(f_values) if f_values.ndim == 0 else f_values.tolist())
        new.attrs.pop("units_note", None)
        out[ln.var] = new
        record[ln.key] = float(f_values) if f_values.ndim == 0 else f_values.tolist()
    out.attrs["calibration"] = json.dumps({
        "method": method,
        "matched": ("mean over the far-wing tunings (|dlambda| >= "
                    f"{FAR_WING_FRACTION:g} of the largest offset)") if method == "far_wing"
                   else "mean over all tunings",
        "reference": "FAL-C through radynversion's NLTE model (quiet_sun_reference.nc), "
                     "seen through the CRISP transmission at the observed tunings",
        "mu": mu_used, "mu_source": mu_source,
        "region": region, "region_pixels": n_pix,
        "factors": record, "factor_units": factor_unit,
        "units_before": before,
    })
    return out
