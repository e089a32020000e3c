"""Tests of radynversion.model: tiny real FrEIA networks on synthetic data (fast)."""

from __future__ import annotations

import dataclasses
import importlib

import astropy.units as u
import numpy as np
import pytest
import torch
from synthetic import TINY, scan, tiny_model, training_set  # tests/synthetic.py

from radynversion.atmosphere import default_height_grid, velocity_transform
from radynversion.config import from_toml, to_toml
from radynversion.errors import CheckpointError, ConfigError, ProfileSchemaError
from radynversion.lines import CA8542, HALPHA, LINES, air_to_vacuum
from radynversion.model import (
    ModelConfig,
    RadynversionINN,
    TrainConfig,
    array_to_atmosphere,
    atmosphere_to_array,
    evaluation_split,
    invert,
    load_model,
    mmd_imq,
    normalise_profiles,
    read_checkpoint,
    save_checkpoint,
    train,
)
from radynversion.model import checkpoint as checkpoint_mod
from radynversion.model.preprocess import needs_degradation, resampling_matrix
from radynversion.schema import RADIANCE_PER_AA, RADIANCE_PER_HZ

train_mod = importlib.import_module("radynversion.model.train")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- configs ---------------------------------------------------------------------------------
def test_configs_round_trip_toml():
    mc = ModelConfig(width=384, latent_dim=200, subnet_hidden=0)
    tc = TrainConfig(epochs=12, betas=(0.9, 0.99), mmd_scales_reverse=(0.1, 1.0))
    assert from_toml(ModelConfig, to_toml(mc)) == mc
    assert from_toml(TrainConfig, to_toml(tc)) == tc
    assert tc.fwhm_A() == {"halpha": HALPHA.crisp_fwhm_A, "ca8542": CA8542.crisp_fwhm_A}
    assert tc.fade(0) == 0.0 and tc.fade(12) == 1.0 and 0 < tc.fade(2) < 1


def test_config_refuses_bad_values():
    with pytest.raises(ConfigError, match="intensity_unit"):
        ModelConfig(intensity_unit="K")
    with pytest.raises(ConfigError, match="width"):
        RadynversionINN(ModelConfig(width=150, latent_dim=100))


# -- preprocessing ---------------------------------------------------------------------------
def test_resampling_matrix_interpolates_and_convolves():
    wl = np.linspace(-2, 2, 201)
    target = np.linspace(-1.4, 1.4, 30)
    line = np.exp(-(wl / 0.3) ** 2)
    np.testing.assert_allclose(resampling_matrix(wl, target) @ line, np.exp(-(target / 0.3) ** 2),
                               atol=1e-3)
    # a Gaussian of width s convolved with one of FWHM f: widths add in quadrature
    sig = 0.3 / np.sqrt(2)
    fwhm = 0.2
    s_inst = fwhm / (2 * np.sqrt(2 * np.log(2)))
    s_tot = np.hypot(sig, s_inst)
    expect = sig / s_tot * np.exp(-0.5 * (target / s_tot) ** 2)
    np.testing.assert_allclose(resampling_matrix(wl, target, fwhm) @ line, expect, atol=2e-3)
    assert needs_degradation(wl, 0.066) and not needs_degradation(np.linspace(-1.5, 1.5, 16), 0.066)


def test_normalise_profiles_joint_peak_and_any_sampling():
    ds = training_set(5)
    y, peak = normalise_profiles(ds)
    assert y.shape == (5, 60) and y.dtype == np.float32 and peak.shape == (5,)
    np.testing.assert_allclose(y.max(axis=1), 1.0, rtol=1e-6)
    # the same data as vacuum nm give the same y (up to the air<->vacuum round trip)
    vac = ds.copy()
    for ln in LINES:
        vac = vac.assign_coords({ln.dim: (ln.dim, air_to_vacuum(ds[ln.dim].values) / 10.0,
                                          {"units": "nm", "wavelength_medium": "vacuum"})})
    y2, _ = normalise_profiles(vac)
    np.testing.assert_allclose(y2, y, atol=1e-4)


def test_normalise_profiles_refuses_uncovered_window():
    ds = training_set(2).isel(wl_halpha=slice(50, 150))  # +-1.0 A < +-1.4 A window
    with pytest.raises(ProfileSchemaError, match="short of the model window"):
        normalise_profiles(ds)


