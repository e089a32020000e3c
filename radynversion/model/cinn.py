"""The conditional invertible network: a normalising flow of the atmosphere given the profiles.

Beyond the original Radynversion (an INN trained with L2 + MMD losses), this models the
posterior directly, as in conditional INNs (Ardizzone et al. 2019, "Guided image generation
with conditional invertible neural networks"):

* a conditioning network ``c = h(standardised y)`` (fully connected, leaky ReLU), computed
  once per pixel;
* a flow ``z = f(x; c)`` of the standardised atmosphere ``x`` (3 H = 150 values), FrEIA GLOW
  affine coupling blocks whose subnets see ``[x half, c]``, with fixed random permutations
  between blocks; ``z`` has the size of ``x`` (no padding);
* trained by maximum likelihood, ``-log p(x | y) = |z|^2 / 2 - log |det dz/dx| + const``
  (:func:`cinn_losses`), the proper scoring rule whose optimum is the calibrated posterior;
* posterior draws are ``x = f^-1(z; c)`` with ``z ~ N(0, 1)``;
* a separate fully connected emulator ``y = g(x)`` (trained by L2 alongside, optionally with
  dropout and with noise on its inputs; it shares no weights with the flow) gives the round-trip misfit and the forward evaluation, which the
  flow alone cannot provide.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from FrEIA.framework import SequenceINN
from FrEIA.modules import GLOWCouplingBlock
from torch import Tensor, nn

from .base import PosteriorModel
from .config import CINNConfig, TrainConfig
from .coverage import random_coverage, renormalise
from .inn import _Permute, subnet_constructor
from .kernels import mlp
from .losses import noisy_profiles

__all__ = ["ConditionalINN", "cinn_losses", "dropout_mlp", "CINN_LOSS_NAMES"]

#: the unweighted components returned by :func:`cinn_losses` (plus ``"total"``)
CINN_LOSS_NAMES: tuple[str, ...] = ("nll", "forward_l2")


class ConditionalINN(PosteriorModel):
    """Conditional normalising flow ``p(atmosphere | profiles)`` plus a forward emulator.

    Parameters
    ----------
    config : CINNConfig
        Architecture (see :class:`radynversion.model.CINNConfig`).
    height_Mm : ndarray, shape ``(H,)``, optional
        Node heights [Mm]; default :func:`radynversion.atmosphere.default_height_grid`.
    fwhm_A : mapping line key -> float, optional
        Gaussian instrument FWHM [Angstrom] of the training profiles.

    Example
    -------
    >>> import torch
    >>> from radynversion.model import CINNConfig, ConditionalINN
    >>> net = ConditionalINN(CINNConfig(n_blocks=2, subnet_hidden=32, cond_hidden=32,
    ...                                 emulator_hidden=32))
    >>> c = net.condition(torch.rand(3, 60))
    >>> atm = net.sample(c, torch.randn(3, net.n_z))
    >>> atm.shape, net.emulate(atm).shape
    (torch.Size([3, 150]), torch.Size([3, 60]))
    """

    kind = "cinn"
    loss_names = CINN_LOSS_NAMES
    #: ``keep_best`` (:func:`radynversion.model.train.best_epoch_parts`): the flow and the
    #: conditioning network are kept at the epoch of the lowest validation NLL, the emulator,
    #: which shares no weights with them, at the epoch of its own lowest validation L2
    best_epoch_parts: ClassVar[dict[str, tuple[str, ...]]] = {"nll": (), "forward_l2": ("emulator.",)}

    def __init__(
        self,
        config: CINNConfig | None = None,
        height_Mm: np.ndarray | None = None,
        fwhm_A: dict[str, float] | None = None,
    ) -> None:
        config = config or CINNConfig()
        super().__init__(config, height_Mm=height_Mm, fwhm_A=fwhm_A)
        self.n_z = self.n_x
        slope = config.leaky_slope
        np_state = np.random.get_state()  # PermuteRandom reseeds numpy's global RNG
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                n_in = 2 * self.n_y if config.partial_coverage else self.n_y  # values and mask
                self.cond_net = (subnet_constructor(config.cond_hidden, config.cond_layers, slope, None)
                                 (n_in, config.cond_features)) if config.cond_layers else (
                    nn.Linear(n_in, config.cond_features))
                make_subnet = subnet_constructor(config.subnet_hidden, config.subnet_layers, slope,
                                                 config.output_init_scale)
                flow = SequenceINN(self.n_x)
                for k in range(config.n_blocks):
                    flow.append(GLOWCouplingBlock, cond=0, cond_shape=(config.cond_features,),
                                subnet_constructor=make_subnet, clamp=config.clamp,
                                clamp_activation=config.clamp_activation)
                    if k < config.n_blocks - 1:
                        flow.append(_Permute, seed=config.seed * 1000 + k)
                self.flow = flow
                self.emulator: nn.Module = (
                    dropout_mlp(self.n_x, self.n_y, config.emulator_hidden, config.emulator_layers,
                                 slope, config.emulator_dropout)
                    if config.emulator_dropout > 0 else
                    subnet_constructor(config.emulator_hidden, config.emulator_layers, slope, None)(
                        self.n_x, self.n_y))
        finally:
            np.random.set_state(np_state)

    # -- standardised atmospheres -------------------------------------------------------------
    def atmosphere_to_x(self, atm: Tensor) -> Tensor:
        """``[log_ne, log_T, v']`` ``(N, 3 H)`` -> standardised ``x`` ``(N, 3 H)``."""
        return (atm.to(self.x_mean.dtype) - self.x_mean) / self.x_std

    def x_to_atmosphere(self, x: Tensor) -> Tensor:
        """Standardised ``x`` ``(N, 3 H)`` -> ``[log_ne, log_T, v']``."""
        return x * self.x_std + self.x_mean

    # -- the flow ---------------------------------------------------------------------------------
    def forward(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """Standardised atmospheres ``(N, 3 H)`` and their context ``(N, n_c)`` -> latent ``z``
        ``(N, 3 H)`` and ``log |det dz/dx|`` ``(N,)``."""
        z, log_jac = self.flow(x, c=[context], jac=True)
        return z, log_jac

    def log_prob(self, atm: Tensor, y: Tensor) -> Tensor:
        """``log p(x | y)`` ``(N,)`` of standardised atmospheres (nats; add
        ``-sum(log x_std)`` for the density of the physical variables)."""
        z, log_jac = self(self.atmosphere_to_x(atm), self.condition(y))
        return -0.5 * (z**2).sum(1) - 0.5 * self.n_z * float(np.log(2 * np.pi)) + log_jac

    # -- the inference interface (PosteriorModel) ---------------------------------------------
    def condition(self, y: Tensor) -> Tensor:
        """Normalised profiles ``(N, 60)`` -> context ``(N, cond_features)``.

        With ``partial_coverage``, NaN marks an unobserved point: the conditioning network sees
        the standardised observed values (0 elsewhere) and the mask of observed points.
        """
        ys = self.standardise_y(y)
        if not self.config.partial_coverage:
            return self.cond_net(ys)
        seen = torch.isfinite(ys)
        return self.cond_net(torch.cat([torch.where(seen, ys, torch.zeros_like(ys)), seen.to(ys.dtype)], dim=1))

    def sample(self, context: Tensor, z: Tensor) -> Tensor:
        """``f^-1(z; context)`` -> ``[log_ne, log_T, v']`` ``(M, 3 H)``."""
        x, _ = self.flow(z.to(context.dtype), c=[context], rev=True, jac=False)
        return self.x_to_atmosphere(x)

    def sample_pixels(self, context: Tensor, z: Tensor) -> Tensor:
        """Posterior draws of whole pixels: context ``(G, n_c)``, latent ``z`` ``(G, S, n_z)``
        -> ``[log_ne, log_T, v']`` ``(G, S, 3 H)``.

        The reverse pass of the flow with the context's work done once per pixel instead of
        once per draw: the first layer of every coupling subnet is linear in ``[x half,
        context]``, so ``W [x; c] + b = W_x x + (W_c c + b)``, and ``W_c c + b`` is computed
        per pixel and broadcast over its ``S`` draws. That skips the concatenation of the
        context to every row (12 % of a CPU pass of the default model) and ~20 % of the
        subnets' multiply-adds. Same values as :meth:`sample` on the repeated context up to
        float rounding (the sum is split in two); networks that are not the plain stack of
        GLOW couplings and permutations built here fall back to :meth:`sample`.
        """
        g, s, n_z = z.shape
        blocks = list(self.flow.module_list)
        if not all(isinstance(b, (_Permute, GLOWCouplingBlock)) for b in blocks) or not all(
                isinstance(b.subnet1[0], nn.Linear) and isinstance(b.subnet2[0], nn.Linear)
                for b in blocks if isinstance(b, GLOWCouplingBlock)):
            return super().sample_pixels(context, z)
        x = z.to(context.dtype).reshape(g * s, n_z)
        sigmoid = self.config.clamp_activation == "SIGMOID"
        for block in reversed(blocks):
            if isinstance(block, _Permute):
                x = torch.index_select(x, 1, block.perm_inv)
                continue
            n1 = block.split_len1
            x1, x2 = x[:, :n1], x[:, n1:]
            # FrEIA's GLOW reverse: x2 <- (x2 - t1) e^-s1 from subnet1([x1, c]), then
            # x1 <- (x1 - t2) e^-s2 from subnet2([x2 new, c])
            y2 = _coupling_reverse(block, block.subnet1, x1, x2, context, s, sigmoid)
            y1 = _coupling_reverse(block, block.subnet2, y2, x1, context, s, sigmoid)
            x = torch.cat([y1, y2], dim=1)
        return self.x_to_atmosphere(x).view(g, s, -1)

    def emulate(self, atm: Tensor) -> Tensor:
        """The emulator: ``[log_ne, log_T, v']`` ``(M, 3 H)`` -> normalised profiles ``(M, 60)``."""
        x = self.atmosphere_to_x(atm)
        y = mlp(self.emulator, x)
        return y * self.y_std + self.y_mean

    def training_losses(self, atm: Tensor, y: Tensor, config: TrainConfig, fade: float,
                        generator: torch.Generator | None = None,
                        y_obs: Tensor | None = None) -> dict[str, Tensor]:
        """:func:`cinn_losses` (``fade`` is ignored)."""
        return cinn_losses(self, atm, y, config, generator, y_obs)


def _coupling_reverse(block: GLOWCouplingBlock, subnet: nn.Sequential, u: Tensor, v: Tensor,
                      context: Tensor, per_pixel: int, sigmoid: bool = False) -> Tensor:
    """One affine half-coupling of ``block`` reversed: ``(v - t) exp(-s)`` with ``[s, t] =
    subnet([u, c])``, the context's part of the first layer computed once per pixel, the
    other layers through :func:`radynversion.model.kernels.mlp` (bias and leaky ReLU fused on
    CPU).

    ``u`` and ``v`` have ``G per_pixel`` rows (pixel-major), ``context`` ``G``. ``sigmoid``:
    the block's clamp is ``SIGMOID``, ``s = c (2 sigmoid(a) - 1)``, and ``exp(-s)`` is formed
    as ``exp(c - 2 c sigmoid(a))`` (two element-wise passes fewer; for ``c`` a power of two,
    as the default 2, the same float32 values).
    """
    first = subnet[0]
    n_u = u.shape[1]
    h = nn.functional.linear(u, first.weight[:, :n_u])
    per_pix = nn.functional.linear(context, first.weight[:, n_u:], first.bias)
    h = h.view(context.shape[0], per_pixel, -1).add_(per_pix[:, None, :]).view(u.shape[0], -1)
    h = mlp(subnet[1:], h)
    n_v = v.shape[1]
    if sigmoid:
        c = float(block.clamp)
        inv_scale = torch.sigmoid(h[:, :n_v]).mul(-2.0 * c).add_(c).exp_()
    else:
        inv_scale = block.f_clamp(h[:, :n_v]).mul_(-block.clamp).exp_()  # exp(-s), in place
    return torch.sub(v, h[:, n_v:]).mul_(inv_scale)


def dropout_mlp(n_in: int, n_out: int, hidden: int, layers: int, slope: float,
                 dropout: float) -> nn.Sequential:
    """Fully connected, leaky ReLU, with dropout before every linear layer after the first.

    Parameters
    ----------
    n_in, n_out : int
        Input and output sizes.
    hidden, layers : int
        Hidden width and number of hidden layers.
    slope : float
        Negative slope of the leaky ReLU.
    dropout : float
        Dropout probability (active in training mode only).

    Returns
    -------
    torch.nn.Sequential
        ``(N, n_in) -> (N, n_out)``; torch's default initialisation.
    """
    mods: list[nn.Module] = [nn.Linear(n_in, hidden), nn.LeakyReLU(slope)]
    for _ in range(layers - 1):
        mods += [nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.LeakyReLU(slope)]
    mods += [nn.Dropout(dropout), nn.Linear(hidden, n_out)]
    return nn.Sequential(*mods)


def _as_observed(mc: CINNConfig, tc: TrainConfig, y: Tensor, generator: torch.Generator | None) -> Tensor:
    """Training profiles ``(B, 60)`` as the model's inputs are: with ``partial_coverage``, a
    share of them with coverage cut (NaN at unobserved points); normalised per line for a
    per-line model, ``"per_line"`` or ``"per_line_wing"`` (else unchanged: the v1-v7 stream
    draws nothing here)."""
    if mc.partial_coverage:
        seen = random_coverage(y.shape[0], tc.partial_fraction, generator, y.device, tc.gap_fraction)
        y = torch.where(seen, y, torch.full_like(y, float("nan")))
    if mc.partial_coverage or mc.normalisation != "joint":  # a cut row's own (or per-line) levels
        y = renormalise(y, mc.normalisation)
    return y


def cinn_losses(
    model: ConditionalINN,
    atm: Tensor,
    y: Tensor,
    config: TrainConfig,
    generator: torch.Generator | None = None,
    y_obs: Tensor | None = None,
) -> dict[str, Tensor]:
    """The maximum-likelihood objective for one batch.

    Parameters
    ----------
    model : ConditionalINN
    atm : Tensor, shape ``(B, 3 H)``
        ``[log_ne, log_T, v']`` (physical, not standardised).
    y : Tensor, shape ``(B, 60)``
        Peak-normalised profiles, noise free.
    config : TrainConfig
        ``noise`` (profiles fed to the condition, fraction of the joint peak), ``pad_noise``
        (added to the standardised atmospheres fed to the flow), ``w_forward`` (emulator
        weight).
    generator : torch.Generator, optional
        Source of the noise (on ``model``'s device).
    y_obs : Tensor, shape ``(B, 60)``, optional
        The profiles the condition sees, already noisy (``TrainConfig.tuning_programs``:
        observed through a tuning program, :mod:`radynversion.model.sampling`); default ``y``
        plus ``config.noise`` (:func:`noisy_profiles`).

    Returns
    -------
    dict
        ``nll`` (mean negative log-likelihood per dimension of the standardised atmosphere,
        without the constant ``log(2 pi) / 2``: it can be negative), ``forward_l2`` (emulator
        mean squared error, standardised profile units) and ``total = nll + w_forward *
        forward_l2``.
    """

    def randn_like(t: Tensor) -> Tensor:
        return torch.randn(t.shape, generator=generator, device=t.device, dtype=t.dtype)

    x = model.atmosphere_to_x(atm)
    eps = None
    if config.pad_noise > 0:  # per variable (log_ne, log_T, v); factors of 1 change no bit
        scale = x.new_tensor(config.pad_noise_scale).repeat_interleave(x.shape[1] // 3)
        eps = randn_like(x) * scale
        x_in = x + config.pad_noise * eps
    else:
        x_in = x
    y_in = y_obs
    if y_in is None:
        y_in = noisy_profiles(y, config, randn_like(y)) if config.noise > 0 else y
    y_in = _as_observed(model.config, config, y_in, generator)
    full_factor = tuple(config.pad_noise_full_coverage)
    if eps is not None and model.config.partial_coverage and full_factor != (1.0, 1.0, 1.0):
        # the same draws, scaled again on the rows that observe every point (the stream is unchanged)
        full = torch.isfinite(y_in).all(dim=1, keepdim=True)
        factor = x.new_tensor(full_factor).repeat_interleave(x.shape[1] // 3)
        x_in = x + config.pad_noise * eps * torch.where(full, factor, torch.ones_like(factor))
    z, log_jac = model(x_in, model.condition(y_in))
    nll = (0.5 * (z**2).sum(1) - log_jac).mean() / model.n_z
    y_pred = model.emulator(x)
    forward_l2 = ((y_pred - model.standardise_y(y)) ** 2).mean()
    return {"nll": nll, "forward_l2": forward_l2, "total": nll + config.w_forward * forward_l2}
