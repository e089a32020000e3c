"""The demo: invert the packaged example scan with the packaged model, on a local Dask cluster.

``radynversion demo`` (and ``make demo``) runs what a user runs on a real scan: the two
SSTRED-style FITS cubes of :func:`radynversion.datasets.example_scan` are read with
:func:`radynversion.io.open_observation`, inverted chunk by chunk by the engine
(:func:`radynversion.engine.invert_to_zarr`) on a ``LocalCluster`` into a Zarr store, and
drawn: posterior maps (:func:`radynversion.plot.maps`), the inferred against the true
atmospheres (:func:`radynversion.plot.truth_comparison`), and one ribbon pixel's posterior
(:func:`radynversion.plot.posterior`). Because the scan is synthetic, the result is scored
against its truth (:func:`radynversion.datasets.example_truth`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .atmosphere import VARIABLES

__all__ = ["run_demo", "demo_figures", "truth_scores"]

#: chunks of the demo run (16 chunks of 16 x 16 pixels for the 64 x 64 scan)
DEMO_CHUNKS = {"y": 16, "x": 16}


def truth_scores(result: xr.Dataset, truth: xr.Dataset) -> dict[str, dict[str, float]]:
    """Median absolute error of the posterior median and 68 % / 90 % coverage, against true
    atmospheres, over every pixel and node of each height band of the truth.

    Returns
    -------
    dict
        band -> ``{"<var>_median_abs_error": ..., "<var>_coverage68": ...,
        "<var>_coverage90": ...}`` (dex for ``log_ne``, ``log_T``; km/s for ``v``).
    """
    from .atmosphere import BANDS, height_bands

    h = np.asarray(result["height"].values, dtype=float)
    t_log_t = np.asarray(truth["log_T"].transpose("y", "x", "height").values, dtype=float)
    bands = height_bands(t_log_t.reshape(-1, h.size), h).reshape(t_log_t.shape)
    qs = np.asarray(result["quantile"].values, dtype=float)

    def q(name: str, level: float) -> np.ndarray:
        k = int(np.argmin(np.abs(qs - level)))
        return np.asarray(result[name].isel(quantile=k).transpose("y", "x", "height").values, dtype=float)

    scores: dict[str, dict[str, float]] = {}
    for b, band in enumerate(BANDS):
        sel = bands == b
        out: dict[str, float] = {}
        for name in VARIABLES:
            t = np.asarray(truth[name].transpose("y", "x", "height").values, dtype=float)
            ok = sel & np.isfinite(q(name, 0.5)) & np.isfinite(t)
            if not ok.any():
                continue
            out[f"{name}_median_abs_error"] = float(np.median(np.abs(q(name, 0.5) - t)[ok]))
            out[f"{name}_coverage68"] = float(np.mean(((q(name, 0.16) <= t) & (t <= q(name, 0.84)))[ok]))
            out[f"{name}_coverage90"] = float(np.mean(((q(name, 0.05) <= t) & (t <= q(name, 0.95)))[ok]))
        scores[band] = out
    return scores


def _ribbon_pixel(result: xr.Dataset, truth: xr.Dataset) -> tuple[int, int]:
    """A flaring pixel (kind 2) of typical misfit: the median misfit among them."""
    kind = np.asarray(truth["kind"].values) if "kind" in truth else np.zeros(truth["log_T"].shape[:2])
    mis = np.asarray(result["misfit"].values, dtype=float)
    cand = np.argwhere((kind == kind.max()) & np.isfinite(mis))
    if cand.size == 0:
        cand = np.argwhere(np.isfinite(mis))
    order = np.argsort(mis[tuple(cand.T)])
    y, x = cand[order[order.size // 2]]
    return int(y), int(x)


def demo_figures(result: xr.Dataset, scan: xr.Dataset, truth: xr.Dataset, net: Any, out: Path,
                 samples: int) -> tuple[dict[str, Path], tuple[int, int]]:
    """The demo's PNGs in ``out``: ``maps.png``, ``truth.png``, ``pixel.png`` (a ribbon pixel's
    posterior with 2048 draws); returns their paths and the pixel ``(y, x)``."""
    from . import plot
    from .evaluate import round_trip_profiles
    from .model import invert
    from .model.preprocess import normalise_profiles

    figures = {"maps": out / "maps.png", "truth": out / "truth.png", "pixel": out / "pixel.png"}
    plot.maps(result, heights_Mm=(0.5, 1.0, 1.5), path=figures["maps"],
              title=f"Example scan: posterior maps ({samples} samples per pixel)")
    plot.truth_comparison(result, truth, height_Mm=1.0, path=figures["truth"],
                          title="Example scan: inversion against the true atmospheres")
    yy, xx = _ribbon_pixel(result, truth)
    one = scan.isel(y=[yy], x=[xx]).load()
    px = invert(one, net, samples=2048, quantiles=(0.5,), return_samples=True, misfit=False)
    draws = np.stack([np.asarray(px[f"{v}_samples"].values[0, 0], dtype=float) for v in VARIABLES], axis=1)
    round_trip = round_trip_profiles(net, draws[:256])
    y_obs, _ = normalise_profiles(one, unit=net.config.intensity_unit, fwhm_A=net.instrument_fwhm_A())
    true_px = truth.isel(y=yy, x=xx)
    plot.posterior(draws, observed=y_obs[0], round_trip=round_trip,
                   truth=np.stack([true_px[v].values for v in VARIABLES]),
                   height_Mm=np.asarray(result["height"].values), path=figures["pixel"],
                   title=f"Example scan, ribbon pixel y={yy}, x={xx}: posterior (2048 samples) and "
                         "truth")

    return figures, (yy, xx)


def run_demo(
    out_dir: str | Path = "radynversion-demo",
    samples: int = 64,
    workers: int = 2,
    model: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Invert the example scan on a local Dask cluster, draw it, and score it against the truth.

    Parameters
    ----------
    out_dir : path
        Where ``example_scan.zarr`` and the PNGs go (a previous demo store there is replaced).
    samples : int
        Posterior draws per pixel (64 keeps the demo to minutes on two CPU cores; use 1024
        for science-grade 5 % / 95 % quantiles).
    workers : int
        Dask workers of the ``LocalCluster`` (one thread each).
    model : path, optional
        Checkpoint (default the packaged model).
    progress : bool
        Show the engine's progress bar.

    Returns
    -------
    dict
        ``store``, ``figures``, ``pixels``, ``samples``, ``seconds``, ``pixels_per_second``,
        ``median_misfit_pct``, ``scores`` (:func:`truth_scores`), ``summary`` (one line).
    """
    from .datasets import example_scan, example_truth
    from .engine.cluster import cluster_client
    from .engine.store import check_output, invert_to_zarr, trust_summary
    from .io.observation import open_observation
    from .model import load_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "example_scan.zarr"
    check_output(store, overwrite=True)  # an earlier demo's store is replaced, anything else refused
    net = load_model(model)
    paths = example_scan()
    scan = open_observation(list(paths), chunks=DEMO_CHUNKS)
    t0 = time.perf_counter()
    with cluster_client(workers, 1) as client:
        # the demo times a fresh run: a store of an earlier demo is replaced, nothing else is
        stats = invert_to_zarr(scan, store, model=model, samples=samples, chunks=DEMO_CHUNKS,
                               client=client, progress=progress, overwrite=True)
    seconds = time.perf_counter() - t0
    result = xr.open_zarr(store).load()
    if "time" in result.dims:  # the example scan is one scan: a time dim of length 1
        result, scan = result.isel(time=0), scan.isel(time=0)
    truth = example_truth()
    scores = truth_scores(result, truth)

    figures, (yy, xx) = demo_figures(result, scan, truth, net, out, samples)
    dn = _uncalibrated_pair(out, samples, workers, truth, progress)
    misfit = np.asarray(result["misfit"].values, dtype=float)
    n_pix = int(np.isfinite(misfit).sum())
    chrom = scores.get("chromosphere", {})
    trust = trust_summary(store)
    summary = (
        f"demo: {misfit.size} pixels x {samples} samples in {seconds:.1f} s "
        f"({misfit.size / seconds:.0f} px/s, {workers} workers); median misfit "
        f"{100 * np.nanmedian(misfit):.2f} % of peak; trusted {trust.get('trusted_pixels', 0)} of "
        f"{trust.get('inverted_pixels', 0)} pixels; chromosphere vs truth: "
        + ", ".join(f"{v} {chrom.get(f'{v}_median_abs_error', float('nan')):.2f}"
                    f"{' km/s' if v == 'v' else ' dex'} (68 % cov {chrom.get(f'{v}_coverage68', float('nan')):.2f})"
                    for v in VARIABLES)
        + f"; store {store}; figures {', '.join(str(p) for p in figures.values())}"
        + f"\n{dn['summary']}")
    return {"store": str(store), "figures": {k: str(p) for k, p in figures.items()}, "pixels": n_pix,
            "samples": int(samples), "seconds": seconds, "pixels_per_second": misfit.size / seconds,
            "engine": stats, "median_misfit_pct": float(100 * np.nanmedian(misfit)), "scores": scores,
            "ribbon_pixel": {"y": yy, "x": xx}, "uncalibrated": dn, "trust": trust, "summary": summary}


