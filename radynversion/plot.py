"""Figures: training-set coverage, one pixel's posterior, and maps of a whole scan.

* :func:`training_coverage`: what a training set covers;
* :func:`posterior`: the single-pixel figure of Osborne, Armstrong & Fletcher (2019): 2D
  histograms of the posterior samples of ``log_ne``, ``log_T`` and ``v`` against height (truth
  overplotted when known) and the round-trip profiles against the observed ones;
* :func:`maps`: posterior medians and 68 % interval widths at chosen heights, and the
  round-trip misfit, as images with helioprojective axes when the result carries a map header;
* :func:`verification`: observed profiles against the NLTE re-synthesis of inferred atmospheres;
* :func:`evaluation_coverage`, :func:`evaluation_errors`: calibration and accuracy of a model
  against height (:func:`radynversion.evaluate.evaluate`);
* :func:`truth_comparison`: an inversion of a synthetic scan against its true atmospheres.

All functions take xarray objects or arrays, draw with matplotlib (Agg backend is fine) and
return the ``Figure``; pass ``path`` to save a PNG. Height axes are linear over the even part of
the node grid (-0.065 to 3.5 Mm) and logarithmic over its coarse top (to 10.5 Mm), the break
marked; profiles "/ joint peak" are divided by the pixel's highest intensity over both lines'
model windows (the figure says so in its caption); maps are titled with the observation time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from .atmosphere import VARIABLES, default_height_grid, inverse_velocity_transform, velocity_transform
from .lines import LINES

__all__ = ["training_coverage", "core_wing_ratio", "posterior_samples", "posterior", "maps", "verification",
           "evaluation_coverage", "evaluation_errors", "truth_comparison", "observation_time",
           "HEIGHT_BREAK_MM", "JOINT_PEAK"]

#: axis labels (with units) of the atmosphere variables
LABELS = {
    "log_ne": r"$\log_{10} n_e$ [cm$^{-3}$]",
    "log_T": r"$\log_{10} T$ [K]",
    "v": r"$v$ [km s$^{-1}$] (+ = down)",
}
_SHORT = {"log_ne": r"$\log_{10} n_e$", "log_T": r"$\log_{10} T$", "v": r"$v$"}
_UNITS = {"log_ne": "dex", "log_T": "dex", "v": r"km s$^{-1}$"}
_CMAPS = {"log_ne": "viridis", "log_T": "inferno", "v": "RdBu_r"}

#: top of the even part of the node grid [Mm] (45 nodes from -0.065 Mm; 5 coarse ones above, to
#: 10.5 Mm): height axes are linear below it and logarithmic above, the break marked
HEIGHT_BREAK_MM = 3.5
_HEIGHT_LABEL = f"height [Mm] (log scale above {HEIGHT_BREAK_MM:g})"

#: what "joint peak" means, written under every figure that divides profiles by it
JOINT_PEAK = (
    "joint peak: the pixel's highest intensity over both lines' model windows ("
    + ", ".join(f"{ln.label}: {ln.center_air_A - ln.model_halfwidth_A:.2f}-"
                f"{ln.center_air_A + ln.model_halfwidth_A:.2f} Å" for ln in LINES)
    + ", air), by which both profiles are divided"
)


def _caption(fig, text: str) -> None:
    """A small caption under the whole figure (kept clear of the axes by the layout engine)."""
    fig.supxlabel(text, fontsize=8, color="0.3")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def core_wing_ratio(ds: xr.Dataset, line_key: str) -> np.ndarray:
    """Line-centre intensity over the mean of the two outermost wing points, shape ``(sample,)``.

    Above 1: the line is in emission at its centre; below 1: in absorption.
    """
    ln = next(x for x in LINES if x.key == line_key)
    I = np.asarray(ds[ln.var].values, dtype=float)
    wl = np.asarray(ds[ln.dim].values)
    centre = int(np.argmin(np.abs(wl - ln.center_air_A)))
    return I[:, centre] / (0.5 * (I[:, 0] + I[:, -1]))


def training_coverage(ds: xr.Dataset, path: str | Path | None = None, title: str | None = None):
    """Coverage of a training set: envelopes of T, ne, v versus height, core/wing ratios of
    both lines, and example profiles in emission and absorption.

    Parameters
    ----------
    ds : xr.Dataset
        A training set (``radynversion.datasets.training_set()``), dim ``sample``.
    path : path, optional
        Where to save the PNG.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    h = ds["height"].values
    fig = plt.figure(figsize=(15, 9), constrained_layout=True)
    gs = fig.add_gridspec(2, 4)
    kinds = str(ds["kind"].attrs.get("flag_meanings", "quiet weak flare")).split()
    colors = {"quiet": "tab:blue", "weak": "tab:green", "flare": "tab:red"}
    for col, (name, label) in enumerate(
        [("log_T", r"$\log_{10} T$ [K]"), ("log_ne", r"$\log_{10} n_e$ [cm$^{-3}$]"), ("v", r"$v$ [km s$^{-1}$] (+ = down)")]
    ):
        ax = fig.add_subplot(gs[0, col])
        vals = np.asarray(ds[name].values, dtype=float)
        lo1, lo2, med, hi2, hi1 = np.nanpercentile(vals, [1, 16, 50, 84, 99], axis=0)
        ax.fill_between(h, lo1, hi1, color="0.85", label="1-99 %")
        ax.fill_between(h, lo2, hi2, color="0.6", label="16-84 %")
        ax.plot(h, med, "k", lw=1.5, label="median")
        kind = np.asarray(ds["kind"].values)
        for k, kname in enumerate(kinds):
            sel = kind == k
            if sel.any():
                ax.plot(h, np.nanmedian(vals[sel], axis=0), color=colors.get(kname), lw=1, label=f"median {kname}")
        if name == "v":
            ax.set_yscale("symlog", linthresh=5)
            ticks = [-300, -100, -30, -10, 0, 10, 30, 100]
            ax.set_yticks(ticks, [str(t) for t in ticks])
        ax.set_ylabel(label)
        _height_axis(ax, np.array([h[0], h[-1]]))
        if col == 0:
            ax.legend(fontsize=7, loc="upper left")
    ax = fig.add_subplot(gs[0, 3])
    for ln in LINES:
        r = core_wing_ratio(ds, ln.key)
        ax.hist(np.log10(r[np.isfinite(r) & (r > 0)]), bins=60, histtype="step", lw=1.5, label=ln.label)
    ax.axvline(0, color="k", ls=":")
    ax.set_xlabel(r"$\log_{10}$ (core / far wing)")
    ax.set_ylabel("atmospheres")
    ax.legend(fontsize=8)
    ax.set_title("< 0: absorption, > 0: emission", fontsize=9)
    rng = np.random.default_rng(0)
    for col, ln in enumerate(LINES):
        r = core_wing_ratio(ds, ln.key)
        wl = ds[ln.dim].values - ln.center_air_A
        for j, (sel, style, lab) in enumerate(
            [(r > 1.2, "-", "emission"), (r < 0.8, "--", "absorption")]
        ):
            ax = fig.add_subplot(gs[1, 2 * col + j])
            idx = np.flatnonzero(sel)
            if idx.size:
                pick = rng.choice(idx, size=min(12, idx.size), replace=False)
                I = np.asarray(ds[ln.var].values[pick], dtype=float)
                ax.plot(wl, (I / 1e-8).T, style, lw=0.8)
            ax.set_title(f"{ln.label}: {lab} ({int(sel.sum())} of {sel.size})", fontsize=9)
            ax.set_xlabel(r"$\Delta\lambda$ [$\AA$] (air)")
            ax.set_ylabel(r"$I_\nu$ [$10^{-8}$ W m$^{-2}$ Hz$^{-1}$ sr$^{-1}$]")
    fig.suptitle(title or f"Training-set coverage: {ds.sizes['sample']} converged atmospheres")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig



