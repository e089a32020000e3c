"""Per-pixel trust: how unlike the training data a pixel's profiles are.

A model is only as good as its training distribution: on profiles that distribution never
produced, its posterior may be narrow and wrong (issue 23; ``docs/model_card.md``). At inference
two kinds of evidence say that a pixel is outside it:

* **density**: how improbable the pixel's normalised profiles ``y`` (the network's input, 60
  points) are under the training observations. The observations are modelled by a Gaussian in
  the standardised profile space whose covariance is their leading principal components plus an
  isotropic residual (probabilistic PCA; Tipping & Bishop 1999). The score is the squared
  Mahalanobis distance per observed point, ``d^2 / n_obs``; for pixels with unobserved points
  (NaN, partial-coverage models) the Gaussian's marginal on the observed points is used.
* **round trip**: the misfit of the posterior's own atmospheres pushed back through the emulator
  (:func:`radynversion.model.posterior.posterior`), larger where no atmosphere of the prior
  explains the profiles.

Each is divided by its own quantile on reference observations of the training distribution (the
model's held-out training draws, observed through CRISP's default and random tuning programs with
1 % noise: :func:`fit_trust_reference`), the same quantile level for both, chosen so that a
fraction ``level`` (default 97 %) of the reference pixels has both at most 1. Then

``ood_score = max(density / density_scale, misfit / misfit_scale)``, ``trusted = ood_score <= 1``

so about 97 % of pixels like the training data are trusted, and larger scores are less like it.
Without a misfit (``misfit=False``) the density alone decides. A model that carries no reference
(:attr:`PosteriorModel.trust` is None: older checkpoints, models built in memory) cannot judge:
every pixel gets ``ood_score`` NaN and ``trusted`` False, and the result's attrs say why.

Untrusted pixels keep their posterior: the flag says where not to believe it, it changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CheckpointError

__all__ = ["TRUST_LEVEL", "TrustReference", "trust_scores", "fit_trust_reference", "reference_observations",
           "build_trust_reference"]

#: fraction of in-distribution pixels trusted
TRUST_LEVEL: float = 0.97
#: principal components of the density model
N_COMPONENTS: int = 16


@dataclass(frozen=True)
class TrustReference:
    """The in-distribution statistics a model carries (module docstring).

    Attributes
    ----------
    mean, scale : ndarray, shape ``(60,)``
        Mean and standard deviation of the reference observations' normalised profiles.
    components : ndarray, shape ``(k, 60)``
        Leading principal axes of the standardised profiles (orthonormal rows).
    variances : ndarray, shape ``(k,)``
        Variance along each axis.
    residual_variance : float
        Variance per dimension off those axes.
    density_scale, misfit_scale : float
        The reference observations' quantile of each score at the level that trusts ``level``
        of them (both scores at most their scale).
    level : float
        Fraction of the reference observations trusted.
    n_reference : int
        Reference observations the scales come from.
    description : str
        Where the reference observations came from.
    """

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual_variance: float
    density_scale: float
    misfit_scale: float
    level: float
    n_reference: int
    description: str

    def covariance(self) -> np.ndarray:
        """The density model's covariance of standardised profiles ``(60, 60)``."""
        v = self.components
        n = v.shape[1]
        return (v.T * self.variances) @ v + self.residual_variance * (np.eye(n) - v.T @ v)

    def density(self, y: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance per observed point ``(N,)`` of normalised profiles
        ``y`` ``(N, 60)`` (NaN = unobserved; NaN for pixels with no observed point)."""
        y = np.asarray(y, dtype=np.float64)
        z = (y - self.mean) / self.scale
        seen = np.isfinite(z)
        out = np.full(z.shape[0], np.nan)
        cov = self.covariance()
        patterns, inverse = np.unique(seen, axis=0, return_inverse=True)
        for k, pat in enumerate(patterns):
            rows = np.flatnonzero(inverse.reshape(-1) == k)
            n_obs = int(pat.sum())
            if n_obs == 0:
                continue
            sub = z[np.ix_(rows, np.flatnonzero(pat))]
            chol = np.linalg.cholesky(cov[np.ix_(pat, pat)])
            w = np.linalg.solve(chol, sub.T)  # whitened, (n_obs, rows)
            out[rows] = np.sum(w**2, axis=0) / n_obs
        return out

    def scores(self, y: np.ndarray, misfit: np.ndarray | None) -> np.ndarray:
        """``ood_score`` ``(N,)``: the larger of the scaled density and misfit (module docstring)."""
        s = self.density(y) / self.density_scale
        if misfit is not None:
            m = np.asarray(misfit, dtype=np.float64) / self.misfit_scale
            s = np.where(np.isfinite(m), np.fmax(s, m), s)
        return s

    def to_dict(self) -> dict[str, Any]:
        """Plain Python (lists, floats, str) for a checkpoint."""
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "components": self.components.tolist(),
                "variances": self.variances.tolist(), "residual_variance": float(self.residual_variance),
                "density_scale": float(self.density_scale), "misfit_scale": float(self.misfit_scale),
                "level": float(self.level), "n_reference": int(self.n_reference),
                "description": str(self.description)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "<checkpoint>") -> TrustReference:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        CheckpointError
            A missing or malformed entry.
        """
        try:
            ref = cls(mean=np.asarray(d["mean"], float), scale=np.asarray(d["scale"], float),
                      components=np.asarray(d["components"], float), variances=np.asarray(d["variances"], float),
                      residual_variance=float(d["residual_variance"]), density_scale=float(d["density_scale"]),
                      misfit_scale=float(d["misfit_scale"]), level=float(d["level"]),
                      n_reference=int(d["n_reference"]), description=str(d.get("description", "")))
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{where}: its trust reference is malformed ({type(err).__name__}: {err}); "
                                  "expected the entries fit_trust_reference writes") from None
        n = ref.mean.shape[0]
        if ref.scale.shape != (n,) or ref.components.ndim != 2 or ref.components.shape[1] != n \
                or ref.variances.shape != (ref.components.shape[0],):
            raise CheckpointError(f"{where}: its trust reference has inconsistent shapes; expected mean and "
                                  "scale (n,), components (k, n), variances (k,)")
        return ref


