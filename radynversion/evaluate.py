"""How good is a model? Accuracy and calibration on atmospheres it never saw.

:func:`evaluate` scores any model on any population of atmospheres with their profiles: the
held-out split of the model's own training set (``EvaluationSettings(split="held-out")``, the
default: :func:`evaluation_split`, chosen by sample label, never trained or validated on) or a
whole store the model never trained on (``split="all"``: another generator's store, or a netCDF
file of profiles and atmospheres, :func:`open_population`). It observes the profiles as CRISP would
(:func:`radynversion.instrument.degrade` at the CRISP tunings, the model's transmission
FWHM, Gaussian noise of a fraction of the joint peak), inverts them with
:func:`radynversion.model.invert`, and compares with the true atmospheres:

* **forward emulator**: ``forward(true atmosphere)`` vs the noise-free profiles on the model
  windows, RMS per line in % of the joint peak;
* **round trip**: ``forward(posterior samples)`` vs the observed profiles (``misfit``);
* **accuracy**: median |posterior median - truth| per parameter and height band;
* **calibration**: the fraction of true values inside the central 68 % (16-84 %) and 90 %
  (5-95 %) intervals per parameter and band;
* **constraint**: the posterior 68 % width over the prior's (floored at
  :data:`PRIOR_WIDTH_FLOOR`); near 1 the profiles do not constrain the parameter there, and
  the report says so;
* **prior-only baseline**: the same metrics for the per-height quantiles of the training
  samples, ignoring the data. A model must beat it clearly;
* **transition-region height**: where ``log_T`` first reaches :data:`TR_LOG_T` above the
  photosphere, the flare diagnostic the node-by-node scores only see indirectly. Its
  posterior quantiles are read off the ``log_T`` quantile profiles
  (:func:`transition_region_heights`), and scored like a parameter: error, coverage, width.
* **cross-prior score** (``summary["cross_prior"]``, :func:`cross_prior_scores`): on the
  chromosphere band up to :data:`CROSS_PRIOR_TOP_MM` (0.5-2 Mm, below each atmosphere's
  transition region), the 68 / 90 % coverage and the median error of the posterior median,
  each beside the evaluated population's own marginal baseline: its per-height median as the
  answer and its per-height 16-84 / 5-95 % ranges as intervals (coverage near nominal by
  construction). Out of the training prior a model can be narrow and wrong; this says whether
  it still beats knowing only the population (issue 23).

Height bands, per atmosphere: photosphere ``h < 0.5 Mm``; chromosphere from 0.5 Mm to the
transition region (the lowest node with ``log_T >= 4.5``); corona above. Velocities are
compared in km/s (positive = downflow).

Example
-------
>>> from radynversion.evaluate import EvaluationSettings, cross_prior_lines, evaluate
>>> s = evaluate(None, "population.nc", EvaluationSettings(split="all")).summary  # doctest: +SKIP
>>> for line in cross_prior_lines(s):  # doctest: +SKIP
...     print(line)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from ._version import __version__
from .atmosphere import BANDS, PHOTOSPHERE_TOP_MM, TR_LOG_T, VARIABLES, height_bands, velocity_transform
from .config import from_toml
from .datasets import (
    DEFAULT_SET_LABELS,
    evaluation_split,
    sample_labels,
    source_label,
    training_set,
    usable_samples,
)
from .errors import ConfigError, ProfileSchemaError, StoreError
from .instrument import crisp_tunings, degrade
from .lines import LINES
from .model.base import PosteriorModel
from .model.checkpoint import DEFAULT_MODEL_PATH, file_sha256, load_model
from .model.config import TrainConfig
from .model.coverage import renormalise
from .model.invert import invert
from .model.preprocess import atmosphere_to_array, input_options, normalise_profiles
from .schema import source_name

__all__ = ["evaluation_rows", "BANDS", "CROSS_PRIOR_TOP_MM", "SPLITS", "TR_LOG_T", "EvaluationResult", "EvaluationSettings",
           "cross_prior_layer", "cross_prior_lines", "cross_prior_scores", "evaluate", "forward_profiles",
           "height_bands", "open_population", "round_trip_profiles", "transition_region_heights"]

#: quantiles the evaluation asks for (5, 16, 50, 84, 95 %)
_Q = (0.05, 0.16, 0.5, 0.84, 0.95)
#: how figures name each model kind
MODEL_LABELS = {"inn": "INN", "cinn": "cINN"}
#: a posterior whose 68 % interval is at least this fraction of the prior's is "unconstrained"
UNCONSTRAINED_WIDTH_RATIO: float = 0.8
#: smallest prior 68 % width a posterior width is compared with (dex, dex, km/s): where the
#: prior itself is narrower (e.g. the photospheric temperature at the base of every
#: atmosphere) the ratio would only measure noise
PRIOR_WIDTH_FLOOR: dict[str, float] = {"log_ne": 0.02, "log_T": 0.02, "v": 0.5}
#: |v| [km/s] from which a flow counts as strong: the velocity prior is heavy-tailed (most nodes
#: flow by a few km/s, flare condensations and evaporation by tens to hundreds), so a band's
#: median error is set by the slow nodes; the report also scores the strong flows alone
STRONG_FLOW_KMS: float = 10.0
#: lower edges [km/s] of the classes of the strongest chromospheric |v| of an atmosphere by which
#: the report breaks down the round trip and the emulator's error (the last class is open)
FLOW_CLASSES_KMS: tuple[float, ...] = (0.0, 3.0, 10.0, 30.0)
#: top [Mm] of the cross-prior score's layer: the chromosphere band from 0.5 Mm up to this height
#: (and below each atmosphere's transition region), where issue 23 compares populations
CROSS_PRIOR_TOP_MM: float = 2.0
#: which atmospheres of the data :func:`evaluate` scores: the model's held-out split, or all
SPLITS: tuple[str, ...] = ("held-out", "all")


@dataclass(frozen=True)
class EvaluationSettings:
    """How :func:`evaluate` observes and scores a population: one object, recorded in the report.

    Attributes
    ----------
    split : {"held-out", "all"}
        ``"held-out"``: the model's own evaluation split of ``data`` (the samples whose labels
        :func:`evaluation_split` holds out at the model's ``test_fraction``); the prior-only
        baseline is the rest. ``"all"``: every usable sample, for a population the model never
        trained on; the baseline is then ``prior`` (default: the population itself).
    samples : int
        Posterior draws per atmosphere.
    noise : float
        Noise standard deviation, fraction of each profile pair's joint peak.
    seed : int
        Seed of the noise and of the draws.
    max_samples : int, optional
        Evaluate at most this many atmospheres (a seeded random subset).
    pixel_samples : int
        Draws of the single-pixel figure's pixel.
    precision : {"fp32", "bf16", "tf32", "auto"}
        Arithmetic of the posterior passes (:func:`radynversion.model.invert`). Default fp32:
        the same figures on every machine (``"auto"`` picks bf16 only where the CPU or GPU
        has it, and its rounding moves the medians in the fourth digit).
    tunings : mapping line key -> ndarray, optional
        The observing program [air Angstrom] per line (default: CRISP's,
        :func:`radynversion.instrument.crisp_tunings`); each must cover the model window, or,
        for a model trained on partial coverage, may fall short of it, have gaps, or leave a
        line out (that line is not observed).
    dn : bool
        Observe in DN: each line scaled by its own unknown gain (per atmosphere, log-uniform
        over a factor 10) and labelled ``DN``, as uncalibrated data are; only a model normalised
        per line (``CINNConfig.normalisation = "per_line"``) takes them.

    Example
    -------
    >>> EvaluationSettings(split="all", samples=256).split
    'all'
    """

    split: str = "held-out"
    samples: int = 512
    noise: float = 0.01
    seed: int = 0
    max_samples: int | None = None
    pixel_samples: int = 2048
    precision: str = "fp32"
    tunings: Mapping[str, np.ndarray] | None = None
    dn: bool = False

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"evaluate: split = {self.split!r}; expected one of {list(SPLITS)}")
        if self.samples < 2 or self.pixel_samples < 2:
            raise ConfigError(f"evaluate: samples = {self.samples}, pixel_samples = {self.pixel_samples}; "
                              "expected at least 2 draws per atmosphere")
        if not self.noise >= 0:
            raise ConfigError(f"evaluate: noise = {self.noise}; expected a fraction of the peak >= 0")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"evaluate: max_samples = {self.max_samples}; expected at least 1")

    def changed(self, **changes: Any) -> EvaluationSettings:
        """A copy with some fields changed; ``all_samples=True`` (the former keyword) means
        ``split="all"``."""
        if "all_samples" in changes:
            changes["split"] = "all" if changes.pop("all_samples") else changes.get("split", self.split)
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"evaluate: unknown settings {sorted(unknown)}; EvaluationSettings has "
                            f"{[f.name for f in fields(self)]}")
        return replace(self, **changes)


@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate` returns.

    Attributes
    ----------
    summary : dict
        JSON-ready: settings, forward and round-trip errors, per parameter and band the
        model's and the prior's median errors, coverages and width ratio, and plain-language
        ``findings``.
    per_height : xarray.Dataset
        Over ``(variable, height)``: ``error``, ``prior_error`` (median absolute),
        ``coverage68``, ``coverage90``, ``prior_coverage68``, ``prior_coverage90``,
        ``width_ratio`` (posterior over prior 68 % width, medians).
    pixel : xarray.Dataset
        The example pixel of the single-pixel figure: ``log_ne_samples, ... (draw, height)``,
        ``truth_<var>(height)``, ``observed(point)``, ``round_trip(draw_rt, point)``.
    """

    summary: dict[str, Any]
    per_height: xr.Dataset
    pixel: xr.Dataset


