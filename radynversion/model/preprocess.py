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

import astropy.units as u
import numpy as np
import torch
import xarray as xr

from ..atmosphere import VARIABLES, inverse_velocity_transform, velocity_transform
from ..errors import ProfileSchemaError
from ..instrument import resampling_matrix  # the instrument operator lives with the instrument
from ..lines import LINES, Line, span_text, spans
from ..schema import (
    RADIANCE_PER_HZ,
    check_intensities,
    convert_intensity,
    intensity_unit,
    source_name,
    to_air_angstrom,
    validate_profiles,
    wavelengths_air_A,
)
from .coverage import (
    CORE_POINTS,
    NORMALISATIONS,
    PER_LINE,
    core_covered,
    edge_allowance_A,
    line_levels,
    observed_points,
)
from .coverage import COVER_TOLERANCE_A as _COVER_TOLERANCE_A

__all__ = [
    "N_PROFILE",
    "check_profiles",
    "model_wavelengths",
    "sample_dims",
    "input_options",
    "needs_degradation",
    "MIN_WINDOW_TUNINGS",
    "check_window",
    "observed_program",
    "edge_allowance_A",
    "resampling_matrix",
    "normalise_profiles",
    "denormalise_profiles",
    "atmosphere_to_array",
    "array_to_atmosphere",
]

#: number of profile points the network sees (both lines)
N_PROFILE: int = sum(ln.model_points for ln in LINES)
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
    """The non-spectral dims of a profile Dataset, in the order of ``I_halpha``'s dims (of the
    first line it holds)."""
    first = next((ln for ln in LINES if ln.var in ds.data_vars), LINES[0])
    return tuple(d for d in ds[first.var].dims if d != first.dim)


def input_options(net) -> dict[str, object]:  # noqa: ANN001 - any PosteriorModel
    """The keywords of :func:`normalise_profiles` that a model's inputs need: its
    ``normalisation`` and whether it takes ``partial`` coverage (the INN and v1-v7 models:
    joint, full coverage)."""
    cfg = net.config
    return {"normalisation": getattr(cfg, "normalisation", "joint"),
            "partial": bool(getattr(cfg, "partial_coverage", False))}


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
            f"{source}: {line.var} has {n} tunings within the model window {span_text(target)} of "
            f"{line.label}; expected at least {MIN_WINDOW_TUNINGS} (CRISP "
            "programs have 13-17) for the profile to be interpolated onto the model's "
            f"{line.model_points} points")


def _check_covers(wl: np.ndarray, line: Line, source: str) -> None:
    """Refuse increasing tunings ``wl`` [air A] that do not span ``line``'s model window, to
    within half the outermost tuning step (:func:`edge_allowance_A`)."""
    target = line.model_wavelengths()
    lo, hi = edge_allowance_A(wl)
    if not spans(wl, target, (-lo, -hi), atol_A=_COVER_TOLERANCE_A):
        span = f"covers {span_text(wl)} (air)" if wl.size else "has no tunings"
        raise ProfileSchemaError(
            f"{source}: {line.var} {span}, short of the model window {span_text(target)} of "
            f"{line.label} by more than half a tuning step; expected tunings that cover the whole window")


#: distinct per-pixel patterns of NaN tunings resampled exactly (beyond: NaN spreads to the
#: model points each bad tuning touches)
_MAX_NAN_PATTERNS = 64


def _resample_line(
    ds: xr.Dataset, line: Line, dims: tuple[str, ...], fwhm_A: float, degrade: bool | None, src: str,
    check: bool = True,
) -> np.ndarray:
    """``I_<line>`` of ``ds`` (model unit, air A) on the model window, shape ``(N, points)``;
    ``check`` refuses tunings short of the window (else points beyond them take edge values,
    for the caller to mask)."""
    wl = np.asarray(ds[line.dim].values, dtype=float)
    target = line.model_wavelengths()
    if check:
        _check_covers(np.sort(wl), line, src)
    use_fwhm = fwhm_A if (needs_degradation(wl, fwhm_A) if degrade is None else degrade) else 0.0
    mat = resampling_matrix(wl, target, use_fwhm)
    support = np.flatnonzero(np.any(mat != 0.0, axis=0))  # NaNs outside it do not leak in
    cols = slice(support[0], support[-1] + 1)
    arr = ds[line.var].transpose(*dims, line.dim).values
    arr = np.asarray(arr, dtype=float).reshape(-1, wl.size)
    out = arr[:, cols] @ mat[:, cols].T
    if check:
        return out
    # partial coverage: a pixel with NaN/inf tunings is resampled as if its program lacked
    # them (interpolated across, masked where observed_points says so), one pattern at a time
    bad = ~np.isfinite(arr)
    rows = np.flatnonzero(bad.any(axis=1) & ~bad.all(axis=1))
    if rows.size == 0:
        return out
    patterns, which = np.unique(bad[rows], axis=0, return_inverse=True)
    if patterns.shape[0] > _MAX_NAN_PATTERNS:  # scattered NaNs: each spoils the points it touches
        spoilt = (bad[rows].astype(float) @ (mat != 0.0).T) > 0
        out[rows] = np.where(bad[rows], 0.0, arr[rows]) @ mat.T
        out[rows] = np.where(spoilt, np.nan, out[rows])
        return out
    for k, pattern in enumerate(patterns):
        keep = ~pattern
        sub = rows[which.ravel() == k]
        if keep.sum() < 2:
            out[sub] = np.nan
            continue
        m = resampling_matrix(wl[keep], target, use_fwhm)
        vals = arr[np.ix_(sub, np.flatnonzero(keep))] @ m.T
        vals[:, ~observed_points(wl[keep], line)] = np.nan
        out[sub] = vals
    return out


