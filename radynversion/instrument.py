"""SST/CRISP as an instrument for synthetic profiles: transmission, tunings and noise.

CRISP is a dual Fabry-Perot filter; its transmission is modelled as a Gaussian of FWHM about
66 mA at 6563 A and 107 mA at 8542 A (Scharmer et al. 2008; de la Cruz Rodriguez et al. 2015;
:attr:`radynversion.lines.Line.crisp_fwhm_A`). A scan samples each line at a set of tunings
that is denser in the core than in the wings: flare programs take H-alpha at ~15 positions
within +-1.5 A and Ca II 8542 at ~20-25 positions within +-1.0-1.75 A (:func:`crisp_tunings`).

:func:`degrade` turns profiles on a fine synthesis grid into what CRISP would record: each
tuning is the fine profile weighted by the transmission centred on it, one linear operator per
line (:func:`resampling_matrix`, which the model's preprocessing also uses), plus optional
Gaussian noise.

Example
-------
>>> from radynversion.instrument import crisp_tunings
>>> from radynversion.lines import HALPHA
>>> crisp_tunings(HALPHA).size
15
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import ConfigError, ProfileSchemaError
from .lines import CA8542, HALPHA, LINES, Line, line_by_key, span_text, spans
from .schema import RADIANCE_PER_HZ, convert_intensity, intensity_unit, to_air_angstrom, validate_profiles

__all__ = ["CRISP_PROGRAMS", "crisp_tunings", "default_fwhm_A", "resampling_matrix", "degrade", "pixel_noise",
           "observing_program", "program_names"]

#: default CRISP line programs: line key -> (number of tunings, half-width [A], core density).
#: H-alpha: 15 tunings within +-1.5 A. Ca II 8542: 21 tunings within +-1.25 A: real programs
#: reach +-1.75 A, but the fine synthesis grid of the package ends at +-1.5 A and the
#: transmission must fit inside it (pass ``halfwidth_A=1.75`` for the full range).
CRISP_PROGRAMS: dict[str, tuple[int, float, float]] = {
    HALPHA.key: (15, 1.5, 2.0),
    CA8542.key: (21, 1.25, 2.0),
}
#: the Gaussian transmission is truncated at this many FWHM from its centre
_KERNEL_EXTENT_FWHM = 3.0
#: a tuning must lie this many FWHM inside the fine grid (the Gaussian beyond 2 FWHM carries
#: < 1e-5 of the weight)
_EDGE_FWHM = 2.0


def _line(line: str | Line) -> Line:
    return line_by_key(line) if isinstance(line, str) else line


def crisp_tunings(line: str | Line, n: int | None = None, halfwidth_A: float | None = None,
                  core_density: float | None = None) -> np.ndarray:
    """Irregular CRISP tunings of a line scan, denser in the core, in air Angstrom.

    The offsets from the line centre are ``h sinh(a u) / sinh(a)`` for ``n`` values of ``u``
    evenly spaced in [-1, 1], rounded to 1 mA (CRISP tunes in whole mA): a symmetric program
    whose step grows from ``h a / ((n - 1) / 2 sinh a)`` in the core to about ``a`` times
    that in the far wings.

    Parameters
    ----------
    line : str or Line
        ``"halpha"``, ``"ca8542"`` or a :class:`~radynversion.lines.Line`.
    n : int, optional
        Number of tunings (default :data:`CRISP_PROGRAMS`: 15 for H-alpha, 21 for Ca II 8542).
    halfwidth_A : float, optional
        Largest offset [A] (default 1.5 for H-alpha, 1.25 for Ca II 8542).
    core_density : float, optional
        ``a`` above (0 = evenly spaced; default 2, core steps ~1/3.6 of the mean step).

    Returns
    -------
    ndarray, shape ``(n,)``
        Tuning wavelengths [air Angstrom], increasing.

    Example
    -------
    >>> np.round(crisp_tunings("halpha")[:3] - HALPHA.center_air_A, 3)
    array([-1.5  , -1.111, -0.813])
    """
    ln = _line(line)
    n0, h0, a0 = CRISP_PROGRAMS[ln.key]
    n = n0 if n is None else int(n)
    h = h0 if halfwidth_A is None else float(halfwidth_A)
    a = a0 if core_density is None else float(core_density)
    if n < 2 or h <= 0:
        raise ValueError(f"crisp_tunings: n = {n}, halfwidth_A = {h}; expected n >= 2, halfwidth > 0")
    u = np.linspace(-1.0, 1.0, n)
    offsets = h * u if a == 0 else h * np.sinh(a * u) / np.sinh(a)
    return ln.center_air_A + np.round(offsets, 3)


def default_fwhm_A() -> dict[str, float]:
    """CRISP transmission FWHM per line key [Angstrom] (:attr:`Line.crisp_fwhm_A`)."""
    return {ln.key: ln.crisp_fwhm_A for ln in LINES}


def pixel_noise(n_pixels: int, n_points: int, seed: int) -> np.ndarray:
    """Standard-normal draws ``(n_pixels, n_points)``, row ``i`` from a generator seeded by
    ``(seed, i)`` alone, so a pixel's noise does not depend on the other pixels."""
    out = np.empty((n_pixels, n_points))
    for i in range(n_pixels):
        out[i] = np.random.default_rng(np.random.SeedSequence([int(seed), i])).standard_normal(n_points)
    return out


