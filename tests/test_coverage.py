"""Partial coverage and per-line normalisation (issue: observations as users have them): which
model points an observing program observes, how a one-line or DN observation reaches the model,
and a model that conditions on the mask."""

import dataclasses

import numpy as np
import pytest
import torch
from synthetic import C_KMS, FAST, TINY_C, scan, synthetic_atmospheres

from radynversion.atmosphere import default_height_grid
from radynversion.errors import ConfigError, ProfileSchemaError, UnitsError
from radynversion.instrument import CRISP_PROGRAMS, crisp_tunings
from radynversion.lines import CA8542, HALPHA, LINES
from radynversion.model import CINNConfig, ConditionalINN, TrainConfig, atmosphere_to_array, load_model, train
from radynversion.model.coverage import (
    CORE_POINTS,
    core_covered,
    line_levels,
    line_slices,
    observed_points,
    random_coverage,
    renormalise,
)
from radynversion.model.invert import invert
from radynversion.model.preprocess import normalise_profiles, observed_program
from radynversion.schema import RADIANCE_PER_HZ, profile_dataset

PARTIAL = dataclasses.replace(TINY_C, partial_coverage=True)


def _crisp(line):
    n, h, a = CRISP_PROGRAMS[line.key]
    return crisp_tunings(line, n=n, halfwidth_A=h, core_density=a)


def _observe(ds, line, wl_new):
    wl = ds[line.dim].values
    new = np.apply_along_axis(lambda p: np.interp(wl_new, wl, p), -1, ds[line.var].values)
    out = ds.drop_vars([line.var, line.dim])
    out[line.var] = ((*ds[line.var].dims[:-1], line.dim), new.astype(np.float32), ds[line.var].attrs)
    return out.assign_coords({line.dim: (line.dim, wl_new, ds[line.dim].attrs)})


def test_observed_points_follow_the_program():
    assert observed_points(_crisp(HALPHA), HALPHA).all() and observed_points(_crisp(CA8542), CA8542).all()
    # a program ending 0.4 A short on the red side: the last points are not observed
    wl = np.arange(HALPHA.center_air_A - 1.4, HALPHA.center_air_A + 1.0 + 1e-9, 0.1)
    seen = observed_points(wl, HALPHA)
    t = HALPHA.model_wavelengths()
    np.testing.assert_array_equal(seen, t <= wl[-1] + 0.05 + 1e-3)
    assert 0 < seen.sum() < t.size
    # a gap over the core: the core's points are not observed, the wings are
    wl = np.concatenate([np.arange(-1.0, -0.35, 0.1), np.arange(0.4, 1.05, 0.1)]) + CA8542.center_air_A
    seen = observed_points(wl, CA8542)
    mid = CA8542.model_points // 2
    assert not seen[mid - 2 : mid + 2].any() and seen[:5].all() and seen[-5:].all()
    assert not observed_points(np.array([]), CA8542).any()


def test_random_coverage_keeps_a_core_and_mixes_programs():
    g = torch.Generator().manual_seed(0)
    m = random_coverage(4000, 0.6, g)
    assert m.shape == (4000, 60) and bool(core_covered(m).all())
    full = m.all(1).float().mean().item()
    assert 0.35 < full < 0.5  # 40 % fully observed, plus cut rows that kept everything
    sl = line_slices()
    ha_only = (m[:, sl["halpha"]].any(1) & ~m[:, sl["ca8542"]].any(1)).float().mean().item()
    ca_only = (m[:, sl["ca8542"]].any(1) & ~m[:, sl["halpha"]].any(1)).float().mean().item()
    assert 0.1 < ha_only < 0.2 and 0.1 < ca_only < 0.2
    # half of the one-line rows are cut short or gapped too, as real one-line programs can be
    ha_cut = (~m[:, sl["halpha"]].all(1) & m[:, sl["halpha"]].any(1) & ~m[:, sl["ca8542"]].any(1)).float().mean()
    assert 0.03 < ha_cut.item() < ha_only
    again = random_coverage(4000, 0.6, torch.Generator().manual_seed(0))
    assert torch.equal(m, again)


