"""The invertible network (Osborne, Armstrong & Fletcher 2019, after Ardizzone et al. 2019).

A stack of FrEIA GLOW affine coupling blocks (soft clamp of the log scale) with a fixed random
permutation between consecutive blocks, on vectors of a fixed ``width``:

* input side ``x = [standardised (log_ne, log_T, v') (3 H = 150), zero padding]``;
* output side ``yz = [z (latent_dim), standardised y (60), zero padding]``.

Forward maps an atmosphere to its profiles plus a latent; reverse maps profiles plus a draw
``z ~ N(0, 1)`` to one posterior sample of the atmosphere.

Standardisation (``ModelConfig.standardise``): the network sees ``(x - mean) / std`` and
``(y - mean) / std``, per feature, with means and standard deviations of the training split
(floored at ``std_floor``), kept as buffers of the module so a checkpoint carries them. The
raw variables span very different ranges (log ne 10-15, log T 3.5-7.5, v' -3 to 3, and profile
points 0-1 whose spread varies strongly from wing to core); equalising them lets the same
loss weights, kernel scales and padding-noise level mean the same thing for every feature.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from FrEIA.framework import SequenceINN
from FrEIA.modules import GLOWCouplingBlock, PermuteRandom
from torch import Tensor, nn

from ..errors import ConfigError
from .base import PosteriorModel
from .config import ModelConfig, TrainConfig
from .losses import LOSS_NAMES, inn_losses

__all__ = ["RadynversionINN", "subnet_constructor"]


class _Float32Linear(nn.Linear):
    """``nn.Linear`` whose output is float32 even under a bfloat16 autocast (a no-op in fp32;
    same parameters and state-dict keys). The couplings' scale and shift, ``exp(atan(s))``
    and ``x * scale + shift``, then run in float32: more accurate, and faster on CPU, where
    ``atan`` in bfloat16 is 3x slower than in float32."""

    #: read by :func:`radynversion.model.kernels.mlp`, which keeps this cast in its fused path
    float32_output = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).float()


def subnet_constructor(
    hidden: int, layers: int, slope: float = 0.01, init_scale: float | None = 1e-3
) -> Callable[[int, int], nn.Module]:
    """Factory of the coupling subnets: fully connected, leaky ReLU.

    Parameters
    ----------
    hidden : int
        Hidden width; 0 = twice the output width.
    layers : int
        Number of hidden layers.
    slope : float
        Negative slope of the leaky ReLU.
    init_scale : float or None
        Standard deviation of the initial output-layer weights (biases start at 0), so that
        every coupling starts close to the identity; None keeps torch's default initialisation
        (for networks that are not couplings).

    Returns
    -------
    callable ``(dims_in, dims_out) -> nn.Module`` mapping ``(N, dims_in) -> (N, dims_out)``.
    """

    def build(dims_in: int, dims_out: int) -> nn.Module:
        width = hidden or 2 * dims_out
        mods: list[nn.Module] = []
        n_in = dims_in
        for _ in range(layers):
            mods += [nn.Linear(n_in, width), nn.LeakyReLU(slope, inplace=True)]
            n_in = width
        out = _Float32Linear(n_in, dims_out)
        if init_scale is not None:
            nn.init.normal_(out.weight, std=init_scale)
            nn.init.zeros_(out.bias)
        mods.append(out)
        return nn.Sequential(*mods)

    return build


class _Permute(PermuteRandom):
    """FrEIA's ``PermuteRandom`` (same permutation, same parameters and state-dict keys), with
    the columns gathered by ``torch.index_select`` instead of advanced indexing: the same
    values, about 6x faster on CPU (advanced indexing along dim 1 took ~8 % of a posterior pass
    of the default network)."""

    def forward(self, x, rev=False, jac=True):  # noqa: ANN001, ANN201 - FrEIA's signature
        return [torch.index_select(x[0], 1, self.perm_inv if rev else self.perm)], 0.0


class RadynversionINN(PosteriorModel):
    """Invertible map between atmospheres and (latent, profiles), all padded to ``width``.

    Parameters
    ----------
    config : ModelConfig
        Architecture (see :class:`ModelConfig`).
    height_Mm : ndarray, shape ``(H,)``, optional
        Node heights [Mm]; default :func:`radynversion.atmosphere.default_height_grid`.
    fwhm_A : mapping line key -> float, optional
        Gaussian instrument FWHM [Angstrom] the training profiles were degraded with; kept
        with the model (buffer ``fwhm_A``) so that inversion treats observations the same way.

    Attributes
    ----------
    n_x, n_y, n_z : int
        Sizes of the atmosphere (3 H), of the profiles (60) and of the latent.
    metadata : dict
        Plain-Python provenance (training-set hash, configs...) filled by
        :func:`radynversion.model.load_model` and :func:`radynversion.model.train`.

    Example
    -------
    >>> import torch
    >>> from radynversion.model import ModelConfig, RadynversionINN
    >>> inn = RadynversionINN(ModelConfig(n_blocks=2, subnet_hidden=32, subnet_layers=1))
    >>> x = inn.atmosphere_to_x(torch.zeros(4, 150))
    >>> yz, log_jac = inn(x)
    >>> yz.shape, log_jac.shape
    (torch.Size([4, 160]), torch.Size([4]))
    >>> bool(torch.allclose(inn.reverse(yz), x, atol=1e-5))
    True
    """

    kind = "inn"
    loss_names = LOSS_NAMES

    def __init__(
        self,
        config: ModelConfig | None = None,
        height_Mm: np.ndarray | None = None,
        fwhm_A: dict[str, float] | None = None,
    ) -> None:
        config = config or ModelConfig()
        super().__init__(config, height_Mm=height_Mm, fwhm_A=fwhm_A)
        self.n_z = config.latent_dim
        if config.width < self.n_x or config.width < self.n_z + self.n_y:
            raise ConfigError(
                f"ModelConfig: width {config.width} is too small; expected width >= {self.n_x} "
                f"(3 x {self.height_Mm.numel()} heights) and >= latent_dim + {self.n_y} = "
                f"{self.n_z + self.n_y}")
        self.inn = self._build(config)

    @staticmethod
    def _build(config: ModelConfig) -> SequenceINN:
        make_subnet = subnet_constructor(
            config.subnet_hidden, config.subnet_layers, config.leaky_slope, config.output_init_scale)
        # Seed the weights without touching the caller's torch RNG, and undo PermuteRandom's
        # reseeding of numpy's global RNG.
        np_state = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                inn = SequenceINN(config.width)
                for k in range(config.n_blocks):
                    inn.append(GLOWCouplingBlock, subnet_constructor=make_subnet, clamp=config.clamp,
                               clamp_activation=config.clamp_activation)
                    if k < config.n_blocks - 1:
                        inn.append(_Permute, seed=config.seed * 1000 + k)
        finally:
            np.random.set_state(np_state)
        return inn

    # -- the invertible map ---------------------------------------------------------------
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Atmosphere side -> profile side.

        Parameters
        ----------
        x : Tensor, shape ``(N, width)``
            Padded, standardised atmospheres (:meth:`atmosphere_to_x`).

        Returns
        -------
        yz : Tensor, shape ``(N, width)``
            ``[z, y, padding]`` (:meth:`unpack_yz`).
        log_jac : Tensor, shape ``(N,)``
            log |det d yz / d x|.
        """
        yz, log_jac = self.inn(x, jac=True)
        return yz, log_jac

    def reverse(self, yz: Tensor) -> Tensor:
        """Profile side -> atmosphere side: ``(N, width) -> (N, width)`` (inverse of
        :meth:`forward`)."""
        x, _ = self.inn(yz, rev=True, jac=False)
        return x

    # -- layout helpers -------------------------------------------------------------------
    @property
    def width(self) -> int:
        """Total width of the network."""
        return self.config.width

    def _pad(self, core: Tensor, pad_noise: float, generator: torch.Generator | None) -> Tensor:
        n_pad = self.width - core.shape[1]
        if n_pad == 0:
            return core
        pad = core.new_zeros(core.shape[0], n_pad)
        if pad_noise > 0:
            pad = pad_noise * torch.randn(pad.shape, generator=generator, device=pad.device,
                                          dtype=pad.dtype)
        return torch.cat([core, pad], dim=1)

    def atmosphere_to_x(
        self, atm: Tensor, pad_noise: float = 0.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """``[log_ne, log_T, v']`` ``(N, 3 H)`` -> standardised, padded ``x`` ``(N, width)``
        (padding zero, or ``N(0, pad_noise^2)``)."""
        core = (atm.to(self.x_mean.dtype) - self.x_mean) / self.x_std
        return self._pad(core, pad_noise, generator)

    def x_to_atmosphere(self, x: Tensor) -> Tensor:
        """Padded ``x`` ``(N, width)`` -> ``[log_ne, log_T, v']`` ``(N, 3 H)``."""
        return x[:, : self.n_x] * self.x_std + self.x_mean

    def pack_yz(
        self, y: Tensor, z: Tensor, pad_noise: float = 0.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Normalised profiles ``y`` ``(N, 60)`` and latent ``z`` ``(N, latent_dim)`` ->
        ``[z, standardised y, padding]`` ``(N, width)``."""
        ys = self.standardise_y(y)
        return self._pad(torch.cat([z.to(ys.dtype), ys], dim=1), pad_noise, generator)

    def unpack_yz(self, yz: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, width)`` -> (``y`` ``(N, 60)`` in peak-normalised units, ``z`` ``(N, latent_dim)``)."""
        z = yz[:, : self.n_z]
        y = yz[:, self.n_z : self.n_z + self.n_y] * self.y_std + self.y_mean
        return y, z

    # -- the inference interface (PosteriorModel) -------------------------------------------
    def condition(self, y: Tensor) -> Tensor:
        """Normalised profiles ``(N, 60)`` -> standardised profiles ``(N, 60)`` (the context)."""
        return self.standardise_y(y)

    def sample(self, context: Tensor, z: Tensor) -> Tensor:
        """``reverse([z, context, 0])`` -> ``[log_ne, log_T, v']`` ``(M, 3 H)``."""
        core = torch.cat([z.to(context.dtype), context], dim=1)
        return self.x_to_atmosphere(self.reverse(self._pad(core, 0.0, None)))

    def emulate(self, atm: Tensor) -> Tensor:
        """The profile part of ``forward(atm)``: normalised profiles ``(M, 60)``."""
        yz, _ = self.inn(self.atmosphere_to_x(atm), jac=False)
        return self.unpack_yz(yz)[0]

    def training_losses(self, atm: Tensor, y: Tensor, config: TrainConfig, fade: float,
                        generator: torch.Generator | None = None,
                        y_obs: Tensor | None = None) -> dict[str, Tensor]:
        """:func:`radynversion.model.losses.inn_losses`."""
        return inn_losses(self, atm, y, config, fade, generator, y_obs)
