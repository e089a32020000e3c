"""The atmosphere as radynversion sees it: node heights, variables, transforms.

Variables (all on dim ``height``, coordinate in Mm):

``log_ne``
    log10 of the electron density [cm^-3].
``log_T``
    log10 of the temperature [K].
``v``
    bulk velocity [km/s], **positive = downflow = redshift at disk centre**.
    (Lightweaver's ``vlos`` is positive towards the observer, RADYN's ``vz1`` positive
    upwards: both are the negative of ours.)

The network sees ``[log_ne, log_T, v']`` with ``v' = sign(v) log10(|v| + 1)``
(Osborne, Armstrong & Fletcher 2019).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = [
    "VARIABLES",
    "VARIABLE_ATTRS",
    "default_height_grid",
    "velocity_transform",
    "inverse_velocity_transform",
    "atmosphere_dataset",
    "BANDS",
    "TR_LOG_T",
    "PHOTOSPHERE_TOP_MM",
    "height_bands",
]

VARIABLES: tuple[str, ...] = ("log_ne", "log_T", "v")

VARIABLE_ATTRS: dict[str, dict[str, str]] = {
    "log_ne": {"long_name": "log10 electron density", "units": "dex(cm-3)"},
    "log_T": {"long_name": "log10 temperature", "units": "dex(K)"},
    "v": {
        "long_name": "bulk velocity, positive = downflow = redshift",
        "units": "km / s",
    },
    "height": {"long_name": "height above tau_500 = 1", "units": "Mm"},
}


def default_height_grid() -> np.ndarray:
    """The original Radynversion node grid, shape ``(50,)``, in Mm.

    45 evenly spaced nodes from -0.065 to 3.5 Mm, then 4.360, 5.431, 6.766, 8.429 and
    10.5 Mm (geometric from 3.5 to 10.5 Mm, first point dropped).
    """
    lower = np.linspace(-0.065, 3.5, 45)
    upper = np.geomspace(3.5, 10.5, 6)[1:]
    return np.round(np.concatenate([lower, upper]), 6)


def velocity_transform(v_km_s: np.ndarray) -> np.ndarray:
    """``v' = sign(v) log10(|v| + 1)`` for ``v`` in km/s (any shape)."""
    v = np.asarray(v_km_s)
    return np.sign(v) * np.log10(np.abs(v) + 1.0)


#: speed of light [km/s]: the bound of any bulk velocity
C_KM_S = 299792.458


def inverse_velocity_transform(v_prime: np.ndarray) -> np.ndarray:
    """Inverse of :func:`velocity_transform`: km/s from ``v'`` (any shape), bounded by the
    speed of light: a network's draw far outside its training range (``|v'| > 5.48``) gives
    ``+-c``, not an overflow to infinity."""
    vp = np.clip(np.asarray(v_prime), -np.log10(C_KM_S + 1.0), np.log10(C_KM_S + 1.0))
    return np.sign(vp) * (10.0 ** np.abs(vp) - 1.0)


def atmosphere_dataset(
    log_ne: np.ndarray,
    log_T: np.ndarray,
    v: np.ndarray,
    height_Mm: np.ndarray | None = None,
    dims: tuple[str, ...] = (),
) -> xr.Dataset:
    """Wrap node-grid arrays in a Dataset with the conventional names and units.

    Parameters
    ----------
    log_ne, log_T, v : ndarray, shape ``(*dims, H)``
        log10 ne [cm^-3], log10 T [K], v [km/s, positive = downflow].
    height_Mm : ndarray, shape ``(H,)``, optional
        Node heights [Mm]; default :func:`default_height_grid`.
    dims : tuple of str
        Names of the leading dims.
    """
    h = default_height_grid() if height_Mm is None else np.asarray(height_Mm)
    all_dims = (*dims, "height")
    ds = xr.Dataset(
        {
            name: (all_dims, np.asarray(arr), dict(VARIABLE_ATTRS[name]))
            for name, arr in zip(VARIABLES, (log_ne, log_T, v), strict=True)
        },
        coords={"height": ("height", h, dict(VARIABLE_ATTRS["height"]))},
    )
    return ds


# -- layers of an atmosphere ------------------------------------------------------------------
#: height bands of the report, in order
BANDS: tuple[str, ...] = ("photosphere", "chromosphere", "corona")
#: top of the photosphere band [Mm]
PHOTOSPHERE_TOP_MM: float = 0.5
#: the transition region starts at the lowest node with log10(T / K) at least this
TR_LOG_T: float = 4.5


def height_bands(log_T: np.ndarray, height_Mm: np.ndarray) -> np.ndarray:
    """Band index (0 photosphere, 1 chromosphere, 2 corona) of each node of each atmosphere.

    Parameters
    ----------
    log_T : ndarray, shape ``(N, H)``
        True temperatures [dex K] on the nodes.
    height_Mm : ndarray, shape ``(H,)``
        Node heights [Mm], increasing.

    Returns
    -------
    ndarray of int8, shape ``(N, H)``
        An atmosphere whose temperature never reaches ``TR_LOG_T`` has no corona; nodes of
        the photosphere band stay photosphere even if hot.
    """
    h = np.asarray(height_Mm, dtype=float)
    hot = np.asarray(log_T, dtype=float) >= TR_LOG_T
    hot &= (h >= PHOTOSPHERE_TOP_MM)[None, :]
    first = np.where(hot.any(axis=1), hot.argmax(axis=1), h.size)
    idx = np.arange(h.size)[None, :]
    bands = np.where(idx >= first[:, None], 2, 1).astype(np.int8)
    bands[:, h < PHOTOSPHERE_TOP_MM] = 0
    return bands