def test_atmosphere_array_round_trip():
    ds = training_set(3)
    x = atmosphere_to_array(ds)
    assert x.shape == (3, 150)
    np.testing.assert_allclose(x[:, 100:], velocity_transform(ds.v.values), rtol=1e-6, atol=1e-6)
    back = array_to_atmosphere(x)
    np.testing.assert_allclose(back["v"], ds.v.values, atol=1e-4)
    np.testing.assert_allclose(back["log_T"], ds.log_T.values)


# -- the network -----------------------------------------------------------------------------
def test_inn_is_invertible():
    model = tiny_model()
    atm = torch.as_tensor(atmosphere_to_array(training_set(16)))
    x = model.atmosphere_to_x(atm, pad_noise=0.1, generator=torch.Generator().manual_seed(0))
    # randomise the weights so that the test does not pass through a near-identity map
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        yz, log_jac = model(x)
        assert yz.shape == (16, 160) and log_jac.shape == (16,)
        assert not torch.allclose(yz, x, atol=1e-2)
        torch.testing.assert_close(model.reverse(yz), x, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.x_to_atmosphere(x), atm, atol=1e-4, rtol=1e-5)
        y = torch.rand(16, 60)
        z = torch.randn(16, 100)
        y_back, z_back = model.unpack_yz(model.pack_yz(y, z))
        torch.testing.assert_close(y_back, y)
        torch.testing.assert_close(z_back, z)


def test_inn_construction_is_seeded_and_leaves_global_rngs_alone():
    np.random.seed(123)
    torch.manual_seed(123)
    a = RadynversionINN(TINY)
    after_np, after_torch = np.random.rand(), torch.rand(1)
    np.random.seed(123)
    torch.manual_seed(123)
    assert np.random.rand() == after_np and torch.equal(torch.rand(1), after_torch)
    b = RadynversionINN(TINY)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka


def test_mmd_detects_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 5, generator=g), torch.randn(200, 5, generator=g)
    same = float(mmd_imq(a, b, (0.05, 0.2, 0.9)))
    shifted = float(mmd_imq(a, b + 1.0, (0.05, 0.2, 0.9)))
    assert abs(same) < shifted / 10


# -- checkpoints -----------------------------------------------------------------------------
class _NotATensor:
    """An arbitrary class: unpickling it needs code, which weights_only loading refuses."""


def test_checkpoint_round_trip(tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "m.pt", model, TrainConfig(epochs=3), training_set_sha256="abc")
    loaded = load_model(path)
    x = model.atmosphere_to_x(torch.as_tensor(atmosphere_to_array(training_set(4))))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model(x)[0], atol=0, rtol=0)
    assert loaded.config == model.config
    assert loaded.instrument_fwhm_A() == model.instrument_fwhm_A()
    assert loaded.metadata["training_set_sha256"] == "abc"
    ckpt = read_checkpoint(path)
    assert ckpt["package_version"] and ckpt["normalisation"] == "joint_peak"
    assert from_toml(TrainConfig, ckpt["train_config"]) == TrainConfig(epochs=3)
    a = invert(scan(1, 2), model, samples=64)
    b = invert(scan(1, 2), path, samples=64)
    np.testing.assert_allclose(a.log_T.values, b.log_T.values, atol=1e-6)


def test_checkpoint_refuses_corrupt_file(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model(None))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="m.pt: not a readable checkpoint"):
        load_model(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "absent.pt")


def test_checkpoint_refuses_unsafe_and_foreign_content(tmp_path):
    torch.save({"format": "something else"}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a radynversion checkpoint"):
        load_model(tmp_path / "foreign.pt")
    torch.save({"format": checkpoint_mod.FORMAT, "x": _NotATensor()},
               tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match="unsafe.pt"):
        load_model(tmp_path / "unsafe.pt")
    path = save_checkpoint(tmp_path / "v.pt", tiny_model(None))
    ckpt = torch.load(path, weights_only=True)
    ckpt["format_version"] = 99
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_model(path)


def test_checkpoint_refuses_mismatched_grids(tmp_path):
    h = default_height_grid().copy()
    h[10] += 0.05
    model = RadynversionINN(TINY, height_Mm=h)
    path = save_checkpoint(tmp_path / "h.pt", model)
    with pytest.raises(CheckpointError, match=r"h.pt: height grid .*point 10 is"):
        load_model(path)
    assert load_model(path, height_Mm=h).height_Mm.numpy() == pytest.approx(h)
    path = save_checkpoint(tmp_path / "w.pt", tiny_model(None))
    ckpt = torch.load(path, weights_only=True)
    ckpt["wavelengths_A"]["ca8542"] = ckpt["wavelengths_A"]["ca8542"][:-1]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"w.pt: model window wavelengths_A\['ca8542'\]"):
        load_model(path)


