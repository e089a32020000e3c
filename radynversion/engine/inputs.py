"""Open a scan for the engine, lazily: netCDF or Zarr in the profile schema, or FITS.

FITS files (and several files of one observation) go through
:func:`radynversion.io.observation.open_observation`; a single netCDF (``.nc``, ``.nc4``, ``.h5``, ``.hdf5``, ``.cdf``) and Zarr stores
(``.zarr`` or a directory) are opened with xarray, chunked along the non-spectral dims as
requested and whole along each wavelength dim, so every task reads only its own region.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import xarray as xr

from ..errors import DataFileError
from ..lines import LINES

__all__ = ["open_input"]

_NETCDF = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5", ".he5", ".cdf")
_FITS = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
#: first bytes of netCDF-3 (classic, 64-bit offset, 64-bit data) and netCDF-4/HDF5 files
_NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")


def _chunk_request(chunks: Mapping[str, int | None] | None) -> dict[str, int]:
    req: dict[str, int] = {ln.dim: -1 for ln in LINES}
    for d, c in (chunks or {}).items():
        req[d] = -1 if c is None else int(c)
    return req


def _is_netcdf(path: Path, head: bytes) -> bool:
    """netCDF-3 or HDF5 signature at the start (or, for HDF5, after a user block of 512 * 2^k bytes)."""
    if head.startswith(_NETCDF_MAGIC):
        return True
    size, offset = path.stat().st_size, 512
    with open(path, "rb") as f:
        while offset + 8 <= size:
            f.seek(offset)
            if f.read(8) == _NETCDF_MAGIC[-1]:
                return True
            offset *= 2
    return False


def open_input(paths: str | Path | Sequence[str | Path],
               chunks: Mapping[str, int | None] | None = None) -> xr.Dataset:
    """Open scan file(s) as a lazy (Dask-backed) Dataset in the profile schema.

    Parameters
    ----------
    paths : path or sequence of paths
        One netCDF file or Zarr store, or FITS file(s) of one observation.
    chunks : mapping dim -> int or -1, optional
        Chunks of the non-spectral dims (default: the file's own chunking, or whole dims).

    Raises
    ------
    DataFileError
        A path is missing or is not a readable netCDF/Zarr/FITS file.
    """
    items = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not items:
        raise DataFileError("invert: no input given; expected a netCDF file, a Zarr store or FITS files")
    for p in items:
        if not p.exists():
            raise DataFileError(f"{p}: no such file or directory; expected a netCDF file, a Zarr store "
                                "or FITS files")
    req = _chunk_request(chunks)
    names = [p.name.lower() for p in items]
    if any(n.endswith(_FITS) for n in names) or len(items) > 1:
        try:
            obs = importlib.import_module("radynversion.io.observation")
        except ImportError:
            raise DataFileError(f"{items[0]}: FITS or several inputs need radynversion.io.observation, "
                                "which this installation lacks; give one netCDF file or Zarr store") from None
        ds = obs.open_observation(items, chunks="auto")
        return ds.chunk({d: c for d, c in req.items() if d in ds.dims})
    path = items[0]
    kind = "Zarr store" if path.is_dir() or path.suffix == ".zarr" else "netCDF file"
    if path.is_file() and path.suffix.lower() in _NETCDF:
        with open(path, "rb") as f:
            head = f.read(8)
        if not _is_netcdf(path, head):
            what = "empty" if not head else f"starts with {head!r}"
            raise DataFileError(f"{path}: not a netCDF file ({what}); expected a netCDF file or Zarr "
                                "store in the profile schema, or FITS files")
    try:
        if kind == "Zarr store":
            ds = xr.open_zarr(path, chunks={})
            ds = ds.chunk({d: c for d, c in req.items() if d in ds.dims})
        elif path.suffix.lower() in _NETCDF:
            with xr.open_dataset(path) as probe:
                dims = set(probe.dims)
            ds = xr.open_dataset(path, chunks={d: c for d, c in req.items() if d in dims})
        else:
            raise DataFileError(f"{path}: unknown input type; expected .nc/.h5 (netCDF), .zarr or "
                                ".fits")
    except DataFileError:
        raise
    except Exception as err:  # noqa: BLE001 - backends raise many types for foreign files
        text = " ".join(str(err).split()).split(". ")[0][:160]
        hint = " (truncated or corrupt?)" if kind == "netCDF file" else ""
        raise DataFileError(f"{path}: not a readable {kind}{hint} ({type(err).__name__}: {text}); expected "
                            f"a {kind} in the profile schema") from None
    ds.encoding.setdefault("source", str(path))
    return ds
