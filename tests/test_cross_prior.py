"""Cross-prior evaluation (issue 23): any model on any population, scored beside the
population's own marginals on the chromosphere band up to 2 Mm."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from synthetic import FAST, TINY_C, synthetic_atmospheres, tiny_cinn, training_set  # tests/synthetic.py

from radynversion.cli import main
from radynversion.errors import ConfigError, ProfileSchemaError
from radynversion.evaluate import (
    _Q,
    CROSS_PRIOR_TOP_MM,
    EvaluationSettings,
    cross_prior_layer,
    cross_prior_scores,
    evaluate,
    open_population,
)
from radynversion.model import save_checkpoint, train

FAST_EVAL = EvaluationSettings(split="all", samples=16, pixel_samples=16)


def _params(v: dict) -> tuple:
    """(68 % coverage, 90 % coverage, median error) and the baseline's, of one variable."""
    return tuple(v[k] for k in ("coverage68", "coverage90", "median_abs_error", "baseline_coverage68",
                                "baseline_coverage90", "baseline_median_abs_error"))


def test_the_layer_is_the_chromosphere_band_up_to_2_Mm_below_each_transition_region():
    h = np.array([0.0, 0.3, 0.6, 1.0, 1.5, 1.9, 2.1, 3.0])
    log_t = np.array([[3.8, 3.7, 3.9, 4.0, 4.1, 4.2, 4.3, 6.0],    # TR at 3.0 Mm: the layer ends at 2 Mm
                      [3.8, 3.7, 3.9, 4.6, 5.0, 6.0, 6.0, 6.0],    # TR at 1.0 Mm: one node
                      [3.8, 4.6, 3.9, 4.0, 4.1, 4.2, 4.3, 4.4]])   # never hot: 0.5-2 Mm
    assert CROSS_PRIOR_TOP_MM == 2.0
    np.testing.assert_array_equal(cross_prior_layer(log_t, h), [[0, 0, 1, 1, 1, 1, 0, 0],
                                                                [0, 0, 1, 0, 0, 0, 0, 0],
                                                                [0, 0, 1, 1, 1, 1, 0, 0]])


def test_a_posterior_equal_to_the_population_marginals_scores_as_the_baseline():
    data = training_set(300, seed=4)
    truth = {v: data[v].values.astype(float) for v in ("log_ne", "log_T", "v")}
    marg = {v: np.broadcast_to(np.quantile(t, _Q, axis=0).T, (*t.shape, len(_Q))) for v, t in truth.items()}
    s = cross_prior_scores(marg, truth, data["height"].values)
    assert s["atmospheres"] == 300 and s["nodes"] == cross_prior_layer(truth["log_T"], data["height"].values).sum()
    for v in truth:
        post, base = _params(s[v])[:3], _params(s[v])[3:]
        assert post == base


def test_whole_store_scoring_uses_every_sample_of_a_zarr_store_or_a_netcdf(tmp_path):
    data = training_set(120, seed=2)
    store, nc = tmp_path / "pop.zarr", tmp_path / "pop.nc"
    data.to_zarr(store)
    data.to_netcdf(nc)
    net = tiny_cinn()
    s = evaluate(net, store, FAST_EVAL).summary
    assert s["n_evaluated"] == s["n_prior"] == 120 and s["split"] == "all usable samples"
    assert s["data"] == str(store)
    # every synthetic atmosphere has its transition region at 1-2.5 Mm: all are in the layer
    assert s["cross_prior"]["atmospheres"] == 120
    # the netCDF reader gives the same population, hence the same scores
    from_nc = evaluate(net, open_population(nc), FAST_EVAL).summary
    assert from_nc["data"] == str(nc) and from_nc["cross_prior"] == s["cross_prior"]
    # the model has no held-out split of its own: the default split is refused, naming the way out
    with pytest.raises(ProfileSchemaError, match="--split all"):
        evaluate(net, store, dataclasses.replace(FAST_EVAL, split="held-out"))


