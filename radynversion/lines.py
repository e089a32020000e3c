"""Spectral lines, model windows and the air/vacuum convention.

Observers (SST/CRISP) and the literature quote **air** wavelengths in Angstrom; Lightweaver
works in **vacuum** nm. Everything stored by radynversion uses air Angstrom; conversion to
vacuum happens explicitly, here, with the IAU standard (Morton 2000) refractive index.

Line centres (air): H-alpha 6562.80 A (vacuum 6564.61 A), Ca II 8542.09 A (vacuum 8544.44 A).
Model windows follow Osborne, Armstrong & Fletcher (2019, ApJ 873, 128): +-1.4 A for
H-alpha and +-1.0 A for Ca II 8542, 30 points each.
"""

from __future__ import annotations

from dataclasses import dataclass

import astropy.units as u
import numpy as np
from specutils.utils.wcs_utils import air_to_vac, vac_to_air

__all__ = [
    "Line",
    "HALPHA",
    "CA8542",
    "LINES",
    "air_to_vacuum",
    "vacuum_to_air",
    "line_by_key",
    "spans",
    "span_text",
]


@dataclass(frozen=True)
class Line:
    """A spectral line as radynversion uses it.

    Attributes
    ----------
    key : str
        Short name used in variable names: the profile is ``I_<key>`` over dim ``wl_<key>``.
    label : str
        Human-readable name.
    center_air_A : float
        Rest wavelength in air [Angstrom].
    model_halfwidth_A : float
        Half-width of the model window [Angstrom].
    model_points : int
        Number of evenly spaced points of the model window.
    synth_halfwidth_A : float
        Half-width of the fine synthesis grid [Angstrom].
    synth_step_A : float
        Step of the fine synthesis grid [Angstrom].
    crisp_fwhm_A : float
        CRISP transmission FWHM at this line [Angstrom] (Scharmer et al. 2008;
        de la Cruz Rodriguez et al. 2015).
    """

    key: str
    label: str
    center_air_A: float
    model_halfwidth_A: float
    model_points: int
    synth_halfwidth_A: float
    synth_step_A: float
    crisp_fwhm_A: float

    @property
    def var(self) -> str:
        """Name of the intensity variable in the profile schema (``I_<key>``)."""
        return f"I_{self.key}"

    @property
    def dim(self) -> str:
        """Name of the wavelength dimension in the profile schema (``wl_<key>``)."""
        return f"wl_{self.key}"

    @property
    def center_vacuum_A(self) -> float:
        """Rest wavelength in vacuum [Angstrom]."""
        return float(air_to_vacuum(self.center_air_A))

    def model_wavelengths(self) -> np.ndarray:
        """Model window, shape ``(model_points,)``, air Angstrom."""
        return np.linspace(
            self.center_air_A - self.model_halfwidth_A,
            self.center_air_A + self.model_halfwidth_A,
            self.model_points,
        )

    def synth_wavelengths(self) -> np.ndarray:
        """Fine synthesis grid, air Angstrom, symmetric about the line centre."""
        n = int(round(self.synth_halfwidth_A / self.synth_step_A))
        return self.center_air_A + self.synth_step_A * np.arange(-n, n + 1)


HALPHA = Line("halpha", "H-alpha 6563", 6562.80, 1.4, 30, 2.0, 0.02, 0.066)
CA8542 = Line("ca8542", "Ca II 8542", 8542.09, 1.0, 30, 1.5, 0.02, 0.107)
LINES: tuple[Line, ...] = (HALPHA, CA8542)


def line_by_key(key: str) -> Line:
    """Return the :class:`Line` whose ``key`` (or variable/dim name) is ``key``."""
    for line in LINES:
        if key in (line.key, line.var, line.dim):
            return line
    raise KeyError(f"unknown line {key!r}; known: {[ln.key for ln in LINES]}")


def spans(
    grid_A: np.ndarray, wavelengths_A: np.ndarray, margin_A: float | tuple[float, float] = 0.0,
    atol_A: float = 1e-6,
) -> bool:
    """Whether the increasing grid ``grid_A`` reaches ``margin_A`` (blue, red; one number for
    both) beyond the ends of the increasing ``wavelengths_A``, to within ``atol_A``, all in
    Angstrom: what interpolating, or convolving over ``margin_A``, onto ``wavelengths_A`` needs.
    A negative margin lets the grid fall that far short. An empty grid spans nothing."""
    grid = np.asarray(grid_A, dtype=float)
    wl = np.asarray(wavelengths_A, dtype=float)
    blue, red = (margin_A, margin_A) if np.isscalar(margin_A) else margin_A
    if wl.size == 0:
        return True
    return bool(grid.size) and bool(wl[0] >= grid[0] + blue - atol_A and wl[-1] <= grid[-1] - red + atol_A)


def span_text(wavelengths_A: np.ndarray) -> str:
    """``"6561.400-6564.200 A"``: the range of increasing wavelengths [Angstrom], for messages."""
    wl = np.asarray(wavelengths_A, dtype=float)
    return f"{wl[0]:.3f}-{wl[-1]:.3f} A" if wl.size else "no wavelengths"


#: Below this wavelength [Angstrom] air and vacuum wavelengths are the same by convention.
AIR_VACUUM_LIMIT_A = 2000.0


def _convert(wavelength_A, fn) -> np.ndarray:
    wl = np.asarray(wavelength_A, dtype=float)
    out = wl.copy()
    ok = np.isfinite(wl) & (wl >= AIR_VACUUM_LIMIT_A)
    if np.any(ok):
        out[ok] = fn(wl[ok] * u.AA).to_value(u.AA)
    return out


def air_to_vacuum(wavelength_air_A: np.ndarray | float) -> np.ndarray:
    """Air to vacuum wavelength (Morton 2000), both in Angstrom; shape preserved.

    Wavelengths below 2000 A (and non-finite ones) are returned unchanged (IAU convention).
    """
    # "iteration" inverts vac_to_air to 1e-12 A, so the two functions are exact inverses;
    # specutils' default closed-form "inversion" is off by up to ~4e-5 A
    return _convert(wavelength_air_A, lambda wl: air_to_vac(wl, scheme="iteration"))


def vacuum_to_air(wavelength_vac_A: np.ndarray | float) -> np.ndarray:
    """Vacuum to air wavelength (Morton 2000), both in Angstrom; shape preserved.

    Wavelengths below 2000 A (and non-finite ones) are returned unchanged (IAU convention).
    """
    return _convert(wavelength_vac_A, vac_to_air)
