"""Posterior inversion of observed profiles, in memory (Osborne, Armstrong & Fletcher 2019).

For every pixel the profiles are preprocessed like the training set
(:func:`radynversion.model.preprocess.normalise_profiles`), ``samples`` standard-normal latent
draws ``z`` (randomised Sobol points by default, :mod:`radynversion.model.posterior`) are
pushed through the reverse network with them, and the posterior samples of
``log_ne``, ``log_T`` and ``v`` are reduced to quantiles per height on the model's device
(:func:`radynversion.model.posterior.posterior`, the one implementation that the chunked
engine, :mod:`radynversion.engine`, also runs). The round trip ``forward(posterior sample)``
(atmosphere only, padding zeroed) is compared with the observed profiles: ``misfit`` is the
RMS difference over the 60 points, in units of the joint peak, averaged over the first
``misfit_samples`` (default 64) draws of each pixel.

Reproducibility: the draws of a pixel come from a generator seeded by ``(seed, pixel index)``
(the pixel's flat C-order index among the non-spectral dims, or ``pixel_index``), and every
pass has the same padded shape, so a pixel's result does not depend on which other pixels are
inverted with it (see :mod:`radynversion.model.posterior`). Draws are made on the model's
device, so CPU and GPU results differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..atmosphere import VARIABLES
from ..errors import ProfileSchemaError
from ..lines import LINES
from ..schema import impossible_pixels, source_name
from .base import PosteriorModel
from .checkpoint import (
    DEFAULT_MODEL_PATH,
    checkpoint_bytes,
    checkpoint_metadata,
    default_model_for,
    file_sha256,
    load_model,
)
from .posterior import (
    DEFAULT_QUANTILES,
    check_samples_size,
    default_batch_size,
    pixel_seeds,
    posterior,
)
from .precision import select_precision
from .preprocess import check_profiles, input_options, normalise_profiles, sample_dims
from .result import RunSettings, result_dataset, result_schema
from .settings import InversionSettings, settings_from
from .trust import trust_scores

__all__ = ["DEFAULT_QUANTILES", "pixel_seeds", "invert", "resolve_model", "network_input"]


def resolve_model(model: PosteriorModel | str | Path | None) -> tuple[PosteriorModel, str, str, dict]:
    """The network of ``model`` with its name, identity and metadata.

    Returns
    -------
    net : PosteriorModel
    name : str
        The checkpoint's absolute path (the packaged one for None), or the path a model in
        memory was loaded from, else ``"<in memory>"``.
    sha256 : str
        sha256 of the checkpoint file's bytes, or of
        :func:`radynversion.model.checkpoint.checkpoint_bytes` for a model in memory (as the
        engine's :func:`radynversion.engine.workers.model_spec` computes it).
    metadata : dict
        The checkpoint's metadata, for a model in memory as if it had been saved
        (:func:`radynversion.model.checkpoint.checkpoint_metadata`), as the engine's workers see it.
    """
    if isinstance(model, PosteriorModel):
        sha = hashlib.sha256(checkpoint_bytes(model)).hexdigest()
        name = str(model.metadata.get("path", "<in memory>"))
        return model, name, sha, {**checkpoint_metadata(model), "path": name}
    path = Path(model) if model is not None else DEFAULT_MODEL_PATH
    net = load_model(path)  # the CheckpointError of a missing or bad file
    return net, str(path.resolve()), file_sha256(path), dict(net.metadata)


def network_input(profiles: xr.Dataset, net: PosteriorModel, degrade: bool | None = None,
                  source: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Profiles as ``net`` sees them: ``y`` ``(N, 60)`` and the joint peak ``(N,)``.

    :func:`radynversion.model.preprocess.normalise_profiles` in the model's intensity unit,
    instrument and input options; the rows of pixels that no atmosphere emits
    (:func:`radynversion.schema.impossible_pixels`: a negative intensity, or none positive in
    a line) are NaN, so they are masked, never inverted. The in-memory :func:`invert` and every
    chunk of the engine prepare their input here.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN pixels are masked, not warned about
        y, peak = normalise_profiles(profiles, unit=net.config.intensity_unit, fwhm_A=net.instrument_fwhm_A(),
                                     degrade=degrade, source=source, **input_options(net))
    y[impossible_pixels(profiles)] = np.nan
    return y, peak


def invert(
    profiles: xr.Dataset,
    model: PosteriorModel | str | Path | None = None,
    settings: InversionSettings | Mapping[str, Any] | None = None,
    *,
    pixel_index: np.ndarray | None = None,
    **overrides: Any,
) -> xr.Dataset:
    """Invert profiles into posterior quantiles of the atmosphere.

    Parameters
    ----------
    profiles : xarray.Dataset
        In the profile schema: ``I_halpha(*dims, wl_halpha)``, ``I_ca8542(*dims, wl_ca8542)``,
        any supported units, air or vacuum, any sampling covering the model windows with at
        least 7 tunings in each (:func:`radynversion.model.preprocess.check_window`).
        Pixels with NaNs give NaN outputs; data with no invertible pixel are refused.
    model : PosteriorModel or path, optional
        The network, or a checkpoint to load; default the packaged model (or its variant for
        the data: :func:`radynversion.model.checkpoint.default_model_for`).
    settings : InversionSettings or mapping, optional
        How to invert (:class:`radynversion.model.settings.InversionSettings`: draws and their
        sampling, quantiles, seed, misfit, precision, batch size, instrument convolution,
        samples); default its defaults: 640 randomised Sobol draws per pixel, quantiles 5, 16,
        50, 84 and 95 %, misfit over 64 draws, ``precision="auto"`` (bf16 where the device
        multiplies it natively and its error on the first 32 valid pixels is at most a quarter
        of the quantiles' Monte Carlo error, else fp32).
    pixel_index : ndarray of int, shape ``dims``, optional
        Global indices of the pixels (e.g. of a chunk within a scan), for the seeds; default
        their flat C-order positions in ``profiles``.
    **overrides
        Fields of :class:`InversionSettings` that replace ``settings``' (``samples=256``,
        ``sampling="plain"``, ``seed=1``, ``return_samples=True``...).

    Returns
    -------
    xarray.Dataset
        The result schema of :mod:`radynversion.model.result` (the same variables and attrs
        as the engine's lazy result and Zarr store): ``log_ne`` [dex cm^-3], ``log_T`` [dex K],
        ``v`` [km/s, positive = downflow] over ``(*dims, quantile, height)`` (height in Mm);
        ``misfit(*dims)`` (in units of the joint peak), ``peak(*dims)`` (joint peak, in the
        model's intensity unit), ``mask(*dims)`` (True where nothing was inverted),
        ``ood_score(*dims)`` and ``trusted(*dims)`` (how unlike the training data the pixel is,
        :mod:`radynversion.model.trust`); with ``return_samples``, ``log_ne_samples``, ``log_T_samples``, ``v_samples`` over
        ``(*dims, draw, height)``; the input's coordinates on ``dims``; the input's attrs and
        the run's provenance (the settings used, the precision chosen).

    Raises
    ------
    ConfigError
        A setting is unknown or refused.
    SelectionTooLargeError
        ``return_samples`` above ``max_samples_bytes``.

    Example
    -------
    >>> from radynversion.model import invert
    >>> result = invert(scan, model="runs/demo/model.pt", samples=256)  # doctest: +SKIP
    >>> result.log_T.sel(quantile=0.5)  # doctest: +SKIP
    """
    st = settings_from(settings, overrides)
    net, model_name, model_sha, model_meta = resolve_model(default_model_for(model, profiles))
    samples = st.draws
    src = source_name(profiles) if isinstance(profiles, xr.Dataset) else "invert"
    opts = input_options(net)
    check_profiles(profiles, src, partial=bool(opts["partial"]), read_values=True)
    dims = sample_dims(profiles)
    first = next(ln for ln in LINES if ln.var in profiles.data_vars)
    shape = tuple(profiles[first.var].sizes[d] for d in dims)
    n_pix = int(np.prod(shape, dtype=np.int64))
    if st.return_samples:
        check_samples_size(n_pix, samples, net.n_x, st.max_samples_bytes)
    y, peak = network_input(profiles, net, st.degrade, src)
    usable = np.isfinite(y).any(axis=1) if opts["partial"] else np.isfinite(y).all(axis=1)
    if n_pix and not usable.any():
        names = " or ".join(ln.var for ln in LINES)
        raise ProfileSchemaError(f"{src}: no pixel can be inverted: each has NaN or inf in {names} on the "
                                 "model windows, or no positive intensity; expected finite, positive "
                                 "spectral radiances (Stokes I)")
    if pixel_index is None:
        ids = np.arange(n_pix)
    else:
        ids = np.asarray(pixel_index).reshape(-1)
        if ids.size != n_pix:
            raise ProfileSchemaError(f"invert: pixel_index has {ids.size} entries; expected one per "
                                     f"pixel ({n_pix}, dims {dims})")
    if st.precision == "auto":
        probe = y[usable][:32]
        st = st.with_(precision=select_precision(net, probe if probe.size else None, samples=samples,
                                                 compile=st.compile, sampling=st.sampling))
    st = st.with_(batch_size=int(st.batch_size or default_batch_size(net.device)))
    res = posterior(net, y, ids, **st.posterior_kwargs())
    run = RunSettings.from_settings(st, device=net.device.type)
    schema = result_schema(profiles, net, model_name, model_sha, run, dims, model_meta)
    n_q, n_h = len(st.quantiles), net.height_Mm.numel()
    arrays: dict[str, np.ndarray] = {}
    for k, name in enumerate(VARIABLES):
        arrays[name] = res.quantiles[:, :, k, :].reshape(*shape, n_q, n_h)
        if res.samples is not None:
            arrays[f"{name}_samples"] = res.samples[:, :, k, :].reshape(*shape, samples, n_h)
    arrays["misfit"] = res.misfit.reshape(shape)
    arrays["peak"] = np.asarray(peak).reshape(shape)
    arrays["mask"] = ~res.valid.reshape(shape)
    ood, trusted = trust_scores(net.trust, y, res.misfit if st.misfit else None)
    arrays["ood_score"] = ood.reshape(shape)
    arrays["trusted"] = (trusted & res.valid).reshape(shape)
    return result_dataset(arrays, schema)
