"""The profile schema shared by synthetic, training and observed data.

A profile Dataset holds, for each line of :data:`radynversion.lines.LINES`, a variable
``I_<key>`` over the wavelength dim ``wl_<key>`` (e.g. ``I_halpha(..., wl_halpha)``), plus any
other dims (``sample``, ``case``, ``y``, ``x``, ``time``). Its wavelength coordinate carries
``units`` (any astropy length unit; stored data use Angstrom) and ``wavelength_medium``
(``"air"`` or ``"vacuum"``; radynversion writes air). Each intensity variable carries
``units``, an astropy-parsable spectral radiance per unit frequency or per unit wavelength
(e.g. ``"W / (m2 Hz sr)"``, ``"erg / (s cm2 sr Angstrom)"``). Per-Hz and per-Angstrom units are
converted with :func:`astropy.units.spectral_density`, which differs between the two lines by
(8542/6563)^2 = 1.69, so a joint normalisation always names one unit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import astropy.units as u
import numpy as np
import xarray as xr

from .errors import ProfileSchemaError, UnitsError
from .lines import LINES, Line, air_to_vacuum, vacuum_to_air

__all__ = [
    "RADIANCE_PER_HZ",
    "RADIANCE_PER_AA",
    "profile_dataset",
    "validate_profiles",
    "check_intensities",
    "impossible_pixels",
    "source_name",
    "wavelengths_air_A",
    "to_air_angstrom",
    "intensity_unit",
    "convert_intensity",
    "DN_NAMES",
    "RELATIVE_NAMES",
    "parse_intensity_unit",
]

#: names of uncalibrated camera units, read as astropy's ``DN`` (lower case; "DN", "ct" and
#: "adu" parse as units of their own, the others not at all)
DN_NAMES = frozenset({"dn", "d.n.", "dns", "digital number", "digital numbers", "data number", "data numbers",
                      "adu", "adus", "count", "counts", "ct", "cts"})

#: names of intensities relative to a reference (the continuum, the quiet Sun) or in arbitrary
#: units, as data files write them; read as dimensionless (uncalibrated: lower case, no spaces)
RELATIVE_NAMES = frozenset({"i/ic", "i/i_c", "i/icont", "i/i_cont", "i/iqs", "i/i_qs", "ic", "i_c", "icont",
                            "normalized", "normalised", "normalizedintensity", "normalisedintensity",
                            "relative", "relativeintensity", "rel.intensity", "rel.int.", "arbitrary",
                            "arbitraryunits", "arbitraryunit", "arb.units", "arb.unit", "arb.u.", "a.u.",
                            "continuumunits", "fractionofcontinuum", "quietsununits", "none", "n/a"})
#: camera counts, optionally per time, with no area or solid angle: uncalibrated
_COUNT_BASES = (u.DN, u.ct, u.adu, u.ph)
_DN_KEYS = frozenset(n.replace(" ", "") for n in DN_NAMES)
#: a count rate written in words astropy cannot parse ("counts/s", "DN per second")
_RATE = re.compile(r"(.+?)(?:/s|s-1|s\^-1|/sec|/second|persecond)")

RADIANCE_PER_HZ = u.Unit("W / (m2 Hz sr)")
RADIANCE_PER_AA = u.Unit("erg / (s cm2 sr Angstrom)")
_MEDIA = ("air", "vacuum")
#: how far [Angstrom] a window's line centre may sit from the expected one
_CENTRE_TOLERANCE_A = 1.0
#: values read at a time by :func:`check_intensities` (no full-size temporaries)
_CHECK_BLOCK = 1 << 22


def profile_dataset(
    wavelengths_A: Mapping[str, np.ndarray],
    intensities: Mapping[str, np.ndarray],
    unit: str | u.UnitBase,
    dims: tuple[str, ...] = (),
    coords: Mapping[str, object] | None = None,
    medium: str = "air",
    attrs: Mapping[str, object] | None = None,
) -> xr.Dataset:
    """Build a Dataset in the profile schema.

    Parameters
    ----------
    wavelengths_A : mapping line key -> ndarray, shape ``(W,)``
        Wavelengths [Angstrom] in ``medium``.
    intensities : mapping line key -> ndarray, shape ``(*dims, W)``
        Intensities in ``unit``.
    unit : str or astropy unit
        Spectral radiance unit of all intensities.
    dims : tuple of str
        Names of the leading (non-spectral) dims.
    coords : mapping, optional
        Extra coordinates.
    medium : {"air", "vacuum"}
        Medium of the wavelengths.
    """
    unit_s = u.Unit(unit).to_string()
    data_vars = {}
    all_coords: dict[str, object] = dict(coords or {})
    for ln in LINES:
        wl = np.asarray(wavelengths_A[ln.key], dtype=float)
        all_coords[ln.dim] = (ln.dim, wl, {"units": "Angstrom", "wavelength_medium": medium})
        data_vars[ln.var] = ((*dims, ln.dim), np.asarray(intensities[ln.key]), {"units": unit_s})
    return xr.Dataset(data_vars, coords=all_coords, attrs=dict(attrs or {}))


def _source(ds: xr.Dataset, source: str | None) -> str:
    return source or source_name(ds)


def source_name(ds: xr.Dataset, default: str = "<dataset>") -> str:
    """The name of ``ds`` for error messages: the file it was opened from (``encoding['source']``,
    or the ``source_file``/``source_files`` attrs readers set), else ``default``."""
    name = getattr(ds, "encoding", {}).get("source") or getattr(ds, "attrs", {}).get("source_file")
    if name:
        return str(name)
    files = getattr(ds, "attrs", {}).get("source_files")
    if isinstance(files, str):
        files = [files]
    if files is not None and len(files) > 0:
        files = [str(f) for f in files]
        return ", ".join(files) if len(files) <= 3 else f"{files[0]} (+{len(files) - 1} files)"
    return default


def wavelengths_air_A(ds: xr.Dataset, line: Line, source: str | None = None) -> np.ndarray:
    """The wavelengths of ``line`` in ``ds`` as air Angstrom, after checking units and medium.

    Raises
    ------
    UnitsError
        Missing or non-length units, undeclared medium, or values that do not centre on the
        line in the declared medium (e.g. nm labelled Angstrom, vacuum declared as air).
    """
    src = _source(ds, source)
    if line.dim not in ds.coords:
        raise ProfileSchemaError(f"{src}: variable {line.var} has no wavelength coordinate {line.dim!r}")
    coord = ds[line.dim]
    unit_s = coord.attrs.get("units")
    if not unit_s:
        raise UnitsError(f"{src}: coordinate {line.dim} has no 'units' attribute; expected a "
                         "length unit such as 'Angstrom' or 'nm'")
    try:
        unit = u.Unit(unit_s)
        wl = (np.asarray(coord.values, dtype=float) * unit).to_value(u.AA)
    except (ValueError, u.UnitConversionError):
        raise UnitsError(f"{src}: coordinate {line.dim} has units {unit_s!r}; expected a length "
                         "unit such as 'Angstrom' or 'nm'") from None
    medium = coord.attrs.get("wavelength_medium")
    if medium not in _MEDIA:
        raise UnitsError(f"{src}: coordinate {line.dim} must declare wavelength_medium (got {medium!r}); "
                         "expected 'air' or 'vacuum'")
    steps = np.diff(wl) if wl.ndim == 1 else np.zeros(0)
    if wl.ndim != 1 or wl.size < 2 or not np.all(np.isfinite(wl)) or not (np.all(steps > 0) or np.all(steps < 0)):
        what = ("is not 1D" if wl.ndim != 1 else "has fewer than 2 values" if wl.size < 2 else
                "has NaN or inf values" if not np.all(np.isfinite(wl)) else
                "has repeated wavelengths" if np.any(steps == 0) else "is not sorted")
        raise ProfileSchemaError(f"{src}: coordinate {line.dim} {what}; expected one distinct, finite "
                                 "wavelength per tuning, in increasing (or decreasing) order")
    air = wl if medium == "air" else vacuum_to_air(wl)
    expected = line.center_air_A
    lo, hi = float(air.min()), float(air.max())
    if not (lo - _CENTRE_TOLERANCE_A <= expected <= hi + _CENTRE_TOLERANCE_A):
        hint = ""
        if lo * 10 <= expected <= hi * 10:
            hint = "; the values look like nm labelled as Angstrom"
        elif lo / 10 <= expected <= hi / 10:
            hint = "; the values look like Angstrom labelled as nm"
        raise UnitsError(
            f"{src}: coordinate {line.dim} spans {lo:.2f}-{hi:.2f} A ({medium}), which "
            f"does not contain the {line.label} centre {expected:.2f} A air{hint}; expected a window "
            "around the line centre, in the declared units and medium")
    # The window should centre on the line in the declared medium; a centre ~1.8 A (H-alpha)
    # or ~2.4 A (Ca II) off, towards the other medium's line centre, means a mislabelled medium.
    mid = 0.5 * (lo + hi)
    other_centre = line.center_vacuum_A if medium == "air" else float(vacuum_to_air(line.center_air_A))
    if abs(mid - expected) > _CENTRE_TOLERANCE_A and abs(mid - other_centre) < abs(mid - expected):
        other = "vacuum" if medium == "air" else "air"
        raise UnitsError(
            f"{src}: coordinate {line.dim} is declared {medium} but centres on {0.5 * (wl[0] + wl[-1]):.2f} A, "
            f"the {line.label} centre in {other} ({line.center_air_A if other == 'air' else line.center_vacuum_A:.2f} A); "
            f"expected the {medium} centre {line.center_air_A if medium == 'air' else line.center_vacuum_A:.2f} A: "
            f"set wavelength_medium = '{other}' if that is what the data are")
    return air


def intensity_unit(ds: xr.Dataset, line: Line, source: str | None = None) -> u.UnitBase:
    """Parsed ``units`` attr of ``I_<line>`` (a spectral radiance, DN or dimensionless)."""
    src = _source(ds, source)
    unit_s = ds[line.var].attrs.get("units")
    if unit_s is None:
        raise UnitsError(f"{src}: variable {line.var} has no 'units' attribute; expected a "
                         "spectral radiance such as 'W / (m2 Hz sr)', or 'DN' with a calibration")
    unit = parse_intensity_unit(unit_s)
    if unit is None:
        raise UnitsError(f"{src}: variable {line.var} has units {unit_s!r}, which astropy cannot "
                         "parse; expected e.g. 'W / (m2 Hz sr)', or 'DN' / '1' for uncalibrated data")
    return unit


def parse_intensity_unit(text: object) -> u.UnitBase | None:
    """An intensity ``units`` string as a unit: uncalibrated data as ``u.DN`` (camera counts,
    also per second: 'DN', 'counts', 'DN/s', 'ct s-1') or ``u.dimensionless_unscaled`` (relative
    or arbitrary: '', '1', '%', 'I/Ic', 'normalised', 'arb. units'), anything else as astropy
    parses it; None if astropy cannot.

    Example
    -------
    >>> parse_intensity_unit("DN/s"), parse_intensity_unit("I/Ic"), parse_intensity_unit("W / (m2 Hz sr)")
    (Unit("DN"), Unit(dimensionless), Unit("W / (Hz sr m2)"))
    """
    raw = str(text).strip()
    key = raw.lower().replace(" ", "")
    if key in _DN_KEYS:  # camera counts: a calibration away from radiances
        return u.DN
    if key in RELATIVE_NAMES:
        return u.dimensionless_unscaled
    try:
        unit = u.Unit(raw)
    except ValueError:
        rate = _RATE.fullmatch(key)
        return u.DN if rate and rate.group(1) in _DN_KEYS else None
    if unit.physical_type == "dimensionless":
        return u.dimensionless_unscaled
    bases = set(unit.bases)
    if bases & set(_COUNT_BASES) and bases <= set(_COUNT_BASES) | {u.s}:
        return u.DN
    return unit


def validate_profiles(ds: xr.Dataset, source: str | None = None, all_lines: bool = True) -> None:
    """Check that ``ds`` follows the profile schema; raise a one-line error naming what is wrong.

    ``all_lines`` False accepts one line alone (for a model trained on partial coverage,
    :mod:`radynversion.model.coverage`): the lines present are checked.
    """
    src = _source(ds, source)
    if not isinstance(ds, xr.Dataset):
        raise ProfileSchemaError(f"{src}: expected an xarray.Dataset, got {type(ds).__name__}")
    if not any(ln.var in ds.data_vars for ln in LINES):
        expected = " and ".join(f"{ln.var}(..., {ln.dim})" for ln in LINES)
        if ds.attrs.get("radynversion_store"):
            raise ProfileSchemaError(f"{src}: is a {ds.attrs['radynversion_store']} store (an output), "
                                     f"not profiles; expected {expected}")
        have = sorted(str(v) for v in ds.data_vars)
        raise ProfileSchemaError(f"{src}: holds none of the profile variables (has {have[:8]}"
                                 f"{' ...' if len(have) > 8 else ''}); expected {expected} (the "
                                 "profile schema)")
    for ln in LINES:
        if ln.var not in ds.data_vars and not all_lines:
            continue
        if ln.var not in ds.data_vars:
            raise ProfileSchemaError(f"{src}: missing variable {ln.var} ({ln.label}); expected "
                                     f"{[x.var for x in LINES]} (a model trained on partial coverage "
                                     "takes one line alone)")
        if ln.dim not in ds[ln.var].dims:
            raise ProfileSchemaError(f"{src}: variable {ln.var} has dims {ds[ln.var].dims}; "
                                     f"expected one of them to be {ln.dim!r}")
        wavelengths_air_A(ds, ln, src)
        intensity_unit(ds, ln, src)
        if "stokes" in ds[ln.var].dims:  # Q, U, V would be inverted as if they were intensities
            labels = ([str(v).strip().upper() for v in np.atleast_1d(ds["stokes"].values)]
                      if "stokes" in ds.coords else [])
            # a lone Stokes parameter labelled "I", or 0 (its index in I, Q, U, V), is intensity
            if ds[ln.var].sizes["stokes"] > 1 or labels not in ([], ["I"], ["0"]):
                raise ProfileSchemaError(
                    f"{src}: variable {ln.var} has a 'stokes' dim of size {ds[ln.var].sizes['stokes']}"
                    f"{f' {labels}' if labels else ''}; expected Stokes I only (select it, e.g. "
                    "ds.sel(stokes='I'))")
    present = [ln for ln in LINES if ln.var in ds.data_vars]
    others = [tuple(d for d in ds[ln.var].dims if d != ln.dim) for ln in present]
    if any(set(o) != set(others[0]) for o in others):
        raise ProfileSchemaError(f"{src}: the lines have different non-spectral dims "
                                 f"({', '.join(f'{ln.var}: {o}' for ln, o in zip(present, others, strict=True))}); "
                                 "expected the same dims (e.g. y, x) for every line")
    for d in others[0]:
        sizes = {ln.var: ds[ln.var].sizes[d] for ln in present}
        if len(set(sizes.values())) > 1:
            raise ProfileSchemaError(f"{src}: dim {d!r} differs in size between lines {sizes}; expected "
                                     "every line on the same pixels")


def to_air_angstrom(ds: xr.Dataset, source: str | None = None) -> xr.Dataset:
    """Return ``ds`` with every line's wavelength coordinate in air Angstrom, increasing
    (a line stored in decreasing order is reversed along its wavelength dim)."""
    out = ds.copy()
    for ln in LINES:
        air = wavelengths_air_A(ds, ln, source)
        attrs = dict(ds[ln.dim].attrs)
        attrs.update(units="Angstrom", wavelength_medium="air")
        out = out.assign_coords({ln.dim: (ln.dim, air, attrs)})
        if air[0] > air[-1]:
            out = out.isel({ln.dim: slice(None, None, -1)})
    return out


def convert_intensity(ds: xr.Dataset, unit: str | u.UnitBase, source: str | None = None) -> xr.Dataset:
    """Convert every line's intensity to ``unit`` (per-Hz <-> per-Angstrom via
    :func:`astropy.units.spectral_density` at each wavelength).

    Raises
    ------
    UnitsError
        If an intensity unit is not a spectral radiance convertible to ``unit`` (DN and
        dimensionless data need a calibration first: :func:`radynversion.calibration.calibrate`).
    """
    src = _source(ds, source)
    target = u.Unit(unit)
    out = ds.copy()
    for ln in LINES:
        have = intensity_unit(ds, ln, src)
        wl = wavelengths_air_A(ds, ln, src)
        # spectral_density needs the wavelength in vacuum for an exact c / lambda^2.
        eq = u.spectral_density(air_to_vacuum(wl) * u.AA)
        try:
            factor = (1.0 * have).to_value(target, equivalencies=eq)
        except u.UnitConversionError:
            given = str(ds[ln.var].attrs["units"]).strip()
            shown = repr(given) + (f" ({have.to_string()})" if given != have.to_string() else "")
            raise UnitsError(f"{src}: variable {ln.var} has units {shown}, not "
                             f"convertible to {target.to_string()!r}; DN or unitless data need "
                             "a calibration first (radynversion.calibration.calibrate)") from None
        factor = np.broadcast_to(np.asarray(factor, dtype=float), wl.shape)
        var = ds[ln.var]
        scale = xr.DataArray(factor, dims=(ln.dim,))
        # float32 at least: a float16 radiance in W / (m2 Hz sr) (~1e-8) underflows to zero
        new = (var * scale).astype(np.result_type(var.dtype, np.float32) if var.dtype.kind == "f" else float)
        new.attrs = dict(var.attrs, units=target.to_string())
        out[ln.var] = new
    return out


def _present(ds: xr.Dataset) -> list[Line]:
    """The lines ``ds`` holds (a model trained on partial coverage takes one line alone)."""
    return [ln for ln in LINES if ln.var in ds.data_vars]


def _pixel_dims(ds: xr.Dataset) -> tuple[str, ...]:
    """The non-spectral dims, in the order of the dims of the first line ``ds`` holds."""
    first = next(iter(_present(ds)), LINES[0])
    return tuple(d for d in ds[first.var].dims if d != first.dim)


def impossible_pixels(ds: xr.Dataset) -> np.ndarray:
    """Pixels whose profiles no atmosphere emits: in some line a negative intensity, or no
    positive one.

    A spectral radiance (Stokes I) is never negative, and a line that is nowhere positive is a
    dark frame, a difference image or Stokes Q/U/V, not a spectrum: such pixels are masked
    (inverted to NaN, ``mask`` True), never inverted to a confident atmosphere. NaN and inf
    are not judged here (they make the normalised profile NaN by themselves), nor is a line
    with no finite value in the pixel.

    Parameters
    ----------
    ds : xarray.Dataset
        In the profile schema, ``N`` pixels over its non-spectral dims (a line it lacks is not
        judged).

    Returns
    -------
    ndarray of bool, shape ``(N,)``
        C order over the non-spectral dims in the order of ``I_halpha``'s dims (as
        :func:`radynversion.model.preprocess.normalise_profiles` orders its rows).
    """
    dims = _pixel_dims(ds)
    bad = None
    for ln in _present(ds):
        arr = np.asarray(ds[ln.var].transpose(*dims, ln.dim).values)
        arr = arr.reshape(-1, arr.shape[-1])
        with np.errstate(invalid="ignore"):
            line_bad = (arr < 0).any(axis=1) | (~(arr > 0).any(axis=1) & np.isfinite(arr).any(axis=1))
        bad = line_bad if bad is None else bad | line_bad
    return np.zeros(0, dtype=bool) if bad is None else bad


def _value_blocks(var: xr.DataArray):  # noqa: ANN202 - yields (start, ndarray)
    """``var`` in blocks along its first dim (numpy views, or reads of lazy data)."""
    first = var.dims[0]
    n = int(var.sizes[first])
    per_row = max(1, var.size // max(1, n))
    step = max(1, _CHECK_BLOCK // per_row)
    for start in range(0, n, step):
        yield start, np.asarray(var.isel({first: slice(start, start + step)}).values)


def check_intensities(ds: xr.Dataset, source: str | None = None) -> None:
    """Refuse intensities of which no pixel can be inverted, naming the file and variable.

    One pass over each line, in blocks along its first dim (lazy data are read block by block).
    Refused, per line: values that are not real numbers; every value NaN or inf; a tuning
    inside the model window that is NaN or inf in every pixel (every pixel would be masked);
    no positive value at all (zero everywhere, or negative: a dark frame, a difference image,
    Stokes Q/U/V); a negative value, or no positive one, in every pixel
    (:func:`impossible_pixels` would mask them all). Finally, pixels each made impossible by
    one line or the other (every pixel masked) are refused too.

    Partly bad data pass: such pixels are masked by the inversion, the others inverted.

    Raises
    ------
    ProfileSchemaError
        One line: the source, the variable, what it holds and what was expected.
    """
    src = _source(ds, source)
    dims = _pixel_dims(ds)
    impossible = None
    for ln in _present(ds):
        var = ds[ln.var]
        if var.dtype.kind not in "fiu":
            raise ProfileSchemaError(f"{src}: {ln.var} has dtype {var.dtype}; expected real numbers "
                                     "(spectral radiances)")
        if var.size == 0:
            continue
        axis = var.dims.index(ln.dim)
        others = tuple(i for i in range(var.ndim) if i != axis)
        alive = np.zeros(var.shape[axis], dtype=bool)  # tunings finite in some pixel
        pix_shape = tuple(var.shape[i] for i in others)
        negative = np.zeros(pix_shape, dtype=bool)  # pixels with a negative value
        positive = np.zeros(pix_shape, dtype=bool)  # pixels with a positive value
        measured = np.zeros(pix_shape, dtype=bool)  # pixels with a finite value
        lo, hi, any_inf = np.inf, -np.inf, False
        for start, part in _value_blocks(var):
            finite = np.isfinite(part)
            if finite.any():
                vals = part[finite]
                lo, hi = min(lo, float(vals.min())), max(hi, float(vals.max()))
            any_inf = any_inf or bool(np.isinf(part).any())
            seen = finite.any(axis=others)
            with np.errstate(invalid="ignore"):
                neg, pos = (part < 0).any(axis=axis), (part > 0).any(axis=axis)
            fin = finite.any(axis=axis)
            stop = start + part.shape[0]
            if axis == 0:  # a block of tunings, every pixel
                alive[start:stop] |= seen
                negative |= neg
                positive |= pos
                measured |= fin
            else:  # every tuning, a block of pixels
                alive |= seen
                negative[start:stop] |= neg
                positive[start:stop] |= pos
                measured[start:stop] |= fin
        if hi == -np.inf:
            what = "NaN or inf" if any_inf else "NaN"
            raise ProfileSchemaError(f"{src}: every value of {ln.var} is {what}; expected finite "
                                     "spectral radiances (NaN only where a pixel is bad)")
        # a tuning dead in every pixel inside the window masks every pixel
        wl = wavelengths_air_A(ds, ln, src)
        target = ln.model_wavelengths()
        for k in np.flatnonzero((wl >= target[0]) & (wl <= target[-1]) & ~alive):
            raise ProfileSchemaError(
                f"{src}: {ln.var} is NaN or inf in every pixel at {wl[k]:.3f} A (air; {ln.dim} "
                f"index {k}), inside the model window, so no pixel can be inverted; expected "
                f"finite values there (drop a bad tuning, e.g. ds.drop_isel({ln.dim}={k}))")
        unit = intensity_unit(ds, ln, src).to_string()
        if hi <= 0:
            held = "zero everywhere" if lo == hi == 0 else f"values from {lo:.3g} to {hi:.3g} {unit}"
            raise ProfileSchemaError(
                f"{src}: {ln.var} has no positive value ({held}), so no pixel can be inverted; expected "
                "positive spectral radiances (Stokes I, not Q/U/V, a difference image or a dark frame)")
        line_bad = negative | (~positive & measured)
        if line_bad.all():
            raise ProfileSchemaError(
                f"{src}: every pixel of {ln.var} has a negative value (down to {lo:.3g} {unit}) or none "
                "positive, so no pixel can be inverted; expected positive spectral radiances (negative "
                "ones are not physical: check the dark and background subtraction)")
        own = tuple(d for d in var.dims if d != ln.dim)
        line_bad = xr.DataArray(line_bad, dims=own).transpose(*dims).values.reshape(-1)
        impossible = line_bad if impossible is None else impossible | line_bad
    if impossible is not None and impossible.size and impossible.all():
        names = " or ".join(ln.var for ln in _present(ds))
        raise ProfileSchemaError(
            f"{src}: every pixel has a negative value, or no positive one, in {names}, so no pixel can "
            "be inverted; expected positive spectral radiances (Stokes I)")
