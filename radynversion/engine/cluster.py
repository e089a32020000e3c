"""Clusters for the engine and the training-set factory: a LocalCluster, one worker per GPU,
an existing scheduler, SLURM; and what is told when a cluster fails.

* :class:`ClusterSettings`: everything about the cluster that is not a command-line switch
  (timeouts; SLURM queue, account, walltime, memory, job prologue), read from the TOML file
  of ``--cluster cluster.toml`` and written into each store the run makes
  (:func:`record_cluster`, the ``radynversion_cluster`` attr);
* :func:`local_cluster`: ``N`` worker processes x ``T`` threads (BLAS/OpenMP pinned to one
  thread per Dask thread), or, with ``gpus=True``, dask-cuda's ``LocalCUDACluster`` (one
  worker per visible GPU, each seeing its own GPU as device 0);
* :func:`slurm_cluster`, :func:`slurm_job_script`: a dask-jobqueue ``SLURMCluster`` whose
  jobs each run one worker (``--gpus``: one GPU per job, so again one worker per GPU);
  :func:`slurm_job_script` renders the batch script without starting a scheduler;
* :func:`cluster_client`: the context manager the CLI uses to pick one of these. It waits for
  the first worker and then watches the run; every way the cluster can fail ends in one
  :class:`~radynversion.errors.ClusterError` line (never a hang):

  - a scheduler address nobody listens on (``connect_timeout``);
  - workers that never arrive (``worker_timeout``), with the state of the SLURM jobs;
  - a SLURM job that ``sbatch`` refuses (its ``sbatch: error:`` line), or that ends before its
    worker joins or while it is the last worker (its state, exit code and last log line);
  - every worker gone for ``worker_timeout`` during the run, or a task that killed
    ``distributed.scheduler.allowed-failures`` workers in turn.

  Losing some workers is not a failure: their tasks run again on the others, and the store
  equals that of an uninterrupted run.
* :func:`close_cluster` closes what :func:`cluster_client` started without killing workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ClusterError, ConfigError

__all__ = ["WORKER_ENV", "WORKER_EXIT_TIMEOUT", "ClusterSettings", "local_cluster", "slurm_job_script",
           "slurm_cluster", "slurm_job_states", "cluster_client", "close_cluster", "record_cluster",
           "CLUSTER_ATTR"]

#: environment of worker processes: one BLAS/OpenMP thread per Dask thread
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: seconds a local worker process is given to exit when its cluster closes. distributed's nanny
#: gives 4 s and then kills it, with a warning; a worker that imported torch, xarray and
#: Lightweaver takes 4-5 s to exit on a busy 2-core machine.
WORKER_EXIT_TIMEOUT = 60.0
#: the store attr that records the cluster of the run that last wrote the store
CLUSTER_ATTR = "radynversion_cluster"
#: SLURM job states in which a job may still run (or be running) its worker
_SLURM_ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
                           "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT"})
#: seconds between two looks at the workers present
_POLL = 1.0
#: seconds between two questions to SLURM about the worker jobs (one squeue for all of them)
_SLURM_POLL = 5.0


@dataclass(frozen=True)
class ClusterSettings:
    """How a run reaches its workers: the ``--cluster`` TOML file (flat keys, all optional).

    The mode is the command line's (``--workers N``, ``--scheduler ADDRESS`` or ``--slurm``);
    these settings hold the rest, and are written into the run's store
    (:data:`CLUSTER_ATTR`). Example ``cluster.toml`` for a SLURM site::

        jobs = 8                      # 8 jobs, one worker each
        cores = 8                     # threads of each worker = CPUs per job
        memory = "32GB"
        walltime = "04:00:00"
        queue = "compute"             # sbatch -p
        account = "solar"             # sbatch -A
        job_extra_directives = ["--constraint=icelake", "--qos=normal"]
        job_script_prologue = ["module load python/3.11",
                               "source $HOME/radynversion/.venv/bin/activate"]
        log_directory = "logs"        # one .out/.err per job
        worker_timeout = 1800         # the queue may take a while

    Attributes
    ----------
    connect_timeout : float
        Seconds to reach the scheduler of ``--scheduler`` before giving up [s].
    worker_timeout : float
        Seconds to wait for the first worker (``--scheduler``, ``--slurm``: include the time a
        job may wait in the queue), and the longest a run may go on with no worker at all [s].
    jobs : int
        SLURM jobs (= workers).
    cores : int, optional
        CPU cores per job (= threads of its worker); default ``--threads-per-worker`` for
        ``invert``, 1 for ``synth``.
    memory : str
        Memory per job (``sbatch --mem``; e.g. ``"16GB"``).
    walltime : str
        ``HH:MM:SS`` per job (``sbatch -t``).
    queue, account : str, optional
        SLURM partition (``-p``) and account (``-A``).
    gpus : int
        GPUs per job (``--gres=gpu:N``); ``--gpus`` on the command line asks for 1.
    job_extra_directives : tuple of str
        Further ``#SBATCH`` directives (e.g. ``"--constraint=a100"``, ``"--qos=long"``).
    job_script_prologue : tuple of str
        Shell lines each job runs before its worker (``module load``, activating the venv).
    python : str, optional
        Python of the workers (default: the one running the command; the job must see the
        same file system path).
    local_directory : str, optional
        Worker scratch directory (e.g. ``"$TMPDIR"``).
    log_directory : str, optional
        Directory of the jobs' stdout/stderr (default: SLURM's ``slurm-JOBID.out`` in the
        submission directory).
    interface : str, optional
        Network interface of the scheduler and workers (e.g. ``"ib0"``), when the default
        route is not the one the compute nodes reach.
    job_name : str
        SLURM job name.
    """

    connect_timeout: float = 30.0
    worker_timeout: float = 300.0
    jobs: int = 1
    cores: int | None = None
    memory: str = "16GB"
    walltime: str = "01:00:00"
    queue: str | None = None
    account: str | None = None
    gpus: int = 0
    job_extra_directives: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    python: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    interface: str | None = None
    job_name: str = "radynversion"

    def __post_init__(self) -> None:
        if self.jobs < 1 or (self.cores is not None and self.cores < 1) or self.gpus < 0:
            raise ConfigError(f"ClusterSettings: jobs = {self.jobs}, cores = {self.cores}, gpus = "
                              f"{self.gpus}; expected jobs, cores >= 1 and gpus >= 0")
        if not (self.connect_timeout > 0 and self.worker_timeout > 0):
            raise ConfigError(f"ClusterSettings: connect_timeout = {self.connect_timeout}, worker_timeout = "
                              f"{self.worker_timeout}; expected seconds > 0")
        if not re.fullmatch(r"(\d+-)?\d+(:\d\d){0,2}", self.walltime):
            raise ConfigError(f"ClusterSettings: walltime = {self.walltime!r}; expected [D-]HH:MM:SS")
        from dask.utils import parse_bytes

        try:
            parse_bytes(self.memory)
        except (ValueError, TypeError):
            raise ConfigError(f"ClusterSettings: memory = {self.memory!r}; expected a size such as "
                              "'16GB'") from None

    @classmethod
    def from_file(cls, path: str | Path) -> ClusterSettings:
        """Read the settings from a TOML file (flat keys; unknown keys are an error)."""
        from ..config import load_toml

        return load_toml(cls, path)

    def cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``dask_jobqueue.SLURMCluster`` (and of its job class)."""
        directives = list(self.job_extra_directives)
        if self.gpus:
            directives.append(f"--gres=gpu:{self.gpus}")
        prologue = [f"export {k}={v}" for k, v in WORKER_ENV.items()] + list(self.job_script_prologue)
        kw: dict[str, Any] = {
            "cores": self.cores or 1,
            "processes": 1,
            "memory": self.memory,
            "walltime": self.walltime,
            "queue": self.queue,
            "account": self.account,
            "job_extra_directives": directives,
            "job_script_prologue": prologue,
            "python": self.python,
            "local_directory": self.local_directory,
            "log_directory": self.log_directory,
            "interface": self.interface,
            "job_name": self.job_name,
        }
        return {k: v for k, v in kw.items() if v is not None}


