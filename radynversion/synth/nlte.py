"""NLTE synthesis of H-alpha and Ca II 8542 with Lightweaver (Osborne & Milic 2021).

H (6 levels) and Ca II (5 levels) are solved in statistical equilibrium with charge
conservation (so the electron density is the NLTE one; or at a given, fixed electron density
when the atmosphere carries one, for ionisation out of equilibrium), ten background elements in LTE,
complete redistribution, a 5-point angle quadrature, on a depth grid that resolves the
transition region (points equidistant in an arc length of log column mass, log T, height and
velocity). The emergent intensity is computed at ``mu`` on fine, air-wavelength grids and
returned in W m^-2 Hz^-1 sr^-1, with the converged atmosphere sampled onto the node heights.

Sign convention: Lightweaver's ``vlos`` is positive towards the observer; ours (``v``) is
positive downwards (redshift), so ``vlos = -v``.

Model-atom correction: the RH/Lightweaver ``H_6_atom`` places H-alpha at 6564.69 A vacuum
(6562.88 A air), 0.08 A (3.7 km/s) red of the laboratory multiplet centroid 6562.80 A air.
:func:`radiative_set` raises the n = 3 level energy by the 0.19 cm^-1 that moves it to the
laboratory value, so that a static atmosphere has its H-alpha core where observers expect it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..atmosphere import default_height_grid
from ..errors import ConfigError
from ..lines import HALPHA, LINES, air_to_vacuum
from .prior import FlareAtmosphere

__all__ = ["NLTEConfig", "SynthesisResult", "synthesise", "depth_grid", "radiative_set"]

STATUS_CONVERGED = 0
STATUS_NOT_CONVERGED = 1
STATUS_FAILED = 2
STATUS_NAMES = {0: "converged", 1: "not_converged", 2: "failed"}


@dataclass(frozen=True)
class NLTEConfig:
    """Settings of the NLTE forward model (saved with every training set)."""

    #: number of depth points of the radiative-transfer grid. Measured against a 320-point
    #: reference (benchmarks/depth_grid.py): 130 points change Ca II 8542 by up to 6-9 % at
    #: some wavelength and its core/wing ratio by 0.026; 200 points by 3-4 % and 0.013
    #: (H-alpha: 1.4 % and 1.1 %), for 1.3x the cost.
    depth_points: int = 200
    #: cosine of the viewing angle of the emergent intensity
    mu: float = 1.0
    #: angle quadrature points (Gauss-Legendre, per hemisphere)
    quadrature: int = 5
    #: maximum iterations and CPU-time limit [s] of the statistical-equilibrium solve
    #: (converged cases take 20-170 iterations; ~5 % oscillate without converging, and a
    #: higher cap only spends time on them). CPU time of the solving thread (of the process
    #: when ``threads`` > 1), not wall-clock time: a solve that waits for a busy core is not
    #: cut short, so what a store holds does not depend on the machine's load
    max_iterations: int = 300
    max_seconds: float = 120.0
    #: convergence tolerances (relative change of J and of the populations)
    j_tol: float = 5e-3
    pops_tol: float = 1e-3
    #: threads Lightweaver may use (1 per Dask task: parallelism comes from Dask)
    threads: int = 1
    #: scales of the depth-grid arc length: log10 column mass, log10 T, height [Mm], v [km/s]
    grid_scales: tuple[float, float, float, float] = (0.12, 0.08, 0.35, 8.0)
    #: Ng acceleration of the populations (Lightweaver's ``NgOptions``): order (0 = off, as
    #: the shipped training set was made: a store keeps one configuration), period and delay
    #: [iterations]. For a new set use order 2, period 5, delay 30: on the first 24 draws of
    #: the default prior it took 1.45x less CPU time, converged 23 of them against 21 without,
    #: and its intensities were within 1.2e-3 of the peak of a 20x tighter solve's (without:
    #: 7.6e-3). Order 3 with delay 20 lost a draw (Lightweaver raised ZeroDivisionError).
    #: ``python benchmarks/ng_acceleration.py --n 24 --order 2 --period 5 --delay 30``
    ng_order: int = 0
    ng_period: int = 0
    ng_delay: int = 0

    def __post_init__(self) -> None:
        if self.ng_order < 0 or self.ng_delay < 0:
            raise ConfigError(f"NLTEConfig: ng_order = {self.ng_order}, ng_delay = {self.ng_delay}; "
                              "expected >= 0")
        if self.ng_order and self.ng_period < self.ng_order + 1:
            raise ConfigError(f"NLTEConfig: ng_period = {self.ng_period} with ng_order = {self.ng_order}; "
                              "expected ng_period >= ng_order + 1 (Lightweaver's requirement)")


@dataclass
class SynthesisResult:
    """Result of one NLTE synthesis.

    Attributes
    ----------
    status : int
        0 converged, 1 not converged (iteration or time limit), 2 failed (exception).
    message : str
        Why it did not converge or failed ("" when converged).
    iterations : int
        Statistical-equilibrium iterations taken.
    seconds : float
        Wall-clock time.
    log_ne, log_T, v : ndarray, shape ``(H,)``
        Atmosphere on the node heights (log10 cm^-3, log10 K, km/s positive down); NaN if
        failed.
    intensity : dict[str, ndarray]
        ``line.key -> (W,)`` intensity [W m^-2 Hz^-1 sr^-1] on ``line.synth_wavelengths()``.
    depth_z_m, depth_ne_m3 : ndarray, shape ``(D,)``, optional
        The radiative-transfer grid's heights [m] (top first) and the electron density
        [m^-3] of the solution on it (``None`` unless converged).
    """

    status: int
    message: str
    iterations: int
    seconds: float
    log_ne: np.ndarray
    log_T: np.ndarray
    v: np.ndarray
    intensity: dict[str, np.ndarray] = field(default_factory=dict)
    depth_z_m: np.ndarray | None = None
    depth_ne_m3: np.ndarray | None = None


_RADIATIVE_SET = None


def radiative_set():
    """The Lightweaver atomic set (cached per process): H 6-level and Ca II active."""
    global _RADIATIVE_SET
    if _RADIATIVE_SET is None:
        import lightweaver as lw
        from lightweaver.rh_atoms import (
            Al_atom,
            C_atom,
            CaII_atom,
            Fe_atom,
            H_6_atom,
            He_9_atom,
            MgII_atom,
            N_atom,
            Na_atom,
            O_atom,
            S_atom,
            Si_atom,
        )

        h = H_6_atom()
        # Move H-alpha (3 -> 2) to the laboratory centroid (see module docstring).
        target_vac_nm = HALPHA.center_vacuum_A / 10.0
        h.levels[2].E = h.levels[1].E + 1e7 / target_vac_nm
        lw.reconfigure_atom(h)
        aset = lw.RadiativeSet(
            [h, C_atom(), O_atom(), Si_atom(), Al_atom(), CaII_atom(), Fe_atom(),
             He_9_atom(), MgII_atom(), N_atom(), Na_atom(), S_atom()]
        )
        aset.set_active("H", "Ca")
        _RADIATIVE_SET = (aset, aset.compute_wavelength_grid())
    return _RADIATIVE_SET


def depth_grid(atmos: FlareAtmosphere, n_points: int, scales=(0.12, 0.08, 0.35, 8.0)) -> np.ndarray:
    """Heights [m] (top first) of an ``n_points`` grid that resolves the structure.

    Points are equidistant in the arc length of (log10 column mass, log10 T, z, v), each
    divided by its scale in ``scales``, so steep transition regions and velocity jumps get
    points while the isothermal corona gets few.
    """
    z = atmos.z_m
    # column mass from the top, approximate (rho ~ 1.4 m_H nH)
    rho = 1.4 * 1.6735575e-27 * atmos.nHTot_m3
    cm = np.concatenate([[rho[0] * 1e5], rho[0] * 1e5 + np.cumsum(-np.diff(z) * 0.5 * (rho[1:] + rho[:-1]))])
    comps = [np.log10(cm) / scales[0], np.log10(atmos.temperature_K) / scales[1], z / 1e6 / scales[2],
             atmos.v_km_s / scales[3]]
    ds = np.sqrt(sum(np.diff(c) ** 2 for c in comps))
    s = np.concatenate([[0.0], np.cumsum(ds)])
    targets = np.linspace(0.0, s[-1], n_points)
    return np.interp(targets, s, z)


def _resample(atmos: FlareAtmosphere, z_new: np.ndarray) -> dict[str, np.ndarray]:
    zr = atmos.z_m[::-1]
    def lin(a):
        return np.interp(z_new, zr, a[::-1])
    def log(a):
        return 10 ** np.interp(z_new, zr, np.log10(a[::-1]))
    out = {
        "z": z_new,
        "T": log(atmos.temperature_K),
        "nH": log(atmos.nHTot_m3),
        "vt": lin(atmos.vturb_m_s),
        "v": lin(atmos.v_km_s),
    }
    if atmos.ne_m3 is not None:
        out["ne"] = log(atmos.ne_m3)
    return out


def _nan_result(status: int, message: str, it: int, t0: float) -> SynthesisResult:
    nan = np.full(default_height_grid().size, np.nan)
    return SynthesisResult(
        status, message, it, time.perf_counter() - t0, nan, nan.copy(), nan.copy(),
        {ln.key: np.full(ln.synth_wavelengths().size, np.nan) for ln in LINES},
    )


def synthesise(
    atmos: FlareAtmosphere,
    config: NLTEConfig | None = None,
    height_Mm: np.ndarray | None = None,
) -> SynthesisResult:
    """Solve the NLTE problem for ``atmos`` and compute H-alpha and Ca II 8542.

    Parameters
    ----------
    atmos : FlareAtmosphere
        The atmosphere (any fine grid, top first).
    config : NLTEConfig, optional
        Solver settings.
    height_Mm : ndarray, shape ``(H,)``, optional
        Node heights [Mm] onto which the atmosphere is sampled; default the original 50.

    Returns
    -------
    SynthesisResult
        Never raises for a physics failure: non-convergence and exceptions are recorded in
        ``status``/``message``.
    """
    import lightweaver as lw

    cfg = NLTEConfig() if config is None else config
    nodes = default_height_grid() if height_Mm is None else np.asarray(height_Mm)
    t0 = time.perf_counter()
    cpu_clock = time.thread_time if cfg.threads == 1 else time.process_time
    cpu0 = cpu_clock()
    it = 0
    try:
        if cfg.depth_points and cfg.depth_points < atmos.z_m.size:
            grid = _resample(atmos, depth_grid(atmos, cfg.depth_points, cfg.grid_scales))
        else:
            grid = _resample(atmos, atmos.z_m.copy())
        lw_atmos = lw.Atmosphere.make_1d(
            scale=lw.ScaleType.Geometric,
            depthScale=grid["z"],
            temperature=grid["T"],
            vlos=-grid["v"] * 1e3,  # ours: + = down; Lightweaver: + = towards observer
            vturb=grid["vt"],
            nHTot=grid["nH"],
            ne=grid.get("ne"),  # None: Lightweaver's LTE start, then charge conservation
            convertScales=False,
        )
        lw_atmos.quadrature(cfg.quadrature)
        aset, spect = radiative_set()
        eq_pops = aset.compute_eq_pops(lw_atmos)
        ng = ({"ngOptions": lw.NgOptions(Norder=cfg.ng_order, Nperiod=cfg.ng_period, Ndelay=cfg.ng_delay)}
              if cfg.ng_order else {})  # off: Lightweaver's default, as the shipped set was made
        fixed_ne = atmos.ne_m3 is not None  # out of equilibrium: the solve keeps the given n_e
        ctx = lw.Context(lw_atmos, spect, eq_pops, Nthreads=cfg.threads, conserveCharge=not fixed_ne, **ng)
        conv = lw.DefaultConvergenceCriteria(ctx, cfg.j_tol, cfg.pops_tol, None)
        converged = False
        nscatter = 3
        for it in range(1, cfg.max_iterations + 1):
            j_update = ctx.formal_sol_gamma_matrices()
            if it <= nscatter:
                continue
            pops_update = ctx.stat_equil()
            if conv.is_converged(j_update, pops_update, None):
                converged = True
                break
            if cpu_clock() - cpu0 > cfg.max_seconds:
                break
        if not converged:
            why = (f"CPU-time limit {cfg.max_seconds:g} s" if it < cfg.max_iterations
                   else f"iteration limit {cfg.max_iterations}")
            return _nan_result(STATUS_NOT_CONVERGED, f"not converged after {it} iterations ({why})", it, t0)
        wl_air = np.concatenate([ln.synth_wavelengths() for ln in LINES])
        wl_vac_nm = air_to_vacuum(wl_air) / 10.0
        I = np.asarray(ctx.compute_rays(wl_vac_nm, [cfg.mu]))
        if not np.all(np.isfinite(I)) or np.any(I <= 0):
            return _nan_result(STATUS_FAILED, "non-finite or non-positive emergent intensity", it, t0)
        sizes = np.cumsum([0] + [ln.synth_wavelengths().size for ln in LINES])
        intensity = {ln.key: I[sizes[i]:sizes[i + 1]] for i, ln in enumerate(LINES)}
        zr = grid["z"][::-1] / 1e6
        z_nodes = np.clip(nodes, zr[0], zr[-1])
        log_ne = np.interp(z_nodes, zr, np.log10(np.asarray(lw_atmos.ne)[::-1] * 1e-6))
        zf = atmos.z_m[::-1] / 1e6
        log_T = np.interp(nodes, zf, np.log10(atmos.temperature_K[::-1]))
        v = np.interp(nodes, zf, atmos.v_km_s[::-1])
        return SynthesisResult(STATUS_CONVERGED, "", it, time.perf_counter() - t0, log_ne, log_T, v, intensity,
                               depth_z_m=np.asarray(grid["z"]).copy(), depth_ne_m3=np.asarray(lw_atmos.ne).copy())
    except Exception as err:  # noqa: BLE001 - every failure is recorded, never raised
        msg = f"{type(err).__name__}: {err}".replace("\n", " ")[:200]
        return _nan_result(STATUS_FAILED, msg, it, t0)
