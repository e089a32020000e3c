"""The NLTE check (`radynversion verify`) with real Lightweaver runs on two pixels."""

import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from synthetic import scan, tiny_model

from radynversion import cli, invert
from radynversion.model.checkpoint import save_checkpoint
from radynversion.synth import NLTEConfig, falc_atmosphere, synthesise
from radynversion.verify import atmosphere_from_nodes, verify


def test_atmosphere_from_nodes_reproduces_falc_profiles():
    """FAL-C sampled on the node grid and rebuilt hydrostatically gives nearly FAL-C's lines."""
    ref = synthesise(falc_atmosphere(), NLTEConfig(depth_points=0))
    rebuilt = atmosphere_from_nodes(ref.log_ne, ref.log_T, ref.v, __import__("radynversion").default_height_grid())
    assert np.all(np.diff(rebuilt.z_m) < 0) and np.all(rebuilt.nHTot_m3 > 0)
    r = synthesise(rebuilt, NLTEConfig(depth_points=90))
    assert r.status == 0, r.message
    for key in ("halpha", "ca8542"):
        a, b = ref.intensity[key], r.intensity[key]
        core = np.argmin(a)
        assert abs(b[core] / a[core] - 1) < 0.3  # same line, same depth class
        assert abs(b[0] / a[0] - 1) < 0.1  # continuum from the same photosphere


def test_verify_two_pixels_api_and_cli(tmp_path, capsys):
    ds = scan(2, 3)
    model = tiny_model()
    res = invert(ds, model, samples=16)
    rep = verify(res, ds, pixels=2, nlte=NLTEConfig(depth_points=60))
    assert rep.sizes["pixel"] == 2
    worst = np.sort(res.misfit.values.ravel())[::-1][:2]
    np.testing.assert_allclose(np.sort(rep.misfit.values)[::-1], worst)
    assert set(rep.status.values) <= {0, 1, 2}
    ok = rep.status.values == 0
    assert np.all(np.isfinite(rep.misfit_nlte.values[ok])) and rep.y_nlte.shape == (2, 60)
    # the CLI on a store written by radynversion invert
    ds.to_netcdf(tmp_path / "scan.nc")
    path = save_checkpoint(tmp_path / "m.pt", model)
    assert cli.main(["invert", str(tmp_path / "scan.nc"), "-o", str(tmp_path / "out.zarr"), "--model", str(path),
                     "--samples", "16", "--workers", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main(["verify", str(tmp_path / "out.zarr"), "--observation", str(tmp_path / "scan.nc"),
                     "--pixels", "1", "--depth-points", "60"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["pixels"] == 1
    assert xr.open_dataset(summary["report"]).sizes["pixel"] == 1
    assert (tmp_path / "out.zarr_verify.png").exists()


def _inverted(tmp_path):
    """A 2 x 3 scan (netCDF), a checkpoint and its inversion store (threaded, in this process)."""
    from radynversion.engine import invert_to_zarr

    scan_path, model_path, store = tmp_path / "scan.nc", tmp_path / "m.pt", tmp_path / "out.zarr"
    scan(2, 3).to_netcdf(scan_path)
    save_checkpoint(model_path, tiny_model())
    invert_to_zarr(xr.open_dataset(scan_path), store, model=model_path, samples=16, progress=False)
    return scan_path, store


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_verify_on_a_local_cluster_into_new_folders_quietly(tmp_path, workers):
    """`verify --workers N` runs the NLTE solves on a real LocalCluster, writes its report into
    folders that did not exist, and stderr holds no Lightweaver config warning and no nanny
    warning (workers killed at the end), in a fresh interpreter as a user runs it (warnings
    are once per process)."""
    scan_path, store = _inverted(tmp_path)
    report = tmp_path / "reports" / "night1" / "check.nc"
    run = subprocess.run(
        [sys.executable, "-m", "radynversion.cli", "verify", str(store), "--observation", str(scan_path),
         "--pixels", str(workers), "--depth-points", "60", "--workers", str(workers), "--out", str(report)],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["pixels"] == workers and summary["report"] == str(report)
    assert xr.open_dataset(report).sizes["pixel"] == workers and report.with_suffix(".png").exists()
    for noise in ("No config file found", "still alive", "Traceback", "Error"):
        assert noise not in run.stderr, run.stderr


def test_verify_refuses_an_unwritable_report_path_before_any_nlte_work(tmp_path, capsys):
    scan_path, store = _inverted(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for out, names in [(blocker / "check.nc", [f"{blocker}/check.nc", "is a file, not a directory"]),
                       (tmp_path, [str(tmp_path), "is a directory"])]:
        capsys.readouterr()
        assert cli.main(["verify", str(store), "--observation", str(scan_path), "--pixels", "1",
                         "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("radynversion verify: error: ") and "\n" not in err, err
        assert all(n in err for n in names) and "expected" in err, err
