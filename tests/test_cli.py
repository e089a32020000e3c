"""The command line's own habits (issue 25): help that formats, usage errors from the
subcommand that was mistyped, refusals of settings that cannot be honoured."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from synthetic import scan

from radynversion import cli


def digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path``."""
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.rglob("*")) if f.is_file()}


def _subcommands() -> list[str]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(action.choices)


def test_every_subcommand_is_listed():
    assert {"synth", "import-radyn", "train", "evaluate", "invert", "plot", "verify", "demo"} <= set(_subcommands())


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help_formats(flag, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([flag])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: radynversion")
    for name in _subcommands():
        assert name in out


@pytest.mark.parametrize("name", _subcommands())
def test_every_subcommand_help_formats(name, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([name, "--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: radynversion {name}")


# -- usage errors belong to the subcommand -------------------------------------------------------
@pytest.mark.parametrize("argv", [["invert", "scan.nc", "-o", "out.zarr", "--bogus"],
                                  ["plot", "out.zarr", "--hieghts", "2"]])
def test_a_mistyped_flag_prints_the_subcommands_usage(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: radynversion {argv[0]} ")
    assert f"radynversion {argv[0]}: error: unrecognized arguments: {argv[-2] if argv[0] == 'plot' else argv[-1]}" in err


# -- invert: resume, refuse, overwrite -----------------------------------------------------------
FAST = ["--samples", "16", "--batch-size", "64", "--no-progress"]


@pytest.fixture()
def scan_nc(tmp_path):
    path = tmp_path / "scan.nc"
    scan(4, 4).to_netcdf(path)
    return path


def _invert(scan_nc, out, model_path, *extra):
    return cli.main(["invert", str(scan_nc), "-o", str(out), "--model", str(model_path), *FAST, *extra])


@pytest.mark.filterwarnings("ignore:invert. chunks of:UserWarning")
def test_a_rerun_names_only_the_options_that_differ_and_overwrite_replaces(scan_nc, tmp_path, model_path, capsys):
    out = tmp_path / "out.zarr"
    assert _invert(scan_nc, out, model_path, "--workers", "0") == 0
    before = digest(out)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the summary counts the pixels the model does not trust, as the store holds them
    stored = xr.open_zarr(out)
    n_ok = int((stored["trusted"].values & ~stored["mask"].values).sum())
    assert summary["trusted_pixels"] == n_ok and summary["untrusted_pixels"] == summary["inverted_pixels"] - n_ok
    assert summary["trusted_fraction"] == round(n_ok / summary["inverted_pixels"], 4)
    # only --samples changed: the round trip's draws (min(samples, 64)) follow, and are not named
    assert _invert(scan_nc, out, model_path, "--workers", "0", "--samples", "8") == 2
    err = capsys.readouterr().err.strip()
    assert "samples: store 16 vs now 8" in err and "misfit_samples" not in err, err
    assert "--overwrite" in err and "\n" not in err
    # another --misfit-samples as well: both named
    assert _invert(scan_nc, out, model_path, "--workers", "0", "--samples", "8", "--misfit-samples", "4") == 2
    err = capsys.readouterr().err
    assert "samples: store 16 vs now 8" in err and "misfit_samples: store 16 vs now 4" in err, err
    assert digest(out) == before  # refusals write nothing
    assert _invert(scan_nc, out, model_path, "--workers", "0", "--samples", "8", "--overwrite") == 0
    capsys.readouterr()
    result = xr.open_zarr(out)
    assert result.attrs["samples"] == 8 and result.attrs["radynversion_complete"]
    assert np.isfinite(result["log_T"].values).all()


def test_overwrite_never_replaces_what_is_not_an_inversion_store(scan_nc, tmp_path, model_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert _invert(scan_nc, mine, model_path, "--workers", "0", "--overwrite") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"radynversion invert: error: {mine}: exists and is not a") and "expected" in err
    assert (mine / "notes.txt").read_text() == "keep"


@pytest.mark.slow
def test_resume_on_a_cluster_of_another_size_and_close_it_quietly(scan_nc, tmp_path, model_path, capsys):
    """A store begun in this process (threads: 2 chunks per core) is finished on a real
    LocalCluster of one worker (2 chunks per worker thread) with the same explicit options: its
    chunks are the store's, not new ones for the cluster's size; the run's stderr has no
    warning of workers killed at the end."""
    out = tmp_path / "out.zarr"
    capsys.readouterr()
    assert _invert(scan_nc, out, model_path, "--workers", "0", "--max-chunks", "1") == 0
    assert not xr.open_zarr(out).attrs["radynversion_complete"]
    partial = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "trusted_pixels" not in partial  # unwritten chunks are not counted as untrusted
    run = subprocess.run([sys.executable, "-m", "radynversion.cli", "invert", str(scan_nc), "-o", str(out),
                          "--model", str(model_path), *FAST, "--workers", "1"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    done = json.loads(run.stdout.strip().splitlines()[-1])
    assert done["complete"] and done["inverted_pixels"] == done["trusted_pixels"] + done["untrusted_pixels"]
    assert "still alive" not in run.stderr and "Traceback" not in run.stderr, run.stderr


# -- plot ----------------------------------------------------------------------------------------
def test_plot_refuses_heights_outside_the_grid(scan_nc, tmp_path, model_path, capsys):
    out = tmp_path / "out.zarr"
    assert _invert(scan_nc, out, model_path, "--workers", "0") == 0
    capsys.readouterr()
    assert cli.main(["plot", str(out), "--heights", "1", "20", "--out", str(tmp_path / "maps")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"radynversion plot: error: --heights 20: outside the height grid of {out} (-0.065 to "
                   "10.5 Mm); expected heights [Mm] within it")
    assert not (tmp_path / "maps").exists()
