"""Populations observed as ``radynversion evaluate`` observes them, for the trust studies in this
folder (run as scripts): CRISP's default program, its transmission, 1 % noise."""

from __future__ import annotations

import numpy as np
import xarray as xr

from radynversion.instrument import crisp_tunings, degrade
from radynversion.lines import LINES
from radynversion.model import PosteriorModel
from radynversion.model.preprocess import input_options, normalise_profiles


def observe_crisp(ds: xr.Dataset, net: PosteriorModel, seed: int = 1) -> np.ndarray:
    """Normalised profiles ``(N, 60)`` of the population ``ds`` as ``net`` takes them (its own
    normalisation, joint or per line; NaN rows where a profile cannot be normalised)."""
    prog = {ln.key: np.sort(crisp_tunings(ln)) for ln in LINES}
    obs = degrade(ds[[ln.var for ln in LINES]], prog, fwhm_A=net.instrument_fwhm_A(), noise=0.01, seed=seed)
    y, _ = normalise_profiles(obs, unit=net.config.intensity_unit, fwhm_A=net.instrument_fwhm_A(),
                              **input_options(net))
    return y
