"""Training-set factory: flare-atmosphere prior, Lightweaver NLTE driver, Dask runner."""

from .nlte import NLTEConfig, SynthesisResult, synthesise
from .prior import FlareAtmosphere, PriorConfig, falc_atmosphere, sample_atmosphere

__all__ = [
    "PriorConfig",
    "FlareAtmosphere",
    "sample_atmosphere",
    "falc_atmosphere",
    "NLTEConfig",
    "SynthesisResult",
    "synthesise",
]