# ---------------------------------------------------------------------------------------------
# one pixel's posterior
# ---------------------------------------------------------------------------------------------


def _as_atmosphere(x, n_h: int | None, what: str) -> np.ndarray:
    """``(..., 3, H)`` array [log_ne, log_T, v km/s] from an array or a Dataset."""
    if isinstance(x, xr.Dataset):
        names = [f"{v}_samples" if f"{v}_samples" in x else v for v in VARIABLES]
        missing = [n for n in names if n not in x]
        if missing:
            raise ValueError(f"{what}: Dataset without {missing}; expected log_ne, log_T, v (or "
                             "log_ne_samples, ... as invert(..., return_samples=True) gives)")
        arrs = []
        for n in names:
            da = x[n]
            extra = [d for d in da.dims if d not in ("draw", "height")]
            if any(da.sizes[d] != 1 for d in extra):
                raise ValueError(f"{what}: {n} has dims {da.dims}; select one pixel first "
                                 "(e.g. .isel(y=10, x=20))")
            da = da.squeeze(extra, drop=True)
            arrs.append(np.asarray(da.transpose(*[d for d in ("draw", "height") if d in da.dims]).values, float))
        return np.stack(arrs, axis=-2)
    arr = np.asarray(x, dtype=float)
    if arr.shape[-2:] == (3, n_h or arr.shape[-1]) and arr.ndim >= 2 and (n_h is None or arr.shape[-1] == n_h):
        return arr
    if arr.shape[-1] % 3 == 0:
        h = arr.shape[-1] // 3
        return arr.reshape(*arr.shape[:-1], 3, h)
    raise ValueError(f"{what}: array of shape {arr.shape}; expected (..., 3 H) or (..., 3, H)")


def posterior_samples(samples, height_Mm: np.ndarray | None = None) -> xr.Dataset:
    """Posterior samples of one pixel as a Dataset ``log_ne, log_T, v (draw, height)``.

    Parameters
    ----------
    samples : ndarray or xarray.Dataset
        An array ``(S, 3 H)`` or ``(S, 3, H)`` of ``[log_ne, log_T, v]`` with ``v`` in km/s
        (positive = downflow), as :func:`radynversion.model.posterior.posterior` returns per
        pixel; or a Dataset with ``log_ne_samples, log_T_samples, v_samples (draw, height)``
        (:func:`radynversion.model.invert` with ``return_samples=True``, one pixel selected)
        or ``log_ne, log_T, v (draw, height)``.
    height_Mm : ndarray, shape ``(H,)``, optional
        Heights [Mm]; default the Dataset's, else the 50 nodes.
    """
    if isinstance(samples, xr.Dataset) and height_Mm is None and "height" in samples.coords:
        height_Mm = np.asarray(samples["height"].values, dtype=float)
    arr = _as_atmosphere(samples, None if height_Mm is None else len(height_Mm), "posterior samples")
    if arr.ndim == 2:
        arr = arr[None]
    h = default_height_grid() if height_Mm is None else np.asarray(height_Mm, dtype=float)
    if arr.shape[-1] != h.size:
        raise ValueError(f"posterior samples: {arr.shape[-1]} heights, but {h.size} height values")
    from .atmosphere import VARIABLE_ATTRS

    return xr.Dataset(
        {v: (("draw", "height"), arr.reshape(-1, 3, h.size)[:, k], dict(VARIABLE_ATTRS[v]))
         for k, v in enumerate(VARIABLES)},
        coords={"height": ("height", h, dict(VARIABLE_ATTRS["height"]))})


#: the velocity axis never extends beyond +-1000 km/s (v' = 3), whatever the samples do
_V_PRIME_MAX = float(velocity_transform(1000.0))


