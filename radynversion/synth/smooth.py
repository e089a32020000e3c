"""Smooth random stratifications: a second, structurally different atmosphere generator.

The default prior (:mod:`radynversion.synth.prior`) builds every flare from the same few
shapes: a FAL-C chromosphere, a heated plateau capped by column mass, one condensation, one
upflow, one sinusoidal random field. A network trained on it learns those shapes and is
confidently wrong on atmospheres made otherwise. This generator draws the temperature and the
velocity as random smooth fields (Gaussian-process draws, :func:`random_smooth_field`) around
quiet and flare baselines, so the training set also holds stratifications that no parametric
recipe would write down:

* **Heating from anywhere above the temperature minimum**, including the upper photosphere
  (backwarming; Machado et al. 1980 models F1/F2; Hawley & Fisher 1994; Allred et al. 2005),
  with **no column-mass cap**: the heated temperature follows an envelope from the heating base
  to the TR whose end values, steepness and wiggles are random.
* **Transition regions from 0.5 to 3 Mm**, half-widths from 2 to 300 km (steep TRs as in
  RADYN's beam-heated runs; broad, conductively smoothed ones as in gentle heating).
* **Multi-component velocities**: a smooth random field of a few to 20 km/s with correlation
  lengths of 0.1-1 Mm, plus a condensation (downflow, Fisher 1989; Kowalski et al. 2017) and an
  upflow that may sit just beneath it, giving opposite signs at nearby heights (Graham et al.
  2020; Kerr et al. 2016), plus coronal evaporation.
* **Cool dense chromospheric condensations** (Kowalski et al. 2017, ApJ 836, 12; Kowalski et
  al. 2015): under a high coronal pressure (100-3000 dyn cm^-2) a thin (10-80 km) layer at
  7,000-15,000 K just below the TR, moving down at 20-120 km/s.

The stratification is hydrostatic (:func:`radynversion.synth.hydrostatic.hydrostatic_column`),
and the NLTE solve sets the electron density. Every draw is reproducible from
``(seed, index)`` alone, on a random stream distinct from the default prior's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .hydrostatic import G_SUN, falc_tables, hydrostatic_column, loguniform, random_smooth_field, smoothstep
from .prior import KINDS, FlareAtmosphere

__all__ = ["SmoothConfig", "sample_smooth", "SMOOTH_PARAM_NAMES"]

#: The scalar parameters of a draw (NaN where a draw has none).
SMOOTH_PARAM_NAMES: tuple[str, ...] = (
    "p_cor_dyn_cm2", "t_cor_K", "t_cor_gradient", "tr_width_km", "heated", "heat_base_lm",
    "t_heat_base_K", "t_heat_top_K", "heat_shape", "t_wiggle_dex", "t_wiggle_length_dex",
    "photosphere_heating_K", "cool_condensation", "cc_temperature_K", "cc_thickness_lm",
    "v_field_kms", "v_field_length_Mm", "v_condensation_kms", "condensation_thickness_km",
    "condensation_depth_km", "v_upflow_kms", "upflow_centre_Mm", "upflow_thickness_km",
    "v_evaporation_kms", "evaporation_rise_Mm", "v_corona_kms", "z_tr_Mm", "draws",
)

#: Added to the seed sequence so this generator's stream differs from the prior's.
_STREAM = 1
_KM = 1e3
_MM = 1e6


@dataclass(frozen=True)
class SmoothConfig:
    """Ranges of the smooth-stratification generator (log-uniform where the quantity is a
    scale; saved with every training set it makes)."""

    #: probabilities of quiet, weakly heated and flaring atmospheres
    mix: tuple[float, float, float] = (0.10, 0.25, 0.65)
    #: coronal pressure [dyn cm^-2] per kind
    p_cor_quiet: tuple[float, float] = (0.1, 1.0)
    p_cor_weak: tuple[float, float] = (0.3, 30.0)
    p_cor_flare: tuple[float, float] = (1.0, 3000.0)
    #: coronal temperature [K] per kind
    t_cor_quiet: tuple[float, float] = (0.8e6, 2.0e6)
    t_cor_weak: tuple[float, float] = (1.0e6, 8.0e6)
    t_cor_flare: tuple[float, float] = (2.0e6, 4.0e7)
    #: TR half-thickness [km]
    tr_width_km: tuple[float, float] = (2.0, 300.0)
    #: deepest heating base, log10 column mass [kg m^-2] (FAL-C: 0 at the temperature
    #: minimum, ~0.8 at 300 km); heating starts between 0.2 dex below the TR and this
    deepest_heat_base_lm: float = 0.8
    #: temperature at the top of the heated layer [K] (weak, flare)
    t_heat_top_weak: tuple[float, float] = (6.0e3, 2.0e4)
    t_heat_top_flare: tuple[float, float] = (7.0e3, 1.0e5)
    #: amplitude [dex] and correlation length [dex of column mass] of the temperature wiggles
    t_wiggle_dex: tuple[float, float] = (0.0, 0.12)
    t_wiggle_length_dex: tuple[float, float] = (0.15, 1.0)
    #: quiet chromospheres: amplitude [dex] of their wiggles around FAL-C
    quiet_wiggle_dex: float = 0.04
    #: probability and size [K] of a heated upper photosphere (weak and flare)
    p_photosphere_heating: float = 0.25
    photosphere_heating_K: tuple[float, float] = (200.0, 1500.0)
    #: probability of a cool dense condensation (flare), its coronal pressure [dyn cm^-2],
    #: temperature [K] and thickness [dex of column mass]
    p_cool_condensation: float = 0.2
    cc_p_cor: tuple[float, float] = (100.0, 3000.0)
    cc_temperature_K: tuple[float, float] = (7.0e3, 1.5e4)
    cc_thickness_lm: tuple[float, float] = (0.05, 0.4)
    #: random velocity field: amplitude [km/s] (quiet, weak, flare upper bounds; log-uniform
    #: from 0.5) and correlation length [Mm]
    v_field_max: tuple[float, float, float] = (4.0, 10.0, 20.0)
    v_field_length_Mm: tuple[float, float] = (0.1, 1.0)
    #: condensation: probability (weak, flare), speed [km/s], thickness [km], depth of its
    #: top below the TR [km]
    p_condensation: tuple[float, float] = (0.3, 0.55)
    condensation_kms: tuple[float, float] = (3.0, 150.0)
    condensation_thickness_km: tuple[float, float] = (20.0, 800.0)
    condensation_depth_km: tuple[float, float] = (0.0, 200.0)
    #: chromospheric upflow: probability (weak, flare), speed [km/s], thickness [km], and the
    #: probability that it sits just beneath a condensation
    p_upflow: tuple[float, float] = (0.3, 0.45)
    upflow_kms: tuple[float, float] = (3.0, 80.0)
    upflow_thickness_km: tuple[float, float] = (50.0, 800.0)
    p_upflow_beneath: float = 0.5
    #: coronal evaporation: probability (weak, flare) and speed [km/s]
    p_evaporation: tuple[float, float] = (0.4, 0.7)
    evaporation_kms: tuple[float, float] = (10.0, 500.0)
    #: accepted TR heights [Mm] and the top of the model [Mm]
    z_tr_range: tuple[float, float] = (0.5, 3.0)
    z_top_Mm: float = 10.6


def _draw_temperature(rng, cfg: SmoothConfig, k: int, p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log10 column mass grid, temperature and microturbulence below the TR."""
    f = falc_tables()
    m_tr = p["p_cor_dyn_cm2"] * 0.1 / G_SUN
    lm_tr = np.log10(m_tr)
    lm = np.linspace(lm_tr, f["lm"][-1], 700)
    chrom = f["T"] < 9.5e3
    logT0 = np.interp(lm, f["lm"][chrom], np.log10(f["T"][chrom]))
    vt = np.interp(lm, f["lm"][chrom], f["vt"][chrom])
    # quiet-like wiggles of the chromosphere around FAL-C (not the photosphere)
    w_chrom = smoothstep((1.0 - lm) / 1.5)
    logT = logT0 + cfg.quiet_wiggle_dex * rng.uniform(0, 1) * w_chrom * random_smooth_field(rng, lm, 0.5)
    if p["heated"]:
        base = rng.uniform(lm_tr + 0.2, max(cfg.deepest_heat_base_lm, lm_tr + 0.2))
        p["heat_base_lm"] = float(base)
        t_base = 10 ** float(np.interp(base, lm, logT))
        p["t_heat_base_K"] = t_base
        p["t_heat_top_K"] = loguniform(rng, (cfg.t_heat_top_weak, cfg.t_heat_top_flare)[k - 1])
        p["heat_shape"] = loguniform(rng, (0.25, 4.0))
        p["t_wiggle_dex"] = float(rng.uniform(*cfg.t_wiggle_dex))
        p["t_wiggle_length_dex"] = loguniform(rng, cfg.t_wiggle_length_dex)
        # u = 0 at the heating base, 1 at the TR; shape < 1 heats near the base first
        u = np.clip((base - lm) / max(base - lm_tr, 1e-6), 0.0, 1.0)
        env = np.log10(t_base) + (np.log10(p["t_heat_top_K"]) - np.log10(t_base)) * u ** p["heat_shape"]
        wiggle = p["t_wiggle_dex"] * np.sin(np.pi * u) * random_smooth_field(rng, lm, p["t_wiggle_length_dex"])
        logT = np.where(lm <= base, np.maximum(logT, env + wiggle), logT)
        if rng.uniform() < cfg.p_photosphere_heating:
            dT = rng.uniform(*cfg.photosphere_heating_K)
            p["photosphere_heating_K"] = float(dT)
            bump = np.exp(-0.5 * ((lm - 0.45) / 0.45) ** 2)  # temperature minimum to ~150 km
            logT = np.log10(10**logT + dT * bump)
        if p.get("cool_condensation"):
            thick = rng.uniform(*cfg.cc_thickness_lm)
            p["cc_thickness_lm"] = float(thick)
            p["cc_temperature_K"] = loguniform(rng, cfg.cc_temperature_K)
            layer = smoothstep((lm_tr + thick - lm) / (0.3 * thick) + 0.0)
            logT = logT + (np.log10(p["cc_temperature_K"]) - logT) * layer
    vt_scale = rng.uniform(0.6, 1.6)
    vt = vt * np.where(lm < 0.5, vt_scale, 1.0)
    return lm, 10**logT, vt