def transition_region_heights(log_T: np.ndarray, height_Mm: np.ndarray) -> np.ndarray:
    """Height [Mm] where ``log_T`` first reaches :data:`TR_LOG_T` above the photosphere band.

    Applied to the quantile profiles of a posterior it gives the quantiles of the transition
    region's height: if every draw is cool below its transition region and hot above it,
    ``P(log_T(h) >= TR_LOG_T) = P(z_TR <= h)``, so the height where the ``1 - q`` quantile of
    ``log_T`` crosses ``TR_LOG_T`` is the ``q`` quantile of ``z_TR`` (to the node spacing;
    linear between the two nodes around the crossing).

    Parameters
    ----------
    log_T : ndarray, shape ``(..., H)``
        Temperatures [dex K] on the nodes.
    height_Mm : ndarray, shape ``(H,)``
        Node heights [Mm], increasing.

    Returns
    -------
    ndarray, shape ``(...)``
        NaN where the profile never reaches ``TR_LOG_T`` above :data:`PHOTOSPHERE_TOP_MM`.
    """
    h = np.asarray(height_Mm, dtype=float)
    t = np.asarray(log_T, dtype=float)
    hot = (t >= TR_LOG_T) & (h >= PHOTOSPHERE_TOP_MM)
    j = hot.argmax(axis=-1)
    found = hot.any(axis=-1)
    i = np.maximum(j - 1, 0)
    t_lo = np.take_along_axis(t, i[..., None], axis=-1)[..., 0]
    t_hi = np.take_along_axis(t, j[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.clip((TR_LOG_T - t_lo) / (t_hi - t_lo), 0.0, 1.0)
    f = np.where((j > 0) & (t_hi > t_lo) & (h[i] >= PHOTOSPHERE_TOP_MM), f, 1.0)
    return np.where(found, h[i] + f * (h[j] - h[i]), np.nan)


def _transition_region(post_log_T: np.ndarray, prior_log_T: np.ndarray, true_log_T: np.ndarray,
                       h: np.ndarray) -> dict[str, Any]:
    """Scores of the transition region's height: ``post_log_T`` ``(N, H, 5)`` and
    ``prior_log_T`` ``(H, 5)`` quantiles at :data:`_Q`, ``true_log_T`` ``(N, H)``."""
    # the q quantile of the height is where the 1 - q quantile of log_T crosses
    post = transition_region_heights(np.moveaxis(post_log_T[..., ::-1], -1, -2), h)  # (N, 5)
    prior = transition_region_heights(prior_log_T[:, ::-1].T, h)  # (5,)
    truth = transition_region_heights(true_log_T, h)
    ok = np.isfinite(truth) & np.isfinite(post).all(axis=1)
    out: dict[str, Any] = {"definition": f"lowest height above {PHOTOSPHERE_TOP_MM} Mm with log_T >= "
                                         f"{TR_LOG_T} (linear between nodes), Mm",
                           "n": int(ok.sum())}
    if not ok.any():
        return out
    for name, q in (("posterior", post[ok]), ("prior", np.broadcast_to(prior, post[ok].shape))):
        m = _metrics(q, truth[ok])
        out[name] = {"median_abs_error_Mm": _median(m["error"]), "coverage68": _mean(m["in68"]),
                     "coverage90": _mean(m["in90"]), "median_width68_Mm": _median(m["width68"])}
    return out


def cross_prior_layer(log_T: np.ndarray, height_Mm: np.ndarray, top_Mm: float = CROSS_PRIOR_TOP_MM) -> np.ndarray:
    """The nodes of the cross-prior score: the chromosphere band of :func:`height_bands` (from
    0.5 Mm up to, not including, the lowest node with ``log_T >= TR_LOG_T``) no higher than
    ``top_Mm``.

    ``log_T`` ``(N, H)`` and ``height_Mm`` ``(H,)`` as for
    :func:`radynversion.atmosphere.height_bands`; ``top_Mm`` is the layer's highest height [Mm].
    Returns a boolean mask ``(N, H)``.

    Example
    -------
    >>> import numpy as np
    >>> h = np.array([0.0, 0.6, 1.0, 1.5, 2.1, 3.0])
    >>> cross_prior_layer(np.array([[3.8, 3.9, 4.0, 4.2, 4.3, 6.0],    # TR at 3.0 Mm: up to 2 Mm
    ...                             [3.8, 3.9, 4.6, 5.0, 6.0, 6.0]]), h)  # TR at 1.0 Mm
    array([[False,  True,  True,  True, False, False],
           [False,  True, False, False, False, False]])
    """
    h = np.asarray(height_Mm, dtype=float)
    return (height_bands(log_T, h) == 1) & (h <= top_Mm)[None, :]


def cross_prior_scores(post_q: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray],
                       height_Mm: np.ndarray, top_Mm: float = CROSS_PRIOR_TOP_MM) -> dict[str, Any]:
    """The cross-prior score: coverage and error on :func:`cross_prior_layer`, beside the
    population's own marginal baseline.

    The baseline knows only the evaluated population: at each height it answers the
    population's median and gives its 16-84 % and 5-95 % ranges as intervals (quantiles over
    all ``N`` atmospheres at that height). A posterior that does not beat it on error, or whose
    coverage falls far below nominal while the baseline's is near it, is wrong for this
    population, however narrow.

    Parameters
    ----------
    post_q : mapping variable -> ndarray, shape ``(N, H, 5)``
        Posterior quantiles at (0.05, 0.16, 0.5, 0.84, 0.95) of ``log_ne``, ``log_T``, ``v``.
    truth : mapping variable -> ndarray, shape ``(N, H)``
        True ``log_ne`` [dex cm^-3], ``log_T`` [dex K], ``v`` [km/s].
    height_Mm : ndarray, shape ``(H,)``
    top_Mm : float
        Top of the layer [Mm].

    Returns
    -------
    dict
        ``layer`` (its definition), ``baseline`` (its definition), ``atmospheres`` (with at
        least one node in the layer), ``nodes`` and, per variable, ``coverage68``,
        ``coverage90``, ``median_abs_error`` and the same three prefixed ``baseline_``.

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> h = np.linspace(0.0, 3.0, 31)
    >>> t = {"log_T": np.where(h < 2.5, 4.0, 6.0) + 0.1 * rng.normal(size=(400, 31)),
    ...      "log_ne": rng.normal(12, 1, (400, 31)), "v": rng.normal(0, 5, (400, 31))}
    >>> wide = {k: a[..., None] + np.array([-9, -8, 0, 8, 9.0]) for k, a in t.items()}  # always hits
    >>> s = cross_prior_scores(wide, t, h)
    >>> s["log_ne"]["coverage68"], round(s["log_ne"]["baseline_coverage68"], 1)
    (1.0, 0.7)
    """
    h = np.asarray(height_Mm, dtype=float)
    layer = cross_prior_layer(truth["log_T"], h, top_Mm)
    out: dict[str, Any] = {
        "layer": f"chromosphere band (from {PHOTOSPHERE_TOP_MM} Mm to below the lowest node above it with "
                 f"true log_T >= {TR_LOG_T}) up to {top_Mm:g} Mm",
        "baseline": "the evaluated population's own per-height marginals: its median as the answer, its "
                    "16-84 % and 5-95 % ranges as the intervals",
        "atmospheres": int(layer.any(axis=1).sum()),
        "nodes": int(layer.sum()),
    }
    for v in VARIABLES:
        t = np.asarray(truth[v], dtype=float)
        base_q = np.quantile(t, _Q, axis=0).T  # (H, 5): the population's own marginals
        m_post = _metrics(np.asarray(post_q[v], dtype=float), t)
        m_base = _metrics(np.broadcast_to(base_q, (*t.shape, len(_Q))), t)
        out[v] = {"coverage68": _mean(m_post["in68"][layer]), "coverage90": _mean(m_post["in90"][layer]),
                  "median_abs_error": _median(m_post["error"][layer]),
                  "baseline_coverage68": _mean(m_base["in68"][layer]),
                  "baseline_coverage90": _mean(m_base["in90"][layer]),
                  "baseline_median_abs_error": _median(m_base["error"][layer])}
    return out


def cross_prior_lines(summary: Mapping[str, Any]) -> list[str]:
    """The cross-prior score of a report as text: a header and one line per parameter.

    Parameters
    ----------
    summary : mapping
        :attr:`EvaluationResult.summary` (or a ``report.json`` read back).

    Returns
    -------
    list of str
        Empty where the report has no cross-prior score (reports made before it existed).
    """
    cp = summary.get("cross_prior")
    if not cp:
        return []
    units = {"log_ne": "dex", "log_T": "dex", "v": "km/s"}
    lines = [f"cross-prior layer, {cp['atmospheres']} atmospheres ({cp['nodes']} nodes; chromosphere "
             f"{PHOTOSPHERE_TOP_MM}-{CROSS_PRIOR_TOP_MM:g} Mm below the TR): model [population's own marginals]"]
    for v in VARIABLES:
        m = cp[v]
        lines.append(f"{v:<6s} 68 / 90 % coverage {m['coverage68']:.2f} / {m['coverage90']:.2f} "
                     f"[{m['baseline_coverage68']:.2f} / {m['baseline_coverage90']:.2f}]   median |error| "
                     f"{m['median_abs_error']:.3g} [{m['baseline_median_abs_error']:.3g}] {units[v]}")
    return lines


def open_population(path: str | Path | None = None) -> xr.Dataset:
    """A population of atmospheres with their profiles, from a path, for :func:`evaluate`.

    Parameters
    ----------
    path : path, optional
        A store of ``radynversion synth`` or ``import-radyn`` (a Zarr directory:
        :func:`radynversion.datasets.training_set`, its finished shards and converged samples),
        or any file xarray opens (netCDF) holding ``I_halpha(sample, wl_halpha)``,
        ``I_ca8542(sample, wl_ca8542)`` in the profile schema (units in attrs, air or vacuum
        wavelengths) and true ``log_ne``, ``log_T``, ``v (sample, height)`` on the model's
        node grid. Default: the shipped training set.

    Returns
    -------
    xarray.Dataset
        In memory, its source path in ``encoding["source"]``.

    Raises
    ------
    StoreError
        Nothing readable at ``path``.
    ProfileSchemaError
        A variable of the population is missing or has other dims.
    """
    if path is None or Path(path).is_dir() or Path(path).suffix == ".toml":
        return training_set(path)  # a store, or a union of stores (datasets.training_union)
    p = Path(path)
    if not p.is_file():
        raise StoreError(f"{p}: no population here (expected a Zarr store or a netCDF file)")
    try:
        with xr.open_dataset(p) as ds:
            data = ds.load()
    except Exception as err:  # noqa: BLE001 - any reader failure is one message
        raise StoreError(f"{p}: not a readable netCDF of profiles and atmospheres ({type(err).__name__}: "
                         f"{err})") from None
    data.encoding["source"] = str(p)
    _check_population(data, str(p))
    return data


def _check_population(data: xr.Dataset, src: str) -> None:
    """Refuse a Dataset without the profiles and atmospheres :func:`evaluate` compares."""
    want = {ln.var: ("sample", ln.dim) for ln in LINES} | {v: ("sample", "height") for v in VARIABLES}
    bad = [f"{name}{dims}" for name, dims in want.items()
           if name not in data or set(data[name].dims) != set(dims)]
    if bad:
        raise ProfileSchemaError(f"{src}: a population to evaluate needs {', '.join(f'{k}{d}' for k, d in want.items())}"
                                 f"; missing or other dims: {', '.join(bad)}")


def forward_profiles(model: PosteriorModel, atm: np.ndarray, batch: int = 4096) -> np.ndarray:
    """The emulator: the model's forward profiles of atmospheres, shape ``(N, 60)`` (joint-peak
    units).

    Parameters
    ----------
    model : PosteriorModel
    atm : ndarray, shape ``(N, 3 H)``
        ``[log_ne, log_T, v']`` (:func:`radynversion.model.atmosphere_to_array`).
    """
    out = []
    with torch.no_grad():
        for start in range(0, atm.shape[0], batch):
            a = torch.as_tensor(atm[start : start + batch], device=model.device)
            out.append(model.emulate(a).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, sum(ln.model_points for ln in LINES)))


