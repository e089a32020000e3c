"""Training on profiles as a filtergraph samples them (radynversion.model.sampling)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from synthetic import FAST, TINY, TINY_C, tiny_cinn, tiny_model, training_set  # tests/synthetic.py

from radynversion.errors import ConfigError, ProfileSchemaError
from radynversion.instrument import crisp_tunings, degrade
from radynversion.lines import LINES
from radynversion.model import TrainConfig, atmosphere_to_array, normalise_profiles, train
from radynversion.model.preprocess import MIN_WINDOW_TUNINGS
from radynversion.model.sampling import MODEL_POINTS, ObservedSampling, tuning_programs
from radynversion.schema import RADIANCE_PER_HZ

FWHM = {ln.key: ln.crisp_fwhm_A for ln in LINES}
UNIT = RADIANCE_PER_HZ.to_string()


def _sampling(data, count=4, seed=0):
    y, _ = normalise_profiles(data, unit=UNIT, fwhm_A=FWHM)
    return y, ObservedSampling(data, y, count, FWHM, UNIT, seed=seed)


def test_programs_are_the_model_points_crisp_and_random_variants_that_cover_the_windows():
    progs = tuning_programs(6, seed=3)
    assert len(progs) == 7 and progs[0] == MODEL_POINTS
    for ln in LINES:
        np.testing.assert_array_equal(progs[1][ln.key], crisp_tunings(ln))
    for prog in progs[2:]:
        for ln in LINES:
            wl = prog[ln.key]
            off = wl - ln.center_air_A
            assert np.all(np.diff(wl) > 0)
            assert -off[0] >= ln.model_halfwidth_A and off[-1] >= ln.model_halfwidth_A
            assert np.count_nonzero(np.abs(off) <= ln.model_halfwidth_A) >= MIN_WINDOW_TUNINGS
    # random, but fixed by the seed
    assert any(progs[2][ln.key].size != tuning_programs(6, seed=4)[2][ln.key].size
               or not np.allclose(progs[2][ln.key], tuning_programs(6, seed=4)[2][ln.key]) for ln in LINES)
    again = tuning_programs(6, seed=3)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(progs[1:], again[1:], strict=True) for k in a)
    # the reach of the data bounds every program, CRISP's default included
    short = tuning_programs(3, seed=0, max_halfwidth_A={"halpha": 1.45, "ca8542": 1.1})
    assert all(np.abs(p["halpha"] - LINES[0].center_air_A).max() <= 1.45 + 1e-9 for p in short[1:])
    assert all(np.abs(p["ca8542"] - LINES[1].center_air_A).max() <= 1.1 + 1e-9 for p in short[1:])
    with pytest.raises(ConfigError, match="count = 0"):
        tuning_programs(0)


def test_noise_free_observation_through_a_program_is_what_invert_sees():
    """Without noise, a program's profiles equal the evaluation's pipeline: degrade() at its
    tunings, then normalise_profiles() interpolating onto the model points."""
    data = training_set(12)
    y, obs = _sampling(data, count=3)
    rows = torch.arange(12)
    np.testing.assert_allclose(obs.observe(rows, 0.0, True, program=0).numpy(), y, rtol=1e-6)
    for p in (1, 2, 3):
        prog = obs.programs[p]
        seen = degrade(data[[ln.var for ln in LINES]], prog, fwhm_A=FWHM, noise=0.0)
        want, _ = normalise_profiles(seen, unit=UNIT, fwhm_A=FWHM)
        got = obs.observe(rows, 0.0, True, program=p).numpy()
        np.testing.assert_allclose(got, want, atol=2e-6)
        assert got.max(axis=1) == pytest.approx(1.0)
    # sparse tunings bend the profiles: they are not the model-point ones
    assert np.abs(obs.observe(rows, 0.0, True, program=1).numpy() - y).max() > 1e-3


def test_coarse_profiles_are_taken_as_already_degraded_as_the_model_points_are():
    """Profiles sampled coarser than FWHM / 3 are not convolved again: neither for ``y``
    (normalise_profiles) nor at the programs' tunings."""
    fine = training_set(8)
    coarse = fine.isel({ln.dim: slice(None, None, 4) for ln in LINES})  # 0.08 A steps
    y, obs = _sampling(coarse, count=2)
    rows = torch.arange(8)
    seen = degrade(coarse[[ln.var for ln in LINES]], obs.programs[1], fwhm_A={"halpha": 0.0, "ca8542": 0.0})
    want, _ = normalise_profiles(seen, unit=UNIT, fwhm_A=FWHM)
    np.testing.assert_allclose(obs.observe(rows, 0.0, True, program=1).numpy(), want, atol=2e-6)
    # at this sampling a second convolution would matter (tunings inside the grid's margin)
    inner = {ln.key: ln.center_air_A + np.linspace(-h, h, 25)
             for ln, h in zip(LINES, (1.45, 1.2), strict=True)}
    prof = coarse[[ln.var for ln in LINES]]
    twice, once = (normalise_profiles(degrade(prof, inner, fwhm_A=f), unit=UNIT)[0]
                   for f in (FWHM, {"halpha": 0.0, "ca8542": 0.0}))
    assert np.abs(twice - once).max() > 1e-3


