"""Exceptions raised by radynversion.

Every error the package raises on purpose derives from :class:`RadynversionError`,
so callers (and the CLI) can tell a refusal with a clear message from a bug.
Messages name the file, the variable and what was expected.
"""

from __future__ import annotations

__all__ = [
    "RadynversionError",
    "ConfigError",
    "ProfileSchemaError",
    "UnitsError",
    "DataFileError",
    "SynthesisError",
    "StoreError",
    "CheckpointError",
    "SelectionTooLargeError",
    "CalibrationError",
    "ClusterError",
]


class RadynversionError(Exception):
    """Base class of every error radynversion raises on purpose."""


class ConfigError(RadynversionError, ValueError):
    """A configuration file or value is invalid."""


class ProfileSchemaError(RadynversionError, ValueError):
    """A Dataset does not follow the profile schema (see :mod:`radynversion.schema`)."""


class UnitsError(ProfileSchemaError):
    """Units of intensity or wavelength are missing, unparsable or inconsistent."""


class DataFileError(RadynversionError, OSError):
    """A file could not be read as the format it claims to be."""


class SynthesisError(RadynversionError, RuntimeError):
    """The NLTE forward model failed for an atmosphere."""


class StoreError(RadynversionError, OSError):
    """An output store exists but is not ours, or does not match the run."""


class CheckpointError(RadynversionError, ValueError):
    """A model checkpoint is corrupt, unsafe, or does not match this package."""


class SelectionTooLargeError(RadynversionError, ValueError):
    """A request (e.g. ``return_samples=True``) would materialise too much for the selection."""


class CalibrationError(RadynversionError, ValueError):
    """A scan cannot be calibrated (no usable quiet-Sun region, off-disk field, ...)."""


class ClusterError(RadynversionError, RuntimeError):
    """A Dask cluster cannot be reached or lost its workers (scheduler, SLURM jobs)."""
