"""Clusters for the engine: a LocalCluster, one worker per GPU, an existing scheduler, SLURM.

* :func:`local_cluster`: ``N`` worker processes x ``T`` threads (BLAS/OpenMP pinned to one
  thread per Dask thread), or, with ``gpus=True``, dask-cuda's ``LocalCUDACluster`` (one
  worker per visible GPU, each seeing its own GPU as device 0);
* :class:`SlurmOptions`, :func:`slurm_job_script`, :func:`slurm_cluster`: a dask-jobqueue
  ``SLURMCluster`` whose jobs each run one worker (``--gpus``: one GPU per job, so again one
  worker per GPU). :func:`slurm_job_script` renders the batch script that would be submitted
  without starting a scheduler;
* :func:`cluster_client`: the context manager the CLI uses to pick one of these, and
  :func:`close_cluster`, which closes what it started without killing workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = ["WORKER_ENV", "WORKER_EXIT_TIMEOUT", "local_cluster", "SlurmOptions", "slurm_job_script",
           "slurm_cluster", "cluster_client", "close_cluster"]

#: environment of worker processes: one BLAS/OpenMP thread per Dask thread
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: seconds a local worker process is given to exit when its cluster closes. distributed's nanny
#: gives 4 s and then kills it, with a warning; a worker that imported torch, xarray and
#: Lightweaver takes 4-5 s to exit on a busy 2-core machine.
WORKER_EXIT_TIMEOUT = 60.0


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


@dataclass(frozen=True)
class SlurmOptions:
    """One SLURM job per worker.

    Attributes
    ----------
    jobs : int
        Jobs (= workers) to start.
    cores : int
        CPU cores (= worker threads) per job.
    memory : str
        Memory per job (e.g. ``"16GB"``).
    walltime : str
        ``HH:MM:SS`` per job.
    queue, account : str, optional
        SLURM partition and account.
    gpus : int
        GPUs per job (``--gres=gpu:N``); 0 for CPU jobs.
    job_extra : tuple of str
        Further ``#SBATCH`` directives (e.g. ``"--constraint=a100"``).
    prologue : tuple of str
        Shell lines run before the worker (e.g. ``"module load cuda"``).
    python : str, optional
        Python of the workers (default this one).
    local_directory : str, optional
        Worker scratch directory.
    """

    jobs: int = 1
    cores: int = 4
    memory: str = "16GB"
    walltime: str = "01:00:00"
    queue: str | None = None
    account: str | None = None
    gpus: int = 0
    job_extra: tuple[str, ...] = ()
    prologue: tuple[str, ...] = field(default_factory=tuple)
    python: str | None = None
    local_directory: str | None = None

    def __post_init__(self) -> None:
        if self.jobs < 1 or self.cores < 1 or self.gpus < 0:
            raise ConfigError(f"SlurmOptions: jobs = {self.jobs}, cores = {self.cores}, gpus = "
                              f"{self.gpus}; expected jobs, cores >= 1 and gpus >= 0")

    def cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``dask_jobqueue.SLURMCluster`` (and of its job class)."""
        directives = list(self.job_extra)
        if self.gpus:
            directives.append(f"--gres=gpu:{self.gpus}")
        prologue = [f"export {k}={v}" for k, v in WORKER_ENV.items()] + list(self.prologue)
        kw: dict[str, Any] = {
            "cores": self.cores,
            "processes": 1,
            "memory": self.memory,
            "walltime": self.walltime,
            "queue": self.queue,
            "account": self.account,
            "job_extra_directives": directives,
            "job_script_prologue": prologue,
            "python": self.python,
            "local_directory": self.local_directory,
            "job_name": "radynversion-invert",
        }
        return {k: v for k, v in kw.items() if v is not None}


def slurm_job_script(options: SlurmOptions, scheduler: str = "tcp://SCHEDULER:8786") -> str:
    """The batch script each SLURM job would run (no scheduler is started).

    Parameters
    ----------
    options : SlurmOptions
    scheduler : str
        Address written into the worker command (the real one is filled in by
        :func:`slurm_cluster`).
    """
    try:
        from dask_jobqueue.slurm import SLURMJob
    except ImportError:
        raise ConfigError("--slurm needs dask-jobqueue (pip install 'radynversion[cluster]')") from None
    kw = options.cluster_kwargs()
    name = kw.pop("job_name")
    return SLURMJob(scheduler=scheduler, name="radynversion-worker", job_name=name, **kw).job_script()


def slurm_cluster(options: SlurmOptions) -> Any:
    """A dask-jobqueue SLURMCluster of ``options.jobs`` jobs (one worker each), scaled up."""
    import shutil

    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ConfigError("--slurm needs dask-jobqueue (pip install 'radynversion[cluster]')") from None
    if shutil.which("sbatch") is None:
        raise ConfigError("--slurm: sbatch is not on PATH; run on a SLURM login node (see the job "
                          "script with --print-job-script)")
    cluster = SLURMCluster(**options.cluster_kwargs())
    cluster.scale(jobs=options.jobs)
    return cluster


def close_cluster(cluster: Any, timeout: float = WORKER_EXIT_TIMEOUT) -> None:
    """Close a cluster this process started, letting its worker processes exit on their own.

    The nannies of a local cluster (LocalCluster, LocalCUDACluster) are closed first, with
    ``timeout`` seconds for their worker processes to exit, then the cluster itself; other
    clusters (SLURM jobs) are closed as they are. Close any client of the cluster first.
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


@contextlib.contextmanager
def cluster_client(
    workers: int | None = None,
    threads_per_worker: int = 1,
    scheduler: str | None = None,
    slurm: SlurmOptions | None = None,
    gpus: bool = False,
) -> Iterator[Any]:
    """A ``distributed.Client`` on an existing scheduler, a SLURM cluster, or a local cluster
    (in that order of precedence); everything it started is closed on exit, the client before
    the cluster, and the workers given time to exit (:func:`close_cluster`)."""
    from distributed import Client

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    cluster = slurm_cluster(slurm) if slurm is not None else local_cluster(workers, threads_per_worker, gpus)
    try:
        with Client(cluster) as client:
            if slurm is not None:
                client.wait_for_workers(1)
            yield client
    finally:
        close_cluster(cluster)
