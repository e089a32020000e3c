"""The training-set factory with real Lightweaver runs and a real Dask LocalCluster."""

import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import xarray as xr

from radynversion import CA8542, HALPHA
from radynversion.config import from_toml, to_toml
from radynversion.datasets import training_set
from radynversion.errors import ConfigError, StoreError
from radynversion.synth import NLTEConfig, falc_atmosphere, sample_atmosphere, synthesise
from radynversion.synth.factory import SynthConfig, run_synthesis, shard_status, store_digest
from radynversion.synth.prior import KINDS, PriorConfig

# A cheaper solver for factory tests (fewer depth points): the physics tests use the default.
FAST = NLTEConfig(depth_points=60)


@pytest.fixture(scope="module")
def falc_static():
    return synthesise(falc_atmosphere(), NLTEConfig(depth_points=0))


def _core(line, intensity):
    wl = line.synth_wavelengths()
    i = int(np.argmin(intensity))
    # parabola through the minimum and its neighbours for sub-grid precision
    y0, y1, y2 = intensity[i - 1 : i + 2]
    return wl[i] + 0.5 * line.synth_step_A * (y0 - y2) / (y0 - 2 * y1 + y2)


def test_falc_halpha_core_at_rest_and_in_absorption(falc_static):
    r = falc_static
    assert r.status == 0, r.message
    I = r.intensity["halpha"]
    assert _core(HALPHA, I) == pytest.approx(6562.80, abs=0.05)
    assert I.min() < 0.3 * I[[0, -1]].mean()  # a deep absorption line
    assert _core(CA8542, r.intensity["ca8542"]) == pytest.approx(8542.09, abs=0.05)
    # the stored electron density is the NLTE one: FAL-C's own (NLTE) ne within 0.25 dex
    h = np.linspace(0.5, 2.0, 7)
    falc = falc_atmosphere()
    from lightweaver.fal import Falc82

    ref = np.interp(h, Falc82().height[::-1] / 1e6, np.log10(Falc82().ne[::-1] * 1e-6))
    got = np.interp(h, __import__("radynversion").default_height_grid(), r.log_ne)
    np.testing.assert_allclose(got, ref, atol=0.25)
    assert falc.kind == "quiet"


def test_chromospheric_downflow_redshifts_ca8542(falc_static):
    atmos = falc_atmosphere()
    z = atmos.z_m / 1e6
    atmos.v_km_s = np.where((z > 0.8) & (z < 2.3), 10.0, 0.0)  # downflow (our sign) in the chromosphere
    r = synthesise(atmos, NLTEConfig(depth_points=0))
    assert r.status == 0, r.message
    shift = _core(CA8542, r.intensity["ca8542"]) - _core(CA8542, falc_static.intensity["ca8542"])
    expected = CA8542.center_air_A * 10.0 / 299792.458  # 0.285 A for 10 km/s
    assert shift > 0.5 * expected  # to the red
    assert r.v.max() == pytest.approx(10.0) and r.v.min() >= 0  # stored velocity keeps our sign


def test_prior_is_reproducible_and_covers_both_signs():
    a = sample_atmosphere(17, seed=5)
    b = sample_atmosphere(17, seed=5)
    np.testing.assert_array_equal(a.temperature_K, b.temperature_K)
    np.testing.assert_array_equal(a.v_km_s, b.v_km_s)
    draws = [sample_atmosphere(i, seed=1) for i in range(150)]
    kinds = {d.kind for d in draws}
    assert kinds == set(KINDS)
    ztr = np.array([d.params["z_tr_Mm"] for d in draws])
    lo, hi = PriorConfig().z_tr_range
    assert np.all((ztr >= lo) & (ztr <= hi)) and ztr.min() < 1.2 and ztr.max() > 2.0
    chrom_v = np.concatenate([d.v_km_s[(d.z_m > 0.5e6) & (d.z_m < d.params["z_tr_Mm"] * 1e6)] for d in draws])
    assert chrom_v.max() > 30 and chrom_v.min() < -10  # condensations and upflows
    cor = np.array([d.temperature_K[0] for d in draws])
    assert cor.min() < 2.5e6 and cor.max() > 1e7
    cor_v = np.array([d.v_km_s[0] for d in draws])
    assert cor_v.min() < -100  # evaporation


def _cfg(n=4, shard=2):
    return SynthConfig(n=n, seed=11, shard_size=shard, nlte=FAST)


