"""Which arithmetic the posterior passes run in: what ``precision="auto"`` chooses.

The passes (:func:`radynversion.model.posterior.posterior`) run in fp32, tf32 (CUDA) or bf16
(:func:`radynversion.model.posterior.precision_context`). A cheaper precision is worth its
rounding only where the device multiplies it natively (:func:`reduced_precisions`) and where
its arithmetic error is small against the quantiles' own Monte Carlo error on a probe set
(:func:`precision_noise_ratio`); :func:`select_precision` picks the first such one, else fp32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .base import PosteriorModel
from .posterior import DEFAULT_QUANTILES, default_batch_size, posterior

__all__ = ["MAX_NOISE_RATIO", "precision_noise_ratio", "reduced_precisions", "cpu_has_native_bf16",
           "select_precision"]

#: the largest arithmetic error accepted by ``precision="auto"``, as a fraction of the quantiles'
#: Monte Carlo error (:func:`precision_noise_ratio`): the total error grows by at most 3 %
MAX_NOISE_RATIO: float = 0.25


def _to_vprime(q: np.ndarray) -> np.ndarray:
    """Quantiles ``(N, Q, 3, H)`` with v [km/s] as ``v' = sign(v) log10(|v| + 1)`` (float64)."""
    a = np.array(q, dtype=np.float64)
    a[:, :, 2] = np.sign(a[:, :, 2]) * np.log10(np.abs(a[:, :, 2]) + 1.0)
    return a


def _probe_profiles(net: PosteriorModel, n: int, seed: int) -> np.ndarray:
    """Profiles ``(n, 60)`` the network itself maps standard-normal (standardised)
    atmospheres to: a probe set in the training distribution's neighbourhood."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(n, net.n_x, generator=gen).to(net.device)
    with torch.inference_mode():
        y = net.emulate(x * net.x_std + net.x_mean)
    return y.float().cpu().numpy()


def _probe_set(net: PosteriorModel, y: np.ndarray | None, n_probe: int, seed: int) -> np.ndarray:
    """The first ``n_probe`` rows of ``y``, else ``n_probe`` :func:`_probe_profiles`."""
    if y is None:
        y = _probe_profiles(net, n_probe, seed)
    return np.asarray(y, dtype=np.float32)[: max(1, n_probe)]


def reduced_precisions(device: torch.device | str) -> tuple[str, ...]:
    """The precisions that are faster than fp32 on ``device``, cheapest first.

    CUDA: ``("bf16", "tf32")``. CPU: ``("bf16",)`` where the cores multiply bfloat16 matrices
    natively: Intel AMX tiles (e.g. Sapphire Rapids, ~5x the fp32 matmul rate) or the AVX-512
    BF16 dot-product instructions (e.g. AMD Zen 4, ~2.4x); else none (there bf16 matmuls are
    emulated and no faster than fp32).
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        return ("bf16", "tf32")
    if dev.type == "cpu":
        return ("bf16",) if cpu_has_native_bf16() else ()
    return ()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX or AVX-512 BF16)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for name in checks:
        try:
            if bool(getattr(torch.cpu, name)()):
                return True
        except (AttributeError, RuntimeError):  # pragma: no cover - older torch
            continue
    return False


