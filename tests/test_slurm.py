"""SLURM for real (issue 28): Debian's slurm-wlm and munge on this machine, one node, one
partition; ``radynversion invert --slurm`` and ``synth --slurm`` (dask-jobqueue) against a
LocalCluster run; jobs refused by sbatch and jobs that die, each told in one line.

The module's fixture installs the packages with apt-get when they are missing (root only; the
tests are skipped, with the reason, where that or the daemons are impossible), writes a
slurm.conf for this machine (its hostname, CPUs and memory as ``slurmd -C`` reports them),
starts its own munged (own key and socket), slurmctld and slurmd on free ports, and stops them
by their process ids at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import xarray as xr
from synthetic import scan
from test_cluster import (
    INVERT_ARGS,
    N_CHUNKS,
    _cli,
    _data_diff,
    _free_port,
    _interrupt,
    _one_line_error,
    _run,
    _same_store,
)

from radynversion.config import to_toml
from radynversion.engine.cluster import CLUSTER_ATTR
from radynversion.engine.store import chunk_status
from radynversion.synth.factory import SynthConfig
from radynversion.synth.nlte import NLTEConfig

pytestmark = pytest.mark.slow

PARTITION = "radyn"
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scontrol", "scancel")


def _install() -> str | None:
    """Install slurm-wlm and munge if a daemon or client is missing; why not, if impossible."""
    if all(shutil.which(d) for d in DAEMONS):
        return None
    if os.geteuid() != 0:
        return "slurm-wlm/munge are not installed and installing them needs root"
    if shutil.which("apt-get") is None:
        return "slurm-wlm/munge are not installed and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300",
               "slurm-wlm", "munge"]
    p = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:  # an old package list: update it once
        subprocess.run(["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=300"], env=env,
                       capture_output=True, text=True, timeout=900)
        p = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0 or not all(shutil.which(d) for d in DAEMONS):
        lines = (p.stderr or p.stdout).strip().splitlines() or ["no output"]
        return f"apt-get install slurm-wlm munge failed: {lines[-1]}"
    return None


def _node_line() -> str:
    """This machine as slurm.conf describes a node (``slurmd -C``: hostname, CPUs, memory)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=60).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("NodeName="))
    keep = ("NodeName", "CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    return " ".join(f"{k}={fields[k]}" for k in keep if k in fields) + " NodeAddr=127.0.0.1 State=UNKNOWN"


class SlurmSite:
    """munged, slurmctld and slurmd of one single-node cluster under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "OMP_NUM_THREADS": "1"}
        # munged wants every directory above its socket open to all (pytest's are not)
        self.socket_dir = Path(tempfile.mkdtemp(prefix="radynversion-munge-"))
        os.chmod(self.socket_dir, 0o755)
        self.socket = self.socket_dir / "munge.socket"

    def write_conf(self) -> None:
        r = self.root
        for d in ("spool/ctld", "spool/d", "log", "jobs"):
            (r / d).mkdir(parents=True, exist_ok=True)
        node = _node_line()
        self.node = node.split()[0].split("=")[1]
        self.conf.write_text("\n".join([
            "ClusterName=radynversion-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={r}/spool/ctld",
            f"SlurmdSpoolDir={r}/spool/d",
            f"SlurmctldPidFile={r}/slurmctld.pid",
            f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log",
            f"SlurmdLogFile={r}/log/slurmd.log",
            "MailProg=/bin/true",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "DefMemPerCPU=1000",
            "ReturnToService=2",
            "SlurmdTimeout=60",
            "InactiveLimit=0",
            "KillWait=5",
            "MinJobAge=600",
            node,
            f"PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def _start(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")  # noqa: SIM115 - closed once started
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            cwd=self.root, start_new_session=True)
        log.close()

    def _tail(self, name: str) -> str:
        for f in (self.root / "log" / f"{name}.log", self.root / "log" / f"{name}.out"):
            if f.exists() and f.read_text().strip():
                return f.read_text().strip().splitlines()[-1]
        return "(no log)"

    def start(self) -> str | None:
        """Start the daemons; why not, if one does not come up."""
        r = self.root
        (r / "munge-key").mkdir(mode=0o700)
        key = r / "munge-key" / "munge.key"
        subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True, capture_output=True, timeout=60)
        socket_path = self.socket
        self._start("munged", ["munged", "--foreground", f"--socket={socket_path}", f"--key-file={key}",
                               f"--log-file={r}/log/munged.log", f"--pid-file={r}/munge-key/munged.pid",
                               f"--seed-file={r}/munge-key/munged.seed"])
        if not self._wait(lambda: socket_path.exists(), 30):
            return f"munged did not start: {self._tail('munged')}"
        self._start("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        if not self._wait(lambda: self._run(["scontrol", "ping"]).stdout.count("UP") > 0, 60):
            return f"slurmctld did not start: {self._tail('slurmctld')}"
        self._start("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        if not self._wait(lambda: self.node_state() == "idle", 90):
            return f"slurmd did not bring node {self.node} to idle (sinfo: {self.node_state()!r}): {self._tail('slurmd')}"
        return None

    def _wait(self, ok, timeout: float) -> bool:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs.values()):
                return False
            with contextlib.suppress(Exception):
                if ok():
                    return True
            time.sleep(0.5)
        return False

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)

    def node_state(self) -> str:
        return self._run(["sinfo", "-h", "-n", self.node, "-o", "%T"]).stdout.strip()

    def jobs(self) -> list[str]:
        return self._run(["squeue", "-h", "-o", "%i"]).stdout.split()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            ids = self.jobs()
            if ids:
                self._run(["scancel", *ids])
                self._wait(lambda: not self.jobs(), 30)
        for name in ("slurmd", "slurmctld", "munged"):  # by the process ids started here
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = _install()
    if why:
        pytest.skip(why)
    site = SlurmSite(tmp_path_factory.mktemp("slurm"))
    try:
        site.write_conf()
        why = site.start()
        if why:
            pytest.skip(why)
        yield site
    finally:
        site.stop()


def _cluster_toml(path: Path, slurm: SlurmSite, **extra: object) -> Path:
    settings = {"jobs": 2, "cores": 1, "memory": "2GB", "walltime": "00:15:00", "queue": PARTITION,
                "log_directory": str(slurm.root / "jobs"), "job_name": "rv-test", "worker_timeout": 180,
                **extra}
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    return path


def _run_slurm(cmd: list[str], slurm: SlurmSite, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    return _run(cmd, cwd, env=slurm.env)


def test_the_node_is_idle(slurm):
    assert slurm.node_state() == "idle"
    assert slurm.jobs() == []


def test_invert_on_slurm_equals_a_local_cluster(slurm, tmp_path, model_path):
    scan(6, 8).to_netcdf(tmp_path / "scan.nc")
    toml = _cluster_toml(tmp_path / "cluster.toml", slurm)

    def invert(out: str, *mode: object) -> list[str]:
        return _cli("invert", tmp_path / "scan.nc", "-o", tmp_path / out, "--model", model_path, "--samples", "64",
                    "--chunks", "y=1", "--precision", "fp32", "--no-progress", *mode)

    local, t_local = _run(invert("local.zarr", "--workers", "2"), tmp_path)
    assert local.returncode == 0, local.stderr[-2000:]
    p, t_slurm = _run_slurm(invert("slurm.zarr", "--slurm", "--cluster", toml), slurm, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["complete"]
    _same_store(tmp_path / "slurm.zarr", tmp_path / "local.zarr")
    diff = _data_diff(tmp_path / "slurm.zarr", tmp_path / "local.zarr", ("log_ne", "log_T", "v", "misfit"))
    assert diff == 0.0
    rec = json.loads(xr.open_zarr(tmp_path / "slurm.zarr").attrs[CLUSTER_ATTR])
    assert rec["mode"] == "slurm" and rec["settings"]["queue"] == PARTITION and rec["settings"]["jobs"] == 2
    assert sorted(p.name for p in (slurm.root / "jobs").glob("rv-test-*.err"))  # the jobs ran
    assert slurm._wait(lambda: not slurm.jobs(), 60), slurm.jobs()  # and were cancelled at the end
    print(f"\n[slurm] invert 6x8 pixels: LocalCluster {t_local:.1f} s, SLURM (2 jobs) {t_slurm:.1f} s, "
          f"max |diff| {diff}")


def test_synth_on_slurm_equals_a_local_cluster(slurm, tmp_path):
    cfg = tmp_path / "synth.toml"
    cfg.write_text(to_toml(SynthConfig(n=4, seed=11, shard_size=2, nlte=NLTEConfig(depth_points=60))))
    toml = _cluster_toml(tmp_path / "cluster.toml", slurm)

    def synth(out: str, *mode: object) -> list[str]:
        return _cli("synth", "--config", cfg, "--out", tmp_path / out, "--no-progress", *mode)

    local, t_local = _run(synth("local.zarr", "--workers", "2"), tmp_path)
    assert local.returncode == 0, local.stderr[-2000:]
    p, t_slurm = _run_slurm(synth("slurm.zarr", "--slurm", "--cluster", toml), slurm, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["shards"] == 2
    _same_store(tmp_path / "slurm.zarr", tmp_path / "local.zarr")
    xr.testing.assert_equal(xr.open_zarr(tmp_path / "slurm.zarr").load(), xr.open_zarr(tmp_path / "local.zarr").load())
    assert json.loads(xr.open_zarr(tmp_path / "slurm.zarr").attrs[CLUSTER_ATTR])["mode"] == "slurm"
    assert slurm._wait(lambda: not slurm.jobs(), 60), slurm.jobs()
    print(f"\n[slurm] synth 4 atmospheres: LocalCluster {t_local:.1f} s, SLURM (2 jobs) {t_slurm:.1f} s, stores equal")


# -- what fails is told in one line ----------------------------------------------------------------
@pytest.mark.parametrize(("setting", "told"), [
    ({"queue": "no-such-partition"}, "Invalid partition name specified"),
    ({"memory": "100TB"}, "Requested node configuration is not available"),
])
def test_a_job_sbatch_refuses_is_one_line(slurm, tmp_path, model_path, setting, told):
    scan(2, 2).to_netcdf(tmp_path / "scan.nc")
    toml = _cluster_toml(tmp_path / "cluster.toml", slurm, **setting)
    p, secs = _run_slurm(_cli("invert", tmp_path / "scan.nc", "-o", tmp_path / "o.zarr", "--model", model_path,
                              "--slurm", "--cluster", toml, "--no-progress"), slurm, tmp_path)
    last = _one_line_error(p, "invert")
    print(f"\n[told] {last}")
    assert last.startswith("radynversion invert: error: SLURM refused the worker job (") and last.endswith(told), last
    assert secs < 120 and slurm.jobs() == []


def test_a_job_that_never_starts_is_one_line(slurm, tmp_path, model_path):
    scan(2, 2).to_netcdf(tmp_path / "scan.nc")
    toml = _cluster_toml(tmp_path / "cluster.toml", slurm, jobs=1, worker_timeout=8,
                         job_extra_directives=["--begin=now+1hour"])  # accepted, then pending
    p, secs = _run_slurm(_cli("invert", tmp_path / "scan.nc", "-o", tmp_path / "o.zarr", "--model", model_path,
                              "--slurm", "--cluster", toml, "--no-progress"), slurm, tmp_path)
    last = _one_line_error(p, "invert")
    print(f"\n[told] {last}")
    assert re.search(r"no Dask worker joined the SLURM cluster's scheduler at tcp://\S+ within 8 s \(worker_timeout "
                     r"in the cluster settings\); SLURM job \d+ PENDING \(BeginTime\)$", last), last
    assert secs < 120
    assert slurm._wait(lambda: not slurm.jobs(), 30), slurm.jobs()  # the pending job was cancelled


def test_a_job_that_dies_before_its_worker_starts_is_one_line(slurm, tmp_path):
    cfg = tmp_path / "synth.toml"
    cfg.write_text(to_toml(SynthConfig(n=2, seed=11, shard_size=2, nlte=NLTEConfig(depth_points=60))))
    toml = _cluster_toml(tmp_path / "cluster.toml", slurm, jobs=1,
                         job_script_prologue=["echo no python on this node >&2", "exit 3"])
    p, secs = _run_slurm(_cli("synth", "--config", cfg, "--out", tmp_path / "s.zarr", "--slurm", "--cluster", toml,
                              "--no-progress"), slurm, tmp_path)
    last = _one_line_error(p, "synth")
    print(f"\n[told] {last}")
    assert re.search(r"no Dask worker joined the SLURM cluster's scheduler at tcp://\S+: SLURM job \d+ FAILED "
                     r"\(exitcode 3:0, reason NonZeroExitCode\); last line of \S+\.err: no python on this node$",
                     last), last
    assert secs < 120


def test_a_job_cancelled_mid_run_is_one_line(slurm, tmp_path):
    from radynversion.model import ModelConfig, RadynversionINN, save_checkpoint

    scan(N_CHUNKS, 8).to_netcdf(tmp_path / "scan.nc")
    model = save_checkpoint(tmp_path / "medium.pt",
                            RadynversionINN(ModelConfig(n_blocks=4, subnet_hidden=128, subnet_layers=2)))
    toml = _cluster_toml(tmp_path / "cluster.toml", slurm, jobs=1)
    store = tmp_path / "o.zarr"
    cancelled: list[list[str]] = []

    def scancel(_proc: subprocess.Popen) -> None:
        cancelled.append(slurm.jobs())
        slurm._run(["scancel", *cancelled[-1]])

    proc, acted = _interrupt(_cli("invert", tmp_path / "scan.nc", "-o", store, "--model", model, *INVERT_ARGS,
                                  "--slurm", "--cluster", toml), tmp_path,
                             ready=lambda: chunk_status(store).sum() >= 2, act=scancel, env=slurm.env)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert acted and cancelled[-1], "the run finished before its job could be cancelled"
    last = _one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), "invert")
    print(f"\n[told] {last}")
    assert re.search(rf"no Dask worker left on the SLURM cluster's scheduler at tcp://\S+, every SLURM job has "
                     rf"ended: SLURM job {cancelled[-1][0]} CANCELLED", last), last
    assert not xr.open_zarr(store).attrs["radynversion_complete"]
