"""Tests of the conditional INN (radynversion.model.cinn): tiny real FrEIA flows on synthetic
data, trained by maximum likelihood, and inverted through the same paths as the INN."""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr
from synthetic import FAST, TINY_C, scan, tiny_cinn, training_set  # tests/synthetic.py

from radynversion.config import to_toml
from radynversion.engine import invert_to_zarr
from radynversion.errors import CheckpointError, ConfigError
from radynversion.evaluate import evaluate
from radynversion.lines import LINES
from radynversion.model import (
    CINNConfig,
    ConditionalINN,
    RadynversionINN,
    TrainConfig,
    atmosphere_to_array,
    invert,
    load_model,
    normalise_profiles,
    read_checkpoint,
    save_checkpoint,
    train,
)
from radynversion.model.config import model_config_table
from radynversion.model.train import plot_history


def test_flow_is_invertible_given_the_profiles():
    net = tiny_cinn()
    y = torch.rand(5, 60)
    atm = torch.as_tensor(atmosphere_to_array(training_set(5)))
    with torch.no_grad():
        ctx = net.condition(y)
        z, log_jac = net(net.atmosphere_to_x(atm), ctx)
        assert z.shape == (5, net.n_x) and log_jac.shape == (5,)
        torch.testing.assert_close(net.sample(ctx, z), atm, atol=1e-4, rtol=1e-5)
        # another condition maps the same latent elsewhere: the flow depends on the profiles
        other = net.sample(net.condition(torch.rand(5, 60)), z)
        assert not torch.allclose(other, atm, atol=1e-3)
        assert net.emulate(atm).shape == (5, 60)


