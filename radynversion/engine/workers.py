"""The model on the workers: one copy per worker process, pinned to that worker's device.

Design: a per-process model cache, warmed by a Dask **worker plugin**, not a Dask Actor.

* Chunks are ordinary tasks of the graph. When a worker dies, the scheduler reruns the tasks
  that were in flight on it (and nothing else: finished chunks are already written or held
  elsewhere) on the other workers and on the nanny's replacement. An Actor lives on one
  worker and dies with it: its futures fail, it is not recreated, and recovery would be ours
  to write. Actors also run their methods one at a time on a single thread and live outside
  the task graph, so a lazy result built on them could not be computed by the threaded
  scheduler or by whatever ``distributed.Client`` the user happens to hold.
* :class:`ModelPlugin` loads the model when a worker starts (or when the plugin is
  registered), so load errors surface before any chunk runs and the first chunk does not pay
  the load. The scheduler hands registered plugins to every worker that joins, including a
  nanny's replacement of a killed worker.
* Tasks call :func:`worker_model`, which returns the cached copy, loading it if no plugin
  did (threaded scheduler, or a client that did not register the plugin): either way the
  model is loaded once per process.

Devices and threads: a worker uses ``cuda`` (its current device: with dask-cuda's
``LocalCUDACluster`` or one SLURM job per GPU, each worker sees exactly its own GPU as
device 0) when CUDA is available, else the CPU. Each of a worker's ``T`` Dask threads runs
its own passes with one torch intra-op thread, so torch uses ``T`` threads in all, matched
to the worker, with no oversubscription, and a pass's arithmetic does not depend on ``T``.
Worker processes started by a Dask nanny also get malloc settings that keep the passes'
tensors on the heap (:func:`tune_malloc`: without them a chunk runs 2-2.5x slower there).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import io
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..model.base import PosteriorModel
from ..model.checkpoint import (
    DEFAULT_MODEL_PATH,
    checkpoint_bytes,
    file_sha256,
    load_model,
    model_from_checkpoint,
)

__all__ = ["ModelSpec", "model_spec", "worker_device", "worker_model", "warm_up", "clear_models", "ModelPlugin",
           "tune_malloc"]

_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str], PosteriorModel] = {}
#: model_spec of checkpoint files, keyed by (path, size, mtime): a file is read once per process
_SPECS: dict[tuple[str, int, int, str | None], tuple[ModelSpec, PosteriorModel]] = {}
_CONFIGURED = False


@dataclass(frozen=True)
class ModelSpec:
    """How a worker gets the model: a checkpoint file every worker can read, or its bytes.

    Attributes
    ----------
    sha256 : str
        sha256 of the checkpoint bytes: the model's identity (cache key, provenance).
    path : str or None
        Checkpoint file (shared file system), or None when ``blob`` carries the model.
    blob : bytes or None
        The checkpoint file's bytes, for models that exist only in memory.
    device : str or None
        Force a device (``"cpu"``, ``"cuda"``); None = the worker's GPU if any, else CPU.
    """

    sha256: str
    path: str | None = None
    blob: bytes | None = field(default=None, repr=False)
    device: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.blob is None):
            raise ValueError("ModelSpec: give exactly one of path and blob")


def model_spec(
    model: PosteriorModel | str | Path | None, device: str | None = None
) -> tuple[ModelSpec, PosteriorModel]:
    """The :class:`ModelSpec` of ``model`` and a CPU copy of the network (for its metadata).

    Parameters
    ----------
    model : PosteriorModel, path or None
        A network in memory (shipped to the workers as checkpoint bytes), a checkpoint file
        (read by every worker), or None for the packaged default model.
    device : str, optional
        Force the workers' device.

    Raises
    ------
    CheckpointError
        The checkpoint is missing, corrupt or incompatible.
    """
    if isinstance(model, PosteriorModel):
        blob = checkpoint_bytes(model)
        spec = ModelSpec(sha256=hashlib.sha256(blob).hexdigest(), blob=blob, device=device)
        net = _load(spec, torch.device("cpu"))
        net.metadata["path"] = str(model.metadata.get("path", "<in memory>"))
        return spec, net
    path = Path(model) if model is not None else DEFAULT_MODEL_PATH
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, device)
    except OSError:
        key = None
    if key is not None and key in _SPECS:
        return _SPECS[key]
    net = load_model(model)  # raises the CheckpointError with the right message
    spec = ModelSpec(sha256=file_sha256(path), path=str(path.resolve()), device=device)
    if key is not None:
        _SPECS[key] = (spec, net)
    return spec, net


def _load(spec: ModelSpec, device: torch.device) -> PosteriorModel:
    if spec.path is not None:
        net = load_model(spec.path, map_location=device)
    else:
        try:
            ckpt = torch.load(io.BytesIO(spec.blob), map_location=device, weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types
            text = " ".join(str(err).split()).split(". ")[0][:160]
            raise CheckpointError(f"<in-memory model {spec.sha256[:12]}>: unreadable ({type(err).__name__}: "
                                  f"{text}); expected the bytes of a radynversion checkpoint") from None
        net = model_from_checkpoint(ckpt, f"<in-memory model {spec.sha256[:12]}>",
                                    height_Mm=np.asarray(ckpt["height_Mm"], dtype=float))
        net = net.to(device)
    return net.eval()


def worker_device(spec: ModelSpec | None = None) -> torch.device:
    """The device this process runs the model on (see the module docstring)."""
    if spec is not None and spec.device is not None:
        return torch.device(spec.device)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


#: glibc malloc settings of processes whose trim threshold came from the environment
#: (:func:`tune_malloc`): blocks below 32 MiB (every tensor of a pass) stay on the heap, and
#: up to 64 MiB of freed heap is kept for the next pass instead of going back to the system
_MMAP_THRESHOLD = 32 * 2**20
_TRIM_THRESHOLD = 64 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers


def tune_malloc(environ: dict[str, str] | None = None) -> bool:
    """Keep the passes' tensors on the heap in processes whose glibc malloc trim threshold was
    set through the environment; True if the settings were changed.

    Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536``
    (``distributed.nanny.pre-spawn-environ``). A trim threshold set that way also switches off
    glibc's dynamic mmap threshold, which then stays at 128 KiB: every tensor above it (most
    activations of a pass) is mmapped on allocation and unmapped on release, so each pass
    page-faults its working set afresh. Measured here: 213,000 minor faults and 0.6 s of
    system time for 64 pixels x 128 samples, a chunk 2-2.5x slower in a worker than in a
    plain process; with :data:`_MMAP_THRESHOLD` and :data:`_TRIM_THRESHOLD` set by ``mallopt``
    the worker runs as fast as a plain process. A no-op where the environment sets neither
    variable, and off glibc.
    """
    env = os.environ if environ is None else environ
    if "MALLOC_TRIM_THRESHOLD_" not in env and "MALLOC_MMAP_THRESHOLD_" not in env:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
                and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1)


def _configure_process() -> None:
    """One torch intra-op thread per Dask thread, and malloc settings that keep the passes'
    tensors on the heap (:func:`tune_malloc`); once per process."""
    global _CONFIGURED
    if not _CONFIGURED:
        torch.set_num_threads(1)
        tune_malloc()
        _CONFIGURED = True


def worker_model(spec: ModelSpec) -> PosteriorModel:
    """This process's copy of the model of ``spec``, on :func:`worker_device`, loaded once."""
    device = worker_device(spec)
    key = (spec.sha256, str(device))
    net = _MODELS.get(key)
    if net is not None:
        return net
    with _LOCK:
        net = _MODELS.get(key)
        if net is None:
            _configure_process()
            net = _load(spec, device)
            _MODELS[key] = net
    return net