def _stand_in_lines(ds: xr.Dataset, missing: list[Line], like: Line) -> xr.Dataset:
    """``ds`` with an all-NaN stand-in for each ``missing`` line on its model window (air A,
    ``like``'s units and non-spectral dims), so that a one-line observation passes the schema."""
    out = ds.copy()
    other = ds[like.var]
    dims = tuple(d for d in other.dims if d != like.dim)
    for ln in missing:
        wl = ln.model_wavelengths()
        shape = (*(other.sizes[d] for d in dims), wl.size)
        out[ln.var] = xr.DataArray(np.full(shape, np.nan, dtype=np.float32), dims=(*dims, ln.dim),
                                   attrs={"units": other.attrs.get("units", "")})
        out = out.assign_coords({ln.dim: (ln.dim, wl, {"units": "Angstrom", "wavelength_medium": "air"})})
    return out


def _to_unit(ds: xr.Dataset, unit: str, per_line: bool, src: str) -> xr.Dataset:
    """Intensities in ``unit``; for a per-line normalisation, data in DN (or dimensionless)
    stay as they are: each line is divided by its own peak, so their scale does not matter."""
    if per_line and any(intensity_unit(ds, ln, src) in (u.DN, u.dimensionless_unscaled) for ln in LINES):
        return ds
    return convert_intensity(ds, unit, src)


def observed_program(ds: xr.Dataset, source: str | None = None, partial: bool = False) -> np.ndarray:
    """Which of the model's 60 points the tunings of ``ds`` observe, after checking them.

    Parameters
    ----------
    ds : xarray.Dataset
        Profiles (schema of :mod:`radynversion.schema`); with ``partial``, either line may be
        absent.
    source : str, optional
        Name of the data for error messages.
    partial : bool
        The model takes partial coverage (``CINNConfig.partial_coverage``): points beyond the
        tunings or in a gap are unobserved (:func:`radynversion.model.coverage.observed_points`),
        and only an observation that covers no line's core is refused. Else each line must
        cover its whole window with enough tunings (:func:`check_window`).

    Returns
    -------
    ndarray of bool, shape ``(60,)``

    Raises
    ------
    ProfileSchemaError
        One line naming the source, the variable and what was expected.
    """
    src = _source(ds, source)
    seen = []
    for ln in LINES:
        if ln.var not in ds.data_vars and partial:
            seen.append(np.zeros(ln.model_points, dtype=bool))
            continue
        if ln.var not in ds.data_vars:
            raise ProfileSchemaError(f"{src}: missing variable {ln.var} ({ln.label}); expected "
                                     f"{[x.var for x in LINES]} (a model trained on partial coverage "
                                     "takes one line alone)")
        wl = wavelengths_air_A(ds, ln, src)
        if not partial:
            check_window(wl, ln, src)
            seen.append(np.ones(ln.model_points, dtype=bool))
            continue
        obs = observed_points(wl, ln)
        target = ln.model_wavelengths()
        inside = int(np.count_nonzero((wl >= target[0] - _COVER_TOLERANCE_A) & (wl <= target[-1] + _COVER_TOLERANCE_A)))
        need = max(3, int(np.ceil(MIN_WINDOW_TUNINGS * obs.mean())))
        if obs.any() and inside < need:
            raise ProfileSchemaError(
                f"{src}: {ln.var} has {inside} tunings within the model window of {ln.label} and covers "
                f"{int(obs.sum())} of its {ln.model_points} points; expected at least {need} tunings there "
                f"(or drop {ln.var} to invert the other line alone)")
        seen.append(obs)
    mask = np.concatenate(seen)
    if not bool(core_covered(mask[None, :])[0]):
        cores = ", ".join(f"{ln.label} +-{ln.model_halfwidth_A * (CORE_POINTS - 1) / (ln.model_points - 1):.2f} A"
                          for ln in LINES)
        raise ProfileSchemaError(
            f"{src}: the tunings cover neither line's core ({cores}); expected at least one line "
            "observed through its core")
    return mask