def _interior_gaps(m):
    """Rows with an unobserved run between observed points in some line."""
    out = torch.zeros(m.shape[0], dtype=torch.bool)
    for sl in line_slices().values():
        seen = m[:, sl].int()
        before = seen.cumsum(1) > 0
        after = seen.flip(1).cumsum(1).flip(1) > 0
        out |= (before & after & (seen == 0)).any(1)
    return out


def test_gap_fraction_sets_how_often_cut_rows_get_a_gap():
    rates = {f: _interior_gaps(random_coverage(6000, 1.0, torch.Generator().manual_seed(1), gap_fraction=f))
             .float().mean().item() for f in (0.0, 0.3, 0.9)}
    assert rates[0.0] == 0.0 and 0.05 < rates[0.3] < rates[0.9] and rates[0.9] > 2.5 * rates[0.3]
    # the default keeps the shipped variant's stream
    same = random_coverage(500, 0.5, torch.Generator().manual_seed(2))
    assert torch.equal(same, random_coverage(500, 0.5, torch.Generator().manual_seed(2), gap_fraction=0.3))
    with pytest.raises(ConfigError, match="gap_fraction"):
        TrainConfig(gap_fraction=1.5)


def test_renormalise_joint_and_per_line():
    y = torch.rand(5, 60) * 2
    y[:, :10] = float("nan")
    j = renormalise(y, "joint")
    assert torch.allclose(torch.nan_to_num(j, nan=-1).amax(1), torch.ones(5))
    p = renormalise(y, "per_line")
    for sl in line_slices().values():
        assert torch.allclose(torch.nan_to_num(p[:, sl], nan=-1).amax(1), torch.ones(5))
    assert torch.isnan(p[:, :10]).all()
    with pytest.raises(ValueError, match="normalisation = 'peak'"):
        renormalise(y, "peak")


def test_far_wing_level_is_the_mean_of_the_outermost_observed_points_of_each_line():
    y = torch.rand(3, 60, dtype=torch.float64) + 0.5
    y[:, :5] = float("nan")  # H-alpha's blue end not observed: its wing starts at point 5
    y[1, 40:48] = float("nan")  # a gap inside Ca II 8542 changes nothing at its ends
    y[2, 30:] = float("nan")  # H-alpha alone
    lev = line_levels(y, "per_line_wing")
    ha = y[:, [5, 6, 28, 29]].mean(1)
    ca = y[:, [30, 31, 58, 59]].mean(1)
    torch.testing.assert_close(lev[:, 0], ha)
    torch.testing.assert_close(lev[:2, 45], ca[:2])
    assert torch.isnan(lev[2, 30:]).all() and (lev[:, :30] == lev[:, :1]).all()
    w = renormalise(y, "per_line_wing")
    torch.testing.assert_close(w[:, [5, 6, 28, 29]].mean(1), torch.ones(3, dtype=torch.float64))
    # an emission core is kept above the wing, not divided down to 1 as by the peak
    em = torch.ones(1, 60)
    em[0, 12:18] = 4.0
    assert renormalise(em, "per_line_wing")[0, 15] == 4.0 and renormalise(em, "per_line")[0, 15] == 1.0


def test_one_line_reaches_a_partial_model_as_nan_elsewhere():
    ds = scan(2, 3)
    ha = ds.drop_vars([CA8542.var, CA8542.dim])
    with pytest.raises(ProfileSchemaError, match="missing variable I_ca8542"):
        normalise_profiles(ha)
    y, peak = normalise_profiles(ha, partial=True)
    sl = line_slices()
    assert np.isnan(y[:, sl["ca8542"]]).all() and np.isfinite(y[:, sl["halpha"]]).all()
    np.testing.assert_allclose(np.nanmax(y, axis=1), 1.0, rtol=1e-6)
    ca = ds.drop_vars([HALPHA.var, HALPHA.dim])
    y, _ = normalise_profiles(ca, partial=True, normalisation="per_line")
    assert np.isnan(y[:, sl["halpha"]]).all()
    np.testing.assert_allclose(np.nanmax(y[:, sl["ca8542"]], axis=1), 1.0, rtol=1e-6)
    # with both lines, a partial model sees what a full one does
    full, _ = normalise_profiles(ds)
    both, _ = normalise_profiles(ds, partial=True)
    np.testing.assert_array_equal(full, both)


