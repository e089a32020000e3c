"""The invertible network: architecture, preprocessing, training, checkpoints, inversion.

The user's workflow: ``train(training_set, out_dir) -> load_model(path) -> invert(scan)``.

* :mod:`.config`: :class:`ModelConfig`, :class:`CINNConfig`, :class:`TrainConfig` (frozen, TOML
  round-trip);
* :mod:`.preprocess`: profiles -> normalised ``y`` (N, 60); atmospheres <-> ``x`` (N, 150);
* :mod:`.base`: :class:`PosteriorModel`, the interface inference uses (condition, sample, emulate);
* :mod:`.inn`: :class:`RadynversionINN` (FrEIA GLOW coupling blocks; the original);
* :mod:`.cinn`: :class:`ConditionalINN` (conditional flow, maximum likelihood, with an emulator);
* :mod:`.losses`: the INN's training objective (L2 + MMD terms);
* :mod:`.sampling`: training profiles as a filtergraph observes them (tuning programs, noise at
  the tunings, interpolation onto the model points; ``TrainConfig.tuning_programs``);
* :mod:`.train`: :func:`train` (resumable, checkpointed);
* :mod:`.checkpoint`: :func:`save_checkpoint`, :func:`load_model`;
* :mod:`.posterior`: :func:`posterior` (the batched core: draws, passes, on-device reductions);
* :mod:`.kernels`: fused inference layers (oneDNN linear with bias and leaky ReLU on CPU);
* :mod:`.invert`: :func:`invert` (posterior quantiles and round-trip misfit per pixel).
"""

from __future__ import annotations

from ..datasets import evaluation_split, sample_labels, usable_samples  # the splits, re-exported
from .base import PosteriorModel
from .checkpoint import DEFAULT_MODEL_PATH, arrays_sha256, load_model, read_checkpoint, save_checkpoint
from .cinn import ConditionalINN
from .compiled import compiled_model
from .config import CINNConfig, ModelConfig, TrainConfig
from .inn import RadynversionINN
from .invert import DEFAULT_QUANTILES, invert
from .losses import inn_losses, mmd_imq
from .posterior import PosteriorResult, pixel_seeds, posterior
from .precision import select_precision
from .preprocess import (
    array_to_atmosphere,
    atmosphere_to_array,
    denormalise_profiles,
    model_wavelengths,
    normalise_profiles,
)
from .train import TrainResult, train

__all__ = [
    "ModelConfig",
    "CINNConfig",
    "TrainConfig",
    "PosteriorModel",
    "RadynversionINN",
    "ConditionalINN",
    "normalise_profiles",
    "denormalise_profiles",
    "atmosphere_to_array",
    "array_to_atmosphere",
    "model_wavelengths",
    "mmd_imq",
    "inn_losses",
    "train",
    "TrainResult",
    "usable_samples",
    "sample_labels",
    "evaluation_split",
    "save_checkpoint",
    "read_checkpoint",
    "load_model",
    "arrays_sha256",
    "DEFAULT_MODEL_PATH",
    "invert",
    "DEFAULT_QUANTILES",
    "posterior",
    "PosteriorResult",
    "pixel_seeds",
    "select_precision",
    "compiled_model",
]
