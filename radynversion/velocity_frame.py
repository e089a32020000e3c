"""The velocity frame of an observation: rest wavelengths, the quiet Sun of the field, or an
offset.

The model reads velocities off the line profiles against the laboratory (air) rest wavelengths
of H-alpha and Ca II 8542 (:mod:`radynversion.lines`). The wavelength scale of a filtergraph
scan is only as good as its calibration: the central tuning of real CRISP programs is often
tens of mA from the rest wavelength (30 mA is 1.4 km/s in H-alpha), and the quiet Sun itself
shows the lines' convective blueshift and the solar gravitational redshift. Three frames:

* ``"rest"`` (the default): the wavelengths as given;
* ``"quiet"``: per line, the median line-core position of the quiet pixels of the field
  (:func:`radynversion.calibration.quiet_sun_mask`, or a mask given) is taken as zero
  velocity; each line's wavelengths are shifted by minus that offset;
* a number: an offset [km/s, positive = redshift] taken as zero velocity in both lines.

:func:`to_velocity_frame` returns the shifted Dataset with attrs that record the frame and the
shift of each line (``velocity_frame``, ``velocity_frame_shift_kms_<line>``); the inversion
copies them into its output.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from .atmosphere import C_KM_S
from .errors import CalibrationError, ConfigError
from .lines import LINES, Line
from .schema import source_name, wavelengths_air_A

__all__ = ["in_recorded_frame", "FRAMES", "line_core_A", "frame_shifts_kms", "to_velocity_frame"]

#: the named frames (a number is an offset in km/s)
FRAMES: tuple[str, ...] = ("rest", "quiet")
#: the line core is searched within this distance of the rest wavelength [A]
CORE_SEARCH_A = {"halpha": 0.35, "ca8542": 0.25}


def line_core_A(profiles: np.ndarray, wavelengths_A: np.ndarray, line: Line) -> np.ndarray:
    """Line-core wavelengths of absorption profiles: the minimum within
    :data:`CORE_SEARCH_A` of the rest wavelength, refined by a parabola through it and its two
    neighbouring tunings.

    Parameters
    ----------
    profiles : ndarray, shape ``(N, W)``
        Intensities at the tunings (any unit).
    wavelengths_A : ndarray, shape ``(W,)``
        Tunings [air Angstrom], increasing.
    line : Line

    Returns
    -------
    ndarray, shape ``(N,)``
        [air Angstrom]; NaN where no minimum lies inside the search window or a profile is not
        finite there.
    """
    wl = np.asarray(wavelengths_A, dtype=float)
    p = np.asarray(profiles, dtype=float)
    near = np.abs(wl - line.center_air_A) <= CORE_SEARCH_A[line.key]
    idx = np.flatnonzero(near)
    out = np.full(p.shape[0], np.nan)
    if idx.size < 3:
        return out
    sub = np.where(np.isfinite(p[:, idx]), p[:, idx], np.inf)
    k = np.argmin(sub, axis=1)
    ok = (k > 0) & (k < idx.size - 1) & np.isfinite(sub.min(axis=1))
    i = idx[np.clip(k, 1, idx.size - 2)]
    rows = np.arange(p.shape[0])
    x0, x1, x2 = wl[i - 1], wl[i], wl[i + 1]
    y0, y1, y2 = p[rows, i - 1], p[rows, i], p[rows, i + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        # vertex of the parabola through three (possibly unevenly spaced) points
        num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
        den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
        vertex = x1 - 0.5 * num / den
    good = ok & np.isfinite(vertex) & (vertex >= x0) & (vertex <= x2)
    out[good] = vertex[good]
    return out


def _quiet_mask(ds: xr.Dataset, quiet: Any) -> xr.DataArray:
    from .calibration import quiet_sun_mask

    if quiet is None:
        return quiet_sun_mask(ds)
    return xr.DataArray(quiet) if not isinstance(quiet, xr.DataArray) else quiet


def frame_shifts_kms(ds: xr.Dataset, frame: str | float = "rest", quiet: Any = None) -> dict[str, float]:
    """The velocity [km/s, positive = redshift] taken as zero in each line of ``ds``.

    Parameters
    ----------
    ds : xarray.Dataset
        Profiles (schema of :mod:`radynversion.schema`); either line may be absent.
    frame : {"rest", "quiet"} or float
        See the module docstring.
    quiet : xarray.DataArray of bool, optional
        The quiet pixels for ``"quiet"`` (over the non-spectral dims); default the automatic
        region (:func:`radynversion.calibration.quiet_sun_mask`).

    Returns
    -------
    dict
        Line key -> shift [km/s] for each line present.

    Raises
    ------
    ConfigError
        An unknown frame.
    CalibrationError
        ``"quiet"`` where no quiet pixel shows a line core.
    """
    present = [ln for ln in LINES if ln.var in ds.data_vars]
    if isinstance(frame, numbers.Real) and not isinstance(frame, bool | np.bool_):
        if not np.isfinite(frame) or abs(frame) > 100.0:
            raise ConfigError(f"velocity frame offset {frame} km/s; expected a finite offset of at most 100 km/s")
        return {ln.key: float(frame) for ln in present}
    if frame == "rest":
        return {ln.key: 0.0 for ln in present}
    if frame != "quiet":
        raise ConfigError(f"velocity frame {frame!r}; expected 'rest', 'quiet' or an offset in km/s")
    src = source_name(ds)
    mask = _quiet_mask(ds, quiet)
    shifts = {}
    for ln in present:
        wl = wavelengths_air_A(ds, ln, src)
        order = np.argsort(wl)
        da = ds[ln.var]  # with a time dim, every scan's quiet pixels are pooled: one frame
        other = [d for d in da.dims if d != ln.dim]
        quiet_px = np.asarray(mask.broadcast_like(da.isel({ln.dim: 0}, drop=True)).transpose(*other).values)
        rows = np.flatnonzero(quiet_px.reshape(-1))
        # only the quiet pixels are read (a lazy scan is not loaded whole)
        flat = np.asarray(da.transpose(*other, ln.dim).data.reshape(-1, wl.size)[rows], dtype=float)[:, order]
        flat = flat[np.isfinite(flat).all(axis=1)]
        cores = line_core_A(flat, wl[order], ln)
        cores = cores[np.isfinite(cores)]
        if cores.size == 0:
            raise CalibrationError(f"{src}: no quiet pixel shows a {ln.label} core within "
                                   f"+-{CORE_SEARCH_A[ln.key]} A of {ln.center_air_A} A (air); expected "
                                   "absorption cores in the quiet Sun (pass quiet=mask, or an offset)")
        shifts[ln.key] = float((np.median(cores) - ln.center_air_A) / ln.center_air_A * C_KM_S)
    return shifts


def to_velocity_frame(ds: xr.Dataset, frame: str | float = "rest", quiet: Any = None) -> xr.Dataset:
    """``ds`` with each line's wavelengths shifted so that ``frame`` is at zero velocity.

    A feature at velocity ``s`` (the line's shift, :func:`frame_shifts_kms`) is moved to rest:
    wavelengths are multiplied by ``1 - s / c``. The attrs record ``velocity_frame`` (the frame
    as given) and ``velocity_frame_shift_kms_<line>``; ``"rest"`` returns ``ds`` itself.
    """
    shifts = frame_shifts_kms(ds, frame, quiet)
    if frame == "rest":  # nothing moves; results record "rest" by default
        return ds
    out = ds.copy()
    for ln in LINES:
        if ln.key not in shifts:
            continue
        coord = ds[ln.dim]
        factor = 1.0 - shifts[ln.key] / C_KM_S
        out = out.assign_coords({ln.dim: (ln.dim, np.asarray(coord.values, dtype=float) * factor, dict(coord.attrs))})
        out.attrs[f"velocity_frame_shift_kms_{ln.key}"] = shifts[ln.key]
    out.attrs["velocity_frame"] = str(frame)
    return out


def in_recorded_frame(ds: xr.Dataset, attrs: Mapping[str, Any]) -> xr.Dataset:
    """``ds`` in the velocity frame a result's ``attrs`` record (:func:`to_velocity_frame`'s
    ``velocity_frame`` and ``velocity_frame_shift_kms_<line>``), so that profiles compared with
    that result's atmospheres are in the frame they were inverted in; ``ds`` itself when the
    result was inverted at rest or ``ds`` is already in that frame."""
    frame = str(attrs.get("velocity_frame", "rest"))
    have = str(ds.attrs.get("velocity_frame", "rest"))
    if frame == "rest" and have == "rest" or have == frame:
        return ds
    if have != "rest":
        raise ConfigError(f"{source_name(ds)}: is in the velocity frame {have!r}, the result in {frame!r}; "
                          "expected the observation as read (rest frame) or in the result's frame")
    out = ds.copy()
    for ln in LINES:
        key = f"velocity_frame_shift_kms_{ln.key}"
        if ln.dim not in ds.coords or key not in attrs:
            continue
        coord = ds[ln.dim]
        factor = 1.0 - float(attrs[key]) / C_KM_S
        out = out.assign_coords({ln.dim: (ln.dim, np.asarray(coord.values, dtype=float) * factor, dict(coord.attrs))})
        out.attrs[key] = float(attrs[key])
    out.attrs["velocity_frame"] = frame
    return out
