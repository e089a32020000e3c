"""How to invert: one frozen settings object for every way in.

:class:`InversionSettings` holds everything that decides an inversion's numbers besides the
data and the model: the draws (how many, how made, their seed), the reported quantiles, the
round-trip misfit, the arithmetic, the pass size, the instrument convolution and whether the
samples come back. The in-memory :func:`radynversion.invert`, the lazy engine
(:func:`radynversion.engine.invert`, ``ds.radyn.invert``), the Zarr writer
(:func:`radynversion.engine.invert_to_zarr`, ``ds.radyn.to_zarr``) and the CLI all take one
(``settings=``) and/or its fields as keyword overrides, validate it here once, and record it in
the result's attrs (:class:`radynversion.model.result.RunSettings`).

Example
-------
>>> from radynversion.model.settings import InversionSettings
>>> s = InversionSettings(samples=256)
>>> s.draws, s.sampling, s.with_(sampling="plain").draws
(256, 'sobol', 256)
>>> InversionSettings().draws  # sobol's default: as accurate as 1,024 plain draws
640
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .posterior import (
    DEFAULT_MISFIT_SAMPLES,
    DEFAULT_QUANTILES,
    DEFAULT_SAMPLES,
    MAX_SAMPLES_BYTES,
    PRECISIONS,
    SAMPLINGS,
    misfit_draws,
)

__all__ = ["InversionSettings", "settings_from"]


@dataclass(frozen=True)
class InversionSettings:
    """The settings of one inversion (module docstring); validated on construction.

    Attributes
    ----------
    samples : int or None
        Posterior draws per pixel; None = the sampling's default
        (:data:`radynversion.model.posterior.DEFAULT_SAMPLES`: 640 Sobol points, 1,024 plain
        draws, equally accurate quantile maps).
    sampling : {"sobol", "plain"}
        How the latent draws are made (:mod:`radynversion.model.posterior`): randomised Sobol
        points (default) or independent Monte Carlo draws.
    quantiles : tuple of float
        Reported quantiles, in [0, 1].
    seed : int
        Seed of the draws (a pixel's draws depend on ``(seed, its flat index)`` only).
    misfit : bool
        Compute the round-trip misfit.
    misfit_samples : int or None
        Draws per pixel in the round trip (default 64; None = every draw).
    precision : {"auto", "fp32", "tf32", "bf16"}
        Arithmetic of the passes (:func:`radynversion.model.precision.select_precision` for
        ``"auto"``).
    batch_size : int or None
        Rows (pixels x draws) per pass; None = the device's default.
    degrade : bool or None
        Force (True) or forbid (False) the instrument convolution; None = only for data
        sampled finer than the instrument.
    compile : bool
        Run the passes through ``torch.compile``.
    return_samples : bool
        Also return the posterior samples (small selections only).
    max_samples_bytes : int
        Largest ``return_samples`` output accepted [bytes].
    """

    samples: int | None = None
    sampling: str = "sobol"
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    seed: int = 0
    misfit: bool = True
    misfit_samples: int | None = DEFAULT_MISFIT_SAMPLES
    precision: str = "auto"
    batch_size: int | None = None
    degrade: bool | None = None
    compile: bool = False
    return_samples: bool = False
    max_samples_bytes: int = MAX_SAMPLES_BYTES

    def __post_init__(self) -> None:
        for name in ("samples", "misfit_samples", "batch_size", "seed", "max_samples_bytes"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not float(value).is_integer():
                raise ConfigError(f"invert: {name} = {value!r}; expected a whole number")
            object.__setattr__(self, name, int(value))
        if self.max_samples_bytes < 1:
            raise ConfigError(f"invert: max_samples_bytes = {self.max_samples_bytes}; expected >= 1")
        if self.sampling not in SAMPLINGS:
            raise ConfigError(f"invert: sampling {self.sampling!r}; expected one of {', '.join(SAMPLINGS)}")
        if self.samples is not None and int(self.samples) < 1:
            raise ConfigError(f"invert: samples = {self.samples}; expected >= 1")
        if self.misfit_samples is not None and int(self.misfit_samples) < 1:
            raise ConfigError(f"invert: misfit_samples = {self.misfit_samples}; expected >= 1 (or None: every draw)")
        try:
            q = tuple(float(v) for v in self.quantiles)
        except (TypeError, ValueError):
            raise ConfigError(f"invert: quantiles {self.quantiles!r}; expected numbers in [0, 1]") from None
        if not q or any(not 0.0 <= v <= 1.0 for v in q):
            raise ConfigError(f"invert: quantiles {list(q)}; expected values in [0, 1]")
        if self.precision not in ("auto", *PRECISIONS):
            raise ConfigError(f"invert: precision {self.precision!r}; expected auto, {', '.join(PRECISIONS)}")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise ConfigError(f"invert: batch_size = {self.batch_size}; expected >= 1")
        object.__setattr__(self, "quantiles", q)

    @property
    def draws(self) -> int:
        """Draws per pixel: ``samples``, else the sampling's default."""
        return int(self.samples) if self.samples is not None else DEFAULT_SAMPLES[self.sampling]

    @property
    def round_trip_draws(self) -> int:
        """Draws per pixel in the round trip (0 without ``misfit``)."""
        return misfit_draws(self.draws, self.misfit_samples) if self.misfit else 0

    def with_(self, **changes: Any) -> InversionSettings:
        """A copy with ``changes`` (field names), validated.

        Raises
        ------
        ConfigError
            An unknown field, or a value the settings refuse.
        """
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            names = ", ".join(f.name for f in dataclasses.fields(self))
            raise ConfigError(f"invert: unknown setting(s) {', '.join(unknown)}; expected some of {names}")
        return dataclasses.replace(self, **changes) if changes else self

    def posterior_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`radynversion.model.posterior.posterior` (with
        ``precision`` and ``batch_size`` as set: resolve ``"auto"`` and None first)."""
        return dict(samples=self.draws, quantiles=self.quantiles, seed=self.seed, batch_size=self.batch_size,
                    misfit=self.misfit, precision=self.precision, return_samples=self.return_samples,
                    max_samples_bytes=self.max_samples_bytes, misfit_samples=self.misfit_samples,
                    compile=self.compile, sampling=self.sampling)


def settings_from(settings: InversionSettings | Mapping[str, Any] | None, overrides: Mapping[str, Any]
                  ) -> InversionSettings:
    """``settings`` (or the defaults) with ``overrides`` applied: how every entry point reads
    its ``settings=`` and keyword arguments.

    Raises
    ------
    ConfigError
        ``settings`` is not settings, or an override is unknown or refused.
    """
    if settings is None:
        base = InversionSettings()
    elif isinstance(settings, InversionSettings):
        base = settings
    elif isinstance(settings, Mapping):
        base = InversionSettings().with_(**dict(settings))
    else:
        raise ConfigError(f"invert: settings of type {type(settings).__name__}; expected InversionSettings, "
                          "a mapping of its fields, or None")
    return base.with_(**dict(overrides))
