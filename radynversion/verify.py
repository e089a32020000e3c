"""The physical check: re-synthesise inferred atmospheres with the NLTE forward model.

The INN's round-trip ``misfit`` measures how well the network's own forward emulator reproduces
the observation; it cannot tell when the emulator itself is wrong. :func:`verify` takes the
posterior-median atmospheres of chosen pixels, solves them again in NLTE with Lightweaver
(:func:`radynversion.synth.nlte.synthesise`), sees the result through the instrument like the
training data and compares it with the observed profiles in the same metric as the INN misfit
(RMS over the model windows in units of the joint peak). ``misfit_nlte`` much larger than
``misfit`` means the emulator, not the data, is wrong there.

The INN infers ``log_ne``, ``log_T`` and ``v``; the forward model also needs the hydrogen density
and microturbulence. The hydrogen density is rebuilt by hydrostatic equilibrium with the inferred
temperature, integrated upwards from FAL-C's density at the lowest node (as the prior does), and
the microturbulence is FAL-C's; the NLTE solution then sets its own electron density, which is
reported beside the inferred one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .atmosphere import VARIABLES
from .lines import LINES
from .model.coverage import renormalise
from .model.preprocess import input_options, normalise_profiles, sample_dims
from .schema import RADIANCE_PER_HZ, profile_dataset
from .synth.hydrostatic import falc_tables, ionisation_particles
from .synth.nlte import STATUS_NAMES, NLTEConfig, synthesise
from .synth.prior import FlareAtmosphere
from .velocity_frame import in_recorded_frame

__all__ = ["atmosphere_from_nodes", "round_trip_of", "verify"]

_K_B = 1.380649e-23
_M_H = 1.6735575e-27
_G_SUN = 274.0
_MU_H = 1.4


def _import_lightweaver() -> None:
    """Import Lightweaver without its ``UserWarning: No config file found``: it only suggests
    running ``lightweaver.benchmark()`` to pick a vectorised kernel, and the defaults work.
    Once imported (per process) it does not warn again."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No config file found", category=UserWarning)
        import lightweaver  # noqa: F401


def _synthesise(atmos: FlareAtmosphere, config: NLTEConfig):  # noqa: ANN202 - SynthesisResult
    """:func:`radynversion.synth.nlte.synthesise` as a task (in this process or on a Dask
    worker, where Lightweaver is imported afresh)."""
    _import_lightweaver()
    return synthesise(atmos, config)


def atmosphere_from_nodes(log_ne: np.ndarray, log_T: np.ndarray, v: np.ndarray, height_Mm: np.ndarray,
                          points: int = 600) -> FlareAtmosphere:
    """A forward-model atmosphere from node-grid values.

    Parameters
    ----------
    log_ne, log_T, v : ndarray, shape ``(H,)``
        log10 ne [cm^-3] (kept in ``params`` for comparison only), log10 T [K], v [km/s, + down].
    height_Mm : ndarray, shape ``(H,)``
        Node heights [Mm], increasing.
    points : int
        Points of the fine working grid (log T, v interpolated linearly in height).

    Returns
    -------
    FlareAtmosphere
        Top first; ``nHTot`` hydrostatic from FAL-C's density at the lowest node, ``vturb`` FAL-C's.
    """
    _import_lightweaver()  # FAL-C comes from Lightweaver
    h = np.asarray(height_Mm, dtype=float)
    z_up = np.linspace(h[0], h[-1], points)  # bottom -> top
    T = 10 ** np.interp(z_up, h, np.asarray(log_T, dtype=float))
    vel = np.interp(z_up, h, np.asarray(v, dtype=float))
    f = falc_tables()
    zf = f["z"][::-1] / 1e6
    nh0 = 10 ** np.interp(h[0], zf, np.log10(f["nH"][::-1]))
    vturb = np.interp(z_up, zf, f["vt"][::-1])
    n_p = ionisation_particles(T)
    inv_scale = _MU_H * _M_H * _G_SUN / (_K_B * T * n_p)  # 1/m
    dz = np.diff(z_up) * 1e6
    lnP = np.log(_K_B * T[0] * nh0 * n_p[0]) - np.concatenate([[0.0], np.cumsum(dz * 0.5 * (inv_scale[1:] + inv_scale[:-1]))])
    nH = np.exp(lnP) / (_K_B * T * n_p)
    return FlareAtmosphere(z_m=z_up[::-1] * 1e6, temperature_K=T[::-1], nHTot_m3=nH[::-1], vturb_m_s=vturb[::-1],
                           v_km_s=vel[::-1], kind="external", params={})