def _height_axis(ax, h_edges: np.ndarray) -> None:
    """Height on x: linear over the even nodes (to :data:`HEIGHT_BREAK_MM`), logarithmic over the
    coarse ones above; the break marked by a dotted line (``gid="height_break"``) and ``//`` on
    both spines; the axis labelled."""
    from matplotlib.ticker import FixedLocator, FuncFormatter

    ax.set_xscale("symlog", linthresh=HEIGHT_BREAK_MM, linscale=3)
    ax.set_xlim(h_edges[0], h_edges[-1])
    ax.xaxis.set_major_locator(FixedLocator([0, 0.5, 1, 1.5, 2, 2.5, 3, HEIGHT_BREAK_MM, 10]))
    ax.xaxis.set_minor_locator(FixedLocator([4, 5, 6, 7, 8, 9]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_xlabel(_HEIGHT_LABEL)
    if h_edges[0] < HEIGHT_BREAK_MM < h_edges[-1]:
        ax.axvline(HEIGHT_BREAK_MM, color="0.55", lw=0.8, ls=":", gid="height_break")
        for y in (0.0, 1.0):
            ax.text(HEIGHT_BREAK_MM, y, "//", transform=ax.get_xaxis_transform(), ha="center", va="center",
                    fontsize=8, fontweight="bold", clip_on=False, gid="height_break_mark",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.3})


def _height_edges(h: np.ndarray) -> np.ndarray:
    mid = 0.5 * (h[1:] + h[:-1])
    return np.concatenate([[h[0] - (mid[0] - h[0])], mid, [h[-1] + (h[-1] - mid[-1])]])


def _value_edges(name: str, values: np.ndarray, truth: np.ndarray | None, bins: int) -> np.ndarray:
    """Histogram bin edges of a variable: even in ``log`` values, even in ``v'`` for ``v``."""
    vals = values[np.isfinite(values)]
    if truth is not None:
        vals = np.concatenate([vals, truth[np.isfinite(truth)]])
    if name == "v":
        vp = velocity_transform(vals)
        lo, hi = np.percentile(vp, [0.2, 99.8]) if vp.size else (-1.0, 1.0)
        lim = min(max(abs(lo), abs(hi), 0.5), _V_PRIME_MAX)
        return inverse_velocity_transform(np.linspace(-lim, lim, bins + 1))
    lo, hi = np.percentile(vals, [0.2, 99.8]) if vals.size else (0.0, 1.0)
    pad = 0.05 * max(hi - lo, 0.1)
    return np.linspace(lo - pad, hi + pad, bins + 1)


def posterior(
    samples,
    observed=None,
    round_trip: np.ndarray | None = None,
    truth=None,
    height_Mm: np.ndarray | None = None,
    bins: int = 60,
    path: str | Path | None = None,
    title: str | None = None,
):
    """The single-pixel posterior figure (Osborne, Armstrong & Fletcher 2019, their Figs 4-6).

    Top row: for ``log_ne``, ``log_T`` and ``v``, the 2D histogram of the posterior samples
    against height (each height column normalised to the fraction of samples per bin), with
    the median and the 16-84 % interval as lines and the truth, when given, in cyan. Bottom
    row: the observed profiles of both lines on the model windows (divided by their joint
    peak) and, when given, the round-trip profiles ``forward(sample)`` as their median and
    5-95 % / 16-84 % bands.

    Parameters
    ----------
    samples : ndarray or xarray.Dataset
        Posterior samples of one pixel (see :func:`posterior_samples`): ``(S, 3 H)``,
        ``(S, 3, H)`` [log_ne, log_T, v km/s] or a Dataset with a ``draw`` dim.
    observed : ndarray, shape ``(60,)``, or xarray.Dataset, optional
        The pixel's normalised profiles as the model sees them (H-alpha's 30 points, then
        Ca II 8542's: ``normalise_profiles(...)[0][i]``), or a one-pixel profile Dataset
        (normalised here with :func:`radynversion.model.preprocess.normalise_profiles`).
    round_trip : ndarray, shape ``(S', 60)``, optional
        Forward-model profiles of (some of) the samples, in the same normalisation.
    truth : ndarray ``(3 H,)`` / ``(3, H)`` or xarray.Dataset (``log_ne, log_T, v (height)``), optional
        The true atmosphere (e.g. ``example_truth().isel(y=30, x=20)``).
    height_Mm : ndarray, optional
        Heights [Mm] (default the samples', else the 50 nodes).
    bins : int
        Histogram bins per variable.
    path : path, optional
        Save the PNG here.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> res = invert(scan.isel(y=[30], x=[20]), samples=2048, return_samples=True)  # doctest: +SKIP
    >>> posterior(res.isel(y=0, x=0), truth=example_truth().isel(y=30, x=20), path="px.png")  # doctest: +SKIP
    """
    from matplotlib.colors import PowerNorm
    from matplotlib.ticker import FuncFormatter

    plt = _pyplot()
    post = posterior_samples(samples, height_Mm)
    h = np.asarray(post["height"].values)
    tru = None
    if truth is not None:
        tru = _as_atmosphere(truth, h.size, "truth").reshape(3, h.size)
    y_obs = None
    if observed is not None:
        if isinstance(observed, xr.Dataset):
            from .model.preprocess import normalise_profiles

            y_all, _ = normalise_profiles(observed)
            if y_all.shape[0] != 1:
                raise ValueError(f"posterior: observed holds {y_all.shape[0]} pixels; select one")
            y_obs = y_all[0].astype(float)
        else:
            y_obs = np.asarray(observed, dtype=float).reshape(-1)
        n_prof = sum(ln.model_points for ln in LINES)
        if y_obs.size != n_prof:
            raise ValueError(f"posterior: observed has {y_obs.size} points; expected {n_prof}")
    rt = None if round_trip is None else np.asarray(round_trip, dtype=float).reshape(-1, sum(ln.model_points for ln in LINES))

    fig = plt.figure(figsize=(15, 8.5), constrained_layout=True)
    gs = fig.add_gridspec(2, 6)
    h_edges = _height_edges(h)
    mesh = None
    for col, name in enumerate(VARIABLES):
        ax = fig.add_subplot(gs[0, 2 * col : 2 * col + 2])
        vals = np.asarray(post[name].values, dtype=float)  # (S, H)
        edges = _value_edges(name, vals, None if tru is None else tru[col], bins)
        hist = np.stack([np.histogram(vals[:, j][np.isfinite(vals[:, j])], bins=edges)[0]
                         for j in range(h.size)], axis=1).astype(float)
        n_ok = np.maximum(np.isfinite(vals).sum(axis=0), 1)
        hist /= n_ok[None, :]
        mesh = ax.pcolormesh(h_edges, edges, hist, cmap="magma", norm=PowerNorm(0.5, vmin=0.0, vmax=max(hist.max(), 1e-9)),
                             shading="flat", rasterized=True)
        q16, q50, q84 = np.nanpercentile(vals, [16, 50, 84], axis=0)
        ax.plot(h, q50, color="w", lw=1.2, label="median")
        ax.plot(h, q16, color="w", lw=0.7, ls="--", label="16-84 %")
        ax.plot(h, q84, color="w", lw=0.7, ls="--")
        if tru is not None:
            ax.plot(h, tru[col], color="cyan", lw=1.5, label="truth")
        if name == "v":
            ax.set_yscale("symlog", linthresh=5.0)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_ylim(edges[0], edges[-1])
        _height_axis(ax, h_edges)
        ax.set_ylabel(LABELS[name])
        ax.set_title(_SHORT[name], fontsize=10)
        if col == 0:
            ax.legend(fontsize=8, loc="upper right", facecolor="0.3", labelcolor="w", framealpha=0.7)
    if mesh is not None:
        cb = fig.colorbar(mesh, ax=fig.axes[:3], shrink=0.9, pad=0.01)
        cb.set_label("fraction of samples per bin, per height")
    start = 0
    for col, ln in enumerate(LINES):
        ax = fig.add_subplot(gs[1, 3 * col : 3 * col + 3])
        dwl = ln.model_wavelengths() - ln.center_air_A
        sl = slice(start, start + ln.model_points)
        start += ln.model_points
        if rt is not None:
            p5, p16, p50, p84, p95 = np.nanpercentile(rt[:, sl], [5, 16, 50, 84, 95], axis=0)
            ax.fill_between(dwl, p5, p95, color="tab:orange", alpha=0.25, lw=0, label="round trip 5-95 %")
            ax.fill_between(dwl, p16, p84, color="tab:orange", alpha=0.5, lw=0, label="round trip 16-84 %")
            ax.plot(dwl, p50, color="tab:red", lw=1.2, label="round trip median")
        if y_obs is not None:
            ax.plot(dwl, y_obs[sl], "k.--", lw=0.8, ms=4, label="observed")
        ax.set_xlabel(r"$\Delta\lambda$ [$\AA$] from " + f"{ln.center_air_A:.2f} " + r"$\AA$ (air)")
        ax.set_ylabel("intensity / joint peak")
        ax.set_title(ln.label, fontsize=10)
        ax.set_xlim(dwl[0], dwl[-1])
        if ax.has_data():
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no profiles given", transform=ax.transAxes, ha="center", va="center")
    fig.suptitle(title or f"Posterior of one pixel: {post.sizes['draw']} samples")
    _caption(fig, JOINT_PEAK)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


# ---------------------------------------------------------------------------------------------
# maps of a scan
# ---------------------------------------------------------------------------------------------


def _map_wcs(result: xr.Dataset, header):
    """A 2D astropy WCS of the (y, x) plane, or None (pixel axes)."""
    from .io.fits import map_header

    meta = None
    if header is None and any(k.startswith("map_header") for k in result.attrs):
        meta = map_header(result)
    elif isinstance(header, xr.Dataset):
        keys = {k: v for k, v in header.attrs.items() if k.startswith("map_header")}
        if keys:
            meta = map_header(result.assign_attrs(keys))
    elif header is not None:
        meta = dict(header)
    if meta is None:
        return None
    import warnings

    import sunpy.coordinates  # noqa: F401  (registers the helioprojective frame: Solar-X/Y axes)
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning
    from astropy.wcs import WCS
    hdr = fits.Header()
    for k, v in meta.items():
        if isinstance(v, str | int | float | bool):
            hdr[k] = v
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        w = WCS(hdr, naxis=2)
    if not w.has_celestial:
        return None
    return w


def _as_time_text(value) -> str | None:
    """ISO text to the second of a datetime64, an astropy-readable string or a FITS DATE-OBS."""
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.size != 1:
        return None
    item = arr.reshape(())
    if np.issubdtype(item.dtype, np.datetime64):
        return None if np.isnat(item) else str(np.datetime_as_string(item, unit="s"))
    text = str(item.item() if hasattr(item, "item") else item).strip()
    if not text:
        return None
    try:
        return str(np.datetime_as_string(np.datetime64(text.replace(" ", "T").rstrip("Z"), "s"), unit="s"))
    except ValueError:
        return text


def observation_time(ds: xr.Dataset) -> str | None:
    """When the (one time step of) ``ds`` was observed, as text; None when it does not say.

    In order: a scalar ``time`` coordinate; the per-line ``time_<line>`` coordinates that
    :func:`radynversion.io.open_observation` gives (and inversion stores keep); the attrs
    ``date_obs_<line>`` or ``DATE-OBS`` / ``date_obs``; the ``DATE-OBS`` of a ``map_header`` attr.
    Times are given to the second, per line when the lines differ
    (``"H-alpha 2024-05-14T08:30:00, Ca II 8542 2024-05-14T08:30:10"``).
    """
    def one(getter) -> dict[str, str]:
        found = {}
        for ln in LINES:
            t = _as_time_text(getter(ln.key))
            if t:
                found[ln.label] = t
        return found

    def coord(name):
        return ds[name].values if name in ds.coords and ds[name].size == 1 else None

    t = _as_time_text(coord("time"))
    if t:
        return t
    for found in (one(lambda key: coord(f"time_{key}")), one(lambda key: ds.attrs.get(f"date_obs_{key}"))):
        if found:
            if len(set(found.values())) == 1:
                return next(iter(found.values()))
            return ", ".join(f"{label} {when}" for label, when in found.items())
    for key, value in ds.attrs.items():
        if key.lower().replace("-", "_") == "date_obs":
            return _as_time_text(value)
    for key, value in ds.attrs.items():
        if key.startswith("map_header") and isinstance(value, str):
            from astropy.io import fits

            hdr = fits.Header.fromstring(value, sep="\n")
            for card in ("DATE-OBS", "DATE_OBS", "DATE-BEG"):
                if card in hdr:
                    return _as_time_text(hdr[card])
    return None


def _quantile(da: xr.DataArray, q: float) -> tuple[xr.DataArray, float]:
    qs = np.asarray(da["quantile"].values, dtype=float)
    k = int(np.argmin(np.abs(qs - q)))
    return da.isel(quantile=k), float(qs[k])


def maps(
    result: xr.Dataset,
    heights_Mm: tuple[float, ...] = (0.5, 1.0, 1.5),
    time: int | None = None,
    variables: tuple[str, ...] = VARIABLES,
    header=None,
    path: str | Path | None = None,
    title: str | None = None,
):
    """Maps of an inversion: posterior median and 68 % interval width at chosen heights.

    One row per height (the nearest node), two columns per variable: the median (quantile
    0.5) and the width of the central 68 % interval (quantile 0.84 minus 0.16; the nearest
    quantiles present are used and named); a last row with the round-trip misfit, the joint
    peak intensity and the out-of-distribution score. Pixels the model does not trust
    (``trusted`` False, :mod:`radynversion.model.trust`) are outlined in every map, and the
    score panel's title counts them. Velocity maps use a diverging scale symmetric about 0 (red = downflow).
    The title ends with the observation time (:func:`observation_time`) when the result
    carries one; a caption defines the joint peak.

    Parameters
    ----------
    result : xarray.Dataset
        The output of :func:`radynversion.model.invert` (or of the engine) with spatial dims
        ``y``, ``x``: ``log_ne, log_T, v (..., quantile, height)``, ``misfit``, ``peak``.
    heights_Mm : tuple of float
        Heights [Mm] to show (nearest node each).
    time : int, optional
        Index along ``time`` when the result has that dim (default 0).
    variables : tuple of str
        Which of ``log_T``, ``log_ne``, ``v``, in that order of columns.
    header : mapping, xarray.Dataset or None
        The spatial WCS: a 2D FITS header mapping (:func:`radynversion.io.fits.map_header`),
        or the observation Dataset whose ``map_header`` attr applies (the result's ``y``/``x``
        pixel indices keep crops right); default the result's own ``map_header`` attr if it has
        one; otherwise pixel axes.
    path : path, optional
        Save the PNG here.
    title : str, optional
        Figure title (the observation time is added to it).

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> maps(result, heights_Mm=(0.5, 1.0, 1.5), header=scan, path="maps.png")  # doctest: +SKIP
    """
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    missing = [v for v in variables if v not in result]
    if missing:
        raise ValueError(f"maps: result has no {missing}; expected the output of invert")
    ds = result
    if "time" in ds.dims:
        ds = ds.isel(time=0 if time is None else int(time))
    for d in ("y", "x"):
        if d not in ds.dims:
            raise ValueError(f"maps: result has dims {tuple(ds.dims)}; expected spatial dims y and x")
    extra = [d for d in ds[variables[0]].dims if d not in ("y", "x", "quantile", "height")]
    if extra:
        raise ValueError(f"maps: result has extra dims {extra}; select one value of each (e.g. time=)")
    wcs = _map_wcs(ds, header)
    h = np.asarray(ds["height"].values, dtype=float)
    picks = [int(np.argmin(np.abs(h - z))) for z in heights_Mm]
    n_rows, n_cols = len(picks) + 1, 2 * len(variables)
    fig = plt.figure(figsize=(3.1 * n_cols + 0.5, 2.9 * n_rows + 0.6), constrained_layout=True)
    gs = fig.add_gridspec(n_rows, n_cols)
    axes = []

    def panel(r: int, c: int, img: np.ndarray, cmap: str, label: str, ttl: str, vmin=None, vmax=None):
        ax = fig.add_subplot(gs[r, c], projection=wcs) if wcs is not None else fig.add_subplot(gs[r, c])
        im = ax.imshow(img, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(ttl, fontsize=9)
        cb = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
        cb.set_label(label, fontsize=8)
        cb.ax.tick_params(labelsize=7)
        if wcs is not None:
            lon, lat = ax.coords[0], ax.coords[1]
            lon.set_axislabel("Solar-X [arcsec]" if c == 0 or r == n_rows - 1 else "", fontsize=8)
            lat.set_axislabel("Solar-Y [arcsec]" if c == 0 else "", fontsize=8)
            lon.set_ticklabel(size=7)
            lat.set_ticklabel(size=7)
            lon.set_major_formatter("s.s")
            lat.set_major_formatter("s.s")
            if c != 0:
                lat.set_ticklabel_visible(False)
            if r != n_rows - 1 and r != n_rows - 2:
                lon.set_ticklabel_visible(False)
        else:
            ax.set_xlabel("x [pixel]" if r >= n_rows - 2 else "", fontsize=8)
            ax.set_ylabel("y [pixel]" if c == 0 else "", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(5, integer=True))
        axes.append(ax)
        return ax

    for r, j in enumerate(picks):
        for k, name in enumerate(variables):
            da = ds[name].isel(height=j).transpose("quantile", "y", "x")
            med, qm = _quantile(da, 0.5)
            lo, qlo = _quantile(da, 0.16)
            hi, qhi = _quantile(da, 0.84)
            img = np.asarray(med.values, dtype=float)
            width = np.asarray((hi - lo).values, dtype=float)
            if name == "v":
                lim = float(np.nanpercentile(np.abs(img), 99)) if np.isfinite(img).any() else 1.0
                lim = max(lim, 1.0)
                kw = {"vmin": -lim, "vmax": lim}
            else:
                kw = {}
                if np.isfinite(img).any():
                    kw = dict(zip(("vmin", "vmax"), np.nanpercentile(img, [1, 99]), strict=True))
            panel(r, 2 * k, img, _CMAPS[name], LABELS[name],
                  f"{_SHORT[name]} median, {h[j]:.2f} Mm" + ("" if qm == 0.5 else f" (q{qm:g})"), **kw)
            wkw = {}
            if np.isfinite(width).any():
                wkw = {"vmin": 0.0, "vmax": float(np.nanpercentile(width, 99)) or None}
            panel(r, 2 * k + 1, width, "cividis", f"q{qhi:g} - q{qlo:g} [{_UNITS[name]}]",
                  f"{_SHORT[name]} {100 * (qhi - qlo):.0f} % width, {h[j]:.2f} Mm", **wkw)
    last = n_rows - 1
    if "misfit" in ds:
        mis = np.asarray(ds["misfit"].values, dtype=float)
        vmax = float(np.nanpercentile(mis, 99)) if np.isfinite(mis).any() else None
        panel(last, 0, mis, "magma", "RMS / joint peak", "round-trip misfit", vmin=0.0, vmax=vmax)
    if "peak" in ds:
        pk = np.asarray(ds["peak"].values, dtype=float)
        unit = ds["peak"].attrs.get("units", "")
        scale = np.nanmax(np.abs(pk)) if np.isfinite(pk).any() else 1.0
        exp = int(np.floor(np.log10(scale))) if scale > 0 else 0
        panel(last, 1, pk / 10.0**exp, "gray", f"$10^{{{exp}}}$ {unit}", "joint peak intensity")
    if "ood_score" in ds and "trusted" in ds and n_cols >= 3:
        score = np.asarray(ds["ood_score"].values, dtype=float)
        ok = np.asarray(ds["trusted"].values, dtype=bool)
        inverted = ~np.asarray(ds["mask"].values, dtype=bool) if "mask" in ds else np.ones_like(ok)
        n_inv = int(inverted.sum())
        if np.isfinite(score).any():
            ttl = f"OOD score: {int((ok & inverted).sum())} of {n_inv} trusted (<= 1)"
            vmax = max(2.0, float(np.nanpercentile(score, 99)))
            panel(last, 2, score, "Reds", "ood_score (1 = threshold)", ttl, vmin=0.0, vmax=vmax)
            bad = (~ok & inverted).astype(float)
            if bad.any():
                for ax in axes:
                    ax.contour(bad, levels=[0.5], colors="black", linewidths=0.6)
        else:
            why = ("no pixel was inverted" if n_inv == 0 else "the model carries no trust reference")
            panel(last, 2, np.zeros_like(score), "Greys", "", f"OOD score: {why}", vmin=0.0, vmax=1.0)
    when = observation_time(ds)
    fig.suptitle((title or "Posterior maps" + (f" (time index {time or 0})" if "time" in result.dims else ""))
                 + (f"\nobserved {when}" if when else ""))
    _caption(fig, JOINT_PEAK + "; misfit: RMS of round trip - observed over both windows, mean over draws"
             + "; black outlines: pixels unlike the training data (not trusted)")
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def verification(report: xr.Dataset, path: str | Path | None = None, title: str | None = None):
    """Observed profiles against the profiles of the inferred atmospheres
    (:func:`radynversion.verify.verify`).

    Per pixel, both lines on their model windows against air wavelength [Angstrom]: the
    observation, the INN's round trip (its forward emulator on the posterior-median atmosphere,
    ``y_round_trip``, when the report has it) and the NLTE re-synthesis of the same atmosphere,
    all divided by the observation's joint peak; the INN misfit (the inversion's, averaged over
    posterior draws) and the NLTE one in the pixel's title.
    """
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    n = report.sizes["pixel"]
    per_row = min(2, max(n, 1))
    rows = max(1, -(-n // per_row))
    fig = plt.figure(figsize=(6.6 * per_row, 3.1 * rows + 0.9), layout="constrained")
    subfigs = fig.subfigures(rows, per_row, squeeze=False)
    bounds = np.cumsum([0] + [ln.model_points for ln in LINES])
    for k, sf in enumerate(subfigs.ravel()):
        if k >= n:
            continue
        r = report.isel(pixel=k)
        axes = sf.subplots(1, len(LINES), sharey=True)
        curves = [("y_observed", dict(color="k", marker=".", ls="--", lw=0.8, ms=4), "observed"),
                  ("y_round_trip", dict(color="C0", lw=1.3), "INN round trip"),
                  ("y_nlte", dict(color="C3", lw=1.3), "NLTE re-synthesis")]
        for j, (ax, ln) in enumerate(zip(axes, LINES, strict=True)):
            wl = ln.model_wavelengths()
            for var, style, label in curves:
                if var in r:
                    y = np.asarray(r[var].values, dtype=float)[bounds[j]:bounds[j + 1]]
                    if np.isfinite(y).any():
                        ax.plot(wl, y, label=label, **style)
            ax.axvline(ln.center_air_A, color="0.75", lw=0.6, ls=":")
            ax.set_xlim(wl[0], wl[-1])
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.ticklabel_format(axis="x", useOffset=False, style="plain")
            ax.tick_params(labelsize=8)
            ax.set_xlabel(r"wavelength [$\AA$] (air)", fontsize=8)
            ax.set_title(ln.label, fontsize=9)
        axes[0].set_ylabel("I / joint peak", fontsize=8)
        axes[0].legend(fontsize=7)
        where = ", ".join(f"{c.removesuffix('_index')}={int(r[c])}" for c in report.coords if c.endswith("_index"))
        state = "" if "status" not in r or int(r["status"]) == 0 else " (NLTE not converged)"
        sf.suptitle(f"{where}: misfit INN {float(r['misfit']):.3f}, NLTE {float(r['misfit_nlte']):.3f}{state}",
                    fontsize=9)
    if n == 0:
        fig.text(0.5, 0.5, "no pixels checked", ha="center", va="center")
    fig.suptitle(title or "NLTE check of the inferred (posterior-median) atmospheres", fontsize=10)
    _caption(fig, JOINT_PEAK + "; misfits: RMS over both windows in joint peaks")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def evaluation_coverage(per_height: xr.Dataset, path: str | Path | None = None, title: str | None = None):
    """Calibration against height (:func:`radynversion.evaluate.evaluate`): the fraction
    of true values inside the posterior's central 68 % and 90 % intervals, with the nominal
    levels, the +-0.05 tolerance and the prior-only baseline (thin grey)."""
    plt = _pyplot()
    h = np.asarray(per_height["height"].values, dtype=float)
    edges = _height_edges(h)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True, constrained_layout=True)
    for ax, name in zip(axes, VARIABLES, strict=True):
        ph = per_height.sel(variable=name)
        for level, colour in ((68, "C0"), (90, "C1")):
            nominal = level / 100
            ax.axhspan(nominal - 0.05, nominal + 0.05, color=colour, alpha=0.12, lw=0)
            ax.axhline(nominal, color=colour, lw=0.8, ls="--")
            ax.plot(h, ph[f"prior_coverage{level}"].values, color="0.6", lw=0.8)
            ax.plot(h, ph[f"coverage{level}"].values, ".-", color=colour, lw=1.2, ms=3,
                    label=f"{level} % interval")
        _height_axis(ax, edges)
        ax.set_ylim(0, 1.02)
        ax.set_title(LABELS[name], fontsize=10)
    axes[0].set_ylabel("fraction of true values inside")
    axes[0].plot([], [], color="0.6", lw=0.8, label="prior only")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title or "Posterior calibration", fontsize=11)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def evaluation_errors(per_height: xr.Dataset, path: str | Path | None = None, title: str | None = None,
                      label: str = "posterior median"):
    """Accuracy against height (:func:`radynversion.evaluate.evaluate`): top, the median
    absolute error of the posterior median (legend ``label``) and of the prior-only baseline;
    bottom, the posterior's 68 % width over the prior's (near 1: the profiles do not constrain
    it)."""
    plt = _pyplot()
    h = np.asarray(per_height["height"].values, dtype=float)
    edges = _height_edges(h)
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharex=True, constrained_layout=True)
    for k, name in enumerate(VARIABLES):
        ph = per_height.sel(variable=name)
        ax = axes[0, k]
        ax.plot(h, ph["error"].values, ".-", color="C3", lw=1.2, ms=3, label=label)
        ax.plot(h, ph["prior_error"].values, "-", color="0.5", lw=1.0, label="prior only")
        ax.set_ylabel(f"median |error| [{_UNITS[name]}]")
        ax.set_yscale("log")
        ax.set_title(LABELS[name], fontsize=10)
        _height_axis(ax, edges)
        ax.set_xlabel("")
        ax = axes[1, k]
        ax.plot(h, ph["width_ratio"].values, ".-", color="C2", lw=1.2, ms=3)
        ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
        ax.axhline(0.8, color="0.5", lw=0.6, ls=":")
        ax.set_ylim(0, min(3.0, max(1.3, float(np.nanmax(ph["width_ratio"].values)) * 1.05)))
        ax.set_ylabel("68 % width / prior's")
        _height_axis(ax, edges)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title or "Posterior accuracy", fontsize=11)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def _flare_pixels(truth: xr.Dataset) -> np.ndarray | None:
    """``(y, x)`` mask of the flaring (ribbon) pixels of a truth Dataset: ``kind`` equal to its
    ``flare`` flag (:func:`radynversion.datasets.example_truth`); None without ``kind``."""
    if "kind" not in truth:
        return None
    kind = truth["kind"].transpose("y", "x")
    meanings = str(kind.attrs.get("flag_meanings", "quiet weak flare")).split()
    values = list(np.atleast_1d(kind.attrs.get("flag_values", range(len(meanings)))))
    if "flare" not in meanings:
        return None
    return np.asarray(kind.values) == values[meanings.index("flare")]