def local_cluster(workers: int | None = None, threads_per_worker: int = 1, gpus: bool = False) -> Any:
    """A LocalCluster of ``workers`` processes x ``threads_per_worker`` threads (default: one
    worker per core), or with ``gpus`` a dask-cuda LocalCUDACluster (one worker per GPU).

    Raises
    ------
    ConfigError
        ``gpus`` without dask-cuda or without a CUDA device.
    """
    if gpus:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise ConfigError("--gpus needs dask-cuda (pip install 'radynversion[gpu]')") from None
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--gpus: torch sees no CUDA device on this machine")
        return LocalCUDACluster(threads_per_worker=threads_per_worker, dashboard_address=":0")
    from distributed import LocalCluster

    if threads_per_worker < 1 or (workers is not None and workers < 1):
        raise ConfigError(f"workers = {workers}, threads per worker = {threads_per_worker}; "
                          "expected >= 1")
    n = workers or max(1, (os.cpu_count() or 1) // threads_per_worker)
    return LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True,
                        dashboard_address=":0", env=dict(WORKER_ENV))


def _jobqueue() -> Any:
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError("--slurm needs dask-jobqueue (pip install 'radynversion[cluster]')") from None
    return dask_jobqueue


def slurm_job_script(settings: ClusterSettings, scheduler: str = "tcp://SCHEDULER:8786") -> str:
    """The batch script each SLURM job would run (no scheduler is started).

    Parameters
    ----------
    settings : ClusterSettings
    scheduler : str
        Address written into the worker command (the real one is filled in by
        :func:`slurm_cluster`).
    """
    _jobqueue()
    from dask_jobqueue.slurm import SLURMJob

    kw = settings.cluster_kwargs()
    kw.pop("interface", None)  # resolved on the node; not needed to render the script
    name = kw.pop("job_name")
    return SLURMJob(scheduler=scheduler, name="radynversion-worker", job_name=name, **kw).job_script()


