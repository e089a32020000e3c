"""The atmosphere generators beyond the default prior: smooth random stratifications and
electron densities out of statistical equilibrium (real Lightweaver solves)."""

from dataclasses import replace

import numpy as np
import pytest
import xarray as xr

from radynversion.atmosphere import default_height_grid
from radynversion.config import from_toml, to_toml
from radynversion.datasets import training_set, training_set_path
from radynversion.errors import ConfigError
from radynversion.synth import NLTEConfig, sample_atmosphere, synthesise
from radynversion.synth.factory import SynthConfig, draw_and_solve, param_names, run_synthesis
from radynversion.synth.noneq import NonEquilibriumConfig, departure
from radynversion.synth.prior import KINDS
from radynversion.synth.smooth import SmoothConfig, sample_smooth

FAST = NLTEConfig(depth_points=60)


@pytest.fixture(scope="module")
def smooth_draws():
    return [sample_smooth(i, seed=3) for i in range(300)]


def test_smooth_draws_are_reproducible_and_not_the_priors():
    a, b = sample_smooth(17, seed=5), sample_smooth(17, seed=5)
    np.testing.assert_array_equal(a.temperature_K, b.temperature_K)
    np.testing.assert_array_equal(a.v_km_s, b.v_km_s)
    assert a.params == b.params
    c = sample_smooth(18, seed=5)
    assert not np.array_equal(a.temperature_K, c.temperature_K)
    p = sample_atmosphere(17, seed=5)
    assert a.z_m.shape != p.z_m.shape or not np.array_equal(a.temperature_K, p.temperature_K)


def test_smooth_generator_covers_what_the_prior_does_not(smooth_draws):
    cfg = SmoothConfig()
    P = [d.params for d in smooth_draws]
    assert {d.kind for d in smooth_draws} == set(KINDS)
    z_tr = np.array([p["z_tr_Mm"] for p in P])
    assert cfg.z_tr_range[0] <= z_tr.min() and z_tr.max() <= cfg.z_tr_range[1]
    assert z_tr.min() < 0.8 and z_tr.max() > 2.5  # TRs from 0.5 to 3 Mm
    width = np.array([p["tr_width_km"] for p in P])
    assert width.min() < 5 and width.max() > 150  # a few km to hundreds
    # heating that starts at or below the temperature minimum, with no column-mass cap:
    # some dense layers (column mass above 1e-2 g cm^-2 = 1e-1 kg m^-2) hotter than 2e4 K
    base = np.array([p.get("heat_base_lm", np.nan) for p in P])
    assert np.nanmax(base) > 0.0
    hot_and_dense = 0
    for d in smooth_draws:
        below = d.z_m < d.params["z_tr_Mm"] * 1e6
        rho = 1.4 * 1.6735575e-27 * d.nHTot_m3
        m = np.cumsum(np.r_[0.0, -np.diff(d.z_m) * 0.5 * (rho[1:] + rho[:-1])])
        hot_and_dense += np.any(below & (m > 0.1) & (d.temperature_K > 2e4))
    assert hot_and_dense >= 3
    # opposite signs at nearby heights: a downflow and an upflow above 5 km/s within 0.5 Mm
    opposite = 0
    for d in smooth_draws:
        z = d.z_m / 1e6
        chrom = (z > 0) & (z < d.params["z_tr_Mm"])
        zz, vv = z[chrom], d.v_km_s[chrom]
        down, up = zz[vv > 5], zz[vv < -5]
        if down.size and up.size and np.min(np.abs(down[:, None] - up[None, :])) < 0.5:
            opposite += 1
    assert opposite >= 10
    assert sum(p["cool_condensation"] for p in P) >= 10
    assert sum("photosphere_heating_K" in p for p in P) >= 10
    assert all(np.all(np.isfinite(d.nHTot_m3)) and np.all(d.nHTot_m3 > 0) for d in smooth_draws)


def test_departure_is_bounded_reproducible_and_absent_below_the_temperature_minimum():
    atmos = sample_atmosphere(3, 0)
    ne_se = 1e-3 * atmos.nHTot_m3 * (1 + 100 * (atmos.temperature_K > 8e3))
    cfg = NonEquilibriumConfig()
    out = [departure(atmos, ne_se, i, 0, cfg) for i in range(40)]
    again = departure(atmos, ne_se, 7, 0, cfg)
    np.testing.assert_array_equal(out[7].ne_m3, again.ne_m3)
    z_min = out[0].params["ne_taper_base_Mm"]
    for o in out:
        assert np.all(o.ne_m3 <= np.maximum(ne_se, 1.2 * atmos.nHTot_m3) * (1 + 1e-12))
        assert np.all(o.ne_m3 >= np.minimum(ne_se, 1e-4 * atmos.nHTot_m3) * (1 - 1e-12))
        low = atmos.z_m / 1e6 <= z_min
        np.testing.assert_allclose(o.ne_m3[low], ne_se[low], rtol=1e-12)
        hot = atmos.temperature_K > cfg.max_temperature_K  # TR and corona: fully ionised, SE
        np.testing.assert_allclose(o.ne_m3[hot], ne_se[hot], rtol=1e-12)
        assert o.ne_m3 is not None and atmos.ne_m3 is None  # a copy, the base is untouched
    spread = np.array([o.params["ne_departure_max_dex"] - o.params["ne_departure_min_dex"] for o in out])
    assert spread.max() > 0.8  # departures of large factors occur