def round_trip_profiles(model: PosteriorModel, draws: np.ndarray) -> np.ndarray:
    """``forward(posterior sample)`` profiles of one pixel's draws, shape ``(S, 60)``.

    Parameters
    ----------
    model : PosteriorModel
    draws : ndarray, shape ``(S, 3, H)``
        ``[log_ne, log_T, v]`` with ``v`` in km/s (as :func:`radynversion.model.invert` returns
        them with ``return_samples=True``).
    """
    x = np.array(draws, dtype=np.float32)
    x[:, 2] = velocity_transform(x[:, 2])
    return forward_profiles(model, x.reshape(x.shape[0], -1))


def _as_counts(obs: xr.Dataset, seed: int) -> xr.Dataset:
    """``obs`` as uncalibrated data: each line times its own gain per atmosphere (log-uniform
    between 1e8 and 1e9 counts per W m^-2 Hz^-1 sr^-1), in DN."""
    rng = np.random.default_rng([seed, 4321])
    out = obs.copy()
    for ln in LINES:
        if ln.var not in obs:
            continue
        gain = 10 ** rng.uniform(8.0, 9.0, obs.sizes["sample"])
        da = obs[ln.var] * xr.DataArray(gain, dims="sample")
        out[ln.var] = da.assign_attrs({**obs[ln.var].attrs, "units": "DN"})
    return out


