"""`radynversion evaluate`: held-out split, metrics, baseline, report and figures."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import xarray as xr
from synthetic import TINY, training_set  # tests/synthetic.py

from radynversion.cli import main
from radynversion.errors import ConfigError, ProfileSchemaError
from radynversion.evaluate import (
    BANDS,
    STRONG_FLOW_KMS,
    _by_flow,
    _data_identity,
    _metrics,
    _model_identity,
    _strong_flow,
    acceptance,
    evaluate,
    height_bands,
    transition_region_heights,
    write_report,
)
from radynversion.lines import LINES
from radynversion.model import TrainConfig, evaluation_split, train

CFG = TrainConfig(epochs=30, batch_size=32, val_fraction=0.1, test_fraction=0.2, lr_final_fraction=0.2,
                  seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = training_set(240)
    data["kind"] = ("sample", np.where(np.arange(240) % 3 == 0, 2, 0).astype(np.float32))
    out = tmp_path_factory.mktemp("model")
    res = train(data, out, TINY, CFG, progress=False)
    return data, res.model, res.model_path


def test_height_bands_follow_each_atmosphere_transition_region():
    h = np.array([0.0, 0.3, 0.6, 1.0, 1.5, 2.0, 3.0])
    log_t = np.array([[3.8, 3.7, 3.9, 4.0, 4.6, 5.5, 6.0],   # TR at 1.5 Mm
                      [3.8, 4.6, 3.9, 4.0, 4.2, 4.3, 4.4],   # hot photosphere node, never a corona
                      [3.8, 3.7, 4.7, 5.0, 6.0, 6.0, 6.0]])  # TR right at 0.6 Mm
    np.testing.assert_array_equal(height_bands(log_t, h), [[0, 0, 1, 1, 2, 2, 2],
                                                             [0, 0, 1, 1, 1, 1, 1],
                                                             [0, 0, 2, 2, 2, 2, 2]])


def test_transition_region_height_is_interpolated_between_nodes():
    h = np.array([0.0, 0.3, 0.6, 1.0, 1.5, 2.0, 3.0])
    log_t = np.array([[3.8, 3.7, 3.9, 4.0, 4.0, 5.0, 6.0],   # 4.5 halfway from 1.5 to 2.0 Mm
                      [3.8, 4.6, 3.9, 4.0, 4.2, 4.3, 4.4],   # only the photosphere is hot: none
                      [3.8, 3.7, 4.5, 5.0, 6.0, 6.0, 6.0]])  # first hot node 0.6 Mm, at the band's edge
    np.testing.assert_allclose(transition_region_heights(log_t, h), [1.75, np.nan, 0.6])


def test_transition_region_quantiles_from_log_T_quantile_profiles():
    # draws that are cool below their transition region and hot above it: the q quantile of
    # the height is where the 1 - q quantile of log_T crosses 4.5, to the node spacing
    rng = np.random.default_rng(1)
    h = np.linspace(0.0, 4.0, 81)  # 0.05 Mm
    z = rng.normal(2.0, 0.3, 20000)
    draws = np.where(h[None, :] >= z[:, None], 6.0, 4.0) + rng.normal(0, 0.05, (z.size, h.size))
    q = np.array([0.05, 0.16, 0.5, 0.84, 0.95])
    t_q = np.quantile(draws, 1.0 - q, axis=0)  # (5, H): the 1 - q quantiles
    got = transition_region_heights(t_q, h)
    np.testing.assert_allclose(got, np.quantile(z, q), atol=0.05)
    assert np.all(np.diff(got) > 0)


def test_acceptance_checks_chromospheric_goals():
    good = {"coverage68": 0.70, "coverage90": 0.88, "error_ratio_to_prior": 0.4}
    summary = {"parameters": {v: {"chromosphere": dict(good)} for v in ("log_ne", "log_T", "v")},
               "round_trip": {"misfit_median_pct": 1.5}}
    assert acceptance(summary)["all_pass"]
    summary["parameters"]["v"]["chromosphere"]["error_ratio_to_prior"] = 0.6  # v needs <= half
    summary["parameters"]["log_T"]["chromosphere"]["coverage90"] = 0.80
    checks = acceptance(summary)
    assert not checks["all_pass"] and not checks["v_error_vs_prior"]["pass"]
    assert not checks["log_T_coverage90"]["pass"] and checks["log_ne_coverage90"]["pass"]


def test_strong_flows_are_scored_apart_from_the_slow_majority():
    """Most nodes flow slowly; the strong flows (|v| >= 10 km/s) get their own error and
    coverage, against the prior's (whose median, ~0, misses them by |v|)."""
    truth = np.array([[1.0, -2.0, 40.0, -80.0], [0.5, 0.0, 3.0, 25.0]])
    sel = np.ones_like(truth, bool)
    sel[:, 0] = False  # outside the band
    width = 5.0
    post = np.stack([truth - 2 * width, truth - width, truth + 1.0, truth + width, truth + 2 * width], -1)
    prior = np.broadcast_to(np.array([-30.0, -5.0, 0.0, 5.0, 30.0]), post.shape)
    m = _strong_flow(_metrics(post, truth), _metrics(prior, truth), truth, sel)
    assert m["threshold_km_s"] == STRONG_FLOW_KMS and m["nodes"] == 3
    assert m["fraction_of_band"] == pytest.approx(3 / 6)
    assert m["median_abs_error"] == 1.0 and m["prior_median_abs_error"] == 40.0
    assert m["error_ratio_to_prior"] == pytest.approx(1 / 40)
    assert m["coverage68"] == 1.0 and m["coverage90"] == 1.0
    assert m["prior_coverage68"] == 0.0 and m["prior_coverage90"] == pytest.approx(1 / 3)  # 25 in +-30
    assert _strong_flow(_metrics(post, truth), _metrics(prior, truth), truth / 100, sel) is None