def _uncalibrated_pair(out: Path, samples: int, workers: int, truth: xr.Dataset, progress: bool) -> dict[str, Any]:
    """The same scan as a 2014-era crisPy pair in DN (:func:`radynversion.datasets.example_crispy`),
    inverted as ``radynversion invert H.fits C.fits -o OUT`` would: with no model named, the
    default model's variant for uncalibrated data is chosen."""
    from .datasets import example_crispy
    from .engine.cluster import cluster_client
    from .engine.store import invert_to_zarr
    from .io.observation import open_observation
    from .model.checkpoint import default_model_for, default_model_reason

    store = out / "example_crispy_dn.zarr"
    scan = open_observation(list(example_crispy()), chunks=DEMO_CHUNKS)
    model = default_model_for(None, scan)
    with cluster_client(workers, 1) as client:
        invert_to_zarr(scan, store, model=model, samples=samples, chunks=DEMO_CHUNKS, client=client,
                       progress=progress, overwrite=True)
    result = xr.open_zarr(store).load()
    if "time" in result.dims:
        result = result.isel(time=0)
    chrom = truth_scores(result, truth).get("chromosphere", {})
    summary = (f"demo, uncalibrated crisPy pair in DN ({default_model_reason(scan)}): model {Path(model).name}; "
               "chromosphere vs truth: "
               + ", ".join(f"{v} {chrom.get(f'{v}_median_abs_error', float('nan')):.2f}"
                           f"{' km/s' if v == 'v' else ' dex'} (68 % cov {chrom.get(f'{v}_coverage68', float('nan')):.2f})"
                           for v in VARIABLES) + f"; store {store}")
    return {"store": str(store), "model": str(model), "scores": chrom, "summary": summary}
