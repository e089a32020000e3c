"""The result schema: every inversion result is built here, once.

``radynversion.invert`` (in memory), ``ds.radyn.invert`` (lazy, :mod:`radynversion.engine`)
and the Zarr store of ``radynversion invert`` hold the same variables, dims, dtypes,
coordinates and attrs, because each makes its Dataset with :func:`result_dataset` from a
:class:`ResultSchema` made by :func:`result_schema` (only the store adds its bookkeeping, out
of the user's view).

Variables, over the input's non-spectral dims ``dims``:

========================  ============================  =========  ==========================
name                      dims                          dtype      units
========================  ============================  =========  ==========================
``log_ne``                ``(*dims, quantile, height)``  float32    ``dex(cm-3)``
``log_T``                 ``(*dims, quantile, height)``  float32    ``dex(K)``
``v``                     ``(*dims, quantile, height)``  float32    ``km / s`` (+ = downflow)
``<name>_samples``        ``(*dims, draw, height)``      float32    as ``<name>`` (on request)
``misfit``                ``dims``                       float32    ``1`` (of the joint peak)
``peak``                  ``dims``                       float32    the model's intensity unit
``mask``                  ``dims``                       bool       ``1``
========================  ============================  =========  ==========================

Coordinates: ``quantile``, ``height`` [Mm] and the input's coordinates on ``dims``. Attrs: the
input's attrs (made JSON-safe) and the run's provenance (:func:`result_attrs`), every value a
str, a number or a list of them, so that they come back from Zarr or netCDF unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from .._version import __version__
from ..atmosphere import VARIABLE_ATTRS, VARIABLES
from ..lines import LINES
from .base import PosteriorModel
from .coverage import PER_LINE

__all__ = ["RunSettings", "VariableSpec", "ResultSchema", "result_schema", "result_attrs", "result_dataset",
           "json_safe"]


@dataclass(frozen=True)
class RunSettings:
    """How an inversion ran: what its result's attrs record.

    Attributes
    ----------
    samples : int
        Posterior draws per pixel.
    quantiles : tuple of float
        The reported quantiles, in [0, 1].
    seed : int
        Seed of the draws.
    misfit_samples : int
        Draws per pixel in the round-trip misfit; 0 when no misfit was computed.
    precision : str
        The arithmetic used (``"fp32"``, ``"tf32"``, ``"bf16"``), never ``"auto"``.
    compiled : bool
        Passes run through ``torch.compile``.
    batch_size : int
        Rows (pixels x samples) per pass.
    device : str
        ``"cpu"`` or ``"cuda"``.
    degrade : bool or None
        Instrument convolution forced (True), forbidden (False) or automatic (None).
    return_samples : bool
        The posterior samples are returned too.
    sampling : str
        How the latent draws were made (``"sobol"`` or ``"plain"``,
        :mod:`radynversion.model.posterior`).
    """

    samples: int
    quantiles: tuple[float, ...]
    seed: int
    misfit_samples: int
    precision: str
    compiled: bool
    batch_size: int
    device: str
    degrade: bool | None = None
    return_samples: bool = False
    sampling: str = "plain"

    @classmethod
    def from_settings(cls, settings: Any, device: str, compiled: bool | None = None) -> RunSettings:
        """What a run with :class:`radynversion.model.settings.InversionSettings` ``settings``
        (precision and batch size resolved) records, on ``device``."""
        return cls(samples=int(settings.draws), quantiles=tuple(settings.quantiles), seed=int(settings.seed),
                   misfit_samples=int(settings.round_trip_draws), precision=str(settings.precision),
                   compiled=bool(settings.compile if compiled is None else compiled),
                   batch_size=int(settings.batch_size), device=str(device), degrade=settings.degrade,
                   return_samples=bool(settings.return_samples), sampling=str(settings.sampling))


@dataclass(frozen=True)
class VariableSpec:
    """One result variable: its dims, the sizes of its dims after the input's, dtype, attrs."""

    dims: tuple[str, ...]
    extra: tuple[int, ...]
    dtype: np.dtype
    attrs: dict[str, Any]


@dataclass(frozen=True)
class ResultSchema:
    """The variables, coordinates and attrs of one inversion's result (:func:`result_schema`).

    Attributes
    ----------
    dims : tuple of str
        The input's non-spectral dims.
    shape : tuple of int
        Their sizes.
    variables : dict
        Name -> :class:`VariableSpec`, in the order of the Dataset.
    coords : dict
        ``quantile``, ``height`` and the input's coordinates on ``dims``.
    attrs : dict
        The input's attrs and the run's provenance.
    """

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    variables: dict[str, VariableSpec]
    coords: dict[str, Any]
    attrs: dict[str, Any]