def _median(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else float("nan")


def _mean(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(np.mean(a)) if a.size else float("nan")


def _metrics(q: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Element-wise error and interval membership; ``q`` ``(..., 5)`` at :data:`_Q`."""
    return {
        "error": np.abs(q[..., 2] - truth),
        "in68": ((q[..., 1] <= truth) & (truth <= q[..., 3])).astype(float),
        "in90": ((q[..., 0] <= truth) & (truth <= q[..., 4])).astype(float),
        "width68": q[..., 3] - q[..., 1],
    }


def _by_flow(misfit_pct: np.ndarray, forward_pct: np.ndarray, v_true: np.ndarray,
             chromosphere: np.ndarray) -> list[dict[str, Any]]:
    """The round trip and the emulator's error per class of :data:`FLOW_CLASSES_KMS`.

    Parameters
    ----------
    misfit_pct, forward_pct : ndarray, shape ``(N,)``
        Round-trip misfit and emulator RMS (both lines) per atmosphere [% of the joint peak].
    v_true : ndarray, shape ``(N, H)``
        True velocity [km/s].
    chromosphere : ndarray of bool, shape ``(N, H)``
        The chromosphere band's nodes of each atmosphere.

    Returns
    -------
    list of dict
        Per class with atmospheres: ``max_abs_v_km_s`` ``[low, high]`` (high None = open),
        ``atmospheres``, ``fraction``, ``misfit_median_pct``, ``misfit_p90_pct``,
        ``forward_rms_median_pct``.
    """
    v_max = np.where(chromosphere, np.abs(v_true), 0.0).max(axis=1)
    edges = [*FLOW_CLASSES_KMS, np.inf]
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (v_max >= lo) & (v_max < hi)
        if not sel.any():
            continue
        rows.append({"max_abs_v_km_s": [lo, None if np.isinf(hi) else hi], "atmospheres": int(sel.sum()),
                     "fraction": float(sel.mean()), "misfit_median_pct": _median(misfit_pct[sel]),
                     "misfit_p90_pct": float(np.nanpercentile(misfit_pct[sel], 90)),
                     "forward_rms_median_pct": _median(forward_pct[sel])})
    return rows


def _strong_flow(m_post: dict[str, np.ndarray], m_prior: dict[str, np.ndarray], v_true: np.ndarray,
                 sel: np.ndarray) -> dict[str, Any] | None:
    """Velocity metrics restricted to the nodes of ``sel`` whose true ``|v|`` is at least
    :data:`STRONG_FLOW_KMS` (None where there are none); arrays ``(N, H)`` as from :func:`_metrics`."""
    strong = sel & (np.abs(v_true) >= STRONG_FLOW_KMS)
    if not strong.any():
        return None
    err, perr = _median(m_post["error"][strong]), _median(m_prior["error"][strong])
    return {"threshold_km_s": STRONG_FLOW_KMS, "nodes": int(strong.sum()),
            "fraction_of_band": float(strong.sum() / sel.sum()),
            "median_abs_error": err, "prior_median_abs_error": perr,
            "error_ratio_to_prior": err / perr if perr > 0 else float("nan"),
            "coverage68": _mean(m_post["in68"][strong]), "coverage90": _mean(m_post["in90"][strong]),
            # coverage given the truth is extreme is not nominal even for an exact posterior
            # wherever the data are weak (it leans towards the prior); the prior's own says how far
            "prior_coverage68": _mean(m_prior["in68"][strong]),
            "prior_coverage90": _mean(m_prior["in90"][strong])}


def evaluation_rows(data: xr.Dataset, model: PosteriorModel, all_samples: bool, max_samples: int | None,
                    src: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions along ``sample`` of the draws to evaluate ``model`` on (its held-out split of
    ``data``, or all usable draws with ``all_samples``; at most ``max_samples``) and of the
    prior draws (the rest), refusing a held-out split the model was trained on."""
    labels = sample_labels(data)
    usable = np.zeros(data.sizes["sample"], dtype=bool)
    usable[usable_samples(data)] = True
    if all_samples:
        held = np.ones_like(usable)
    else:
        tc_text = model.metadata.get("train_config")
        fraction = from_toml(TrainConfig, tc_text).test_fraction if tc_text else 0.0
        if fraction <= 0:
            raise ProfileSchemaError(
                f"{src}: the model was trained without a held-out split (test_fraction = 0); "
                "evaluate it on an independent store with split=\"all\" (--split all)")
        held = evaluation_split(labels, fraction)
        seen = set(model.metadata.get("provenance", {}).get("train_samples", []))
        leaked = [int(i) for i in labels[held & usable] if int(i) in seen]
        trained_on = str(model.metadata.get("provenance", {}).get("source", ""))
        same_store = (trained_on in (src, source_label(data))  # the default set by either of its names:
                      or {trained_on, source_label(data)} <= set(DEFAULT_SET_LABELS))
        if leaked and same_store:
            raise ProfileSchemaError(f"{src}: samples {leaked[:5]} of the held-out split were "
                                     "trained on; this model cannot be evaluated on this store")
    evals = np.flatnonzero(held & usable)
    if max_samples is not None and evals.size > max_samples:
        evals = np.sort(np.random.default_rng(0).choice(evals, max_samples, replace=False))
    prior = np.flatnonzero(~held & usable) if not all_samples else np.flatnonzero(usable)
    if evals.size == 0:
        raise ProfileSchemaError(f"{src}: no usable samples to evaluate (held-out split empty)")
    return evals, prior


def _model_identity(net: PosteriorModel) -> dict[str, str]:
    """``model`` (the packaged model by its name in the package, any other checkpoint by the
    path it was loaded from: no machine-specific prefix for the packaged one) and
    ``model_sha256`` (of the checkpoint file; "" for a model that has none)."""
    path = net.metadata.get("path")
    if not path or not Path(path).is_file():
        return {"model": "<in memory>" if not path else str(path), "model_sha256": ""}
    packaged = Path(path).resolve() == DEFAULT_MODEL_PATH.resolve()
    return {"model": "radynversion/data/default_model.pt (packaged)" if packaged else str(path),
            "model_sha256": file_sha256(path)}


def _data_identity(data: xr.Dataset) -> dict[str, Any]:
    """``data`` (the shipped training set by its name in the package, any other store by its
    path) and, where only the first draws were used (``radynversion evaluate --first N``),
    ``first_draws`` = N: which held-out split a report is about."""
    ident: dict[str, Any] = {"data": source_label(data)}
    if data.attrs.get("first_draws") is not None:
        ident["first_draws"] = int(data.attrs["first_draws"])
    return ident


def evaluate(
    model: PosteriorModel | str | Path | None,
    data: xr.Dataset | str | Path | None,
    settings: EvaluationSettings | None = None,
    *,
    prior: xr.Dataset | None = None,
    **changes: Any,
) -> EvaluationResult:
    """Evaluate a model on a population of atmospheres, observed as CRISP would with noise.

    Parameters
    ----------
    model : PosteriorModel or path or None
        The network (None = the packaged default).
    data : xarray.Dataset or path or None
        The population: fine profiles ``I_<line>(sample, wl_<line>)`` and true
        ``log_ne, log_T, v (sample, height)``, e.g. a training-set store
        (:func:`radynversion.datasets.training_set`); a path is opened with
        :func:`open_population` (a Zarr store or a netCDF file; None = the shipped set).
    settings : EvaluationSettings, optional
        Which atmospheres (``split``), how they are observed and inverted (default:
        ``EvaluationSettings()``, the model's held-out split, 512 draws, 1 % noise, CRISP's
        program).
    prior : xarray.Dataset, optional
        Samples defining the prior-only baseline (default: the samples of ``data`` outside
        the held-out split, or all of ``data`` with ``split="all"``).
    **changes
        Fields of ``settings`` to change for this call (``samples=128``;
        :meth:`EvaluationSettings.changed`).

    Returns
    -------
    EvaluationResult
    """
    cfg = settings or EvaluationSettings()
    if changes:
        cfg = cfg.changed(**changes)
    if not isinstance(data, xr.Dataset):
        data = open_population(data)
    net = model if isinstance(model, PosteriorModel) else load_model(model)
    src = source_name(data, default="<training set>")
    _check_population(data, src)
    h = net.height_Mm.cpu().numpy().astype(float)
    if "height" in data.coords and (data.sizes["height"] != h.size
                                    or not np.allclose(np.asarray(data["height"].values, dtype=float), h,
                                                       atol=1e-3)):
        raise ProfileSchemaError(f"{src}: atmospheres on {data.sizes['height']} heights "
                                 f"{float(data['height'].min()):.3f}-{float(data['height'].max()):.3f} Mm; the "
                                 f"model's are {h.size} from {h[0]:.3f} to {h[-1]:.3f} Mm")
    all_samples = cfg.split == "all"
    samples, noise, seed, precision, tunings = cfg.samples, cfg.noise, cfg.seed, cfg.precision, cfg.tunings
    evals, prior_pos = evaluation_rows(data, net, all_samples, cfg.max_samples, src)
    sub = data.isel(sample=evals)
    prior_ds = prior if prior is not None else data.isel(sample=prior_pos)
    fwhm = net.instrument_fwhm_A()

    # -- observe as CRISP would, invert -----------------------------------------------------
    profiles = sub[[ln.var for ln in LINES]]
    observed = [ln for ln in LINES if tunings is None or ln.key in tunings]
    if not observed or (len(observed) < len(LINES) and not input_options(net)["partial"]):
        raise ConfigError(f"evaluate: tunings name {sorted(tunings or {})}; expected one program per line "
                          f"{[ln.key for ln in LINES]} (one line alone needs a model trained on partial coverage)")
    program = {ln.key: np.sort(np.asarray(tunings[ln.key] if tunings is not None else crisp_tunings(ln),
                                          dtype=float)) for ln in observed}
    # the noise is a fraction of the joint peak of both lines (as for two-line observations)
    obs = degrade(profiles, {**program, **{ln.key: crisp_tunings(ln) for ln in LINES if ln not in observed}},
                  fwhm_A=fwhm, noise=noise, seed=seed)
    obs = obs.drop_vars([v for ln in LINES if ln not in observed for v in (ln.var, ln.dim)])
    if cfg.dn:
        obs = _as_counts(obs, seed)
    res = invert(obs, net, samples=samples, quantiles=_Q, seed=seed, precision=precision)

    # -- truth, bands ------------------------------------------------------------------------
    truth = {v: np.asarray(sub[v].transpose("sample", "height").values, dtype=float) for v in VARIABLES}
    bands = height_bands(truth["log_T"], h)
    post_q = {v: np.moveaxis(np.asarray(res[v].transpose("sample", "quantile", "height").values,
                                        dtype=float), 1, -1) for v in VARIABLES}
    prior_q = {v: np.quantile(np.asarray(prior_ds[v].transpose("sample", "height").values, dtype=float),
                              _Q, axis=0).T for v in VARIABLES}  # (H, 5)

    # -- forward emulator and round trip -----------------------------------------------------
    y_true, _ = normalise_profiles(profiles, unit=net.config.intensity_unit, fwhm_A=fwhm)
    y_fwd = forward_profiles(net, atmosphere_to_array(sub))
    forward: dict[str, Any] = {}
    start = 0
    for ln in LINES:
        d = y_fwd[:, start : start + ln.model_points] - y_true[:, start : start + ln.model_points]
        rms = 100.0 * np.sqrt(np.mean(d**2, axis=1))
        forward[ln.key] = {"rms_median_pct": _median(rms), "rms_p90_pct": float(np.nanpercentile(rms, 90)),
                           "max_abs_median_pct": _median(100.0 * np.abs(d).max(axis=1))}
        start += ln.model_points
    misfit = 100.0 * np.asarray(res["misfit"].values, dtype=float)
    round_trip = {"misfit_median_pct": _median(misfit), "misfit_p90_pct": float(np.nanpercentile(misfit, 90)),
                  "noise_pct": 100.0 * noise}
    round_trip["by_chromospheric_flow"] = _by_flow(
        misfit, 100.0 * np.sqrt(np.mean((y_fwd - y_true) ** 2, axis=1)), truth["v"], bands == 1)

    # -- accuracy and calibration ------------------------------------------------------------
    per_height: dict[str, list[np.ndarray]] = {}
    params: dict[str, Any] = {}
    findings: list[str] = []
    for v in VARIABLES:
        m_post = _metrics(post_q[v], truth[v])
        m_prior = _metrics(np.broadcast_to(prior_q[v], post_q[v].shape), truth[v])
        ratio = m_post["width68"] / np.maximum(m_prior["width68"], PRIOR_WIDTH_FLOOR[v])
        for key, arr in (("error", m_post["error"]), ("prior_error", m_prior["error"]),
                         ("coverage68", m_post["in68"]), ("coverage90", m_post["in90"]),
                         ("prior_coverage68", m_prior["in68"]), ("prior_coverage90", m_prior["in90"]),
                         ("width_ratio", ratio)):
            per_height.setdefault(key, []).append(
                np.array([(_mean if key.startswith(("coverage", "prior_cov")) else _median)(arr[:, j])
                          for j in range(h.size)]))
        params[v] = {}
        for b, band in enumerate(BANDS):
            sel = bands == b
            if not sel.any():
                continue
            err, perr = _median(m_post["error"][sel]), _median(m_prior["error"][sel])
            wr = _median(ratio[sel])
            params[v][band] = {
                "nodes": int(sel.sum()),
                "median_abs_error": err,
                "prior_median_abs_error": perr,
                "error_ratio_to_prior": err / perr if perr > 0 else float("nan"),
                "coverage68": _mean(m_post["in68"][sel]),
                "coverage90": _mean(m_post["in90"][sel]),
                "prior_coverage68": _mean(m_prior["in68"][sel]),
                "prior_coverage90": _mean(m_prior["in90"][sel]),
                "width_ratio_to_prior": wr,
                "constrained": bool(wr < UNCONSTRAINED_WIDTH_RATIO),
            }
            if v == "v":
                strong = _strong_flow(m_post, m_prior, truth[v], sel)
                if strong is not None:
                    params[v][band]["strong_flow"] = strong
                    if band == "chromosphere":
                        findings.append(
                            f"v in the chromosphere where |v| >= {STRONG_FLOW_KMS:g} km/s "
                            f"({strong['fraction_of_band']:.0%} of its nodes): median error "
                            f"{strong['median_abs_error']:.3g} km/s against the prior's "
                            f"{strong['prior_median_abs_error']:.3g} (ratio "
                            f"{strong['error_ratio_to_prior']:.2f}), 68 / 90 % coverage "
                            f"{strong['coverage68']:.2f} / {strong['coverage90']:.2f}")
            cov = params[v][band]["coverage68"]
            if wr < UNCONSTRAINED_WIDTH_RATIO and perr > 0 and err / perr >= 0.9 and cov < 0.58:
                findings.append(f"{v} in the {band}: the posterior is narrow ({wr:.0%} of the prior's "
                                f"68 % width) but no more accurate than the prior (median error "
                                f"{err:.3g} vs {perr:.3g}; 68 % coverage {cov:.2f}): overconfident, do "
                                "not trust its intervals")
            if wr >= UNCONSTRAINED_WIDTH_RATIO:
                findings.append(f"{v} in the {band}: not constrained by the profiles (posterior 68 % "
                                f"interval {wr:.0%} of the prior's); its median is the prior's, not a "
                                "measurement")
        loose = [f"{h[j]:.2f}" for j in range(h.size)
                 if per_height["width_ratio"][-1][j] >= UNCONSTRAINED_WIDTH_RATIO]
        if loose:
            findings.append(f"{v}: posterior as wide as the prior (>= {UNCONSTRAINED_WIDTH_RATIO:.0%}) "
                            f"at {len(loose)} of {h.size} heights: {', '.join(loose)} Mm")

    # -- the transition region's height -------------------------------------------------------
    tr = _transition_region(post_q["log_T"], prior_q["log_T"], truth["log_T"], h)
    if "posterior" in tr:
        c68, c90 = tr["posterior"]["coverage68"], tr["posterior"]["coverage90"]
        if abs(c68 - 0.68) > 0.05 or abs(c90 - 0.90) > 0.05:
            findings.append(
                f"transition-region height: 68 / 90 % intervals hold the truth {c68:.2f} / {c90:.2f} "
                f"of the time (median error {tr['posterior']['median_abs_error_Mm']:.3g} Mm, 68 % "
                f"width {tr['posterior']['median_width68_Mm']:.3g} Mm): "
                + ("too narrow" if c68 < 0.68 else "too wide"))
    flows = round_trip["by_chromospheric_flow"]
    if len(flows) > 1:
        def name(c: dict[str, Any]) -> str:
            lo, hi = c["max_abs_v_km_s"]
            return f">= {lo:g}" if hi is None else f"{lo:g}-{hi:g}"
        findings.append(
            "round trip by the strongest chromospheric |v| of the atmosphere [km/s]: "
            + ", ".join(f"{name(c)}: {c['misfit_median_pct']:.2f} % ({c['fraction']:.0%} of them)" for c in flows)
            + "; the emulator alone on the true atmospheres: "
            + ", ".join(f"{c['forward_rms_median_pct']:.2f} %" for c in flows)
            + " (median RMS, % of the joint peak)")

    # -- the single-pixel figure's pixel: a flare atmosphere with a typical misfit ----------
    kind = np.asarray(sub["kind"].values) if "kind" in sub else np.zeros(evals.size)
    cand = np.flatnonzero(kind == kind.max())
    pick = int(cand[np.argsort(misfit[cand])[cand.size // 2]])
    px = invert(obs.isel(sample=[pick]), net, samples=cfg.pixel_samples, quantiles=(0.5,), seed=seed,
                return_samples=True, misfit=False, precision=precision)
    y_obs, _ = normalise_profiles(obs.isel(sample=[pick]), unit=net.config.intensity_unit, fwhm_A=fwhm,
                                  **input_options(net))
    draws = np.stack([np.asarray(px[f"{v}_samples"].values[0], dtype=float) for v in VARIABLES], axis=1)
    rt = round_trip_profiles(net, draws[:256])
    # shown as the observation is normalised: over its observed points, per line or jointly
    opts = input_options(net)
    seen = np.where(np.isfinite(y_obs[0])[None, :], rt, np.nan)
    rt = renormalise(torch.as_tensor(seen), opts["normalisation"]).numpy()
    pixel = xr.Dataset(
        {**{f"{v}_samples": (("draw", "height"), draws[:, k]) for k, v in enumerate(VARIABLES)},
         **{f"truth_{v}": ("height", truth[v][pick]) for v in VARIABLES},
         "observed": ("point", y_obs[0]),
         "round_trip": (("draw_rt", "point"), rt)},
        coords={"height": h},
        attrs={"sample": int(sample_labels(sub)[pick]), "kind": int(kind[pick]),
               "misfit_pct": float(misfit[pick])})

    ph = xr.Dataset({k: (("variable", "height"), np.stack(v)) for k, v in per_height.items()},
                    coords={"variable": list(VARIABLES), "height": h})
    summary = {
        "radynversion_version": __version__,
        **_model_identity(net),
        "model_kind": net.kind,
        "model_training_set_sha256": str(net.metadata.get("training_set_sha256", "")),
        **_data_identity(data),
        "split": "all usable samples" if all_samples else "held-out split (evaluation_split)",
        "n_evaluated": int(evals.size),
        "n_prior": int(prior_ds.sizes["sample"]),
        "samples_per_pixel": int(samples),
        "sampling": str(res.attrs.get("sampling", "plain")),
        "precision": str(res.attrs.get("precision", precision)),
        "noise_fraction_of_peak": float(noise),
        "instrument": {"tunings": {k: int(wl.size) for k, wl in program.items()},
                       "program": "CRISP default" if tunings is None else "given", "fwhm_A": fwhm},
        "seed": int(seed),
        "bands": {"photosphere": f"h < {PHOTOSPHERE_TOP_MM} Mm",
                  "chromosphere": f"{PHOTOSPHERE_TOP_MM} Mm <= h < first node with log_T >= {TR_LOG_T}",
                  "corona": f"h >= first node above {PHOTOSPHERE_TOP_MM} Mm with log_T >= {TR_LOG_T}"},
        "units": {"log_ne": "dex cm^-3", "log_T": "dex K", "v": "km/s (positive = downflow)",
                  "profiles": "% of the joint peak"},
        "forward_rms": forward,
        "round_trip": round_trip,
        "parameters": params,
        "transition_region": tr,
        "cross_prior": cross_prior_scores(post_q, truth, h),
        "findings": findings,
    }
    summary["acceptance"] = acceptance(summary)
    return EvaluationResult(summary=summary, per_height=ph, pixel=pixel)


def acceptance(summary: dict[str, Any]) -> dict[str, Any]:
    """The model-quality goals checked on a summary (chromosphere, all parameters).

    Coverage of the 68 % and 90 % intervals within 0.05 of nominal; median error below the
    prior-only baseline's, at most half of it for ``log_ne`` and ``v``; median round trip
    below 2 % of the peak.
    """
    checks: dict[str, Any] = {}
    for v in VARIABLES:
        c = summary["parameters"].get(v, {}).get("chromosphere")
        if c is None:
            continue
        checks[f"{v}_coverage68"] = {"value": c["coverage68"], "goal": "0.63-0.73",
                                     "pass": abs(c["coverage68"] - 0.68) <= 0.05}
        checks[f"{v}_coverage90"] = {"value": c["coverage90"], "goal": "0.85-0.95",
                                     "pass": abs(c["coverage90"] - 0.90) <= 0.05}
        limit = 0.5 if v in ("log_ne", "v") else 1.0
        checks[f"{v}_error_vs_prior"] = {"value": c["error_ratio_to_prior"], "goal": f"< {limit}",
                                         "pass": c["error_ratio_to_prior"] < limit}
    rt = summary["round_trip"]["misfit_median_pct"]
    checks["round_trip_median_pct"] = {"value": rt, "goal": "< 2", "pass": rt < 2.0}
    checks["all_pass"] = all(c["pass"] for c in checks.values())
    return checks


def write_report(result: EvaluationResult, path: str | Path) -> dict[str, Path]:
    """Write ``report.json``, the per-height metrics (netCDF) and the figures beside it.

    Returns the paths: ``report``, ``per_height``, ``coverage``, ``errors``, ``pixel``.
    """
    from . import plot

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.with_suffix("")
    paths = {"report": path, "per_height": Path(f"{stem}_per_height.nc"),
             "coverage": Path(f"{stem}_coverage.png"), "errors": Path(f"{stem}_errors.png"),
             "pixel": Path(f"{stem}_pixel.png")}
    path.write_text(json.dumps(result.summary, indent=2, default=float) + "\n")
    result.per_height.to_netcdf(paths["per_height"])
    label = MODEL_LABELS.get(result.summary.get("model_kind", "inn"), "model")
    held_out = str(result.summary.get("split", "")).startswith("held-out")
    which = "held-out atmospheres" if held_out else f"atmospheres of {Path(str(result.summary['data'])).name}"
    n_eval = result.summary["n_evaluated"]
    plot.evaluation_coverage(result.per_height, paths["coverage"],
                             title=f"Calibration of the {label} on {n_eval} {which}")
    plot.evaluation_errors(result.per_height, paths["errors"],
                           title=f"Accuracy of the {label} on {n_eval} {which}",
                           label=f"{label} posterior median")
    px = result.pixel
    samples = np.stack([px[f"{v}_samples"].values for v in VARIABLES], axis=1)
    truth = np.stack([px[f"truth_{v}"].values for v in VARIABLES])
    fig = plot.posterior(samples, observed=px["observed"].values, round_trip=px["round_trip"].values,
                         truth=truth, height_Mm=px["height"].values,
                         title=f"{'Held-out a' if held_out else 'A'}tmosphere {px.attrs['sample']} "
                               f"(kind {px.attrs['kind']}), "
                               f"round-trip misfit {px.attrs['misfit_pct']:.2f} %")
    fig.savefig(paths["pixel"], dpi=100)
    return paths
