"""One result schema (issue 25): the in-memory ``radynversion.invert``, the lazy
``ds.radyn.invert`` and the Zarr store of ``radynversion invert`` hold the same variables,
dims, dtypes, units and attrs, serialised the same way; the store's bookkeeping stays out of
the user's view; maps of a result carry their units into a sunpy header."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import xarray as xr
from synthetic import scan

import radynversion
from radynversion import cli
from radynversion.engine import invert_to_zarr
from radynversion.engine.store import STORE_ATTRS, open_result
from radynversion.io import map_header

pytestmark = pytest.mark.filterwarnings("ignore:invert. chunks of:UserWarning")

KW = dict(samples=8, seed=3, precision="fp32", batch_size=64)
MAPS = ("misfit", "peak", "mask")


@pytest.fixture(scope="module")
def results(tmp_path_factory, model_path):
    """The same 3 x 4 scan (with input attrs and a pixel to mask) through each front door."""
    tmp = tmp_path_factory.mktemp("results")
    ds = scan(3, 4).assign_attrs(telescope="SST", pixel_scale_arcsec=[0.059, 0.059],
                                 observer={"lon": 0.0, "lat": 7.1})
    ds["I_ca8542"].values[1, 2, 40] = -1e-9  # a negative radiance: masked in every result
    mem = radynversion.invert(ds, model=model_path, **KW)
    lazy = ds.radyn.invert(model=model_path, **KW)
    invert_to_zarr(ds, tmp / "out.zarr", model=model_path, progress=False, **KW)
    return {"memory": mem, "lazy": lazy, "store": xr.open_zarr(tmp / "out.zarr"), "path": tmp / "out.zarr"}


def _schema(ds: xr.Dataset) -> dict:
    return {name: (v.dims, v.dtype, v.attrs) for name, v in ds.data_vars.items()}


def test_every_front_door_gives_the_same_variables_and_attrs(results):
    mem, lazy, store = results["memory"], results["lazy"], results["store"]
    assert list(mem.data_vars) == ["log_ne", "log_T", "v", "misfit", "peak", "mask", "ood_score", "trusted"]
    assert "chunk_done" not in store.variables and "chunk" not in store.dims  # bookkeeping hidden
    for other in (lazy, store):
        assert _schema(other) == _schema(mem)
        assert set(other.coords) == set(mem.coords)
    assert lazy.attrs == mem.attrs
    # the store adds only its own bookkeeping attrs; everything else reads back identical
    assert {k: v for k, v in store.attrs.items() if k not in STORE_ATTRS} == mem.attrs
    assert set(store.attrs) - set(mem.attrs) == set(STORE_ATTRS) - {"radynversion_cluster"}  # the CLI adds it
    for attrs in (mem.attrs, store.attrs):
        fwhm = json.loads(attrs["instrument_fwhm_A"])  # JSON in both, never str(dict)
        assert set(fwhm) == {"halpha", "ca8542"} and all(isinstance(v, float) for v in fwhm.values())
        assert attrs["telescope"] == "SST" and json.loads(attrs["observer"]) == {"lat": 7.1, "lon": 0.0}
        assert len(attrs["model_sha256"]) == 64 and attrs["model"].endswith("model.pt")
    # and the same numbers
    store = store.load()
    for name in mem.data_vars:
        np.testing.assert_array_equal(store[name].values, mem[name].values)
    assert mem["mask"].values.sum() == 1 and mem["mask"].values[1, 2]
    # per-pixel trust: scores where inverted, and a masked pixel is never trusted
    assert mem["trusted"].dtype == bool and mem["ood_score"].dtype == np.float32
    assert np.isfinite(mem["ood_score"].values[~mem["mask"].values]).all()
    assert not mem["trusted"].values[1, 2] and mem.attrs["trust_level"] == pytest.approx(0.97)


def test_a_model_in_memory_is_identified_the_same_way(net):
    ds = scan(2, 2)
    mem = radynversion.invert(ds, model=net, **KW)
    lazy = ds.radyn.invert(model=net, **KW)
    assert mem.attrs == lazy.attrs and mem.attrs["model"] == "<in memory>"


def test_every_map_variable_has_units_that_a_sunpy_header_carries(results):
    import sunpy.map

    from radynversion.io import open_observation

    store = results["store"]
    dims = ("y", "x")
    for name, var in store.data_vars.items():
        assert "units" in var.attrs, name
    # a result of an observation read by radynversion.io keeps its map header: maps with units
    obs = open_observation([str(results["path"].parent / f) for f in _observation(results["path"].parent)])
    res = radynversion.invert(obs, model=results["store"].attrs["model"], **KW)
    expect = {"log_ne": "log(cm-3)", "log_T": "log(K)", "v": "km s-1", "misfit": "", "mask": "",
              "peak": "W Hz-1 sr-1 m-2", "ood_score": "", "trusted": ""}
    for name, bunit in expect.items():
        meta = map_header(res, variable=name)
        assert meta["BUNIT"] == bunit, name
        plane = res[name].sel(quantile=0.5).isel(height=20) if "quantile" in res[name].dims else res[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sunpy notes that log(K) is not an astropy unit
            m = sunpy.map.Map(np.asarray(plane.transpose(*dims).values, dtype=float), meta)
        if name == "v":
            assert m.unit == "km / s"
    with pytest.raises(radynversion.errors.ProfileSchemaError, match="no variable 'log_P'"):
        map_header(res, variable="log_P")


def _observation(tmp):
    """Both lines of a 3 x 4 scan as SSTRED cubes (every 5th tuning) in ``tmp``."""
    from radynversion.io.fits import write_sstred_cube
    from radynversion.lines import LINES

    names = []
    for ln in LINES:
        part = scan(3, 4)[[ln.var]].isel({ln.dim: slice(None, None, 5)})
        names.append(f"{ln.key}.fits")
        write_sstred_cube(tmp / names[-1], part, time=np.datetime64("2017-09-06T10:00:00"), time_axis=False,
                          centre_arcsec=(0.0, 0.0))
    return names


def test_the_cli_opens_a_store_without_bookkeeping_also_of_older_stores(results, tmp_path):
    import shutil

    import zarr

    old = tmp_path / "old.zarr"  # a store written before chunk_done moved out of the root group
    shutil.copytree(results["path"], old)
    flags = zarr.open_array(str(old / "bookkeeping" / "chunk_done"), mode="r")[:]
    shutil.rmtree(old / "bookkeeping")
    z = zarr.open_array(str(old / "chunk_done"), mode="w", shape=flags.shape, dtype="int8", zarr_format=2,
                        attributes={"_ARRAY_DIMENSIONS": ["chunk"]})
    z[:] = flags
    zarr.consolidate_metadata(str(old))
    assert "chunk_done" in xr.open_zarr(old)
    opened = open_result(old)
    assert "chunk_done" not in opened and set(opened.data_vars) == set(results["memory"].data_vars)
    assert cli.main(["plot", str(old), "--heights", "1.0", "--out", str(tmp_path / "maps")]) == 0
