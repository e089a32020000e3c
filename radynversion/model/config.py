"""Configuration of the invertible network and of its training.

Defaults follow Osborne, Armstrong & Fletcher (2019, ApJ 873, 128) where the paper gives a
number (5 GLOW coupling blocks with clamp 2.0, Adam with lr 2e-3, betas 0.8/0.8 and weight
decay 2e-5, a step decay to 0.4 % of the initial rate, reverse losses fading in as
``(epoch / (0.4 N))^3``, padding noise 5e-3, subnet output layers starting at 1e-3 scale),
and are scaled down where this project differs (total width 160 instead of 384: our
atmosphere has 150 numbers and the profiles 60, so a latent of 100 fills the output side).

Both classes are frozen dataclasses that round-trip through TOML
(:func:`radynversion.config.to_toml` / :func:`radynversion.config.from_toml`) and are written
into every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import astropy.units as u

from ..errors import ConfigError
from ..lines import CA8542, HALPHA, LINES
from ..schema import RADIANCE_PER_AA, RADIANCE_PER_HZ
from .coverage import NORMALISATIONS

__all__ = ["ModelConfig", "CINNConfig", "TrainConfig", "model_config_table"]

#: the soft-clamp shapes of FrEIA's coupling blocks
CLAMP_ACTIVATIONS = ("ATAN", "TANH", "SIGMOID")


@dataclass(frozen=True)
class _CouplingSettings:
    """What both architectures share (their TOML tables list these first)."""

    #: negative slope of the leaky ReLU of the subnets
    leaky_slope: float = 0.01
    #: standard deviation of the initial weights of each subnet's output layer
    output_init_scale: float = 1e-3
    #: soft clamp of the log scale of the affine couplings (scale within exp(+-clamp))
    clamp: float = 2.0
    #: the soft clamp's shape, FrEIA's ``clamp_activation``: ``"ATAN"`` (the original's,
    #: ``0.636 atan(s)``), ``"TANH"`` or ``"SIGMOID"`` (``2 sigmoid(s) - 1 = tanh(s / 2)``, which a
    #: CPU evaluates ~5x faster than ``atan`` in float32); checkpoints without it are ``"ATAN"``
    clamp_activation: str = "ATAN"
    #: standardise x and y with per-feature mean/std of the training split (buffers of the
    #: module); without it the raw log10/v'/peak-normalised values enter the network
    standardise: bool = True
    #: smallest standard deviation used by the standardisation (in the variable's own units:
    #: dex, log10(km/s + 1), fraction of the peak), so that constant features stay finite
    std_floor: float = 1e-2
    #: seed of the initial weights and of the permutations
    seed: int = 0
    #: the intensity unit in which both lines are divided by their joint peak; the joint
    #: normalisation depends on it (per Hz vs per Angstrom differ by (8542/6563)^2 = 1.69)
    intensity_unit: str = "W / (m2 Hz sr)"

    def _check_shared(self, cls: str) -> None:
        if self.clamp <= 0 or self.std_floor <= 0 or self.output_init_scale < 0:
            raise ConfigError(f"{cls}: clamp and std_floor must be > 0 and output_init_scale >= 0")
        if self.clamp_activation not in CLAMP_ACTIVATIONS:
            raise ConfigError(f"{cls}: clamp_activation must be one of {', '.join(CLAMP_ACTIVATIONS)}, "
                              f"got {self.clamp_activation!r}")
        _check_intensity_unit(cls, self.intensity_unit)


@dataclass(frozen=True)
class ModelConfig(_CouplingSettings):
    """Architecture of :class:`radynversion.model.RadynversionINN`.

    The network maps ``x = [log_ne, log_T, v']`` (3 x 50 node values, standardised, zero
    padded to ``width``) to ``[z (latent_dim), y (60 profile points), padding]``. It needs
    ``width >= 150`` and ``latent_dim + 60 <= width`` (checked when the network is built,
    where the height grid is known).

    Example
    -------
    >>> from radynversion.model import ModelConfig
    >>> ModelConfig(width=384, latent_dim=200).subnet_hidden
    256
    """

    #: number of GLOW affine coupling blocks (a fixed random permutation between two blocks)
    n_blocks: int = 5
    #: total (zero-padded) width of the network's input and output
    width: int = 160
    #: dimension of the latent ``z`` on the output side
    latent_dim: int = 100
    #: hidden width of each subnet; 0 = twice the subnet's output width (the original's rule)
    subnet_hidden: int = 256
    #: number of hidden layers of each subnet (the original: 4)
    subnet_layers: int = 4

    def __post_init__(self) -> None:
        for name in ("n_blocks", "width", "latent_dim", "subnet_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ModelConfig.{name} = {getattr(self, name)}; expected >= 1")
        if self.subnet_hidden < 0:
            raise ConfigError(f"ModelConfig.subnet_hidden = {self.subnet_hidden}; expected >= 0 "
                              "(0 = twice the subnet output width)")
        self._check_shared("ModelConfig")


def _check_intensity_unit(cls: str, unit_text: str) -> None:
    try:
        unit = u.Unit(unit_text)
        ok = unit.is_equivalent(RADIANCE_PER_HZ) or unit.is_equivalent(RADIANCE_PER_AA)
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{cls}.intensity_unit = {unit_text!r}; expected a spectral radiance such "
                          "as 'W / (m2 Hz sr)'")


@dataclass(frozen=True)
class CINNConfig(_CouplingSettings):
    """Architecture of :class:`radynversion.model.ConditionalINN`.

    A conditional normalising flow of the standardised atmosphere ``x`` (3 x 50 node values)
    given the profiles: ``n_blocks`` FrEIA GLOW coupling blocks on ``x`` whose subnets also see
    a context vector, computed once per pixel from the standardised profiles by a fully
    connected conditioning network; fixed random permutations between blocks. The latent has
    the size of ``x`` (no padding). A separate fully connected emulator maps ``x`` to the
    profiles, for the round-trip misfit and the forward evaluation.

    Example
    -------
    >>> from radynversion.model import CINNConfig
    >>> CINNConfig(n_blocks=6).cond_features
    64
    """

    #: number of conditional GLOW coupling blocks
    n_blocks: int = 8
    #: hidden width and number of hidden layers of each coupling subnet
    subnet_hidden: int = 256
    subnet_layers: int = 2
    #: size of the context vector and the conditioning network's hidden width and layers
    cond_features: int = 64
    cond_hidden: int = 256
    cond_layers: int = 2
    #: hidden width and number of hidden layers of the forward emulator
    emulator_hidden: int = 256
    emulator_layers: int = 3
    #: dropout probability before each of the emulator's linear layers after the first (0 =
    #: none, the layout of the v1 checkpoints); it regularises an emulator that otherwise
    #: overfits a few thousand atmospheres
    emulator_dropout: float = 0.0
    #: take partial coverage (:mod:`radynversion.model.coverage`): unobserved model points are
    #: NaN in the profiles, and the conditioning network sees the observed values (0 elsewhere)
    #: next to the mask of observed points (120 inputs instead of 60). Short windows, gaps and
    #: one line alone then invert. False: the layout of the v1-v7 checkpoints
    partial_coverage: bool = False
    #: how profiles are normalised (:mod:`radynversion.model.coverage`): ``"joint"``, both lines
    #: by their joint peak (calibrated data: the ratio of the lines is kept), ``"per_line"``,
    #: each line by its own peak, or ``"per_line_wing"``, each line by its far wing as observed
    #: (uncalibrated data in DN, whose lines have unknown gains)
    normalisation: str = "joint"

    #: experiment options since removed, and the value under which each did nothing (None: any;
    #: :func:`radynversion.config.from_dict`): the convolutional emulator along height
    RETIRED: ClassVar[dict[str, Any]] = {"emulator_conv_channels": 0, "emulator_conv_layers": None,
                                         "emulator_conv_kernel": None}

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS:
            raise ConfigError(f"CINNConfig.normalisation = {self.normalisation!r}; expected one of {NORMALISATIONS}")
        for name in ("n_blocks", "subnet_hidden", "subnet_layers", "cond_features", "cond_hidden",
                     "emulator_hidden", "emulator_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"CINNConfig.{name} = {getattr(self, name)}; expected >= 1")
        if self.cond_layers < 0:
            raise ConfigError(f"CINNConfig.cond_layers = {self.cond_layers}; expected >= 0")
        if not 0.0 <= self.emulator_dropout < 1.0:
            raise ConfigError(f"CINNConfig.emulator_dropout = {self.emulator_dropout}; expected 0 <= p < 1")
        self._check_shared("CINNConfig")


#: the TOML table of each architecture config (``radynversion train --config``)
_TABLES = {"model": ModelConfig, "cinn": CINNConfig}


def model_config_table(text: str, where: str = "TOML") -> ModelConfig | CINNConfig:
    """The architecture in TOML ``text``: a ``[model]`` table (:class:`ModelConfig`, the INN), a
    ``[cinn]`` table (:class:`CINNConfig`, the conditional INN), or neither (the default INN).

    Raises
    ------
    ConfigError
        Invalid TOML, unknown keys, or both tables.
    """
    import tomllib

    from ..config import from_dict

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{where}: not valid TOML ({err})") from None
    found = [t for t in _TABLES if t in data]
    if len(found) > 1:
        raise ConfigError(f"{where}: has both [model] and [cinn] tables; expected one architecture")
    table = found[0] if found else "model"
    return from_dict(_TABLES[table], data.get(table, {}), where=f"{where} [{table}]")


@dataclass(frozen=True)
class TrainConfig:
    """Objective, optimiser and data handling of :func:`radynversion.model.train`.

    The loss per batch is (Osborne, Armstrong & Fletcher 2019; Ardizzone et al. 2019)::

        w_forward     * L2(y_pred, y)                      forward fit (+ output padding -> 0)
        + w_latent    * MMD([y_pred.detach(), z], [y, N(0, 1)])
        + f(e) * w_reverse     * MMD(reverse([N(0,1), y + noise]), x)
        + f(e) * w_reconstruct * L2(reverse([z, y + noise]), x)

    with the fade-in ``f(e) = min(1, (e / (fade_in_fraction * epochs))^fade_in_power)`` of
    epoch ``e`` (0-based); the padding noise is ``pad_noise * (1 - f(e))``. MMDs use sums of
    inverse multiquadric kernels ``1 / (1 + |a - b|^2 / (c D))`` over the scales ``c`` (``D``
    the dimension of the compared vectors, so that ``c`` does not depend on it).

    For the conditional INN (:class:`CINNConfig`) the loss is maximum likelihood::

        NLL(x + pad_noise pad_noise_scale N(0, 1) | y + noise) / (3 H) + w_forward * L2(emulator(x), y)

    (per dimension; the MMD weights, kernel scales and the fade-in do not apply). With
    ``tuning_programs`` > 0, ``y + noise`` is instead ``y`` observed through a tuning program
    (:mod:`radynversion.model.sampling`), for both kinds.

    Example
    -------
    >>> from radynversion.model import TrainConfig
    >>> TrainConfig(epochs=10).fwhm_A()["ca8542"]
    0.107
    """

    #: number of epochs and batch size; ``batches_per_epoch`` = 0 means one pass over the
    #: training split per epoch, n > 0 means n random batches ("short epochs")
    epochs: int = 1000
    batch_size: int = 500
    batches_per_epoch: int = 0
    #: Adam
    lr: float = 2e-3
    betas: tuple[float, float] = (0.8, 0.8)
    eps: float = 1e-6
    weight_decay: float = 2e-5
    #: step decay of the learning rate, every ``lr_decay_every`` epochs, reaching
    #: ``lr * lr_final_fraction`` at the last epoch
    lr_final_fraction: float = 0.004
    lr_decay_every: int = 1
    #: loss weights (forward L2, latent MMD on [y, z], reverse MMD, reverse reconstruction L2)
    w_forward: float = 3.0
    w_latent: float = 300.0
    w_reverse: float = 400.0
    w_reconstruct: float = 1.0
    #: reverse-loss fade-in ``(e / (fraction * epochs))^power``
    fade_in_fraction: float = 0.4
    fade_in_power: float = 3.0
    #: standard deviation of the noise in the padding dims (standardised units), fading out;
    #: for the conditional INN: of the noise added to the standardised atmospheres (constant)
    pad_noise: float = 5e-3
    #: conditional INN only: factors of ``pad_noise`` for ``(log_ne, log_T, v)``. The noise
    #: widens the learnt posterior to ``sqrt(width^2 + noise^2)`` (standardised units), which
    #: matters where the posterior is a few percent of the prior (``log_T`` in the chromosphere)
    pad_noise_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: conditional INN with ``partial_coverage`` only: further factors of the padding noise for
    #: ``(log_ne, log_T, v)`` on the examples that observe every model point (one noise for all
    #: coverages left two-line data too wide and one line slightly narrow, docs/history.md)
    pad_noise_full_coverage: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: standard deviation of the noise added to the profiles fed to the reverse pass, as a
    #: fraction of the joint peak (0 = none); drawn afresh for every batch
    noise: float = 0.01
    #: divide the noisy training profiles by their own joint peak, as an observation is
    #: normalised (:func:`radynversion.model.normalise_profiles` divides the noisy data by
    #: their largest value, so an observed profile peaks at exactly 1, scaled by ~1-2 % against
    #: the noise-free one); False feeds ``y + noise`` (peaking at ~1.02) as the original did
    renormalise_noisy: bool = False
    #: 0: the reverse pass sees the noise-free profiles on the model points plus independent
    #: noise there. n > 0: it sees them as an instrument samples them
    #: (:mod:`radynversion.model.sampling`): per example, one of n + 1 programs (the model's
    #: points, CRISP's default tunings, n - 1 random CRISP-like programs) with the noise at its
    #: tunings, interpolated onto the model points as :func:`radynversion.model.invert` does.
    #: Needs fine profiles reaching beyond the model windows
    tuning_programs: int = 0
    #: conditional INN with ``partial_coverage`` only: the share of training examples whose
    #: coverage is cut (:func:`radynversion.model.coverage.random_coverage`: one line alone,
    #: windows cut short, gaps); the rest are fully observed
    partial_fraction: float = 0.5
    #: ``partial_coverage`` only: the probability that a row whose windows are cut also gets a
    #: gap of 2-8 model points in one line (0.3: the shipped variant's)
    gap_fraction: float = 0.3
    #: element-wise clamp of the gradients
    grad_clamp: float = 15.0
    #: MMD kernel scales (see the class docstring)
    mmd_scales_latent: tuple[float, ...] = (0.05, 0.2, 0.9)
    mmd_scales_reverse: tuple[float, ...] = (0.05, 0.2, 0.9)
    #: FWHM [Angstrom] of the Gaussian instrument profile convolved with fine-grid profiles
    #: (0 = no degradation); CRISP values (Scharmer et al. 2008; de la Cruz Rodriguez et al. 2015)
    fwhm_halpha_A: float = HALPHA.crisp_fwhm_A
    fwhm_ca8542_A: float = CA8542.crisp_fwhm_A
    #: fraction of the samples held out for evaluation (``radynversion evaluate``): chosen by a
    #: hash of each sample's label (:func:`radynversion.model.evaluation_split`), so the same
    #: atmospheres stay out when the training set grows; never trained or validated on
    test_fraction: float = 0.1
    #: fraction of the remaining (usable) samples held out for validation (loss curves only)
    val_fraction: float = 0.1
    #: write the checkpoint every n epochs (and always after the last)
    checkpoint_every: int = 1
    #: ``model.pt`` holds the weights of the epoch with the lowest validation loss (early
    #: stopping) instead of the last epoch's; needs a validation split. The INN: the whole
    #: model at the lowest validation total. The conditional INN: the flow and conditioning
    #: network at the lowest validation NLL, the emulator (no shared weights) at its own lowest
    #: validation L2 (:func:`radynversion.model.train.best_epoch_parts`)
    keep_best: bool = False
    #: for a union of generators (:func:`radynversion.datasets.training_union`): each epoch's
    #: examples are drawn with replacement so that every population (``population``
    #: coordinate) contributes the same share (:func:`radynversion.model.train.population_weights`),
    #: whatever its number of draws; the epoch keeps its length. False: every draw once an
    #: epoch, so a population counts by its size. The validation loss stays unweighted
    balance_populations: bool = False
    #: for a union of generators: per-draw weights of some populations against 1 for the others,
    #: as ``[["noneq", 3.0]]`` (each noneq draw drawn three times as often as any other; the epoch
    #: keeps its length, examples are drawn with replacement). An alternative to
    #: ``balance_populations`` between it and plain sizes: a generator of costly draws can count
    #: for more without the others counting for less per draw. Empty: no weights
    population_weight: tuple[tuple[str, float], ...] = ()
    #: seed of the split, the batches and the noise
    seed: int = 0

    #: experiment options since removed, and the value under which each did nothing
    #: (:func:`radynversion.config.from_dict`): a random height shift of the training
    #: atmospheres, noise on the emulator's inputs, the emulator on the flow's noisy inputs
    RETIRED: ClassVar[dict[str, Any]] = {"height_jitter_Mm": 0.0, "emulator_noise": 0.0,
                                         "emulator_on_flow_noise": False}

    def __post_init__(self) -> None:
        for name in ("partial_fraction", "gap_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"TrainConfig.{name} = {getattr(self, name)}; expected 0 <= f <= 1")
        for name in ("epochs", "batch_size", "lr_decay_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} = {getattr(self, name)}; expected >= 1")
        if self.tuning_programs < 0:
            raise ConfigError(f"TrainConfig.tuning_programs = {self.tuning_programs}; expected >= 0 "
                              "(0 = the model's points only)")
        if self.batches_per_epoch < 0:
            raise ConfigError(f"TrainConfig.batches_per_epoch = {self.batches_per_epoch}; "
                              "expected >= 0 (0 = one pass)")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"TrainConfig.{name} = {getattr(self, name)}; expected 0 <= f < 1")
        if not 0.0 < self.lr_final_fraction <= 1.0:
            raise ConfigError(f"TrainConfig.lr_final_fraction = {self.lr_final_fraction}; "
                              "expected 0 < f <= 1")
        if self.fwhm_halpha_A < 0 or self.fwhm_ca8542_A < 0 or self.noise < 0 or self.pad_noise < 0:
            raise ConfigError("TrainConfig: FWHMs and noise levels must be >= 0")
        for name in ("pad_noise_scale", "pad_noise_full_coverage"):
            factors = getattr(self, name)
            if len(factors) != 3 or any(not s >= 0 for s in factors):
                raise ConfigError(f"TrainConfig.{name} = {factors}; expected three "
                                  "factors >= 0 (log_ne, log_T, v)")
        if any(not w > 0 for _, w in self.population_weight):
            raise ConfigError(f"TrainConfig.population_weight = {self.population_weight}; expected "
                              "[name, weight] pairs with weights > 0")
        if self.balance_populations and self.population_weight:
            raise ConfigError("TrainConfig: balance_populations and population_weight both set; "
                              "expected one of them")
        if not self.mmd_scales_latent or not self.mmd_scales_reverse:
            raise ConfigError("TrainConfig: MMD scales must not be empty")
        if self.keep_best and self.val_fraction <= 0:
            raise ConfigError("TrainConfig.keep_best needs a validation split; expected "
                              "val_fraction > 0")

    def fwhm_A(self) -> dict[str, float]:
        """Instrument FWHM per line key [Angstrom]."""
        return {ln.key: float(getattr(self, f"fwhm_{ln.key}_A")) for ln in LINES}

    def fade(self, epoch: int) -> float:
        """Reverse-loss weight factor ``f(epoch)`` in [0, 1] (0-based epoch)."""
        ramp = self.fade_in_fraction * self.epochs
        if ramp <= 0:
            return 1.0
        return float(min(1.0, (epoch / ramp) ** self.fade_in_power))