def json_safe(value: Any) -> Any:
    """``value`` as an attr that any store keeps: numbers, strings and lists of them as they
    are (numpy scalars and arrays converted), mappings as JSON text, anything else as text."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Mapping):
        return json.dumps({str(k): json_safe(v) for k, v in value.items()}, sort_keys=True)
    return str(value)


def _variables(dims: tuple[str, ...], settings: RunSettings, n_heights: int,
               intensity_unit: str) -> dict[str, VariableSpec]:
    f32 = np.dtype(np.float32)
    out = {}
    for name in VARIABLES:
        out[name] = VariableSpec((*dims, "quantile", "height"), (len(settings.quantiles), n_heights), f32,
                                 dict(VARIABLE_ATTRS[name]))
    if settings.return_samples:
        for name in VARIABLES:
            out[f"{name}_samples"] = VariableSpec(
                (*dims, "draw", "height"), (settings.samples, n_heights), f32,
                {**VARIABLE_ATTRS[name], "long_name": f"posterior samples of {name}"})
    out["misfit"] = VariableSpec(dims, (), f32, {
        "long_name": "RMS of forward(posterior sample) minus observed profiles, in units of the joint "
                     "peak, mean over the first misfit_samples draws (attrs)",
        "units": "1"})
    out["peak"] = VariableSpec(dims, (), f32, {
        "long_name": "joint peak of the two lines on the model windows", "units": intensity_unit})
    out["mask"] = VariableSpec(dims, (), np.dtype(bool), {
        "long_name": "true where nothing was inverted: the profiles were not finite, or negative, or "
                     "nowhere positive in a line",
        "units": "1"})
    out["ood_score"] = VariableSpec(dims, (), f32, {
        "long_name": "how unlike the training distribution the pixel is: the larger of its profiles' "
                     "improbability and its round-trip misfit, each over its in-distribution threshold "
                     "(<= 1 for trust_level of in-distribution pixels; NaN where the model cannot judge)",
        "units": "1"})
    out["trusted"] = VariableSpec(dims, (), np.dtype(bool), {
        "long_name": "ood_score <= 1: the profiles are like the training distribution's, so the posterior "
                     "may be believed; false pixels keep their posterior but it may be narrow and wrong",
        "units": "1"})
    return out


def _coords(profiles: xr.Dataset, dims: tuple[str, ...], quantiles: tuple[float, ...],
            height_Mm: np.ndarray) -> dict[str, Any]:
    coords: dict[str, Any] = {
        "quantile": ("quantile", np.asarray(quantiles, dtype=float), {"long_name": "posterior quantile"}),
        "height": ("height", np.asarray(height_Mm), dict(VARIABLE_ATTRS["height"])),
    }
    for name, c in profiles.coords.items():
        if name not in coords and c.dims and set(c.dims) <= set(dims):
            coords[name] = c
    return coords


def result_attrs(profiles: xr.Dataset, net: PosteriorModel, model: str, model_sha256: str,
                 settings: RunSettings, dims: tuple[str, ...],
                 metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The input's attrs (JSON-safe) and the run's provenance.

    Parameters
    ----------
    profiles : xarray.Dataset
        The inverted profiles (profile schema).
    net : PosteriorModel
        The network (its metadata, instrument FWHM).
    model : str
        The checkpoint's absolute path, or ``"<in memory>"``.
    model_sha256 : str
        sha256 of the checkpoint's bytes (of :func:`radynversion.model.checkpoint.checkpoint_bytes`
        for a model in memory).
    settings : RunSettings
    dims : tuple of str
        The input's non-spectral dims.
    metadata : mapping, optional
        The checkpoint's metadata (default ``net.metadata``; for a model in memory,
        :func:`radynversion.model.checkpoint.checkpoint_metadata`).
    """
    meta = net.metadata if metadata is None else metadata
    present = [ln for ln in LINES if ln.var in profiles.data_vars]
    attrs = {str(k): json_safe(v) for k, v in profiles.attrs.items()}
    attrs.update({
        "radynversion_version": __version__,
        "model": str(model),
        "model_sha256": str(model_sha256),
        "model_package_version": str(meta.get("package_version", "")),
        "training_set_sha256": str(meta.get("training_set_sha256", "")),
        "model_config": str(meta.get("model_config", "")),
        "instrument_fwhm_A": json.dumps(net.instrument_fwhm_A(), sort_keys=True),
        "samples": int(settings.samples),
        "sampling": str(settings.sampling),
        "quantiles": [float(q) for q in settings.quantiles],
        "seed": int(settings.seed),
        "misfit_samples": int(settings.misfit_samples),
        "precision": str(settings.precision),
        "compiled": str(bool(settings.compiled)).lower(),
        "batch_size": int(settings.batch_size),
        "device": str(settings.device),
        "degrade": "auto" if settings.degrade is None else str(bool(settings.degrade)).lower(),
        "input_units": json.dumps({ln.var: str(profiles[ln.var].attrs.get("units", "")) for ln in present},
                                  sort_keys=True),
        "input_wavelength_medium": json.dumps(
            {ln.dim: str(profiles[ln.dim].attrs.get("wavelength_medium", "")) for ln in present
             if ln.dim in profiles.coords}, sort_keys=True),
        "input_dims": list(dims),
        "trust_level": float(net.trust.level) if net.trust is not None else float("nan"),
        "trust_reference": (net.trust.description if net.trust is not None else
                            "none: this model carries no trust reference, so ood_score is NaN and no pixel is "
                            "trusted (radynversion.model.trust)"),
    })
    attrs.setdefault("velocity_frame", "rest")  # radynversion.velocity_frame: set on the input when shifted
    return attrs