def _pick_pixels(result: xr.Dataset, dims: tuple[str, ...], pixels: int | Sequence[Sequence[int]]) -> np.ndarray:
    shape = tuple(result.sizes[d] for d in dims)
    if isinstance(pixels, int | np.integer):
        mis = np.asarray(result["misfit"].transpose(*dims).values, dtype=float).ravel()
        order = np.argsort(np.where(np.isfinite(mis), -mis, np.inf), kind="stable")
        flat = order[: min(int(pixels), int(np.isfinite(mis).sum()))]
    else:
        flat = np.array([np.ravel_multi_index(tuple(p), shape) for p in pixels], dtype=int)
    return flat


def result_model(result: xr.Dataset, model: Any = None) -> Any:
    """The network of an inversion: ``model`` (loaded if a path), else the checkpoint named in
    ``result.attrs["model"]`` when that file exists and its SHA-256 is the result's
    ``model_sha256``; None when neither is available."""
    if model is None:
        path = Path(str(result.attrs.get("model", "")))
        if path.is_file():
            from .model.checkpoint import file_sha256

            sha = str(result.attrs.get("model_sha256", ""))
            model = path if not sha or file_sha256(path) == sha else None
    if model is None:
        return None
    from .model.checkpoint import load_model

    return load_model(model) if isinstance(model, str | Path) else model


def round_trip_of(result: xr.Dataset, atmospheres: np.ndarray, model: Any = None) -> np.ndarray:
    """The INN's forward emulator on atmospheres of ``result`` (its round trip), normalised as
    the model's input.

    Parameters
    ----------
    result : xarray.Dataset
        The inversion the atmospheres come from; its ``model`` attr names the checkpoint.
    atmospheres : ndarray, shape ``(N, 3, H)``
        ``[log_ne, log_T, v]`` (v in km/s), e.g. posterior medians.
    model : PosteriorModel or path, optional
        The network; default :func:`result_model`.

    Returns
    -------
    ndarray, shape ``(N, 60)``
        H-alpha's 30 model-window points, then Ca II 8542's; all NaN without a model.
    """
    n_prof = sum(ln.model_points for ln in LINES)
    net = result_model(result, model)
    if net is None or len(atmospheres) == 0:
        return np.full((len(atmospheres), n_prof), np.nan)
    from .evaluate import round_trip_profiles

    return round_trip_profiles(net, np.asarray(atmospheres, dtype=float))