def test_per_line_normalisation_takes_dn_and_joint_refuses_it():
    ds = scan(1, 2)
    dn = ds.copy()
    for k, ln in enumerate(LINES):  # counts with a different gain per line
        dn[ln.var] = (ds[ln.var] * (3e10 * (k + 1))).astype(np.float32)
        dn[ln.var].attrs["units"] = "DN"
    with pytest.raises(UnitsError):
        normalise_profiles(dn)
    got, _ = normalise_profiles(dn, normalisation="per_line")
    want, _ = normalise_profiles(ds, normalisation="per_line")
    np.testing.assert_allclose(got, want, rtol=2e-3)  # the gains cancel, per Hz vs per A is ~1e-3
    for sl in line_slices().values():
        np.testing.assert_allclose(got[:, sl].max(1), 1.0, rtol=1e-6)
    got, _ = normalise_profiles(dn, normalisation="per_line_wing")
    want, _ = normalise_profiles(ds, normalisation="per_line_wing")
    np.testing.assert_allclose(got, want, rtol=2e-3)
    for sl in line_slices().values():
        ends = got[:, sl][:, [0, 1, -2, -1]]
        np.testing.assert_allclose(ends.mean(1), 1.0, rtol=1e-6)
    bad = dn.copy()
    bad[CA8542.var][..., :] = -1.0  # a line whose wing is not positive cannot be normalised
    assert np.isnan(normalise_profiles(bad, normalisation="per_line_wing")[0]).all()


def test_observations_below_the_minimum_are_refused_in_one_line():
    ds = scan(1, 2)
    # H-alpha alone, its core in a gap
    wl = np.concatenate([np.arange(-1.4, -0.45, 0.1), np.arange(0.5, 1.45, 0.1)]) + HALPHA.center_air_A
    ha = _observe(ds, HALPHA, wl).drop_vars([CA8542.var, CA8542.dim])
    with pytest.raises(ProfileSchemaError, match=r"cover neither line.s core \(H-alpha 6563 \+-0\.24 A") as err:
        observed_program(ha, "ha.fits", partial=True)
    assert "\n" not in str(err.value) and str(err.value).startswith("ha.fits: ")
    assert CORE_POINTS == 6


def test_partial_condition_uses_the_mask_and_never_propagates_nan():
    net = ConditionalINN(PARTIAL).eval()
    y = torch.rand(4, 60)
    cut = y.clone()
    cut[:, 30:] = float("nan")
    with torch.no_grad():
        a, b = net.condition(y), net.condition(cut)
    assert torch.isfinite(b).all() and not torch.allclose(a, b)
    zero = y.clone()
    zero[:, 30:] = 0.0  # an observed zero is not the same as an unobserved point
    with torch.no_grad():
        assert not torch.allclose(net.condition(zero), b)
    with pytest.raises(ConfigError, match="normalisation"):
        CINNConfig(normalisation="peak")
    with pytest.raises(ConfigError, match="partial_fraction"):
        TrainConfig(partial_fraction=1.5)


def _split_information(n, seed, dims=("sample",), shape=None):
    """Synthetic atmospheres whose lines carry different information: H-alpha's width and shift
    follow the TR height and the velocity, Ca II 8542's depth the chromospheric temperature and
    density, so that each line alone leaves some of the atmosphere unconstrained."""
    atm = synthetic_atmospheres(n, seed)
    p = atm["params"]
    shape = shape or (n,)
    ints, wls = {}, {}
    for ln in LINES:
        wl = ln.synth_wavelengths()
        if ln is HALPHA:
            depth, width, shift = 0.6, 0.3 + 0.4 * p[:, 0:1], ln.center_air_A * (60.0 * p[:, 2:3] - 20.0) * 0.5 / C_KMS
        else:
            depth, width, shift = 0.9 - 1.4 * p[:, 1:2] ** 2, 0.35, 0.0
        prof = 3e-8 * (1.0 - depth * np.exp(-(((wl - ln.center_air_A - shift) / width) ** 2)))
        wls[ln.key], ints[ln.key] = wl, prof.reshape(*shape, wl.size).astype(np.float32)
    ds = profile_dataset(wls, ints, RADIANCE_PER_HZ, dims=dims)
    if dims == ("sample",):
        for name in ("log_ne", "log_T", "v"):
            ds[name] = (("sample", "height"), atm[name].astype(np.float32))
        ds = ds.assign_coords(height=("height", default_height_grid(), {"units": "Mm"}))
        ds["status"] = ("sample", np.zeros(n, dtype=np.int8))
    return ds