def _velocity(rng, cfg: SmoothConfig, k: int, z: np.ndarray, z_tr: float, p: dict) -> np.ndarray:
    zMm = z / _MM
    p["v_field_kms"] = loguniform(rng, (0.5, cfg.v_field_max[k]))
    p["v_field_length_Mm"] = loguniform(rng, cfg.v_field_length_Mm)
    taper = 0.3 + 0.7 * smoothstep(zMm / 0.6)
    v = p["v_field_kms"] * taper * random_smooth_field(rng, zMm, p["v_field_length_Mm"])
    below = z <= z_tr
    cond_bottom = z_tr
    if k and (rng.uniform() < cfg.p_condensation[k - 1] or p.get("cool_condensation")):
        lo, hi = cfg.condensation_kms
        if p.get("cool_condensation"):
            lo, hi = 20.0, 120.0
        p["v_condensation_kms"] = loguniform(rng, (lo, hi))
        p["condensation_thickness_km"] = loguniform(rng, cfg.condensation_thickness_km)
        p["condensation_depth_km"] = float(rng.uniform(*cfg.condensation_depth_km))
        top = z_tr - p["condensation_depth_km"] * _KM
        d = p["condensation_thickness_km"] * _KM
        shape = smoothstep((top - z) / (0.25 * d)) * smoothstep((z - (top - d)) / (0.25 * d))
        v = v + np.where(below, p["v_condensation_kms"] * shape, 0.0)
        cond_bottom = top - d
    else:
        p["v_condensation_kms"] = 0.0
    if k and rng.uniform() < cfg.p_upflow[k - 1]:
        p["v_upflow_kms"] = -loguniform(rng, cfg.upflow_kms)
        p["upflow_thickness_km"] = loguniform(rng, cfg.upflow_thickness_km)
        sig = 0.5 * p["upflow_thickness_km"] * _KM
        if p["v_condensation_kms"] and rng.uniform() < cfg.p_upflow_beneath:
            centre = cond_bottom - sig  # just beneath the condensation: opposite signs nearby
        else:
            centre = rng.uniform(max(0.3 * _MM, z_tr - 2.0 * _MM), z_tr)
        p["upflow_centre_Mm"] = float(centre / _MM)
        v = v + np.where(below, p["v_upflow_kms"] * np.exp(-0.5 * ((z - centre) / sig) ** 2), 0.0)
    else:
        p["v_upflow_kms"] = 0.0
    s = np.clip(z - z_tr, 0.0, None)
    p["v_corona_kms"] = float(rng.uniform(-20.0, 20.0))
    corona = p["v_corona_kms"] * smoothstep(s / (0.5 * _MM))
    p["v_evaporation_kms"] = 0.0
    if k and rng.uniform() < cfg.p_evaporation[k - 1]:
        p["v_evaporation_kms"] = -loguniform(rng, cfg.evaporation_kms)
        p["evaporation_rise_Mm"] = loguniform(rng, (0.1, 3.0))
        corona = corona + p["v_evaporation_kms"] * smoothstep(s / (p["evaporation_rise_Mm"] * _MM))
    return np.where(~below, corona + v * np.exp(-s / (0.05 * _MM)), v)