def test_round_trip_by_flow_classes_each_atmosphere_by_its_strongest_chromospheric_flow():
    # 5 atmospheres x 4 nodes; chromosphere = nodes 1-2. The photospheric (node 0) and coronal
    # (node 3) flows are large and must not count.
    v = np.array([[50.0, 1.0, -2.0, 300.0],    # max 2 -> [0, 3)
                  [-80.0, -4.0, 2.0, 0.0],     # 4 -> [3, 10)
                  [0.0, 0.5, -9.99, 0.0],      # 9.99 -> [3, 10)
                  [0.0, 10.0, 0.0, 0.0],       # 10 -> [10, 30)
                  [0.0, 0.0, -120.0, 0.0]])    # 120 -> [30, open)
    chrom = np.zeros_like(v, dtype=bool)
    chrom[:, 1:3] = True
    misfit = np.array([1.0, 5.0, 7.0, 8.0, 9.0])
    forward = np.array([0.5, 3.0, 4.0, 6.0, 7.0])
    rows = _by_flow(misfit, forward, v, chrom)
    assert [r["max_abs_v_km_s"] for r in rows] == [[0.0, 3.0], [3.0, 10.0], [10.0, 30.0], [30.0, None]]
    assert [r["atmospheres"] for r in rows] == [1, 2, 1, 1]
    assert [r["fraction"] for r in rows] == pytest.approx([0.2, 0.4, 0.2, 0.2])
    assert [r["misfit_median_pct"] for r in rows] == pytest.approx([1.0, 6.0, 8.0, 9.0])
    assert [r["forward_rms_median_pct"] for r in rows] == pytest.approx([0.5, 3.5, 6.0, 7.0])
    # an empty class is left out, not reported as NaN
    assert [r["atmospheres"] for r in _by_flow(misfit[:2], forward[:2], v[:2], chrom[:2])] == [1, 1]


def test_evaluate_uses_only_the_held_out_split_and_beats_the_prior(trained):
    data, model, _ = trained
    res = evaluate(model, data, samples=128, noise=0.01)
    s = res.summary
    held = evaluation_split(np.arange(240), CFG.test_fraction)
    assert s["n_evaluated"] == int(held.sum()) and s["n_prior"] == 240 - int(held.sum())
    for bands in s["parameters"].values():
        assert set(bands) <= set(BANDS)
        for m in bands.values():
            assert 0.0 <= m["coverage68"] <= m["coverage90"] <= 1.0
            assert np.isfinite(m["median_abs_error"]) and m["width_ratio_to_prior"] > 0
    # the profiles' depth follows the parameter that sets log_ne: the posterior beats the prior
    chrom = s["parameters"]["log_ne"]["chromosphere"]
    assert chrom["median_abs_error"] < 0.8 * chrom["prior_median_abs_error"]
    # the synthetic profiles carry nothing of the photospheric velocity (zero there): flagged
    assert any(f.startswith("v: posterior as wide as the prior") for f in s["findings"])
    for line in ("halpha", "ca8542"):
        assert 0 < s["forward_rms"][line]["rms_median_pct"] < 50
    assert 0 < s["round_trip"]["misfit_median_pct"] < 50
    flows = s["round_trip"]["by_chromospheric_flow"]
    assert sum(c["atmospheres"] for c in flows) == s["n_evaluated"]
    assert all(0 < c["misfit_median_pct"] < 50 and 0 < c["forward_rms_median_pct"] < 50 for c in flows)
    # every synthetic atmosphere has a transition region (1-2.5 Mm): scored as a parameter
    tr = s["transition_region"]
    assert tr["n"] == s["n_evaluated"]
    for who in ("posterior", "prior"):
        assert 0.0 <= tr[who]["coverage68"] <= tr[who]["coverage90"] <= 1.0
        assert 0 < tr[who]["median_abs_error_Mm"] < 2.5 and tr[who]["median_width68_Mm"] > 0
    assert tr["prior"]["median_width68_Mm"] > 0.5  # z_TR uniform over 1-2.5 Mm
    assert res.per_height.sizes == {"variable": 3, "height": 50}
    assert res.pixel.attrs["kind"] == 2 and res.pixel.sizes["draw"] == 2048