def precision_noise_ratio(
    net: PosteriorModel,
    precision: str,
    y: np.ndarray | None = None,
    n_probe: int = 16,
    samples: int = 1024,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    seed: int = 0,
    probe_samples: int = 256,
    compile: bool = False,
    sampling: str = "plain",
) -> float:
    """The arithmetic error of ``precision`` against the Monte Carlo error of the quantiles.

    The quantiles of ``S`` draws scatter around the posterior's true quantiles by their
    Monte Carlo error ``sigma_MC``, estimated from two fp32 runs with independent draws
    (``rms(q_a - q_b) / sqrt(2)``). The arithmetic error is ``rms(q_precision - q_a)`` with the
    same draws as ``q_a``. Their ratio ``r`` says what a precision costs in accuracy: the
    total error grows by a factor ``sqrt(1 + r^2)`` (1.03 for ``r`` = 0.25). ``log_ne`` and
    ``log_T`` are compared in dex, ``v`` as ``v'``; all probe pixels, quantiles and heights
    together.

    The runs use ``S = min(samples, probe_samples)`` draws, and the ratio is scaled to
    ``samples`` draws by ``sqrt(samples / S)`` (``sigma_MC`` falls as ``1 / sqrt(S)``, the
    arithmetic error does not depend on ``S``), so the check costs three runs of
    ``n_probe x S`` draws whatever the run's size.

    Parameters
    ----------
    net : PosteriorModel
    precision : {"fp32", "tf32", "bf16"}
    y : ndarray, shape ``(N, 60)``, optional
        Probe profiles (e.g. a few pixels of the data to invert); default ``n_probe``
        profiles the network maps standard-normal atmospheres to.
    n_probe, samples, quantiles, seed
        Probe pixels (at most), draws per pixel of the run judged, quantiles compared, seed.
    probe_samples : int
        Draws per pixel of the probe runs (at most ``samples``).
    compile : bool
        Judge the compiled passes (both precisions; :func:`posterior`).
    sampling : {"plain", "sobol"}
        The run's latent draws: the Monte Carlo error is that of the draws the run makes
        (smaller for Sobol points at the same count, so the bar is stricter).

    Returns
    -------
    float
        ``r`` at ``samples`` draws (0 for fp32; inf where a precision gives non-finite
        quantiles).
    """
    y = _probe_set(net, y, n_probe, seed)
    ids = np.arange(y.shape[0])
    s_probe = max(2, min(int(samples), int(probe_samples)))
    kw = dict(samples=s_probe, quantiles=quantiles, misfit=False, compile=compile, sampling=sampling,
              batch_size=max(default_batch_size(net.device), s_probe))
    ref = _to_vprime(posterior(net, y, ids, seed=seed, **kw).quantiles)  # type: ignore[arg-type]
    if precision == "fp32":
        return 0.0
    other = _to_vprime(posterior(net, y, ids, seed=seed + 1, **kw).quantiles)  # type: ignore[arg-type]
    got = _to_vprime(posterior(net, y, ids, seed=seed, precision=precision, **kw).quantiles)  # type: ignore[arg-type]
    finite = np.isfinite(ref) & np.isfinite(other)
    if not finite.any() or not np.isfinite(got[finite]).all():
        return math.inf
    sigma_mc = math.sqrt(float(np.mean((ref[finite] - other[finite]) ** 2)) / 2.0)
    arith = math.sqrt(float(np.mean((got[finite] - ref[finite]) ** 2)))
    if sigma_mc == 0.0:
        return 0.0 if arith == 0.0 else math.inf
    return arith / sigma_mc * math.sqrt(max(int(samples), s_probe) / s_probe)


def select_precision(
    net: PosteriorModel,
    y: np.ndarray | None = None,
    candidates: Sequence[str] | None = None,
    max_noise_ratio: float = MAX_NOISE_RATIO,
    samples: int = 1024,
    compile: bool = False,
    sampling: str = "plain",
) -> str:
    """What ``precision="auto"`` runs: the first of ``candidates`` that is faster than fp32 on
    ``net``'s device (:func:`reduced_precisions`) and whose arithmetic error is at most
    ``max_noise_ratio`` of the quantiles' Monte Carlo error at ``samples`` draws on the probe
    profiles ``y`` (:func:`precision_noise_ratio`); else ``"fp32"``.

    So a CPU without native bf16 (AMX or AVX-512 BF16), or a model whose quantiles bf16 moves by more than a quarter of
    their sampling error, runs in fp32. With ``compile`` the candidates are judged in their compiled form
    (:func:`precision_noise_ratio`).

    Example
    -------
    >>> from radynversion.model import ModelConfig, RadynversionINN
    >>> select_precision(RadynversionINN(ModelConfig(n_blocks=2, subnet_hidden=32))) in ("fp32", "bf16")
    True
    """
    fast = reduced_precisions(net.device)
    for cand in fast if candidates is None else [c for c in candidates if c in fast]:
        if precision_noise_ratio(net, cand, y, samples=samples, compile=compile, sampling=sampling) <= max_noise_ratio:
            return cand
    return "fp32"
