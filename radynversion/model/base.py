"""What every posterior model has in common: the interface inference is written against.

Two model kinds implement it:

* :class:`radynversion.model.RadynversionINN`, the original invertible network (one map
  between atmospheres and ``[latent, profiles]``, trained with L2 + MMD terms);
* :class:`radynversion.model.ConditionalINN`, a conditional normalising flow of the atmosphere
  given the profiles (trained by maximum likelihood) with a separate forward emulator.

Inference (:func:`radynversion.model.posterior`, the Dask engine, evaluation) uses only:

* :meth:`PosteriorModel.condition`: normalised profiles ``(N, 60)`` -> context ``(N, n_c)``,
  computed once per pixel;
* :meth:`PosteriorModel.sample`: context rows and latent draws ``z ~ N(0, 1)`` ``(M, n_z)``
  -> atmospheres ``[log_ne, log_T, v']`` ``(M, 3 H)``;
* :meth:`PosteriorModel.emulate`: atmospheres ``(M, 3 H)`` -> normalised profiles ``(M, 60)``
  (the round trip);
* the buffers ``height_Mm``, ``fwhm_A`` and the standardisation ``x_mean``, ``x_std``,
  ``y_mean``, ``y_std``; ``config.intensity_unit``; ``metadata``.

Training (:func:`radynversion.model.train`) uses :meth:`PosteriorModel.training_losses` and
:attr:`PosteriorModel.loss_names`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ..atmosphere import default_height_grid
from ..lines import LINES
from .preprocess import N_PROFILE

__all__ = ["PosteriorModel"]


class PosteriorModel(nn.Module):
    """Base class of the posterior models (see the module docstring).

    Parameters
    ----------
    config : dataclass
        The architecture; must have ``intensity_unit``, ``standardise`` and ``std_floor``.
    height_Mm : ndarray, shape ``(H,)``, optional
        Node heights [Mm]; default :func:`radynversion.atmosphere.default_height_grid`.
    fwhm_A : mapping line key -> float, optional
        Gaussian instrument FWHM [Angstrom] the training profiles were degraded with; kept
        with the model so that inversion treats observations the same way.

    Attributes
    ----------
    n_x, n_y : int
        Sizes of the atmosphere vector (3 H) and of the profiles (60).
    n_z : int
        Size of the latent (set by the subclass).
    metadata : dict
        Plain-Python provenance filled by :func:`radynversion.model.load_model` and
        :func:`radynversion.model.train`.
    trust : TrustReference or None
        What the model knows of its training distribution, to flag pixels unlike it
        (:mod:`radynversion.model.trust`); None where it was never fitted.
    """

    #: the model kind written into checkpoints (``"inn"`` or ``"cinn"``)
    kind: ClassVar[str] = ""
    #: the unweighted loss components of :meth:`training_losses` (plus ``"total"``)
    loss_names: ClassVar[tuple[str, ...]] = ()

    height_Mm: Tensor
    fwhm_A: Tensor
    x_mean: Tensor
    x_std: Tensor
    y_mean: Tensor
    y_std: Tensor
    n_z: int

    def __init__(self, config, height_Mm: np.ndarray | None = None,  # noqa: ANN001 - any config dataclass
                 fwhm_A: dict[str, float] | None = None) -> None:
        super().__init__()
        self.config = config
        heights = default_height_grid() if height_Mm is None else np.array(height_Mm, dtype=float)
        self.n_x = 3 * heights.size
        self.n_y = N_PROFILE
        fwhm = dict(fwhm_A or {})
        self.register_buffer("height_Mm", torch.as_tensor(heights, dtype=torch.float64))
        self.register_buffer(
            "fwhm_A", torch.tensor([float(fwhm.get(ln.key, 0.0)) for ln in LINES], dtype=torch.float64))
        self.register_buffer("x_mean", torch.zeros(self.n_x))
        self.register_buffer("x_std", torch.ones(self.n_x))
        self.register_buffer("y_mean", torch.zeros(self.n_y))
        self.register_buffer("y_std", torch.ones(self.n_y))
        self.metadata: dict = {}
        self.trust: Any = None  # radynversion.model.trust.TrustReference, set by load_model / train

    # -- the inference interface ----------------------------------------------------------------
    def condition(self, y: Tensor) -> Tensor:
        """Normalised profiles ``(N, 60)`` -> per-pixel context ``(N, n_c)`` for :meth:`sample`."""
        raise NotImplementedError

    def sample(self, context: Tensor, z: Tensor) -> Tensor:
        """Posterior draws: context rows ``(M, n_c)`` (:meth:`condition`, repeated per draw)
        and latent draws ``z`` ``(M, n_z)`` from N(0, 1) -> ``[log_ne, log_T, v']`` ``(M, 3 H)``."""
        raise NotImplementedError

    def sample_pixels(self, context: Tensor, z: Tensor) -> Tensor:
        """Posterior draws of whole pixels: one context row per pixel ``(G, n_c)`` and their
        latent draws ``z`` ``(G, S, n_z)`` -> ``[log_ne, log_T, v']`` ``(G, S, 3 H)``.

        The values of :meth:`sample` with each pixel's context repeated over its draws (this
        default does exactly that); a subclass may skip the repetition and do per-pixel work
        once per pixel.
        """
        g, s, n_z = z.shape
        rows = context[:, None, :].expand(g, s, context.shape[1]).reshape(g * s, -1)
        return self.sample(rows, z.reshape(g * s, n_z)).view(g, s, -1)

    def emulate(self, atm: Tensor) -> Tensor:
        """Forward model: ``[log_ne, log_T, v']`` ``(M, 3 H)`` -> normalised profiles ``(M, 60)``."""
        raise NotImplementedError

    def training_losses(self, atm: Tensor, y: Tensor, config, fade: float,  # noqa: ANN001
                        generator: torch.Generator | None = None,
                        y_obs: Tensor | None = None) -> dict[str, Tensor]:
        """The loss components (:attr:`loss_names`) and the weighted ``"total"`` of one batch of
        physical atmospheres ``(B, 3 H)`` and noise-free normalised profiles ``(B, 60)``;
        ``y_obs`` ``(B, 60)``, if given, are the noisy profiles the reverse pass sees instead of
        ``y`` plus noise."""
        raise NotImplementedError

    # -- standardisation --------------------------------------------------------------------
    def standardise_y(self, y: Tensor) -> Tensor:
        """Normalised profiles ``(N, 60)`` -> standardised ``(N, 60)``."""
        return (y.to(self.y_mean.dtype) - self.y_mean) / self.y_std

    def set_standardisation(self, atm: np.ndarray | Tensor, y: np.ndarray | Tensor) -> None:
        """Set the per-feature means/stds from training arrays ``atm`` ``(N, 3 H)`` and ``y``
        ``(N, 60)`` (no-op unless ``config.standardise``)."""
        if not self.config.standardise:
            return
        floor = self.config.std_floor
        for name, arr in (("x", atm), ("y", y)):
            t = torch.as_tensor(np.asarray(arr), dtype=torch.float64)
            getattr(self, f"{name}_mean").copy_(t.mean(0))
            getattr(self, f"{name}_std").copy_(t.std(0).clamp_min(floor))

    def instrument_fwhm_A(self) -> dict[str, float]:
        """Instrument FWHM per line key [Angstrom] recorded with the model."""
        return {ln.key: float(f) for ln, f in zip(LINES, self.fwhm_A.tolist(), strict=True)}

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.x_mean.device