def test_resume_equals_uninterrupted(tmp_path):
    cfg = _cfg()
    full, part = tmp_path / "full.zarr", tmp_path / "part.zarr"
    run_synthesis(full, cfg, workers=2, progress=False)
    # an interrupted run: only the first shard is written
    stats = run_synthesis(part, cfg, workers=2, progress=False, max_shards=1)
    assert stats["shards"] == 1 and shard_status(part).tolist() == [True, False]
    run_synthesis(part, cfg, workers=2, progress=False)
    assert shard_status(part).all()
    xr.testing.assert_identical(xr.open_zarr(full).load(), xr.open_zarr(part).load())
    assert store_digest(full) == store_digest(part)
    ts = training_set(full)
    assert ts.sizes["sample"] == int((xr.open_zarr(full).status == 0).sum())
    assert ts.I_halpha.attrs["units"] == "W / (m2 Hz sr)"
    assert ts.wl_halpha.attrs["wavelength_medium"] == "air"
    # a finished store: rerunning does nothing
    assert run_synthesis(part, cfg, workers=1, progress=False)["shards"] == 0


def test_store_refuses_other_config_or_foreign_dir(tmp_path):
    out = tmp_path / "t.zarr"
    run_synthesis(out, _cfg(n=1, shard=1), workers=1, progress=False)
    with pytest.raises(StoreError, match="different configuration"):
        run_synthesis(out, replace(_cfg(n=1, shard=1), seed=12), workers=1, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a Zarr store|not a radynversion training set"):
        run_synthesis(foreign, _cfg(n=1, shard=1), workers=1, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


_STARVED_SOLVE = """
import os, sys, threading, time
from radynversion.synth import NLTEConfig, falc_atmosphere, synthesise
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, shared below
cfg = NLTEConfig(depth_points=60)
atm = falc_atmosphere()
c0 = time.thread_time()
alone = synthesise(atm, cfg)
cpu = time.thread_time() - c0
assert alone.status == 0, alone.message
# a limit of twice the CPU time the solve needs, yet less than its wall time beside 3 busy threads
stop = False
def spin():
    while not stop:
        sum(range(1000))
busy = [threading.Thread(target=spin) for _ in range(3)]
for t in busy:
    t.start()
t0 = time.perf_counter()
starved = synthesise(atm, NLTEConfig(depth_points=60, max_seconds=2 * cpu))
wall = time.perf_counter() - t0
stop = True
cut = synthesise(atm, NLTEConfig(depth_points=60, max_seconds=0.05 * cpu))
print(starved.status, round(wall / cpu, 2), cut.status, cut.message)
"""


def test_ng_acceleration_converges_in_fewer_iterations_and_closer_to_a_tight_solve():
    atmos = sample_atmosphere(5, 0)  # 66 iterations without, 42 with (benchmarks/ng_acceleration.py)
    ng_cfg = NLTEConfig(ng_order=2, ng_period=5, ng_delay=30)
    plain, ng = synthesise(atmos, NLTEConfig()), synthesise(atmos, ng_cfg)
    ref = synthesise(atmos, replace(ng_cfg, j_tol=2.5e-4, pops_tol=5e-5, max_iterations=1000))
    assert plain.status == ng.status == ref.status == 0
    assert ng.iterations < plain.iterations

    def off(res):  # largest difference from the tight solve, fraction of each line's peak
        return max(np.max(np.abs(res.intensity[k] - i)) / i.max() for k, i in ref.intensity.items())

    assert off(ng) < off(plain) < 5e-3
    with pytest.raises(ConfigError, match="ng_period"):
        NLTEConfig(ng_order=3, ng_period=3)
    # stores made before the option existed (no ng_* in their attrs) read as "off"
    text = "\n".join(ln for ln in to_toml(SynthConfig()).splitlines() if not ln.startswith("ng_"))
    assert "ng_order" in to_toml(SynthConfig()) and "ng_order" not in text
    assert from_toml(SynthConfig, text) == SynthConfig()


def test_time_limit_counts_cpu_time_not_a_busy_machines_wall_clock():
    """A solve beside busy threads on its core takes several times its CPU time in wall time;
    the limit counts CPU time, so it still converges (a store does not depend on the load),
    while a limit below its CPU time still stops it."""
    out = subprocess.run([sys.executable, "-c", _STARVED_SOLVE], capture_output=True, text=True, check=True)
    status, slowdown, cut_status, *why = out.stdout.split()
    assert float(slowdown) > 2.0  # a wall-clock limit of 2x the CPU time would have cut it
    assert int(status) == 0
    assert int(cut_status) == 1 and "CPU-time limit" in " ".join(why)


def test_grown_store_equals_one_made_at_full_size(tmp_path):
    # 3 draws in shards of 2 (the last shard short), grown to 5: the short shard is recomputed
    full, grown = tmp_path / "full.zarr", tmp_path / "grown.zarr"
    run_synthesis(full, _cfg(n=5), workers=2, progress=False)
    run_synthesis(grown, _cfg(n=3), workers=2, progress=False)
    first = xr.open_zarr(grown).load()
    stats = run_synthesis(grown, _cfg(n=5), workers=2, progress=False)
    assert stats["shards"] == 2  # shard 1 (made short) and the new shard 2
    a, b = xr.open_zarr(full).load(), xr.open_zarr(grown).load()
    xr.testing.assert_identical(a, b)
    # the draws written before growing are unchanged (only the attrs' n differs)
    xr.testing.assert_equal(first.isel(sample=slice(0, 3)).drop_vars("shard_done"),
                            b.isel(sample=slice(0, 3)).drop_vars("shard_done"))
    # the consolidated summary was refreshed with the new shapes and configuration
    xr.testing.assert_identical(b, xr.open_zarr(grown, consolidated=True).load())
    xr.testing.assert_identical(training_set(full), training_set(grown))
    # a grown store is resumable and finished like any other
    assert run_synthesis(grown, _cfg(n=5), workers=1, progress=False)["shards"] == 0


def test_grow_before_synthesis_reads_new_draws_as_missing(tmp_path):
    out = tmp_path / "t.zarr"
    run_synthesis(out, _cfg(n=2), workers=1, progress=False)
    before = training_set(out)
    run_synthesis(out, _cfg(n=6), workers=1, progress=False, max_shards=0)
    assert shard_status(out).tolist() == [True, False, False]
    assert xr.open_zarr(out).sizes["sample"] == 6
    assert np.isnan(xr.open_zarr(out).status.values[2:]).all()  # -1 = not yet computed, masked
    xr.testing.assert_equal(before, training_set(out))  # the same draws; only the attrs say n = 6
    with pytest.raises(StoreError, match="never shrunk"):
        run_synthesis(out, _cfg(n=4), workers=1, progress=False)
    with pytest.raises(StoreError, match="different configuration"):
        run_synthesis(out, replace(_cfg(n=8), seed=12), workers=1, progress=False)
    assert xr.open_zarr(out).sizes["sample"] == 6


def _cli(*args):
    return [sys.executable, "-m", "radynversion.cli", *map(str, args)]


@pytest.mark.slow
def test_cli_killed_mid_run_resumes_to_identical_store(tmp_path):
    cfg_file = tmp_path / "cfg.toml"
    cfg_file.write_text(to_toml(_cfg(n=6, shard=2)))
    full, part = tmp_path / "full.zarr", tmp_path / "part.zarr"
    subprocess.run(_cli("synth", "--config", cfg_file, "--out", full, "--workers", 2, "--no-progress"), check=True)
    proc = subprocess.Popen(_cli("synth", "--config", cfg_file, "--out", part, "--workers", 2, "--no-progress"),
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (part / "shard_done").exists() and shard_status(part).any():
            break
        time.sleep(0.2)
    import os

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not shard_status(part).all()
    subprocess.run(_cli("synth", "--config", cfg_file, "--out", part, "--workers", 2, "--no-progress"), check=True)
    assert store_digest(full) == store_digest(part)
    xr.testing.assert_identical(xr.open_zarr(full).load(), xr.open_zarr(part).load())


def test_cli_synth_reports_json(tmp_path):
    cfg_file = tmp_path / "cfg.toml"
    cfg_file.write_text(to_toml(_cfg(n=1, shard=1)))
    out = subprocess.run(_cli("synth", "--config", cfg_file, "--out", tmp_path / "s.zarr", "--workers", 1,
                              "--no-progress"), check=True, capture_output=True, text=True)
    import json

    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["converged"] + res["not_converged"] + res["failed"] == 1


def test_cli_error_is_one_line(tmp_path):
    (tmp_path / "x.zarr").mkdir()
    (tmp_path / "x.zarr" / "junk").write_text("not zarr")
    p = subprocess.run(_cli("synth", "--n", 1, "--out", tmp_path / "x.zarr", "--workers", 1),
                       capture_output=True, text=True)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.strip().splitlines() if "warn" not in ln.lower()]
    assert lines[-1].startswith("radynversion synth: error:") and "x.zarr" in lines[-1]
    assert "Traceback" not in p.stderr