def _median_abs(diff: np.ndarray, sel: np.ndarray | None) -> float:
    if sel is None:
        return float("nan")
    d = np.abs(diff[sel & np.isfinite(diff)])
    return float(np.median(d)) if d.size else float("nan")


def truth_comparison(
    result: xr.Dataset,
    truth: xr.Dataset,
    height_Mm: float = 1.0,
    path: str | Path | None = None,
    title: str | None = None,
):
    """An inversion against known true atmospheres (synthetic scans such as the example scan).

    One row per variable: the true map and the posterior-median map at ``height_Mm`` (nearest
    node, one colour scale), their difference, and the median against the truth over every
    pixel and every chromospheric node (0.5 Mm to the transition region of the true
    atmosphere, :func:`radynversion.atmosphere.height_bands`): the density of all pixels
    on a log colour scale, the flaring (ribbon) pixels (``truth["kind"]`` = flare) on top in
    red, and the 1:1 line. Median absolute errors are quoted for all pixels and for the flare
    pixels alone, at ``height_Mm`` and over the chromosphere.

    Parameters
    ----------
    result : xarray.Dataset
        ``log_ne, log_T, v (y, x, quantile, height)`` (an inversion store or
        :func:`radynversion.model.invert` output).
    truth : xarray.Dataset
        ``log_ne, log_T, v (y, x, height)`` on the same pixels and nodes
        (:func:`radynversion.datasets.example_truth`), optionally ``kind (y, x)``.
    """
    from matplotlib.colors import LogNorm

    from .atmosphere import height_bands

    plt = _pyplot()
    med = result.sel(quantile=0.5, method="nearest")
    h = np.asarray(result["height"].values, dtype=float)
    j = int(np.argmin(np.abs(h - height_Mm)))
    t_log_t = np.asarray(truth["log_T"].transpose("y", "x", "height").values, dtype=float)
    chrom = (height_bands(t_log_t.reshape(-1, h.size), h) == 1).reshape(t_log_t.shape)
    flare = _flare_pixels(truth)
    n_flare = 0 if flare is None else int(flare.sum())
    fig, axes = plt.subplots(3, 4, figsize=(16, 10.5), constrained_layout=True)
    for r, name in enumerate(VARIABLES):
        unit = _UNITS[name]
        tv = np.asarray(truth[name].transpose("y", "x", "height").values, dtype=float)
        mv = np.asarray(med[name].transpose("y", "x", "height").values, dtype=float)
        both = np.concatenate([tv[..., j].ravel(), mv[..., j].ravel()])
        both = both[np.isfinite(both)]
        if name == "v":
            lim = max(float(np.percentile(np.abs(both), 99)), 1.0) if both.size else 1.0
            lo, hi = -lim, lim
        else:
            lo, hi = np.percentile(both, [1, 99]) if both.size else (0.0, 1.0)
        for c, (img, what) in enumerate(((tv[..., j], "true"), (mv[..., j], "inferred median"))):
            im = axes[r, c].imshow(img, origin="lower", cmap=_CMAPS[name], vmin=lo, vmax=hi,
                                   interpolation="nearest")
            axes[r, c].set_title(f"{_SHORT[name]} {what}, {h[j]:.2f} Mm", fontsize=9)
            fig.colorbar(im, ax=axes[r, c], shrink=0.85).set_label(LABELS[name], fontsize=8)
        diff = mv[..., j] - tv[..., j]
        dl = float(np.nanpercentile(np.abs(diff), 98)) if np.isfinite(diff).any() else 1.0
        im = axes[r, 2].imshow(diff, origin="lower", cmap="RdBu_r", vmin=-dl, vmax=dl, interpolation="nearest")
        at_j = f"median |error| all {_median_abs(diff, np.ones(diff.shape, bool)):.2g}"
        if flare is not None:
            at_j += f", flare {_median_abs(diff, flare):.2g}"
        axes[r, 2].set_title(f"inferred - true, {h[j]:.2f} Mm\n{at_j} {unit}", fontsize=9)
        fig.colorbar(im, ax=axes[r, 2], shrink=0.85).set_label(f"[{unit}]", fontsize=8)
        for c in range(3):
            axes[r, c].set_xlabel("x [pixel]", fontsize=8)
            axes[r, c].set_ylabel("y [pixel]", fontsize=8)
        ax = axes[r, 3]
        ok = chrom & np.isfinite(mv) & np.isfinite(tv)
        in_flare = None if flare is None else ok & flare[..., None]
        tx, my = tv[ok], mv[ok]
        fx, fy = (tv[in_flare], mv[in_flare]) if in_flare is not None else (np.zeros(0), np.zeros(0))
        if name == "v":
            tx, my, fx, fy = (velocity_transform(a) for a in (tx, my, fx, fy))
        if tx.size:
            lo2, hi2 = np.percentile(np.concatenate([tx, my]), [0.5, 99.5])
            if fx.size:
                flo, fhi = np.percentile(np.concatenate([fx, fy]), [0.5, 99.5])
                lo2, hi2 = min(lo2, flo), max(hi2, fhi)
            pad = 0.03 * max(hi2 - lo2, 1e-3)
            lo2, hi2 = lo2 - pad, hi2 + pad
            *_, dens = ax.hist2d(tx, my, bins=70, range=[[lo2, hi2], [lo2, hi2]], cmap="Greys",
                                 norm=LogNorm(), cmin=1, rasterized=True)
            cb = fig.colorbar(dens, ax=ax, shrink=0.85)
            cb.set_label("pixel-nodes per bin (all pixels)", fontsize=8)
            if fx.size:
                ax.scatter(fx, fy, s=3, color="C3", alpha=0.35, lw=0, rasterized=True,
                           label=f"flare pixels ({n_flare})")
            ax.plot([lo2, hi2], [lo2, hi2], color="C0", lw=0.8, label="1:1")
            ax.set_xlim(lo2, hi2)
            ax.set_ylim(lo2, hi2)
            err = _median_abs(mv - tv, ok)
            text = f"chromosphere median |error|: all {err:.2g}"
            if in_flare is not None:
                text += f", flare {_median_abs(mv - tv, in_flare):.2g}"
            ax.set_title(f"{text} {unit}", fontsize=9)
            ax.legend(fontsize=7, loc="upper left", markerscale=3)
        if name == "v":
            ticks = np.array([-100, -10, -1, 0, 1, 10, 100], dtype=float)
            tp = velocity_transform(ticks)
            keep = (tp >= ax.get_xlim()[0]) & (tp <= ax.get_xlim()[1])
            ax.set_xticks(tp[keep], [f"{t:g}" for t in ticks[keep]])
            ax.set_yticks(tp[keep], [f"{t:g}" for t in ticks[keep]])
        ax.set_xlabel(f"true {LABELS[name]}", fontsize=8)
        ax.set_ylabel(f"inferred median {LABELS[name]}", fontsize=8)
    fig.suptitle(title or "Inversion against the true atmospheres", fontsize=11)
    if path is not None:
        fig.savefig(path, dpi=90)
    return fig
