"""Posterior inversion of observed profiles, in memory (Osborne, Armstrong & Fletcher 2019).

For every pixel the profiles are preprocessed like the training set
(:func:`radynversion.model.preprocess.normalise_profiles`), ``samples`` latent draws
``z ~ N(0, 1)`` are pushed through the reverse network with them, and the posterior samples of
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

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .. import __version__
from ..atmosphere import VARIABLE_ATTRS, VARIABLES
from ..errors import ConfigError, ProfileSchemaError
from ..lines import LINES
from ..schema import source_name, validate_profiles
from .base import PosteriorModel
from .checkpoint import load_model
from .posterior import (
    DEFAULT_MISFIT_SAMPLES,
    DEFAULT_QUANTILES,
    MAX_SAMPLES_BYTES,
    check_samples_size,
    misfit_draws,
    pixel_seeds,
    posterior,
    select_precision,
)
from .preprocess import input_options, normalise_profiles, observed_program, sample_dims

__all__ = ["DEFAULT_QUANTILES", "pixel_seeds", "invert"]


def _resolve_model(model: PosteriorModel | str | Path | None) -> PosteriorModel:
    if isinstance(model, PosteriorModel):
        return model
    return load_model(model)


def invert(
    profiles: xr.Dataset,
    model: PosteriorModel | str | Path | None = None,
    samples: int = 1024,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    seed: int = 0,
    batch_size: int | None = None,
    pixel_index: np.ndarray | None = None,
    degrade: bool | None = None,
    misfit: bool = True,
    precision: str = "auto",
    return_samples: bool = False,
    max_samples_bytes: int = MAX_SAMPLES_BYTES,
    misfit_samples: int | None = DEFAULT_MISFIT_SAMPLES,
    compile: bool = False,
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
        The network, or a checkpoint to load; default the packaged model.
    samples : int
        Posterior draws per pixel.
    quantiles : sequence of float
        Quantiles in [0, 1] to report.
    seed : int
        Seed of the draws (combined with each pixel's index).
    batch_size : int, optional
        Rows (pixels x samples) per pass (pixels per pass = ``batch_size // samples``, at
        least 1); default 2048 on CPU, 65536 on CUDA.
    pixel_index : ndarray of int, shape ``dims``, optional
        Global indices of the pixels (e.g. of a chunk within a scan), for the seeds; default
        their flat C-order positions in ``profiles``.
    degrade : bool, optional
        Force or forbid the instrument convolution; default only for finely sampled data.
    misfit : bool
        Compute the round-trip misfit (one forward pass per draw that takes part).
    misfit_samples : int or None
        Draws per pixel in the round trip (default 64; None = all ``samples``): ``misfit`` is
        the mean over the first ``min(samples, misfit_samples)`` draws of each pixel.
    precision : {"auto", "fp32", "tf32", "bf16"}
        Arithmetic of the passes (:mod:`radynversion.model.posterior`); ``"auto"`` runs bf16
        where the device multiplies it natively (CUDA, CPUs with AMX or AVX-512 BF16) and its error on the
        first 32 valid pixels is at most a quarter of the quantiles' Monte Carlo error
        (:func:`radynversion.model.posterior.select_precision`), else fp32. The one used is
        in the result's ``precision`` attribute.
    return_samples : bool
        Also return the posterior samples as ``log_ne_samples``, ``log_T_samples``,
        ``v_samples`` over ``(*dims, draw, height)``; refused
        (:class:`radynversion.errors.SelectionTooLargeError`) above ``max_samples_bytes``.
    max_samples_bytes : int
        Limit of ``return_samples`` (default 1 GiB).
    compile : bool
        Run the passes through ``torch.compile`` (:mod:`radynversion.model.compiled`): a
        one-off compilation, then faster passes; in the result's ``compiled`` attribute.

    Returns
    -------
    xarray.Dataset
        ``log_ne`` [dex cm^-3], ``log_T`` [dex K], ``v`` [km/s, positive = downflow] over
        ``(*dims, quantile, height)`` (height in Mm); ``misfit(*dims)`` (fraction of the joint
        peak) and ``peak(*dims)`` (joint peak, in the model's intensity unit); the input's
        coordinates on ``dims``.

    Example
    -------
    >>> from radynversion.model import invert
    >>> result = invert(scan, model="runs/demo/model.pt", samples=256)  # doctest: +SKIP
    >>> result.log_T.sel(quantile=0.5)  # doctest: +SKIP
    """
    net = _resolve_model(model)
    if samples < 1:
        raise ConfigError(f"invert: samples = {samples}; expected >= 1")
    q_list = [float(q) for q in quantiles]
    if not q_list or any(not 0.0 <= q <= 1.0 for q in q_list):
        raise ConfigError(f"invert: quantiles {q_list}; expected values in [0, 1]")
    src = source_name(profiles) if isinstance(profiles, xr.Dataset) else "invert"
    opts = input_options(net)
    if not opts["partial"]:
        validate_profiles(profiles, src)
    observed_program(profiles, src, partial=opts["partial"])  # windows, tunings, cores
    dims = sample_dims(profiles)
    first = next(ln for ln in LINES if ln.var in profiles.data_vars)
    shape = tuple(profiles[first.var].sizes[d] for d in dims)
    n_pix = int(np.prod(shape, dtype=np.int64))
    if return_samples:
        check_samples_size(n_pix, samples, net.n_x, max_samples_bytes)
    y, peak = normalise_profiles(profiles, unit=net.config.intensity_unit, fwhm_A=net.instrument_fwhm_A(),
                                 degrade=degrade, source=src, **opts)
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
    if precision == "auto":
        probe = y[usable][:32]
        precision = select_precision(net, probe if probe.size else None, samples=samples, compile=compile)
    res = posterior(net, y, ids, samples=samples, quantiles=q_list, seed=seed,
                    batch_size=batch_size, misfit=misfit, precision=precision,
                    return_samples=return_samples, max_samples_bytes=max_samples_bytes,
                    misfit_samples=misfit_samples, compile=compile)
    n_h = net.height_Mm.numel()
    n_q = len(q_list)

    height = net.height_Mm.cpu().numpy()
    coords: dict[str, object] = {
        "quantile": ("quantile", np.asarray(q_list), {"long_name": "posterior quantile"}),
        "height": ("height", height, dict(VARIABLE_ATTRS["height"])),
    }
    for name, c in profiles.coords.items():
        if name not in coords and c.dims and set(c.dims) <= set(dims):
            coords[name] = c
    data_vars: dict[str, object] = {}
    for k, name in enumerate(VARIABLES):
        data_vars[name] = ((*dims, "quantile", "height"),
                           res.quantiles[:, :, k, :].reshape(*shape, n_q, n_h),
                           dict(VARIABLE_ATTRS[name]))
        if res.samples is not None:
            data_vars[f"{name}_samples"] = (
                (*dims, "draw", "height"), res.samples[:, :, k, :].reshape(*shape, samples, n_h),
                {**VARIABLE_ATTRS[name], "long_name": f"posterior samples of {name}"})
    data_vars["misfit"] = (dims, res.misfit.reshape(shape), {
        "long_name": "RMS of forward(posterior sample) minus observed profiles, mean over the first "
                     "misfit_samples draws (attrs)",
        "units": "fraction of the joint peak"})
    data_vars["peak"] = (dims, peak.reshape(shape), {
        "long_name": "joint peak of the two lines on the model windows",
        "units": net.config.intensity_unit})
    meta = net.metadata
    attrs = {
        "radynversion_version": __version__,
        "model": str(meta.get("path", "<in memory>")),
        "training_set_sha256": str(meta.get("training_set_sha256", "")),
        "model_config": str(meta.get("model_config", "")),
        "samples": int(samples),
        "seed": int(seed),
        "misfit_samples": misfit_draws(samples, misfit_samples) if misfit else 0,
        "precision": precision,
        "compiled": str(bool(compile)).lower(),
        "instrument_fwhm_A": str(net.instrument_fwhm_A()),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
