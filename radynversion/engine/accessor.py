"""``ds.radyn``: the engine bound to any Dataset in the profile schema.

The accessor only stores the Dataset and delegates to plain functions
(:func:`radynversion.engine.invert`, :func:`radynversion.engine.invert_to_zarr`), which hold
the logic and are tested on their own. It is registered when :mod:`radynversion` is imported;
the engine (and torch) are imported on first use, not at registration.

Example
-------
>>> import radynversion  # doctest: +SKIP
>>> out = scan.radyn.invert(model="model.pt", samples=512)  # doctest: +SKIP
>>> out.log_T.sel(quantile=0.5).plot()  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import xarray as xr

__all__ = ["RadynAccessor"]



@xr.register_dataset_accessor("radyn")
class RadynAccessor:
    """Radynversion methods on a profile Dataset (``ds.radyn``)."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def _framed(self, velocity_frame: str | float, quiet: Any) -> xr.Dataset:
        from ..velocity_frame import to_velocity_frame

        return to_velocity_frame(self._ds, velocity_frame, quiet)

    def invert(
        self,
        model: Any = None,
        settings: Any = None,
        *,
        velocity_frame: str | float = "rest",
        quiet: Any = None,
        **kwargs: Any,
    ) -> xr.Dataset:
        """Lazy posterior quantiles of every pixel: :func:`radynversion.engine.invert`.

        ``settings`` and the keyword arguments (``samples=``, ``sampling=``, ``chunks=``,
        ``client=``...) as there (:class:`radynversion.model.settings.InversionSettings`).
        ``velocity_frame`` ("rest", "quiet" or an offset in km/s) and ``quiet`` (a mask of quiet
        pixels for "quiet") choose the zero of velocity
        (:func:`radynversion.velocity_frame.to_velocity_frame`); the result's attrs record it.
        """
        from .core import invert

        return invert(self._framed(velocity_frame, quiet), model, settings, **kwargs)

    def to_zarr(
        self,
        out: str | Path,
        model: Any = None,
        settings: Any = None,
        *,
        velocity_frame: str | float = "rest",
        quiet: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Invert into a resumable Zarr store: :func:`radynversion.engine.invert_to_zarr`
        (``velocity_frame`` and ``quiet`` as for :meth:`invert`)."""
        from .store import invert_to_zarr

        return invert_to_zarr(self._framed(velocity_frame, quiet), out, model, settings, **kwargs)