def trust_scores(reference: TrustReference | None, y: np.ndarray, misfit: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(ood_score, trusted)`` per pixel, float32 and bool ``(N,)``.

    ``y`` ``(N, 60)`` are the network's inputs and ``misfit`` ``(N,)`` the round-trip misfits
    (None or NaN where not computed). Pixels that were not inverted (a whole row NaN) and every
    pixel of a model without a reference get NaN and False.
    """
    n = np.asarray(y).shape[0]
    if reference is None:
        return np.full(n, np.nan, np.float32), np.zeros(n, bool)
    s = reference.scores(y, misfit)
    return s.astype(np.float32), np.isfinite(s) & (s <= 1.0)


def _scales(density: np.ndarray, misfit: np.ndarray, level: float) -> tuple[float, float]:
    """The common quantile level ``p`` of both scores that trusts ``level`` of the pixels, and
    the two scales at it."""
    lo, hi = level, 1.0
    for _ in range(40):
        p = 0.5 * (lo + hi)
        d, m = np.quantile(density, p), np.quantile(misfit, p)
        if np.mean((density <= d) & (misfit <= m)) < level:
            lo = p
        else:
            hi = p
    return float(np.quantile(density, hi)), float(np.quantile(misfit, hi))


def fit_trust_reference(
    y_fit: np.ndarray,
    y_ref: np.ndarray,
    misfit_ref: np.ndarray,
    level: float = TRUST_LEVEL,
    n_components: int = N_COMPONENTS,
    description: str = "",
) -> TrustReference:
    """Fit the density model on ``y_fit`` and set both scales on ``(y_ref, misfit_ref)``.

    Parameters
    ----------
    y_fit : ndarray, shape ``(M, 60)``
        Normalised profiles of training observations (complete rows are used).
    y_ref : ndarray, shape ``(N, 60)``
        Normalised profiles of other in-distribution observations (e.g. held-out training
        draws), observed as users' data are.
    misfit_ref : ndarray, shape ``(N,)``
        Their round-trip misfits, as the engine computes them.
    level : float
        Fraction of the reference pixels to trust.
    n_components : int
        Principal components of the density model.
    description : str
        Where the observations came from (recorded).

    Returns
    -------
    TrustReference
    """
    y_fit = np.asarray(y_fit, dtype=np.float64)
    y_fit = y_fit[np.isfinite(y_fit).all(axis=1)]
    if y_fit.shape[0] < max(8, 4 * n_components):
        raise ValueError(f"fit_trust_reference: {y_fit.shape[0]} complete profiles; expected at least "
                         f"{4 * n_components}")
    mean = y_fit.mean(axis=0)
    scale = y_fit.std(axis=0) + 1e-6
    z = (y_fit - mean) / scale
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    k = min(n_components, vt.shape[0] - 1)
    var = s**2 / (z.shape[0] - 1)
    ref = TrustReference(mean=mean, scale=scale, components=vt[:k], variances=var[:k],
                         residual_variance=float(max(var[k:].mean(), 1e-8)), density_scale=1.0,
                         misfit_scale=1.0, level=float(level), n_reference=0, description=description)
    d = ref.density(y_ref)
    m = np.asarray(misfit_ref, dtype=np.float64)
    ok = np.isfinite(d) & np.isfinite(m)
    if ok.sum() < 20:
        raise ValueError(f"fit_trust_reference: {int(ok.sum())} reference pixels with finite scores; expected >= 20")
    d_scale, m_scale = _scales(d[ok], m[ok], level)
    return TrustReference(mean=mean, scale=scale, components=vt[:k], variances=var[:k],
                          residual_variance=ref.residual_variance, density_scale=d_scale, misfit_scale=m_scale,
                          level=float(level), n_reference=int(ok.sum()), description=description)


def reference_observations(net: Any, data: Any, n: int, noise: float = 0.01, programs: int = 4,
                           seed: int = 0) -> np.ndarray:
    """Normalised profiles ``(n', 60)`` of up to ``n`` atmospheres of ``data`` observed as users'
    data are: each through one of CRISP's default program and ``programs - 1`` random CRISP-like
    ones (:func:`radynversion.model.sampling.tuning_programs`), the model's instrument, ``noise``
    (fraction of the joint peak), and the model's own input normalisation; rows that cannot be
    inverted are dropped.

    Parameters
    ----------
    net : PosteriorModel
    data : xarray.Dataset
        Fine profiles in the profile schema over ``sample`` (a training set or part of one).
    n : int
        Atmospheres to use (a random choice, ``seed``).
    """
    from ..errors import ConfigError
    from ..instrument import _EDGE_FWHM, degrade
    from ..lines import LINES
    from .preprocess import input_options, normalise_profiles
    from .sampling import tuning_programs

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(data.sizes["sample"], size=min(int(n), data.sizes["sample"]), replace=False))
    fwhm = net.instrument_fwhm_A()
    opts = input_options(net)
    # tunings may reach as far as the data's grid allows once the transmission's margin is left
    reach = {}
    for ln in LINES:
        wl = np.asarray(data[ln.dim].values, dtype=float)
        reach[ln.key] = float(min(ln.center_air_A - wl.min(), wl.max() - ln.center_air_A)
                              - _EDGE_FWHM * float(fwhm.get(ln.key, 0.0)) - 1e-3)
    try:
        progs = [p for p in tuning_programs(max(1, programs - 1), seed=seed, max_halfwidth_A=reach)
                 if isinstance(p, dict)]
    except ConfigError:  # profiles that end at the model windows: observed at the model's points
        progs = []
    if not progs:
        sub = data.isel(sample=pick)
        y, _ = normalise_profiles(sub, unit=net.config.intensity_unit, fwhm_A=fwhm, **opts)
        y = y + noise * rng.standard_normal(y.shape)
        return y[np.isfinite(y).any(axis=1)]
    which = rng.integers(len(progs), size=pick.size)
    out = []
    for k, prog in enumerate(progs):
        sel = pick[which == k]
        if sel.size == 0:
            continue
        obs = degrade(data.isel(sample=sel), prog, fwhm_A=fwhm, noise=noise, seed=seed + k)
        y, _ = normalise_profiles(obs, unit=net.config.intensity_unit, fwhm_A=fwhm, **opts)
        out.append(y)
    y = np.concatenate(out)
    return y[np.isfinite(y).any(axis=1)]


def build_trust_reference(net: Any, fit_data: Any, ref_data: Any, n_fit: int = 6000, n_ref: int = 2000,
                          noise: float = 0.01, level: float = TRUST_LEVEL, seed: int = 0,
                          source: str = "") -> TrustReference:
    """The trust reference of ``net``.

    The density model is fitted on up to ``n_fit`` draws of ``fit_data`` (its training draws),
    the scales are set on up to ``n_ref`` draws of ``ref_data`` (draws it was not trained on:
    its validation or held-out split), both observed through CRISP-like programs with ``noise``
    (:func:`reference_observations`); their misfits are computed as the engine computes them
    (the first 64 Sobol draws).

    Raises
    ------
    ValueError
        Too few usable draws to fit (:func:`fit_trust_reference`).
    """
    from .posterior import DEFAULT_MISFIT_SAMPLES, posterior

    y_fit = reference_observations(net, fit_data, n_fit, noise, seed=seed + 1)
    y_ref = reference_observations(net, ref_data, n_ref, noise, seed=seed + 2)
    res = posterior(net, y_ref, np.arange(y_ref.shape[0]), samples=DEFAULT_MISFIT_SAMPLES, quantiles=(0.5,),
                    seed=seed, misfit=True, precision="fp32", sampling="sobol",
                    misfit_samples=DEFAULT_MISFIT_SAMPLES)
    text = (f"{source or 'training set'}: density fitted on {y_fit.shape[0]} training draws, thresholds on "
            f"{y_ref.shape[0]} draws not trained on; CRISP default and random programs, {noise:.0%} noise")
    return fit_trust_reference(y_fit, y_ref, res.misfit, level=level, description=text,
                               n_components=min(N_COMPONENTS, max(1, y_fit.shape[0] // 8)))