def warm_up(net: PosteriorModel) -> None:
    """Run a few small passes, so that the first chunk does not pay torch's first-call costs."""
    from ..model.posterior import posterior

    y = np.full((4, net.n_y), 0.5, dtype=np.float32)
    posterior(net, y, np.arange(4), samples=64, batch_size=256)


def clear_models(sha256: str | None = None) -> None:
    """Drop cached models (all, or those of one checkpoint)."""
    with _LOCK:
        for key in [k for k in _MODELS if sha256 is None or k[0] == sha256]:
            del _MODELS[key]


try:  # distributed is a dependency, but keep this module importable without it
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover
    WorkerPlugin = object  # type: ignore[misc,assignment]


class ModelPlugin(WorkerPlugin):  # type: ignore[misc,valid-type]
    """Worker plugin that loads the model of ``spec`` once per worker, on its device.

    Register with ``client.register_plugin(ModelPlugin(spec), name=plugin.name)``; every
    worker that joins later (a restarted one included) runs :meth:`setup` too.

    Example
    -------
    >>> plugin = ModelPlugin(spec)  # doctest: +SKIP
    >>> client.register_plugin(plugin, name=plugin.name)  # doctest: +SKIP
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.name = f"radynversion-model-{spec.sha256[:16]}"

    def setup(self, worker: object) -> None:
        warm_up(worker_model(self.spec))

    def teardown(self, worker: object) -> None:
        clear_models(self.spec.sha256)