def test_cli_scores_a_netcdf_and_prints_one_line_per_parameter(tmp_path, capsys):
    nc = tmp_path / "pop.nc"
    training_set(40, seed=6).to_netcdf(nc)
    model = save_checkpoint(tmp_path / "model.pt", tiny_cinn())
    out = tmp_path / "eval" / "report.json"
    assert main(["evaluate", "--model", str(model), "--data", str(nc), "--split", "all", "--out", str(out),
                 "--samples", "16"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    printed, report = json.loads(lines[-1]), json.loads(out.read_text())
    assert printed["evaluated"] == report["n_evaluated"] == 40
    assert [ln.split()[0] for ln in lines[-4:-1]] == ["log_ne", "log_T", "v"]
    assert f"{report['cross_prior']['v']['coverage68']:.2f}" in lines[-2]
    assert report["cross_prior"]["atmospheres"] == 40


def test_the_baseline_coverage_of_a_population_s_own_marginals_is_near_nominal():
    s = evaluate(tiny_cinn(), training_set(400, seed=3), dataclasses.replace(FAST_EVAL, samples=8)).summary
    for v in ("log_ne", "log_T", "v"):
        c = s["cross_prior"][v]
        assert abs(c["baseline_coverage68"] - 0.68) < 0.05, (v, c)
        assert abs(c["baseline_coverage90"] - 0.90) < 0.04, (v, c)
        assert c["baseline_median_abs_error"] > 0


def test_a_model_is_scored_differently_on_a_shifted_population(tmp_path):
    """Trained where the parameter setting log_ne and the line depth is below 0.5, a model is
    near its own baseline inside that prior and far from it on the atmospheres above 0.6
    (denser, profiles in emission): narrow and wrong, while the shifted population's own
    marginals still hold the truth as often as they should."""
    full = training_set(400)
    p = synthetic_atmospheres(400)["params"][:, 1]
    inside, shifted = full.isel(sample=np.flatnonzero(p < 0.5)), full.isel(sample=np.flatnonzero(p >= 0.6))
    res = train(inside, tmp_path, TINY_C, dataclasses.replace(FAST, epochs=20, test_fraction=0.2), progress=False)
    own = evaluate(res.model, inside, samples=64, pixel_samples=16).summary["cross_prior"]
    out = evaluate(res.model, shifted, split="all", samples=64, pixel_samples=16).summary["cross_prior"]
    assert out["atmospheres"] == shifted.sizes["sample"]
    for v in ("log_ne", "log_T", "v"):
        a, b = own[v], out[v]
        assert b["coverage68"] < a["coverage68"] - 0.2, (v, a, b)
        ratio = {k: m["median_abs_error"] / m["baseline_median_abs_error"] for k, m in (("own", a), ("out", b))}
        assert ratio["out"] > ratio["own"], (v, ratio)
        assert abs(b["baseline_coverage68"] - 0.68) < 0.06, (v, b)
    assert own["log_ne"]["coverage68"] > 0.4 and out["log_ne"]["coverage68"] < 0.15
    assert out["log_ne"]["median_abs_error"] > 3 * out["log_ne"]["baseline_median_abs_error"]


def test_a_population_that_cannot_be_compared_is_refused(tmp_path):
    data = training_set(10)
    with pytest.raises(ProfileSchemaError, match="model's are 50 from -0.065"):
        evaluate(tiny_cinn(), data.assign_coords(height=data["height"] + 0.5), FAST_EVAL)
    nc = tmp_path / "no_v.nc"
    data.drop_vars("v").to_netcdf(nc)
    with pytest.raises(ProfileSchemaError, match=r"no_v.nc: a population to evaluate needs .*missing or other "
                                                 r"dims: v\('sample', 'height'\)"):
        open_population(nc)


def test_settings_are_one_validated_object():
    assert EvaluationSettings().split == "held-out"
    assert EvaluationSettings().changed(all_samples=True).split == "all"  # the former keyword
    assert FAST_EVAL.changed(all_samples=False).split == "all"  # False changes nothing
    with pytest.raises(ConfigError, match="split = 'train'"):
        EvaluationSettings(split="train")
    with pytest.raises(TypeError, match="unknown settings"):
        EvaluationSettings().changed(draws=3)
