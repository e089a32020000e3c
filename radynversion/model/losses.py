"""The training objective of the invertible network (Ardizzone et al. 2019; Osborne,
Armstrong & Fletcher 2019).

For a batch of standardised atmospheres ``x`` and normalised profiles ``y``:

* ``forward_l2``: mean squared error of the forward profiles (standardised units), plus the
  mean square of the output padding (which should stay zero);
* ``latent_mmd``: MMD between ``[y_pred (no gradient), z]`` and ``[y, N(0, 1)]``: the latent
  must be standard normal and independent of the profiles;
* ``reverse_mmd``: MMD between reverse samples ``reverse([N(0, 1), y + noise])`` and ``x``:
  the posterior samples, pooled over the batch, must look like the training atmospheres;
* ``reconstruct_l2``: mean squared error of ``reverse([z, y + noise])`` against ``x``, with
  ``z`` the forward latent.

MMDs use a sum of inverse multiquadric kernels, whose heavy tails keep gradients alive far
from the target, with squared distances scaled by the dimension of the compared vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import PosteriorModel
from .config import TrainConfig

__all__ = ["LOSS_NAMES", "mmd_imq", "inn_losses", "noisy_profiles"]

#: the unweighted components returned by :func:`inn_losses` (plus ``"total"``)
LOSS_NAMES: tuple[str, ...] = ("forward_l2", "latent_mmd", "reverse_mmd", "reconstruct_l2")


def _sq_dist(a: Tensor, b: Tensor) -> Tensor:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return d.clamp_min(0.0)


def mmd_imq(a: Tensor, b: Tensor, scales: Sequence[float]) -> Tensor:
    """Squared maximum mean discrepancy with multiscale inverse multiquadric kernels.

    ``k(p, q) = sum_c 1 / (1 + |p - q|^2 / (c D))``; unbiased (U-statistic) estimate
    ``mean_{i != j} k(a_i, a_j) + mean_{i != j} k(b_i, b_j) - 2 mean k(a_i, b_j)``, whose
    expectation does not depend on the batch size (it can be slightly negative). The omitted
    diagonal terms are constants, so the gradients are those of the biased estimate.

    Parameters
    ----------
    a : Tensor, shape ``(N, D)``
    b : Tensor, shape ``(M, D)``
    scales : sequence of float
        Kernel scales ``c`` (relative to the dimension ``D``).

    Returns
    -------
    Tensor, shape ``()``

    Example
    -------
    >>> import torch
    >>> from radynversion.model.losses import mmd_imq
    >>> a = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    >>> round(float(mmd_imq(a, a + 3.0, (0.1, 1.0))), 3)
    0.82
    """
    dim = a.shape[1]

    def kernel(p: Tensor, q: Tensor) -> Tensor:
        d = _sq_dist(p, q) / dim
        return sum(1.0 / (1.0 + d / c) for c in scales)  # type: ignore[return-value]

    def within(p: Tensor) -> Tensor:
        n = p.shape[0]
        if n < 2:
            return p.new_zeros(())
        k = kernel(p, p)
        return (k.sum() - k.diagonal().sum()) / (n * (n - 1))

    return within(a) + within(b) - 2.0 * kernel(a, b).mean()


def noisy_profiles(y: Tensor, config: TrainConfig, unit_noise: Tensor) -> Tensor:
    """The profiles the reverse pass is trained on: ``y + noise unit_noise``, divided by their
    own joint peak if ``config.renormalise_noisy`` (as observed profiles are normalised).

    Parameters
    ----------
    y : Tensor, shape ``(B, 60)``
        Noise-free peak-normalised profiles.
    config : TrainConfig
        ``noise`` (fraction of the joint peak) and ``renormalise_noisy``.
    unit_noise : Tensor, shape ``(B, 60)``
        Standard-normal draws.
    """
    noisy = y + config.noise * unit_noise
    if config.renormalise_noisy:
        noisy = noisy / noisy.amax(dim=1, keepdim=True).clamp_min(1e-6)
    return noisy


def inn_losses(
    model: PosteriorModel,
    atm: Tensor,
    y: Tensor,
    config: TrainConfig,
    fade: float,
    generator: torch.Generator | None = None,
    y_obs: Tensor | None = None,
) -> dict[str, Tensor]:
    """The loss components and the weighted total for one batch.

    Parameters
    ----------
    model : PosteriorModel
    atm : Tensor, shape ``(B, 3 H)``
        ``[log_ne, log_T, v']`` (physical, not standardised).
    y : Tensor, shape ``(B, 60)``
        Peak-normalised profiles, noise free.
    config : TrainConfig
        Weights, kernel scales, noise levels.
    fade : float
        Reverse-loss factor in [0, 1] (:meth:`TrainConfig.fade`); the padding noise is
        ``pad_noise * (1 - fade)``.
    generator : torch.Generator, optional
        Source of all random draws (on ``model``'s device).
    y_obs : Tensor, shape ``(B, 60)``, optional
        The profiles the reverse pass sees, already noisy (``TrainConfig.tuning_programs``:
        observed through a tuning program, :mod:`radynversion.model.sampling`); default ``y``
        plus ``config.noise`` (:func:`noisy_profiles`).

    Returns
    -------
    dict
        ``{name: scalar Tensor}`` for :data:`LOSS_NAMES` and ``"total"``.
    """
    n_x, n_y, n_z = model.n_x, model.n_y, model.n_z
    batch = atm.shape[0]
    pad_sigma = config.pad_noise * (1.0 - fade)

    def randn(*shape: int) -> Tensor:
        return torch.randn(shape, generator=generator, device=atm.device, dtype=atm.dtype)

    x = model.atmosphere_to_x(atm, pad_noise=pad_sigma, generator=generator)
    x_core = x[:, :n_x]
    yz, _ = model(x)
    z_out = yz[:, :n_z]
    y_out = yz[:, n_z : n_z + n_y]
    pad_out = yz[:, n_z + n_y :]
    y_s = (y - model.y_mean) / model.y_std

    forward_l2 = ((y_out - y_s) ** 2).mean()
    if pad_out.shape[1]:
        forward_l2 = forward_l2 + (pad_out**2).mean()
    latent_mmd = mmd_imq(torch.cat([y_out.detach(), z_out], 1), torch.cat([y_s, randn(batch, n_z)], 1),
                         config.mmd_scales_latent)

    y_noisy = y_obs
    if y_noisy is None:
        y_noisy = noisy_profiles(y, config, randn(batch, n_y)) if config.noise > 0 else y
    x_sample = model.reverse(model.pack_yz(y_noisy, randn(batch, n_z), pad_sigma, generator))[:, :n_x]
    reverse_mmd = mmd_imq(x_sample, x_core, config.mmd_scales_reverse)
    x_rec = model.reverse(model.pack_yz(y_noisy, z_out, pad_sigma, generator))[:, :n_x]
    reconstruct_l2 = ((x_rec - x_core) ** 2).mean()

    total = (config.w_forward * forward_l2 + config.w_latent * latent_mmd
             + fade * (config.w_reverse * reverse_mmd + config.w_reconstruct * reconstruct_l2))
    return {"forward_l2": forward_l2, "latent_mmd": latent_mmd, "reverse_mmd": reverse_mmd,
            "reconstruct_l2": reconstruct_l2, "total": total}
