"""Electron densities out of statistical equilibrium: a third atmosphere generator.

In flares, hydrogen ionisation is out of statistical equilibrium (SE): it lags rapid heating
and, more strongly, recombination lags cooling, so the electron density at a given temperature
and pressure departs from its SE value by large factors (Kneer 1980; Carlsson & Stein 2002;
Kasparova et al. 2009; Kowalski et al. 2017; Kerr et al. 2019 on RADYN). A network trained
only on SE solutions learns the SE relation ``n_e(T, P)`` and can then read the density off the
temperature rather than off the profiles; RADYN flares break that relation.

Each draw here:

1. takes a base atmosphere from the default prior or the smooth generator
   (:mod:`radynversion.synth.prior`, :mod:`radynversion.synth.smooth`);
2. solves it in SE with charge conservation (the reference ``n_e``);
3. multiplies that ``n_e`` by a smooth random departure factor between the temperature
   minimum (the lowest point where heating can start) and the TR (no departure where
   ``T > 3e4 K``: hydrogen is fully ionised there on any time scale),
   ``log10 f(z) = taper(z) (a0 + a1 g(z))`` with ``g`` a unit Gaussian-process draw, clipped to
   physical bounds: never above full ionisation of hydrogen and helium (``1.2 n_H``), never
   below the metals' electrons (``1e-4 n_H``) unless SE is already lower;
4. solves the NLTE populations again at that fixed ``n_e`` (Lightweaver without charge
   conservation). The stored ``log_ne`` is the fixed one: only the profiles carry it.

It costs two solves per draw.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .hydrostatic import loguniform, random_smooth_field, smoothstep
from .prior import FlareAtmosphere

__all__ = ["NonEquilibriumConfig", "departure", "NONEQ_PARAM_NAMES"]

#: Parameters of the departure (added to the base generator's parameters).
NONEQ_PARAM_NAMES: tuple[str, ...] = (
    "base_smooth", "ne_offset_dex", "ne_wiggle_dex", "ne_length_Mm", "ne_taper_base_Mm",
    "ne_departure_max_dex", "ne_departure_min_dex",
)

_STREAM = 2
_MM = 1e6


@dataclass(frozen=True)
class NonEquilibriumConfig:
    """Ranges of the departures from SE (saved with every training set)."""

    #: fraction of base atmospheres drawn from the smooth generator (the rest: the prior)
    p_smooth: float = 0.5
    #: mean log10 departure above the taper [dex], uniform
    offset_dex: tuple[float, float] = (-0.8, 0.8)
    #: amplitude [dex] and correlation length [Mm] of its variation with height
    wiggle_dex: tuple[float, float] = (0.0, 0.5)
    length_Mm: tuple[float, float] = (0.15, 1.5)
    #: width of the taper from the temperature minimum up [Mm]
    taper_Mm: float = 0.2
    #: no departure where T exceeds this [K] (the TR and corona)
    max_temperature_K: float = 3.0e4
    #: bounds on n_e / n_H (1.2: hydrogen and helium fully ionised)
    ne_ceiling_per_nH: float = 1.2
    ne_floor_per_nH: float = 1e-4


def departure(
    atmos: FlareAtmosphere,
    ne_se_m3: np.ndarray,
    index: int,
    seed: int,
    config: NonEquilibriumConfig | None = None,
) -> FlareAtmosphere:
    """``atmos`` with a fixed electron density departing from its SE value.

    Parameters
    ----------
    atmos : FlareAtmosphere
        The base atmosphere (fine grid, top first).
    ne_se_m3 : ndarray, shape ``(Z,)``
        Its SE electron density [m^-3] on ``atmos.z_m``.
    index, seed : int
        The draw; the departure depends only on them (its own random stream).
    config : NonEquilibriumConfig, optional

    Returns
    -------
    FlareAtmosphere
        A copy with ``ne_m3`` set and the departure's parameters added to ``params``.
    """
    cfg = NonEquilibriumConfig() if config is None else config
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), _STREAM]))
    zMm = atmos.z_m / _MM
    z_tr = atmos.params.get("z_tr_Mm", 2.0)
    chrom = (zMm >= 0.0) & (zMm <= z_tr)
    z_min = float(zMm[chrom][np.argmin(atmos.temperature_K[chrom])]) if np.any(chrom) else 0.5
    a0 = rng.uniform(*cfg.offset_dex)
    a1 = rng.uniform(*cfg.wiggle_dex)
    length = loguniform(rng, cfg.length_Mm)
    # from the temperature minimum up to the TR: above it (T > 3e4 K) hydrogen is fully
    # ionised on any time scale and n_e stays the SE value
    taper = smoothstep((zMm - z_min) / cfg.taper_Mm) * (atmos.temperature_K < cfg.max_temperature_K)
    log_f = taper * (a0 + a1 * random_smooth_field(rng, zMm, length))
    ne = ne_se_m3 * 10**log_f
    hi = np.maximum(ne_se_m3, cfg.ne_ceiling_per_nH * atmos.nHTot_m3)
    lo = np.minimum(ne_se_m3, cfg.ne_floor_per_nH * atmos.nHTot_m3)
    ne = np.clip(ne, lo, hi)
    actual = np.log10(ne / ne_se_m3)
    params = dict(atmos.params)
    params.update(ne_offset_dex=float(a0), ne_wiggle_dex=float(a1), ne_length_Mm=length,
                  ne_taper_base_Mm=z_min, ne_departure_max_dex=float(actual.max()),
                  ne_departure_min_dex=float(actual.min()))
    return replace(atmos, ne_m3=ne, params=params)
