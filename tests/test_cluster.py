"""Clusters for real (issue 28): a ``dask scheduler`` and ``dask worker`` processes on this
machine, as on a cluster; a worker and the client killed mid-run; and the failures that must end
in one line (a scheduler nobody listens on, workers that never arrive, every worker lost).

Every process a test starts is its own session (``start_new_session``) and is stopped by its
process id (its process group: the nanny and its worker) when the test ends, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from synthetic import scan

from radynversion import cli
from radynversion.config import to_toml
from radynversion.engine.cluster import CLUSTER_ATTR, ClusterSettings, record_cluster
from radynversion.engine.store import chunk_status, store_digest
from radynversion.errors import ConfigError
from radynversion.synth.factory import SynthConfig, shard_status
from radynversion.synth.nlte import NLTEConfig

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
DASK = str(Path(sys.executable).with_name("dask"))
#: an inversion slow enough per chunk to kill something between chunks: 12 chunks of 8 pixels
INVERT_ARGS = ["--samples", "256", "--batch-size", "1024", "--chunks", "y=1", "--precision", "fp32",
               "--no-progress"]
N_CHUNKS = 12
#: a training set of 12 atmospheres in 6 shards, on 60 depth points (about 1 s each)
SYNTH = SynthConfig(n=12, seed=11, shard_size=2, nlte=NLTEConfig(depth_points=60))


def _cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "radynversion.cli", *map(str, args)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 30) -> None:
    """Stop a process started in its own session, with everything in its process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    # a nanny's worker may outlive a nanny killed with SIGKILL: the group goes too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class DaskProcesses:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, as on a cluster."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.address = ""

    def _start(self, cmd: list[str], name: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=self.root,
                                start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def scheduler(self) -> str:
        file = self.root / "scheduler.json"
        proc = self._start([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                            "--scheduler-file", str(file)], "scheduler")
        deadline = time.monotonic() + 120
        while not file.exists() or not file.read_text().strip().endswith("}"):
            assert proc.poll() is None, (self.root / "scheduler.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the scheduler wrote no scheduler file in 120 s"
            time.sleep(0.2)
        self.address = json.loads(file.read_text())["address"]
        return self.address

    def worker(self, name: str) -> subprocess.Popen:
        return self._start([DASK, "worker", self.address, "--nthreads", "1", "--name", name, "--no-dashboard",
                            "--local-directory", str(self.root / name)], f"worker-{name}")

    def n_workers(self) -> int:
        from distributed import Client

        with Client(self.address, timeout="30s", set_as_default=False) as c:
            return len(c.nthreads())

    def wait_workers(self, n: int, timeout: float = 180) -> None:
        from distributed import Client

        with Client(self.address, timeout="30s", set_as_default=False) as c:
            c.wait_for_workers(n, timeout=timeout)

    def close(self) -> None:
        for proc in reversed(self.procs):  # workers first, the scheduler last
            _stop(proc)


@pytest.fixture
def dask_procs(tmp_path):
    procs = DaskProcesses(tmp_path)
    yield procs
    procs.close()


def _run(cmd: list[str], cwd: Path, timeout: float = 600,
         env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env or ENV, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return p, time.perf_counter() - t0


def _interrupt(cmd: list[str], cwd: Path, ready: Callable[[], bool], act: Callable[[subprocess.Popen], None],
               timeout: float = 300, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, bool]:
    """Start ``cmd``; once ``ready()``, call ``act(proc)`` (while the run is still going).
    Returns the process (running or not) and whether ``act`` was called in time."""
    proc = subprocess.Popen(cmd, env=env or ENV, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    acted = False
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        with contextlib.suppress(Exception):  # the store may be half-created
            if ready():
                act(proc)
                acted = True
                break
    return proc, acted


def _same_store(a: Path, b: Path) -> None:
    """The same data chunks, and the same attrs apart from the cluster's record."""
    assert store_digest(a, metadata=False) == store_digest(b, metadata=False)
    attrs = [{k: v for k, v in xr.open_zarr(s).attrs.items() if k != CLUSTER_ATTR} for s in (a, b)]
    assert attrs[0] == attrs[1]


def _data_diff(a: Path, b: Path, names: tuple[str, ...]) -> float:
    """Largest absolute difference of the variables ``names`` of two stores (NaN-aware)."""
    da, db = xr.open_zarr(a), xr.open_zarr(b)
    worst = 0.0
    for n in names:
        x, y = np.asarray(da[n].values, float), np.asarray(db[n].values, float)
        assert np.array_equal(np.isnan(x), np.isnan(y)), n
        if np.isfinite(x).any():
            worst = max(worst, float(np.nanmax(np.abs(x - y))))
    return worst


@pytest.fixture
def invert_inputs(tmp_path):
    from radynversion.model import ModelConfig, RadynversionINN, save_checkpoint

    scan(N_CHUNKS, 8).to_netcdf(tmp_path / "scan.nc")
    net = RadynversionINN(ModelConfig(n_blocks=4, subnet_hidden=128, subnet_layers=2))
    return tmp_path / "scan.nc", save_checkpoint(tmp_path / "medium.pt", net)


# -- settings and provenance (fast) ----------------------------------------------------------------
def test_cluster_settings_read_from_toml_and_refused_plainly(tmp_path):
    f = tmp_path / "cluster.toml"
    f.write_text('jobs = 4\ncores = 8\nmemory = "32GB"\nqueue = "compute"\naccount = "solar"\n'
                 'job_script_prologue = ["module load python", "source venv/bin/activate"]\n'
                 "worker_timeout = 600\n")
    s = ClusterSettings.from_file(f)
    assert (s.jobs, s.cores, s.queue, s.worker_timeout) == (4, 8, "compute", 600.0)
    assert s.job_script_prologue == ("module load python", "source venv/bin/activate")
    kw = s.cluster_kwargs()
    assert kw["job_script_prologue"][-2:] == ["module load python", "source venv/bin/activate"]
    assert kw["cores"] == 8 and kw["queue"] == "compute" and kw["account"] == "solar"
    for text, msg in [("queue_name = 'x'", "unknown key"), ("memory = 'lots'", "memory = 'lots'"),
                      ("walltime = '1 hour'", "walltime"), ("worker_timeout = 0", "worker_timeout")]:
        f.write_text(text + "\n")
        with pytest.raises(ConfigError, match=msg):
            ClusterSettings.from_file(f)


def test_the_cluster_is_recorded_in_the_store_and_resume_ignores_it(tmp_path, model_path):
    scan(2, 4).to_netcdf(tmp_path / "scan.nc")
    (tmp_path / "c.toml").write_text("connect_timeout = 5\n")
    base = ["invert", str(tmp_path / "scan.nc"), "-o", str(tmp_path / "o.zarr"), "--model", str(model_path),
            "--samples", "8", "--batch-size", "64", "--workers", "0", "--no-progress"]
    assert cli.main([*base, "--max-chunks", "1"]) == 0
    assert cli.main([*base, "--cluster", str(tmp_path / "c.toml")]) == 0  # resumed with other settings
    rec = json.loads(xr.open_zarr(tmp_path / "o.zarr").attrs[CLUSTER_ATTR])
    assert rec["mode"] == "threads" and rec["settings"]["connect_timeout"] == 5.0
    assert xr.open_zarr(tmp_path / "o.zarr").attrs["radynversion_complete"]
    again = record_cluster(tmp_path / "o.zarr", None, "scheduler", address="tcp://h:8786")
    assert json.loads(xr.open_zarr(tmp_path / "o.zarr").attrs[CLUSTER_ATTR]) == again


@pytest.mark.parametrize("command", ["invert", "synth"])
def test_a_scheduler_nobody_listens_on_is_one_line(command, tmp_path, model_path, capsys):
    address = f"tcp://127.0.0.1:{_free_port()}"
    (tmp_path / "c.toml").write_text("connect_timeout = 2\n")
    if command == "invert":
        scan(2, 2).to_netcdf(tmp_path / "scan.nc")
        argv = ["invert", str(tmp_path / "scan.nc"), "-o", str(tmp_path / "o.zarr"), "--model", str(model_path)]
    else:
        (tmp_path / "s.toml").write_text(to_toml(SynthConfig(n=2, shard_size=2)))
        argv = ["synth", "--config", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o.zarr")]
    t0 = time.monotonic()
    assert cli.main([*argv, "--scheduler", address, "--cluster", str(tmp_path / "c.toml"), "--no-progress"]) == 2
    assert time.monotonic() - t0 < 60
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"radynversion {command}: error: --scheduler {address}: no Dask scheduler answered within "
                       "2 s; start one there (`dask scheduler`) or correct the address (connect_timeout in the "
                       "cluster settings)"), err


# -- a scheduler and two workers, as on a cluster (slow) -------------------------------------------
@pytest.mark.slow
def test_invert_on_a_scheduler_survives_a_lost_worker_and_a_killed_client(tmp_path, dask_procs, invert_inputs):
    scan_nc, model = invert_inputs

    def invert(out: str, *mode: str) -> list[str]:
        return _cli("invert", scan_nc, "-o", tmp_path / out, "--model", model, *INVERT_ARGS, *mode)

    local, t_local = _run(invert("local.zarr", "--workers", "2"), tmp_path)
    assert local.returncode == 0, local.stderr[-2000:]
    address = dask_procs.scheduler()
    worker_a, worker_b = dask_procs.worker("a"), dask_procs.worker("b")
    dask_procs.wait_workers(2)
    scheduler = ["--scheduler", address]

    # the client killed mid-run, then the same command again: it resumes
    store = tmp_path / "resumed.zarr"
    proc, acted = _interrupt(invert("resumed.zarr", *scheduler), tmp_path,
                             ready=lambda: chunk_status(store).sum() >= 2,
                             act=lambda p: _stop(p, signal.SIGKILL))
    _stop(proc, signal.SIGKILL)
    assert acted, "the client finished before it could be killed"
    n_before = int(chunk_status(store).sum())
    assert 0 < n_before < N_CHUNKS
    again, t_resume = _run(invert("resumed.zarr", *scheduler), tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    stats = json.loads(again.stdout.strip().splitlines()[-1])
    assert stats["complete"] and stats["written"] == N_CHUNKS - n_before

    # one worker killed (with its nanny: a node lost) mid-run: the run completes on the other
    lost = tmp_path / "lost.zarr"
    t0 = time.perf_counter()
    proc, acted = _interrupt(invert("lost.zarr", *scheduler), tmp_path,
                             ready=lambda: chunk_status(lost).sum() >= 2,
                             act=lambda p: _stop(worker_b, signal.SIGKILL))
    out, err = proc.communicate(timeout=600)
    t_lost = time.perf_counter() - t0
    assert acted, "the run finished before a worker could be killed"
    assert proc.returncode == 0, err[-2000:]
    assert worker_b.poll() is not None and worker_a.poll() is None
    assert dask_procs.n_workers() == 1
    assert json.loads(out.strip().splitlines()[-1])["complete"]
    assert "Traceback" not in err

    names = ("log_ne", "log_T", "v", "misfit", "peak", "mask")
    for other in (store, lost):
        _same_store(other, tmp_path / "local.zarr")
        assert _data_diff(other, tmp_path / "local.zarr", names) == 0.0
        rec = json.loads(xr.open_zarr(other).attrs[CLUSTER_ATTR])
        assert rec["mode"] == "scheduler" and rec["scheduler"] == address
    print(f"\n[cluster] invert LocalCluster {t_local:.1f} s; resumed after the client was killed "
          f"{t_resume:.1f} s; a worker killed mid-run {t_lost:.1f} s; max |diff| vs LocalCluster 0")


@pytest.mark.slow
def test_synth_on_a_scheduler_survives_a_lost_worker_and_a_killed_client(tmp_path, dask_procs):
    cfg = tmp_path / "synth.toml"
    cfg.write_text(to_toml(SYNTH))

    def synth(out: str, *mode: str) -> list[str]:
        return _cli("synth", "--config", cfg, "--out", tmp_path / out, "--no-progress", *mode)

    local, t_local = _run(synth("local.zarr", "--workers", "2"), tmp_path)
    assert local.returncode == 0, local.stderr[-2000:]
    address = dask_procs.scheduler()
    worker_a, worker_b = dask_procs.worker("a"), dask_procs.worker("b")
    dask_procs.wait_workers(2)
    scheduler = ["--scheduler", address]

    resumed = tmp_path / "resumed.zarr"
    proc, acted = _interrupt(synth("resumed.zarr", *scheduler), tmp_path,
                             ready=lambda: shard_status(resumed).sum() >= 1,
                             act=lambda p: _stop(p, signal.SIGKILL))
    _stop(proc, signal.SIGKILL)
    assert acted, "the client finished before it could be killed"
    n_before = int(shard_status(resumed).sum())
    assert 0 < n_before < 6
    again, t_resume = _run(synth("resumed.zarr", *scheduler), tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["shards"] == 6 - n_before

    lost = tmp_path / "lost.zarr"
    t0 = time.perf_counter()
    proc, acted = _interrupt(synth("lost.zarr", *scheduler), tmp_path,
                             ready=lambda: shard_status(lost).sum() >= 1,
                             act=lambda p: _stop(worker_b, signal.SIGKILL))
    out, err = proc.communicate(timeout=600)
    t_lost = time.perf_counter() - t0
    assert acted, "the run finished before a worker could be killed"
    assert proc.returncode == 0, err[-2000:]
    assert worker_b.poll() is not None and worker_a.poll() is None and dask_procs.n_workers() == 1
    assert json.loads(out.strip().splitlines()[-1])["shards"] == 6

    for other in (resumed, lost):
        _same_store(other, tmp_path / "local.zarr")
        xr.testing.assert_equal(xr.open_zarr(other).load(), xr.open_zarr(tmp_path / "local.zarr").load())
    print(f"\n[cluster] synth LocalCluster {t_local:.1f} s; resumed after the client was killed "
          f"{t_resume:.1f} s; a worker killed mid-run {t_lost:.1f} s; stores equal")


# -- what fails is told in one line (slow: real scheduler and worker processes) ---------------------
def _one_line_error(p: subprocess.CompletedProcess, command: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr[-3000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith(f"radynversion {command}: error: "), p.stderr[-3000:]
    return last


@pytest.mark.slow
def test_workers_that_never_arrive_are_one_line(tmp_path, dask_procs, model_path):
    address = dask_procs.scheduler()  # and no worker
    (tmp_path / "c.toml").write_text("worker_timeout = 3\n")
    scan(2, 2).to_netcdf(tmp_path / "scan.nc")
    (tmp_path / "s.toml").write_text(to_toml(SynthConfig(n=2, shard_size=2)))
    for command, argv in [("invert", ["invert", tmp_path / "scan.nc", "-o", tmp_path / "o.zarr", "--model",
                                      model_path]),
                          ("synth", ["synth", "--config", tmp_path / "s.toml", "--out", tmp_path / "s.zarr"])]:
        p, secs = _run(_cli(*argv, "--scheduler", address, "--cluster", tmp_path / "c.toml", "--no-progress"),
                       tmp_path, timeout=300)
        last = _one_line_error(p, command)
        print(f"\n[told] {last}")
        assert last.endswith(f"no Dask worker joined the scheduler at {address} within 3 s (worker_timeout in "
                             "the cluster settings)"), last
        assert secs < 120


@pytest.mark.slow
def test_the_last_worker_lost_mid_run_is_one_line(tmp_path, dask_procs, invert_inputs):
    scan_nc, model = invert_inputs
    address = dask_procs.scheduler()
    only = dask_procs.worker("only")
    dask_procs.wait_workers(1)
    (tmp_path / "c.toml").write_text("worker_timeout = 5\n")
    store = tmp_path / "o.zarr"
    proc, acted = _interrupt(_cli("invert", scan_nc, "-o", store, "--model", model, *INVERT_ARGS, "--scheduler",
                                  address, "--cluster", tmp_path / "c.toml"), tmp_path,
                             ready=lambda: chunk_status(store).sum() >= 2,
                             act=lambda p: _stop(only, signal.SIGKILL))
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        _stop(proc)
    assert acted, "the run finished before its worker could be killed"
    last = _one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), "invert")
    print(f"\n[told] {last}")
    assert last.endswith(f"no Dask worker left on the scheduler at {address} for 5 s (worker_timeout in the "
                         "cluster settings)"), last
    assert not xr.open_zarr(store).attrs["radynversion_complete"]  # and resumable, as any interrupted store