def _sbatch_refusal(text: str) -> str:
    """The words of ``sbatch``'s output that say why it refused a job."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("allocation failure:"):
            return ln.split(":", 1)[1].strip()
        if ln.startswith("sbatch: error:"):
            return ln.split(":", 2)[2].strip().removeprefix("Batch job submission failed: ")
    return lines[-1][:240] if lines else "no reason given"


def _sbatch_test(script: str, settings: ClusterSettings) -> None:
    """``sbatch --test-only`` of the job script: a ClusterError with SLURM's reason if it would be
    refused (no such partition or account, more memory or cores than any node has, ...)."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="radynversion-job-") as f:
        f.write(script)
        f.flush()
        try:
            p = subprocess.run(["sbatch", "--test-only", f.name], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ClusterError(f"--slurm: sbatch --test-only did not answer ({type(err).__name__})") from None
    if p.returncode != 0:
        raise ClusterError(f"SLURM refused the worker job ({_job_summary(settings)}): "
                           f"{_sbatch_refusal(p.stderr + p.stdout)}")


def _job_summary(settings: ClusterSettings) -> str:
    cpus = settings.cores or 1
    return (f"partition {settings.queue or '(default)'}, {cpus} CPU{'s' if cpus > 1 else ''}, {settings.memory}, "
            f"{settings.walltime} per job")


def slurm_cluster(settings: ClusterSettings) -> Any:
    """A dask-jobqueue SLURMCluster of ``settings.jobs`` jobs (one worker each), submitted.

    Raises
    ------
    ConfigError
        dask-jobqueue is missing or ``sbatch`` is not on ``PATH``.
    ClusterError
        ``sbatch`` refused a job (e.g. no such partition, more memory than any node has).
    """
    _jobqueue()
    from dask_jobqueue import SLURMCluster

    if shutil.which("sbatch") is None:
        raise ConfigError("--slurm: sbatch is not on PATH; run on a SLURM login node (see the job "
                          "script with --print-job-script)")
    cluster = SLURMCluster(scheduler_options={"dashboard_address": ":0"}, **settings.cluster_kwargs())
    try:
        # scale() submits in the background and only logs a refusal: ask sbatch first
        _sbatch_test(cluster.job_script(), settings)
        cluster.scale(jobs=settings.jobs)
        deadline = time.monotonic() + settings.worker_timeout
        while len(cluster.workers) < settings.jobs and time.monotonic() < deadline:  # submissions done
            time.sleep(0.2)
        refused = [name for name, job in dict(cluster.workers).items() if not getattr(job, "job_id", None)]
        if refused or len(cluster.workers) < settings.jobs:
            _sbatch_test(cluster.job_script(), settings)  # the reason, if sbatch still refuses
            raise ClusterError(f"SLURM did not take {len(refused) or settings.jobs} of {settings.jobs} worker jobs "
                               f"({_job_summary(settings)}) within {settings.worker_timeout:g} s; see the "
                               "sbatch error logged above")
    except BaseException:
        close_cluster(cluster)
        raise
    return cluster


def _slurm_job_ids(cluster: Any) -> list[str]:
    return [str(j.job_id) for j in list(dict(getattr(cluster, "workers", {})).values())
            if getattr(j, "job_id", None)]


def slurm_job_states(job_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """``scontrol show job`` of each job: ``{job_id: {"JobState": ..., "Reason": ...,
    "ExitCode": ..., "StdErr": ..., ...}}``; ``JobState = "GONE"`` for a job SLURM no longer
    knows (ended more than ``MinJobAge`` ago)."""
    out: dict[str, dict[str, str]] = {}
    for j in job_ids:
        try:
            p = subprocess.run(["scontrol", "show", "job", "-o", str(j)], capture_output=True, text=True,
                               timeout=30)
        except (OSError, subprocess.TimeoutExpired) as err:
            out[j] = {"JobState": "UNKNOWN", "Reason": type(err).__name__}
            continue
        if p.returncode != 0:
            out[j] = {"JobState": "GONE", "Reason": " ".join(p.stderr.split()) or "unknown"}
            continue
        out[j] = dict(re.findall(r"(\w[\w/:]*)=(\S*)", p.stdout))
        out[j]["JobState"] = out[j].get("JobState", "UNKNOWN").split("+")[0]
    return out


def _last_line(path: str | None) -> str | None:
    if not path or path == "(null)":
        return None
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][:240] if lines else "(empty)"


def _log_path(pattern: str, job_id: str, info: dict[str, str]) -> str:
    """A job's ``StdErr``/``StdOut`` as ``scontrol`` shows it, its ``%`` patterns filled in."""
    user = info.get("UserId", "").split("(")[0]
    values = {"j": job_id, "J": job_id, "A": job_id, "x": info.get("JobName", ""), "u": user,
              "N": info.get("BatchHost", info.get("NodeList", "")), "%": "%"}
    return re.sub(r"%(\w|%)", lambda m: values.get(m.group(1), m.group(0)), pattern)


def _describe_job(job_id: str, info: dict[str, str]) -> str:
    state = info.get("JobState", "UNKNOWN")
    text = f"SLURM job {job_id} {state}"
    details = [f"{k.lower()} {info[k]}" for k in ("ExitCode", "Reason") if info.get(k) not in (None, "None", "")]
    if details:
        text += f" ({', '.join(details)})"
    logs = list(dict.fromkeys(_log_path(p, job_id, info) for p in (info.get("StdErr"), info.get("StdOut")) if p))
    for log in logs:  # the job's stderr, else its stdout (SLURM's default: one file for both)
        last = _last_line(log)
        if last is not None and (last != "(empty)" or log == logs[-1]):
            text += f"; last line of {log}: {last}"
            break
    return text


def _squeue(job_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``{job_id: (state, reason)}`` of ``job_ids`` in one ``squeue`` call (``GONE``: SLURM no
    longer knows the job; ``UNKNOWN``: squeue did not answer)."""
    try:
        p = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%r"],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {j: ("UNKNOWN", "squeue did not answer") for j in job_ids}
    if p.returncode != 0 and "invalid job id" not in p.stderr.lower():
        return {j: ("UNKNOWN", " ".join(p.stderr.split())) for j in job_ids}
    found = {}
    for line in p.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            found[parts[0]] = (parts[1], parts[2])
    return {j: found.get(j, ("GONE", "no longer known to SLURM")) for j in job_ids}


class _SlurmJobs:
    """The worker jobs of a SLURMCluster, asked of SLURM at most every :data:`_SLURM_POLL` s."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self._asked = -float("inf")
        self._answer: tuple[bool, str] = (False, "")

    def ended(self, fresh: bool = False) -> tuple[bool, str]:
        """Whether every job has ended, and what SLURM says of them (state, reason; for ended
        jobs their exit code and the last line of their log)."""
        if not fresh and time.monotonic() - self._asked < _SLURM_POLL:
            return self._answer
        self._asked = time.monotonic()
        ids = _slurm_job_ids(self.cluster)
        states = _squeue(ids) if ids else {}
        ended = bool(states) and all(st not in _SLURM_ACTIVE and st != "UNKNOWN" for st, _ in states.values())
        if ended:
            described = "; ".join(_describe_job(j, info) for j, info in slurm_job_states(ids).items())
        else:
            described = "; ".join(f"SLURM job {j} {st}" + (f" ({why})" if why and why != "None" else "")
                                  for j, (st, why) in states.items())
        self._answer = (ended, described)
        return self._answer


def close_cluster(cluster: Any, timeout: float = WORKER_EXIT_TIMEOUT) -> None:
    """Close a cluster this process started, letting its worker processes exit on their own.

    The nannies of a local cluster (LocalCluster, LocalCUDACluster) are closed first, with
    ``timeout`` seconds for their worker processes to exit, then the cluster itself; other
    clusters (SLURM jobs: cancelled) are closed as they are. Close any client of the cluster
    first.
    """
    try:
        from distributed import Nanny
    except ImportError:  # pragma: no cover
        Nanny = ()  # type: ignore[assignment,misc]  # noqa: N806
    nannies = [w for w in dict(getattr(cluster, "workers", {})).values() if isinstance(w, Nanny)]
    if nannies and not getattr(cluster, "asynchronous", False):
        async def _close_nannies() -> None:
            await asyncio.gather(*(n.close(timeout=timeout) for n in nannies), return_exceptions=True)

        with contextlib.suppress(Exception):  # whatever happens, cluster.close() still runs
            cluster.sync(_close_nannies)
    cluster.close()


def _connect(address: str, settings: ClusterSettings) -> Any:
    """A client of the scheduler at ``address``, or a ClusterError saying nobody answers there."""
    from distributed import Client

    try:
        return Client(address, timeout=f"{settings.connect_timeout}s")
    except (OSError, TimeoutError):
        raise ClusterError(f"--scheduler {address}: no Dask scheduler answered within {settings.connect_timeout:g} s; "
                           "start one there (`dask scheduler`) or correct the address (connect_timeout in "
                           "the cluster settings)") from None
    except Exception as err:  # noqa: BLE001 - a malformed address (ValueError, TypeError)
        why = " ".join(str(err).split())[:200] or type(err).__name__
        raise ClusterError(f"--scheduler {address}: not a scheduler address ({why}); expected e.g. "
                           "tcp://host:8786") from None


def _n_workers(client: Any) -> int:
    return len(client.nthreads())


def _await_workers(client: Any, settings: ClusterSettings, where: str, jobs: _SlurmJobs | None) -> int:
    """Wait for the first worker; a ClusterError if none arrives within ``worker_timeout`` or
    every SLURM job ends first. Returns the number of workers present."""
    deadline = time.monotonic() + settings.worker_timeout
    while True:
        n = _n_workers(client)
        if n:
            return n
        if jobs is not None:
            ended, described = jobs.ended()
            if ended:
                raise ClusterError(f"no Dask worker joined {where}: {described}")
        if time.monotonic() > deadline:
            states = f"; {jobs.ended(fresh=True)[1]}" if jobs is not None else ""
            raise ClusterError(f"no Dask worker joined {where} within {settings.worker_timeout:g} s "
                               f"(worker_timeout in the cluster settings){states.rstrip('; ')}")
        time.sleep(min(_POLL, max(0.05, deadline - time.monotonic())))


class _Watch(threading.Thread):
    """Watches a running cluster; when no worker is left (every SLURM job ended, or no worker
    for ``worker_timeout``) it records why and cancels the client's tasks, so that the run
    stops with that reason instead of waiting for ever."""

    def __init__(self, client: Any, settings: ClusterSettings, where: str, jobs: _SlurmJobs | None) -> None:
        super().__init__(name="radynversion-cluster-watch", daemon=True)
        self.client, self.settings, self.where, self.jobs = client, settings, where, jobs
        self.reason: str | None = None
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout=10)

    def run(self) -> None:
        zero_since: float | None = None
        while not self._stop_event.wait(_POLL):
            try:
                n = _n_workers(self.client)
            except Exception:  # noqa: BLE001 - the scheduler is gone or busy: as good as no worker
                n = 0
            if n:
                zero_since = None
                continue
            now = time.monotonic()
            zero_since = zero_since or now
            reason = None
            if self.jobs is not None:
                ended, described = self.jobs.ended()
                if ended:
                    reason = f"no Dask worker left on {self.where}, every SLURM job has ended: {described}"
            if reason is None and now - zero_since > self.settings.worker_timeout:
                reason = (f"no Dask worker left on {self.where} for {self.settings.worker_timeout:g} s "
                          "(worker_timeout in the cluster settings)")
            if reason is not None and not self._stop_event.is_set():
                self._fail(reason)
                return

    def _fail(self, reason: str) -> None:
        self.reason = reason
        try:
            from distributed import Future

            futures = [Future(k, self.client) for k in list(self.client.futures)]
            self.client.cancel(futures, reason="radynversion: cluster lost", msg=reason)
        except Exception:  # noqa: BLE001 - no scheduler to cancel with: interrupt the waiting thread
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


def _translated(err: BaseException) -> ClusterError | None:
    """A one-line ClusterError for the cluster's own failures (not the tasks')."""
    try:
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker
    except ImportError:  # pragma: no cover - another distributed
        return None

    if isinstance(err, KilledWorker):
        return ClusterError(f"task {err.task!r} killed {err.allowed_failures + 1} workers in turn "
                            f"(distributed.scheduler.allowed-failures = {err.allowed_failures}); the last "
                            f"was {getattr(err.last_worker, 'address', err.last_worker)}: see the workers' logs")
    if isinstance(err, FutureCancelledError):
        why = "; ".join(x for x in (err.reason, err.msg) if x and x != "unknown") or "no reason given"
        return ClusterError(f"the scheduler cancelled task {err.key!r}: {why}")
    return None


@contextlib.contextmanager
def cluster_client(
    workers: int | None = None,
    threads_per_worker: int = 1,
    scheduler: str | None = None,
    slurm: bool = False,
    gpus: bool = False,
    settings: ClusterSettings | None = None,
) -> Iterator[Any]:
    """A ``distributed.Client`` on an existing scheduler, a SLURM cluster, or a local cluster
    (in that order of precedence), once it has a worker; everything it started is closed on
    exit, the client before the cluster, and local workers are given time to exit
    (:func:`close_cluster`).

    While the block runs, the cluster is watched: a cluster with no worker left (see the
    module's docstring) cancels the block's tasks and raises :class:`ClusterError`, as do a
    scheduler that does not answer, workers that never arrive and SLURM jobs refused or dead.

    Parameters
    ----------
    workers, threads_per_worker, gpus
        The local cluster's (see :func:`local_cluster`); with ``slurm``, ``gpus`` asks for one
        GPU per job unless ``settings.gpus`` says otherwise.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``).
    slurm : bool
        Start the workers as SLURM jobs (``settings``: queue, jobs, memory...).
    settings : ClusterSettings, optional
        Timeouts and SLURM settings (default :class:`ClusterSettings()`).
    """
    from distributed import Client

    settings = settings or ClusterSettings()
    cluster = None
    jobs: _SlurmJobs | None = None
    if scheduler:
        client = _connect(scheduler, settings)
        where = f"the scheduler at {scheduler}"
    else:
        if slurm:
            from dataclasses import replace

            if gpus and not settings.gpus:
                settings = replace(settings, gpus=1)
            cluster = slurm_cluster(settings)
            jobs = _SlurmJobs(cluster)
        else:
            cluster = local_cluster(workers, threads_per_worker, gpus)
        try:
            client = Client(cluster)
        except BaseException:
            close_cluster(cluster)
            raise
        where = f"the SLURM cluster's scheduler at {client.scheduler.address}" if slurm else "the local cluster"
    watch: _Watch | None = None
    try:
        _await_workers(client, settings, where, jobs)
        watch = _Watch(client, settings, where, jobs)
        watch.start()
        try:
            yield client
        except ClusterError:
            raise
        except BaseException as err:
            if watch.reason is not None:
                raise ClusterError(watch.reason) from None
            mine = _translated(err)
            if mine is not None:
                raise mine from None
            raise
    finally:
        if watch is not None:
            watch.stop()
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            close_cluster(cluster)


def record_cluster(store: str | Path, settings: ClusterSettings | None, mode: str,
                   address: str | None = None, workers: int | None = None) -> dict[str, Any]:
    """Write the cluster of a run into its Zarr store's attrs (:data:`CLUSTER_ATTR`, JSON).

    The record is provenance only: the data never depend on the cluster (a resumed store
    may be finished on another one; the attr then names the last).

    Parameters
    ----------
    store : path
        An inversion store or training set, written by this run.
    settings : ClusterSettings, optional
        The run's settings (default ones if None).
    mode : str
        ``"threads"`` (no cluster), ``"local"``, ``"gpus"``, ``"scheduler"`` or ``"slurm"``.
    address : str, optional
        The scheduler's address (``--scheduler``).
    workers : int, optional
        Local workers asked for.

    Returns
    -------
    dict
        The record written.
    """
    import zarr

    from ..config import to_dict

    record: dict[str, Any] = {"mode": mode}
    if address is not None:
        record["scheduler"] = address
    if workers is not None:
        record["workers"] = workers
    record["settings"] = to_dict(settings or ClusterSettings())
    group = zarr.open_group(str(store), mode="r+")
    group.attrs[CLUSTER_ATTR] = json.dumps(record, sort_keys=True)
    if (Path(store) / ".zmetadata").exists():  # a consolidated store stays consolidated
        zarr.consolidate_metadata(str(store))
    return record