def test_default_model_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(checkpoint_mod, "DEFAULT_MODEL_PATH", tmp_path / "default_model.pt")
    with pytest.raises(CheckpointError, match="no default model"):
        load_model()


# -- inversion -------------------------------------------------------------------------------
def test_invert_schema():
    ds = scan(2, 3)
    out = invert(ds, tiny_model(), samples=32)
    for name in ("log_ne", "log_T", "v"):
        assert out[name].dims == ("y", "x", "quantile", "height")
        assert out[name].shape == (2, 3, 5, 50)
        assert np.isfinite(out[name].values).all()
        assert "units" in out[name].attrs
    assert out.misfit.dims == ("y", "x") and np.isfinite(out.misfit.values).all()
    assert out.peak.attrs["units"]
    assert out.height.attrs["units"] == "Mm"
    np.testing.assert_allclose(out.height.values, default_height_grid())
    np.testing.assert_allclose(out["quantile"].values, (0.05, 0.16, 0.5, 0.84, 0.95))
    np.testing.assert_allclose(out.x.values, ds.x.values)
    # quantiles are ordered
    assert (np.diff(out.log_T.values, axis=2) >= 0).all()
    assert (np.diff(out.v.values, axis=2) >= 0).all()


def test_invert_same_result_in_any_intensity_unit():
    ds = scan(1, 3)
    per_aa = ds.copy()
    for ln in LINES:
        eq = u.spectral_density(air_to_vacuum(ds[ln.dim].values) * u.AA)
        vals = (ds[ln.var].values * RADIANCE_PER_HZ).to_value(RADIANCE_PER_AA, equivalencies=eq)
        per_aa[ln.var] = (ds[ln.var].dims, vals, {"units": "erg / (s cm2 sr Angstrom)"})
    assert not np.allclose(per_aa.I_halpha.values, ds.I_halpha.values)
    model = tiny_model()
    a = invert(ds, model, samples=64)
    b = invert(per_aa, model, samples=64)
    for name in ("log_ne", "log_T", "v", "misfit"):
        np.testing.assert_allclose(b[name].values, a[name].values, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b.peak.values, a.peak.values, rtol=1e-6)


def test_invert_nan_pixel_gives_nan_outputs():
    ds = scan(2, 2)
    ds["I_ca8542"][1, 0, 40] = np.nan
    out = invert(ds, tiny_model(), samples=16)
    for name in ("log_ne", "log_T", "v", "misfit"):
        vals = out[name].values
        assert np.isnan(vals[1, 0]).all()
        mask = np.ones((2, 2), dtype=bool)
        mask[1, 0] = False
        assert np.isfinite(vals[mask]).all()