def test_evaluate_observes_through_a_given_program(trained):
    data, model, _ = trained
    prog = {ln.key: ln.model_wavelengths() for ln in LINES}
    s = evaluate(model, data, samples=32, pixel_samples=64, tunings=prog).summary
    assert s["instrument"]["tunings"] == {"halpha": 30, "ca8542": 30}
    assert s["instrument"]["program"] == "given"
    default = evaluate(model, data, samples=32, pixel_samples=64).summary
    assert default["instrument"]["tunings"] == {"halpha": 15, "ca8542": 21}
    assert default["instrument"]["program"] == "CRISP default"
    assert s["round_trip"]["misfit_median_pct"] != default["round_trip"]["misfit_median_pct"]
    with pytest.raises(ConfigError, match="one program per line"):
        evaluate(model, data, samples=8, tunings={"halpha": prog["halpha"]})


def test_evaluate_refuses_a_model_without_held_out_split(trained, tmp_path):
    data, _, _ = trained
    res = train(data.isel(sample=slice(0, 40)), tmp_path, TINY,
                dataclasses.replace(CFG, epochs=1, test_fraction=0.0), progress=False)
    with pytest.raises(ProfileSchemaError, match="without a held-out split"):
        evaluate(res.model, data, samples=8)
    assert evaluate(res.model, data.isel(sample=slice(200, 240)), samples=8, all_samples=True,
                    pixel_samples=16).summary["n_evaluated"] == 40


