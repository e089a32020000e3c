"""radynversion: invert solar-flare H-alpha and Ca II 8542 spectra into atmospheres.

An invertible neural network (Osborne, Armstrong & Fletcher 2019, ApJ 873, 128) trained on
NLTE syntheses, run at the scale of whole telescope scans.

``import radynversion as rv`` is light (no torch): the workflow's names (``rv.open_observation``,
``rv.invert``, ``rv.load_model``) and the submodules (``rv.datasets``, ``rv.io``, ``rv.plot``...)
are imported on first access.

Example
-------
>>> import radynversion as rv
>>> scan = rv.datasets.example_observation()
>>> out = scan.isel(y=slice(0, 2), x=slice(0, 2)).radyn.invert(samples=16)  # doctest: +SKIP
"""

from __future__ import annotations

from . import errors as _errors  # noqa: E402
from ._version import __version__
from .atmosphere import (  # noqa: E402
    default_height_grid,
    inverse_velocity_transform,
    velocity_transform,
)
from .engine import accessor as _accessor  # noqa: E402,F401  (registers ds.radyn)
from .errors import *  # noqa: E402,F403  (the error hierarchy, errors.__all__)
from .lines import CA8542, HALPHA, LINES, air_to_vacuum, vacuum_to_air  # noqa: E402

#: public names re-exported lazily from submodules (importing them pulls in torch)
_LAZY = {
    "invert": "radynversion.model.invert",
    "InversionSettings": "radynversion.model.settings",
    "load_model": "radynversion.model.checkpoint",
    "open_observation": "radynversion.io.observation",
}

__all__ = [
    "__version__",
    "default_height_grid",
    "velocity_transform",
    "inverse_velocity_transform",
    "HALPHA",
    "CA8542",
    "LINES",
    "air_to_vacuum",
    "vacuum_to_air",
    *_errors.__all__,
    *_LAZY,
]


#: the package's submodules, served as attributes on first access (``rv.datasets``, ``rv.io``...)
_SUBMODULES = (
    "atmosphere", "calibration", "cli", "config", "datasets", "demo", "engine", "errors", "evaluate",
    "instrument", "io", "lines", "model", "plot", "schema", "synth", "velocity_frame", "verify",
)


def __getattr__(name: str):  # PEP 562: keep `import radynversion` free of torch
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")  # also binds it on the package
    raise AttributeError(f"module 'radynversion' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