def test_invert_is_independent_of_batching():
    ds = scan(2, 3)
    model = tiny_model()
    whole = invert(ds, model, samples=64, batch_size=10_000)
    one_at_a_time = invert(ds, model, samples=64, batch_size=64)
    alone = invert(ds.isel(y=[1], x=[2]), model, samples=64, pixel_index=np.array([[5]]))
    other_seed = invert(ds, model, samples=64, seed=1)
    for name in ("log_ne", "log_T", "v", "misfit"):
        np.testing.assert_allclose(one_at_a_time[name].values, whole[name].values, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(alone[name].values[0, 0], whole[name].values[1, 2], rtol=1e-5,
                                   atol=1e-5)
    assert not np.allclose(other_seed.log_T.values, whole.log_T.values)


# -- training --------------------------------------------------------------------------------
# a short run: the default decay to 0.4 % of the learning rate would freeze it after 3 epochs
FAST = TrainConfig(epochs=6, batch_size=16, val_fraction=0.1, test_fraction=0.0, lr_final_fraction=0.5,
                   seed=0)


def test_training_lowers_loss_and_writes_artefacts(tmp_path):
    data = training_set(64)
    res = train(data, tmp_path, TINY, FAST, progress=False)
    hist = res.history
    assert len(hist["epoch"]) == FAST.epochs
    assert hist["train_forward_l2"][-1] < 0.8 * hist["train_forward_l2"][0]
    assert hist["val_forward_l2"][-1] < 0.9 * hist["val_forward_l2"][0]
    assert all(np.isfinite(hist["train_total"]))
    assert (tmp_path / "loss_curves.png").stat().st_size > 0
    ckpt = read_checkpoint(res.checkpoint)
    prov = ckpt["provenance"]
    assert prov["n_usable"] == 64 and prov["n_val"] == 6 and len(prov["val_samples"]) == 6
    assert len(ckpt["training_set_sha256"]) == 64
    model = load_model(res.model_path)
    assert model.instrument_fwhm_A() == FAST.fwhm_A()
    assert torch.all(model.x_std > 0)
    out = invert(scan(1, 2), model, samples=32)
    assert np.isfinite(out.log_T.values).all()


def test_training_skips_unconverged_samples(tmp_path):
    data = training_set(40)
    data["status"][:5] = 1
    data["log_T"][5, 3] = np.nan
    res = train(data, tmp_path, TINY, dataclasses.replace(FAST, epochs=1), progress=False)
    prov = read_checkpoint(res.model_path)["provenance"]
    assert prov["n_usable"] == 34
    assert not set(prov["val_samples"]) & set(range(6))


def test_held_out_split_is_stable_and_never_trained_on(tmp_path):
    labels = np.arange(5000)
    split = evaluation_split(labels, 0.1)
    assert 0.08 < split.mean() < 0.12
    # membership depends on the label alone: a grown or reordered store keeps the same split
    np.testing.assert_array_equal(evaluation_split(labels[::-1][:1000], 0.1), split[::-1][:1000])
    data = training_set(60)
    res = train(data, tmp_path, TINY, dataclasses.replace(FAST, epochs=1, test_fraction=0.3),
                progress=False)
    prov = read_checkpoint(res.model_path)["provenance"]
    held = set(np.flatnonzero(evaluation_split(np.arange(60), 0.3)).tolist())
    assert 5 < len(held) < 30 and prov["n_held_out"] == len(held)
    seen = set(prov["train_samples"]) | set(prov["val_samples"])
    assert not seen & held and len(seen) == 60 - len(held)


def test_training_resumes_after_interruption(tmp_path, monkeypatch):
    data = training_set(48)
    cfg = dataclasses.replace(FAST, epochs=4)
    ref = train(data, tmp_path / "ref", TINY, cfg, progress=False)

    calls = {"n": 0}
    real_plot = train_mod.plot_history

    def interrupt_after_two(history, path):
        calls["n"] += 1
        real_plot(history, path)
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "plot_history", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(data, tmp_path / "run", TINY, cfg, progress=False)
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["training"]["epoch"] == 1
    monkeypatch.setattr(train_mod, "plot_history", real_plot)
    res = train(data, tmp_path / "run", TINY, cfg, progress=False)
    assert res.history["epoch"] == [0.0, 1.0, 2.0, 3.0]
    for k, v in ref.model.state_dict().items():
        torch.testing.assert_close(res.model.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointError, match="another train config"):
        train(data, tmp_path / "run", TINY, dataclasses.replace(cfg, lr=1e-3), progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train_and_invert_on_cuda(tmp_path):
    res = train(training_set(32), tmp_path, TINY, dataclasses.replace(FAST, epochs=2), progress=False,
                device="cuda")
    assert res.model.device.type == "cuda"
    out = invert(scan(1, 2), res.model, samples=32)
    assert np.isfinite(out.log_T.values).all()
    cpu = invert(scan(1, 2), load_model(res.model_path), samples=32)
    assert cpu.log_T.shape == out.log_T.shape


def test_cli_train_runs_and_resumes(tmp_path):
    """`radynversion train --data D --out M --config cfg.toml` on a tiny synthetic set."""
    import json
    import subprocess
    import sys

    from synthetic import TINY, training_set

    from radynversion.config import to_toml
    from radynversion.model.config import ModelConfig, TrainConfig

    data = tmp_path / "train.zarr"
    training_set(48).to_zarr(data, zarr_format=2)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(to_toml(TINY, "model") + "\n\n" + to_toml(TrainConfig(epochs=2, batch_size=16), "train"))
    assert isinstance(TINY, ModelConfig)
    cmd = [sys.executable, "-m", "radynversion.cli", "train", "--data", str(data), "--out", str(tmp_path / "m"),
           "--config", str(cfg), "--no-progress"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["samples"] == 48 and res["last_epoch"]["epoch"] >= 1
    assert (tmp_path / "m" / "model.pt").exists() and (tmp_path / "m" / "loss_curves.png").exists()
    # rerun: resumes from the finished checkpoint instead of starting again
    again = subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert json.loads(again.stdout.strip().splitlines()[-1])["last_epoch"]["epoch"] == res["last_epoch"]["epoch"]