def _draw_once(rng: np.random.Generator, cfg: SmoothConfig) -> FlareAtmosphere:
    k = int(rng.choice(3, p=np.asarray(cfg.mix) / np.sum(cfg.mix)))
    p: dict[str, float] = {"heated": float(k > 0)}
    p["cool_condensation"] = float(k == 2 and rng.uniform() < cfg.p_cool_condensation)
    p_range = (cfg.p_cor_quiet, cfg.p_cor_weak, cfg.p_cor_flare)[k]
    p["p_cor_dyn_cm2"] = loguniform(rng, cfg.cc_p_cor if p["cool_condensation"] else p_range)
    p["t_cor_K"] = loguniform(rng, (cfg.t_cor_quiet, cfg.t_cor_weak, cfg.t_cor_flare)[k])
    p["t_cor_gradient"] = float(rng.uniform(0.0, 1.0))
    p["tr_width_km"] = loguniform(rng, cfg.tr_width_km)
    lm, T_low, vt_low = _draw_temperature(rng, cfg, k, p)
    col = hydrostatic_column(lm, T_low, vt_low, tr_width_km=p["tr_width_km"], t_cor_K=p["t_cor_K"],
                             t_cor_gradient=p["t_cor_gradient"], z_top_Mm=cfg.z_top_Mm)
    v = _velocity(rng, cfg, k, col["z"], col["z_tr"], p)
    p["z_tr_Mm"] = col["z_tr"] / _MM
    return FlareAtmosphere(col["z"], col["T"], col["nH"], col["vt"], v, kind=KINDS[k], params=p)


def sample_smooth(index: int, seed: int = 0, config: SmoothConfig | None = None) -> FlareAtmosphere:
    """Draw atmosphere number ``index`` of the smooth-stratification stream ``seed``.

    Parameters
    ----------
    index : int
        Sample index (>= 0).
    seed : int
        Seed of the whole set.
    config : SmoothConfig, optional
        Ranges; default :class:`SmoothConfig()`.

    Returns
    -------
    FlareAtmosphere
        On a fine working grid (~1100 points), top first; ``kind`` quiet/weak/flare.
    """
    cfg = SmoothConfig() if config is None else config
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), _STREAM]))
    lo, hi = cfg.z_tr_range
    for attempt in range(100):
        atmos = _draw_once(rng, cfg)
        if lo <= atmos.params["z_tr_Mm"] <= hi and np.all(np.isfinite(atmos.nHTot_m3)):
            atmos.params["draws"] = float(attempt + 1)
            return atmos
    raise RuntimeError(f"smooth generator: no atmosphere with TR in {cfg.z_tr_range} Mm after 100 draws")
