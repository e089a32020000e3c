"""Synthetic profiles, atmospheres and tiny networks shared by the tests (fast, no NLTE)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from radynversion.atmosphere import default_height_grid
from radynversion.lines import LINES
from radynversion.model import (
    CINNConfig,
    ConditionalINN,
    ModelConfig,
    RadynversionINN,
    TrainConfig,
    atmosphere_to_array,
    normalise_profiles,
)
from radynversion.schema import RADIANCE_PER_HZ, profile_dataset

__all__ = ["TINY", "TINY_C", "FAST", "C_KMS", "synthetic_atmospheres", "synthetic_profiles", "training_set", "scan",
           "tiny_model", "tiny_cinn", "with_trust"]

TINY = ModelConfig(n_blocks=2, subnet_hidden=32, subnet_layers=1)
#: a tiny conditional INN and a short training run for it
TINY_C = CINNConfig(n_blocks=3, subnet_hidden=32, subnet_layers=1, cond_features=8, cond_hidden=32,
                    cond_layers=1, emulator_hidden=32, emulator_layers=1)
FAST = TrainConfig(epochs=8, batch_size=16, lr=3e-3, betas=(0.9, 0.999), val_fraction=0.15,
                   test_fraction=0.0, lr_final_fraction=0.5, seed=0)
C_KMS = 299792.458


def synthetic_atmospheres(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Parametric atmospheres on the node grid: a transition region at ``z_tr`` Mm, a
    chromospheric temperature plateau, and a Gaussian velocity bump."""
    rng = np.random.default_rng(seed)
    h = default_height_grid()
    p = rng.uniform(0, 1, size=(n, 3))
    z_tr = 1.0 + 1.5 * p[:, :1]
    log_t = 3.7 + 0.4 * p[:, 1:2] * (h > 0.5) + 2.5 / (1 + np.exp(-(h - z_tr) / 0.05))
    log_ne = 11.0 + 1.5 * p[:, 1:2] - 0.4 * h + 0.5 * np.exp(-h)
    v = (60.0 * p[:, 2:3] - 20.0) * np.exp(-((h - 1.5) / 0.4) ** 2)
    return {"log_ne": log_ne, "log_T": log_t, "v": v, "params": p}


def synthetic_profiles(atm: dict[str, np.ndarray], dims: tuple[str, ...] = ("sample",),
                       shape: tuple[int, ...] | None = None) -> xr.Dataset:
    """Gaussian absorption/emission lines on the fine synthesis grids [W / (m2 Hz sr)] whose
    depth, width and Doppler shift follow the atmosphere parameters."""
    p = atm["params"]
    shape = shape or (p.shape[0],)
    wls, ints = {}, {}
    for k, ln in enumerate(LINES):
        wl = ln.synth_wavelengths()
        depth = 0.8 - 1.2 * p[:, 1:2] ** 2  # negative = emission
        width = 0.3 + 0.2 * p[:, 0:1] + 0.1 * k
        shift = ln.center_air_A * (60.0 * p[:, 2:3] - 20.0) * 0.5 / C_KMS
        cont = 3e-8 * (1.0 + 0.2 * k)
        prof = cont * (1.0 - depth * np.exp(-(((wl - ln.center_air_A - shift) / width) ** 2)))
        wls[ln.key] = wl
        ints[ln.key] = prof.reshape(*shape, wl.size).astype(np.float32)
    return profile_dataset(wls, ints, RADIANCE_PER_HZ, dims=dims)


def training_set(n: int = 64, seed: int = 0) -> xr.Dataset:
    atm = synthetic_atmospheres(n, seed)
    prof = synthetic_profiles(atm)
    h = default_height_grid()
    for name in ("log_ne", "log_T", "v"):
        prof[name] = (("sample", "height"), atm[name].astype(np.float32))
    prof = prof.assign_coords(height=("height", h, {"units": "Mm"}))
    prof["status"] = ("sample", np.zeros(n, dtype=np.int8))
    return prof


def scan(ny: int = 2, nx: int = 3, seed: int = 1) -> xr.Dataset:
    atm = synthetic_atmospheres(ny * nx, seed)
    ds = synthetic_profiles(atm, dims=("y", "x"), shape=(ny, nx))
    return ds.assign_coords(y=("y", np.arange(ny) * 0.06), x=("x", np.arange(nx) * 0.06))


def tiny_model(standardise_from: int | None = 32) -> RadynversionINN:
    fwhm = {ln.key: ln.crisp_fwhm_A for ln in LINES}
    model = RadynversionINN(TINY, fwhm_A=fwhm)
    if standardise_from:
        ds = training_set(standardise_from)
        y, _ = normalise_profiles(ds, fwhm_A=fwhm)
        model.set_standardisation(atmosphere_to_array(ds), y)
    return model.eval()


def tiny_cinn() -> ConditionalINN:
    fwhm = {ln.key: ln.crisp_fwhm_A for ln in LINES}
    net = ConditionalINN(TINY_C, fwhm_A=fwhm)
    ds = training_set(32)
    y, _ = normalise_profiles(ds, fwhm_A=fwhm)
    net.set_standardisation(atmosphere_to_array(ds), y)
    return net.eval()


def with_trust(model, n: int = 256, seed: int = 5):
    """``model`` with a trust reference fitted on the synthetic profiles (density on ``n``
    draws, scales on ``n // 2`` others with their round-trip misfits over 16 draws)."""
    from radynversion.model.posterior import posterior
    from radynversion.model.preprocess import input_options
    from radynversion.model.trust import fit_trust_reference

    fwhm = model.instrument_fwhm_A()
    y_fit, _ = normalise_profiles(training_set(n, seed), fwhm_A=fwhm, **input_options(model))
    y_ref, _ = normalise_profiles(training_set(n // 2, seed + 1), fwhm_A=fwhm, **input_options(model))
    misfit = posterior(model, y_ref, np.arange(y_ref.shape[0]), samples=16, misfit_samples=16).misfit
    model.trust = fit_trust_reference(y_fit, y_ref, misfit, n_components=6, description="synthetic test profiles")
    return model
