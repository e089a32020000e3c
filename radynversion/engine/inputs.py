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


def _chunk_request(chunks: Mapping[str, int | None] | None) -> dict[str, int]:
    req: dict[str, int] = {ln.dim: -1 for ln in LINES}
    for d, c in (chunks or {}).items():
        req[d] = -1 if c is None else int(c)
    return req


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
    if not (path.is_dir() or path.suffix == ".zarr" or path.suffix.lower() in _NETCDF):
        raise DataFileError(f"{path}: unknown input type; expected .nc/.h5 (netCDF), .zarr or .fits")
    from ..io.observation import open_profile_store

    return open_profile_store(path, req)