@pytest.mark.slow
def test_a_partial_model_inverts_one_line_and_widens_its_posterior(tmp_path):
    data = _split_information(600, 0)
    cfg = dataclasses.replace(FAST, epochs=40, lr=5e-3, partial_fraction=0.6, keep_best=True)
    net = train(data, tmp_path, PARTIAL, cfg, progress=False).model
    ds = _split_information(20, 7, dims=("y", "x"), shape=(4, 5))
    both = invert(ds, net, samples=256, misfit=True)
    ha = invert(ds.drop_vars([CA8542.var, CA8542.dim]), net, samples=256, misfit=True)
    ca = invert(ds.drop_vars([HALPHA.var, HALPHA.dim]), net, samples=256, misfit=True)
    for out in (both, ha, ca):
        assert np.isfinite(out["log_T"].values).all() and np.isfinite(out["misfit"].values).all()

    band = {"height": slice(1.2, 1.8)}  # the chromosphere, where the velocity bump sits

    def width(out, name):  # mean 16-84 % width
        q = out[name].sel(band)
        return float((q.sel(quantile=0.84) - q.sel(quantile=0.16)).mean())

    truth = _split_information(20, 7)

    def error(out, name):  # mean error of the posterior median
        t = truth[name].sel(band).values.reshape(4, 5, -1)
        return float(np.abs(out[name].sel(band).sel(quantile=0.5).values - t).mean())

    # H-alpha alone does not carry the chromospheric density: the posterior widens with the
    # error (measured: width 0.73 against 0.60 dex, error 0.45 against 0.09); Ca II 8542 alone
    # does not carry the velocity (error 12 against 4.1 km/s; this tiny model's velocity
    # intervals are too rough to compare widths)
    assert width(ha, "log_ne") > 1.1 * width(both, "log_ne")
    assert error(ha, "log_ne") > 3 * error(both, "log_ne")
    assert error(ca, "v") > 1.5 * error(both, "v")


def _tiny_partial(tmp_path, normalisation="joint"):
    from radynversion.model import atmosphere_to_array, save_checkpoint

    net = ConditionalINN(dataclasses.replace(PARTIAL, normalisation=normalisation)).eval()
    tr = _split_information(64, 3)
    y, _ = normalise_profiles(tr, normalisation=normalisation)
    net.set_standardisation(atmosphere_to_array(tr), y)
    return save_checkpoint(tmp_path / f"partial_{normalisation}.pt", net)


def test_the_engine_inverts_one_line_with_a_partial_model(tmp_path):
    import radynversion.engine  # noqa: F401 - the ds.radyn accessor
    from radynversion.engine.core import check_profiles

    path = _tiny_partial(tmp_path)
    ds = scan(2, 3)
    for drop in (CA8542, HALPHA):
        one = ds.drop_vars([drop.var, drop.dim])
        out = one.radyn.invert(model=path, samples=16).compute()
        assert np.isfinite(out["log_T"].values).all() and not out["mask"].values.any()
        with pytest.raises(ProfileSchemaError, match=f"missing variable {drop.var}"):
            check_profiles(one)  # a full-coverage model refuses it, naming the line


