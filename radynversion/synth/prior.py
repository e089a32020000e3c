"""A physically motivated prior over flare (and quiet) chromospheres.

The original Radynversion learnt from RADYN F-CHROMA flare simulations, which cannot be
downloaded here. This module draws 1D atmospheres that cover what those runs (and the flare
literature) produce, so that the NLTE forward model (:mod:`radynversion.synth.nlte`) can turn
them into training pairs. Ranges and their sources:

* **Quiet / weakly heated** (FAL-C, Fontenla, Avrett & Loeser 1993; Lightweaver's ``Falc82``):
  temperature versus column mass of FAL-C with +-4 % perturbations of the chromosphere, a
  transition region (TR) near 2 Mm and a 1-2 MK corona at 0.2-1 dyn cm^-2.
* **Flare chromosphere** (Allred et al. 2005, 2015; Kowalski et al. 2017; Carlsson et al.
  2023 F-CHROMA): heating from a depth set by the beam (column mass between the TR and
  the temperature minimum) up to the TR, with a plateau of 8e3-5e4 K; the heated temperature
  is capped by column mass (5e4 K only at m < 3e-4 g cm^-2, ~1.1e4 K at 1e-2 g cm^-2, 7e3 K
  below the temperature minimum), as hydrogen ionisation and radiative losses hold dense
  layers near 1e4 K: this keeps continuum enhancements at the tens-of-percent level.
* **TR pushed down** to ~0.8-2.5 Mm by the higher coronal pressure that follows chromospheric
  evaporation: coronal pressure 1-1000 dyn cm^-2 (Fisher, Canfield & McClymont 1985; RADYN
  F-CHROMA), which fixes the column mass above the TR (``m_TR = P_cor / g``).
* **Corona** 1-30 MK, hydrostatic above the TR (scale heights of tens of Mm, so nearly
  isobaric over the 8 Mm the node grid covers).
* **Velocities, both signs** (Fisher 1989; Kowalski et al. 2017; Graham et al. 2020):
  chromospheric condensations (downflows) of 5-100 km/s in a 30-500 km layer below the TR,
  gentle chromospheric upflows of 5-60 km/s, coronal evaporation upflows of 30-500 km/s,
  plus a smooth random field of a few km/s everywhere (both signs).

The stratification below the TR is hydrostatic in column mass (gas plus turbulent pressure,
with a smooth hydrogen ionisation fraction), anchored so that z = 0 lies at the FAL-C column
mass of tau_500 = 1; above it, hydrostatic in height. The densities are only the starting
point: the NLTE solution with charge conservation sets the electron density stored with
each case.

Every draw is reproducible from ``(seed, index)`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .hydrostatic import G_SUN, falc_tables, hydrostatic_column, smoothstep
from .hydrostatic import loguniform as _loguniform

__all__ = [
    "PriorConfig",
    "FlareAtmosphere",
    "sample_atmosphere",
    "falc_atmosphere",
    "KINDS",
    "PARAM_NAMES",
]

KINDS: tuple[str, ...] = ("quiet", "weak", "flare")

#: The scalar parameters of a draw (NaN in a training set where a draw has none).
PARAM_NAMES: tuple[str, ...] = (
    "p_cor_dyn_cm2", "t_cor_K", "t_cor_gradient", "chrom_perturbation_dex", "vturb_scale",
    "tr_width_km", "heated", "t_plateau_K", "heat_depth_frac", "rise_frac",
    "plateau_slope_dex", "v_random_kms", "v_random_phase", "v_random_wavelength_Mm",
    "v_condensation_kms", "condensation_thickness_km", "v_chrom_upflow_kms",
    "chrom_upflow_position", "chrom_upflow_thickness_km", "v_evaporation_kms",
    "evaporation_rise_Mm", "v_corona_kms", "z_tr_Mm", "draws",
)

_G_SUN = G_SUN
_KM = 1e3
_MM = 1e6
# Cap on the heated temperature versus log10 column mass [kg m^-2] (see _build).
_CAP_LM = np.array([-2.5, -1.0, 0.0, 0.5])
_CAP_LOGT = np.array([4.7, 4.05, 3.95, 3.85])


@dataclass(frozen=True)
class PriorConfig:
    """Parameters of the flare-atmosphere prior (ranges are inclusive, log-uniform where
    noted by ``log``). Saved with every training set."""

    #: probabilities of quiet, weakly heated and flaring atmospheres
    mix: tuple[float, float, float] = (0.15, 0.25, 0.60)
    #: coronal pressure [dyn cm^-2], log-uniform, per kind
    p_cor_quiet: tuple[float, float] = (0.2, 1.0)
    p_cor_weak: tuple[float, float] = (0.5, 10.0)
    p_cor_flare: tuple[float, float] = (1.0, 1000.0)
    #: chromospheric plateau temperature [K], log-uniform
    t_plateau_weak: tuple[float, float] = (6.0e3, 1.2e4)
    t_plateau_flare: tuple[float, float] = (8.0e3, 5.0e4)
    #: coronal temperature at the top of the TR [K], log-uniform
    t_cor_quiet: tuple[float, float] = (1.0e6, 2.0e6)
    t_cor_weak: tuple[float, float] = (1.0e6, 5.0e6)
    t_cor_flare: tuple[float, float] = (3.0e6, 3.0e7)
    #: TR half-thickness [km], log-uniform
    tr_width_km: tuple[float, float] = (3.0, 60.0)
    #: condensation downflow speed [km/s], log-uniform, and probability
    condensation_weak: tuple[float, float] = (2.0, 30.0)
    condensation_flare: tuple[float, float] = (5.0, 100.0)
    p_condensation: tuple[float, float] = (0.3, 0.6)
    condensation_thickness_km: tuple[float, float] = (30.0, 500.0)
    #: chromospheric upflow speed [km/s], log-uniform, and probability (weak, flare)
    chrom_upflow: tuple[float, float] = (5.0, 60.0)
    p_chrom_upflow: tuple[float, float] = (0.3, 0.35)
    #: coronal evaporation upflow [km/s], log-uniform, and probability (weak, flare)
    evaporation_weak: tuple[float, float] = (10.0, 200.0)
    evaporation_flare: tuple[float, float] = (30.0, 500.0)
    p_evaporation: tuple[float, float] = (0.4, 0.7)
    #: amplitude of the smooth random velocity field [km/s] (quiet, weak, flare)
    random_velocity: tuple[float, float, float] = (3.0, 6.0, 10.0)
    #: accepted range of TR heights [Mm]
    z_tr_range: tuple[float, float] = (0.6, 3.0)
    #: top of the model atmosphere [Mm]
    z_top_Mm: float = 10.6


@dataclass
class FlareAtmosphere:
    """A 1D atmosphere on a fine working grid, ordered from the top down.

    Attributes
    ----------
    z_m : ndarray, shape ``(Z,)``
        Height [m], decreasing.
    temperature_K, nHTot_m3, vturb_m_s, v_km_s : ndarray, shape ``(Z,)``
        Temperature [K], total hydrogen density [m^-3], microturbulence [m/s] and bulk
        velocity [km/s, positive = downflow].
    kind : str
        One of :data:`KINDS` (or ``"external"``).
    params : dict
        The scalar prior parameters that produced it.
    ne_m3 : ndarray, shape ``(Z,)``, optional
        Electron density [m^-3]. ``None`` (the default): the NLTE solve finds it with charge
        conservation (statistical equilibrium). Given: the solve keeps it fixed, as for
        hydrogen ionisation out of equilibrium (:mod:`radynversion.synth.noneq`).
    """

    z_m: np.ndarray
    temperature_K: np.ndarray
    nHTot_m3: np.ndarray
    vturb_m_s: np.ndarray
    v_km_s: np.ndarray
    kind: str = "external"
    params: dict[str, float] = field(default_factory=dict)
    ne_m3: np.ndarray | None = None


def falc_atmosphere() -> FlareAtmosphere:
    """FAL-C (Lightweaver's ``Falc82``) as a :class:`FlareAtmosphere`, static."""
    f = falc_tables()
    return FlareAtmosphere(
        z_m=f["z"].copy(),
        temperature_K=f["T"].copy(),
        nHTot_m3=f["nH"].copy(),
        vturb_m_s=f["vt"].copy(),
        v_km_s=np.zeros_like(f["z"]),
        kind="quiet",
        params={"falc": 1.0},
    )


_smoothstep = smoothstep


def _draw(rng: np.random.Generator, cfg: PriorConfig) -> tuple[str, dict[str, float]]:
    kind = KINDS[int(rng.choice(3, p=np.asarray(cfg.mix) / np.sum(cfg.mix)))]
    k = {"quiet": 0, "weak": 1, "flare": 2}[kind]
    p: dict[str, float] = {}
    p["p_cor_dyn_cm2"] = _loguniform(rng, (cfg.p_cor_quiet, cfg.p_cor_weak, cfg.p_cor_flare)[k])
    p["t_cor_K"] = _loguniform(rng, (cfg.t_cor_quiet, cfg.t_cor_weak, cfg.t_cor_flare)[k])
    p["t_cor_gradient"] = float(rng.uniform(0.0, 1.0))
    p["chrom_perturbation_dex"] = float(rng.uniform(-0.017, 0.017))
    p["vturb_scale"] = float(rng.uniform(0.6, 1.4))
    p["tr_width_km"] = _loguniform(rng, cfg.tr_width_km)
    if kind == "quiet":
        p["heated"] = 0.0
    else:
        p["heated"] = 1.0
        p["t_plateau_K"] = _loguniform(rng, (cfg.t_plateau_weak, cfg.t_plateau_flare)[k - 1])
        p["heat_depth_frac"] = float(rng.uniform(0.0, 1.0))
        p["rise_frac"] = float(rng.uniform(0.05, 0.9))
        p["plateau_slope_dex"] = float(rng.uniform(-0.1, 0.25))
    # velocities
    p["v_random_kms"] = float(rng.uniform(0.0, cfg.random_velocity[k]))
    p["v_random_phase"] = float(rng.uniform(0, 2 * np.pi))
    p["v_random_wavelength_Mm"] = float(rng.uniform(0.3, 2.0))
    p["v_condensation_kms"] = 0.0
    p["v_chrom_upflow_kms"] = 0.0
    p["v_evaporation_kms"] = 0.0
    if kind != "quiet":
        if rng.uniform() < cfg.p_condensation[k - 1]:
            p["v_condensation_kms"] = _loguniform(
                rng, (cfg.condensation_weak, cfg.condensation_flare)[k - 1]
            )
            p["condensation_thickness_km"] = _loguniform(rng, cfg.condensation_thickness_km)
        if rng.uniform() < cfg.p_chrom_upflow[k - 1]:
            p["v_chrom_upflow_kms"] = -_loguniform(rng, cfg.chrom_upflow)
            p["chrom_upflow_position"] = float(rng.uniform(0.2, 0.95))
            p["chrom_upflow_thickness_km"] = _loguniform(rng, (100.0, 1000.0))
        if rng.uniform() < cfg.p_evaporation[k - 1]:
            p["v_evaporation_kms"] = -_loguniform(
                rng, (cfg.evaporation_weak, cfg.evaporation_flare)[k - 1]
            )
            p["evaporation_rise_Mm"] = _loguniform(rng, (0.2, 3.0))
    p["v_corona_kms"] = float(rng.uniform(-10.0, 10.0))
    return kind, p


def _build(kind: str, p: dict[str, float], cfg: PriorConfig) -> FlareAtmosphere:
    f = falc_tables()
    # --- below the TR: column mass grid (kg m^-2), from the TR down to z ~ -0.1 Mm
    m_tr = p["p_cor_dyn_cm2"] * 0.1 / _G_SUN
    lm_tr = np.log10(m_tr)
    lm_bot = f["lm"][-1]
    lm = np.linspace(lm_tr, lm_bot, 700)
    chrom = f["T"] < 9.5e3  # FAL-C below its TR
    lm_f, T_f, vt_f = f["lm"][chrom], f["T"][chrom], f["vt"][chrom]
    logT = np.interp(lm, lm_f, np.log10(T_f))  # flat beyond the table ends
    # perturb the chromosphere (not the photosphere)
    w_chrom = _smoothstep((1.0 - lm) / 1.5)
    logT = logT + p["chrom_perturbation_dex"] * w_chrom
    if p["heated"]:
        lm_heat_max = 0.0  # the temperature-minimum region (FAL-C z ~ 0.5 Mm)
        lm_heat = lm_tr + 0.3 + p["heat_depth_frac"] * max(lm_heat_max - lm_tr - 0.3, 0.0)
        lm_rise = lm_heat - p["rise_frac"] * (lm_heat - lm_tr)
        logT_heat0 = np.interp(lm_heat, lm, logT)
        ramp = np.clip((lm_heat - lm) / max(lm_heat - lm_rise, 1e-6), 0.0, 1.0)
        plateau = np.clip((lm_rise - lm) / max(lm_rise - lm_tr, 1e-6), 0.0, 1.0)
        logT_heat = (
            logT_heat0
            + (np.log10(p["t_plateau_K"]) - logT_heat0) * ramp
            + p["plateau_slope_dex"] * plateau
        )
        # Dense layers cannot be heated far above 1e4 K (hydrogen ionisation and radiative
        # losses act as a thermostat, RADYN F-CHROMA): cap the heated temperature by column
        # mass, from 5e4 K at m < 3e-4 g cm^-2 to 7e3 K below the temperature minimum.
        logT_cap = np.interp(lm, _CAP_LM, _CAP_LOGT)
        logT = np.maximum(logT, np.minimum(logT_heat, logT_cap))
    T_low = 10**logT
    vt_low = np.interp(lm, lm_f, vt_f) * np.where(lm < 0.5, p["vturb_scale"], 1.0)
    col = hydrostatic_column(lm, T_low, vt_low, tr_width_km=p["tr_width_km"], t_cor_K=p["t_cor_K"],
                             t_cor_gradient=p["t_cor_gradient"], z_top_Mm=cfg.z_top_Mm)
    z, T, nH, vt, z_tr, z_low = (col[k] for k in ("z", "T", "nH", "vt", "z_tr", "z_low"))
    z_top = cfg.z_top_Mm * _MM
    v = _velocity(z, z_tr, z_top, lm, z_low, p)
    params = dict(p)
    params["z_tr_Mm"] = float(z_tr / _MM)
    return FlareAtmosphere(z, T, nH, vt, v, kind=kind, params=params)


def _velocity(z, z_tr, z_top, lm, z_low, p) -> np.ndarray:
    zMm = z / _MM
    v = np.zeros_like(z)
    # smooth random field of both signs, tapered to ~30 % in the photosphere
    taper = 0.3 + 0.7 * _smoothstep(zMm / 0.6)
    lam = p["v_random_wavelength_Mm"]
    v += p["v_random_kms"] * taper * np.sin(2 * np.pi * zMm / lam + p["v_random_phase"])
    below = z <= z_tr
    if p["v_condensation_kms"]:
        d = p["condensation_thickness_km"] * _KM
        centre = z_tr - 0.5 * d
        v += np.where(below, p["v_condensation_kms"] * np.exp(-(((z - centre) / (0.5 * d)) ** 4)), 0)
    if p["v_chrom_upflow_kms"]:
        z_floor = max(0.3 * _MM, z_tr - 1.5 * _MM)
        centre = z_floor + p["chrom_upflow_position"] * (z_tr - z_floor)
        sig = 0.5 * p["chrom_upflow_thickness_km"] * _KM
        v += np.where(below, p["v_chrom_upflow_kms"] * np.exp(-0.5 * ((z - centre) / sig) ** 2), 0)
    above = ~below
    s = np.clip(z - z_tr, 0.0, None)
    corona = p["v_corona_kms"] * _smoothstep(s / (0.5 * _MM))
    if p["v_evaporation_kms"]:
        corona = corona + p["v_evaporation_kms"] * _smoothstep(s / (p["evaporation_rise_Mm"] * _MM))
    v = np.where(above, corona + v * np.exp(-s / (0.05 * _MM)), v)
    return v


def sample_atmosphere(index: int, seed: int = 0, config: PriorConfig | None = None) -> FlareAtmosphere:
    """Draw atmosphere number ``index`` of the prior stream ``seed``.

    The draw depends only on ``(seed, index)`` (a NumPy ``SeedSequence`` of both), so any
    subset of a training set can be regenerated independently and in any order.

    Parameters
    ----------
    index : int
        Sample index (>= 0).
    seed : int
        Seed of the whole set.
    config : PriorConfig, optional
        Ranges of the prior; default :class:`PriorConfig()`.

    Returns
    -------
    FlareAtmosphere
        On a fine working grid (~1100 points), top first.
    """
    cfg = PriorConfig() if config is None else config
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    lo, hi = cfg.z_tr_range
    for attempt in range(100):
        kind, p = _draw(rng, cfg)
        atmos = _build(kind, p, cfg)
        if lo <= atmos.params["z_tr_Mm"] <= hi:
            atmos.params["draws"] = float(attempt + 1)
            return atmos
    raise RuntimeError(f"prior: no atmosphere with TR in {cfg.z_tr_range} Mm after 100 draws")
