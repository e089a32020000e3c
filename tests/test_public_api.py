"""The public API the README names answers at the top level: ``import radynversion as rv``."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

import radynversion as rv


def test_submodules_are_served_and_listed():
    """Every submodule of the package is an attribute of it (imported on first access) and in dir()."""
    found = {m.name for m in pkgutil.iter_modules(rv.__path__) if not m.name.startswith("_")}
    assert found == set(rv._SUBMODULES)
    listed = dir(rv)
    for name in found:
        assert name in listed
        assert getattr(rv, name).__name__ == f"radynversion.{name}"
    assert {"open_observation", "invert", "load_model", "datasets", "io"} <= set(listed)
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        rv.nonsense  # noqa: B018


def test_fresh_import_serves_the_workflow_names_without_torch():
    """In a fresh interpreter: rv.datasets, rv.io and rv.open_observation answer, torch stays out."""
    code = (
        "import sys, radynversion as rv\n"
        "assert 'torch' not in sys.modules\n"
        "assert rv.open_observation is rv.io.open_observation\n"
        "assert callable(rv.datasets.example_observation)\n"
        "assert 'torch' not in sys.modules, 'datasets/io pulled in torch'\n"
        "assert callable(rv.invert) and callable(rv.load_model)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_example_observation_is_the_opened_example_scan():
    scan = rv.datasets.example_observation()
    assert isinstance(scan, xr.Dataset)
    assert (scan.sizes["y"], scan.sizes["x"]) == (64, 64)
    assert scan["I_halpha"].dims[-2:] == ("y", "x")
    ref = rv.open_observation(rv.datasets.example_scan())
    xr.testing.assert_identical(scan, ref)


@pytest.mark.filterwarnings("ignore:invert. chunks of:UserWarning")
def test_example_observation_inverts_through_the_accessor():
    """The README's Python walkthrough: example_observation().radyn.invert(...) on a few pixels."""
    scan = rv.datasets.example_observation().isel(y=slice(0, 2), x=slice(0, 2))
    out = scan.radyn.invert(samples=8, quantiles=(0.16, 0.5, 0.84)).compute()
    assert out["log_T"].sizes["quantile"] == 3 and out.sizes["y"] == out.sizes["x"] == 2
    assert np.isfinite(out["log_T"].values).all() and np.isfinite(out["misfit"].values).all()
