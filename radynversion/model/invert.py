"""Posterior inversion of observed profiles, in memory (Osborne, Armstrong & Fletcher 2019).

For every pixel the profiles are preprocessed like the training set
(:func:`radynversion.model.preprocess.normalise_profiles`), ``samples`` latent draws
``z ~ N(0, 1)`` are pushed through the reverse network with them, and the posterior samples of
``log_ne``, ``log_T`` and ``v`` are reduced to quantiles per height. The round trip
``forward(posterior sample)`` (atmosphere only, padding zeroed) is compared with the observed
profiles: ``misfit`` is the RMS difference over the 60 points, in units of the joint peak,
averaged over the samples.

Reproducibility: the draws of a pixel come from a generator seeded by ``(seed, pixel index)``
(the pixel's flat C-order index among the non-spectral dims, or ``pixel_index``), so a pixel's
result does not depend on ``batch_size`` or on which other pixels are inverted with it (up to
float round-off of batched matrix products). Draws are made on the model's device, so CPU and
GPU results differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from .. import __version__
from ..atmosphere import VARIABLE_ATTRS, VARIABLES
from ..errors import ProfileSchemaError
from ..lines import LINES
from .checkpoint import load_model
from .inn import RadynversionINN
from .preprocess import normalise_profiles, sample_dims

__all__ = ["DEFAULT_QUANTILES", "pixel_seeds", "invert"]

DEFAULT_QUANTILES: tuple[float, ...] = (0.05, 0.16, 0.5, 0.84, 0.95)
#: torch.quantile refuses inputs with more elements than this
_QUANTILE_MAX_NUMEL = 2**24


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def pixel_seeds(seed: int, pixel_index: np.ndarray) -> np.ndarray:
    """Seeds of the per-pixel generators: a SplitMix64 hash of ``(seed, pixel_index)``.

    Parameters
    ----------
    seed : int
    pixel_index : ndarray of int, shape ``(N,)``

    Returns
    -------
    ndarray of uint64, shape ``(N,)``
    """
    base = _splitmix64(np.asarray([seed % 2**64], dtype=np.uint64))
    idx = np.asarray(pixel_index).astype(np.int64).astype(np.uint64)
    return _splitmix64(base ^ _splitmix64(idx))


def _resolve_model(model: RadynversionINN | str | Path | None) -> RadynversionINN:
    if isinstance(model, RadynversionINN):
        return model
    return load_model(model)


def invert(
    profiles: xr.Dataset,
    model: RadynversionINN | str | Path | None = None,
    samples: int = 1024,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    seed: int = 0,
    batch_size: int = 65536,
    pixel_index: np.ndarray | None = None,
    degrade: bool | None = None,
    misfit: bool = True,
) -> xr.Dataset:
    """Invert profiles into posterior quantiles of the atmosphere.

    Parameters
    ----------
    profiles : xarray.Dataset
        In the profile schema: ``I_halpha(*dims, wl_halpha)``, ``I_ca8542(*dims, wl_ca8542)``,
        any supported units, air or vacuum, any sampling covering the model windows.
        Pixels with NaNs give NaN outputs.
    model : RadynversionINN or path, optional
        The network, or a checkpoint to load; default the packaged model.
    samples : int
        Posterior draws per pixel.
    quantiles : sequence of float
        Quantiles in [0, 1] to report.
    seed : int
        Seed of the draws (combined with each pixel's index).
    batch_size : int
        Reverse passes per batch (pixels per batch = ``batch_size // samples``, at least 1).
    pixel_index : ndarray of int, shape ``dims``, optional
        Global indices of the pixels (e.g. of a chunk within a scan), for the seeds; default
        their flat C-order positions in ``profiles``.
    degrade : bool, optional
        Force or forbid the instrument convolution; default only for finely sampled data.
    misfit : bool
        Compute the round-trip misfit (one forward pass per sample).

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
        raise ValueError(f"invert: samples = {samples}; expected >= 1")
    q_list = [float(q) for q in quantiles]
    if not q_list or any(not 0.0 <= q <= 1.0 for q in q_list):
        raise ValueError(f"invert: quantiles {q_list}; expected values in [0, 1]")
    y, peak = normalise_profiles(profiles, unit=net.config.intensity_unit,
                                 fwhm_A=net.instrument_fwhm_A(), degrade=degrade)
    dims = sample_dims(profiles)
    shape = tuple(profiles[LINES[0].var].sizes[d] for d in dims)
    n_pix = y.shape[0]
    if pixel_index is None:
        ids = np.arange(n_pix)
    else:
        ids = np.asarray(pixel_index).reshape(-1)
        if ids.size != n_pix:
            raise ProfileSchemaError(f"invert: pixel_index has {ids.size} entries; expected one per "
                                     f"pixel ({n_pix}, dims {dims})")
    seeds = pixel_seeds(seed, ids)
    n_h = net.height_Mm.numel()
    n_q = len(q_list)
    out = np.full((n_pix, n_q, 3, n_h), np.nan, dtype=np.float32)
    rms_out = np.full(n_pix, np.nan, dtype=np.float32)
    valid = np.flatnonzero(np.isfinite(y).all(axis=1))
    dev = net.device
    q_t = torch.tensor(q_list, dtype=torch.float32, device=dev)
    gen = torch.Generator(device=dev)
    per_batch = max(1, batch_size // samples)
    per_quantile = max(1, _QUANTILE_MAX_NUMEL // (samples * 3 * n_h))
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            for start in range(0, valid.size, per_batch):
                chunk = valid[start : start + per_batch]
                n_c = chunk.size
                z = torch.empty(n_c, samples, net.n_z, device=dev)
                for j, i in enumerate(chunk):
                    gen.manual_seed(int(seeds[i]))
                    z[j] = torch.randn(samples, net.n_z, generator=gen, device=dev)
                y_obs = torch.as_tensor(y[chunk], device=dev)
                y_rep = y_obs[:, None, :].expand(n_c, samples, net.n_y).reshape(-1, net.n_y)
                atm = net.x_to_atmosphere(net.reverse(net.pack_yz(y_rep, z.reshape(-1, net.n_z))))
                if misfit:
                    y_fwd, _ = net.unpack_yz(net(net.atmosphere_to_x(atm))[0])
                    rms = ((y_fwd - y_rep) ** 2).mean(dim=1).sqrt().reshape(n_c, samples).mean(dim=1)
                    rms_out[chunk] = rms.float().cpu().numpy()
                atm = atm.reshape(n_c, samples, 3, n_h).float()
                vp = atm[:, :, 2]
                atm[:, :, 2] = torch.sign(vp) * (torch.pow(10.0, vp.abs()) - 1.0)
                for s in range(0, n_c, per_quantile):
                    qs = torch.quantile(atm[s : s + per_quantile], q_t, dim=1)  # (Q, P, 3, H)
                    out[chunk[s : s + per_quantile]] = qs.permute(1, 0, 2, 3).cpu().numpy()
    finally:
        net.train(was_training)

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
        data_vars[name] = ((*dims, "quantile", "height"), out[:, :, k, :].reshape(*shape, n_q, n_h),
                           dict(VARIABLE_ATTRS[name]))
    data_vars["misfit"] = (dims, rms_out.reshape(shape), {
        "long_name": "RMS of forward(posterior sample) minus observed profiles, mean over samples",
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
        "instrument_fwhm_A": str(net.instrument_fwhm_A()),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
