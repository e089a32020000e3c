"""Per-pixel trust (radynversion.model.trust): ood_score and trusted in every result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from synthetic import synthetic_atmospheres, synthetic_profiles, tiny_model, training_set

import radynversion
from radynversion.engine import invert_to_zarr
from radynversion.errors import CheckpointError
from radynversion.model import load_model, normalise_profiles, save_checkpoint
from radynversion.model.trust import TrustReference, fit_trust_reference, trust_scores

KW = dict(samples=16, misfit_samples=16, precision="fp32", batch_size=256)


def _scan(params: np.ndarray, ny: int, nx: int) -> xr.Dataset:
    atm = synthetic_atmospheres(ny * nx, seed=11)
    atm["params"] = params
    return synthetic_profiles(atm, dims=("y", "x"), shape=(ny, nx))


def test_the_flag_separates_inputs_like_the_training_data_from_shifted_ones(net):
    rng = np.random.default_rng(3)
    like = rng.uniform(0, 1, size=(200, 3))
    # shifted: lines twice as wide and flows beyond anything in the training profiles
    shifted = like.copy()
    shifted[:, 0] += 2.5
    shifted[:, 2] += 1.5
    res_like = radynversion.invert(_scan(like, 10, 20), model=net, **KW)
    res_shift = radynversion.invert(_scan(shifted, 10, 20), model=net, **KW)
    t_like = float(res_like.trusted.mean())
    t_shift = float(res_shift.trusted.mean())
    assert t_like >= 0.9, t_like  # ~97 % by construction of the threshold
    assert t_shift <= 0.1, t_shift
    assert float(res_shift.ood_score.median()) > 3 * float(res_like.ood_score.median())
    # the posterior of an untrusted pixel is kept, not blanked
    assert np.isfinite(res_shift.log_T.values).all()


def test_trust_agrees_between_memory_lazy_and_zarr(net, model_path, tmp_path):
    ds = _scan(np.random.default_rng(4).uniform(-0.3, 1.6, size=(12, 3)), 3, 4)
    mem = radynversion.invert(ds, model=model_path, **KW)
    lazy = ds.radyn.invert(model=model_path, chunks={"y": 1}, **KW).compute()
    invert_to_zarr(ds, tmp_path / "t.zarr", model=model_path, progress=False, chunks={"x": 2}, **KW)
    store = xr.open_zarr(tmp_path / "t.zarr").load()
    assert 0 < int(mem.trusted.sum()) < 12  # some of each, so the comparison means something
    for other in (lazy, store):
        np.testing.assert_array_equal(other.trusted.values, mem.trusted.values)
        np.testing.assert_array_equal(other.ood_score.values, mem.ood_score.values)
    assert store.attrs["trust_reference"] == mem.attrs["trust_reference"] == "synthetic test profiles"


def test_without_misfit_the_density_alone_decides(net):
    ds = _scan(np.random.default_rng(5).uniform(0, 1, size=(6, 3)), 2, 3)
    y, _ = normalise_profiles(ds, fwhm_A=net.instrument_fwhm_A())
    res = radynversion.invert(ds, model=net, misfit=False, **{k: v for k, v in KW.items() if k != "misfit_samples"})
    want = net.trust.density(y.reshape(6, -1)) / net.trust.density_scale
    np.testing.assert_allclose(res.ood_score.values.reshape(-1), want, rtol=1e-5)


def test_a_model_without_a_reference_says_it_cannot_judge():
    bare = tiny_model()
    res = radynversion.invert(_scan(np.full((4, 3), 0.5), 2, 2), model=bare, **KW)
    assert np.isnan(res.ood_score.values).all() and not res.trusted.values.any()
    assert res.attrs["trust_reference"].startswith("none")


def test_the_reference_travels_with_the_checkpoint(net, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", net)
    back = load_model(path)
    assert back.trust is not None
    np.testing.assert_array_equal(back.trust.components, net.trust.components)
    assert back.trust.density_scale == net.trust.density_scale
    ckpt = torch.load(path, weights_only=True)
    ckpt["trust"].pop("mean")
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt: its trust reference is malformed"):
        load_model(tmp_path / "bad.pt")


def test_unobserved_points_use_the_marginal_of_the_observed_ones():
    rng = np.random.default_rng(0)
    cov = np.cov(rng.normal(size=(6, 200)))
    data = rng.multivariate_normal(np.zeros(6), cov + np.eye(6), size=4000)
    ref = fit_trust_reference(data[:3000], data[3000:], np.full(1000, 0.01), n_components=3)
    assert isinstance(ref, TrustReference)
    y = data[3000:3010].copy()
    part = y.copy()
    part[:, 4:] = np.nan
    z = (y - ref.mean) / ref.scale
    c = ref.covariance()[:4, :4]
    want = np.einsum("ni,ij,nj->n", z[:, :4], np.linalg.inv(c), z[:, :4]) / 4
    np.testing.assert_allclose(ref.density(part), want, rtol=1e-8)
    # about `level` of fresh in-distribution rows pass
    fresh = rng.multivariate_normal(np.zeros(6), cov + np.eye(6), size=4000)
    _, ok = trust_scores(ref, fresh, np.full(4000, 0.01))
    assert 0.94 <= ok.mean() <= 0.99
    s, ok = trust_scores(None, fresh[:3], None)
    assert np.isnan(s).all() and not ok.any()


def test_training_fits_a_reference(tmp_path):
    from synthetic import FAST, TINY

    from radynversion.model import train

    res = train(training_set(160), tmp_path / "run", model_config=TINY, train_config=FAST, progress=False)
    assert res.model.trust is not None and res.model.trust.n_reference >= 20
    assert load_model(res.model_path).trust is not None


def test_a_store_without_the_trust_variables_is_refused_not_half_resumed(net, model_path, tmp_path):
    import shutil

    from radynversion.errors import StoreError

    ds = _scan(np.random.default_rng(6).uniform(0, 1, size=(6, 3)), 2, 3)
    out = tmp_path / "old.zarr"
    invert_to_zarr(ds, out, model=model_path, progress=False, max_chunks=1, chunks={"y": 1}, **KW)
    for name in ("ood_score", "trusted"):  # as a store of an older radynversion
        shutil.rmtree(out / name)
    with pytest.raises(StoreError, match="older radynversion .no ood_score, trusted."):
        invert_to_zarr(ds, out, model=model_path, progress=False, chunks={"y": 1}, **KW)
