"""From profile and atmosphere Datasets to the arrays the network sees, and back.

Profiles (Osborne, Armstrong & Fletcher 2019): each line is brought to the model's intensity
unit (:func:`radynversion.schema.convert_intensity`) and to air Angstrom
(:func:`radynversion.schema.to_air_angstrom`), optionally convolved with a Gaussian instrument
profile (only when its sampling is finer than the instrument), linearly interpolated onto the
model window (:meth:`radynversion.lines.Line.model_wavelengths`, 30 points), and both lines
are divided by their **joint** peak (the maximum over the 60 points of a pixel). The result
is ``y``, shape ``(N, 60)``: H-alpha's 30 points, then Ca II 8542's.

Atmospheres: ``x = [log_ne (H), log_T (H), v' (H)]``, shape ``(N, 3 H)``, with
``v' = sign(v) log10(|v| + 1)`` of ``v`` in km/s.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from ..atmosphere import VARIABLES, inverse_velocity_transform, velocity_transform
from ..errors import ProfileSchemaError
from ..instrument import resampling_matrix  # the instrument operator lives with the instrument
from ..lines import LINES, Line
from ..schema import RADIANCE_PER_HZ, convert_intensity, to_air_angstrom, validate_profiles

__all__ = [
    "N_PROFILE",
    "model_wavelengths",
    "sample_dims",
    "needs_degradation",
    "MIN_WINDOW_TUNINGS",
    "check_window",
    "edge_allowance_A",
    "resampling_matrix",
    "normalise_profiles",
    "denormalise_profiles",
    "atmosphere_to_array",
    "array_to_atmosphere",
]

#: number of profile points the network sees (both lines)
N_PROFILE: int = sum(ln.model_points for ln in LINES)
#: a model window may exceed the data by this much [Angstrom] (float round-off)
_COVER_TOLERANCE_A = 1e-3
#: degrade only when the median sampling step is at most FWHM / this
_FINE_FACTOR = 3.0
#: fewest tunings a model window must hold for an inversion (:func:`check_window`)
MIN_WINDOW_TUNINGS = 7


def _source(ds: xr.Dataset, source: str | None) -> str:
    return source or str(ds.encoding.get("source") or ds.attrs.get("source_file") or "<dataset>")


def model_wavelengths() -> dict[str, np.ndarray]:
    """The model windows, line key -> shape ``(model_points,)`` [air Angstrom]."""
    return {ln.key: ln.model_wavelengths() for ln in LINES}


def sample_dims(ds: xr.Dataset) -> tuple[str, ...]:
    """The non-spectral dims of a profile Dataset, in the order of ``I_halpha``'s dims."""
    first = LINES[0]
    return tuple(d for d in ds[first.var].dims if d != first.dim)


def needs_degradation(wavelengths_A: np.ndarray, fwhm_A: float) -> bool:
    """Whether profiles sampled at ``wavelengths_A`` resolve an instrument of ``fwhm_A``.

    True when ``fwhm_A > 0`` and the median step is at most ``fwhm_A / 3``: synthetic profiles
    on a fine grid (0.02 A) are, CRISP scans (steps of 0.05-0.2 A, already seen through the
    instrument) are not.
    """
    if fwhm_A <= 0:
        return False
    step = float(np.median(np.diff(np.asarray(wavelengths_A, dtype=float))))
    return step <= fwhm_A / _FINE_FACTOR


