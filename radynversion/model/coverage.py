"""Which of the model's profile points an observation covers, and how it is normalised.

The network sees each line on its model window (30 points per line, 60 in all; H-alpha
first). Real observations often cover less: a program that ends short of a window, a gap in
the tunings, one line only (or the two at different cadences). A model trained with
``CINNConfig.partial_coverage`` takes such inputs: unobserved model points are NaN in ``y``,
and its conditioning network sees the observed values next to the mask of which are observed,
so that its posterior widens as much as the lost information warrants.

Rules, the same at inference (:func:`observed_points`) and in training
(:func:`random_coverage`):

* a model point between two tunings is observed (linearly interpolated), as is one at most
  half a tuning step beyond the outermost tuning (edge value,
  :func:`radynversion.model.preprocess.edge_allowance_A`); anything farther out is unobserved,
  never extrapolated;
* inside a **gap** of the tunings, a step wider than :data:`GAP_FACTOR` times the narrower of
  its neighbouring steps and wider than :data:`GAP_MIN_A`, the model points farther than half
  that neighbouring step from both of its edges are unobserved (interpolating across a missing
  core would draw a straight line where the line has its shape). Filtergraph programs whose
  steps grow smoothly from the core to the wings (CRISP's: by at most 1.3x per step) have no
  gaps;
* the documented minimum: at least one line must cover its **core**, its central
  :data:`CORE_POINTS` model points (H-alpha +-0.24 A, Ca II 8542 +-0.17 A); less is refused.

Normalisation (``CINNConfig.normalisation``, :data:`NORMALISATIONS`): ``"joint"`` divides
both lines by the largest value over the observed points of both (the original's joint peak;
it keeps the ratio between the lines, so it needs calibrated intensities). The two per-line
normalisations (:data:`PER_LINE`) are for uncalibrated, DN data, whose lines have unknown
relative gains: ``"per_line"`` divides each line by its own largest observed value (its peak),
``"per_line_wing"`` by the mean of its :data:`WING_POINTS` outermost observed points at each
end (its far wing as observed). A peak is the wing of an absorption profile but the core of an
emission one, and the largest of noisy points; the far wings at +-1-1.4 A form in the upper
photosphere and change least in flares. Which one serves better is measured, not assumed
(docs/model_card.md).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..lines import LINES, Line

__all__ = [
    "CORE_POINTS",
    "COVER_TOLERANCE_A",
    "edge_allowance_A",
    "GAP_FACTOR",
    "GAP_MIN_A",
    "NORMALISATIONS",
    "PER_LINE",
    "WING_POINTS",
    "line_slices",
    "line_levels",
    "observed_points",
    "core_covered",
    "renormalise",
    "random_coverage",
]

#: central model points of a line that make up its core (the documented minimum coverage)
CORE_POINTS = 6
#: a step between tunings wider than this many times its narrower neighbour (and than
#: GAP_MIN_A) is a gap
GAP_FACTOR = 2.5
GAP_MIN_A = 0.25
#: the normalisations a model can be trained for
NORMALISATIONS: tuple[str, ...] = ("joint", "per_line", "per_line_wing")
#: the normalisations that divide each line by its own level (they take uncalibrated data)
PER_LINE: tuple[str, ...] = ("per_line", "per_line_wing")
#: observed points at each end of a line whose mean is its far-wing level (``"per_line_wing"``)
WING_POINTS = 2
#: a model window may exceed the data by this much [Angstrom] (float round-off)
COVER_TOLERANCE_A = 1e-3
#: at most this far [Angstrom] beyond the outermost tuning a model point takes its value
#: (half a tuning step, capped: a sparse program must not fill 0.2 A of wing with one value)
EDGE_ALLOWANCE_MAX_A = 0.1


def edge_allowance_A(wl: np.ndarray) -> tuple[float, float]:
    """How far [Angstrom] a model window may reach beyond increasing tunings ``wl``: half the
    outermost tuning step at each end, at most :data:`EDGE_ALLOWANCE_MAX_A` (0.1 A). A model
    point there takes the outermost tuning's value
    (the far wings are flat on that scale); anything farther is never extrapolated.

    Real programs centre on their own line-core estimate, often tens of mA from the laboratory
    wavelength, and are often written as round numbers (+-1.0 A around 8542.1 A): without this
    allowance a program 10-30 mA short of a window would be refused.
    """
    if wl.size < 2:
        return 0.0, 0.0
    return (min(0.5 * float(wl[1] - wl[0]), EDGE_ALLOWANCE_MAX_A),
            min(0.5 * float(wl[-1] - wl[-2]), EDGE_ALLOWANCE_MAX_A))


def line_slices() -> dict[str, slice]:
    """Line key -> its columns in the model's profile vector (H-alpha's 30 first)."""
    out, start = {}, 0
    for ln in LINES:
        out[ln.key] = slice(start, start + ln.model_points)
        start += ln.model_points
    return out


def _core_columns() -> list[np.ndarray]:
    cols = []
    for ln, sl in zip(LINES, line_slices().values(), strict=True):
        mid = ln.model_points // 2
        cols.append(np.arange(sl.start + mid - CORE_POINTS // 2, sl.start + mid + (CORE_POINTS + 1) // 2))
    return cols


def observed_points(wavelengths_air_A: np.ndarray, line: Line) -> np.ndarray:
    """Which of ``line``'s model points tunings at ``wavelengths_air_A`` observe.

    Parameters
    ----------
    wavelengths_air_A : ndarray, shape ``(W,)``
        The tunings [air Angstrom], any order.
    line : Line

    Returns
    -------
    ndarray of bool, shape ``(line.model_points,)``
    """
    wl = np.unique(np.asarray(wavelengths_air_A, dtype=float))
    target = line.model_wavelengths()
    if wl.size == 0:
        return np.zeros(target.size, dtype=bool)
    lo, hi = edge_allowance_A(wl)
    seen = (target >= wl[0] - lo - COVER_TOLERANCE_A) & (target <= wl[-1] + hi + COVER_TOLERANCE_A)
    if wl.size > 2:
        step = np.diff(wl)
        for i in range(step.size):
            near = [step[j] for j in (i - 1, i + 1) if 0 <= j < step.size]
            local = min(near)
            if step[i] > GAP_FACTOR * local and step[i] > GAP_MIN_A:
                seen &= ~((target > wl[i] + 0.5 * local) & (target < wl[i + 1] - 0.5 * local))
    return seen


def core_covered(observed: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """Whether rows of an observed-points mask ``(N, 60)`` cover at least one line's core
    (the documented minimum); shape ``(N,)``."""
    cols = _core_columns()
    if isinstance(observed, Tensor):
        return torch.stack([observed[:, torch.as_tensor(c, device=observed.device)].all(1) for c in cols]).any(0)
    obs = np.asarray(observed, dtype=bool)
    return np.stack([obs[:, c].all(1) for c in cols]).any(0)


def _check_normalisation(normalisation: str) -> None:
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation = {normalisation!r}; expected one of {NORMALISATIONS}")


def line_levels(y: Tensor, normalisation: str) -> Tensor:
    """What each profile point is divided by under ``normalisation``.

    Parameters
    ----------
    y : Tensor, shape ``(N, 60)``
        Profiles on the model windows (H-alpha first); unobserved points NaN.
    normalisation : {"joint", "per_line", "per_line_wing"}
        See the module docstring.

    Returns
    -------
    Tensor, shape ``(N, 60)``
        The largest observed value of both lines (``"joint"``), of the point's own line
        (``"per_line"``), or the mean of that line's :data:`WING_POINTS` outermost observed
        points at each end (``"per_line_wing"``); NaN for a line with no observed point.
        Not clamped: a level ``<= 0`` marks a profile that cannot be normalised.
    """
    _check_normalisation(normalisation)
    finite = torch.isfinite(y)
    low = torch.finfo(y.dtype).min
    nan = torch.full_like(y[:, :1], float("nan"))
    if normalisation == "joint":
        peak = torch.where(finite, y, torch.full_like(y, low)).amax(dim=1, keepdim=True)
        return torch.where(finite.any(1, keepdim=True), peak, nan).expand_as(y)
    parts = []
    for sl in line_slices().values():
        v, f = y[:, sl], finite[:, sl]
        if normalisation == "per_line":
            level = torch.where(f, v, torch.full_like(v, low)).amax(dim=1, keepdim=True)
        else:  # the outermost observed points at each end, however far the program reaches
            fi = f.to(torch.int32)
            outer = f & ((fi.cumsum(1) <= WING_POINTS) | (fi.flip(1).cumsum(1).flip(1) <= WING_POINTS))
            level = (torch.where(outer, v, torch.zeros_like(v)).sum(1, keepdim=True)
                     / outer.sum(1, keepdim=True).clamp_min(1))
        parts.append(torch.where(f.any(1, keepdim=True), level, nan).expand_as(v))
    return torch.cat(parts, dim=1)


def renormalise(y: Tensor, normalisation: str) -> Tensor:
    """Profiles ``(N, 60)`` divided by their :func:`line_levels` (clamped at 1e-6):
    unobserved points stay NaN."""
    return y / line_levels(y, normalisation).clamp_min(1e-6)


def random_coverage(n: int, fraction: float, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu", gap_fraction: float = 0.3) -> Tensor:
    """Observed-points masks ``(n, 60)`` for training on partial coverage.

    A ``1 - fraction`` share of the rows is fully observed. Of the rest: a quarter observe
    H-alpha alone, a quarter Ca II 8542 alone, half both lines; programs are cut short at
    either end (up to 12 of a line's 30 points, each end with probability 1/2) for the rows of
    both lines and for half of the one-line rows, and those rows get a gap of 2-8 points in one
    line with probability ``gap_fraction``. Rows that would miss both cores (:func:`core_covered`) are fully
    observed instead.
    """
    kw = {"generator": generator, "device": device}
    sl = list(line_slices().values())
    n_pts = sl[-1].stop
    cols = torch.arange(n_pts, device=device)
    mask = torch.ones(n, n_pts, dtype=torch.bool, device=device)
    partial = torch.rand(n, **kw) < fraction
    kind = torch.randint(4, (n,), **kw)  # 0: H-alpha only, 1: Ca II only, 2-3: cut short / gap
    for j, s in enumerate(sl):  # a line alone: the other one is unobserved
        other = (cols >= s.start) & (cols < s.stop)
        mask &= ~((partial & (kind == 1 - j))[:, None] & other[None, :])
    cut = partial & (kind >= 2)
    alone_cut = partial & (kind < 2) & (torch.rand(n, **kw) < 0.5)  # a line alone may be cut or gapped too
    cut = cut | alone_cut
    for s in sl:
        width = s.stop - s.start
        blue = torch.randint(13, (n,), **kw) * (torch.rand(n, **kw) < 0.5)
        red = torch.randint(13, (n,), **kw) * (torch.rand(n, **kw) < 0.5)
        pos = cols[None, :] - s.start
        in_line = (pos >= 0) & (pos < width)
        lost = in_line & ((pos < blue[:, None]) | (pos >= width - red[:, None]))
        mask &= ~(cut[:, None] & lost)
    gap_line = torch.randint(len(sl), (n,), **kw)
    gap_start = torch.randint(30, (n,), **kw)
    gap_len = torch.randint(2, 9, (n,), **kw)
    has_gap = cut & (torch.rand(n, **kw) < gap_fraction)
    starts = torch.as_tensor([s.start for s in sl], device=device)[gap_line] + gap_start
    stops = torch.minimum(starts + gap_len, torch.as_tensor([s.stop for s in sl], device=device)[gap_line])
    in_gap = (cols[None, :] >= starts[:, None]) & (cols[None, :] < stops[:, None])
    mask &= ~(has_gap[:, None] & in_gap)
    return mask | ~core_covered(mask)[:, None]