@pytest.mark.parametrize("activation", ["SIGMOID", "TANH"])
def test_clamp_activation_is_built_invertible_and_round_trips(tmp_path, activation):
    """Another soft-clamp shape is used by every coupling (the scales differ from ATAN's for
    the same weights), stays invertible through the per-pixel fast path, and is saved in the
    checkpoint; a checkpoint written without the field loads as the original ATAN."""
    cfg = dataclasses.replace(TINY_C, clamp_activation=activation, output_init_scale=0.1)
    fwhm = {ln.key: ln.crisp_fwhm_A for ln in LINES}
    nets = {}
    for act, c in (("ATAN", dataclasses.replace(cfg, clamp_activation="ATAN")), (activation, cfg)):
        net = ConditionalINN(c, fwhm_A=fwhm)
        ds = training_set(32)
        y, _ = normalise_profiles(ds, fwhm_A=fwhm)
        net.set_standardisation(atmosphere_to_array(ds), y)
        nets[act] = net.eval()
    net = nets[activation]
    u = torch.linspace(-3, 3, 7)
    expected = {"SIGMOID": 2 * torch.sigmoid(u) - 1, "TANH": torch.tanh(u)}[activation]
    for block in net.flow.module_list[::2]:
        torch.testing.assert_close(block.f_clamp(u), expected)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        y = torch.rand(2, 60, generator=gen)
        ctx = net.condition(y).repeat_interleave(2, dim=0)
        z = torch.randn(4, net.n_z, generator=gen)
        atm = net.sample(ctx, z)
        torch.testing.assert_close(net(net.atmosphere_to_x(atm), ctx)[0], z, atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(net.sample_pixels(net.condition(y), z.view(2, 2, -1)).reshape(4, -1),
                                   atm, atol=1e-4, rtol=1e-4)
        # same weights, another clamp: another map
        assert not torch.allclose(nets["ATAN"].sample(ctx, z), atm, atol=1e-2)
    back = load_model(save_checkpoint(tmp_path / "c.pt", net))
    assert back.config.clamp_activation == activation
    torch.testing.assert_close(back.flow.module_list[0].f_clamp(u), expected)
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    raw["model_config"] = "\n".join(ln for ln in raw["model_config"].splitlines()
                                    if not ln.startswith("clamp_activation"))
    torch.save(raw, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").config.clamp_activation == "ATAN"
    with pytest.raises(ConfigError, match="clamp_activation must be one of ATAN, TANH, SIGMOID"):
        CINNConfig(clamp_activation="relu")


def test_sample_pixels_equals_sample_on_the_repeated_context():
    """The per-pixel fast path (context's first-layer term computed once per pixel) gives the
    draws of the plain FrEIA reverse pass, and they map back to their latent."""
    cfg = dataclasses.replace(TINY_C, subnet_layers=2, output_init_scale=0.3)  # far from identity
    net = ConditionalINN(cfg).eval()
    g, s = 3, 7
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ctx = net.condition(torch.rand(g, 60, generator=gen))
        z = torch.randn(g, s, net.n_z, generator=gen)
        fast = net.sample_pixels(ctx, z)
        rows = ctx.repeat_interleave(s, dim=0)
        plain = net.sample(rows, z.reshape(g * s, -1))
        assert fast.shape == (g, s, net.n_x)
        assert not torch.allclose(plain, net.x_to_atmosphere(z.reshape(g * s, -1)), atol=0.1)
        torch.testing.assert_close(fast.reshape(g * s, -1), plain, atol=2e-5, rtol=1e-5)
        z_back, _ = net(net.atmosphere_to_x(fast.reshape(g * s, -1)), rows)
        torch.testing.assert_close(z_back, z.reshape(g * s, -1), atol=1e-4, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16: as close as the plain pass
            err_fast = (net.sample_pixels(ctx, z).float() - fast).pow(2).mean().sqrt()
            err_plain = (net.sample(rows, z.reshape(g * s, -1)).float() - plain).pow(2).mean().sqrt()
        assert err_fast < 1.5 * err_plain + 1e-3 and err_fast < 0.01 * fast.pow(2).mean().sqrt()
        # the INN has no per-pixel work to hoist: the generic path repeats the context
        inn = RadynversionINN(dataclasses.replace(RadynversionINN().config, n_blocks=2,
                                                  subnet_hidden=16)).eval()
        y = torch.rand(g, 60, generator=gen)
        zi = torch.randn(g, s, inn.n_z, generator=gen)
        torch.testing.assert_close(
            inn.sample_pixels(inn.condition(y), zi).reshape(g * s, -1),
            inn.sample(inn.condition(y).repeat_interleave(s, dim=0), zi.reshape(g * s, -1)))


def test_log_prob_is_the_standard_normal_density_at_initialisation():
    """With near-identity couplings (tiny output init) the flow is ~the identity on the
    standardised atmosphere, so log p = log N(x; 0, 1)."""
    net = ConditionalINN(dataclasses.replace(TINY_C, output_init_scale=0.0))
    atm = torch.randn(4, net.n_x, dtype=torch.float32)
    want = -0.5 * (atm.double() ** 2).sum(1) - 0.5 * net.n_x * np.log(2 * np.pi)
    torch.testing.assert_close(net.log_prob(atm, torch.rand(4, 60)).double(), want, rtol=1e-5, atol=1e-3)


def test_cinn_checkpoint_round_trip_and_kind(tmp_path):
    net = tiny_cinn()
    path = save_checkpoint(tmp_path / "c.pt", net)
    ckpt = read_checkpoint(path)
    assert ckpt["model_kind"] == "cinn" and "[" not in ckpt["model_config"].splitlines()[0]
    back = load_model(path)
    assert isinstance(back, ConditionalINN) and back.config == TINY_C
    for k, v in net.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v)
    # an INN checkpoint without model_kind (format of earlier releases) still loads as the INN
    inn_path = save_checkpoint(tmp_path / "i.pt", RadynversionINN())
    raw = torch.load(inn_path, weights_only=True)
    del raw["model_kind"]
    torch.save(raw, inn_path)
    assert isinstance(load_model(inn_path), RadynversionINN)
    raw["model_kind"] = "diffusion"
    torch.save(raw, inn_path)
    with pytest.raises(CheckpointError, match=r"i\.pt: model_kind 'diffusion'"):
        load_model(inn_path)
    # a cINN state dict under an INN kind is refused, not half-loaded
    raw = torch.load(path, weights_only=True)
    raw["model_kind"] = "inn"
    torch.save(raw, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match=r"wrong\.pt"):
        load_model(tmp_path / "wrong.pt")


def _val_losses(model: ConditionalINN, data: xr.Dataset, cfg: TrainConfig) -> dict[str, float]:
    """The validation losses of ``model`` exactly as :func:`train` computes them per epoch."""
    from radynversion.model.train import _VAL_STREAM, _evaluate, _stream_seed

    val = read_checkpoint(model.metadata["path"])["provenance"]["val_samples"]
    sub = data.sel(sample=val) if "sample" in data.coords else data.isel(sample=val)
    y, _ = normalise_profiles(sub, fwhm_A=cfg.fwhm_A())
    gen = torch.Generator().manual_seed(_stream_seed(cfg.seed, _VAL_STREAM))
    return _evaluate(model, torch.as_tensor(atmosphere_to_array(sub)), torch.as_tensor(y), cfg, 1.0, gen)


def test_training_lowers_nll_and_keeps_the_flow_and_emulator_at_their_own_best_epochs(tmp_path):
    """keep_best keeps the flow (and conditioning network) at the epoch of the lowest validation
    NLL and the emulator, which shares no weights with them, at the epoch of its own lowest
    validation L2; not both at the epoch of the lowest total."""
    data = training_set(40)
    cfg = dataclasses.replace(FAST, keep_best=True, epochs=12, lr=1e-2)
    res = train(data, tmp_path, TINY_C, cfg, progress=False)
    hist = res.history
    assert set(hist) >= {"train_nll", "val_nll", "train_forward_l2", "val_total"}
    assert hist["train_nll"][-1] < hist["train_nll"][0] - 0.3
    assert hist["train_forward_l2"][-1] < 0.8 * hist["train_forward_l2"][0]
    best_flow, best_emu = int(np.argmin(hist["val_nll"])), int(np.argmin(hist["val_forward_l2"]))
    assert best_flow != best_emu  # the case this test is about
    prov = read_checkpoint(res.model_path)["provenance"]
    assert prov["best_epoch"] == best_flow
    assert prov["best_epochs"] == {"nll": best_flow, "forward_l2": best_emu}
    assert prov["best_val"]["nll"] == pytest.approx(hist["val_nll"][best_flow], rel=1e-6)
    assert prov["best_val"]["forward_l2"] == pytest.approx(hist["val_forward_l2"][best_emu], rel=1e-6)
    # model.pt holds those weights: its validation losses are the recorded ones of each epoch
    model = load_model(res.model_path)
    assert isinstance(model, ConditionalINN)
    got = _val_losses(model, data, cfg)
    assert got["nll"] == pytest.approx(hist["val_nll"][best_flow], rel=1e-4, abs=1e-5)
    assert got["forward_l2"] == pytest.approx(hist["val_forward_l2"][best_emu], rel=1e-4, abs=1e-6)
    assert (tmp_path / "loss_curves.png").stat().st_size > 0
    out = invert(scan(2, 3), model, samples=64)
    assert np.isfinite(out.log_T.values).all() and np.isfinite(out.misfit.values).all()
    assert (np.diff(out.log_ne.values, axis=2) >= 0).all()


def test_keep_best_resumes_from_a_checkpoint_of_the_single_best_epoch_format(tmp_path, monkeypatch):
    """A run directory written before per-part best epochs (``best`` = one epoch, one
    ``val_total``, one state dict) still resumes: each part's record starts from that epoch,
    with the part's own validation loss taken from the history."""
    train_mod = importlib.import_module("radynversion.model.train")
    data = training_set(64)
    cfg = dataclasses.replace(FAST, keep_best=True, epochs=6, lr=1e-2, checkpoint_every=3)
    real_plot = train_mod.plot_history

    def stop_after_first_checkpoint(history, path):
        real_plot(history, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "plot_history", stop_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(data, tmp_path, TINY_C, cfg, progress=False)
    monkeypatch.setattr(train_mod, "plot_history", real_plot)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["training"]["epoch"] == 2
    hist = ck["training"]["history"]
    ck["training"]["best"] = {"epoch": 2, "val_total": hist["val_total"][2], "state_dict": ck["state_dict"]}
    torch.save(ck, tmp_path / "checkpoint.pt")
    res = train(data, tmp_path, TINY_C, cfg, progress=False)
    assert res.history["epoch"] == [float(e) for e in range(6)]
    prov = read_checkpoint(res.model_path)["provenance"]
    for part in ("nll", "forward_l2"):
        assert prov["best_epochs"][part] == 2 + int(np.argmin(res.history[f"val_{part}"][2:]))


def test_renormalise_noisy_feeds_profiles_peaking_at_one_as_observed_ones_do():
    """With renormalise_noisy the condition sees y + noise divided by its own joint peak (as
    normalise_profiles treats an observation); without it, y + noise itself. The noise draws,
    hence the random stream, are the same."""
    from radynversion.model.cinn import cinn_losses

    net = tiny_cinn()
    ds = training_set(16)
    atm = torch.as_tensor(atmosphere_to_array(ds))
    y = torch.as_tensor(normalise_profiles(ds, fwhm_A=FAST.fwhm_A())[0])
    seen = []
    hook = net.cond_net.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))

    def condition_input(**kw: object) -> torch.Tensor:
        seen.clear()
        with torch.no_grad():
            cinn_losses(net, atm, y, dataclasses.replace(FAST, noise=0.05, **kw), torch.Generator().manual_seed(3))
        return seen[0] * net.y_std + net.y_mean  # undo the standardisation: normalised profiles

    plain = condition_input()
    renormed = condition_input(renormalise_noisy=True)
    hook.remove()
    assert float(plain.amax(1).mean()) > 1.02  # noisy peaks mostly exceed the noise-free 1
    torch.testing.assert_close(renormed.amax(1), torch.ones(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(renormed, plain / plain.amax(1, keepdim=True), atol=1e-5, rtol=1e-5)


def test_pad_noise_full_coverage_scales_the_noise_of_fully_observed_rows_only():
    """For a partial-coverage model, pad_noise_full_coverage multiplies the atmosphere noise of
    the examples that observe every point, from the same draws: factors of 1 change no bit, and
    with no row cut, factors of 0 are pad_noise_scale 0."""
    from radynversion.model.cinn import cinn_losses

    net = ConditionalINN(dataclasses.replace(TINY_C, partial_coverage=True)).eval()
    ds = training_set(16)
    atm = torch.as_tensor(atmosphere_to_array(ds))
    y = torch.as_tensor(normalise_profiles(ds, fwhm_A=FAST.fwhm_A())[0])
    net.set_standardisation(atm.numpy(), y.numpy())

    def nll(**kw: object) -> float:
        cfg = dataclasses.replace(FAST, noise=0.0, pad_noise=0.5, **kw)
        with torch.no_grad():
            return float(cinn_losses(net, atm, y, cfg, torch.Generator().manual_seed(3))["nll"])

    for cut in (0.0, 0.5):
        assert nll(partial_fraction=cut, pad_noise_full_coverage=(1.0, 1.0, 1.0)) == nll(partial_fraction=cut)
    assert nll(partial_fraction=0.0, pad_noise_full_coverage=(0.0, 0.0, 0.0)) == nll(
        partial_fraction=0.0, pad_noise_scale=(0.0, 0.0, 0.0))
    assert nll(partial_fraction=0.5, pad_noise_full_coverage=(0.5, 0.5, 1.0)) != nll(partial_fraction=0.5)
    with pytest.raises(ConfigError, match="pad_noise_full_coverage"):
        TrainConfig(pad_noise_full_coverage=(1.0, 1.0))


def test_pad_noise_scale_sets_the_atmosphere_noise_per_variable():
    """pad_noise_scale multiplies the flow's atmosphere noise per variable (log_ne, log_T, v):
    all zero is the noise-free NLL, the default is the plain pad_noise loss."""
    from radynversion.model.cinn import cinn_losses

    net = tiny_cinn()
    ds = training_set(16)
    atm = torch.as_tensor(atmosphere_to_array(ds))
    y = torch.as_tensor(normalise_profiles(ds, fwhm_A=FAST.fwhm_A())[0])

    def nll(**kw: object) -> float:
        cfg = dataclasses.replace(FAST, noise=0.0, **kw)
        with torch.no_grad():
            return float(cinn_losses(net, atm, y, cfg, torch.Generator().manual_seed(3))["nll"])

    clean = nll(pad_noise=0.0)
    assert nll(pad_noise=0.5, pad_noise_scale=(0.0, 0.0, 0.0)) == clean
    only_t = nll(pad_noise=0.5, pad_noise_scale=(0.0, 1.0, 0.0))
    every = nll(pad_noise=0.5)
    assert len({clean, only_t, every}) == 3
    assert nll(pad_noise=0.5, pad_noise_scale=(1.0, 1.0, 1.0)) == every
    with pytest.raises(ConfigError, match="pad_noise_scale"):
        TrainConfig(pad_noise_scale=(1.0, -1.0, 1.0))
    with pytest.raises(ConfigError, match="pad_noise_scale"):
        TrainConfig(pad_noise_scale=(1.0, 1.0))
    # from TOML: a wrong-length array is a one-line error naming the key, not a traceback
    from radynversion.config import from_dict

    with pytest.raises(ConfigError, match=r"train\.pad_noise_scale: expected an array of 3"):
        from_dict(TrainConfig, {"pad_noise_scale": [1.0, 0.5]}, where="train")
    with pytest.raises(ConfigError, match="expected an array"):
        from_dict(TrainConfig, {"betas": 0.9}, where="train")
    assert from_dict(TrainConfig, {"pad_noise_scale": [1, 0.5, 1]}).pad_noise_scale == (1.0, 0.5, 1.0)
    from radynversion.config import from_toml

    with pytest.raises(ConfigError, match=r"^cfg\.toml \[train\]\.pad_noise_scale: expected an array of 3"):
        from_toml(TrainConfig, "[train]\npad_noise_scale = [1.0]\n", table="train", where="cfg.toml")


def test_training_with_dropout_is_reproducible_and_leaves_the_global_rng_alone(tmp_path):
    """Dropout draws from torch's global RNG; train() seeds it per epoch, so two runs give the
    same weights (the shipped model can be re-made), and the caller's RNG state is kept."""
    cfg_m = dataclasses.replace(TINY_C, emulator_dropout=0.3)
    cfg_t = dataclasses.replace(FAST, epochs=2, val_fraction=0.0, keep_best=False)
    data = training_set(48)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    runs = [train(data, tmp_path / f"r{i}", cfg_m, cfg_t, progress=False).model for i in range(2)]
    assert torch.equal(torch.get_rng_state(), before)
    a, b = (r.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(7)  # another global state changes nothing
    c = train(data, tmp_path / "r2", cfg_m, cfg_t, progress=False).model.state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_emulator_dropout_round_trips_and_is_off_at_inference(tmp_path):
    """emulator_dropout builds an emulator with dropout; its checkpoint loads back, inference
    (eval mode) is deterministic; without it the state-dict keys are those of v1 files."""
    cfg = dataclasses.replace(TINY_C, emulator_dropout=0.3)
    net = ConditionalINN(cfg).eval()
    assert any(isinstance(m, torch.nn.Dropout) for m in net.emulator.modules())
    atm = torch.as_tensor(atmosphere_to_array(training_set(4)))
    with torch.no_grad():
        torch.testing.assert_close(net.emulate(atm), net.emulate(atm))
        back = load_model(save_checkpoint(tmp_path / "d.pt", net))
        assert back.config.emulator_dropout == 0.3
        torch.testing.assert_close(back.emulate(atm), net.emulate(atm))
    plain = {k for k in ConditionalINN(TINY_C).state_dict() if k.startswith("emulator.")}
    assert plain == {f"emulator.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")}  # 1 hidden layer
    with pytest.raises(ConfigError, match="emulator_dropout"):
        CINNConfig(emulator_dropout=1.0)


def test_keep_best_needs_a_validation_split():
    with pytest.raises(ConfigError, match="keep_best"):
        TrainConfig(keep_best=True, val_fraction=0.0)


def test_cinn_posterior_is_per_pixel_and_unit_independent(tmp_path):
    """The engine's batching, chunking and the intensity unit do not change a cINN's result,
    and a real Zarr store written by the engine equals the in-memory inversion."""
    import astropy.units as u

    net = tiny_cinn()
    ds = scan(3, 4)
    a = invert(ds, net, samples=48, batch_size=48)
    b = invert(ds, net, samples=48, batch_size=1000)
    xr.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    per_aa = ds.copy()
    for ln in LINES:
        wl = per_aa[ln.dim].values * u.AA
        q = (per_aa[ln.var].values * u.Unit(ds[ln.var].attrs["units"])).to(
            "W / (m2 AA sr)", equivalencies=u.spectral_density(wl))
        per_aa[ln.var] = (per_aa[ln.var].dims, q.value.astype(np.float32), {"units": "W / (m2 AA sr)"})
    c = invert(per_aa, net, samples=48, batch_size=48)
    np.testing.assert_allclose(c.log_T.values, a.log_T.values, atol=2e-4)
    path = save_checkpoint(tmp_path / "c.pt", net)
    stats = invert_to_zarr(ds, tmp_path / "out.zarr", model=path, samples=48, batch_size=48,
                           chunks={"y": 2, "x": 3}, progress=False)
    assert stats["complete"]
    store = xr.open_zarr(tmp_path / "out.zarr")
    np.testing.assert_allclose(store.log_T.values, a.log_T.values, atol=1e-5)
    np.testing.assert_allclose(store.misfit.values, a.misfit.values, rtol=1e-5)


def test_evaluate_a_cinn_beats_the_prior_on_synthetic_data(tmp_path):
    data = training_set(200)
    res = train(data, tmp_path / "m", TINY_C, dataclasses.replace(FAST, epochs=40, test_fraction=0.2),
                progress=False)
    s = evaluate(res.model_path, data, samples=128, noise=0.01).summary
    # the profiles' depth follows the parameter that sets log_ne: the posterior beats the prior
    chrom = s["parameters"]["log_ne"]["chromosphere"]
    assert chrom["median_abs_error"] < 0.8 * chrom["prior_median_abs_error"]
    assert 0.0 <= chrom["coverage68"] <= chrom["coverage90"] <= 1.0


def test_model_config_table_picks_the_architecture():
    cinn = model_config_table(to_toml(TINY_C, "cinn") + "\n\n[train]\nepochs = 3\n")
    assert cinn == TINY_C
    assert model_config_table("[train]\nepochs = 3\n").__class__.__name__ == "ModelConfig"
    with pytest.raises(ConfigError, match="both"):
        model_config_table("[model]\nwidth = 160\n\n[cinn]\nn_blocks = 2\n")
    with pytest.raises(ConfigError, match=r"cfg.toml \[cinn\]"):
        model_config_table("[cinn]\nwidth = 160\n", where="cfg.toml")


def test_loss_plot_puts_a_negative_log_likelihood_on_a_linear_axis(tmp_path):
    hist = {"epoch": [0.0, 1.0, 2.0], "train_nll": [0.5, -1.0, -2.0], "val_nll": [0.4, -0.8, -1.5],
            "train_forward_l2": [1.0, 0.5, 0.2], "val_forward_l2": [1.1, 0.6, 0.3],
            "train_total": [1.5, -0.5, -1.8], "val_total": [1.5, -0.2, -1.2]}
    path = plot_history(hist, tmp_path / "loss.png")
    assert path.stat().st_size > 0


def test_cli_train_with_a_cinn_table(tmp_path):
    data = tmp_path / "train.zarr"
    training_set(48).to_zarr(data, zarr_format=2)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(to_toml(TINY_C, "cinn") + "\n\n" + to_toml(TrainConfig(epochs=2, batch_size=16), "train"))
    cmd = [sys.executable, "-m", "radynversion.cli", "train", "--data", str(data), "--out",
           str(tmp_path / "m"), "--config", str(cfg), "--no-progress"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert "train_nll" in res["last_epoch"]
    assert isinstance(load_model(res["model"]), ConditionalINN)


def test_retired_experiment_options_load_only_where_they_did_nothing():
    """Checkpoints written before the experiment options were removed still load (the options
    at their inert values are dropped); a config that used one is refused, not misread."""
    from radynversion.config import from_toml

    old = to_toml(TINY_C) + "\nemulator_conv_channels = 0\nemulator_conv_layers = 3\nemulator_conv_kernel = 5\n"
    assert from_toml(CINNConfig, old) == TINY_C
    old_train = to_toml(FAST) + "\nheight_jitter_Mm = 0.0\nemulator_noise = 0.0\nemulator_on_flow_noise = false\n"
    assert from_toml(TrainConfig, old_train) == FAST
    for bad in ("emulator_conv_channels = 8", ):
        with pytest.raises(ConfigError, match="emulator_conv_channels = 8 was an experiment option of CINNConfig"):
            from_toml(CINNConfig, to_toml(TINY_C) + "\n" + bad)
    with pytest.raises(ConfigError, match="emulator_noise = 0.5 was an experiment option"):
        from_toml(TrainConfig, to_toml(FAST) + "\nemulator_noise = 0.5")
    # the packaged models were written with them: they load
    from radynversion.model import load_model
    from radynversion.model.checkpoint import DEFAULT_MODEL_PATH

    assert load_model(DEFAULT_MODEL_PATH).config.n_blocks == 10