def _peak_unit(profiles: xr.Dataset, net: PosteriorModel) -> str:
    """The unit of ``peak``: the model's, or the data's own where a per-line model took
    uncalibrated (DN or dimensionless) intensities as they are."""
    import astropy.units as u

    from ..schema import intensity_unit

    if getattr(net.config, "normalisation", "joint") in PER_LINE:
        for un in (u.DN, u.dimensionless_unscaled):  # the data's own unit string ("DN/s", "I/Ic")
            for ln in LINES:
                if ln.var in profiles.data_vars and intensity_unit(profiles, ln) == un:
                    given = str(profiles[ln.var].attrs.get("units", "")).strip()
                    return given or ("DN" if un == u.DN else "1")
    return str(net.config.intensity_unit)


def result_schema(profiles: xr.Dataset, net: PosteriorModel, model: str, model_sha256: str,
                  settings: RunSettings, dims: tuple[str, ...],
                  metadata: Mapping[str, Any] | None = None) -> ResultSchema:
    """The schema of the result of inverting ``profiles`` with ``net`` under ``settings``.

    Parameters
    ----------
    profiles : xarray.Dataset
        The inverted profiles (profile schema).
    net : PosteriorModel
        The network.
    model, model_sha256 : str
        The checkpoint's path (or ``"<in memory>"``) and the sha256 of its bytes.
    settings : RunSettings
    dims : tuple of str
        The input's non-spectral dims, in the result's order.
    metadata : mapping, optional
        The checkpoint's metadata (default ``net.metadata``; :func:`result_attrs`).

    Example
    -------
    >>> schema = result_schema(scan, net, "<in memory>", sha, settings, ("y", "x"))  # doctest: +SKIP
    >>> sorted(schema.variables)  # doctest: +SKIP
    ['log_T', 'log_ne', 'mask', 'misfit', 'peak', 'v']
    """
    first = next((ln for ln in LINES if ln.var in profiles.data_vars), LINES[0])
    shape = tuple(int(profiles[first.var].sizes[d]) for d in dims)
    height = net.height_Mm.detach().cpu().numpy()
    return ResultSchema(
        dims=tuple(dims), shape=shape,
        variables=_variables(tuple(dims), settings, int(height.size), _peak_unit(profiles, net)),
        coords=_coords(profiles, tuple(dims), tuple(settings.quantiles), height),
        attrs=result_attrs(profiles, net, model, model_sha256, settings, tuple(dims), metadata))


def result_dataset(arrays: Mapping[str, Any], schema: ResultSchema) -> xr.Dataset:
    """The result Dataset: ``arrays`` (numpy or Dask, one per variable of ``schema``, shaped
    ``(*schema.shape, *spec.extra)``) with the schema's dims, dtypes, attrs and coordinates.

    Raises
    ------
    ValueError
        An array is missing, extra, or of the wrong shape.
    """
    if set(arrays) != set(schema.variables):
        raise ValueError(f"result_dataset: variables {sorted(arrays)}; expected {sorted(schema.variables)}")
    data_vars = {}
    for name, spec in schema.variables.items():
        arr = arrays[name]
        want = (*schema.shape, *spec.extra)
        if tuple(arr.shape) != want:
            raise ValueError(f"result_dataset: {name} has shape {tuple(arr.shape)}; expected {want}")
        if arr.dtype != spec.dtype:
            arr = arr.astype(spec.dtype)  # numpy or Dask, lazily
        data_vars[name] = (spec.dims, arr, dict(spec.attrs))
    return xr.Dataset(data_vars, coords=schema.coords, attrs=dict(schema.attrs))
