"""Data sets shipped with the package (no network: everything is in ``radynversion/data``)."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import StoreError

__all__ = ["training_set", "training_set_path", "dataset_hash"]


def training_set_path() -> Path:
    """Path of the default training set shipped in the package (a Zarr store)."""
    return Path(str(resources.files("radynversion") / "data" / "training_set.zarr"))


def training_set(path: str | Path | None = None, converged_only: bool = True, load: bool = True) -> xr.Dataset:
    """The default (or any) training set as an xarray Dataset in the profile schema.

    Parameters
    ----------
    path : path, optional
        A store written by ``radynversion synth`` or ``import-radyn``; default the shipped set.
    converged_only : bool
        Keep only samples whose NLTE solution converged (``status == 0``); samples of shards
        not yet written are always dropped.
    load : bool
        Load into memory (the shipped set is a few tens of MB).

    Returns
    -------
    xr.Dataset
        ``I_halpha (sample, wl_halpha)``, ``I_ca8542 (sample, wl_ca8542)`` [W m^-2 Hz^-1 sr^-1],
        ``log_ne, log_T, v (sample, height)``, ``status``, ``kind``, ``prior_params``.
    """
    path = training_set_path() if path is None else Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no training set here")
    try:
        ds = xr.open_zarr(path, consolidated=False)
    except Exception as err:  # noqa: BLE001
        raise StoreError(f"{path}: not a readable Zarr training set ({type(err).__name__}: {err})") from None
    if "status" not in ds:
        raise StoreError(f"{path}: not a training set (no 'status' variable)")
    if "shard_done" in ds:
        done = np.asarray(ds["shard_done"].values) == 1
        size = int(ds.attrs.get("shard_size", ds.sizes["sample"]))
        keep = np.repeat(done, size)[: ds.sizes["sample"]]
        ds = ds.drop_vars("shard_done").isel(sample=np.flatnonzero(keep))
    if converged_only:
        ds = ds.isel(sample=np.flatnonzero(np.asarray(ds["status"].values) == 0))
    return ds.load() if load else ds


def dataset_hash(ds: xr.Dataset, variables: tuple[str, ...] = ("I_halpha", "I_ca8542", "log_ne", "log_T", "v")) -> str:
    """SHA-256 over the values (as float32) and sample labels of ``variables``: identifies the
    exact data a model saw."""
    h = hashlib.sha256()
    if "sample" in ds.coords:
        h.update(np.ascontiguousarray(ds["sample"].values).tobytes())
    for name in variables:
        h.update(name.encode())
        h.update(np.ascontiguousarray(np.asarray(ds[name].values, dtype=np.float32)).tobytes())
    return h.hexdigest()