def resampling_matrix(wl_in_A: np.ndarray, wl_out_A: np.ndarray, fwhm_A: float = 0.0) -> np.ndarray:
    """Linear operator from a profile on ``wl_in_A`` to its values on ``wl_out_A``.

    With ``fwhm_A == 0``: linear interpolation. With ``fwhm_A > 0``: the profile convolved with
    a unit-area Gaussian of that FWHM, evaluated at ``wl_out_A`` by trapezoidal quadrature on
    the input grid (any, possibly uneven, sampling); rows are renormalised to unit sum, so the
    kernel is truncated, not darkened, at the edges of the data. An output wavelength in a gap
    of the sampling wider than the kernel (no input within 3 FWHM) is linearly interpolated
    between the gap's edges.

    Parameters
    ----------
    wl_in_A : ndarray, shape ``(W,)``
        Strictly increasing input wavelengths [Angstrom], covering ``wl_out_A``.
    wl_out_A : ndarray, shape ``(M,)``
        Output wavelengths [Angstrom].
    fwhm_A : float
        FWHM of the Gaussian instrument profile [Angstrom]; 0 for none.

    Returns
    -------
    ndarray, shape ``(M, W)``
        ``I_out = M @ I_in``.
    """
    wl_in = np.asarray(wl_in_A, dtype=float)
    wl_out = np.clip(np.asarray(wl_out_A, dtype=float), wl_in[0], wl_in[-1])
    if fwhm_A <= 0:
        return _interpolation_matrix(wl_in, wl_out)
    sigma = fwhm_A / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    quad = np.zeros_like(wl_in)
    dw = np.diff(wl_in)
    quad[:-1] += 0.5 * dw
    quad[1:] += 0.5 * dw
    d = wl_out[:, None] - wl_in[None, :]
    kernel = np.exp(-0.5 * (d / sigma) ** 2) * quad[None, :]
    kernel[np.abs(d) > _KERNEL_EXTENT_FWHM * fwhm_A] = 0.0
    total = kernel.sum(axis=1, keepdims=True)
    # an output wavelength in a gap of the sampling (no input within the kernel's extent) has
    # nothing to integrate: it is interpolated between the gap's edges instead
    empty = total[:, 0] <= 0
    kernel[~empty] /= total[~empty]
    if np.any(empty):
        kernel[empty] = _interpolation_matrix(wl_in, wl_out[empty])
    return kernel


def _interpolation_matrix(wl_in: np.ndarray, wl_out: np.ndarray) -> np.ndarray:
    """Linear interpolation from ``wl_in`` ``(W,)`` (increasing) to ``wl_out`` ``(M,)``
    (within its range) as an ``(M, W)`` matrix."""
    mat = np.zeros((wl_out.size, wl_in.size))
    hi = np.clip(np.searchsorted(wl_in, wl_out, side="right"), 1, wl_in.size - 1)
    lo = hi - 1
    w = (wl_out - wl_in[lo]) / (wl_in[hi] - wl_in[lo])
    rows = np.arange(wl_out.size)
    mat[rows, lo] = 1.0 - w
    mat[rows, hi] += w
    return mat


