"""Hydrostatic stratification shared by every atmosphere generator.

A generator chooses the temperature and microturbulence of the chromosphere as functions of
column mass, and the transition region (TR) and corona above it; this module turns that
choice into heights and hydrogen densities:

* below the TR, hydrostatic equilibrium in column mass (gas plus turbulent pressure, with a
  smooth hydrogen and helium ionisation fraction), anchored so that ``z = 0`` lies at the
  FAL-C column mass of tau_500 = 1;
* above it, a TR of half-thickness ``tr_width_km`` (a ``tanh`` step in log T) into a corona of
  ``t_cor_K`` (rising by ``t_cor_gradient`` to the top), hydrostatic in height with gas
  pressure only.

The densities are only the starting point of the NLTE solve: with charge conservation the
solve sets the electron density (:mod:`radynversion.synth.nlte`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["falc_tables", "ionisation_particles", "hydrostatic_column", "smoothstep",
           "random_smooth_field", "loguniform", "K_B", "M_H", "G_SUN", "MU_H"]

# Physical constants (SI).
K_B = 1.380649e-23
M_H = 1.6735575e-27
G_SUN = 274.0  # m s^-2
MU_H = 1.4  # mass per hydrogen nucleus in units of m_H (H + 10 % He + metals)
_KM = 1e3
_MM = 1e6

_FALC: dict[str, np.ndarray] | None = None


def falc_tables() -> dict[str, np.ndarray]:
    """FAL-C (Lightweaver's ``Falc82``) as arrays, top first (cached per process).

    Keys: ``lm`` log10 column mass [kg m^-2], ``T`` [K], ``z`` [m], ``vt`` [m/s], ``nH`` and
    ``ne`` [m^-3].
    """
    global _FALC
    if _FALC is None:
        from lightweaver.fal import Falc82

        a = Falc82()
        _FALC = {
            "lm": np.log10(a.cmass),
            "T": np.asarray(a.temperature),
            "z": np.asarray(a.height),
            "vt": np.asarray(a.vturb),
            "nH": np.asarray(a.nHTot),
            "ne": np.asarray(a.ne),
        }
    return _FALC


def ionisation_particles(T: np.ndarray) -> np.ndarray:
    """Particles per hydrogen nucleus: 1.1 + x_H(T) + He contribution (smooth fit to the
    NLTE ionisation of FAL-C: x_H = 0.02 at 6500 K, 0.6 at 9200 K, ~1 above 1.5e4 K)."""
    lt = np.log10(T)
    x_h = 1.0 / (1.0 + np.exp(-(lt - 3.94) / 0.045))
    x_he = 1.0 / (1.0 + np.exp(-(lt - 4.6) / 0.1))
    return 1.1 + x_h + 0.2 * x_he


def smoothstep(x: np.ndarray) -> np.ndarray:
    """Cubic step from 0 (x <= 0) to 1 (x >= 1) with zero slope at both ends."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def loguniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    """One draw, log-uniform between ``lo_hi[0]`` and ``lo_hi[1]`` (both > 0)."""
    lo, hi = lo_hi
    return float(10 ** rng.uniform(np.log10(lo), np.log10(hi)))


def random_smooth_field(rng: np.random.Generator, x: np.ndarray, length: float, n_features: int = 48) -> np.ndarray:
    """One draw of a zero-mean, unit-variance Gaussian process with a squared-exponential
    kernel of correlation ``length`` (same units as ``x``), at the points ``x``.

    Random Fourier features (Rahimi & Recht 2007): ``sqrt(2/M) sum_m cos(w_m x + b_m)`` with
    ``w_m ~ N(0, 1/length^2)`` and ``b_m ~ U(0, 2 pi)``; smooth at any resolution of ``x``
    and reproducible from ``rng`` alone.
    """
    w = rng.normal(0.0, 1.0 / length, n_features)
    b = rng.uniform(0.0, 2 * np.pi, n_features)
    return np.sqrt(2.0 / n_features) * np.cos(np.outer(np.asarray(x, float), w) + b).sum(axis=1)


def hydrostatic_column(
    lm: np.ndarray,
    T_low: np.ndarray,
    vt_low: np.ndarray,
    *,
    tr_width_km: float,
    t_cor_K: float,
    t_cor_gradient: float,
    z_top_Mm: float,
) -> dict[str, np.ndarray | float]:
    """Heights and densities of an atmosphere from its chromosphere and corona.

    Parameters
    ----------
    lm : ndarray, shape ``(L,)``
        log10 column mass [kg m^-2] below the TR, increasing (``lm[0]`` is the TR's, set by
        the coronal pressure: ``m_TR = P_cor / g``).
    T_low, vt_low : ndarray, shape ``(L,)``
        Temperature [K] and microturbulence [m/s] on ``lm``.
    tr_width_km : float
        Half-thickness of the TR [km].
    t_cor_K, t_cor_gradient : float
        Coronal temperature at the top of the TR [K] and its fractional rise to the top.
    z_top_Mm : float
        Top of the model [Mm].

    Returns
    -------
    dict
        ``z`` [m], ``T`` [K], ``nH`` [m^-3], ``vt`` [m/s] on the whole column, top first;
        ``z_tr`` [m] the TR's height and ``z_low`` [m] the heights of ``lm``.
    """
    f = falc_tables()
    m = 10**lm
    rho = G_SUN * m / (K_B * T_low * ionisation_particles(T_low) / (MU_H * M_H) + 0.5 * vt_low**2)
    # z(m): dz = -dm / rho, anchored at FAL-C's z = 0 column mass
    dz = -np.diff(m) * 0.5 * (1 / rho[1:] + 1 / rho[:-1])
    z_rel = np.concatenate([[0.0], np.cumsum(dz)])  # z relative to the TR (negative below)
    lm_z0 = float(np.interp(0.0, f["z"][::-1], f["lm"][::-1]))
    z_low = z_rel - np.interp(lm_z0, lm, z_rel)
    z_tr = z_low[0]
    nH_low = rho / (MU_H * M_H)

    # --- TR and corona: height grid above the chromosphere, dense near its base
    z_top = z_top_Mm * _MM
    u = np.linspace(0.0, 1.0, 400)[1:]
    z_up = z_tr + (z_top - z_tr) * u**3
    s = z_up - z_tr
    w = tr_width_km * _KM
    T_c = T_low[0]
    T_cor = t_cor_K * (1.0 + t_cor_gradient * s / (z_top - z_tr))
    step = np.tanh(s / w)
    T_up = 10 ** (np.log10(T_c) + (np.log10(T_cor) - np.log10(T_c)) * step)
    vt_up = np.full_like(z_up, vt_low[0])
    # hydrostatic in height from the chromosphere top (gas pressure only above it)
    p_c = K_B * T_c * nH_low[0] * ionisation_particles(np.array([T_c]))[0]
    inv_h = MU_H * M_H * G_SUN / (K_B * T_up * ionisation_particles(T_up))
    z_all = np.concatenate([[z_tr], z_up])
    inv_h_all = np.concatenate([[inv_h[0]], inv_h])
    integral = np.concatenate(
        [[0.0], np.cumsum(np.diff(z_all) * 0.5 * (inv_h_all[1:] + inv_h_all[:-1]))]
    )[1:]
    P_up = p_c * np.exp(-integral)
    nH_up = P_up / (K_B * T_up * ionisation_particles(T_up))
    return {
        "z": np.concatenate([z_up[::-1], z_low]),
        "T": np.concatenate([T_up[::-1], T_low]),
        "nH": np.concatenate([nH_up[::-1], nH_low]),
        "vt": np.concatenate([vt_up[::-1], vt_low]),
        "z_tr": float(z_tr),
        "z_low": z_low,
    }
