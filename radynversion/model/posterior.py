"""The batched posterior core: draws, reverse passes and reductions on the model's device.

For ``N`` pixels with normalised profiles ``y`` ``(N, 60)``, ``S`` latent draws
``z ~ N(0, 1)`` per pixel are pushed through the reverse network together with the pixel's
``y`` (Osborne, Armstrong & Fletcher 2019); the ``S`` posterior samples of
``[log_ne, log_T, v']`` ``(S, 3 H)`` are sorted (on a GPU with ``torch.sort`` on the device;
on the CPU with numpy's vectorised sort along a contiguous axis, much faster than
``torch.sort`` there) and only the order statistics that the requested quantiles need are
kept. With ``misfit`` the first ``misfit_samples`` draws of each pixel (default
:data:`DEFAULT_MISFIT_SAMPLES`; all with None) also go through the forward network, and the
RMS of ``forward(sample) - y`` over the 60 profile points, averaged over those draws, is
reduced on the device too. Samples are never held for more than one group of pixels
(``return_samples`` excepted, for small selections).

Layout of the work (what makes results exactly reproducible)
------------------------------------------------------------
``batch_size`` rows (pixels x samples) form one *pass*. A *group* of
``P = max(1, batch_size // S)`` pixels fills one pass (or, when ``S > batch_size``, one
pixel spans ``ceil(S / batch_size)`` passes). Every pass has the same shape: its rows are
padded with dummy rows (zero profiles, zero latents) to a multiple of 64 rows plus 64 more, so

* matrix products and element-wise kernels see the same shapes whichever pixels a group
  holds, and no real row falls into a kernel's remainder loop (which may round differently
  from its vector loop);
* the draws of a pixel come from its own generator seeded with
  :func:`pixel_seeds` ``(seed, pixel_index)`` (:func:`pixel_latents`).

Latent draws (:data:`SAMPLINGS`)
--------------------------------
``"plain"``: independent standard-normal draws (Monte Carlo). ``"sobol"``: randomised
quasi-Monte Carlo, the first ``S`` points of the ``n_z``-dimensional Sobol sequence
(Joe & Kuo direction numbers, as ``torch.quasirandom.SobolEngine``), randomised per pixel by a
random digital shift (each coordinate's 32 bits XORed with the pixel's own random word; L'Ecuyer
& Lemieux 2002) and mapped through the Gaussian inverse CDF. Every point is then exactly
standard normal, so quantiles and misfit stay unbiased, while the points fill the latent space
more evenly than independent draws. On the packaged model's quantile maps of a mixed scan,
512 such points are more accurate than 1,024 plain draws on average (0.79 of their RMS error)
but not in the upper tail of ``v`` (1.08); 640 match them on every variable and quantile
(worst 0.96; ``benchmarks/maps_at_accuracy.py``). The first ``m`` points of
the sequence are themselves a balanced set, so the round trip's first ``misfit_samples`` draws
are too. Powers of two keep the sequence's balance best.

The round-trip rows of a pass (the first ``misfit_samples`` draws of each of its pixels) are
gathered into a forward pass padded the same way (:func:`misfit_layout`).

Hence a pixel's quantiles and misfit depend only on ``(seed, pixel_index)``, ``samples``,
``misfit_samples``, ``quantiles`` and the device, and not on which other pixels are inverted
with it, in which order, or how they are chunked; on CPU (one torch thread per pass, as the engine runs them)
they are also independent of ``batch_size``, which the tests check bit for bit. On CUDA,
cuBLAS picks its algorithms per shape, so keep ``batch_size`` fixed across runs that must
agree bit for bit (the engine records it).

Precision (:data:`PRECISIONS`): ``"fp32"`` (IEEE float32, TF32 disabled), ``"tf32"`` (CUDA
matmuls with TF32), ``"bf16"`` (``torch.autocast`` to bfloat16; the v transform, sorting and
interpolation stay in float32/float64). :func:`radynversion.model.precision.select_precision` (``precision="auto"``)
picks the cheapest one that is faster than fp32 on the device (:func:`reduced_precisions`:
bf16 and tf32 on CUDA, bf16 on CPUs with AMX or AVX-512 BF16) and whose arithmetic error is at most a quarter
of the quantiles' own Monte Carlo error on a probe set (:func:`precision_noise_ratio`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..atmosphere import inverse_velocity_transform
from ..datasets import splitmix64
from ..errors import SelectionTooLargeError
from .base import PosteriorModel
from .compiled import compiled_model
from .coverage import renormalise

__all__ = [
    "SAMPLINGS",
    "DEFAULT_SAMPLES",
    "pixel_latents",
    "DEFAULT_QUANTILES",
    "DEFAULT_MISFIT_SAMPLES",
    "PRECISIONS",
    "MAX_SAMPLES_BYTES",
    "PosteriorResult",
    "pixel_seeds",
    "default_batch_size",
    "pass_layout",
    "misfit_draws",
    "misfit_layout",
    "samples_nbytes",
    "check_samples_size",
    "posterior",
]

DEFAULT_QUANTILES: tuple[float, ...] = (0.05, 0.16, 0.5, 0.84, 0.95)
#: how latent draws are made (module docstring)
SAMPLINGS: tuple[str, ...] = ("sobol", "plain")
#: draws per pixel by sampling that give the accuracy of 1,024 plain Monte Carlo draws on the
#: quantile maps of the packaged model (``benchmarks/maps_at_accuracy.py``)
DEFAULT_SAMPLES: dict[str, int] = {"sobol": 640, "plain": 1024}
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16")
#: ``return_samples`` refuses selections whose samples would take more bytes than this
MAX_SAMPLES_BYTES: int = 2**30
#: passes are padded to a multiple of this many rows, plus this many guard rows
_ROW_ALIGN = 64
#: rows per pass by device type
_DEFAULT_BATCH = {"cpu": 2048, "cuda": 65536}
#: draws per pixel that take part in the round-trip misfit by default
DEFAULT_MISFIT_SAMPLES = 64


def pixel_seeds(seed: int, pixel_index: np.ndarray) -> np.ndarray:
    """Seeds of the per-pixel generators: a SplitMix64 hash of ``(seed, pixel_index)``.

    Parameters
    ----------
    seed : int
    pixel_index : ndarray of int, shape ``(N,)``

    Returns
    -------
    ndarray of uint64, shape ``(N,)``

    Example
    -------
    >>> from radynversion.model.posterior import pixel_seeds
    >>> import numpy as np
    >>> bool(pixel_seeds(0, np.arange(3))[1] == pixel_seeds(0, np.array([1]))[0])
    True
    """
    base = splitmix64(np.asarray([seed % 2**64], dtype=np.uint64))
    idx = np.asarray(pixel_index).astype(np.int64).astype(np.uint64)
    return splitmix64(base ^ splitmix64(idx))


_SOBOL_CACHE: dict[tuple[int, str], torch.Tensor] = {}
_SOBOL_LOCK = threading.Lock()
#: Sobol tables longer than this many points are made on demand, not kept
_SOBOL_CACHE_POINTS = 1 << 16


def _sobol_words(n_points: int, n_dims: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The first ``n_points`` unscrambled Sobol points as 32-bit words ``(n_points, n_dims)``
    (int64 on ``device``), cached per dimension and device up to 65,536 points (grown by
    doubling)."""
    dev = torch.device(device)

    def table(n: int) -> torch.Tensor:
        eng = torch.quasirandom.SobolEngine(n_dims, scramble=False)
        return (eng.draw(n, dtype=torch.float64) * 2.0**32).round().to(device=dev, dtype=torch.int64)

    if n_points > _SOBOL_CACHE_POINTS:
        return table(n_points)
    key = (int(n_dims), str(dev))
    with _SOBOL_LOCK:
        have = _SOBOL_CACHE.get(key)
        if have is None or have.shape[0] < n_points:
            have = _SOBOL_CACHE[key] = table(min(_SOBOL_CACHE_POINTS, 1 << max(10, (n_points - 1).bit_length())))
        return have[:n_points]