def check_window(wavelengths_air_A: np.ndarray, line: Line, source: str) -> None:
    """Refuse tunings that do not cover ``line``'s model window, or sample it too sparsely.

    The network sees each line on its model window (30 points). Tunings must span the whole
    window, to within half the outermost tuning step (:func:`edge_allowance_A`), and hold at least :data:`MIN_WINDOW_TUNINGS` points inside it (the CRISP programs
    the default model is evaluated on hold 13 in H-alpha's and 17 in Ca II 8542's): fewer
    would reach the network as straight segments between a few points, a profile unlike any it
    was trained on, and give confident but wrong atmospheres.

    Parameters
    ----------
    wavelengths_air_A : ndarray, shape ``(W,)``
        The line's tunings [air Angstrom], increasing or decreasing.
    line : Line
        The line (:data:`radynversion.lines.LINES`).
    source : str
        The data's name for the message.

    Raises
    ------
    ProfileSchemaError
        Naming the source, the variable, what it holds and what was expected.
    """
    wl = np.sort(np.asarray(wavelengths_air_A, dtype=float))
    _check_covers(wl, line, source)
    target = line.model_wavelengths()
    inside = (wl >= target[0] - _COVER_TOLERANCE_A) & (wl <= target[-1] + _COVER_TOLERANCE_A)
    n = int(np.count_nonzero(inside))
    if n < MIN_WINDOW_TUNINGS:
        raise ProfileSchemaError(
            f"{source}: {line.var} has {n} tunings within the model window {target[0]:.3f}-"
            f"{target[-1]:.3f} A of {line.label}; expected at least {MIN_WINDOW_TUNINGS} (CRISP "
            "programs have 13-17) for the profile to be interpolated onto the model's "
            f"{line.model_points} points")


def edge_allowance_A(wl: np.ndarray) -> tuple[float, float]:
    """How far [Angstrom] a model window may reach beyond increasing tunings ``wl``: half the
    outermost tuning step at each end. A model point there takes the outermost tuning's value
    (the far wings are flat on that scale); anything farther is never extrapolated.

    Real programs centre on their own line-core estimate, often tens of mA from the laboratory
    wavelength, and are often written as round numbers (+-1.0 A around 8542.1 A): without this
    allowance a program 10-30 mA short of a window would be refused.
    """
    if wl.size < 2:
        return 0.0, 0.0
    return 0.5 * float(wl[1] - wl[0]), 0.5 * float(wl[-1] - wl[-2])


def _check_covers(wl: np.ndarray, line: Line, source: str) -> None:
    """Refuse increasing tunings ``wl`` [air A] that do not span ``line``'s model window, to
    within half the outermost tuning step (:func:`edge_allowance_A`)."""
    target = line.model_wavelengths()
    lo, hi = edge_allowance_A(wl)
    if (wl.size == 0 or target[0] < wl[0] - lo - _COVER_TOLERANCE_A
            or target[-1] > wl[-1] + hi + _COVER_TOLERANCE_A):
        span = f"covers {wl[0]:.3f}-{wl[-1]:.3f} A (air)" if wl.size else "has no tunings"
        raise ProfileSchemaError(
            f"{source}: {line.var} {span}, short of the model window {target[0]:.3f}-"
            f"{target[-1]:.3f} A of {line.label} by more than half a tuning step; expected tunings "
            "that cover the whole window")


def _resample_line(
    ds: xr.Dataset, line: Line, dims: tuple[str, ...], fwhm_A: float, degrade: bool | None, src: str
) -> np.ndarray:
    """``I_<line>`` of ``ds`` (model unit, air A) on the model window, shape ``(N, points)``."""
    wl = np.asarray(ds[line.dim].values, dtype=float)
    target = line.model_wavelengths()
    _check_covers(np.sort(wl), line, src)
    use_fwhm = fwhm_A if (needs_degradation(wl, fwhm_A) if degrade is None else degrade) else 0.0
    mat = resampling_matrix(wl, target, use_fwhm)
    support = np.flatnonzero(np.any(mat != 0.0, axis=0))  # NaNs outside it do not leak in
    cols = slice(support[0], support[-1] + 1)
    arr = ds[line.var].transpose(*dims, line.dim).values
    arr = np.asarray(arr, dtype=float).reshape(-1, wl.size)[:, cols]
    return arr @ mat[:, cols].T