def test_evaluate_cli_writes_report_and_figures(trained, tmp_path, capsys):
    data, _, model_path = trained
    store = tmp_path / "set.zarr"
    data.to_zarr(store)
    out = tmp_path / "eval" / "report.json"
    assert main(["evaluate", "--model", str(model_path), "--data", str(store), "--out", str(out),
                 "--samples", "64", "--max-samples", "20"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads(out.read_text())
    assert report["n_evaluated"] == printed["evaluated"] == 20
    assert set(report["acceptance"]) >= {"log_ne_coverage68", "round_trip_median_pct", "all_pass"}
    for name in ("report_coverage.png", "report_errors.png", "report_pixel.png", "report_per_height.nc"):
        assert (out.parent / name).stat().st_size > 10_000 or name.endswith(".nc")
    assert report["model_kind"] == "inn"
    # the arithmetic: fp32 unless asked (the same figures on every machine), and recorded
    assert report["precision"] == "fp32"
    # the model by the path it was given, and its bytes' digest
    assert report["model"] == str(model_path)
    assert report["model_sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    # --first N: the held-out split and the prior of the first N draws only
    out2 = tmp_path / "eval2" / "report.json"
    assert main(["evaluate", "--model", str(model_path), "--data", str(store), "--out", str(out2),
                 "--samples", "16", "--first", "120"]) == 0
    first = json.loads(out2.read_text())
    held = evaluation_split(np.arange(120), CFG.test_fraction)
    assert first["n_evaluated"] == int(held.sum()) and first["n_prior"] == 120 - int(held.sum())
    assert first["first_draws"] == 120 and "first_draws" not in report
    assert first["data"] == report["data"] == str(store)
    # --precision: asked for, and recorded
    out3 = tmp_path / "eval3" / "report.json"
    assert main(["evaluate", "--model", str(model_path), "--data", str(store), "--out", str(out3),
                 "--samples", "16", "--max-samples", "8", "--precision", "bf16"]) == 0
    assert json.loads(out3.read_text())["precision"] == "bf16"
    # --tunings: the observing program from TOML; a malformed one is a one-line error naming it
    prog = tmp_path / "program.toml"
    prog.write_text("".join(
        f"{ln.key} = [{', '.join(f'{w:.3f}' for w in ln.center_air_A + np.linspace(-h, h, 13))}]\n"
        for ln, h in zip(LINES, (1.5, 1.2), strict=True)))
    out4 = tmp_path / "eval4" / "report.json"
    assert main(["evaluate", "--model", str(model_path), "--data", str(store), "--out", str(out4),
                 "--samples", "16", "--max-samples", "8", "--tunings", str(prog)]) == 0
    assert json.loads(out4.read_text())["instrument"]["tunings"] == {"halpha": 13, "ca8542": 13}
    prog.write_text("halpha = 'no'\nca8542 = [8541.0, 8543.0]\n")
    assert main(["evaluate", "--model", str(model_path), "--data", str(store), "--out", str(out4),
                 "--samples", "16", "--tunings", str(prog)]) == 2
    err = capsys.readouterr().err
    assert "program.toml: 'halpha' must be a list" in err and len(err.strip().splitlines()) == 1
    prog.write_text("halpha = [6562.0, 6563.0]\nca8542 = [8541.0, 8543.0]\n")  # short of the windows
    assert main(["evaluate", "--model", str(model_path), "--data", str(store), "--out", str(out4),
                 "--samples", "16", "--tunings", str(prog)]) == 2
    err = capsys.readouterr().err
    assert "program.toml: I_halpha covers 6562.000-6563.000 A (air), short of the model window" in err


def test_the_packaged_model_is_named_without_the_install_path():
    """A report of the packaged model is the same on every machine (no site-packages path)."""
    from radynversion.model.checkpoint import DEFAULT_MODEL_PATH, load_model
    if not DEFAULT_MODEL_PATH.is_file():
        pytest.skip("no packaged model")
    ident = _model_identity(load_model())
    assert ident == {"model": "radynversion/data/default_model.pt (packaged)",
                     "model_sha256": hashlib.sha256(DEFAULT_MODEL_PATH.read_bytes()).hexdigest()}


def test_the_shipped_training_set_is_named_without_the_install_path():
    from radynversion.datasets import training_set_path
    ds = xr.Dataset(attrs={"first_draws": 500})
    ds.encoding["source"] = str(training_set_path())
    assert _data_identity(ds) == {"data": "data/prior.zarr (repository)", "first_draws": 500}
    other = xr.Dataset()
    other.encoding["source"] = "/data/mine.zarr"
    assert _data_identity(other) == {"data": "/data/mine.zarr"}


def test_write_report_round_trips_json(trained, tmp_path):
    data, model, _ = trained
    res = evaluate(model, data, samples=16, max_samples=8, pixel_samples=32)
    paths = write_report(res, tmp_path / "r.json")
    assert json.loads(paths["report"].read_text())["n_evaluated"] == 8


def test_a_model_trained_on_the_held_out_split_of_this_store_is_refused(trained):
    """The leak check: held-out labels among the model's training samples, same source."""
    data, model, _ = trained
    prov = model.metadata.setdefault("provenance", {})
    saved = dict(prov)
    assert prov["source"] == "<training set>"  # in-memory data, recorded by source_label
    held = np.flatnonzero(evaluation_split(np.arange(240), CFG.test_fraction))
    try:
        prov["train_samples"] = list(prov.get("train_samples", [])) + [int(i) for i in held]
        with pytest.raises(ProfileSchemaError, match="of the held-out split were trained on"):
            evaluate(model, data, samples=8, max_samples=4, pixel_samples=16)
        prov["source"] = "/elsewhere/other.zarr"  # another store with the same labels: allowed
        assert evaluate(model, data, samples=8, max_samples=4, pixel_samples=16).summary["n_evaluated"] == 4
    finally:
        prov.clear()
        prov.update(saved)


def test_packaged_observing_programs_are_read_by_name():
    from radynversion.errors import ConfigError
    from radynversion.instrument import observing_program, program_names

    assert {"sparse", "halpha_only", "cut_and_gap"} <= set(program_names())
    sparse = observing_program("sparse")
    assert sparse["halpha"].size == 11 and sparse["ca8542"].size == 13
    assert set(observing_program("halpha_only")) == {"halpha"}
    with pytest.raises(ConfigError, match="neither a file nor a packaged observing program; expected a TOML file or one of"):
        observing_program("sparce")
