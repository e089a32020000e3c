"""The engine: whole scans through the network, chunk by chunk, on any Dask cluster.

``ds.radyn.invert(...)`` (:mod:`.accessor`) -> :func:`invert` (:mod:`.core`: one task per
chunk, lazy Dataset out) -> :func:`invert_to_zarr` (:mod:`.store`: region writes, resumable)
-> ``radynversion invert`` (the CLI, on a cluster from :mod:`.cluster`). The model reaches the
workers through :mod:`.workers` (one copy per worker, on its device).

Importing this package registers ``ds.radyn`` and nothing heavier; the names below load
their submodule (and torch) on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import accessor  # noqa: F401  (registers ds.radyn)

if TYPE_CHECKING:  # pragma: no cover
    from .cluster import (
        ClusterSettings,
        cluster_client,
        local_cluster,
        record_cluster,
        slurm_cluster,
        slurm_job_script,
    )
    from .core import Plan, check_profiles, invert, plan_inversion, runtime_settings
    from .store import STORE_KIND, chunk_status, invert_to_zarr, store_digest, store_status
    from .workers import ModelPlugin, ModelSpec, model_spec, worker_model

_WHERE = {
    "invert": "core", "plan_inversion": "core", "Plan": "core", "runtime_settings": "core",
    "check_profiles": "core",
    "invert_to_zarr": "store", "chunk_status": "store", "store_status": "store",
    "store_digest": "store", "STORE_KIND": "store",
    "ModelSpec": "workers", "ModelPlugin": "workers", "model_spec": "workers", "worker_model": "workers",
    "local_cluster": "cluster", "cluster_client": "cluster", "ClusterSettings": "cluster",
    "slurm_cluster": "cluster", "slurm_job_script": "cluster", "record_cluster": "cluster",
}

__all__ = [
    "invert",
    "plan_inversion",
    "Plan",
    "runtime_settings",
    "check_profiles",
    "invert_to_zarr",
    "chunk_status",
    "store_status",
    "store_digest",
    "STORE_KIND",
    "ModelSpec",
    "ModelPlugin",
    "model_spec",
    "worker_model",
    "local_cluster",
    "cluster_client",
    "ClusterSettings",
    "slurm_cluster",
    "slurm_job_script",
    "record_cluster",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