def normalise_profiles(
    ds: xr.Dataset,
    unit: str = RADIANCE_PER_HZ.to_string(),
    fwhm_A: Mapping[str, float] | None = None,
    degrade: bool | None = None,
    source: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Profiles Dataset -> the network's ``y`` and the joint peak.

    Parameters
    ----------
    ds : xarray.Dataset
        In the profile schema (:mod:`radynversion.schema`): ``I_halpha(*dims, wl_halpha)``,
        ``I_ca8542(*dims, wl_ca8542)``, any supported units, air or vacuum, any sampling that
        covers the model windows.
    unit : str
        Intensity unit of the joint normalisation (the model's ``intensity_unit``).
    fwhm_A : mapping line key -> float, optional
        Gaussian instrument FWHM [Angstrom] per line; None or 0 = no degradation.
    degrade : bool, optional
        Force (True) or forbid (False) the convolution; None = only where the sampling is
        finer than FWHM / 3 (:func:`needs_degradation`).
    source : str, optional
        Name of the data for error messages.

    Returns
    -------
    y : ndarray, shape ``(N, 60)``, float32
        Both lines on the model windows divided by their joint peak (H-alpha first), ``N`` the
        product of the sizes of :func:`sample_dims` (C order); rows of pixels with NaNs or a
        non-positive peak are NaN.
    peak : ndarray, shape ``(N,)``, float64
        The joint peak, in ``unit``.

    Raises
    ------
    ProfileSchemaError
        If ``ds`` breaks the schema or does not cover a model window.
    """
    src = _source(ds, source)
    validate_profiles(ds, src)
    ds = to_air_angstrom(convert_intensity(ds, unit, src), src)
    dims = sample_dims(ds)
    fwhm = dict(fwhm_A or {})
    parts = [_resample_line(ds, ln, dims, float(fwhm.get(ln.key, 0.0)), degrade, src) for ln in LINES]
    full = np.concatenate(parts, axis=1)
    with np.errstate(invalid="ignore"):
        peak = full.max(axis=1)
        bad = ~np.isfinite(peak) | ~(peak > 0)
        y = full / np.where(bad, np.nan, peak)[:, None]
    y[bad] = np.nan
    return y.astype(np.float32), peak


def denormalise_profiles(y: np.ndarray, peak: np.ndarray) -> dict[str, np.ndarray]:
    """Inverse of the joint normalisation: line key -> intensities ``(N, points)`` in the
    normalisation unit, from ``y`` ``(N, 60)`` and ``peak`` ``(N,)``."""
    full = np.asarray(y, dtype=float) * np.asarray(peak, dtype=float)[:, None]
    out, start = {}, 0
    for ln in LINES:
        out[ln.key] = full[:, start : start + ln.model_points]
        start += ln.model_points
    return out


def atmosphere_to_array(ds: xr.Dataset, source: str | None = None) -> np.ndarray:
    """Atmosphere Dataset -> ``x``.

    Parameters
    ----------
    ds : xarray.Dataset
        ``log_ne`` [dex cm^-3], ``log_T`` [dex K], ``v`` [km/s, positive down] over
        ``(*dims, height)``.

    Returns
    -------
    ndarray, shape ``(N, 3 H)``, float32
        ``[log_ne, log_T, v']`` with ``v' = sign(v) log10(|v| + 1)``, ``N`` the product of the
        sizes of the non-height dims of ``log_ne`` (C order).
    """
    src = _source(ds, source)
    for name in VARIABLES:
        if name not in ds.data_vars or "height" not in ds[name].dims:
            raise ProfileSchemaError(f"{src}: expected variable {name}(..., height) for the "
                                     "atmosphere")
    dims = tuple(d for d in ds["log_ne"].dims if d != "height")
    arrs = [np.asarray(ds[n].transpose(*dims, "height").values, dtype=float) for n in VARIABLES]
    arrs[2] = velocity_transform(arrs[2])
    h = ds.sizes["height"]
    return np.concatenate([a.reshape(-1, h) for a in arrs], axis=1).astype(np.float32)


def array_to_atmosphere(x: np.ndarray) -> dict[str, np.ndarray]:
    """Inverse of :func:`atmosphere_to_array`: ``x`` ``(*, 3 H)`` -> ``{"log_ne", "log_T",
    "v"}`` each ``(*, H)``, ``v`` in km/s."""
    x = np.asarray(x)
    log_ne, log_t, vp = np.split(x, 3, axis=-1)
    return {"log_ne": log_ne, "log_T": log_t, "v": inverse_velocity_transform(vp)}
