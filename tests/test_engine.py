"""Tests of radynversion.engine: chunked, lazy, resumable inversion on tiny random networks.

Fast tests use the threaded scheduler and one shared LocalCluster (2 workers x 1 thread);
the fault-injection tests (a worker killed mid-run, the CLI killed mid-write) are marked slow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr
from synthetic import scan, tiny_model

import radynversion
from radynversion import cli
from radynversion.engine import (
    ClusterSettings,
    chunk_status,
    invert_to_zarr,
    slurm_job_script,
    store_digest,
    store_status,
)
from radynversion.engine import invert as engine_invert
from radynversion.engine.core import DEFAULT_CHUNK_PIXELS, _split_for_work
from radynversion.engine.workers import clear_models, tune_malloc
from radynversion.errors import (
    CheckpointError,
    ConfigError,
    ProfileSchemaError,
    SelectionTooLargeError,
    StoreError,
)
from radynversion.io import open_observation
from radynversion.model import ModelConfig, RadynversionINN, invert, posterior, save_checkpoint
from radynversion.model.posterior import pass_layout, pixel_seeds
from radynversion.model.precision import (
    MAX_NOISE_RATIO,
    cpu_has_native_bf16,
    precision_noise_ratio,
    reduced_precisions,
    select_precision,
)

# the tests' chunks are deliberately smaller than a pass (padding must not change results)
pytestmark = pytest.mark.filterwarnings("ignore:invert. chunks of:UserWarning")

OUTPUTS = ("log_ne", "log_T", "v", "misfit", "peak", "mask")
#: small passes: the tests' chunks hold a few pixels, and every pass has the full padded shape
BATCH = 256


def assert_same(a: xr.Dataset, b: xr.Dataset, names=OUTPUTS) -> None:
    for name in names:
        np.testing.assert_array_equal(np.asarray(a[name].values), np.asarray(b[name].values), err_msg=name)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      env={"OMP_NUM_THREADS": "1"}) as cluster, \
            Client(cluster, set_as_default=False) as c:
        yield c


def observed_scan(ny: int = 5, nx: int = 6) -> xr.Dataset:
    """A scan with the metadata an observation carries (WCS keys, coordinate units)."""
    ds = scan(ny, nx)
    ds.attrs.update({"CTYPE1": "HPLN-TAN", "CUNIT1": "arcsec", "CDELT1": 0.057,
                     "DATE-OBS": "2014-09-06T16:50:00", "TELESCOP": "SST"})
    ds.x.attrs["units"] = "arcsec"
    ds.y.attrs["units"] = "arcsec"
    return ds


# -- the batched core -------------------------------------------------------------------------
def test_pass_layout():
    assert pass_layout(32, 256) == (8, 256, 320)
    assert pass_layout(100, 256) == (2, 200, 320)
    assert pass_layout(1000, 256) == (1, 256, 320)  # one pixel over 4 passes


@pytest.mark.parametrize("sampling", ["plain", "sobol"])
def test_posterior_is_exactly_per_pixel(net, sampling):
    ds = scan(3, 5)
    y, _ = radynversion.model.normalise_profiles(ds, fwhm_A=net.instrument_fwhm_A())
    ids = np.arange(15)
    ref = posterior(net, y, ids, samples=40, batch_size=BATCH, sampling=sampling)
    assert ref.quantiles.shape == (15, 5, 3, 50) and ref.misfit.shape == (15,)
    # any subset, order, batch size (also samples > batch_size: a pixel over several passes)
    perm = np.array([7, 3, 11, 0])
    for kwargs in ({"batch_size": BATCH}, {"batch_size": 40}, {"batch_size": 16}, {"batch_size": 4096}):
        sub = posterior(net, y[perm], ids[perm], samples=40, sampling=sampling, **kwargs)
        np.testing.assert_array_equal(sub.quantiles, ref.quantiles[perm])
        np.testing.assert_array_equal(sub.misfit, ref.misfit[perm])
    other = posterior(net, y, ids + 1, samples=40, batch_size=BATCH, sampling=sampling)
    assert not np.array_equal(other.quantiles, ref.quantiles)


def test_sobol_latents_are_standard_normal_balanced_and_per_pixel():
    from radynversion.model.posterior import pixel_latents

    z = pixel_latents("sobol", 12345, 1024, 150).double()
    assert z.shape == (1024, 150) and z.dtype == torch.float64
    # every coordinate is a randomly shifted (0, 1) net pushed through the inverse CDF: its
    # 1024 values fall one into each of the 1024 equal-probability bins of N(0, 1)
    from scipy.stats import norm

    bins = np.floor(norm.cdf(z.numpy()) * 1024).astype(int)
    assert all(np.array_equal(np.sort(bins[:, k]), np.arange(1024)) for k in range(150))
    # far better balanced than independent draws: the mean of 1024 points per coordinate
    plain = pixel_latents("plain", 12345, 1024, 150).double()
    assert float(z.mean(0).abs().max()) < 0.1 * float(plain.mean(0).abs().max())
    # the draws depend on the pixel's seed alone; the first m points are a prefix
    assert torch.equal(pixel_latents("sobol", 12345, 64, 150).double(), z[:64])
    assert not torch.equal(pixel_latents("sobol", 12346, 64, 150).double(), z[:64])
    with pytest.raises(ValueError, match="sampling"):
        pixel_latents("halton", 0, 4, 3)


def test_one_settings_object_for_every_entry_point(net, model_path, tmp_path):
    from radynversion.model.settings import InversionSettings

    ds = scan(2, 3)
    st = InversionSettings(samples=32, batch_size=BATCH, misfit_samples=8)
    assert InversionSettings().draws == 640 and InversionSettings(sampling="plain").draws == 1024
    mem = invert(ds, net, st)
    assert mem.attrs["sampling"] == "sobol" and mem.attrs["samples"] == 32
    # the same settings, as an object or as keywords, give the same numbers everywhere
    lazy = engine_invert(ds, net, chunks={"y": 1}, **dataclasses.asdict(st)).compute()
    np.testing.assert_array_equal(lazy.log_T.values, mem.log_T.values)
    acc = ds.radyn.invert(model=net, settings=st, chunks={"x": 2}).compute()
    np.testing.assert_array_equal(acc.log_T.values, mem.log_T.values)
    invert_to_zarr(ds, tmp_path / "s.zarr", model_path, st, progress=False)
    stored = xr.open_zarr(tmp_path / "s.zarr")
    assert stored.attrs["sampling"] == "sobol"
    plain = invert(ds, net, st, sampling="plain")
    assert plain.attrs["sampling"] == "plain" and not np.array_equal(plain.log_T.values, mem.log_T.values)
    with pytest.raises(StoreError, match="sampling"):  # a store is resumed only with its own draws
        invert_to_zarr(ds, tmp_path / "s.zarr", model_path, st.with_(sampling="plain"), progress=False)
    with pytest.raises(ConfigError, match="unknown setting.*sampels"):
        invert(ds, net, sampels=32)
    with pytest.raises(ConfigError, match="sampling 'halton'"):
        engine_invert(ds, net, sampling="halton")


def test_misfit_on_a_subset_of_the_draws_is_exact_per_pixel(net):
    """``misfit_samples``: the round trip of the first m draws of each pixel; the quantiles
    do not depend on it; the result is the same in any batching, also when a pixel spans
    several passes (samples > batch_size) and when its m draws do (m > batch_size)."""
    ds = scan(3, 5)
    y, _ = radynversion.model.normalise_profiles(ds, fwhm_A=net.instrument_fwhm_A())
    ids = np.arange(15)
    every = posterior(net, y, ids, samples=40, batch_size=BATCH, misfit_samples=None)
    assert np.array_equal(posterior(net, y, ids, samples=40, batch_size=BATCH, misfit_samples=40).misfit,
                          every.misfit)
    perm = np.array([7, 3, 11, 0])
    for m in (8, 24):
        ref = posterior(net, y, ids, samples=40, batch_size=BATCH, misfit_samples=m)
        np.testing.assert_array_equal(ref.quantiles, every.quantiles)
        assert not np.array_equal(ref.misfit, every.misfit)
        for bs in (BATCH, 40, 16, 4096):
            sub = posterior(net, y[perm], ids[perm], samples=40, batch_size=bs, misfit_samples=m)
            np.testing.assert_array_equal(sub.quantiles, ref.quantiles[perm])
            np.testing.assert_array_equal(sub.misfit, ref.misfit[perm])
        # what it means: the mean RMS round trip of the pixel's first m draws
        i = 7
        gen = torch.Generator().manual_seed(int(pixel_seeds(0, np.array([i]))[0]))
        with torch.inference_mode():
            z = torch.randn(40, net.n_z, generator=gen)
            y_rep = torch.as_tensor(y[i]).expand(40, -1)
            atm = net.x_to_atmosphere(net.reverse(net.pack_yz(y_rep, z)))[:m]
            y_fwd, _ = net.unpack_yz(net(net.atmosphere_to_x(atm))[0])
            expect = float(((y_fwd - y_rep[:m]) ** 2).mean(dim=1).sqrt().mean())
        assert ref.misfit[i] == pytest.approx(expect, rel=1e-5)
    with pytest.raises(ValueError, match="misfit_samples"):
        posterior(net, y, ids, samples=40, misfit_samples=0)


def test_misfit_samples_in_the_engine_and_its_store(net, model_path, tmp_path):
    ds = scan(4, 5)
    ref = invert(ds, net, samples=32, batch_size=BATCH, misfit_samples=8)
    assert ref.attrs["misfit_samples"] == 8
    out = engine_invert(ds, net, samples=32, batch_size=BATCH, chunks={"y": 3, "x": 2}, misfit_samples=8)
    assert out.attrs["misfit_samples"] == 8
    assert_same(out.compute(), ref, ("log_ne", "log_T", "v", "misfit"))
    default = invert(ds, net, samples=128, batch_size=BATCH)
    assert default.attrs["misfit_samples"] == 64  # DEFAULT_MISFIT_SAMPLES
    with pytest.raises(ConfigError, match="misfit_samples"):
        engine_invert(ds, net, samples=32, misfit_samples=0)
    kw = dict(model=model_path, samples=16, batch_size=BATCH, progress=False)
    invert_to_zarr(ds, tmp_path / "m.zarr", misfit_samples=4, **kw)
    assert xr.open_zarr(tmp_path / "m.zarr").attrs["misfit_samples"] == 4
    with pytest.raises(StoreError, match="misfit_samples"):
        invert_to_zarr(ds, tmp_path / "m.zarr", misfit_samples=8, **kw)


def test_tune_malloc_only_where_the_environment_fixed_the_trim_threshold():
    assert tune_malloc({}) is False  # glibc's own (dynamic) thresholds are left alone
    if sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION"):
        assert tune_malloc({"MALLOC_TRIM_THRESHOLD_": "65536"}) is True  # as Dask's nanny sets it


def test_posterior_quantiles_match_numpy_on_returned_samples(net):
    y, _ = radynversion.model.normalise_profiles(scan(1, 3), fwhm_A=net.instrument_fwhm_A())
    res = posterior(net, y, np.arange(3), samples=64, quantiles=(0.0, 0.1, 0.5, 1.0), batch_size=BATCH,
                    return_samples=True)
    assert res.samples.shape == (3, 64, 3, 50)
    expect = np.quantile(res.samples.astype(np.float64), [0.0, 0.1, 0.5, 1.0], axis=1).transpose(1, 0, 2, 3)
    np.testing.assert_allclose(res.quantiles, expect, rtol=1e-5, atol=1e-5)


def test_return_samples_guard(net):
    ds = scan(2, 2)
    with pytest.raises(SelectionTooLargeError, match="select fewer pixels"):
        invert(ds, net, samples=64, return_samples=True, max_samples_bytes=1000)
    with pytest.raises(SelectionTooLargeError, match=r"return_samples: 4 pixels x 64 samples"):
        engine_invert(ds, net, samples=64, return_samples=True, max_samples_bytes=1000)
    out = invert(ds, net, samples=16, return_samples=True, batch_size=BATCH)
    assert out.log_T_samples.dims == ("y", "x", "draw", "height") and out.log_T_samples.shape == (2, 2, 16, 50)
    lazy = engine_invert(ds, net, samples=16, return_samples=True, batch_size=BATCH, chunks={"y": 1})
    assert lazy.v_samples.chunks == ((1, 1), (2,), (16,), (50,))
    assert_same(lazy.compute(), out, ("log_T", "log_T_samples", "v_samples"))


def test_precision_modes_on_cpu(net):
    assert precision_noise_ratio(net, "fp32", n_probe=4, samples=32) == 0.0
    err = precision_noise_ratio(net, "bf16", n_probe=4, samples=32)
    assert np.isfinite(err) and err > 0
    with pytest.raises(ValueError, match="tf32"):
        posterior(net, np.zeros((1, 60), np.float32), np.arange(1), samples=4, precision="tf32")


def test_reduced_precisions_follow_the_hardware():
    assert reduced_precisions("cuda") == ("bf16", "tf32")
    assert reduced_precisions("cpu") == (("bf16",) if cpu_has_native_bf16() else ())


def test_auto_precision_weighs_arithmetic_against_sampling_error(net):
    """bf16 moves the quantiles by a small fraction of their Monte Carlo error; "auto" takes it
    only where it is fast (AMX, AVX-512 BF16 or CUDA) and within the tolerance, and says so in the output."""
    assert precision_noise_ratio(net, "fp32", n_probe=4, samples=64) == 0.0
    r = precision_noise_ratio(net, "bf16", n_probe=8, samples=256)
    assert 0.0 < r < MAX_NOISE_RATIO
    # the ratio is the arithmetic error over the sampling error of the quantiles: with more
    # draws the sampling error shrinks (~ 1 / sqrt(S)) and the ratio grows; measured with
    # 256 draws and scaled, or measured with 1024
    assert precision_noise_ratio(net, "bf16", n_probe=8, samples=1024) == pytest.approx(2 * r)
    direct = precision_noise_ratio(net, "bf16", n_probe=8, samples=1024, probe_samples=1024)
    assert 1.2 * r < direct < 3.5 * r
    fast = bool(reduced_precisions("cpu"))
    assert select_precision(net, max_noise_ratio=0.0) == "fp32"
    assert select_precision(net, max_noise_ratio=math.inf) == ("bf16" if fast else "fp32")
    assert select_precision(net, candidates=("tf32",), max_noise_ratio=math.inf) == "fp32"
    ds = scan(4, 4)
    auto = engine_invert(ds, net, samples=64, chunks={"y": 2}).compute()
    assert auto.attrs["precision"] == ("bf16" if fast else "fp32")
    # bf16 passes keep the engine's determinism: the same quantiles whatever the chunking
    bf = [engine_invert(ds, net, samples=64, precision="bf16", chunks=c, batch_size=BATCH).compute()
          for c in ({"y": 1}, {"y": 4})]
    assert_same(bf[0], bf[1])
    ref = invert(ds, net, samples=64, batch_size=BATCH, precision="fp32")
    assert ref.attrs["precision"] == "fp32"
    assert not np.array_equal(bf[0].log_T.values, ref.log_T.values)
    np.testing.assert_allclose(bf[0].log_T.values, ref.log_T.values, atol=0.05)


def test_compiled_passes_agree_with_eager_and_keep_the_engine_deterministic(net, tmp_path):
    """torch.compile'd passes: the same quantiles as eager ones to fp32 rounding; the engine,
    the in-memory API and the store agree bit for bit among themselves and over chunkings."""
    ds = scan(4, 4)
    eager = invert(ds, net, samples=64, batch_size=BATCH, precision="fp32")
    comp = invert(ds, net, samples=64, batch_size=BATCH, precision="fp32", compile=True)
    assert comp.attrs["compiled"] == "true" and eager.attrs["compiled"] == "false"
    for name in ("log_ne", "log_T"):
        np.testing.assert_allclose(comp[name].values, eager[name].values, atol=1e-4)
    vp = [np.sign(o.v.values) * np.log10(np.abs(o.v.values) + 1) for o in (comp, eager)]
    np.testing.assert_allclose(vp[0], vp[1], atol=1e-4)
    np.testing.assert_allclose(comp.misfit.values, eager.misfit.values, rtol=1e-4)
    lazy = [engine_invert(ds, net, samples=64, batch_size=BATCH, precision="fp32", compile=True,
                          chunks=c).compute() for c in ({"y": 1}, {"y": 4})]
    assert lazy[0].attrs["compiled"] == "true"
    assert_same(lazy[0], lazy[1])
    assert_same(lazy[0], comp, ("log_ne", "log_T", "v", "misfit"))
    stats = invert_to_zarr(ds, tmp_path / "c.zarr", net, samples=64, batch_size=BATCH, precision="fp32",
                           compile=True, chunks={"y": 2}, progress=False)
    assert stats["complete"]
    assert_same(xr.open_zarr(tmp_path / "c.zarr").load(), lazy[0])
    # a store made with compiled passes is not resumed with eager ones
    with pytest.raises(StoreError):
        invert_to_zarr(ds, tmp_path / "c.zarr", net, samples=64, batch_size=BATCH, precision="fp32",
                       chunks={"y": 2}, progress=False)


def test_compile_failure_is_one_clear_error_before_any_chunk(net, tmp_path, monkeypatch):
    """A machine whose C++ tool chain cannot build the kernels: ConfigError naming the cure,
    raised while planning, so no store is started."""
    from torch._inductor import config as inductor_config

    from radynversion.model.compiled import clear_compiled

    clear_compiled()
    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/c++",))
    other = tiny_model()  # a fresh network: nothing compiled for it yet
    try:
        with pytest.raises(ConfigError, match=r"compile: torch.compile of the model's sample_pixels failed.*--compile"):
            invert_to_zarr(scan(2, 2), tmp_path / "x.zarr", other, samples=16, batch_size=BATCH,
                           precision="fp32", compile=True, progress=False)
        assert not (tmp_path / "x.zarr" / "zarr.json").exists()
    finally:
        clear_compiled()


def test_matmul_mode_gate_never_flips_under_a_pass():
    """torch's TF32 switch is process-wide; concurrent passes of two modes must not see it flip."""
    from radynversion.model.posterior import _matmul_mode

    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    seen = []

    def run(tf32: bool) -> None:
        with _matmul_mode(tf32):
            first = matmul.fp32_precision
            time.sleep(0.02)
            seen.append((tf32, first, matmul.fp32_precision))

    threads = [threading.Thread(target=run, args=(i % 3 == 0,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 9
    assert all(a == b == ("tf32" if mode else "ieee") for mode, a, b in seen)
    assert matmul.fp32_precision == before


# -- the lazy engine ---------------------------------------------------------------------------
def test_model_invert_and_engine_agree_bit_for_bit(net):
    ds = scan(4, 5)
    ref = invert(ds, net, samples=32, batch_size=BATCH)
    out = engine_invert(ds, net, samples=32, batch_size=BATCH, chunks={"y": 3, "x": 2}).compute()
    assert_same(out, ref, ("log_ne", "log_T", "v", "misfit"))


def test_accessor_returns_lazy_dataset_chunked_like_input(net):
    ds = observed_scan(5, 6)
    ds.I_halpha.values[1, 2, 40] = np.nan  # one bad pixel
    ds = ds.chunk({"y": 2, "x": 4, "wl_halpha": 100, "wl_ca8542": 150})  # spectra split across chunks
    out = ds.radyn.invert(model=net, samples=16, batch_size=BATCH)
    assert isinstance(out.log_T.data, da.Array)  # lazy
    for name in ("log_ne", "log_T", "v"):
        assert out[name].dims == ("y", "x", "quantile", "height")
        assert out[name].chunks == ((2, 2, 1), (4, 2), (5,), (50,))
        assert out[name].dtype == np.float32 and out[name].attrs["units"]
    for name in ("misfit", "peak", "mask"):
        assert out[name].dims == ("y", "x") and out[name].chunks == ((2, 2, 1), (4, 2))
    assert out.height.attrs["units"] == "Mm" and out.x.attrs["units"] == "arcsec"
    np.testing.assert_allclose(out["quantile"], (0.05, 0.16, 0.5, 0.84, 0.95))
    assert out.attrs["CTYPE1"] == "HPLN-TAN" and out.attrs["samples"] == 16
    assert json.loads(out.attrs["input_units"])["I_halpha"]
    done = out.compute()
    assert done.mask.values[1, 2] and done.mask.sum() == 1
    assert np.isnan(done.log_T.values[1, 2]).all() and np.isnan(done.misfit.values[1, 2])
    good = ~done.mask.values
    assert np.isfinite(done.log_T.values[good]).all() and np.isfinite(done.misfit.values[good]).all()
    assert (np.diff(done.log_T.values[good], axis=1) >= 0).all()


def test_extra_dims_and_chunk_invariance_threaded(net):
    a = scan(4, 6)
    b = scan(4, 6, seed=7)
    ds = xr.concat([a, b], dim="time").transpose("time", "y", "x", ...)
    one = ds.radyn.invert(model=net, samples=24, batch_size=BATCH, chunks={"time": 1, "y": 4, "x": 6}).compute()
    two = ds.radyn.invert(model=net, samples=24, batch_size=BATCH, chunks={"time": 2, "y": 3, "x": 1}).compute()
    assert one.log_T.dims == ("time", "y", "x", "quantile", "height")
    assert_same(one, two)
    # the pixel index is global: the second time step alone, with its own indices, differs
    alone = b.radyn.invert(model=net, samples=24, batch_size=BATCH).compute()
    assert not np.array_equal(alone.log_T.values, one.log_T.values[1])


def test_one_big_input_chunk_is_cut_so_every_worker_gets_work(net):
    """A file opened with dask's byte-sized "auto" chunks is one chunk for a small scan (two
    for a full CRISP scan): the engine cuts the dims the user did not choose into slabs of
    at most DEFAULT_CHUNK_PIXELS pixels and at least two chunks per worker thread."""
    ds = scan(8, 6).chunk({"y": -1, "x": -1})
    out = ds.radyn.invert(model=net, samples=16, batch_size=BATCH)
    threads = os.cpu_count() or 1
    assert len(out.log_T.chunks[0]) * len(out.log_T.chunks[1]) >= min(2 * threads, 8)
    assert out.log_T.chunks[1] == (6,)  # slabs of whole rows
    ref = ds.radyn.invert(model=net, samples=16, batch_size=BATCH, chunks={"y": 8, "x": 6})
    assert ref.log_T.chunks[:2] == ((8,), (6,))  # the user's choice is kept
    assert_same(out.compute(), ref.compute())
    # a full-scan-sized chunk is cut to row slabs under the cap, keeping input boundaries
    cut = _split_for_work([(600, 400), (1000,)], [True, True], DEFAULT_CHUNK_PIXELS, 4)
    assert max(cut[0]) * 1000 <= DEFAULT_CHUNK_PIXELS and sum(cut[0]) == 1000 and cut[1] == (1000,)
    assert 600 in np.cumsum(cut[0])


def test_engine_warns_when_chunks_are_much_smaller_than_a_pass(net):
    with pytest.warns(UserWarning, match=r"chunks of ~2 pixels fill passes of 64 pixels"):
        scan(2, 2).radyn.invert(model=net, samples=16, batch_size=1024, chunks={"y": 1, "x": 2})


def test_engine_refuses_bad_input(net, tmp_path):
    with pytest.raises(ProfileSchemaError, match="missing variable I_ca8542"):
        scan(2, 2).drop_vars("I_ca8542").radyn.invert(model=net)
    with pytest.raises(ProfileSchemaError, match="unknown dims"):
        scan(2, 2).radyn.invert(model=net, chunks={"t": 1})
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        scan(2, 2).radyn.invert(model=tmp_path / "absent.pt")


def test_chunk_invariance_on_local_cluster(client, model_path, net):
    """Acceptance: two chunkings on a real LocalCluster (2 workers x 1 thread) give identical
    quantiles, equal to the threaded scheduler's and to the in-memory invert."""
    ds = scan(8, 9)
    kw = dict(samples=32, batch_size=BATCH, client=client)
    a = client.compute(engine_invert(ds, model_path, chunks={"y": 3, "x": 9}, **kw)).result()
    b = client.compute(engine_invert(ds, model_path, chunks={"y": 8, "x": 2}, **kw)).result()
    assert_same(a, b)
    ref = invert(ds, net, samples=32, batch_size=BATCH)
    assert_same(a, ref, ("log_ne", "log_T", "v", "misfit"))
    # any client: the accessor with the current client, computed by dask's default scheduler
    with client.as_current():
        c = ds.radyn.invert(model=model_path, samples=32, batch_size=BATCH, chunks={"y": 4}).compute()
    assert_same(c, a)
    # the model was loaded once per worker (by the plugin), on the CPU
    loaded = client.run(lambda: [str(k[1]) for k in
                                 __import__("radynversion.engine.workers", fromlist=["_"])._MODELS])
    assert sorted(loaded.values()) == [["cpu"], ["cpu"]]


# -- Zarr --------------------------------------------------------------------------------------
def test_zarr_store_is_resumable_and_complete(model_path, tmp_path):
    ds = observed_scan(5, 6)
    kw = dict(model=model_path, samples=16, batch_size=BATCH, chunks={"y": 2, "x": 3}, progress=False)
    whole = invert_to_zarr(ds, tmp_path / "whole.zarr", **kw)
    assert whole["complete"] and whole["chunks"] == 6 and whole["written"] == 6 and whole["pixels"] == 30
    part = invert_to_zarr(ds, tmp_path / "part.zarr", max_chunks=2, **kw)
    assert not part["complete"] and part["written"] == 2
    opened = xr.open_zarr(tmp_path / "part.zarr")
    assert opened.attrs["radynversion_complete"] is False
    assert chunk_status(tmp_path / "part.zarr").sum() == 2
    assert store_status(tmp_path / "part.zarr") == {"complete": False, "chunks_done": 2, "chunks": 6}
    rest = invert_to_zarr(ds, tmp_path / "part.zarr", **kw)
    assert rest["complete"] and rest["written"] == 4
    assert store_digest(tmp_path / "part.zarr") == store_digest(tmp_path / "whole.zarr")
    out = xr.open_zarr(tmp_path / "whole.zarr")
    assert out.attrs["radynversion_complete"] is True
    assert out.attrs["DATE-OBS"] == "2014-09-06T16:50:00" and out.x.attrs["units"] == "arcsec"
    assert out.attrs["model"] == str(model_path.resolve()) and len(out.attrs["model_sha256"]) == 64
    assert out.attrs["radynversion_version"] == radynversion.__version__
    assert out.log_T.chunks[:2] == ((2, 2, 1), (3, 3))
    ref = invert(ds, model_path, samples=16, batch_size=BATCH)
    assert_same(out, ref, ("log_ne", "log_T", "v", "misfit"))
    # a rerun of a complete store does nothing
    assert invert_to_zarr(ds, tmp_path / "whole.zarr", **kw)["written"] == 0


def test_zarr_store_refuses_foreign_or_mismatched(model_path, tmp_path):
    ds = scan(2, 3)
    kw = dict(model=model_path, samples=8, batch_size=BATCH, progress=False)
    invert_to_zarr(ds, tmp_path / "a.zarr", **kw)
    with pytest.raises(StoreError, match=r"a.zarr: was made with other inputs or settings \(seed"):
        invert_to_zarr(ds, tmp_path / "a.zarr", seed=1, **kw)
    ds.to_zarr(tmp_path / "foreign.zarr", zarr_format=2)
    with pytest.raises(StoreError, match="foreign.zarr: exists and is not a radynversion inversion"):
        invert_to_zarr(ds, tmp_path / "foreign.zarr", **kw)
    (tmp_path / "file.txt").write_text("hello")
    with pytest.raises(StoreError, match="file.txt: exists and is not a Zarr store"):
        invert_to_zarr(ds, tmp_path / "file.txt", **kw)
    assert (tmp_path / "file.txt").read_text() == "hello"


def test_zarr_store_of_another_scan_of_the_same_shape_is_refused(model_path, tmp_path):
    """A previous scan's store is neither resumed as if it held this scan nor overwritten."""
    first, second = tmp_path / "scan_t0.nc", tmp_path / "scan_t1.nc"
    scan(2, 3).to_netcdf(first)
    later = scan(2, 3)
    later["I_halpha"] = later["I_halpha"] * 1.1
    later.to_netcdf(second)
    kw = dict(model=model_path, samples=8, batch_size=BATCH, progress=False)
    out = tmp_path / "out.zarr"
    invert_to_zarr(open_observation(first, chunks={}), out, **kw)
    before = {str(f): f.read_bytes() for f in sorted(out.rglob("*")) if f.is_file()}
    with pytest.raises(StoreError, match=r"out.zarr: was made with other inputs .*input_source: store "
                                         r"\['.*scan_t0.nc'\] vs now \['.*scan_t1.nc'\]"):
        invert_to_zarr(open_observation(second, chunks={}), out, **kw)
    assert {str(f): f.read_bytes() for f in sorted(out.rglob("*")) if f.is_file()} == before
    assert invert_to_zarr(open_observation(first, chunks={}), out, **kw)["written"] == 0  # the same scan resumes


def test_zarr_store_resumes_the_same_file_named_otherwise_and_stores_from_before_input_checks(
        model_path, tmp_path, monkeypatch):
    """The input is identified by its absolute path (a relative name from another working
    directory is the same file); a store written before stores recorded their input resumes."""
    import zarr

    (tmp_path / "obs").mkdir()
    scan(2, 3).to_netcdf(tmp_path / "obs" / "scan.nc")
    kw = dict(model=model_path, samples=8, batch_size=BATCH, progress=False)
    out = tmp_path / "out.zarr"
    monkeypatch.chdir(tmp_path)
    invert_to_zarr(open_observation(Path("obs/scan.nc"), chunks={}), out, **kw)
    monkeypatch.chdir(tmp_path / "obs")
    assert invert_to_zarr(open_observation(Path("scan.nc"), chunks={}), out, **kw)["written"] == 0
    group = zarr.open_group(str(out), mode="r+")
    run = json.loads(group.attrs["radynversion_run"])
    del run["input_source"]
    group.attrs["radynversion_run"] = json.dumps(run)
    assert invert_to_zarr(open_observation(Path("scan.nc"), chunks={}), out, **kw)["written"] == 0


# -- the CLI ------------------------------------------------------------------------------------
def test_cli_invert_netcdf_in_process(model_path, tmp_path, capsys):
    ds = observed_scan(3, 4)
    ds.to_netcdf(tmp_path / "scan.nc")
    rc = cli.main(["invert", str(tmp_path / "scan.nc"), "-o", str(tmp_path / "out.zarr"), "--model",
                   str(model_path), "--samples", "8", "--quantiles", "0.1", "0.5", "0.9",
                   "--chunks", "y=2,x=4", "--batch-size", str(BATCH), "--workers", "0", "--no-progress",
                   "--misfit-samples", "4"])
    assert rc == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["complete"] and stats["chunks"] == 2
    out = xr.open_zarr(tmp_path / "out.zarr")
    np.testing.assert_allclose(out["quantile"], (0.1, 0.5, 0.9))
    assert out.attrs["TELESCOP"] == "SST" and out.attrs["misfit_samples"] == 4
    ref = invert(ds, model_path, samples=8, quantiles=(0.1, 0.5, 0.9), batch_size=BATCH, misfit_samples=4)
    assert_same(out, ref, ("log_ne", "log_T", "v", "misfit"))
    # radynversion plot OUT.zarr: maps as PNG next to the store
    assert cli.main(["plot", str(tmp_path / "out.zarr"), "--heights", "0.5", "1.5"]) == 0
    figs = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["figures"]
    assert figs and all((tmp_path / "out.zarr_plots" / "maps.png").samefile(f) for f in figs)
    assert cli.main(["plot", str(tmp_path / "scan.nc")]) == 2  # not an inversion store: one-line error


def test_cli_errors_are_one_line(model_path, tmp_path, capsys):
    ds = scan(2, 2)
    ds.to_netcdf(tmp_path / "scan.nc")
    (tmp_path / "taken.zarr").mkdir()
    (tmp_path / "taken.zarr" / "data.bin").write_bytes(b"x")
    base = ["invert", str(tmp_path / "scan.nc"), "--workers", "0", "--no-progress"]
    cases = [
        (["-o", str(tmp_path / "taken.zarr"), "--model", str(model_path)], "taken.zarr: exists and is not a"),
        (["-o", str(tmp_path / "o.zarr"), "--model", str(tmp_path / "nope.pt")], "nope.pt"),
        (["-o", str(tmp_path / "o.zarr"), "--model", str(model_path), "--chunks", "y:2"], "--chunks"),
    ]
    for extra, msg in cases:
        assert cli.main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and msg in err, err
    assert (tmp_path / "taken.zarr" / "data.bin").read_bytes() == b"x"


def test_slurm_job_script(capsys, tmp_path):
    opts = ClusterSettings(jobs=4, cores=8, memory="32GB", walltime="02:00:00", queue="gpu", account="solar",
                           gpus=1, job_extra_directives=("--constraint=a100",),
                           job_script_prologue=("module load cuda",))
    script = slurm_job_script(opts, scheduler="tcp://10.0.0.1:8786")
    for line in ("#SBATCH -p gpu", "#SBATCH -A solar", "#SBATCH --cpus-per-task=8", "#SBATCH -t 02:00:00",
                 "#SBATCH --gres=gpu:1", "#SBATCH --constraint=a100", "export OMP_NUM_THREADS=1",
                 "module load cuda"):
        assert line in script, line
    assert "#SBATCH --mem=30G" in script or "#SBATCH --mem=32G" in script
    worker = [ln for ln in script.splitlines() if "distributed.cli.dask_worker" in ln]
    assert len(worker) == 1 and "tcp://10.0.0.1:8786" in worker[0] and "--nthreads 8" in worker[0]
    assert "--nworkers" not in worker[0]  # one worker per job (per GPU)
    (tmp_path / "cluster.toml").write_text('queue = "short"\ncores = 4\n')
    rc = cli.main(["invert", "scan.nc", "-o", "out.zarr", "--slurm", "--cluster", str(tmp_path / "cluster.toml"),
                   "--gpus", "--print-job-script"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "#SBATCH -p short" in printed and "--gres=gpu:1" in printed and "--nthreads 4" in printed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_auto_precision_within_the_sampling_error(net):
    gpu = tiny_model().cuda()
    choice = select_precision(gpu)
    assert choice in ("fp32", "tf32", "bf16")
    assert precision_noise_ratio(gpu, choice) <= MAX_NOISE_RATIO
    ds = scan(4, 4)
    out = engine_invert(ds, gpu, samples=64, device="cuda").compute()
    assert out.attrs["device"] == "cuda" and out.attrs["precision"] == choice
    ref = engine_invert(ds, gpu, samples=64, device="cuda", precision="fp32").compute()
    for name in ("log_ne", "log_T"):
        np.testing.assert_allclose(out[name].values, ref[name].values, atol=0.05)
    vp = [np.sign(o.v.values) * np.log10(np.abs(o.v.values) + 1) for o in (out, ref)]
    np.testing.assert_allclose(vp[0], vp[1], atol=0.05)
    # bit-exact chunk invariance holds on the GPU too (fixed pass shapes)
    other = engine_invert(ds, gpu, samples=64, device="cuda", precision="fp32", chunks={"y": 1}).compute()
    assert_same(other, ref)
    clear_models()


# -- fault injection (slow) ---------------------------------------------------------------------
def _medium_model_path(tmp_path: Path) -> Path:
    """A network heavy enough that a chunk takes a noticeable fraction of a second."""
    net = RadynversionINN(ModelConfig(n_blocks=4, subnet_hidden=128, subnet_layers=2))
    return save_checkpoint(tmp_path / "medium.pt", net)


@pytest.mark.slow
def test_worker_killed_mid_run_loses_only_in_flight_chunks(tmp_path):
    from distributed import Client, LocalCluster

    mp = _medium_model_path(tmp_path)
    ds = scan(12, 8)
    kw = dict(model=mp, samples=256, batch_size=1024, chunks={"y": 1, "x": 8}, progress=False)
    ref = invert_to_zarr(ds, tmp_path / "ref.zarr", **kw)
    assert ref["complete"]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      env={"OMP_NUM_THREADS": "1"}) as cluster, Client(cluster, set_as_default=False) as c:
        result: dict = {}
        run = threading.Thread(target=lambda: result.update(
            invert_to_zarr(ds, tmp_path / "out.zarr", client=c, **kw)))
        run.start()
        killed = None
        deadline = time.monotonic() + 300
        while killed is None and time.monotonic() < deadline and run.is_alive():
            time.sleep(0.05)
            if not (tmp_path / "out.zarr").exists() or chunk_status(tmp_path / "out.zarr").sum() < 2:
                continue
            busy = [w for w, tasks in c.processing().items() if tasks]
            if busy:
                pids = c.run(os.getpid)
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed = (busy[0], int(chunk_status(tmp_path / "out.zarr").sum()))
        run.join(600)
    assert killed is not None, "the run finished before a worker could be killed"
    assert killed[1] < 12, "the worker was killed after the last chunk"
    assert result["complete"]
    assert store_digest(tmp_path / "out.zarr") == store_digest(tmp_path / "ref.zarr")


@pytest.mark.slow
def test_cli_killed_mid_write_resumes_to_identical_store(tmp_path):
    mp = _medium_model_path(tmp_path)
    observed_scan(12, 8).to_netcdf(tmp_path / "scan.nc")

    def command(out: str) -> list[str]:
        return [sys.executable, "-m", "radynversion.cli", "invert", str(tmp_path / "scan.nc"), "-o",
                str(tmp_path / out), "--model", str(mp), "--samples", "256", "--batch-size", "1024",
                "--chunks", "y=1", "--workers", "2", "--threads-per-worker", "1", "--no-progress"]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = subprocess.run(command("full.zarr"), env=env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]

    proc = subprocess.Popen(command("resumed.zarr"), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = tmp_path / "resumed.zarr"
    done_at_kill = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if store.exists() and chunk_status(store).sum() >= 2:
                done_at_kill = int(chunk_status(store).sum())
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(60)
    assert done_at_kill is not None, "the CLI finished before it could be killed"
    n_before = int(chunk_status(store).sum())
    assert 0 < n_before < 12, f"killed with {n_before} of 12 chunks done"
    assert xr.open_zarr(store).attrs["radynversion_complete"] is False

    again = subprocess.run(command("resumed.zarr"), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    stats = json.loads(again.stdout.strip().splitlines()[-1])
    assert stats["complete"] and stats["written"] == 12 - n_before
    assert store_digest(store) == store_digest(tmp_path / "full.zarr")
    assert_same(xr.open_zarr(store), xr.open_zarr(tmp_path / "full.zarr"))