def degrade(
    ds_fine: xr.Dataset,
    wavelengths_A: Mapping[str, np.ndarray],
    fwhm_A: Mapping[str, float] | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> xr.Dataset:
    """Finely sampled profiles as CRISP records them at the given tunings.

    For each line, the profile ``I(lambda)`` on the fine grid is integrated against a
    unit-area Gaussian transmission ``T(lambda - lambda_k)`` of FWHM ``fwhm_A[line]`` centred
    on each tuning ``lambda_k`` (trapezoidal quadrature; one matrix per line,
    :func:`resampling_matrix`); ``fwhm_A = 0`` interpolates.
    With ``noise > 0``, Gaussian noise of standard deviation ``noise x peak`` is added, where
    ``peak`` is the pixel's joint peak (the largest value over both lines after degradation):
    the noise of pixel ``i`` (flat C-order index over the non-spectral dims) comes from a
    generator seeded by ``(seed, i)`` (:func:`pixel_noise`).

    Parameters
    ----------
    ds_fine : xarray.Dataset
        Profile schema (:mod:`radynversion.schema`), ``I_<key>(*dims, wl_<key>)`` on a grid
        that resolves the transmission (e.g. the 0.02 A synthesis grid), any spectral-radiance
        units, air or vacuum.
    wavelengths_A : mapping line key -> ndarray, shape ``(W_k,)``
        Tunings [air Angstrom] per line, any order (sorted on output); each must lie
        2 FWHM inside the fine grid.
    fwhm_A : mapping line key -> float, optional
        Transmission FWHM [A]; default :func:`default_fwhm_A` (66 mA, 107 mA).
    noise : float
        Noise standard deviation as a fraction of each pixel's joint peak (0.01 = 1 %).
    seed : int
        Seed of the noise.

    Returns
    -------
    xarray.Dataset
        ``I_<key>(*dims, wl_<key>)`` at the tunings, in W m^-2 Hz^-1 sr^-1 (float64), air
        Angstrom; the other variables and coordinates of ``ds_fine`` that do not use a
        wavelength dim; attr ``instrument`` (JSON: FWHM per line, noise, seed).

    Raises
    ------
    ProfileSchemaError
        A line without tunings, or tunings too close to (or beyond) the end of the fine grid.

    Example
    -------
    >>> obs = degrade(fine, {"halpha": crisp_tunings("halpha"),
    ...                      "ca8542": crisp_tunings("ca8542")}, noise=0.01)  # doctest: +SKIP
    """
    validate_profiles(ds_fine)
    fwhm = dict(default_fwhm_A() if fwhm_A is None else fwhm_A)
    units = {intensity_unit(ds_fine, ln) for ln in LINES}
    try:
        ds = to_air_angstrom(convert_intensity(ds_fine, RADIANCE_PER_HZ))
    except ProfileSchemaError:
        if len(units) != 1:
            raise
        ds = to_air_angstrom(ds_fine)  # DN / unitless: one unit for both lines, kept
    out_unit = ds[LINES[0].var].attrs["units"]
    dims = tuple(d for d in ds[LINES[0].var].dims if d != LINES[0].dim)
    shape = tuple(ds.sizes[d] for d in dims)
    n_pix = int(np.prod(shape, dtype=np.int64))
    parts = {}
    for ln in LINES:
        if ln.key not in wavelengths_A:
            raise ProfileSchemaError(f"degrade: no tunings for {ln.label} ({ln.key!r}); expected "
                                     f"wavelengths_A to name {[x.key for x in LINES]}")
        wl_in = np.asarray(ds[ln.dim].values, dtype=float)
        wl_out = np.sort(np.asarray(wavelengths_A[ln.key], dtype=float))
        f = float(fwhm.get(ln.key, 0.0))
        margin = _EDGE_FWHM * f
        if not spans(wl_in, wl_out, margin, atol_A=1e-9):
            raise ProfileSchemaError(
                f"degrade: {ln.label} tunings {span_text(wl_out)} need the fine grid to reach "
                f"{margin:.3f} A beyond them, but it spans {span_text(wl_in)}")
        mat = resampling_matrix(wl_in, wl_out, f)
        arr = np.asarray(ds[ln.var].transpose(*dims, ln.dim).values, dtype=float).reshape(n_pix, -1)
        parts[ln.key] = (wl_out, arr @ mat.T)
    if noise > 0:
        full = np.concatenate([parts[ln.key][1] for ln in LINES], axis=1)
        peak = np.nanmax(full, axis=1)
        full = full + noise * peak[:, None] * pixel_noise(n_pix, full.shape[1], seed)
        start = 0
        for ln in LINES:
            wl_out, arr = parts[ln.key]
            parts[ln.key] = (wl_out, full[:, start : start + wl_out.size])
            start += wl_out.size
    keep = {name: var for name, var in ds.data_vars.items()
            if name not in {ln.var for ln in LINES} and not any(d.startswith("wl_") for d in var.dims)}
    out = xr.Dataset(keep, coords={k: c for k, c in ds.coords.items()
                                   if not any(d.startswith("wl_") for d in c.dims)}, attrs=dict(ds.attrs))
    for ln in LINES:
        wl_out, arr = parts[ln.key]
        out = out.assign_coords({ln.dim: (ln.dim, wl_out, {
            "units": "Angstrom", "wavelength_medium": "air", "long_name": f"{ln.label} tuning (air)"})})
        attrs = dict(ds[ln.var].attrs, units=out_unit)
        attrs["instrument"] = f"Gaussian transmission, FWHM {fwhm.get(ln.key, 0.0):g} A"
        out[ln.var] = ((*dims, ln.dim), arr.reshape(*shape, wl_out.size), attrs)
    out.attrs["instrument"] = json.dumps({
        "transmission": "Gaussian", "fwhm_A": {ln.key: float(fwhm.get(ln.key, 0.0)) for ln in LINES},
        "noise_fraction_of_joint_peak": float(noise), "noise_seed": int(seed)})
    return out


def _programs_dir():  # noqa: ANN202 - an importlib Traversable
    from importlib import resources

    return resources.files("radynversion") / "data" / "programs"


def program_names() -> list[str]:
    """Names of the packaged observing programs (``radynversion/data/programs/*.toml``): the
    programs the model card evaluates (``sparse``, ``even``, ``points``, ``short_windows``,
    ``halpha_only``, ``ca8542_only``, ``cut_and_gap``)."""
    return sorted(p.name[:-5] for p in _programs_dir().iterdir() if p.name.endswith(".toml"))


def observing_program(program: str | Path) -> dict[str, np.ndarray]:
    """An observing program: line key -> air wavelengths [Angstrom] of its tunings.

    Parameters
    ----------
    program : str or path
        A packaged program's name (:func:`program_names`) or a TOML file with ``halpha = [...]``
        and/or ``ca8542 = [...]`` (air Angstrom, any order; one line alone for models trained on
        partial coverage).

    Raises
    ------
    ConfigError
        An unreadable file, an unknown name, no line named, or a line without at least two
        numbers; one line naming the file.

    Example
    -------
    >>> sorted(observing_program("sparse"))
    ['ca8542', 'halpha']
    """
    import tomllib

    path = Path(program)
    if not path.suffix and not path.exists():
        packaged = _programs_dir() / f"{program}.toml"
        if not packaged.is_file():
            raise ConfigError(f"{program}: neither a file nor a packaged observing program; expected a TOML "
                              f"file or one of {', '.join(program_names())}")
        text, where = packaged.read_text(), f"{program} (packaged)"
    else:
        try:
            text, where = path.read_text(), str(path)
        except OSError as err:
            raise ConfigError(f"{path}: cannot read the tunings ({err.strerror}); expected a TOML file with "
                              "halpha = [...] and/or ca8542 = [...]") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{where}: cannot read the tunings ({err})") from None
    if not any(ln.key in table for ln in LINES):
        raise ConfigError(f"{where}: names no line; expected {[ln.key for ln in LINES]} = [air wavelengths]")
    out = {}
    for ln in LINES:
        if ln.key not in table:
            continue  # one line alone: for a model trained on partial coverage
        wl = table[ln.key]
        if (not isinstance(wl, list) or len(wl) < 2
                or not all(isinstance(w, int | float) and not isinstance(w, bool) for w in wl)):
            raise ConfigError(f"{where}: {ln.key!r} must be a list of at least 2 air wavelengths [Angstrom] "
                              f"({ln.label}, e.g. {ln.center_air_A - 1.5:.2f} ... {ln.center_air_A + 1.5:.2f})")
        out[ln.key] = np.asarray(wl, dtype=float)
    return out