@pytest.mark.slow
def test_the_cli_inverts_one_fits_line_and_a_short_program(tmp_path):
    import subprocess
    import sys

    import xarray as xr

    from radynversion.datasets import example_scan

    path = _tiny_partial(tmp_path)
    ha, _ = example_scan()
    out = tmp_path / "ha.zarr"
    r = subprocess.run([sys.executable, "-m", "radynversion.cli", "invert", str(ha), "-o", str(out),
                        "--model", str(path), "--samples", "8", "--workers", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    res = xr.open_zarr(out)
    assert np.isfinite(res["log_T"].values).all()


@pytest.mark.parametrize("normalisation", ["per_line", "per_line_wing"])
def test_evaluate_observes_one_line_and_dn_for_a_partial_per_line_model(tmp_path, normalisation):
    from radynversion.evaluate import EvaluationSettings, evaluate
    from radynversion.instrument import crisp_tunings
    from radynversion.model import load_model, read_checkpoint

    path = _tiny_partial(tmp_path, normalisation)
    assert read_checkpoint(path)["normalisation"] == {"per_line": "per_line_peak"}.get(normalisation, normalisation)
    net = load_model(path)
    data = _split_information(40, 11)
    one = EvaluationSettings(split="all", samples=16, pixel_samples=16, tunings={"ca8542": crisp_tunings(CA8542)})
    res = evaluate(net, data, one, prior=data)
    assert res.summary["cross_prior"]["log_T"]["coverage68"] >= 0.0
    dn = evaluate(net, data, dataclasses.replace(one, tunings=None, dn=True), prior=data)
    assert np.isfinite(dn.summary["cross_prior"]["v"]["median_abs_error"])
    full = ConditionalINN(TINY_C).eval()
    with pytest.raises(ConfigError, match="one line alone needs a model trained on partial coverage"):
        evaluate(full, data, one, prior=data)
    with pytest.raises(UnitsError, match="DN"):
        evaluate(full, data, dataclasses.replace(one, tunings=None, dn=True), prior=data)


def test_one_line_with_a_gap_in_its_tunings_inverts_with_a_partial_model(tmp_path):
    path = _tiny_partial(tmp_path)
    ds = scan(2, 3)
    wl = ds[CA8542.dim].values
    gap = ds.isel({CA8542.dim: np.flatnonzero((wl < CA8542.center_air_A - 0.5) | (wl > CA8542.center_air_A - 0.1))})
    seen = observed_program(gap, partial=True)
    assert not seen.all() and seen[:30].all()  # Ca II 8542's blue core is not observed
    out = invert(gap, load_model(path), samples=16)
    assert np.isfinite(out["log_T"].values).all()


def test_nan_tunings_of_one_pixel_are_unobserved_points_for_a_partial_model(tmp_path):
    """Field edges and bad frames leave NaN at some tunings of some pixels: a partial model
    inverts such a pixel from the tunings it has (exactly as if its program lacked them), a
    full-coverage model masks it, and a pixel whose tunings cover no core is masked by both."""
    ds = _observe(_observe(scan(2, 3), HALPHA, _crisp(HALPHA)), CA8542, _crisp(CA8542))
    wl = ds[CA8542.dim].values
    drop = int(np.argmin(np.abs(wl - (CA8542.center_air_A + 0.6))))  # a red-wing tuning
    holed = ds.copy(deep=True)
    holed[CA8542.var][0, 1, drop] = np.nan  # pixel (0, 1)
    holed[HALPHA.var][1, 2, :] = np.nan  # pixel (1, 2): H-alpha lost, Ca II 8542 alone
    holed[HALPHA.var][1, 0, :] = np.nan  # pixel (1, 0): both lines lost
    holed[CA8542.var][1, 0, :] = np.nan
    y, _ = normalise_profiles(holed, partial=True)
    # pixel (0, 1) is normalised as if the program had no such tuning
    fewer, _ = normalise_profiles(ds.isel({CA8542.dim: np.delete(np.arange(wl.size), drop)}), partial=True)
    np.testing.assert_allclose(y[1], fewer[1], rtol=1e-6)
    assert 0 < np.isnan(y[1]).sum() < 10
    sl = line_slices()
    assert np.isnan(y[5, sl["halpha"]]).all() and np.isfinite(y[5, sl["ca8542"]]).all()
    assert np.isnan(y[3]).all()
    np.testing.assert_array_equal(y[[0, 2, 4]], normalise_profiles(ds, partial=True)[0][[0, 2, 4]])
    out = invert(holed, load_model(_tiny_partial(tmp_path)), samples=16)
    assert out["mask"].values.tolist() == [[False, False, False], [True, False, False]]
    assert np.isfinite(out["log_T"].values[0, 1]).all() and np.isfinite(out["log_T"].values[1, 2]).all()
    full = ConditionalINN(TINY_C).eval()
    tr = _split_information(64, 3)
    full.set_standardisation(atmosphere_to_array(tr), normalise_profiles(tr)[0])
    masked = invert(holed, full, samples=16)["mask"].values
    assert masked.tolist() == [[False, True, False], [True, False, True]]