def test_noise_is_added_at_the_tunings_and_each_example_draws_a_program():
    data = training_set(16)
    y, obs = _sampling(data, count=2)
    gen = torch.Generator().manual_seed(0)
    rows = torch.arange(16).repeat(200)
    clean = {p: obs.observe(torch.arange(16), 0.0, False, program=p) for p in range(3)}
    # on the model points the noise is the configured fraction of the peak, independent per point
    d = obs.observe(rows, 0.02, False, generator=gen, program=0) - clean[0].repeat(200, 1)
    assert d.std().item() == pytest.approx(0.02, rel=0.03)
    # interpolated between sparse tunings it is smaller and correlated between neighbours
    d1 = (obs.observe(rows, 0.02, False, generator=gen, program=1) - clean[1].repeat(200, 1)).numpy()
    assert 0.01 < d1.std() < 0.02
    assert np.corrcoef(d1[:, 1], d1[:, 2])[0, 1] > 0.2
    # the program is drawn per example: all of them appear in one batch
    mixed = obs.observe(torch.arange(16).repeat(20), 0.0, False, generator=gen).reshape(20, 16, -1)
    hits = {p for p in range(3) for r in range(20)
            if torch.allclose(mixed[r, 0], clean[p][0], atol=1e-7)}
    assert hits == {0, 1, 2}
    # renormalised, as observations are
    assert torch.allclose(obs.observe(rows[:16], 0.02, True, generator=gen).amax(1), torch.ones(16))


def test_training_on_tuning_programs_records_them_and_is_reproducible(tmp_path):
    data = training_set(48)
    cfg = dataclasses.replace(FAST, epochs=2, tuning_programs=3, renormalise_noisy=True)
    runs = [train(data, tmp_path / f"r{i}", TINY_C, cfg, progress=False) for i in range(2)]
    prov = runs[0].model.metadata["provenance"]
    assert prov["tuning_programs"][0] == MODEL_POINTS
    assert prov["tuning_programs"][1]["halpha"] == [round(float(w), 3) for w in crisp_tunings("halpha")]
    assert len(prov["tuning_programs"]) == 4
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.isfinite(runs[0].history["val_nll"]).all()
    # the option changes what the condition sees, hence the weights
    plain = train(data, tmp_path / "plain", TINY_C, dataclasses.replace(cfg, tuning_programs=0),
                  progress=False).model.state_dict()
    assert not all(torch.equal(a[k], plain[k]) for k in a)


def test_the_inn_trains_on_tuning_programs_too(tmp_path):
    data = training_set(40)
    cfg = dataclasses.replace(FAST, epochs=1, tuning_programs=2, renormalise_noisy=True)
    res = train(data, tmp_path, TINY, cfg, progress=False)
    assert len(res.model.metadata["provenance"]["tuning_programs"]) == 3
    assert np.isfinite(res.history["val_reconstruct_l2"]).all()
    plain = train(data, tmp_path / "plain", TINY, dataclasses.replace(cfg, tuning_programs=0),
                  progress=False).model.state_dict()
    got = res.model.state_dict()
    assert not all(torch.equal(got[k], plain[k]) for k in got)  # the reverse losses saw them


@pytest.mark.parametrize("make", [tiny_model, tiny_cinn], ids=["inn", "cinn"])
def test_the_losses_feed_the_observed_profiles_to_the_reverse_pass(make):
    """Given ``y_obs``, both kinds' losses use it instead of ``y`` plus noise; without noise
    ``y_obs = y`` is the same batch, bit for bit, and other profiles give other losses."""
    net = make()
    data = training_set(16)
    y = torch.as_tensor(normalise_profiles(data, unit=UNIT, fwhm_A=FWHM)[0])
    atm = torch.as_tensor(atmosphere_to_array(data))
    cfg = dataclasses.replace(FAST, noise=0.0)

    def losses(**kw):
        return net.training_losses(atm, y, cfg, 1.0, torch.Generator().manual_seed(0), **kw)

    base, same, other = losses(), losses(y_obs=y), losses(y_obs=0.9 * y)
    assert all(torch.equal(base[k], same[k]) for k in base)
    assert not torch.equal(base["total"], other["total"])


def test_tuning_programs_need_fine_profiles_beyond_the_windows(tmp_path):
    data = training_set(16)
    ln = LINES[0]
    inside = data.sel({ln.dim: slice(ln.center_air_A - 1.45, ln.center_air_A + 1.45)})
    y, _ = normalise_profiles(inside, unit=UNIT, fwhm_A=FWHM)
    with pytest.raises(ProfileSchemaError, match=r"I_halpha reaches .* beyond the model window"):
        ObservedSampling(inside, y, 2, FWHM, UNIT, source="short.nc")
    with pytest.raises(ConfigError, match="tuning_programs = -1"):
        TrainConfig(tuning_programs=-1)
