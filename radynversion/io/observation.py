"""Open observed scans, of one or more files, as one profile Dataset.

:func:`open_observation` is the front door for observations. It accepts, in any mix:

* SSTRED cubes and crisPy per-scan FITS files (:mod:`radynversion.io.fits`), one line each;
  several files of one line (scan ranges, or one file per scan) are joined along ``time`` in
  time order, after checking that they have the same tunings (1 mA) and field size;
* CRISPEX La Palma cubes (:mod:`radynversion.io.lapalma`), one line each, with their
  spectfiles: found beside them, or listed among the paths (paired by the line in the names);
* netCDF (``.nc``, ``.nc4``, ``.h5``, ``.cdf``) and Zarr stores (a ``.zarr`` path or a folder)
  already in the profile schema, opened with :func:`xarray.open_dataset` /
  :func:`xarray.open_zarr`.

The lines from the different sources are then put in one Dataset:

* the non-spectral dims of the lines must agree: the same ``y``/``x`` sizes, and a ``time`` dim
  in both or in neither, otherwise a :class:`~radynversion.errors.ProfileSchemaError` names the
  two files;
* scans of the two lines are not simultaneous: each line keeps its own times as the coordinate
  ``time_<key>`` (along the shared ``time`` dim, which pairs scans by index and has no index
  coordinate of its own); with different scan counts (different cadences) each scan of the
  line with fewer is paired with the other's nearest in time (attrs ``scan_pairing``,
  ``scan_pairing_max_offset_s``), refused where the sequences do not overlap or have no times;
* attrs: ``source_files`` (all files), ``reader`` (``'sstred'``, ``'crispy'``, ``'netcdf'``,
  ``'zarr'``, or ``'<key>: <reader>; ...'`` when they differ), and every attr of the per-line
  readers (``date_obs``, ``telescope``, ``instrument``, ``pointing_*_arcsec``,
  ``pixel_scale_arcsec``, ``map_header`` ...) under its own name when the lines agree or as
  ``<name>_<key>`` when they do not. Intensity units stay on each ``I_<key>`` (``units``).

The result is validated with :func:`radynversion.schema.validate_profiles`, so it must hold
both lines (one line's cube alone is read with :func:`radynversion.io.fits.read_sstred_cube`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ConfigError, DataFileError, ProfileSchemaError
from ..lines import LINES, Line
from ..schema import validate_profiles
from .fits import WAVELENGTH_TOLERANCE_A, read_crispy_fits, read_fits_profiles, read_sstred_cube
from .lapalma import LAPALMA_SUFFIXES, is_idl_save, is_lapalma_cube, pair_spectfiles, read_lapalma_cube

__all__ = ["open_observation", "open_profile_store", "sniff_format", "has_netcdf_signature"]

_FITS_MAGIC = b"SIMPLE  ="
_NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")
_NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5", ".he5", ".cdf")
_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")


def has_netcdf_signature(path: str | Path) -> bool:
    """Whether ``path`` starts as netCDF-3 or HDF5 (netCDF-4) does, or, for HDF5, does so after a
    user block of 512 * 2^k bytes."""
    p = Path(path)
    with open(p, "rb") as f:
        if f.read(8).startswith(_NETCDF_MAGIC):
            return True
        size, offset = p.stat().st_size, 512
        while offset + 8 <= size:
            f.seek(offset)
            if f.read(8) == _NETCDF_MAGIC[-1]:
                return True
            offset *= 2
    return False


def open_profile_store(path: str | Path, chunks: Any = None) -> xr.Dataset:
    """Open one netCDF file or Zarr store in the profile schema (the one implementation behind
    :func:`open_observation`).

    Parameters
    ----------
    path : path
        A netCDF file (``.nc``, ``.h5``...) or a Zarr store (``.zarr`` or a folder).
    chunks : None, int, "auto" or mapping dim -> size (-1 = whole)
        As :func:`xarray.open_dataset`; a mapping names the dims to chunk (those the file lacks
        are ignored; a Zarr store's own chunks are kept for the others).

    Raises
    ------
    DataFileError
        Not a netCDF file (wrong signature, empty), or unreadable (truncated, corrupt), naming
        the path and what was expected.
    """
    path = Path(path)
    kind = "Zarr store" if path.is_dir() or path.suffix == ".zarr" else "netCDF file"
    if kind == "netCDF file" and path.is_file() and not has_netcdf_signature(path):
        with open(path, "rb") as f:
            head = f.read(8)
        what = "empty" if not head else f"starts with {head!r}"
        raise DataFileError(f"{path}: not a netCDF file ({what}); expected a netCDF file or Zarr store in the "
                            "profile schema, or FITS files")
    try:
        if kind == "Zarr store":
            if isinstance(chunks, dict):
                ds = xr.open_zarr(path, chunks={})
                ds = ds.chunk({d: c for d, c in chunks.items() if d in ds.dims})
            else:
                ds = xr.open_zarr(path, chunks=chunks)
        elif isinstance(chunks, dict):
            with xr.open_dataset(path) as probe:
                dims = set(probe.dims)
            ds = xr.open_dataset(path, chunks={d: c for d, c in chunks.items() if d in dims})
        else:
            ds = xr.open_dataset(path, chunks=chunks)
    except Exception as err:  # noqa: BLE001 - backends raise many types for foreign files
        text = " ".join(str(err).split()).split(". ")[0][:160]
        hint = " (truncated or corrupt?)" if kind == "netCDF file" else ""
        raise DataFileError(f"{path}: not a readable {kind}{hint} ({type(err).__name__}: {text}); expected "
                            f"a {kind} in the profile schema") from None
    ds.encoding.setdefault("source", str(path))
    return ds


def sniff_format(path: str | Path) -> str:
    """``'fits'``, ``'netcdf'``, ``'zarr'``, ``'lapalma'`` (a CRISPEX cube) or ``'idlsave'`` (its
    spectfile) for ``path``, from its first bytes (files) or its being a folder (Zarr); raises
    :class:`~radynversion.errors.DataFileError` otherwise.

    Example
    -------
    >>> sniff_format("nb_6563_2017-09-06T10:01:02_scans=0-99_im.fits")  # doctest: +SKIP
    'fits'
    """
    p = Path(path)
    if p.is_dir():
        return "zarr"
    if not p.is_file():
        raise DataFileError(f"{p}: no such file or folder; expected a FITS file, a netCDF file "
                            "or a Zarr store")
    with open(p, "rb") as f:
        head = f.read(9)
    if head.startswith(_FITS_MAGIC):
        return "fits"
    if head.startswith(_NETCDF_MAGIC) or has_netcdf_signature(p):
        return "netcdf"
    name = p.name.lower()
    if is_idl_save(p):
        return "idlsave"
    if is_lapalma_cube(p) or name.endswith(LAPALMA_SUFFIXES):
        return "lapalma"
    if name.endswith((".gz", ".bz2")) and name.endswith(_FITS_SUFFIXES):
        return "fits"
    what = "empty" if not head else f"starts with {head!r}"
    if name.endswith(_NETCDF_SUFFIXES):  # named as one: say so
        raise DataFileError(f"{p}: not a netCDF file ({what}); expected a netCDF file or Zarr store in the "
                            "profile schema, or FITS files")
    raise DataFileError(f"{p}: neither FITS, netCDF, Zarr nor a La Palma cube ({what}); expected a "
                        "FITS cube, a netCDF file, a Zarr store or a CRISPEX .icube/.fcube")


def _lines_in(ds: xr.Dataset) -> list[Line]:
    return [ln for ln in LINES if ln.var in ds.data_vars]


def _open_one(path: Path, stokes: str, chunks: Any, reader: str | None,
              spectfile: Path | None = None) -> xr.Dataset:
    fmt = sniff_format(path)
    if fmt == "lapalma":
        return read_lapalma_cube(path, spectfile=spectfile, stokes=stokes,
                                 chunks="auto" if isinstance(chunks, Mapping) else chunks)
    if fmt == "fits":
        fn = {"sstred": read_sstred_cube, "crispy": read_crispy_fits}.get(reader or "", read_fits_profiles)
        # a mapping names profile-schema dims, applied once the lines are joined
        return fn(path, stokes=stokes, chunks="auto" if isinstance(chunks, Mapping) else chunks)
    ds = open_profile_store(path, chunks)
    if not _lines_in(ds):  # says what it holds instead (an inversion store, other variables)
        validate_profiles(ds, str(path), all_lines=False)
    attrs = dict(ds.attrs)
    attrs.setdefault("source_files", [str(path)])
    if isinstance(attrs["source_files"], str):
        attrs["source_files"] = [attrs["source_files"]]
    attrs["reader"] = fmt
    ds.attrs = attrs
    return ds


def _describe(ds: xr.Dataset) -> str:
    files = ds.attrs.get("source_files", ["<dataset>"])
    files = [files] if isinstance(files, str) else list(files)
    return files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} files)"


def _join_scans(parts: list[xr.Dataset], line: Line) -> xr.Dataset:
    """Several single-line FITS reads of ``line`` joined along ``time`` in time order."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    wl0 = first[line.dim].values
    aligned = []
    for ds in parts:
        name = _describe(ds)
        if ds[line.dim].attrs.get("wavelength_medium") != first[line.dim].attrs.get("wavelength_medium"):
            raise ProfileSchemaError(f"{_describe(first)} and {name}: {line.dim} is in different "
                                     "media; expected the same tunings in every file of a line")
        wl = ds[line.dim].values
        if wl.shape != wl0.shape or np.abs(wl - wl0).max() > WAVELENGTH_TOLERANCE_A:
            raise ProfileSchemaError(
                f"{_describe(first)} and {name}: {line.dim} tunings differ ({wl0.size} vs {wl.size} "
                f"points); expected the same tunings (within {WAVELENGTH_TOLERANCE_A * 1e3:g} mA) "
                "in every file of a line")
        if (ds.sizes["y"], ds.sizes["x"]) != (first.sizes["y"], first.sizes["x"]):
            raise ProfileSchemaError(
                f"{_describe(first)} and {name}: {line.label} fields differ in size "
                f"(y={first.sizes['y']}, x={first.sizes['x']} vs y={ds.sizes['y']}, x={ds.sizes['x']}); "
                "expected the same field in every file of a line")
        if "time" not in ds.coords:
            raise ProfileSchemaError(f"{name}: no time (no time axis, DATE-AVG or DATE-OBS), so its "
                                     f"scans cannot be ordered among the other {line.label} files")
        ds = ds.assign_coords({line.dim: first[line.dim].variable})
        if "time" not in ds.dims:
            ds = ds.expand_dims("time")
        aligned.append(ds)
    joined = xr.concat(aligned, dim="time", combine_attrs="override", join="exact")
    joined = joined.isel(time=np.argsort(joined["time"].values, kind="stable"))
    attrs = dict(first.attrs)
    attrs["source_files"] = [f for ds in parts for f in ds.attrs.get("source_files", [])]
    for key in ("pointing_drift_arcsec", "wavelength_scan_deviation_mA"):
        if key in attrs:
            attrs[key] = float(max(ds.attrs.get(key, 0.0) for ds in parts))
    joined.attrs = attrs
    return joined


def _cadence_s(t: np.ndarray) -> float:
    return float(np.median(np.diff(t)) / np.timedelta64(1, "s")) if t.size > 1 else float("nan")


def _pair_scans_in_time(parts: list[tuple[xr.Dataset, list[Line]]]) -> list[tuple[xr.Dataset, list[Line]]]:
    """Two lines observed at different cadences (scan counts differ, both timed): each scan of
    the line with fewer scans is paired with the other line's scan nearest in time, which is
    refused when farther than the larger of the two cadences (the sequences do not overlap).
    Attrs ``scan_pairing`` and ``scan_pairing_max_offset_s`` say what was done."""
    timed = [(ds, lines[0]) for ds, lines in parts if len(lines) == 1 and "time" in ds.dims
             and "time" in ds.coords and np.issubdtype(ds["time"].dtype, np.datetime64)]
    if len(timed) != 2 or len(parts) != 2 or timed[0][0].sizes["time"] == timed[1][0].sizes["time"]:
        return parts
    (sparse, ls), (dense, ld) = sorted(timed, key=lambda p: p[0].sizes["time"])
    ts, td = sparse["time"].values, dense["time"].values
    pick = np.abs(ts[:, None] - td[None, :]).argmin(axis=1)
    offset = np.abs(ts - td[pick]) / np.timedelta64(1, "s")
    limit = np.nanmax([_cadence_s(ts), _cadence_s(td)])
    worst = int(np.argmax(offset))
    if not np.isfinite(limit) or offset[worst] > limit:
        raise ProfileSchemaError(
            f"{_describe(sparse)} ({ls.label}) and {_describe(dense)} ({ld.label}): {sparse.sizes['time']} vs "
            f"{dense.sizes['time']} scans, and {ls.label} scan {worst} is {offset[worst]:.1f} s from the nearest "
            f"{ld.label} scan (cadences {_cadence_s(ts):.1f} s, {_cadence_s(td):.1f} s); expected sequences that "
            "overlap in time, or the same number of scans")
    note = (f"{ls.label}'s {ts.size} scans each paired with the nearest in time of {ld.label}'s {td.size} "
            f"(its scans {pick.tolist()})")
    out = []
    for ds, lines in parts:
        if ds is dense:
            ds = ds.isel(time=pick)
        ds = ds.copy()
        ds.attrs = {**ds.attrs, "scan_pairing": note, "scan_pairing_max_offset_s": float(offset.max())}
        out.append((ds, lines))
    return out


def _check_pair(a: xr.Dataset, la: Line, b: xr.Dataset, lb: Line) -> None:
    """The non-spectral dims of two lines must agree, or a one-line error names both files."""
    da_, db = a[la.var], b[lb.var]
    dims_a = {d: da_.sizes[d] for d in da_.dims if d != la.dim}
    dims_b = {d: db.sizes[d] for d in db.dims if d != lb.dim}
    names = f"{_describe(a)} ({la.label}) and {_describe(b)} ({lb.label})"
    if set(dims_a) != set(dims_b):
        raise ProfileSchemaError(f"{names}: the lines have different dims ({sorted(dims_a)} vs "
                                 f"{sorted(dims_b)}); expected the same non-spectral dims")
    spatial = [d for d in dims_a if d != "time"]
    if any(dims_a[d] != dims_b[d] for d in spatial):
        shape_a = ", ".join(f"{d}={dims_a[d]}" for d in spatial)
        shape_b = ", ".join(f"{d}={dims_b[d]}" for d in spatial)
        raise ProfileSchemaError(f"{names}: spatial shapes differ ({shape_a} vs {shape_b}); "
                                 "expected both lines on the same pixels")
    if "time" in dims_a and dims_a["time"] != dims_b["time"]:
        raise ProfileSchemaError(f"{names}: {dims_a['time']} vs {dims_b['time']} scans; scans of the "
                                 "two lines are paired by index, so expected the same number")


def _line_dataset(ds: xr.Dataset, line: Line) -> xr.Dataset:
    """Move a FITS read's ``time`` coordinate to ``time_<key>`` (the dim stays ``time``)."""
    if "time" in ds.coords:
        t = ds["time"]
        ds = ds.drop_vars("time").assign_coords({f"time_{line.key}": (t.dims, t.values, t.attrs)})
    return ds


def _merge_attrs(parts: list[tuple[xr.Dataset, list[Line]]]) -> dict:
    attrs: dict[str, Any] = {}
    keys: list[str] = []
    for ds, _ in parts:
        keys += [k for k in ds.attrs if k not in keys]
    for key in keys:
        if key in ("source_files", "reader", "line"):
            continue
        values = [(ds.attrs[key], lines) for ds, lines in parts if key in ds.attrs]
        same = all(_equal(values[0][0], v) for v, _ in values[1:])
        if same and len(values) == len(parts):
            attrs[key] = values[0][0]
        else:
            for v, lines in values:
                for ln in lines:
                    attrs[f"{key}_{ln.key}"] = v
    files: list[str] = []
    for ds, _ in parts:
        f = ds.attrs.get("source_files", [])
        files += [f] if isinstance(f, str) else list(f)
    attrs["source_files"] = files
    readers = [(ds.attrs.get("reader", "unknown"), lines) for ds, lines in parts]
    if len({r for r, _ in readers}) == 1:
        attrs["reader"] = readers[0][0]
    else:
        attrs["reader"] = "; ".join(f"{ln.key}: {r}" for r, lines in readers for ln in lines)
    attrs["lines"] = [ln.key for _, lines in parts for ln in lines]
    return attrs


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(np.all(np.asarray(a) == np.asarray(b))) and np.shape(a) == np.shape(b)
    except Exception:
        return False


def open_observation(
    paths: str | Path | Sequence[str | Path],
    stokes: str = "I",
    chunks: Any = None,
    reader: str | None = None,
) -> xr.Dataset:
    """Open an observation (both lines) as one Dataset in the profile schema.

    Parameters
    ----------
    paths : path or sequence of paths
        SSTRED cubes / crisPy FITS files (one line each, any number per line), or netCDF files /
        Zarr stores already in the profile schema.
    stokes : {"I", "Q", "U", "V"}
        Stokes parameter taken from FITS files with a Stokes axis.
    chunks : None, int, "auto" or mapping of dim -> size
        None: FITS data are read into memory, netCDF/Zarr opened lazily without dask; otherwise
        dask arrays with these chunks (FITS files are read on compute). A mapping (``{}``
        included) is what the engine wants: the dims it names chunked so (-1 or None = whole),
        every wavelength dim whole, the others as the file has them (a Zarr store's chunks,
        else whole).
    reader : {"sstred", "crispy"}, optional
        Force the FITS reader; by default SSTRED when a file has ``-TAB`` axes, a ``WCS-TAB``
        extension or a time axis, crisPy otherwise.

    Returns
    -------
    xarray.Dataset
        ``I_halpha([time,] wl_halpha, y, x)`` and ``I_ca8542([time,] wl_ca8542, y, x)`` (dims as
        the sources have them), wavelengths [Angstrom] with ``wavelength_medium``, each line's
        times as ``time_<key>``; attrs as in the module docstring.

    Raises
    ------
    DataFileError
        A path that is missing, not FITS/netCDF/Zarr, or truncated.
    ProfileSchemaError
        A line given twice by different kinds of source, mismatched fields, dims or scan counts
        (naming both files), or a result that fails :func:`~radynversion.schema.validate_profiles`.

    Example
    -------
    >>> ds = open_observation(["nb_6563_2017-09-06T10:01:02_scans=0-99_im.fits",
    ...                        "nb_8542_2017-09-06T10:01:02_scans=0-99_im.fits"])  # doctest: +SKIP
    >>> ds.I_halpha.dims, ds.I_ca8542.dims  # doctest: +SKIP
    (('time', 'wl_halpha', 'y', 'x'), ('time', 'wl_ca8542', 'y', 'x'))
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ConfigError("open_observation: no path given; expected the files of both lines (FITS), "
                          "or a netCDF file or Zarr store in the profile schema")
    source = ", ".join(str(p) for p in paths)
    if not isinstance(chunks, Mapping):
        return _combine(paths, stokes, chunks, reader, source)
    # whole along wavelength, so that every task reads only its own region
    req = {ln.dim: -1 for ln in LINES} | {d: -1 if c is None else int(c) for d, c in chunks.items()}
    ds = _combine(paths, stokes, req, reader, source)
    return ds.chunk({d: c for d, c in req.items() if d in ds.dims})


def _combine(paths: list[Path], stokes: str, chunks: Any, reader: str | None, source: str) -> xr.Dataset:
    """:func:`open_observation`'s sources, each line from one of them, as one Dataset."""
    # one Dataset per source; FITS sources grouped by line and joined along time
    by_line: dict[str, list[xr.Dataset]] = {}
    stores: list[tuple[xr.Dataset, list[Line]]] = []
    kinds = {p: sniff_format(p) for p in paths if p.is_file()}
    spectfiles = [p for p in paths if kinds.get(p) == "idlsave"]
    paths = [p for p in paths if p not in spectfiles]
    pairs = pair_spectfiles([p for p in paths if kinds.get(p) == "lapalma"], spectfiles)
    for p in paths:
        ds = _open_one(p, stokes, chunks, reader, pairs.get(p))
        if ds.attrs.get("reader") in ("netcdf", "zarr"):
            stores.append((ds, _lines_in(ds)))
        else:
            by_line.setdefault(ds.attrs["line"], []).append(ds)
    parts: list[tuple[xr.Dataset, list[Line]]] = list(stores)
    for ln in LINES:
        if ln.key in by_line:
            parts.append((_join_scans(by_line[ln.key], ln), [ln]))

    # a line from two sources is ambiguous
    seen: dict[str, xr.Dataset] = {}
    for ds, lines in parts:
        for ln in lines:
            if ln.key in seen:
                raise ProfileSchemaError(f"{_describe(seen[ln.key])} and {_describe(ds)}: both hold "
                                         f"{ln.var}; expected each line from one source")
            seen[ln.key] = ds

    if len(parts) == 1:
        ds, lines = parts[0]
        out = _line_dataset(ds, lines[0]) if ds.attrs.get("reader") not in ("netcdf", "zarr") else ds
        out.attrs = _merge_attrs(parts)
        validate_profiles(out, source, all_lines=False)  # one line alone is read; the model decides
        return out

    parts = _pair_scans_in_time(parts)
    flat = [(ds, ln) for ds, lines in parts for ln in lines]
    for (a, la), (b, lb) in zip(flat[:-1], flat[1:], strict=True):
        _check_pair(a, la, b, lb)
    pieces = []
    for ds, lines in parts:
        piece = _line_dataset(ds, lines[0]) if ds.attrs.get("reader") not in ("netcdf", "zarr") else ds
        pieces.append(piece)
    try:
        out = xr.merge(pieces, join="exact", combine_attrs="override", compat="no_conflicts")
    except (ValueError, xr.MergeError) as err:
        text = " ".join(str(err).split())
        raise ProfileSchemaError(f"{source}: the sources cannot be combined ({text}); expected the "
                                 "same pixels (y, x) for every line") from None
    out.attrs = _merge_attrs(parts)
    validate_profiles(out, source, all_lines=False)
    return out