def test_fixed_ne_solve_keeps_the_given_ne_and_the_profiles_carry_it():
    atmos = sample_atmosphere(3, 0)
    se = synthesise(atmos, FAST)
    assert se.status == 0, se.message
    ne_se = 10 ** np.interp(atmos.z_m, se.depth_z_m[::-1], np.log10(se.depth_ne_m3[::-1]))
    factor = np.where(atmos.z_m > 0.8e6, 4.0, 1.0)
    fixed = synthesise(replace(atmos, ne_m3=ne_se * factor), FAST)
    assert fixed.status == 0, fixed.message
    # on the solver's grid the given n_e is kept exactly (log-interpolated onto it)
    given_depth = np.interp(fixed.depth_z_m[::-1], atmos.z_m[::-1], np.log10(ne_se * factor)[::-1])[::-1]
    np.testing.assert_allclose(np.log10(fixed.depth_ne_m3), given_depth, atol=1e-6)
    # on the nodes too, but for the resampling through the TR's few depth points
    h = default_height_grid()
    given = np.log10(np.interp(h, atmos.z_m[::-1] / 1e6, (ne_se * factor)[::-1]) * 1e-6)
    assert np.median(np.abs(fixed.log_ne - given)) < 0.005
    # the SE solve moved its n_e away from the start; the fixed one did not
    assert np.max(np.abs(fixed.log_ne - se.log_ne)) > 0.5
    rel = max(np.max(np.abs(fixed.intensity[k] / se.intensity[k] - 1)) for k in se.intensity)
    assert rel > 0.05, "a 4x electron density must change the profiles"


def test_generator_is_checked_and_old_stores_read_as_the_prior():
    with pytest.raises(ConfigError, match="generator"):
        SynthConfig(generator="mhd")
    cfg = SynthConfig(generator="smooth", seed=4)
    assert from_toml(SynthConfig, to_toml(cfg)) == cfg
    attrs = xr.open_zarr(training_set_path(), consolidated=False).attrs
    stored = from_toml(SynthConfig, attrs["synth_config"])
    assert stored.generator == "prior"
    assert "generator" not in attrs["synth_config"]  # written before generators existed
    assert len(param_names("noneq")) == len(set(param_names("noneq")))


@pytest.mark.slow
def test_smooth_and_noneq_stores(tmp_path):
    for gen in ("smooth", "noneq"):
        cfg = SynthConfig(n=2, seed=21, shard_size=2, generator=gen, nlte=FAST)
        out = tmp_path / f"{gen}.zarr"
        stats = run_synthesis(out, cfg, workers=1, progress=False)
        assert stats["shards"] == 1
        raw = xr.open_zarr(out).load()
        assert list(raw.param.values) == list(param_names(gen))
        ts = training_set(out)
        for i in ts.sample.values:
            atmos, res = draw_and_solve(int(i), cfg)
            np.testing.assert_array_equal(ts.log_T.sel(sample=i).values, res.log_T.astype(np.float32))
            if gen == "noneq":
                h = default_height_grid()
                given = np.log10(np.interp(h, atmos.z_m[::-1] / 1e6, atmos.ne_m3[::-1]) * 1e-6)
                np.testing.assert_array_equal(ts.log_ne.sel(sample=i).values, res.log_ne.astype(np.float32))
                # the fixed n_e, but for the resampling through the TR's few depth points (60 here)
                assert np.median(np.abs(ts.log_ne.sel(sample=i).values - given)) < 0.01


def test_a_store_resumes_whatever_the_other_generators_tables_say(tmp_path):
    cfg = SynthConfig(n=1, seed=31, shard_size=1, nlte=FAST)
    out = tmp_path / "prior.zarr"
    run_synthesis(out, cfg, workers=1, progress=False)
    other = replace(cfg, smooth=replace(cfg.smooth, tr_width_km=(5.0, 50.0)))  # unused by 'prior'
    assert run_synthesis(out, other, workers=1, progress=False)["shards"] == 0
    with pytest.raises(Exception, match="different configuration"):  # its own table still counts
        run_synthesis(out, replace(cfg, prior=replace(cfg.prior, tr_width_km=(5.0, 50.0))), workers=1,
                      progress=False)