def normalise_profiles(
    ds: xr.Dataset,
    unit: str = RADIANCE_PER_HZ.to_string(),
    fwhm_A: Mapping[str, float] | None = None,
    degrade: bool | None = None,
    source: str | None = None,
    *,
    normalisation: str = "joint",
    partial: bool = False,
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
    normalisation : {"joint", "per_line", "per_line_wing"}
        Divide both lines by their joint peak, or each line by its own peak or far wing (the
        model's ``config.normalisation``, :mod:`radynversion.model.coverage`; per line,
        intensities in DN are taken as they are).
    partial : bool
        The model takes partial coverage (``config.partial_coverage``): either line may be
        absent and points the tunings do not observe are NaN
        (:func:`observed_program`, :mod:`radynversion.model.coverage`); so are, per pixel, the
        points that use a NaN or inf tuning (a pixel is inverted from what it has, as long as
        one line's core stays covered).

    Returns
    -------
    y : ndarray, shape ``(N, 60)``, float32
        Both lines on the model windows divided by their joint peak (H-alpha first), ``N`` the
        product of the sizes of :func:`sample_dims` (C order); rows of pixels with NaNs at
        observed points or a non-positive peak are NaN, as are unobserved points.
    peak : ndarray, shape ``(N,)``, float64
        The joint peak over the observed points, in ``unit`` (in the data's own unit for DN
        data normalised per line).

    Raises
    ------
    ProfileSchemaError
        If ``ds`` breaks the schema or does not cover a model window.
    """
    src = _source(ds, source)
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalise_profiles: normalisation = {normalisation!r}; expected one of {NORMALISATIONS}")
    per_line = normalisation in PER_LINE
    present = [ln for ln in LINES if ln.var in ds.data_vars]
    # with partial coverage, refuse what cannot be inverted before any work (else each line's
    # coverage is checked as it is resampled)
    seen = observed_program(ds, src, partial=True) if partial else np.ones(N_PROFILE, dtype=bool)
    if partial and present and len(present) < len(LINES):
        ds = _stand_in_lines(ds, [ln for ln in LINES if ln not in present], present[0])
    validate_profiles(ds, src)
    ds = to_air_angstrom(_to_unit(ds, unit, per_line, src), src)
    dims = sample_dims(ds)
    fwhm = dict(fwhm_A or {})
    parts = [_resample_line(ds, ln, dims, float(fwhm.get(ln.key, 0.0)), degrade, src, check=not partial)
             for ln in LINES]
    full = np.concatenate(parts, axis=1)
    if seen.all() and not per_line and (not partial or np.isfinite(full).all()):  # the original joint peak
        with np.errstate(invalid="ignore"):
            peak = full.max(axis=1)
            bad = ~np.isfinite(peak) | ~(peak > 0)
            y = full / np.where(bad, np.nan, peak)[:, None]
        y[bad] = np.nan
        return y.astype(np.float32), peak
    full[:, ~seen] = np.nan
    with np.errstate(invalid="ignore"):
        den = line_levels(torch.from_numpy(full), normalisation).numpy()
        if partial:  # per pixel: NaN tunings are unobserved points, like the program's gaps
            fin = np.isfinite(full)
            peak = np.where(fin, full, -np.inf).max(axis=1)
            peak[~fin.any(axis=1)] = np.nan
            bad = ~np.isfinite(peak) | ~(peak > 0) | ~core_covered(fin) | (fin & ~(den > 0)).any(axis=1)
        else:
            obs = full[:, seen]
            peak = obs.max(axis=1) if obs.shape[1] else np.full(full.shape[0], np.nan)
            bad = ~np.isfinite(peak) | ~(peak > 0)
            bad |= ~(den[:, seen] > 0).all(axis=1)  # a line with no finite observed point, or a level <= 0
        y = full / den
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


def check_profiles(profiles: xr.Dataset, source: str | None = None, partial: bool = False,
                   read_values: bool | None = None) -> str:
    """Everything about ``profiles`` that would make an inversion fail, checked before any work:
    the profile schema (:func:`radynversion.schema.validate_profiles`), wavelengths that cover
    the model windows, and (for in-memory data) intensities of which at least one pixel can be
    inverted. Returns the name of the data used in messages. The one check of every inversion
    (:func:`radynversion.model.invert`, the engine, the CLI).

    Partly bad data are not refused: pixels with NaN or inf, a negative intensity or none
    positive in a line come out NaN with ``mask`` True. With ``partial`` (a model trained on
    partial coverage, :mod:`radynversion.model.coverage`) one line alone, short windows and gaps
    pass; an observation that covers no line's core does not.

    Raises
    ------
    ProfileSchemaError, UnitsError
        A one-line message naming the file, the variable and what was expected.

    ``read_values``: also refuse intensities of which no pixel can be inverted
    (:func:`radynversion.schema.check_intensities`); by default only for in-memory data (lazy
    data, Dask or file backed, are not read here: :func:`radynversion.engine.invert_to_zarr`
    checks the mask of its store at the end, and names the reason then).
    """
    src = source or source_name(profiles)
    validate_profiles(profiles, src, all_lines=not partial)
    observed_program(profiles, src, partial=partial)  # windows, tunings (and cores)
    if read_values is None:
        read_values = all(getattr(profiles[ln.var].variable, "_in_memory", False)
                          for ln in LINES if ln.var in profiles)
    if read_values:
        check_intensities(profiles, src)
    return src
