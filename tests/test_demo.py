"""`radynversion demo`: the example scan through reader, engine (LocalCluster), store, figures."""

from __future__ import annotations

import numpy as np
import pytest
import sunpy.map
import xarray as xr
from synthetic import tiny_model  # tests/synthetic.py

from radynversion.cli import main
from radynversion.datasets import example_truth
from radynversion.demo import run_demo, truth_scores
from radynversion.errors import StoreError
from radynversion.io import map_header
from radynversion.model import save_checkpoint


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("model") / "model.pt", tiny_model())


def test_truth_scores_are_zero_error_and_full_coverage_for_the_truth_itself():
    truth = example_truth()
    q = xr.concat([truth[["log_ne", "log_T", "v"]] + d for d in (-0.1, -0.05, 0.0, 0.05, 0.1)],
                  dim=xr.DataArray([0.05, 0.16, 0.5, 0.84, 0.95], dims="quantile", name="quantile"))
    scores = truth_scores(q.transpose("y", "x", "quantile", "height"), truth)
    for band in ("photosphere", "chromosphere", "corona"):
        for v in ("log_ne", "log_T", "v"):
            assert scores[band][f"{v}_median_abs_error"] == pytest.approx(0.0, abs=1e-6)
            assert scores[band][f"{v}_coverage68"] == 1.0


def test_demo_inverts_the_example_scan_and_draws_it(model_path, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--samples", "8", "--workers", "1", "--model", str(model_path),
                 "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    line = next(x for x in lines if x.startswith("demo: "))
    assert line.startswith("demo: 4096 pixels x 8 samples in ") and "chromosphere vs truth" in line
    stored = xr.open_zarr(out / "example_scan.zarr")
    n_ok = int((stored["trusted"].values & ~stored["mask"].values).sum())
    assert f"trusted {n_ok} of 4096 pixels" in line  # the summary counts what the store flags
    # then the same scan as an uncalibrated crisPy pair, inverted with the variant for DN data
    dn = next(x for x in lines if x.startswith("demo, uncalibrated crisPy pair in DN"))
    assert "default_model_per_line.pt" in dn and "chromosphere vs truth" in dn
    assert xr.open_zarr(out / "example_crispy_dn.zarr").attrs["radynversion_complete"]
    result = xr.open_zarr(out / "example_scan.zarr")
    assert result.attrs["radynversion_complete"] and result.sizes["y"] == result.sizes["x"] == 64
    assert np.isfinite(result["log_T"].values).all()
    for name in ("maps.png", "truth.png", "pixel.png"):
        assert (out / name).stat().st_size > 20_000
    # the observation's metadata travels into the store: output maps become sunpy Maps
    meta = map_header(result)
    temp = sunpy.map.Map(result["log_T"].isel(time=0).sel(quantile=0.5, height=1.0, method="nearest").values, meta)
    assert temp.meta["telescop"] == result.attrs["telescope"] and temp.date.isot.startswith("20")
    assert temp.observer_coordinate is not None
    assert temp.scale.axis1.to_value("arcsec / pix") == pytest.approx(result.attrs["pixel_scale_arcsec"][0],
                                                                      rel=1e-3)
    assert result.attrs["model_sha256"] and "training_set_sha256" in result.attrs
    # a rerun replaces its own store (a fresh, timed run), but never a store that is not ours
    foreign = tmp_path / "foreign"
    (foreign / "example_scan.zarr").mkdir(parents=True)
    (foreign / "example_scan.zarr" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a radynversion inversion store"):
        run_demo(foreign, samples=8, workers=1, model=model_path, progress=False)
    assert (foreign / "example_scan.zarr" / "notes.txt").read_text() == "mine"