def verify(
    result: xr.Dataset,
    observation: xr.Dataset,
    pixels: int | Sequence[Sequence[int]] = 4,
    nlte: NLTEConfig | None = None,
    client=None,
    fwhm_A: dict[str, float] | None = None,
    model: Any = None,
) -> xr.Dataset:
    """Re-synthesise posterior-median atmospheres in NLTE and compare with the observation.

    Parameters
    ----------
    result : xarray.Dataset
        An inversion (``radynversion.invert`` / ``radynversion invert``) with ``log_ne``, ``log_T``,
        ``v`` over ``(*dims, quantile, height)`` and ``misfit`` over ``dims``.
    observation : xarray.Dataset
        The profiles that were inverted (profile schema, same non-spectral dims).
    pixels : int or sequence of index tuples
        The ``N`` pixels with the largest INN misfit, or explicit indices over ``dims``.
    nlte : NLTEConfig, optional
        Forward-model settings (default: those of the training set).
    client : distributed.Client, optional
        Run the syntheses as Dask tasks; default in this process, one after another.
    fwhm_A : dict, optional
        Instrument FWHM per line [A] for the synthetic profiles (default the model's, else
        CRISP's, as in training).
    model : PosteriorModel or path, optional
        The network whose emulator gives ``y_round_trip`` (:func:`round_trip_of`) and whose input
        normalisation (joint or per-line peak, unobserved points as NaN) the profiles are
        compared in; default the checkpoint the result names, if it is still there (else the
        joint-peak normalisation of the original models).

    The observation is compared in the velocity frame the result was inverted in (its
    ``velocity_frame`` attrs, :func:`radynversion.velocity_frame.in_recorded_frame`), and the
    NLTE misfit is the RMS over the points the observation covers.

    Returns
    -------
    xarray.Dataset
        Over dim ``pixel``: the pixel's indices (``<dim>_index``) and coordinates, ``misfit`` (INN round
        trip), ``misfit_nlte`` (NLTE re-synthesis vs observation, joint-peak units), ``status`` /
        ``message`` of the NLTE solve, ``y_observed`` / ``y_nlte (pixel, wl)`` on the model windows
        (normalised), ``y_round_trip (pixel, wl)`` (the INN's emulator on the same median
        atmospheres; NaN without the model), and ``log_ne_inferred`` / ``log_ne_nlte (pixel, height)``.
    """
    cfg = nlte or NLTEConfig()
    dims = sample_dims(observation)
    res = result.transpose(*dims, ...)
    flat = _pick_pixels(res, dims, pixels)
    shape = tuple(res.sizes[d] for d in dims)
    idx = np.unravel_index(flat, shape) if flat.size else tuple(np.zeros(0, int) for _ in dims)
    q = res["quantile"].values
    med = res.isel(quantile=int(np.argmin(np.abs(q - 0.5))))
    heights = res["height"].values
    atmospheres, nodes = [], []
    for k in range(flat.size):
        sel = {d: int(idx[i][k]) for i, d in enumerate(dims)}
        vals = [np.asarray(med[name].isel(sel).values, dtype=float) for name in VARIABLES]
        nodes.append(vals)
        atmospheres.append(atmosphere_from_nodes(*vals, heights))
    net = result_model(result, model)
    opts = input_options(net) if net is not None else {}
    unit = net.config.intensity_unit if net is not None else RADIANCE_PER_HZ
    y_round_trip = round_trip_of(result, np.asarray(nodes, dtype=float).reshape(-1, 3, heights.size), net)
    if client is not None:
        runs = client.gather(client.map(_synthesise, atmospheres, config=cfg, pure=False))
    else:
        runs = [_synthesise(a, cfg) for a in atmospheres]
    fwhm = fwhm_A or (net.instrument_fwhm_A() if net is not None else {ln.key: ln.crisp_fwhm_A for ln in LINES})
    synth = profile_dataset({ln.key: ln.synth_wavelengths() for ln in LINES},
                            {ln.key: np.stack([r.intensity[ln.key] for r in runs]) if runs
                             else np.zeros((0, ln.synth_wavelengths().size)) for ln in LINES},
                            RADIANCE_PER_HZ, dims=("pixel",))
    y_nlte = (normalise_profiles(synth, unit=unit, fwhm_A=fwhm, degrade=True, **opts)[0] if runs
              else np.zeros((0, 60)))
    obs = in_recorded_frame(observation, result.attrs).transpose(*dims, ...)
    obs_sel = obs.isel({d: xr.DataArray(idx[i], dims="pixel") for i, d in enumerate(dims)})
    y_obs, _ = normalise_profiles(obs_sel, unit=unit, fwhm_A=fwhm, **opts)
    if opts.get("partial") and runs:  # the synthetic profiles where the observation has points
        import torch

        seen = np.where(np.isfinite(y_obs), y_nlte, np.nan)
        y_nlte = renormalise(torch.as_tensor(seen), opts.get("normalisation", "joint")).numpy()
    with warnings.catch_warnings():  # a pixel with no observed point: NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        misfit_nlte = np.sqrt(np.nanmean((y_nlte - y_obs) ** 2, axis=1)) if runs else np.zeros(0)
    out = xr.Dataset(
        {
            "misfit": ("pixel", np.asarray(res["misfit"].values, dtype=float).ravel()[flat]),
            "misfit_nlte": ("pixel", misfit_nlte, {"long_name": "RMS(NLTE re-synthesis - observed) / joint peak"}),
            "status": ("pixel", np.array([r.status for r in runs], dtype=np.int8),
                       {"flag_meanings": " ".join(STATUS_NAMES.values())}),
            "message": ("pixel", np.array([r.message for r in runs], dtype=str)),
            "y_observed": (("pixel", "wl"), y_obs),
            "y_nlte": (("pixel", "wl"), y_nlte),
            "y_round_trip": (("pixel", "wl"), y_round_trip,
                             {"long_name": "INN forward emulator on the posterior-median atmosphere"}),
            "log_ne_inferred": (("pixel", "height"), np.stack([np.asarray(med["log_ne"].isel(
                {d: int(idx[i][k]) for i, d in enumerate(dims)}).values) for k in range(flat.size)])
                if flat.size else np.zeros((0, heights.size))),
            "log_ne_nlte": (("pixel", "height"), np.stack([r.log_ne for r in runs]) if runs
                            else np.zeros((0, heights.size))),
        },
        coords={**{f"{d}_index": ("pixel", idx[i]) for i, d in enumerate(dims)},
                **{d: ("pixel", np.asarray(obs[d].values)[idx[i]], dict(obs[d].attrs))
                   for i, d in enumerate(dims) if d in obs.coords},
                "height": heights},
        attrs={"nlte_config": str(cfg), "method": __doc__.strip().splitlines()[0]},
    )
    return out
