"""Training on profiles as a filtergraph samples them: tunings, noise, interpolation.

An observation reaches the network through :func:`radynversion.model.normalise_profiles`: the
instrument records each line at a few tunings (CRISP: 15 in H-alpha, 21 in Ca II 8542, denser
in the core), with noise at each tuning, and the preprocessing interpolates those values
linearly onto the model's 30 evenly spaced points per line. Interpolating between sparse
tunings bends a line core (the median RMS change is ~1 % of the peak for CRISP's default
programs, ~3 % at the 90th percentile) and correlates the noise, so profiles observed that way
are not the noise-free model-grid profiles plus independent noise that a network is trained on
by default.

:class:`ObservedSampling` gives the training loop profiles observed that way. For each of
several observing programs it holds the noise-free profiles of every training sample at the
program's tunings (instrument transmission applied, :func:`radynversion.instrument.degrade`)
and the interpolation onto the model points; :meth:`ObservedSampling.observe` picks a program
per example, adds noise at its tunings and interpolates. The programs
(:func:`tuning_programs`): the model's own points (data sampled finer than the instrument are
convolved and resampled onto them, :func:`radynversion.model.preprocess.needs_degradation`),
CRISP's default programs (:func:`radynversion.instrument.crisp_tunings`) and random CRISP-like
variants (number of tunings, reach and core density), so that a network trained on them does
not depend on one program.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from ..errors import ConfigError, ProfileSchemaError
from ..instrument import _EDGE_FWHM, CRISP_PROGRAMS, crisp_tunings, degrade, resampling_matrix
from ..lines import LINES
from ..schema import convert_intensity, to_air_angstrom
from .preprocess import MIN_WINDOW_TUNINGS, needs_degradation

__all__ = ["MODEL_POINTS", "tuning_programs", "ObservedSampling"]

#: the name of the program that samples each line at the model's own points
MODEL_POINTS = "model points"
#: random programs: tunings per line between these factors of CRISP's default number
_N_RANGE = (0.6, 2.0)
#: random programs: core density (``crisp_tunings``' ``a``) range
_CORE_DENSITY_RANGE = (0.0, 3.0)
#: random programs reach at least this far beyond the model window [Angstrom] and at most this
#: far beyond CRISP's default half-width
_REACH_MARGIN_A = (0.02, 0.3)


def tuning_programs(count: int, seed: int = 0, max_halfwidth_A: Mapping[str, float] | None = None
                    ) -> list[dict[str, np.ndarray] | str]:
    """Observing programs to train on: the model's points, CRISP's default, random variants.

    Parameters
    ----------
    count : int
        Number of tuning programs besides the model's points (>= 1): CRISP's default programs
        (:data:`radynversion.instrument.CRISP_PROGRAMS`) and ``count - 1`` random ones. Per
        line, a random program has between 0.6 and 2 times CRISP's default number of tunings
        (at least :data:`radynversion.model.preprocess.MIN_WINDOW_TUNINGS` within the model
        window), reaches 0.02-0.3 A beyond the model window (and beyond CRISP's default) and has
        a core density ``a`` of 0-3 (:func:`radynversion.instrument.crisp_tunings`).
    seed : int
        Seed of the random programs.
    max_halfwidth_A : mapping line key -> float, optional
        Largest offset from the line centre a tuning may have [A] (the data's reach less the
        transmission's margin); CRISP's default half-width is clipped to it too.

    Returns
    -------
    list
        ``[MODEL_POINTS, {line key: tunings [air A], ...}, ...]``, ``count + 1`` entries.
    """
    if count < 1:
        raise ConfigError(f"tuning_programs: count = {count}; expected >= 1")
    limit = dict(max_halfwidth_A or {})
    rng = np.random.default_rng(seed)
    programs: list[dict[str, np.ndarray] | str] = [MODEL_POINTS]
    for k in range(count):
        prog = {}
        for ln in LINES:
            n0, h0, a0 = CRISP_PROGRAMS[ln.key]
            top = min(limit.get(ln.key, np.inf), h0 + _REACH_MARGIN_A[1])
            if k == 0:
                n, h, a = n0, min(h0, top), a0
            else:
                lo = ln.model_halfwidth_A + _REACH_MARGIN_A[0]
                h = float(rng.uniform(lo, max(lo, top)))
                a = float(rng.uniform(*_CORE_DENSITY_RANGE))
                n = int(rng.integers(int(np.ceil(_N_RANGE[0] * n0)), int(_N_RANGE[1] * n0) + 1))
            if h < ln.model_halfwidth_A:
                raise ConfigError(f"tuning_programs: {ln.label} tunings may reach only {h:.3f} A from the "
                                  f"centre, short of the model window (+-{ln.model_halfwidth_A} A)")
            wl = crisp_tunings(ln, n=n, halfwidth_A=h, core_density=a)
            # enough tunings inside the window for an inversion (CRISP's default has 13 / 17)
            while np.count_nonzero(np.abs(wl - ln.center_air_A) <= ln.model_halfwidth_A) < MIN_WINDOW_TUNINGS:
                n += 1
                wl = crisp_tunings(ln, n=n, halfwidth_A=h, core_density=a)
            prog[ln.key] = np.unique(wl)
        programs.append(prog)
    return programs


class ObservedSampling:
    """Training profiles as observed through several tuning programs (module docstring).

    Parameters
    ----------
    data : xarray.Dataset
        Fine profiles ``I_<line>(sample, wl_<line>)`` (profile schema; a grid that resolves the
        transmission and reaches 2 FWHM beyond the tunings), the training samples only.
    y : ndarray, shape ``(N, 60)``
        The same samples' noise-free profiles on the model points
        (:func:`radynversion.model.normalise_profiles` with the instrument), the model-points
        program.
    count : int
        Tuning programs besides the model's points (:func:`tuning_programs`).
    fwhm_A : mapping line key -> float
        Instrument transmission FWHM [A].
    unit : str
        Intensity unit of the normalisation (the model's).
    seed : int
        Seed of the random programs.
    source : str
        Name of the data, for error messages.
    device : torch.device or str
        Where the tables live.

    Attributes
    ----------
    programs : list
        :func:`tuning_programs`' result.
    tunings : Tensor, shape ``(P, N, W)``
        Per program and sample, the noise-free values at the tunings (both lines, each sample
        divided by its joint peak there), zero-padded to the widest program ``W``.
    interpolation : Tensor, shape ``(P, W, 60)``
        Per program, the linear interpolation from its tunings to the model points
        (transposed; zero rows for the padding).
    """

    def __init__(self, data: xr.Dataset, y: np.ndarray, count: int, fwhm_A: Mapping[str, float],
                 unit: str, seed: int = 0, source: str = "<training set>",
                 device: torch.device | str = "cpu") -> None:
        fine = to_air_angstrom(convert_intensity(data[[ln.var for ln in LINES]], unit, source), source)
        reach, fwhm = {}, {}
        for ln in LINES:
            wl = np.asarray(fine[ln.dim].values, dtype=float)
            # as normalise_profiles makes y: convolve only profiles sampled finer than the
            # instrument (coarser ones are taken as already degraded) and interpolate the rest
            f = float(fwhm_A.get(ln.key, 0.0))
            fwhm[ln.key] = f if needs_degradation(wl, f) else 0.0
            reach[ln.key] = float(min(ln.center_air_A - wl.min(), wl.max() - ln.center_air_A)
                                  - _EDGE_FWHM * fwhm[ln.key] - 1e-3)
            if reach[ln.key] < ln.model_halfwidth_A + _REACH_MARGIN_A[0]:
                raise ProfileSchemaError(
                    f"{source}: {ln.var} reaches {reach[ln.key]:.3f} A from the line centre after the "
                    f"transmission's margin; training on tuning programs needs fine profiles beyond the "
                    f"model window (+-{ln.model_halfwidth_A} A) of {ln.label}")
        self.programs = tuning_programs(count, seed, reach)
        n = y.shape[0]
        n_y = y.shape[1]
        blocks: list[tuple[np.ndarray, np.ndarray]] = [(np.asarray(y, dtype=np.float64), np.eye(n_y))]
        for prog in self.programs[1:]:
            assert isinstance(prog, dict)
            obs = degrade(fine, prog, fwhm_A=fwhm, noise=0.0)
            vals = np.concatenate([np.asarray(obs[ln.var].transpose("sample", ln.dim).values, dtype=float)
                                   for ln in LINES], axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                vals = vals / vals.max(axis=1, keepdims=True)
            interp = np.zeros((vals.shape[1], n_y))
            r = c = 0
            for ln in LINES:
                m = resampling_matrix(prog[ln.key], ln.model_wavelengths(), 0.0)  # (points, W_line)
                interp[c : c + m.shape[1], r : r + m.shape[0]] = m.T
                r, c = r + m.shape[0], c + m.shape[1]
            blocks.append((vals, interp))
        width = max(b[0].shape[1] for b in blocks)
        tun = np.zeros((len(blocks), n, width), dtype=np.float32)
        mat = np.zeros((len(blocks), width, n_y), dtype=np.float32)
        for p, (vals, interp) in enumerate(blocks):
            tun[p, :, : vals.shape[1]] = vals
            mat[p, : interp.shape[0]] = interp
        self.tunings = torch.as_tensor(tun, device=device)
        self.interpolation = torch.as_tensor(mat, device=device)

    def observe(self, rows: Tensor, noise: float, renormalise: bool,
                generator: torch.Generator | None = None, program: int | None = None) -> Tensor:
        """Noisy profiles of samples ``rows`` as seen through one random program each.

        Parameters
        ----------
        rows : Tensor, shape ``(B,)``
            Sample indices (into the ``y`` given at construction).
        noise : float
            Noise standard deviation at each tuning, fraction of the joint peak.
        renormalise : bool
            Divide each result by its own largest value (as observations are normalised).
        generator : torch.Generator, optional
            Source of the program choice and of the noise (on the tables' device).
        program : int, optional
            Observe all through this program (index into :attr:`programs`) instead.

        Returns
        -------
        Tensor, shape ``(B, 60)``
        """
        dev = self.tunings.device
        if program is None:
            prog = torch.randint(len(self.programs), (rows.shape[0],), generator=generator, device=dev)
        else:
            prog = torch.full((rows.shape[0],), int(program), dtype=torch.long, device=dev)
        vals = self.tunings[prog, rows]
        if noise > 0:  # the padding's noise meets the interpolation's zero rows: it adds nothing
            unit = torch.randn(vals.shape, generator=generator, device=dev, dtype=vals.dtype)
            vals = vals + noise * unit
        y = torch.bmm(vals.unsqueeze(1), self.interpolation[prog]).squeeze(1)
        if renormalise:
            y = y / y.amax(dim=1, keepdim=True).clamp_min(1e-6)
        return y