def pixel_latents(sampling: str, pixel_seed: int, samples: int, n_z: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The latent draws of one pixel: ``(samples, n_z)`` float32 standard-normal points.

    Parameters
    ----------
    sampling : {"sobol", "plain"}
        Randomised Sobol points or independent draws (module docstring).
    pixel_seed : int
        The pixel's seed (:func:`pixel_seeds`): the draws depend on it alone.
    samples, n_z : int
        Draws and latent dimensions.
    generator : torch.Generator, optional
        A generator to reuse (re-seeded here); its device is where the draws are made (they
        differ between CPU and CUDA generators).

    Example
    -------
    >>> z = pixel_latents("sobol", 7, 256, 150)
    >>> z.shape, bool(abs(float(z.mean())) < 0.01)
    (torch.Size([256, 150]), True)
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling {sampling!r}; expected one of {SAMPLINGS}")
    gen = generator if generator is not None else torch.Generator(device="cpu")
    gen.manual_seed(int(pixel_seed))
    if sampling == "plain":
        return torch.randn(samples, n_z, generator=gen, device=gen.device)
    # the shift, the XOR and the inverse CDF on the generator's device (no host round trip)
    shift = torch.randint(0, 2**32, (n_z,), generator=gen, device=gen.device, dtype=torch.int64)
    u = ((_sobol_words(samples, n_z, gen.device) ^ shift).to(torch.float64) + 0.5) * 2.0**-32  # in (0, 1)
    return torch.special.ndtri(u).to(torch.float32)


def default_batch_size(device: torch.device | str) -> int:
    """Rows (pixels x samples) per pass on ``device``: 2048 on CPU, 65536 on CUDA."""
    return _DEFAULT_BATCH.get(torch.device(device).type, _DEFAULT_BATCH["cpu"])


def pass_layout(samples: int, batch_size: int) -> tuple[int, int, int]:
    """How pixels and samples are laid out in passes.

    Parameters
    ----------
    samples : int
        Draws per pixel ``S``.
    batch_size : int
        Requested rows per pass.

    Returns
    -------
    pixels_per_group : int
        ``P = max(1, batch_size // S)``.
    rows_per_pass : int
        Real rows in a full pass: ``P S`` if ``S <= batch_size``, else ``batch_size``.
    rows_allocated : int
        Rows actually run per pass: ``rows_per_pass`` rounded up to a multiple of 64, plus 64.
    """
    if samples < 1 or batch_size < 1:
        raise ValueError(f"pass_layout: samples = {samples}, batch_size = {batch_size}; expected >= 1")
    per_group = max(1, batch_size // samples)
    rows = per_group * samples if samples <= batch_size else batch_size
    alloc = -(-rows // _ROW_ALIGN) * _ROW_ALIGN + _ROW_ALIGN
    return per_group, rows, alloc


def samples_nbytes(n_pixels: int, samples: int, n_x: int = 150) -> int:
    """Bytes of float32 posterior samples ``(n_pixels, samples, n_x)``."""
    return int(n_pixels) * int(samples) * int(n_x) * 4


def check_samples_size(n_pixels: int, samples: int, n_x: int = 150,
                       limit: int = MAX_SAMPLES_BYTES) -> None:
    """Refuse ``return_samples`` for selections whose samples exceed ``limit`` bytes.

    Raises
    ------
    SelectionTooLargeError
        With a one-line message saying how to select fewer pixels.
    """
    need = samples_nbytes(n_pixels, samples, n_x)
    if need > limit:
        raise SelectionTooLargeError(
            f"return_samples: {n_pixels} pixels x {samples} samples x {n_x} values would take "
            f"{need / 2**30:.2f} GiB, over the {limit / 2**30:.2f} GiB limit; select fewer pixels "
            "first (e.g. ds.isel(y=slice(0, 16), x=slice(0, 16))) or use the quantiles")


@dataclass
class PosteriorResult:
    """What :func:`posterior` returns.

    Attributes
    ----------
    quantiles : ndarray, shape ``(N, Q, 3, H)``, float32
        Posterior quantiles of ``log_ne`` [dex cm^-3], ``log_T`` [dex K], ``v`` [km/s] per
        pixel; NaN for invalid pixels.
    misfit : ndarray, shape ``(N,)``, float32
        Mean over samples of the RMS round-trip misfit (fraction of the joint peak); NaN
        for invalid pixels or when not computed.
    valid : ndarray of bool, shape ``(N,)``
        Pixels whose profiles were finite (the others were not inverted).
    samples : ndarray, shape ``(N, S, 3, H)``, float32, or None
        The posterior samples (``return_samples=True`` only).
    precision : str
        The arithmetic used (:data:`PRECISIONS`).
    compiled : bool
        Whether the passes ran through ``torch.compile``.
    """

    quantiles: np.ndarray
    misfit: np.ndarray
    valid: np.ndarray
    samples: np.ndarray | None
    precision: str
    compiled: bool = False


class _MatmulModeGate:
    """Process-wide CUDA matmul mode (TF32 or IEEE fp32) shared by concurrent passes.

    torch's TF32 switch is global, while a worker runs passes from several threads: passes of
    the same mode run together, a pass of the other mode waits until they are done, and the
    previous setting is restored when the last pass leaves. So a pass never sees the switch
    flip under it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._mode: bool | None = None
        self._active = 0
        self._saved: object = None

    @staticmethod
    def _get() -> object:
        matmul = torch.backends.cuda.matmul
        return matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32

    @staticmethod
    def _set(value: object) -> None:
        matmul = torch.backends.cuda.matmul
        if hasattr(matmul, "fp32_precision"):
            matmul.fp32_precision = value if isinstance(value, str) else ("tf32" if value else "ieee")
        else:  # pragma: no cover - older torch
            matmul.allow_tf32 = bool(value == "tf32" or value is True)

    @contextlib.contextmanager
    def __call__(self, tf32: bool) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._active == 0 or self._mode == tf32)
            if self._active == 0:
                self._saved = self._get()
                self._mode = tf32
                self._set(tf32)
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._set(self._saved)
                    self._mode = None
                    self._cond.notify_all()


_matmul_mode = _MatmulModeGate()


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Arithmetic of the passes: ``fp32``, ``tf32`` (CUDA only) or ``bf16`` (autocast).

    On CUDA, fp32 and bf16 passes run with TF32 off (IEEE fp32 matmuls) whatever the global
    setting; the process-wide switch is shared safely by concurrent passes
    (:class:`_MatmulModeGate`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}; expected one of {PRECISIONS} (or 'auto')")
    if precision == "tf32" and device.type != "cuda":
        raise ValueError(f"precision 'tf32' needs a CUDA device; the model is on {device}")
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(_matmul_mode(precision == "tf32"))
        if precision == "bf16":
            stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
        yield


def _observed_rms(y_fwd: torch.Tensor, y_obs: torch.Tensor, normalisation: str) -> torch.Tensor:
    """RMS of emulated minus observed profiles ``(M, 60)`` over the observed (finite) points,
    the emulated ones normalised as the observation is (:mod:`radynversion.model.coverage`)."""
    seen = torch.isfinite(y_obs)
    y_fwd = renormalise(torch.where(seen, y_fwd, torch.full_like(y_fwd, float("nan"))), normalisation)
    d = torch.where(seen, y_fwd - y_obs, torch.zeros_like(y_fwd))
    return ((d**2).sum(dim=1) / seen.sum(dim=1).clamp_min(1)).sqrt()


def misfit_draws(samples: int, misfit_samples: int | None = DEFAULT_MISFIT_SAMPLES) -> int:
    """Draws per pixel that go through the round trip: ``min(samples, misfit_samples)``
    (all ``samples`` when ``misfit_samples`` is None).

    Raises
    ------
    ValueError
        ``misfit_samples`` < 1.
    """
    if misfit_samples is None:
        return int(samples)
    if int(misfit_samples) < 1:
        raise ValueError(f"misfit_samples = {misfit_samples}; expected >= 1 (or None: every draw)")
    return min(int(samples), int(misfit_samples))


def misfit_layout(samples: int, batch_size: int, n_mis: int) -> tuple[int, int]:
    """Rows of the round-trip (forward) pass when only the first ``n_mis`` draws of each
    pixel take part: ``(real rows of a full pass, rows allocated)``, padded like
    :func:`pass_layout` (a multiple of 64, plus 64), so that its shape too depends only on
    ``(samples, batch_size, n_mis)``."""
    per_group, rows_pass, _ = pass_layout(samples, batch_size)
    rows = per_group * n_mis if samples <= batch_size else min(n_mis, rows_pass)
    return rows, -(-max(rows, 1) // _ROW_ALIGN) * _ROW_ALIGN + _ROW_ALIGN


def _group_quantiles(atm: torch.Tensor, ks: np.ndarray, ks_t: torch.Tensor, k_lo: np.ndarray,
                     k_hi: np.ndarray, q_w: np.ndarray, n_h: int, host_sort: bool) -> np.ndarray:
    """Quantiles ``(n, Q, n_x)`` (float32, v in km/s) of the samples ``atm`` ``(n, S, n_x)``.

    Only the order statistics ``ks`` are kept after sorting each variable's ``S`` draws. On
    the CPU the draws are sorted with :func:`numpy.sort` along a contiguous axis (a vectorised
    sort, about 10x faster here than ``torch.sort`` over the strided draw axis); elsewhere
    with ``torch.sort`` on the device. Both give the same order statistics, exactly.
    """
    if host_sort:
        srt = np.sort(atm.transpose(1, 2).contiguous().numpy(), axis=2)  # (n, n_x, S)
        stats = srt[:, :, ks].transpose(0, 2, 1).astype(np.float64)  # (n, K, n_x)
    else:
        stats = torch.sort(atm, dim=1).values.index_select(1, ks_t).double().cpu().numpy()
    lo, hi = stats[:, k_lo], stats[:, k_hi]
    vs = slice(2 * n_h, 3 * n_h)
    lo[:, :, vs] = inverse_velocity_transform(lo[:, :, vs])
    hi[:, :, vs] = inverse_velocity_transform(hi[:, :, vs])
    return (lo + (hi - lo) * q_w).astype(np.float32)


def posterior(
    net: PosteriorModel,
    y: np.ndarray,
    pixel_index: np.ndarray,
    samples: int = 1024,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    seed: int = 0,
    batch_size: int | None = None,
    misfit: bool = True,
    precision: str = "fp32",
    return_samples: bool = False,
    max_samples_bytes: int = MAX_SAMPLES_BYTES,
    misfit_samples: int | None = DEFAULT_MISFIT_SAMPLES,
    compile: bool = False,
    sampling: str = "plain",
) -> PosteriorResult:
    """Posterior quantiles (and misfit) of many pixels, reduced on ``net``'s device.

    Parameters
    ----------
    net : PosteriorModel
        The model (either kind, any device); put in eval mode for the call.
    y : ndarray, shape ``(N, 60)``
        Normalised profiles (:func:`radynversion.model.normalise_profiles`); rows with
        NaNs are skipped (NaN outputs).
    pixel_index : ndarray of int, shape ``(N,)``
        Global index of each pixel, for its seed (:func:`pixel_seeds`).
    samples : int
        Draws per pixel ``S``.
    quantiles : sequence of float
        ``Q`` quantiles in [0, 1] (linear interpolation between order statistics, as
        :func:`numpy.quantile`), computed in the physical variables (v in km/s).
    seed : int
        Seed of the draws.
    batch_size : int, optional
        Rows (pixels x samples) per pass; default :func:`default_batch_size` of the device.
    misfit : bool
        Also compute the round-trip misfit (a forward pass of the first ``misfit_samples``
        draws of each pixel).
    precision : {"fp32", "tf32", "bf16"}
        Arithmetic of the passes (see the module docstring).
    return_samples : bool
        Also return the samples ``(N, S, 3, H)``: for small selections only.
    max_samples_bytes : int
        Limit of ``return_samples`` (:func:`check_samples_size`).
    misfit_samples : int or None
        Draws per pixel in the round trip (:data:`DEFAULT_MISFIT_SAMPLES`; None = all
        ``samples``): the misfit is the mean RMS over the first ``min(samples,
        misfit_samples)`` draws of each pixel (draws are independent, so these are a random
        subset). The forward pass costs as much as the reverse pass per draw, so at 1024
        samples the default nearly halves the work; the mean's sampling error over 64 draws is
        ~1/8 of the spread of the per-draw RMS.
    compile : bool
        Run the passes through ``torch.compile`` (:func:`radynversion.model.compiled.compiled_model`):
        faster after a one-off compilation per process, rounding slightly differently.
    sampling : {"plain", "sobol"}
        How the latent draws are made (:data:`SAMPLINGS`, :func:`pixel_latents`).

    Returns
    -------
    PosteriorResult

    Raises
    ------
    SelectionTooLargeError
        ``return_samples`` for a selection above ``max_samples_bytes``.

    Example
    -------
    >>> import numpy as np
    >>> from radynversion.model import ModelConfig, RadynversionINN
    >>> from radynversion.model.posterior import posterior
    >>> net = RadynversionINN(ModelConfig(n_blocks=2, subnet_hidden=32, subnet_layers=1))
    >>> res = posterior(net, np.full((3, 60), 0.5, np.float32), np.arange(3), samples=16)
    >>> res.quantiles.shape, res.misfit.shape
    ((3, 5, 3, 50), (3,))
    """
    if samples < 1:
        raise ValueError(f"posterior: samples = {samples}; expected >= 1")
    if sampling not in SAMPLINGS:
        raise ValueError(f"posterior: sampling {sampling!r}; expected one of {SAMPLINGS}")
    misfit_draws(samples, misfit_samples)  # refuse a bad value even without misfit
    q = np.asarray([float(v) for v in quantiles], dtype=np.float64)
    if q.size == 0 or np.any(~(q >= 0.0) | ~(q <= 1.0)):
        raise ValueError(f"posterior: quantiles {q.tolist()}; expected values in [0, 1]")
    y = np.asarray(y, dtype=np.float32)
    ids = np.asarray(pixel_index).reshape(-1)
    if y.ndim != 2 or y.shape[1] != net.n_y or ids.size != y.shape[0]:
        raise ValueError(f"posterior: y has shape {y.shape} and pixel_index {ids.size} entries; "
                         f"expected (N, {net.n_y}) and N")
    if compile:
        net = compiled_model(net)
    dev = net.device
    if batch_size is None:
        batch_size = default_batch_size(dev)
    n_pix, n_h, n_x = y.shape[0], net.height_Mm.numel(), net.n_x
    partial = bool(getattr(net.config, "partial_coverage", False))
    normalisation = getattr(net.config, "normalisation", "joint")
    per_line = normalisation != "joint"
    # with partial coverage NaN marks an unobserved point; a pixel needs one observed point
    # (normalise_profiles makes a bad pixel's whole row NaN)
    valid = np.isfinite(y).any(axis=1) if partial else np.isfinite(y).all(axis=1)
    if return_samples:
        check_samples_size(int(valid.sum()), samples, n_x, max_samples_bytes)
    seeds = pixel_seeds(seed, ids)
    # order statistics: value = lo + (hi - lo) * w at position q (S - 1)
    pos = q * (samples - 1)
    q_lo = np.floor(pos).astype(np.int64)
    q_hi = np.minimum(q_lo + 1, samples - 1)
    q_w = (pos - q_lo)[None, :, None]

    n_q = q.size
    out_q = np.full((n_pix, n_q, n_x), np.nan, dtype=np.float32)
    out_rms = np.full(n_pix, np.nan, dtype=np.float32)
    out_s = np.full((n_pix, samples, n_x), np.nan, dtype=np.float32) if return_samples else None

    per_group, rows_pass, rows_alloc = pass_layout(samples, batch_size)
    group_rows = per_group * samples
    n_pass = -(-group_rows // rows_pass)
    n_mis = misfit_draws(samples, misfit_samples) if misfit else 0
    mis_rows, mis_alloc = misfit_layout(samples, batch_size, n_mis)
    whole = samples <= batch_size  # a pass holds whole pixels (else one pixel spans n_pass passes)
    # rows of a full pass that enter the round trip: the first n_mis draws of each pixel
    mis_idx = (torch.arange(per_group, device=dev)[:, None] * samples
               + torch.arange(n_mis, device=dev)[None, :]).reshape(-1) if whole and n_mis else None
    ks = np.unique(np.concatenate([q_lo, q_hi]))
    k_lo = np.searchsorted(ks, q_lo)
    k_hi = np.searchsorted(ks, q_hi)
    ks_t = torch.as_tensor(ks, device=dev)
    host_sort = dev.type == "cpu"
    n_z, n_y = net.n_z, net.n_y
    gen = torch.Generator(device=dev)
    todo = np.flatnonzero(valid)
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode(), precision_context(precision, dev):
            for start in range(0, todo.size, per_group):
                pix = todo[start : start + per_group]
                n = pix.size
                y_g = torch.zeros(per_group, n_y, device=dev)
                y_g[:n] = torch.as_tensor(y[pix], device=dev)
                ctx_g = net.condition(y_g)  # once per pixel
                z_g = torch.zeros(group_rows, n_z, device=dev)
                for j, i in enumerate(pix):
                    z_g[j * samples : (j + 1) * samples] = pixel_latents(sampling, int(seeds[i]), samples, n_z, gen)
                atm_g = torch.empty(group_rows, n_x, device=dev)
                rms_g = torch.empty(per_group, max(n_mis, 1), device=dev)
                for p in range(n_pass):
                    r0, r1 = p * rows_pass, min((p + 1) * rows_pass, group_rows)
                    k = r1 - r0
                    if whole:  # one pass of k = per_group * samples rows, pixel-major
                        atm = net.sample_pixels(ctx_g, z_g.view(per_group, samples, n_z))
                    else:  # a slice of one pixel's draws, padded to a fixed shape
                        z_p = torch.zeros(1, rows_alloc, n_z, device=dev, dtype=ctx_g.dtype)
                        z_p[0, :k] = z_g[r0:r1]
                        atm = net.sample_pixels(ctx_g[:1], z_p)
                    atm = atm.reshape(-1, n_x).float()
                    atm_g[r0:r1] = atm[:k]
                    if not n_mis:
                        continue
                    if n_mis >= samples:  # every draw: the pass itself
                        x_f, cnt = atm, k
                        y_f = y_g[:per_group].repeat_interleave(samples, dim=0) if whole else y_g[:1]
                    else:
                        cnt = mis_rows if whole else max(0, min(k, n_mis - r0))
                        if cnt == 0:
                            continue
                        x_f = torch.zeros(mis_alloc, n_x, device=dev, dtype=atm.dtype)
                        x_f[:cnt] = atm.index_select(0, mis_idx) if whole else atm[:cnt]
                        y_f = y_g[:per_group].repeat_interleave(n_mis, dim=0) if whole else y_g[:1]
                    y_fwd = net.emulate(x_f)
                    if partial or per_line:
                        rms = _observed_rms(y_fwd[:cnt].float(), y_f, normalisation)
                    else:
                        rms = ((y_fwd[:cnt].float() - y_f) ** 2).mean(dim=1).sqrt()
                    if whole:
                        rms_g[:, :] = rms.view(per_group, -1)[:, :n_mis]
                    else:
                        rms_g[0, r0 : r0 + cnt] = rms
                out_q[pix] = _group_quantiles(atm_g.view(per_group, samples, n_x)[:n], ks, ks_t, k_lo, k_hi,
                                              q_w, n_h, host_sort)
                if n_mis:
                    out_rms[pix] = rms_g.mean(dim=1)[:n].cpu().numpy()
                if out_s is not None:
                    s = atm_g.view(per_group, samples, n_x)[:n].double().cpu().numpy()
                    vs = slice(2 * n_h, 3 * n_h)
                    s[:, :, vs] = inverse_velocity_transform(s[:, :, vs])
                    out_s[pix] = s.astype(np.float32)
    finally:
        net.train(was_training)
    return PosteriorResult(
        quantiles=out_q.reshape(n_pix, n_q, 3, n_h),
        misfit=out_rms,
        valid=valid,
        samples=None if out_s is None else out_s.reshape(n_pix, samples, 3, n_h),
        precision=precision,
        compiled=bool(compile),
    )
